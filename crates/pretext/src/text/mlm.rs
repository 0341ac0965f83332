//! The masked-language-model job (`pretext mlm train`): corpus → tokenizer → examples →
//! masked batches on a background thread → the shared training loop; then held-out
//! masked-token accuracy and perplexity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::Serialize;

use super::config::{EmbeddingInit, MlmConfig, PositionInit};
use super::encoder::{EncoderConfig, MlmModel};
use super::examples::{Batch, ExampleSet, pad_batch};
use super::masking::{MaskingConfig, MaskingMode, mask_tokens};
use super::text_file::read_text;
use super::token_cache::{CachedExamples, TokenCache};
use super::token_vectors::token_vectors;
use super::tokenizer::{SpecialIds, TextTokenizer};
use crate::core::cache::default_cache_dir;
use crate::core::checkpoint::{load_module, module_tensors, previous_checkpoint, unused_path};
use crate::core::distributed::world;
use crate::core::loader::{Loader, Schedule};
use crate::core::train::{BatchSource, LoopSpec, Step, TrainOptions, TrainSummary, run_loop};
use crate::core::transformer::sinusoid_table;

/// The non-empty lines of a corpus, split into training and held-out lines.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: Vec<String>,
    pub heldout: Vec<String>,
}

/// Read `path` as UTF-8 text (see [`read_text`]: binary files are refused); every
/// `holdout_every`-th non-empty line is held out.
pub fn read_corpus(path: &Path, holdout_every: usize, max_lines: usize) -> Result<Corpus> {
    let text = read_text(path)?;
    let mut corpus = Corpus {
        train: Vec::new(),
        heldout: Vec::new(),
    };
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    let limit = if max_lines == 0 {
        usize::MAX
    } else {
        max_lines
    };
    for (i, line) in lines.take(limit).enumerate() {
        let line = line.to_string();
        if holdout_every > 0 && (i + 1).is_multiple_of(holdout_every) {
            corpus.heldout.push(line);
        } else {
            corpus.train.push(line);
        }
    }
    if corpus.train.is_empty() && corpus.heldout.is_empty() {
        bail!("{}: empty corpus (no non-empty line)", path.display());
    }
    if corpus.train.is_empty() {
        bail!(
            "{}: every line is held out; raise data.holdout_every",
            path.display()
        );
    }
    Ok(corpus)
}

/// What masking a batch needs to know, shared by training and evaluation.
#[derive(Debug, Clone)]
pub(crate) struct BatchMaker {
    masking: MaskingConfig,
    special: SpecialIds,
    vocab_size: usize,
    seed: u64,
}

impl BatchMaker {
    /// Held-out masking: each example masked once at `eval.mask_probability`, with a fixed
    /// seed (the same positions whatever the training seed or epoch).
    pub(crate) fn heldout(config: &MlmConfig, tokenizer: &TextTokenizer) -> Self {
        BatchMaker {
            masking: MaskingConfig {
                mode: MaskingMode::Static,
                probability: config.eval.mask_probability,
                ..config.masking.clone()
            },
            special: tokenizer.special_ids(),
            vocab_size: tokenizer.vocab_size(),
            seed: 0x4E1D0_u64,
        }
    }

    /// Mask and pad the examples at `indices` for `epoch`. A batch that drew no masked
    /// position (possible with a few short lines) gets its first maskable token masked, so
    /// every batch teaches something and the loss is defined.
    pub(crate) fn make(
        &self,
        examples: &dyn ExampleSet,
        indices: &[usize],
        epoch: usize,
    ) -> Result<Batch> {
        let rows = indices
            .iter()
            .map(|&i| {
                let e = examples.example(i);
                let seed = self.masking.seed_mix(self.seed, epoch as u64, i as u64);
                mask_tokens(
                    &e.ids,
                    Some(&e.words),
                    &self.masking,
                    &self.special,
                    self.vocab_size,
                    seed,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut batch = pad_batch(&rows, self.special.pad, 0)?;
        if batch.masked_count() == 0
            && let Some(pos) = batch
                .input_ids
                .iter()
                .position(|&id| !self.special.contains(id))
        {
            batch.labels[pos] = i64::from(batch.input_ids[pos]);
            batch.input_ids[pos] = self.special.mask;
        }
        Ok(batch)
    }
}

/// Masked batches from a background [`Loader`].
pub(crate) struct MlmBatches {
    loader: Loader<Result<Batch>>,
}

impl BatchSource for MlmBatches {
    type Batch = Batch;

    fn next_batch(&mut self) -> Result<Option<(Self::Batch, usize)>> {
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

/// Held-out masked-token scores.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MlmScores {
    /// Mean cross-entropy per masked token (nats).
    pub loss: f64,
    pub perplexity: f64,
    /// Share of masked tokens whose original token is the model's top prediction.
    pub accuracy: f64,
    pub masked_tokens: usize,
    pub sequences: usize,
}

/// Everything `pretext mlm train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct MlmRun {
    pub train: TrainSummary,
    /// Real (non-padding) tokens through the model per second of training.
    pub tokens_per_sec: f64,
    pub sequences_per_sec: f64,
    pub examples: usize,
    pub vocab_size: usize,
    pub tokenize_secs: f64,
    /// The token cache the examples were cut from, and whether an earlier run had built it.
    pub token_cache: PathBuf,
    pub token_cache_reused: bool,
    /// Seconds spent training the Word2Vec vectors the token embeddings started from
    /// (`model.embedding_init = "word2vec"`; before the training loop and its budget).
    pub embedding_init_secs: f64,
    pub heldout: Option<MlmScores>,
    pub out_dir: PathBuf,
}

fn tokenizer_for(
    config: &MlmConfig,
    corpus: &Path,
    out_dir: &Path,
    resume: bool,
) -> Result<TextTokenizer> {
    let saved = out_dir.join("tokenizer.json");
    let tokenizer = if resume && saved.is_file() {
        TextTokenizer::load(&saved)?
    } else if !config.tokenizer.path.is_empty() {
        TextTokenizer::load(Path::new(&config.tokenizer.path))?
    } else {
        TextTokenizer::train(
            config.tokenizer.family,
            &[corpus.to_path_buf()],
            config.tokenizer.vocab_size,
            config.tokenizer.lowercase,
        )?
    };
    if tokenizer.family() != config.tokenizer.family {
        bail!(
            "tokenizer.family = \"{}\" but the tokenizer is a {} one; set tokenizer.family = \"{}\"",
            config.tokenizer.family.name(),
            tokenizer.family().name(),
            tokenizer.family().name()
        );
    }
    // Written beside the checkpoint so every later command finds the two together (by rank 0
    // alone under MPI).
    if world().is_root() {
        tokenizer.save(&saved)?;
    }
    Ok(tokenizer)
}

/// What a text-pretraining job (MLM, ELECTRA) trains on, once the corpus is tokenised.
pub(crate) struct TextData {
    pub tokenizer: TextTokenizer,
    pub encoder: EncoderConfig,
    pub cache: TokenCache,
    pub examples: Arc<CachedExamples>,
    pub heldout: Option<CachedExamples>,
    pub tokenize_secs: f64,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    pub epochs: usize,
    pub out_dir: PathBuf,
}

/// The tokenizer, the token cache and the examples of `corpus_path` as `config` asks, and the
/// length of the run (under MPI rank 0 builds the tokenizer and cache first).
pub(crate) fn prepare_text(
    config: &MlmConfig,
    corpus_path: &Path,
    options: &TrainOptions,
) -> Result<TextData> {
    let out_dir = PathBuf::from(&config.train.out_dir);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    // Under MPI rank 0 trains the tokenizer and builds the token cache, then the other ranks
    // load what it wrote: a tokenizer trained twice can number its pieces differently.
    let world = world();
    let root_first = |make: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        if world.is_root() {
            make()?;
        }
        world.barrier();
        if !world.is_root() {
            make()?;
        }
        Ok(())
    };
    let mut tokenizer = None;
    root_first(&mut || {
        let resume = options.resume || !world.is_root();
        tokenizer = Some(tokenizer_for(config, corpus_path, &out_dir, resume)?);
        Ok(())
    })?;
    let tokenizer = tokenizer.context("no tokenizer")?;
    let encoder = config.encoder_config(&tokenizer)?;

    let origin = corpus_path.display().to_string();
    let tokenize_start = Instant::now();
    let cache_root = match config.data.cache_dir.as_str() {
        "" => default_cache_dir().unwrap_or_else(|| out_dir.join("cache")),
        dir => PathBuf::from(dir),
    };
    let mut cache = None;
    root_first(&mut || {
        cache = Some(TokenCache::open_or_build(
            corpus_path,
            &tokenizer,
            config.data.holdout_every,
            config.data.max_lines,
            &cache_root,
            !options.quiet && world.is_root(),
        )?);
        Ok(())
    })?;
    let cache = cache.context("no token cache")?;
    let (max_len, mode) = (config.data.max_len, config.data.mode);
    let examples = CachedExamples::new(
        cache.train.clone(),
        tokenizer.special_ids(),
        max_len,
        mode,
        &origin,
    )?;
    let heldout = if cache.heldout.lines() == 0 {
        if !options.quiet && world.is_root() && config.data.holdout_every > 0 {
            eprintln!(
                "note: no held-out score: {origin} has {} line(s) and every {}th is held out \
                 (data.holdout_every), so none is",
                cache.train.lines(),
                config.data.holdout_every
            );
        }
        None
    } else {
        let origin = format!("{origin} (held-out lines)");
        CachedExamples::new(
            cache.heldout.clone(),
            tokenizer.special_ids(),
            max_len,
            mode,
            &origin,
        )
        .ok()
    };
    let tokenize_secs = tokenize_start.elapsed().as_secs_f64();

    let batches_per_epoch = examples.len() / config.batch_size;
    let steps_per_epoch = batches_per_epoch / config.grad_accum;
    if steps_per_epoch == 0 {
        bail!(
            "{origin}: {} training examples, fewer than one step of batch_size x grad_accum = {} \
             (lower batch_size, or use a longer corpus)",
            examples.len(),
            config.batch_size * config.grad_accum
        );
    }
    let total_steps = if config.steps > 0 {
        config.steps
    } else {
        config.epochs * steps_per_epoch
    };
    Ok(TextData {
        tokenizer,
        encoder,
        cache,
        examples: Arc::new(examples),
        heldout,
        tokenize_secs,
        steps_per_epoch,
        total_steps,
        epochs: total_steps.div_ceil(steps_per_epoch),
        out_dir,
    })
}

impl TextData {
    /// What `--resume` checks: the examples follow from the cached tokens and the data
    /// settings (which are part of the identity), so the cache's hash stands for them without a
    /// pass.
    pub(crate) fn fingerprint(&self) -> serde_json::Value {
        serde_json::json!({
            "examples": self.examples.len(),
            "tokens": self.examples.tokens(),
            "token_xxh3": self.cache.train_xxh3,
        })
    }

    /// Real tokens per example, on average.
    pub(crate) fn mean_tokens(&self) -> f64 {
        self.examples.tokens() as f64 / self.examples.len() as f64
    }

    /// Masked batches of the training examples from global step `start`, made on a background
    /// thread.
    pub(crate) fn masked_batches(&self, config: &MlmConfig, start: usize) -> MlmBatches {
        let schedule = Schedule {
            batch_size: config.batch_size,
            steps_per_epoch: self.steps_per_epoch * config.grad_accum,
            epochs: self.epochs,
            start_epoch: start / self.steps_per_epoch,
            start_step: (start % self.steps_per_epoch) * config.grad_accum,
            prefetch: config.train.prefetch,
            seed: config.seed,
        };
        let examples: Arc<dyn ExampleSet> = self.examples.clone();
        let maker = BatchMaker {
            masking: config.masking.clone(),
            special: self.tokenizer.special_ids(),
            vocab_size: self.tokenizer.vocab_size(),
            seed: config.seed,
        };
        MlmBatches {
            loader: Loader::spawn(examples.len(), schedule, move |epoch, _, indices| {
                maker.make(examples.as_ref(), indices, epoch).map(|mut b| {
                    b.epoch = epoch;
                    b
                })
            }),
        }
    }
}

/// The settings of a run that must match for `--resume` to continue it: all but where it
/// writes (`train`), how it is scored (`eval`) and where the token cache lives.
pub(crate) fn run_identity(config: &impl Serialize) -> toml::Table {
    let mut identity = toml::Table::try_from(config).unwrap_or_default();
    identity.remove("train");
    identity.remove("eval");
    if let Some(toml::Value::Table(data)) = identity.get_mut("data") {
        data.remove("cache_dir");
    }
    identity
}

/// `module` (a fresh model whose embeddings sit under `encoder.embeddings`) with its token and
/// position tables started as `model.embedding_init` and `model.position_init` ask, and the
/// seconds the Word2Vec vectors took. A resumed run loads its weights instead.
pub(crate) fn initial_embeddings<M: burn::module::Module>(
    module: M,
    config: &MlmConfig,
    data: &TextData,
) -> Result<(M, f64)> {
    let (words, positions) = (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.embeddings.position_embeddings.weight",
    );
    let model = &config.model;
    if model.embedding_init == EmbeddingInit::Random && model.position_init == PositionInit::Random
    {
        // Reading the tensors would initialise burn's lazy parameters in another order, and so
        // with other random values: leave a model that needs nothing untouched.
        return Ok((module, 0.0));
    }
    let dim = data.encoder.hidden;
    let mut tensors = module_tensors(&module);
    let table = |name: &str| {
        let index = tensors.iter().position(|t| t.name == name);
        index.with_context(|| format!("the model has no tensor {name}"))
    };
    let (words, positions) = (table(words)?, table(positions)?);
    let mut secs = 0.0;
    if config.model.embedding_init == EmbeddingInit::Word2Vec {
        let vectors = token_vectors(
            &data.cache.train,
            data.tokenizer.vocab_size(),
            dim,
            super::encoder::INIT_STD,
            config.seed,
            &data.out_dir,
        )?;
        let rows = &mut tensors[words].values;
        for (id, seen) in vectors.seen.iter().enumerate() {
            if *seen {
                rows[id * dim..(id + 1) * dim]
                    .copy_from_slice(&vectors.rows[id * dim..(id + 1) * dim]);
            }
        }
        secs = vectors.secs;
    }
    if config.model.position_init == PositionInit::Sinusoid {
        // Sines and cosines let one linear map shift attention by a fixed offset at every
        // position (Vaswani et al. 2017), where independent random rows must each learn who
        // their neighbours are. Scaled to the other tables' spread (a sinusoid's is 1/sqrt 2).
        let rows = &mut tensors[positions].values;
        let scale = (super::encoder::INIT_STD * std::f64::consts::SQRT_2) as f32;
        let table = sinusoid_table(rows.len() / dim, dim);
        for (row, v) in rows.iter_mut().zip(table) {
            *row = v * scale;
        }
    }
    Ok((load_module(module, &tensors)?, secs))
}

/// Pretrain a masked language model on `corpus`.
pub fn train_mlm(
    config: &MlmConfig,
    corpus_path: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<MlmRun> {
    config.validate()?;
    let data = prepare_text(config, corpus_path, options)?;
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let mut model = data.encoder.init(&ad)?;
    let mut embedding_init_secs = 0.0;
    // A resumed run loads its weights from the checkpoint: no vectors to train.
    if !options.resume {
        (model, embedding_init_secs) = initial_embeddings(model, config, &data)?;
    }
    let spec = LoopSpec {
        name: "mlm",
        epochs: data.epochs,
        steps_per_epoch: data.steps_per_epoch,
        total_steps: data.total_steps,
        grad_accum: config.grad_accum,
        replicas: 1,
        batch_size: config.batch_size,
        seed: config.seed,
        optimizer: &config.optimizer,
        train: &config.train,
        identity: run_identity(config),
        meta: serde_json::json!({
            "kind": "mlm",
            "config": config.to_toml(),
            "encoder": data.encoder,
        }),
        data: data.fingerprint(),
    };
    let (model, summary) = run_loop(
        model,
        |start| data.masked_batches(config, start),
        |m: &MlmModel, batch: Batch, _| {
            // The loss is a mean over the masked tokens, however many the batch drew.
            let masked = batch.masked_count() as f64;
            m.loss(
                batch.input_tensor(&ad),
                batch.attention_tensor(&ad),
                &batch.labels,
            )
            .map(|loss| Step::from(loss).weighted(masked))
        },
        |m, _, _: Vec<()>| m,
        |_| Ok(vec![]),
        &spec,
        options,
    )?;

    let scores = match &data.heldout {
        Some(heldout) => Some(heldout_scores(
            &model.valid(),
            &data.tokenizer,
            heldout,
            config,
            &device.clone().without_autodiff(),
        )?),
        None => None,
    };
    if let Some(s) = scores.as_ref().filter(|s| !s.loss.is_finite()) {
        bail!("{}", set_aside_diverged(&summary.checkpoint, s.loss)?);
    }
    let sequences_per_sec = summary.images_per_sec;
    Ok(MlmRun {
        tokens_per_sec: sequences_per_sec * data.mean_tokens(),
        sequences_per_sec,
        examples: data.examples.len(),
        vocab_size: data.tokenizer.vocab_size(),
        tokenize_secs: data.tokenize_secs,
        token_cache: data.cache.dir.clone(),
        token_cache_reused: data.cache.reused,
        embedding_init_secs,
        heldout: scores,
        out_dir: data.out_dir.clone(),
        train: summary,
    })
}

/// A run whose held-out loss is not finite trained finite weights that overflow on text it
/// has not seen: its checkpoint is moved aside (so that no reader takes it for a trained model)
/// and the previous one, where there is one, takes its place. Returns what to tell the user.
pub(crate) fn set_aside_diverged(checkpoint: &Path, loss: f64) -> Result<String> {
    let aside = unused_path(&checkpoint.with_extension("diverged.safetensors"));
    std::fs::rename(checkpoint, &aside)
        .with_context(|| format!("cannot move {} aside", checkpoint.display()))?;
    let previous = previous_checkpoint(checkpoint);
    let restored = previous.is_file() && std::fs::rename(&previous, checkpoint).is_ok();
    Ok(format!(
        "the held-out loss is {loss} after training: the weights overflow on unseen text (try a \
         lower optimizer.lr or optimizer.grad_clip). They are kept in {}; {}",
        aside.display(),
        if restored {
            format!("{} is the previous checkpoint again", checkpoint.display())
        } else {
            "there was no earlier checkpoint to keep".to_string()
        }
    ))
}

/// Masked-token loss, perplexity and top-1 accuracy of `model` on `examples`, each masked once
/// with a fixed seed (the same positions whatever the training seed or epoch), at most
/// `config.eval.max_sequences` of them.
pub fn heldout_scores(
    model: &MlmModel,
    tokenizer: &TextTokenizer,
    examples: &dyn ExampleSet,
    config: &MlmConfig,
    device: &Device,
) -> Result<MlmScores> {
    let take = match config.eval.max_sequences {
        0 => examples.len(),
        n => n.min(examples.len()),
    };
    if take == 0 {
        bail!("no held-out sequence to score");
    }
    let maker = BatchMaker::heldout(config, tokenizer);
    let (mut nll, mut correct, mut count) = (0.0f64, 0usize, 0usize);
    let indices: Vec<usize> = (0..take).collect();
    for chunk in indices.chunks(config.batch_size.max(1)) {
        let batch = maker.make(examples, chunk, 0)?;
        let (log_probs, targets) = model.masked_log_probs(
            batch.input_tensor(device),
            batch.attention_tensor(device),
            &batch.labels,
        )?;
        let n = targets.dims()[0];
        nll -= log_probs
            .clone()
            .gather(1, targets.clone())
            .sum()
            .into_scalar::<f64>();
        let predicted = log_probs.argmax(1);
        correct += predicted.equal(targets).int().sum().into_scalar::<i64>() as usize;
        count += n;
    }
    let loss = nll / count as f64;
    Ok(MlmScores {
        loss,
        perplexity: loss.exp(),
        accuracy: correct as f64 / count as f64,
        masked_tokens: count,
        sequences: take,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::checkpoint::Checkpoint;
    use crate::text::checkpoint::{MlmCheckpoint, fill_mask};
    use crate::text::examples::ExampleMode;
    use crate::text::test_support::{TempDir, grammar_corpus, tiny_mlm_config};

    fn quiet() -> TrainOptions {
        TrainOptions {
            quiet: true,
            ..Default::default()
        }
    }

    #[test]
    fn mlm_job_learns_a_small_grammar_and_fills_masks() {
        let dir = TempDir::new("mlm-job");
        let corpus = dir.write("c.txt", &grammar_corpus(400, 5).join("\n"));
        let mut config = tiny_mlm_config(&dir, "run", 300);
        config.model.dropout = 0.0;
        config.optimizer.lr = 2e-3;
        let run = train_mlm(&config, &corpus, &Device::flex(), &quiet()).unwrap();
        assert!(run.train.checkpoint.exists());
        let heldout = run.heldout.unwrap();
        // Every masked word of the grammar but the subject follows from its clause; chance
        // is 1/V.
        let ln_v = (run.vocab_size as f64).ln();
        assert!(heldout.loss < 0.25 * ln_v, "{heldout:?} vs ln V = {ln_v}");
        assert!(heldout.accuracy > 0.6, "{heldout:?}");

        let ckpt = MlmCheckpoint::load(Path::new(&config.train.out_dir), &Device::flex()).unwrap();
        let again = ckpt
            .evaluate_corpus(&corpus, false, &Device::flex())
            .unwrap();
        assert!(
            (again.loss - heldout.loss).abs() < 1e-4,
            "{again:?} {heldout:?}"
        );
        let top = fill_mask(
            &ckpt,
            "the lazy fox jumps over the <mask>",
            3,
            &Device::flex(),
        )
        .unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0][0].token.trim_start_matches('Ġ'), "dog", "{top:?}");
        let err = fill_mask(&ckpt, "the lazy fox [MASK]", 3, &Device::flex()).unwrap_err();
        assert!(err.to_string().contains("<mask>"), "{err}");
        let err = fill_mask(&ckpt, "the lazy fox <MASK>", 3, &Device::flex()).unwrap_err();
        assert!(err.to_string().contains("case-sensitive"), "{err}");
    }

    /// The position table starts as the scaled sinusoid and the token table from Word2Vec when
    /// asked, each leaving every other tensor as initialised; the defaults change nothing.
    #[test]
    fn initial_embeddings_follow_the_config() {
        let dir = TempDir::new("mlm-init");
        let corpus = dir.write("c.txt", &grammar_corpus(200, 3).join("\n"));
        let mut config = tiny_mlm_config(&dir, "run", 1);
        let data = prepare_text(&config, &corpus, &quiet()).unwrap();
        let device = Device::flex();
        device.seed(7);
        let fresh = data.encoder.init(&device).unwrap();
        let before = module_tensors(&fresh);
        let by_name = |tensors: &[crate::core::checkpoint::NamedTensor], name: &str| {
            let t = tensors.iter().find(|t| t.name == name).unwrap();
            t.values.clone()
        };
        let (words, positions) = (
            "encoder.embeddings.word_embeddings.weight",
            "encoder.embeddings.position_embeddings.weight",
        );

        let (same, secs) = initial_embeddings(fresh.clone(), &config, &data).unwrap();
        assert_eq!(secs, 0.0);
        for (a, b) in before.iter().zip(module_tensors(&same)) {
            assert_eq!((&a.name, &a.values), (&b.name, &b.values));
        }

        config.model.position_init = PositionInit::Sinusoid;
        config.model.embedding_init = EmbeddingInit::Word2Vec;
        let (started, _) = initial_embeddings(fresh, &config, &data).unwrap();
        let after = module_tensors(&started);
        let dim = data.encoder.hidden;
        let table = by_name(&after, positions);
        let want = sinusoid_table(table.len() / dim, dim);
        for (got, want) in table.iter().zip(&want) {
            assert!((got - want * 0.02 * std::f32::consts::SQRT_2).abs() < 1e-7);
        }
        // Position 5, channel 0 is sin(5) at the tables' spread.
        assert!((table[5 * dim] - 5f32.sin() * 0.028_284_27).abs() < 1e-6);
        let (old, new) = (by_name(&before, words), by_name(&after, words));
        let changed = old.chunks(dim).zip(new.chunks(dim)).filter(|(a, b)| a != b);
        assert!(
            changed.count() > 5,
            "Word2Vec rows replace the seen pieces'"
        );
        for (a, b) in before.iter().zip(&after) {
            if a.name != words && a.name != positions {
                assert_eq!((&a.name, &a.values), (&b.name, &b.values));
            }
        }
    }

    #[test]
    fn a_diverged_checkpoint_is_set_aside_and_the_previous_one_restored() {
        let dir = TempDir::new("mlm-diverged");
        let ckpt = dir.path().join("checkpoint.safetensors");
        let prev = previous_checkpoint(&ckpt);
        std::fs::write(&ckpt, b"step 20").unwrap();
        std::fs::write(&prev, b"step 10").unwrap();
        let said = set_aside_diverged(&ckpt, f64::NAN).unwrap();
        assert!(
            said.contains("NaN") && said.contains("previous checkpoint"),
            "{said}"
        );
        assert_eq!(std::fs::read(&ckpt).unwrap(), b"step 10");
        let aside = dir.path().join("checkpoint.diverged.safetensors");
        assert_eq!(std::fs::read(&aside).unwrap(), b"step 20");
        assert!(!prev.exists());
        // Again, with nothing earlier: the checkpoint goes, beside (not over) the first.
        let said = set_aside_diverged(&ckpt, f64::INFINITY).unwrap();
        assert!(said.contains("no earlier checkpoint"), "{said}");
        assert!(!ckpt.exists());
        let second = dir.path().join("checkpoint.diverged-2.safetensors");
        assert_eq!(std::fs::read(second).unwrap(), b"step 10");
    }

    #[test]
    fn resumed_mlm_run_matches_uninterrupted_with_dropout_and_accumulation() {
        let dir = TempDir::new("mlm-resume");
        let corpus = dir.write("c.txt", &grammar_corpus(200, 2).join("\n"));
        let mut whole = tiny_mlm_config(&dir, "whole", 8);
        whole.grad_accum = 2;
        whole.train.checkpoint_every = 2;
        let device = Device::flex();
        let a = train_mlm(&whole, &corpus, &device, &quiet()).unwrap();

        let mut cut = whole.clone();
        cut.train.out_dir = dir.path().join("cut").display().to_string();
        cut.train.max_steps = 3;
        train_mlm(&cut, &corpus, &device, &quiet()).unwrap();
        cut.train.max_steps = 0;
        let resumed = TrainOptions {
            resume: true,
            quiet: true,
            ..Default::default()
        };
        let b = train_mlm(&cut, &corpus, &device, &resumed).unwrap();
        assert_eq!(b.train.resumed_from_step, 3);
        assert_eq!(a.train.final_loss, b.train.final_loss);
        let (wa, wb) = (
            Checkpoint::load(&a.train.checkpoint).unwrap().model,
            Checkpoint::load(&b.train.checkpoint).unwrap().model,
        );
        assert_eq!(wa.len(), wb.len());
        for (x, y) in wa.iter().zip(&wb) {
            assert_eq!((&x.name, &x.values), (&y.name, &y.values));
        }
    }

    #[test]
    fn bad_corpora_get_clear_errors() {
        let dir = TempDir::new("mlm-bad");
        let device = Device::flex();
        let config = tiny_mlm_config(&dir, "run", 5);
        let empty = dir.write("empty.txt", "\n  \n");
        let err = train_mlm(&config, &empty, &device, &quiet()).unwrap_err();
        assert!(format!("{err:#}").contains("empty corpus"), "{err:#}");

        let short = dir.write("short.txt", &grammar_corpus(10, 1).join("\n"));
        let mut packed = config.clone();
        packed.data.mode = ExampleMode::Packed;
        packed.data.max_len = 500;
        let err = train_mlm(&packed, &short, &device, &quiet()).unwrap_err();
        assert!(format!("{err:#}").contains("packed block"), "{err:#}");

        let mut big_batch = config.clone();
        big_batch.batch_size = 64;
        let err = train_mlm(&big_batch, &short, &device, &quiet()).unwrap_err();
        assert!(
            format!("{err:#}").contains("fewer than one step"),
            "{err:#}"
        );

        let missing = dir.path().join("nope.txt");
        let err = train_mlm(&config, &missing, &device, &quiet()).unwrap_err();
        assert!(format!("{err:#}").contains("nope.txt"), "{err:#}");
    }
}
