//! Text classification on frozen features: how much a masked-language-model encoder knows
//! about a labelled task, next to the same architecture randomly initialised and a
//! bag-of-words baseline, all scored by one logistic-regression probe ([`linear_probe`]).
//!
//! Data is a TSV file of labelled texts ([`super::tsv`]), split per class into train and test
//! ([`stratified_split`]). Encoder features ([`encoder_features`]) pool the last
//! hidden layer (mean over real tokens, or the first token) and average over the windows a
//! long text is cut into.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use burn::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::MlmCheckpoint;
use super::encoder::MlmModel;
use super::examples::pad_batch;
use super::masking::Masked;
use super::tokenizer::TextTokenizer;
use super::tsv::LabelledTexts;
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, linear_probe};
use crate::core::finetune::FineTuneConfig;
use crate::core::split::stratified_split;

/// How a window's hidden states `[len, hidden]` become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the real tokens (start and end tokens included, padding excluded).
    Mean,
    /// The first token (`[CLS]` / `<s>`).
    Cls,
}

impl std::str::FromStr for Pooling {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            other => bail!("pooling \"{other}\": expected mean or cls"),
        }
    }
}

/// The windows of one text: its body cut into pieces of `max_len - 2` tokens, each framed by
/// the start and end tokens. More than `max_windows` (0: no cap) are thinned to that many,
/// spread evenly from the first to the last.
pub(crate) fn text_windows(
    tokenizer: &TextTokenizer,
    text: &str,
    max_len: usize,
    max_windows: usize,
) -> Result<(Vec<Vec<u32>>, bool)> {
    let (body, _) = tokenizer.encode_body_with_words(text)?;
    let piece = max_len - 2;
    let chunks: Vec<&[u32]> = if body.is_empty() {
        vec![&[]]
    } else {
        body.chunks(piece).collect()
    };
    let n = chunks.len();
    let kept: Vec<usize> = if max_windows == 0 || n <= max_windows {
        (0..n).collect()
    } else if max_windows == 1 {
        vec![0]
    } else {
        (0..max_windows)
            .map(|i| i * (n - 1) / (max_windows - 1))
            .collect()
    };
    let thinned = kept.len() < n;
    Ok((
        kept.into_iter()
            .map(|i| tokenizer.wrap(chunks[i]))
            .collect(),
        thinned,
    ))
}

/// The mean of hidden states `[b, len, hidden]` over the real tokens of each row (`mask` is
/// `[b, len]` row-major, true for real tokens): padding never counts.
pub fn mean_pool(hidden: Tensor<3>, mask: &[bool], device: &Device) -> Tensor<2> {
    let [b, len, dim] = hidden.dims();
    let weights: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    let weights = Tensor::<3>::from_data(TensorData::new(weights, [b, len, 1]), device);
    let counts = weights.clone().sum_dim(1).reshape([b, 1]);
    (hidden * weights).sum_dim(1).reshape([b, dim]) / counts
}

/// Pooled features of every text under each of `poolings`, from one pass of the model, and
/// window counts.
struct Pooled {
    features: Vec<Features>,
    windows: usize,
    thinned: usize,
}

#[allow(clippy::too_many_arguments)]
fn pooled_features<S: AsRef<str> + Sync>(
    model: &MlmModel,
    tokenizer: &TextTokenizer,
    texts: &[S],
    max_len: usize,
    max_windows: usize,
    poolings: &[Pooling],
    batch_size: usize,
    device: &Device,
) -> Result<Pooled> {
    if max_len < 3 {
        bail!("max_len = {max_len}: needs room for the start token, one token and the end token");
    }
    if batch_size == 0 {
        bail!("batch size must be positive");
    }
    let per_text: Vec<(Vec<Vec<u32>>, bool)> = texts
        .par_iter()
        .map(|t| text_windows(tokenizer, t.as_ref(), max_len, max_windows))
        .collect::<Result<_>>()?;
    let mut windows: Vec<(usize, &[u32])> = per_text
        .iter()
        .enumerate()
        .flat_map(|(t, (ws, _))| ws.iter().map(move |w| (t, w.as_slice())))
        .collect();
    // Similar lengths share a batch, so little is spent on padding (which changes nothing).
    windows.sort_by_key(|(_, w)| w.len());

    let plain = device.clone().without_autodiff();
    let model = model.valid().to_device(&plain);
    let hidden = model.encoder.embeddings.word_embeddings.weight.dims()[1];
    let mut sums = vec![vec![0f32; texts.len() * hidden]; poolings.len()];
    for chunk in windows.chunks(batch_size) {
        let rows: Vec<Masked> = chunk.iter().map(|(_, w)| Masked::unmasked(w)).collect();
        let batch = pad_batch(&rows, tokenizer.pad_id(), 0)?;
        let h = model.hidden(batch.input_tensor(&plain), batch.attention_tensor(&plain))?;
        let b = batch.batch_size;
        for (p, pooling) in poolings.iter().enumerate() {
            let pooled: Tensor<2> = match pooling {
                Pooling::Cls => h.clone().narrow(1, 0, 1).reshape([b, hidden]),
                Pooling::Mean => mean_pool(h.clone(), &batch.attention_mask, &plain),
            };
            let values = pooled
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow!("reading pooled features: {e:?}"))?;
            for ((text, _), row) in chunk.iter().zip(values.chunks(hidden)) {
                let sum = &mut sums[p][text * hidden..(text + 1) * hidden];
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
    }
    let features = sums
        .into_iter()
        .map(|mut values| {
            for (row, (ws, _)) in values.chunks_mut(hidden).zip(&per_text) {
                let n = ws.len() as f32;
                row.iter_mut().for_each(|v| *v /= n);
            }
            Features {
                dim: hidden,
                values,
            }
        })
        .collect();
    Ok(Pooled {
        features,
        windows: windows.len(),
        thinned: per_text.iter().filter(|(_, t)| *t).count(),
    })
}

/// Frozen last-layer features `[texts, hidden]` of `model`, run on `device` without autodiff
/// (dropout off) in batches of `batch_size` windows.
///
/// A text of more than `max_len` tokens (start and end tokens included) is cut into windows
/// of `max_len - 2` body tokens, each framed by the start and end tokens ([`TextTokenizer::wrap`]),
/// and its feature is the mean of its windows' pooled vectors. At most `max_windows` windows
/// (0: all) are encoded per text, spread evenly over it, so long documents (the Brown
/// corpus' ~2,000-word samples run to ~20 windows of 128) cost a bounded amount. Mean pooling
/// averages over real tokens only: padding never counts, so a text's feature does not depend
/// on what it is batched with.
#[allow(clippy::too_many_arguments)]
pub fn encoder_features<S: AsRef<str> + Sync>(
    model: &MlmModel,
    tokenizer: &TextTokenizer,
    texts: &[S],
    max_len: usize,
    max_windows: usize,
    pooling: Pooling,
    batch_size: usize,
    device: &Device,
) -> Result<Features> {
    let pooled = pooled_features(
        model,
        tokenizer,
        texts,
        max_len,
        max_windows,
        &[pooling],
        batch_size,
        device,
    )?;
    Ok(pooled.features.into_iter().next().expect("one pooling"))
}

/// Lowercased runs of alphanumeric characters.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Bag-of-words features of train and test texts: lowercase word unigrams (runs of
/// alphanumeric characters), the vocabulary the `max_features` most frequent words of the
/// train texts (ties broken alphabetically), each feature `ln(1 + count)` of its word in the
/// text. Test words outside the vocabulary are ignored.
pub fn bag_of_words_features<S: AsRef<str>>(
    train_texts: &[S],
    test_texts: &[S],
    max_features: usize,
) -> (Features, Features) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for text in train_texts {
        for w in words(text.as_ref()) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut vocab: Vec<(String, usize)> = counts.into_iter().collect();
    vocab.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    vocab.truncate(max_features);
    let index: HashMap<String, usize> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, (w, _))| (w, i))
        .collect();
    // At least one column, so an empty vocabulary still gives well-formed (zero) features.
    let dim = index.len().max(1);
    let featurize = |texts: &[S]| {
        let mut values = vec![0f32; texts.len() * dim];
        for (row, text) in values.chunks_mut(dim).zip(texts) {
            for w in words(text.as_ref()) {
                if let Some(&i) = index.get(&w) {
                    row[i] += 1.0;
                }
            }
            row.iter_mut().for_each(|v| *v = v.ln_1p());
        }
        Features { dim, values }
    };
    (featurize(train_texts), featurize(test_texts))
}

/// Settings of [`text_probe`] (`--set key=value` on `pretext eval text-probe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSettings {
    /// Tokens per window, start and end tokens included (default 128).
    pub max_len: usize,
    /// Windows encoded per text at most, spread over it (default 8; 0: all).
    pub max_windows: usize,
    /// Windows per encoder batch (default 32).
    pub batch_size: usize,
    /// Share of each class held out for testing (default 0.2).
    pub test_fraction: f64,
    /// Bag-of-words vocabulary size (default 5000).
    pub bow_max_features: usize,
    /// The linear probe's epochs, learning rate, batch size and weight decay, shared by every
    /// feature set.
    pub eval: EvalConfig,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            max_len: 128,
            max_windows: 8,
            batch_size: 32,
            test_fraction: 0.2,
            bow_max_features: 5000,
            // Text pools are small (361 labelled Brown documents, 2,160 sentences): the images'
            // probe budget (30 epochs of batch 256) is 30 to 60 steps on Brown, far from
            // converged: mean word vectors scored 24% on all of Brown's labels with it, 53%
            // with 300 epochs of batch 32 (docs/labels.md).
            eval: EvalConfig {
                linear_epochs: 300,
                linear_batch_size: 32,
                // The epochs set the text budget; the images' step floor is not applied.
                linear_min_steps: 0,
                finetune: text_finetune(),
                ..EvalConfig::default()
            },
        }
    }
}

/// Fine-tuning (and training from scratch) of an encoder on labelled texts, as BERT's recipe
/// does it: batches of 32, a few epochs, lr 1e-4 (the small BERTs of Turc et al. 2019 were
/// fine-tuned at 1e-4 to 3e-5 for 4 epochs). The image defaults (batch 128, at least 300
/// steps, lr 1e-3) cost about 20 minutes a run for BERT-mini on two cores.
fn text_finetune() -> FineTuneConfig {
    FineTuneConfig {
        epochs: 4,
        min_steps: 60,
        batch_size: 32,
        lr: 1e-4,
        weight_decay: 0.01,
        // BERT's recipe as the text studies were measured with; the images' newer defaults
        // (a probe stage, the last epoch) have not been measured on text.
        probe_steps: 0,
        choose_epoch: "accuracy".into(),
        ..FineTuneConfig::default()
    }
}

/// Probe accuracy of an encoder's features under both poolings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PoolingScores {
    pub mean: f64,
    pub cls: f64,
}

/// Test accuracies of [`text_probe`], with what they were measured on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub train: usize,
    pub test: usize,
    pub classes: usize,
    pub class_names: Vec<String>,
    /// Predicting the most frequent train class for every test text (chance).
    pub majority: f64,
    /// The checkpoint's encoder.
    pub pretrained: PoolingScores,
    /// The same architecture with fresh, seeded weights.
    pub random: PoolingScores,
    pub bag_of_words: f64,
    /// Columns of the bag-of-words features (at most `bow_max_features`).
    pub bow_features: usize,
    /// Windows encoded per encoder, over all texts.
    pub windows: usize,
    /// Texts with more windows than `max_windows`, of which only some were encoded.
    pub thinned_texts: usize,
    pub settings: ProbeSettings,
    pub seconds: f64,
}

/// Split `data` per class (seeded), then probe with [`linear_probe`] (same [`EvalConfig`]
/// and seed for all): the checkpoint's encoder (mean and CLS pooling), the same
/// architecture initialised afresh after `device.seed(seed)`, and bag-of-words; next to
/// majority-class accuracy.
pub fn text_probe(
    ckpt: &MlmCheckpoint,
    data: &LabelledTexts,
    settings: &ProbeSettings,
    seed: u64,
    device: &Device,
) -> Result<ProbeReport> {
    let started = Instant::now();
    if data.labels.len() != data.texts.len() {
        bail!(
            "{} labels for {} texts",
            data.labels.len(),
            data.texts.len()
        );
    }
    let classes = data.classes.len();
    if classes < 2 {
        bail!("classification needs at least 2 classes, got {classes}");
    }
    if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= classes) {
        bail!("label {bad} is outside the {classes} classes");
    }
    let limit = ckpt.encoder.max_sequence_len();
    if settings.max_len > limit {
        bail!(
            "max_len = {}: the encoder holds at most {limit} tokens",
            settings.max_len
        );
    }
    let split = stratified_split(&data.labels, settings.test_fraction, seed)?;
    if split.train.is_empty() || split.test.is_empty() {
        bail!(
            "{} texts leave {} for training and {} for testing; need both",
            data.len(),
            split.train.len(),
            split.test.len()
        );
    }
    let pick = |idx: &[usize]| -> Vec<u32> { idx.iter().map(|&i| data.labels[i]).collect() };
    let (train_labels, test_labels) = (pick(&split.train), pick(&split.test));

    let mut counts = vec![0usize; classes];
    train_labels.iter().for_each(|&l| counts[l as usize] += 1);
    let majority_class = (0..classes)
        .max_by_key(|&c| (counts[c], usize::MAX - c))
        .unwrap() as u32;
    let majority = test_labels.iter().filter(|&&l| l == majority_class).count() as f64
        / test_labels.len() as f64;

    let plain = device.clone().without_autodiff();
    let probe = |features: &Features| -> Result<f64> {
        let (train, test) = (features.rows(&split.train), features.rows(&split.test));
        linear_probe(
            Labelled {
                features: &train,
                labels: &train_labels,
            },
            Labelled {
                features: &test,
                labels: &test_labels,
            },
            classes,
            &settings.eval,
            seed,
            &plain,
        )
    };
    let poolings = [Pooling::Mean, Pooling::Cls];
    let encode = |model: &MlmModel| {
        pooled_features(
            model,
            &ckpt.tokenizer,
            &data.texts,
            settings.max_len,
            settings.max_windows,
            &poolings,
            settings.batch_size,
            &plain,
        )
    };
    let score = |pooled: &Pooled| -> Result<PoolingScores> {
        Ok(PoolingScores {
            mean: probe(&pooled.features[0])?,
            cls: probe(&pooled.features[1])?,
        })
    };

    let pooled = encode(&ckpt.model)?;
    let pretrained = score(&pooled)?;
    plain.seed(seed);
    let fresh = ckpt.encoder.init(&plain)?;
    let random = score(&encode(&fresh)?)?;

    let texts =
        |idx: &[usize]| -> Vec<&str> { idx.iter().map(|&i| data.texts[i].as_str()).collect() };
    let (bow_train, bow_test) = bag_of_words_features(
        &texts(&split.train),
        &texts(&split.test),
        settings.bow_max_features,
    );
    let bow_labelled = |f, labels| Labelled {
        features: f,
        labels,
    };
    let bag_of_words = linear_probe(
        bow_labelled(&bow_train, &train_labels),
        bow_labelled(&bow_test, &test_labels),
        classes,
        &settings.eval,
        seed,
        &plain,
    )?;

    Ok(ProbeReport {
        train: split.train.len(),
        test: split.test.len(),
        classes,
        class_names: data.classes.clone(),
        majority,
        pretrained,
        random,
        bag_of_words,
        bow_features: bow_train.dim,
        windows: pooled.windows,
        thinned_texts: pooled.thinned,
        settings: settings.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::text::config::MlmConfig;
    use crate::text::encoder::EncoderConfig;
    use crate::text::test_support::{TempDir, grammar_corpus, two_topics};
    use crate::text::tokenizer::Family;
    use crate::text::tsv::read_labelled_tsv;

    fn tiny_setup(name: &str) -> (TempDir, TextTokenizer, EncoderConfig) {
        let dir = TempDir::new(name);
        let corpus = dir.write("c.txt", &grammar_corpus(300, 2).join("\n"));
        let tok = TextTokenizer::train(Family::Bert, &[corpus], 200, true).unwrap();
        let config = EncoderConfig {
            hidden: 32,
            layers: 2,
            heads: 2,
            ffn: 64,
            max_position: 64,
            ..EncoderConfig::preset(
                crate::text::encoder::SizePreset::Tiny,
                Family::Bert,
                tok.vocab_size(),
            )
        };
        (dir, tok, config)
    }

    #[test]
    fn mean_pooling_ignores_padding_and_windows_average() {
        let (_dir, tok, config) = tiny_setup("probe-pool");
        let device = Device::flex();
        device.seed(1);
        let model = config.init(&device).unwrap();
        let short = "the lazy fox chases the dog.";
        let long = grammar_corpus(3, 4).join(" ");
        let feats = |texts: &[&str], pooling, batch| {
            encoder_features(&model, &tok, texts, 64, 0, pooling, batch, &device).unwrap()
        };
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let alone = feats(&[short], pooling, 1);
            let padded = feats(&[short, long.as_str()], pooling, 2);
            assert_eq!((alone.dim, padded.len()), (32, 2));
            for (a, b) in alone.row(0).iter().zip(padded.row(0)) {
                assert!((a - b).abs() < 1e-5, "{pooling:?}: {a} vs {b}");
            }
        }
        // A text cut into windows is the mean of its windows' features.
        let (body, _) = tok.encode_body_with_words(&long).unwrap();
        assert!(body.len() > 8, "{} tokens", body.len());
        let whole = feats(&[long.as_str()], Pooling::Mean, 4);
        let windowed = encoder_features(
            &model,
            &tok,
            &[long.as_str()],
            6,
            0,
            Pooling::Mean,
            3,
            &device,
        )
        .unwrap();
        assert!(whole.row(0) != windowed.row(0));
        // Recompute by hand from the windows.
        let hidden = 32;
        let mut manual = vec![0f32; hidden];
        let (windows, thinned) = text_windows(&tok, &long, 6, 0).unwrap();
        assert!(!thinned);
        assert_eq!(windows.len(), body.len().div_ceil(4));
        assert!(windows.iter().all(|w| w.len() <= 6));
        for w in &windows {
            let rows = [Masked::unmasked(w)];
            let batch = pad_batch(&rows, tok.pad_id(), 0).unwrap();
            let h = model
                .hidden(batch.input_tensor(&device), batch.attention_tensor(&device))
                .unwrap()
                .mean_dim(1)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            manual
                .iter_mut()
                .zip(&h)
                .for_each(|(m, v)| *m += v / windows.len() as f32);
        }
        for (a, b) in manual.iter().zip(windowed.row(0)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Thinning keeps the first and the last window.
        let (all, _) = text_windows(&tok, &long, 6, 0).unwrap();
        let (three, thinned) = text_windows(&tok, &long, 6, 3).unwrap();
        assert!(thinned && three.len() == 3);
        assert_eq!((&three[0], &three[2]), (&all[0], all.last().unwrap()));
    }

    /// Sentences whose class shows in which nouns they use.
    fn quick_eval() -> EvalConfig {
        EvalConfig {
            linear_epochs: 20,
            linear_lr: 0.05,
            linear_batch_size: 32,
            ..EvalConfig::default()
        }
    }

    #[test]
    fn bag_of_words_separates_topics() {
        let (texts, labels) = two_topics(80);
        let (train, test) = (&texts[..60], &texts[60..]);
        let (ftrain, ftest) = bag_of_words_features(train, test, 6);
        assert_eq!((ftrain.dim, ftrain.len(), ftest.len()), (6, 60, 20));
        // "the" (twice per text) is the most frequent word: ln(1 + 2) in column 0.
        assert!((ftrain.row(0)[0] - 3f32.ln()).abs() < 1e-6);
        let (ftrain, ftest) = bag_of_words_features(train, test, 100);
        let acc = linear_probe(
            Labelled {
                features: &ftrain,
                labels: &labels[..60],
            },
            Labelled {
                features: &ftest,
                labels: &labels[60..],
            },
            2,
            &quick_eval(),
            0,
            &Device::flex(),
        )
        .unwrap();
        assert!(acc > 0.9, "bag-of-words accuracy {acc}");
    }

    #[test]
    fn text_probe_runs_end_to_end() {
        let started = Instant::now();
        let (dir, tok, config) = tiny_setup("probe-e2e");
        let (texts, labels) = two_topics(60);
        let mut tsv = String::from("id\tlabel\ttext\n");
        for (i, (t, l)) in texts.iter().zip(&labels).enumerate() {
            let class = if *l == 0 { "animals" } else { "people" };
            tsv.push_str(&format!("{i}\t{class}\t{t}\n"));
        }
        let data = read_labelled_tsv(&dir.write("d.tsv", &tsv), None, None).unwrap();
        let device = Device::flex();
        let ckpt = MlmCheckpoint {
            model: config.init(&device).unwrap(),
            encoder: config.clone(),
            tokenizer: tok,
            config: MlmConfig::default(),
            simcse: None,
            mlm_head: true,
            step: 0,
            dir: dir.path().to_path_buf(),
        };
        let settings = ProbeSettings {
            max_len: 16,
            eval: quick_eval(),
            ..ProbeSettings::default()
        };
        let report = text_probe(&ckpt, &data, &settings, 3, &device).unwrap();
        eprintln!(
            "{}",
            serde_json::to_string(&report).unwrap() // ensures Serialize works
        );
        assert_eq!((report.train, report.test, report.classes), (48, 12, 2));
        assert_eq!(report.class_names, ["animals", "people"]);
        assert!((report.majority - 0.5).abs() < 1e-9);
        let accs = [
            report.pretrained.mean,
            report.pretrained.cls,
            report.random.mean,
            report.random.cls,
            report.bag_of_words,
        ];
        assert!(accs.iter().all(|a| (0.0..=1.0).contains(a)), "{accs:?}");
        assert!(report.bag_of_words > 0.9, "{}", report.bag_of_words);
        // Some texts split into several pieces (words the tokenizer never saw), none past 8.
        assert!(
            report.windows > 60 && report.thinned_texts == 0,
            "{}",
            report.windows
        );
        assert!(report.bow_features > 5);
        let same = text_probe(&ckpt, &data, &settings, 3, &device).unwrap();
        assert_eq!(same.pretrained, report.pretrained, "deterministic");
        assert_eq!(same.random, report.random, "deterministic");
        let too_long = ProbeSettings {
            max_len: 100,
            ..settings
        };
        let e = text_probe(&ckpt, &data, &too_long, 3, &device).unwrap_err();
        assert!(e.to_string().contains("at most 64"), "{e}");
        assert!(started.elapsed().as_secs_f32() < 5.0);
    }
}
