//! Unsupervised SimCSE (Gao et al. 2021, `pretext simcse train`): a sentence encoder taught to
//! find each sentence's second encoding among the batch's, where the two encodings differ only
//! by dropout. Starting from a masked-language-model run, it trains the same encoder, so every
//! reader of text runs (probes, `eval labels`, exports, `similar-sentences`) takes its
//! checkpoint as it takes the one it started from.
//!
//! Per batch, as the paper's pseudocode: `z1, z2 = pool(encoder(x)), pool(encoder(x))` with
//! dropout on (one pass over the batch stacked twice), then InfoNCE on cosine similarities
//! over the temperature, `z2[i]` the positive of `z1[i]` and the other rows of `z2` its
//! negatives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::MlmCheckpoint;
use super::examples::{Batch, ExampleMode, ExampleSet, pad_batch};
use super::masking::Masked;
use super::probe::{Pooling, encoder_features, mean_pool};
use super::token_cache::{CachedExamples, TokenCache};
use crate::core::cache::default_cache_dir;
use crate::core::checkpoint::{load_module, module_tensors, write_atomic};
use crate::core::config::TrainConfig;
use crate::core::distributed::world;
use crate::core::loader::{Loader, Schedule};
use crate::core::losses::{cross_view_info_nce, l2_normalize};
use crate::core::optim::OptimConfig;
use crate::core::train::{BatchSource, LoopSpec, Step, TrainOptions, TrainSummary, run_loop};

/// The config of `pretext simcse train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimcseConfig {
    pub seed: u64,
    pub epochs: usize,
    /// Optimizer steps of the run; 0 runs `epochs` full epochs.
    pub steps: usize,
    /// Sentences per batch (each encoded twice).
    pub batch_size: usize,
    /// Tokens per sentence, special tokens included (longer lines are cut).
    pub max_len: usize,
    /// Softmax temperature of the cosine similarities (the paper's 0.05).
    pub temperature: f64,
    /// Dropout of the encoder during training: the only noise between a sentence's two
    /// encodings (the paper's 0.1, whatever the run it starts from used).
    pub dropout: f64,
    /// How a sentence's hidden states become its embedding.
    pub pooling: Pooling,
    /// Read at most this many lines of the corpus; 0 reads all.
    pub max_lines: usize,
    /// Where the tokenised corpus is cached (as `mlm`'s `data.cache_dir`).
    pub cache_dir: String,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
}

impl Default for SimcseConfig {
    fn default() -> Self {
        SimcseConfig {
            seed: 0,
            epochs: 1,
            steps: 0,
            batch_size: 64,
            max_len: 32,
            temperature: 0.05,
            dropout: 0.1,
            pooling: Pooling::Mean,
            max_lines: 0,
            cache_dir: String::new(),
            optimizer: OptimConfig {
                lr: 1e-4,
                weight_decay: 0.0,
                warmup_epochs: 0.0,
                schedule: "linear".into(),
                grad_clip: 1.0,
                ..OptimConfig::default()
            },
            train: TrainConfig {
                out_dir: "runs/simcse".into(),
                ..TrainConfig::default()
            },
        }
    }
}

impl SimcseConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 2 {
            bail!(
                "batch_size = {}: SimCSE needs at least 2 sentences per batch (the others are \
                 each sentence's negatives)",
                self.batch_size
            );
        }
        if self.max_len < 3 {
            bail!(
                "max_len = {}: needs room for the start token, one token and the end token",
                self.max_len
            );
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!(
                "temperature = {}: must be a positive number",
                self.temperature
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout = {}: must be in [0, 1)", self.dropout);
        }
        if self.dropout == 0.0 {
            bail!(
                "dropout = 0: a sentence's two encodings would be identical and SimCSE would \
                 have nothing to learn (the paper uses 0.1)"
            );
        }
        if self.epochs == 0 && self.steps == 0 {
            bail!("epochs = 0 and steps = 0: nothing to train");
        }
        Ok(())
    }
}

/// Everything `pretext simcse train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SimcseRun {
    pub train: TrainSummary,
    pub sequences_per_sec: f64,
    pub examples: usize,
    /// The run the encoder started from.
    pub source: PathBuf,
    pub out_dir: PathBuf,
}

/// Padded batches of sentences from a background [`Loader`].
struct SentenceBatches {
    loader: Loader<Result<Batch>>,
}

impl BatchSource for SentenceBatches {
    type Batch = Batch;

    fn next_batch(&mut self) -> Result<Option<(Batch, usize)>> {
        let Some(batch) = self.loader.next_batch() else {
            return Ok(None);
        };
        let batch = batch?;
        let epoch = batch.epoch;
        Ok(Some((batch, epoch)))
    }

    fn waited(&self) -> Duration {
        self.loader.waited()
    }
}

/// The pooled embeddings `[rows, hidden]` of hidden states `[rows, len, hidden]`.
fn pool(hidden: Tensor<3>, mask: &[bool], pooling: Pooling) -> Tensor<2> {
    let [rows, _, dim] = hidden.dims();
    match pooling {
        Pooling::Mean => {
            let device = hidden.device();
            mean_pool(hidden, mask, &device)
        }
        Pooling::Cls => hidden.narrow(1, 0, 1).reshape([rows, dim]),
    }
}

/// SimCSE's loss on one batch: the batch stacked on itself goes through the encoder once, so
/// every sentence gets two encodings under independent dropout masks.
fn simcse_loss(
    model: &super::encoder::MlmModel,
    batch: &Batch,
    config: &SimcseConfig,
    device: &Device,
) -> Result<(Tensor<1>, Tensor<2>)> {
    let ids = batch.input_tensor(device);
    let attention = batch.attention_tensor(device);
    let twice_ids = Tensor::cat(vec![ids.clone(), ids], 0);
    let twice_attention = Tensor::cat(vec![attention.clone(), attention], 0);
    let mask: Vec<bool> = batch
        .attention_mask
        .iter()
        .chain(&batch.attention_mask)
        .copied()
        .collect();
    let hidden = model.hidden(twice_ids, twice_attention)?;
    let z = pool(hidden, &mask, config.pooling);
    let n = batch.batch_size;
    let (z1, z2) = (z.clone().narrow(0, 0, n), z.narrow(0, n, n));
    Ok((cross_view_info_nce(z1.clone(), z2, config.temperature), z1))
}

/// Train SimCSE from the masked-language-model run `source` on the lines of `corpus`.
pub fn train_simcse(
    config: &SimcseConfig,
    source: &Path,
    corpus: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<SimcseRun> {
    config.validate()?;
    let plain = device.clone().without_autodiff();
    let start = MlmCheckpoint::load(source, &plain)
        .with_context(|| format!("reading the run to start from, {}", source.display()))?;
    if config.max_len > start.encoder.max_sequence_len() {
        bail!(
            "max_len = {}: the encoder of {} holds at most {} positions",
            config.max_len,
            source.display(),
            start.encoder.max_sequence_len()
        );
    }
    let out_dir = PathBuf::from(&config.train.out_dir);
    if out_dir.canonicalize().ok() == start.dir.canonicalize().ok() {
        bail!(
            "train.out_dir is {}, the run SimCSE starts from; name a new folder",
            out_dir.display()
        );
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let world = world();
    let tokenizer = &start.tokenizer;
    let cache_root = match config.cache_dir.as_str() {
        "" => default_cache_dir().unwrap_or_else(|| out_dir.join("cache")),
        dir => PathBuf::from(dir),
    };
    // The source run's hold-out split, so that its token cache is reused and SimCSE trains on
    // the lines the masked-language model trained on.
    let holdout_every = start.config.data.holdout_every;
    let mut cache = None;
    for turn in [true, false] {
        if world.is_root() == turn {
            cache = Some(TokenCache::open_or_build(
                corpus,
                tokenizer,
                holdout_every,
                config.max_lines,
                &cache_root,
                !options.quiet && world.is_root(),
            )?);
        }
        world.barrier();
    }
    let cache = cache.context("no token cache")?;
    let origin = corpus.display().to_string();
    let examples = CachedExamples::new(
        cache.train.clone(),
        tokenizer.special_ids(),
        config.max_len,
        ExampleMode::LineByLine,
        &origin,
    )?;
    let steps_per_epoch = examples.len() / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "{origin}: {} lines, fewer than one batch of batch_size = {}",
            examples.len(),
            config.batch_size
        );
    }
    let total_steps = if config.steps > 0 {
        config.steps
    } else {
        config.epochs * steps_per_epoch
    };
    let epochs = total_steps.div_ceil(steps_per_epoch);

    // The same weights, with SimCSE's dropout.
    let mut encoder = start.encoder.clone();
    encoder.dropout = config.dropout;
    let ad = device.clone().autodiff();
    let model = load_module(encoder.init(&ad)?, &module_tensors(&start.model))?;
    if world.is_root() {
        write_atomic(
            &out_dir.join("tokenizer.json"),
            &std::fs::read(start.dir.join("tokenizer.json"))?,
        )?;
    }

    let mut identity = toml::Table::try_from(config).unwrap_or_default();
    identity.remove("train");
    identity.remove("cache_dir");
    identity.insert(
        "source".into(),
        toml::Value::String(format!("{} at step {}", start.dir.display(), start.step)),
    );
    let spec = LoopSpec {
        name: "simcse",
        epochs,
        steps_per_epoch,
        total_steps,
        grad_accum: 1,
        replicas: 1,
        batch_size: config.batch_size,
        seed: config.seed,
        optimizer: &config.optimizer,
        train: &config.train,
        identity,
        // A masked-language-model checkpoint to every reader (its head is kept as it was).
        meta: serde_json::json!({
            "kind": "mlm",
            "config": start.config.to_toml(),
            "encoder": encoder,
            "simcse": {
                "config": toml::to_string(config).unwrap_or_default(),
                "source": start.dir,
                "source_step": start.step,
            },
        }),
        data: serde_json::json!({
            "examples": examples.len(),
            "tokens": examples.tokens(),
            "token_xxh3": cache.train_xxh3,
        }),
    };
    let example_count = examples.len();
    let examples: Arc<dyn ExampleSet> = Arc::new(examples);
    let pad = tokenizer.pad_id();
    let source_at = |start: usize| {
        let schedule = Schedule::from_step(
            start,
            config.batch_size,
            steps_per_epoch,
            epochs,
            config.train.prefetch,
            config.seed,
        );
        let examples = examples.clone();
        SentenceBatches {
            loader: Loader::spawn(examples.len(), schedule, move |epoch, _, indices| {
                let rows: Vec<Masked> = indices
                    .iter()
                    .map(|&i| Masked::unmasked(&examples.example(i).ids))
                    .collect();
                pad_batch(&rows, pad, 0).map(|mut b| {
                    b.epoch = epoch;
                    b
                })
            }),
        }
    };
    let (_, summary) = run_loop(
        model,
        source_at,
        |m, batch: Batch, _| {
            let (loss, z1) = simcse_loss(m, &batch, config, &ad)?;
            Ok(Step::from(loss).watching(z1))
        },
        |m, _, _: Vec<()>| m,
        |_| Ok(vec![]),
        &spec,
        options,
    )?;
    Ok(SimcseRun {
        sequences_per_sec: summary.images_per_sec,
        examples: example_count,
        source: start.dir.clone(),
        out_dir,
        train: summary,
    })
}

/// The pooling a run's sentence embeddings use: SimCSE's, for a SimCSE run; mean otherwise.
pub fn run_pooling(ckpt: &MlmCheckpoint) -> Pooling {
    ckpt.simcse.as_ref().map_or(Pooling::Mean, |c| c.pooling)
}

/// One neighbour of a query sentence.
#[derive(Debug, Clone, Serialize)]
pub struct SimilarSentence {
    pub line: usize,
    pub text: String,
    pub cosine: f32,
}

/// The `n` lines of `lines` (1-based line numbers as given) whose embeddings are nearest to
/// each query's, by cosine.
pub fn similar_sentences(
    ckpt: &MlmCheckpoint,
    lines: &[(usize, String)],
    queries: &[String],
    n: usize,
    device: &Device,
) -> Result<Vec<Vec<SimilarSentence>>> {
    if lines.is_empty() {
        bail!("no sentences to search");
    }
    let pooling = run_pooling(ckpt);
    let max_len = ckpt
        .config
        .data
        .max_len
        .min(ckpt.encoder.max_sequence_len());
    let embed = |texts: &[&str]| -> Result<Tensor<2>> {
        let f = encoder_features(
            &ckpt.model,
            &ckpt.tokenizer,
            texts,
            max_len,
            1,
            pooling,
            64,
            device,
        )?;
        let rows = f.values.len() / f.dim;
        Ok(l2_normalize(Tensor::<2>::from_data(
            TensorData::new(f.values, [rows, f.dim]),
            device,
        )))
    };
    let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
    let corpus = embed(&texts)?;
    let asked: Vec<&str> = queries.iter().map(String::as_str).collect();
    let scores = embed(&asked)?.matmul(corpus.transpose());
    let values = scores
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading similarities: {e:?}"))?;
    Ok(values
        .chunks(lines.len())
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(n)
                .map(|i| SimilarSentence {
                    line: lines[i].0,
                    text: lines[i].1.clone(),
                    cosine: row[i],
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::{TempDir, grammar_corpus, tiny_mlm_run};

    fn quiet() -> TrainOptions {
        TrainOptions {
            quiet: true,
            ..Default::default()
        }
    }

    /// SimCSE's loss on the distinct sentences of the test grammar, with the run's weights and
    /// SimCSE's dropout, under a fixed dropout seed.
    fn heldout_loss(run: &Path, config: &SimcseConfig) -> f64 {
        let device = Device::flex();
        let ckpt = MlmCheckpoint::load(run, &device).unwrap();
        let mut encoder = ckpt.encoder.clone();
        encoder.dropout = config.dropout;
        let ad = device.clone().autodiff();
        let model = load_module(encoder.init(&ad).unwrap(), &module_tensors(&ckpt.model)).unwrap();
        let mut sentences = grammar_corpus(400, 99);
        sentences.sort();
        sentences.dedup();
        let rows: Vec<Masked> = sentences
            .iter()
            .take(32)
            .map(|s| Masked::unmasked(&ckpt.tokenizer.encode(s).unwrap()))
            .collect();
        let batch = pad_batch(&rows, ckpt.tokenizer.pad_id(), 0).unwrap();
        ad.seed(7);
        let (loss, _) = simcse_loss(&model, &batch, config, &ad).unwrap();
        loss.into_scalar::<f64>()
    }

    #[test]
    fn simcse_learns_to_pair_a_sentences_dropout_views() {
        let dir = TempDir::new("simcse");
        let source = tiny_mlm_run(&dir, 40);
        let corpus = dir.write("lines.txt", &grammar_corpus(600, 8).join("\n"));
        let mut config = SimcseConfig {
            steps: 40,
            batch_size: 16,
            ..SimcseConfig::default()
        };
        config.optimizer.lr = 1e-3;
        config.train.out_dir = dir.path().join("simcse").display().to_string();
        config.cache_dir = dir.path().join("cache").display().to_string();
        let run = train_simcse(&config, &source, &corpus, &Device::flex(), &quiet()).unwrap();
        assert_eq!(run.train.steps, 40);

        // The objective on sentences of the grammar, before and after: chance is ln 32 = 3.47.
        let (before, after) = (
            heldout_loss(&source, &config),
            heldout_loss(&run.out_dir, &config),
        );
        assert!(after < 0.6 * before, "SimCSE loss {before} -> {after}");

        // Every text reader takes the run as an encoder run; it knows its pooling.
        let ckpt = MlmCheckpoint::load(&run.out_dir, &Device::flex()).unwrap();
        assert_eq!(ckpt.simcse.as_ref().map(|c| c.pooling), Some(Pooling::Mean));
        assert_eq!(ckpt.encoder.dropout, 0.1);
        let lines: Vec<(usize, String)> = grammar_corpus(50, 4)
            .into_iter()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .collect();
        let query = lines[7].1.clone();
        let found = similar_sentences(
            &ckpt,
            &lines,
            std::slice::from_ref(&query),
            3,
            &Device::flex(),
        )
        .unwrap();
        assert_eq!(found[0].len(), 3);
        assert_eq!(found[0][0].text, query);
        assert!(found[0][0].cosine > 0.999 && found[0][1].cosine <= found[0][0].cosine);

        // Bad settings and inputs.
        let err = |c: &SimcseConfig, from: &Path| {
            format!(
                "{:#}",
                train_simcse(c, from, &corpus, &Device::flex(), &quiet()).unwrap_err()
            )
        };
        let mut one = config.clone();
        one.batch_size = 1;
        assert!(err(&one, &source).contains("at least 2 sentences"));
        let mut still = config.clone();
        still.dropout = 0.0;
        assert!(err(&still, &source).contains("identical"));
        let mut into_source = config.clone();
        into_source.train.out_dir = source.display().to_string();
        assert!(err(&into_source, &source).contains("name a new folder"));
        let nowhere = dir.path().join("no-run");
        assert!(err(&config, &nowhere).contains("no-run"));
    }
}
