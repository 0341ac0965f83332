//! ELECTRA (Clark et al. 2020, `pretext electra train`): replaced-token detection.
//!
//! A small generator learns masked language modelling; the discriminator, the encoder kept
//! after training, learns to tell at every position whether the token is the original or one
//! the generator put there. Every token teaches the discriminator, not only the masked 15%:
//! that is where ELECTRA's efficiency at small compute comes from. The two share their token,
//! position and type embeddings; the generator is narrower (a quarter of the width by default)
//! and reads them through a projection, as the reference code and Hugging Face's
//! `ElectraForMaskedLM` do.
//!
//! Per batch, as the paper's pseudocode:
//!
//! ```text
//! masked   = mask(x)                                    (data pipeline: 15%, 80/10/10)
//! logits   = generator(masked)[masked positions]
//! loss_gen = cross_entropy(logits, x[masked positions])
//! corrupt  = x, masked positions <- sample(softmax(logits))      (no gradient)
//! loss_dis = binary_cross_entropy(discriminator(corrupt), corrupt != x)   (every real token)
//! loss     = loss_gen + discriminator_weight * loss_dis           (weight 50)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softplus;
use serde::{Deserialize, Serialize};

use super::config::{
    MlmConfig, MlmEvalSettings, ModelSettings, TextDataSettings, TokenizerSettings,
};
use super::encoder::{
    Encoder, EncoderConfig, EncoderLayer, MlmHead, MlmModel, labelled_rows, run_layers,
};
use super::examples::{Batch, ExampleSet, corpus_examples};
use super::masking::{IGNORE, MaskingConfig};
use super::mlm::{
    BatchMaker, initial_embeddings, prepare_text, read_corpus, run_identity, set_aside_diverged,
};
use super::tokenizer::{Family, TextTokenizer};
use crate::core::checkpoint::{Checkpoint, NamedTensor, load_module};
use crate::core::config::TrainConfig;
use crate::core::kernels::{FastLayerNorm, LinearForward, gelu};
use crate::core::optim::OptimConfig;
use crate::core::train::{LoopSpec, Step, TrainOptions, TrainSummary, checkpoint_file, run_loop};

/// The config of `pretext electra train`: the sections of `mlm train`'s, plus the generator's
/// width and the weight of the discriminator's loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectraConfig {
    pub seed: u64,
    pub epochs: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// The generator's hidden size, heads and FFN width as a share of the discriminator's
    /// (the paper's 1/4; at most 1).
    pub generator_size: f64,
    /// Weight of the discriminator's loss against the generator's (the paper's 50).
    pub discriminator_weight: f64,
    pub tokenizer: TokenizerSettings,
    pub model: ModelSettings,
    pub data: TextDataSettings,
    pub masking: MaskingConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: MlmEvalSettings,
}

impl Default for ElectraConfig {
    fn default() -> Self {
        let m = MlmConfig::default();
        ElectraConfig {
            seed: m.seed,
            epochs: m.epochs,
            steps: m.steps,
            batch_size: m.batch_size,
            grad_accum: m.grad_accum,
            generator_size: 0.25,
            discriminator_weight: 50.0,
            tokenizer: m.tokenizer,
            model: m.model,
            data: m.data,
            masking: m.masking,
            optimizer: m.optimizer,
            train: TrainConfig {
                out_dir: "runs/electra".into(),
                ..m.train
            },
            eval: m.eval,
        }
    }
}

impl ElectraConfig {
    /// The same run as `mlm train` sees it: what the shared text pipeline and every reader of
    /// the discriminator's encoder take.
    pub fn as_mlm(&self) -> MlmConfig {
        MlmConfig {
            seed: self.seed,
            epochs: self.epochs,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            tokenizer: self.tokenizer.clone(),
            model: self.model.clone(),
            data: self.data.clone(),
            masking: self.masking.clone(),
            optimizer: self.optimizer.clone(),
            train: self.train.clone(),
            eval: self.eval.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.as_mlm().validate()?;
        if self.tokenizer.family != Family::Bert {
            bail!(
                "tokenizer.family = \"{}\": ELECTRA uses BERT's WordPiece tokenizer (Hugging \
                 Face's ELECTRA classes number positions from 0, as BERT does); set \
                 tokenizer.family = \"bert\"",
                self.tokenizer.family.name()
            );
        }
        if !(self.generator_size > 0.0 && self.generator_size <= 1.0) {
            bail!(
                "generator_size = {}: the generator's width as a share of the discriminator's, \
                 in (0, 1] (a generator wider than the discriminator gives it too hard a task; \
                 the paper finds 1/4 to 1/2 best)",
                self.generator_size
            );
        }
        if !(self.discriminator_weight > 0.0 && self.discriminator_weight.is_finite()) {
            bail!(
                "discriminator_weight = {}: must be a positive number (the paper's 50)",
                self.discriminator_weight
            );
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The generator's shape: the discriminator's, narrowed by `size`.
pub fn generator_config(disc: &EncoderConfig, size: f64) -> Result<EncoderConfig> {
    let scale = |x: usize| ((x as f64 * size).round() as usize).max(1);
    let gen_cfg = EncoderConfig {
        hidden: scale(disc.hidden),
        heads: scale(disc.heads),
        ffn: scale(disc.ffn),
        ..disc.clone()
    };
    if !gen_cfg.hidden.is_multiple_of(gen_cfg.heads) {
        bail!(
            "generator_size = {size}: the generator's hidden size {} is not divisible by its {} \
             heads; pick a share that keeps it whole (0.25 or 0.5 of a preset)",
            gen_cfg.hidden,
            gen_cfg.heads
        );
    }
    Ok(gen_cfg)
}

/// `discriminator_predictions`: dense, GELU, one logit per token.
#[derive(Module, Debug)]
pub struct DiscriminatorHead {
    pub dense: Linear,
    pub prediction: Linear,
}

/// The generator: a projection from the shared embeddings to its width
/// (`electra.embeddings_project`), its layers, and an MLM head back to the embedding width
/// (`generator_predictions`) whose decoder is the shared word embeddings.
#[derive(Module, Debug)]
pub struct Generator {
    /// `None` when the generator is as wide as the embeddings (Hugging Face has none then).
    pub project: Option<Linear>,
    pub layers: Vec<EncoderLayer>,
    pub head: MlmHead,
}

/// The discriminator's encoder (the one kept; its embeddings are shared), its head, and the
/// generator.
#[derive(Module, Debug)]
pub struct ElectraModel {
    pub encoder: Encoder,
    pub discriminator: DiscriminatorHead,
    pub generator: Generator,
}

/// A fresh ELECTRA model of discriminator `disc` and generator `gen_cfg`.
pub fn init_electra(
    disc: &EncoderConfig,
    gen_cfg: &EncoderConfig,
    device: &Device,
) -> Result<ElectraModel> {
    gen_cfg.validate()?;
    let (h, g) = (disc.hidden, gen_cfg.hidden);
    let encoder = disc.init(device)?.encoder;
    Ok(ElectraModel {
        encoder,
        discriminator: DiscriminatorHead {
            dense: disc.linear(h, h, device),
            prediction: disc.linear(h, 1, device),
        },
        generator: Generator {
            project: (g != h).then(|| disc.linear(h, g, device)),
            layers: disc.layer_stack(g, gen_cfg.heads, gen_cfg.ffn, device),
            head: MlmHead {
                dense: disc.linear(g, h, device),
                layer_norm: FastLayerNorm::new(h, disc.layer_norm_eps, device),
                bias: Param::from_tensor(Tensor::zeros([disc.vocab_size], device)),
            },
        },
    })
}

impl ElectraModel {
    /// Per-token logits `[batch, len]` that the token was replaced.
    pub fn discriminator_logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<2>> {
        let h = self.encoder.forward(input_ids, attention_mask)?;
        let [batch, len, _] = h.dims();
        let x = gelu(self.discriminator.dense.forward_fast(h));
        Ok(self
            .discriminator
            .prediction
            .forward_fast(x)
            .reshape([batch, len]))
    }

    /// The generator's vocabulary logits at every position `[batch, len, vocab]`.
    pub fn generator_logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<3>> {
        let h = self.generator_hidden(input_ids, attention_mask)?;
        let [batch, len, width] = h.dims();
        let logits = self.generator_head(h.reshape([batch * len, width]));
        Ok(logits.reshape([batch as i64, len as i64, -1]))
    }

    fn generator_hidden(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<3>> {
        let key_pad = self.encoder.key_padding(&input_ids, attention_mask)?;
        let x = self.encoder.embed(input_ids);
        let x = match &self.generator.project {
            Some(project) => project.forward_fast(x),
            None => x,
        };
        Ok(run_layers(&self.generator.layers, x, key_pad))
    }

    fn generator_head(&self, rows: Tensor<2>) -> Tensor<2> {
        self.generator
            .head
            .logits(rows, &self.encoder.embeddings.word_embeddings)
    }

    /// The generator's logits `[n, vocab]` at the `n` labelled positions, and their labels.
    pub fn generator_masked_logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
        labels: &[i64],
    ) -> Result<(Tensor<2>, Tensor<2, Int>)> {
        let vocab = self.generator.head.bias.dims()[0];
        let h = self.generator_hidden(input_ids, attention_mask)?;
        let (rows, targets) = labelled_rows(h, labels, vocab)?;
        Ok((self.generator_head(rows), targets))
    }
}

/// One token drawn from `softmax(logits)` per row (Gumbel-max: the argmax of the logits plus
/// Gumbel noise), from the device's seeded random stream.
fn sample_rows(logits: Tensor<2>) -> Result<Vec<i64>> {
    let device = logits.device();
    let u = Tensor::<2>::random(logits.dims(), Distribution::Uniform(0.0, 1.0), &device)
        .clamp(1e-10, 1.0 - 1e-7);
    let gumbel = u.log().neg().log().neg();
    (logits + gumbel)
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| anyhow!("reading the generator's samples: {e:?}"))
}

/// The batch with each labelled position holding `sampled[k]` (in row-major order of those
/// positions) and every other the original token, and whether each token was replaced (a
/// sample equal to the original is no replacement).
fn corrupt(batch: &Batch, sampled: &[i64]) -> (Vec<u32>, Vec<f32>) {
    let mut ids = batch.input_ids.clone();
    let mut replaced = vec![0f32; ids.len()];
    let mut k = 0;
    for (i, &label) in batch.labels.iter().enumerate() {
        if label != IGNORE {
            let token = sampled[k] as u32;
            k += 1;
            replaced[i] = f32::from(i64::from(token) != label);
            ids[i] = token;
        }
    }
    (ids, replaced)
}

/// The parts of ELECTRA's loss on one batch.
pub struct ElectraLoss {
    pub total: Tensor<1>,
    pub generator: Tensor<1>,
    pub discriminator: Tensor<1>,
    /// The discriminator's logits `[batch, len]` and the replaced flags they were scored on.
    pub logits: Tensor<2>,
    pub replaced: Vec<f32>,
    /// The generator's logits at the masked positions and their labels.
    pub generator_logits: Tensor<2>,
    pub targets: Tensor<2, Int>,
}

/// ELECTRA's loss on a masked batch (see the module documentation).
pub fn electra_loss(
    model: &ElectraModel,
    batch: &Batch,
    discriminator_weight: f64,
    device: &Device,
) -> Result<ElectraLoss> {
    let attention = batch.attention_tensor(device);
    let (logits, targets) = model.generator_masked_logits(
        batch.input_tensor(device),
        attention.clone(),
        &batch.labels,
    )?;
    let generator = crate::core::kernels::cross_entropy(logits.clone(), targets.clone());
    let sampled = sample_rows(logits.clone().detach())?;
    let (ids, replaced) = corrupt(batch, &sampled);
    let shape = [batch.batch_size, batch.seq_len];
    let corrupted = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), shape),
        device,
    );
    let d = model.discriminator_logits(corrupted, attention)?;
    let y = Tensor::<2>::from_data(TensorData::new(replaced.clone(), shape), device);
    let real: Vec<f32> = batch
        .attention_mask
        .iter()
        .map(|&m| f32::from(u8::from(m)))
        .collect();
    let real = Tensor::<2>::from_data(TensorData::new(real, shape), device);
    // Binary cross-entropy on logits, softplus(d) - y d, over the real tokens.
    let bce = (softplus(d.clone(), 1.0) - y * d.clone()) * real.clone();
    let discriminator = (bce.sum() / real.sum()).reshape([1]);
    let total = generator.clone() + discriminator.clone().mul_scalar(discriminator_weight);
    Ok(ElectraLoss {
        total,
        generator,
        discriminator,
        logits: d,
        replaced,
        generator_logits: logits,
        targets,
    })
}

/// Held-out scores of both networks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ElectraScores {
    /// The generator's masked-token cross-entropy and top-1 accuracy.
    pub generator_loss: f64,
    pub generator_accuracy: f64,
    /// The discriminator's binary cross-entropy per real token, and its accuracy.
    pub discriminator_loss: f64,
    pub discriminator_accuracy: f64,
    /// Share of real tokens the generator's samples replaced.
    pub replaced_share: f64,
    /// Share of the replaced tokens the discriminator flags.
    pub replaced_recall: f64,
    pub masked_tokens: usize,
    pub tokens: usize,
    pub sequences: usize,
}

/// ELECTRA's scores on `examples`, each masked once with a fixed seed (as `mlm`'s held-out
/// score) and corrupted by samples from a fixed random stream, at most
/// `config.eval.max_sequences` of them.
pub fn heldout_electra(
    model: &ElectraModel,
    tokenizer: &TextTokenizer,
    examples: &dyn ExampleSet,
    config: &ElectraConfig,
    device: &Device,
) -> Result<ElectraScores> {
    let take = match config.eval.max_sequences {
        0 => examples.len(),
        n => n.min(examples.len()),
    };
    if take == 0 {
        bail!("no held-out sequence to score");
    }
    let maker = BatchMaker::heldout(&config.as_mlm(), tokenizer);
    device.seed(0xE1EC);
    let (mut gen_nll, mut gen_correct, mut masked) = (0.0f64, 0usize, 0usize);
    let (mut bce, mut correct, mut tokens, mut replaced, mut caught) = (0.0f64, 0, 0, 0, 0);
    let indices: Vec<usize> = (0..take).collect();
    for chunk in indices.chunks(config.batch_size.max(1)) {
        let batch = maker.make(examples, chunk, 0)?;
        let out = electra_loss(model, &batch, config.discriminator_weight, device)?;
        let n = out.targets.dims()[0];
        gen_nll += out.generator.into_scalar::<f64>() * n as f64;
        gen_correct += out
            .generator_logits
            .argmax(1)
            .equal(out.targets)
            .int()
            .sum()
            .into_scalar::<i64>() as usize;
        masked += n;
        let real = batch.attention_mask.iter().filter(|&&m| m).count();
        bce += out.discriminator.into_scalar::<f64>() * real as f64;
        let logits = out
            .logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow!("reading the discriminator's logits: {e:?}"))?;
        for ((&l, &y), &m) in logits.iter().zip(&out.replaced).zip(&batch.attention_mask) {
            if m {
                let flagged = l > 0.0;
                correct += usize::from(flagged == (y > 0.5));
                tokens += 1;
                if y > 0.5 {
                    replaced += 1;
                    caught += usize::from(flagged);
                }
            }
        }
    }
    Ok(ElectraScores {
        generator_loss: gen_nll / masked as f64,
        generator_accuracy: gen_correct as f64 / masked as f64,
        discriminator_loss: bce / tokens as f64,
        discriminator_accuracy: correct as f64 / tokens as f64,
        replaced_share: replaced as f64 / tokens as f64,
        replaced_recall: if replaced == 0 {
            0.0
        } else {
            caught as f64 / replaced as f64
        },
        masked_tokens: masked,
        tokens,
        sequences: take,
    })
}

/// Everything `pretext electra train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ElectraRun {
    pub train: TrainSummary,
    /// Real (non-padding) tokens through both networks per second of training.
    pub tokens_per_sec: f64,
    pub sequences_per_sec: f64,
    pub examples: usize,
    pub vocab_size: usize,
    pub tokenize_secs: f64,
    pub embedding_init_secs: f64,
    pub generator: EncoderConfig,
    pub heldout: Option<ElectraScores>,
    pub out_dir: PathBuf,
}

/// Pretrain ELECTRA on `corpus`.
pub fn train_electra(
    config: &ElectraConfig,
    corpus: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<ElectraRun> {
    config.validate()?;
    let mlm = config.as_mlm();
    let data = prepare_text(&mlm, corpus, options)?;
    let generator = generator_config(&data.encoder, config.generator_size)?;
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let mut model = init_electra(&data.encoder, &generator, &ad)?;
    let mut embedding_init_secs = 0.0;
    if !options.resume {
        (model, embedding_init_secs) = initial_embeddings(model, &mlm, &data)?;
    }
    let spec = LoopSpec {
        name: "electra",
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
            "kind": "electra",
            "config": config.to_toml(),
            "encoder": data.encoder,
            "generator": generator,
        }),
        data: data.fingerprint(),
    };
    let weight = config.discriminator_weight;
    let (model, summary) = run_loop(
        model,
        |start| data.masked_batches(&mlm, start),
        |m: &ElectraModel, batch: Batch, _| {
            Ok(Step::from(electra_loss(m, &batch, weight, &ad)?.total))
        },
        |m, _, _: Vec<()>| m,
        |_| Ok(vec![]),
        &spec,
        options,
    )?;
    let scores = match &data.heldout {
        Some(heldout) => Some(heldout_electra(
            &model.valid(),
            &data.tokenizer,
            heldout,
            config,
            &device.clone().without_autodiff(),
        )?),
        None => None,
    };
    if let Some(s) = scores
        .as_ref()
        .filter(|s| !(s.generator_loss.is_finite() && s.discriminator_loss.is_finite()))
    {
        let loss = s.generator_loss + s.discriminator_loss;
        bail!("{}", set_aside_diverged(&summary.checkpoint, loss)?);
    }
    let sequences_per_sec = summary.images_per_sec;
    Ok(ElectraRun {
        tokens_per_sec: sequences_per_sec * data.mean_tokens(),
        sequences_per_sec,
        examples: data.examples.len(),
        vocab_size: data.tokenizer.vocab_size(),
        tokenize_secs: data.tokenize_secs,
        embedding_init_secs,
        generator,
        heldout: scores,
        out_dir: data.out_dir.clone(),
        train: summary,
    })
}

/// A trained ELECTRA run read back from its folder.
pub struct ElectraCheckpoint {
    pub model: ElectraModel,
    pub encoder: EncoderConfig,
    pub generator: EncoderConfig,
    pub tokenizer: TextTokenizer,
    pub config: ElectraConfig,
    pub step: usize,
    pub dir: PathBuf,
}

/// The run folder and checkpoint file of `path` (either of them).
pub(crate) fn run_paths(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (
            path.to_path_buf(),
            checkpoint_file(&path.display().to_string()),
        )
    } else {
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.to_path_buf(),
        )
    }
}

impl ElectraCheckpoint {
    /// Load an ELECTRA run (its folder or checkpoint file) with its tokenizer, onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (dir, file) = run_paths(path);
        let ckpt = Checkpoint::load(&file)?;
        if ckpt.meta["kind"].as_str() != Some("electra") {
            bail!(
                "{} is not an ELECTRA checkpoint (it was written by `pretext {}`)",
                file.display(),
                match ckpt.meta["kind"].as_str() {
                    Some("mlm") => "mlm train",
                    _ => "pretrain",
                }
            );
        }
        let (encoder, generator, config) = electra_meta(&ckpt, &file)?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        if tokenizer.vocab_size() != encoder.vocab_size {
            bail!(
                "{}: the tokenizer ({} ids) does not belong to this model ({} ids)",
                dir.join("tokenizer.json").display(),
                tokenizer.vocab_size(),
                encoder.vocab_size
            );
        }
        let model = load_module(init_electra(&encoder, &generator, device)?, &ckpt.model)
            .with_context(|| format!("loading weights from {}", file.display()))?;
        Ok(ElectraCheckpoint {
            model,
            encoder,
            generator,
            tokenizer,
            config,
            step: ckpt.meta["step"].as_u64().unwrap_or(0) as usize,
            dir,
        })
    }
}

/// Token ids and both networks' logits for a few sentences (for checking exports).
#[derive(Debug, Clone, Serialize)]
pub struct ElectraLogits {
    pub sentences: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    /// `[len]` per sentence: the logit that each token was replaced.
    pub discriminator: Vec<Vec<f32>>,
    /// `[len][vocab]` per sentence.
    pub generator: Vec<Vec<Vec<f32>>>,
}

impl ElectraCheckpoint {
    /// Both networks' logits for each sentence, run one at a time without padding.
    pub fn sentence_logits(&self, sentences: &[String], device: &Device) -> Result<ElectraLogits> {
        let read = |t: Tensor<2>| -> Result<Vec<f32>> {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow!("reading logits: {e:?}"))
        };
        let mut out = ElectraLogits {
            sentences: sentences.to_vec(),
            input_ids: Vec::new(),
            discriminator: Vec::new(),
            generator: Vec::new(),
        };
        for sentence in sentences {
            let ids = self.tokenizer.encode(sentence)?;
            let len = ids.len();
            let input = Tensor::<2, Int>::from_data(
                TensorData::new(ids.iter().map(|&x| i64::from(x)).collect(), [1, len]),
                device,
            );
            let mask =
                Tensor::<2, Bool>::from_data(TensorData::new(vec![true; len], [1, len]), device);
            let d = self
                .model
                .discriminator_logits(input.clone(), mask.clone())?;
            let g = self.model.generator_logits(input, mask)?;
            let vocab = g.dims()[2];
            out.discriminator.push(read(d)?);
            out.generator.push(
                read(g.reshape([len, vocab]))?
                    .chunks(vocab)
                    .map(<[f32]>::to_vec)
                    .collect(),
            );
            out.input_ids.push(ids);
        }
        Ok(out)
    }
}

/// The discriminator's and generator's shapes and the run's config, from an ELECTRA
/// checkpoint's metadata.
pub(crate) fn electra_meta(
    ckpt: &Checkpoint,
    file: &Path,
) -> Result<(EncoderConfig, EncoderConfig, ElectraConfig)> {
    let shape = |key: &str| -> Result<EncoderConfig> {
        serde_json::from_value(ckpt.meta[key].clone())
            .with_context(|| format!("{}: unreadable {key} settings", file.display()))
    };
    let config: ElectraConfig = toml::from_str(ckpt.meta["config"].as_str().unwrap_or_default())
        .map_err(|e| anyhow!("{}: unreadable run config: {e}", file.display()))?;
    Ok((shape("encoder")?, shape("generator")?, config))
}

/// The discriminator's encoder of an ELECTRA checkpoint as a masked-language-model whose head
/// is left at its initialisation (readers use the encoder alone).
pub(crate) fn discriminator_as_mlm(
    ckpt: &Checkpoint,
    encoder: &EncoderConfig,
    device: &Device,
) -> Result<MlmModel> {
    let mut model = encoder.init(device)?;
    let tensors: Vec<NamedTensor> = ckpt
        .model
        .iter()
        .filter_map(|t| {
            t.name.strip_prefix("encoder.").map(|rest| NamedTensor {
                name: rest.to_string(),
                shape: t.shape.clone(),
                values: t.values.clone(),
            })
        })
        .collect();
    model.encoder = load_module(model.encoder, &tensors)?;
    Ok(model)
}

/// Whether `path` (a run folder or checkpoint file) holds an ELECTRA run.
pub fn is_electra_run(path: &Path) -> bool {
    Checkpoint::load(&run_paths(path).1).is_ok_and(|c| c.meta["kind"].as_str() == Some("electra"))
}

impl ElectraCheckpoint {
    /// Held-out scores on the lines of `corpus` that training held out (same
    /// `data.holdout_every`), or on all of it when `all_lines`.
    pub fn evaluate_corpus(
        &self,
        corpus: &Path,
        all_lines: bool,
        device: &Device,
    ) -> Result<ElectraScores> {
        let data = &self.config.data;
        let split = read_corpus(
            corpus,
            if all_lines { 0 } else { data.holdout_every },
            data.max_lines,
        )?;
        let lines = if all_lines {
            split.train
        } else {
            split.heldout
        };
        if lines.is_empty() {
            bail!(
                "{}: training held out no lines (data.holdout_every = 0); pass --all-lines to \
                 score the whole file",
                corpus.display()
            );
        }
        let examples = corpus_examples(
            &self.tokenizer,
            &lines,
            data.max_len,
            data.mode,
            &corpus.display().to_string(),
        )?;
        heldout_electra(
            &self.model,
            &self.tokenizer,
            &examples,
            &self.config,
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::checkpoint::{MlmCheckpoint, fill_mask};
    use crate::text::encoder::{NormPlacement, SizePreset};
    use crate::text::examples::ExampleMode;
    use crate::text::masking::Masked;
    use crate::text::test_support::{TempDir, grammar_corpus};

    fn quiet() -> TrainOptions {
        TrainOptions {
            quiet: true,
            ..Default::default()
        }
    }

    fn tiny_config(dir: &TempDir, steps: usize) -> ElectraConfig {
        let mut c = ElectraConfig {
            steps,
            batch_size: 16,
            ..ElectraConfig::default()
        };
        c.tokenizer.vocab_size = 600;
        c.model.size = SizePreset::Tiny;
        c.model.dropout = 0.0;
        c.data.mode = ExampleMode::LineByLine;
        c.data.max_len = 32;
        c.data.holdout_every = 10;
        c.optimizer.lr = 2e-3;
        c.optimizer.warmup_steps = 10;
        c.train.out_dir = dir.path().join("run").display().to_string();
        c.data.cache_dir = dir.path().join("cache").display().to_string();
        c.eval.max_sequences = 0;
        c
    }

    #[test]
    fn corrupting_puts_the_samples_at_the_masked_positions() {
        let batch = Batch {
            input_ids: vec![2, 4, 9, 5, 3, 0],
            labels: vec![IGNORE, 7, IGNORE, 5, IGNORE, IGNORE],
            attention_mask: vec![true, true, true, true, true, false],
            batch_size: 1,
            seq_len: 6,
            epoch: 0,
        };
        // The second sample is the original token: no replacement.
        let (ids, replaced) = corrupt(&batch, &[8, 5]);
        assert_eq!(ids, [2, 8, 9, 5, 3, 0]);
        assert_eq!(replaced, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn the_discriminator_loss_never_reaches_the_generator() {
        let dir = TempDir::new("electra-grads");
        let config = tiny_config(&dir, 1);
        let disc = EncoderConfig {
            layers: 1,
            ..EncoderConfig::preset(SizePreset::Tiny, Family::Bert, 50)
        };
        let gen_cfg = generator_config(&disc, config.generator_size).unwrap();
        assert_eq!((gen_cfg.hidden, gen_cfg.heads, gen_cfg.ffn), (32, 1, 128));
        let device = Device::flex().autodiff();
        let model = init_electra(&disc, &gen_cfg, &device).unwrap();
        let row = Masked {
            input_ids: vec![2, 10, 4, 11, 12, 3],
            labels: vec![IGNORE, 20, IGNORE, 21, IGNORE, IGNORE],
        };
        let batch = crate::text::examples::pad_batch(&[row], 0, 0).unwrap();
        let out = electra_loss(&model, &batch, 50.0, &device).unwrap();
        let generator = model.generator.layers[0].attention.query.weight.val();
        let discriminator = model.encoder.layers[0].attention.query.weight.val();
        let words = model.encoder.embeddings.word_embeddings.weight.val();
        // The sampled tokens are data to the discriminator: no gradient flows back through them.
        let grads = out.discriminator.backward();
        assert!(generator.grad(&grads).is_none());
        assert!(discriminator.grad(&grads).is_some() && words.grad(&grads).is_some());
        // The generator's loss trains the generator and the shared embeddings only.
        let grads = out.generator.backward();
        assert!(generator.grad(&grads).is_some() && words.grad(&grads).is_some());
        assert!(discriminator.grad(&grads).is_none());
    }

    #[test]
    fn electra_learns_to_spot_replaced_tokens() {
        let dir = TempDir::new("electra-job");
        let corpus = dir.write("c.txt", &grammar_corpus(400, 5).join("\n"));
        let mut config = tiny_config(&dir, 800);
        // The discriminator catches on late: after a few hundred steps it still flags almost
        // nothing, at 1,500 it catches 97% of the replacements (lr 1e-3 is slower still).
        config.optimizer.lr = 5e-4;
        let run = train_electra(&config, &corpus, &Device::flex(), &quiet()).unwrap();
        let h = run.heldout.unwrap();
        // Always answering "original" scores 1 - replaced_share; the discriminator must beat
        // it by catching replacements.
        assert!(h.replaced_share > 0.02, "{h:?}");
        assert!(h.replaced_recall > 0.3, "{h:?}");
        assert!(
            h.discriminator_accuracy > 1.0 - h.replaced_share + 0.01,
            "{h:?}"
        );
        // The generator learnt the grammar: chance is 1 / vocabulary.
        assert!(h.generator_accuracy > 0.3, "{h:?}");

        // The same scores from the saved run.
        let ckpt = ElectraCheckpoint::load(&run.out_dir, &Device::flex()).unwrap();
        let again = ckpt
            .evaluate_corpus(&corpus, false, &Device::flex())
            .unwrap();
        assert!(
            (again.discriminator_loss - h.discriminator_loss).abs() < 1e-4,
            "{again:?}"
        );

        // Text readers take the discriminator's encoder; what needs an MLM head is refused.
        let reader = MlmCheckpoint::load(&run.out_dir, &Device::flex()).unwrap();
        assert!(!reader.mlm_head);
        let mine = crate::core::checkpoint::module_tensors(&reader.model.encoder);
        let theirs = crate::core::checkpoint::module_tensors(&ckpt.model.encoder);
        assert_eq!(mine.len(), theirs.len());
        for (a, b) in mine.iter().zip(&theirs) {
            assert_eq!((&a.name, &a.values), (&b.name, &b.values));
        }
        let err = fill_mask(&reader, "the lazy [MASK]", 3, &Device::flex()).unwrap_err();
        assert!(err.to_string().contains("ELECTRA"), "{err}");

        // The export: both networks under Hugging Face's names and shapes.
        let out = dir.path().join("hf");
        let written = crate::text::hf::export_electra_hf(&ckpt, &out).unwrap();
        let names = |net: &str| -> Vec<(String, Vec<usize>)> {
            let bytes = std::fs::read(out.join(net).join("model.safetensors")).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            st.tensors()
                .into_iter()
                .map(|(n, t)| (n, t.shape().to_vec()))
                .collect()
        };
        let (d, g) = (names("discriminator"), names("generator"));
        let shape = |all: &[(String, Vec<usize>)], n: &str| {
            all.iter().find(|(m, _)| m == n).map(|(_, s)| s.clone())
        };
        let v = ckpt.encoder.vocab_size;
        assert_eq!(
            shape(&d, "discriminator_predictions.dense_prediction.weight"),
            Some(vec![1, 128])
        );
        assert_eq!(shape(&d, "electra.embeddings_project.weight"), None);
        assert_eq!(
            shape(&g, "electra.embeddings_project.weight"),
            Some(vec![32, 128])
        );
        assert_eq!(
            shape(&g, "electra.encoder.layer.1.intermediate.dense.weight"),
            Some(vec![128, 32])
        );
        assert_eq!(
            shape(&g, "generator_predictions.dense.weight"),
            Some(vec![128, 32])
        );
        assert_eq!(shape(&g, "generator_lm_head.weight"), Some(vec![v, 128]));
        assert_eq!(written[0].architecture, "ElectraForPreTraining");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("generator").join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                config["hidden_size"].as_u64(),
                config["embedding_size"].as_u64()
            ),
            (Some(32), Some(128))
        );
    }

    /// Pre-LayerNorm blocks reach both networks and the checkpoint, and learn the task as the
    /// post-LayerNorm ones do; Hugging Face has no class for them, so the export is refused by
    /// name.
    #[test]
    fn a_pre_layernorm_electra_learns_and_has_no_hugging_face_export() {
        let dir = TempDir::new("electra-pre");
        let corpus = dir.write("c.txt", &grammar_corpus(400, 5).join("\n"));
        let mut config = tiny_config(&dir, 800);
        config.model.norm = NormPlacement::Pre;
        config.optimizer.lr = 5e-4;
        let run = train_electra(&config, &corpus, &Device::flex(), &quiet()).unwrap();
        let h = run.heldout.unwrap();
        assert!(
            h.replaced_recall > 0.3 && h.generator_accuracy > 0.3,
            "{h:?}"
        );
        let ckpt = ElectraCheckpoint::load(&run.out_dir, &Device::flex()).unwrap();
        assert_eq!(ckpt.encoder.norm, NormPlacement::Pre);
        assert_eq!(ckpt.generator.norm, NormPlacement::Pre);
        let err = crate::text::hf::export_electra_hf(&ckpt, &dir.path().join("hf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("post-LayerNorm"), "{err}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let dir = TempDir::new("electra-bad");
        let base = tiny_config(&dir, 1);
        let refused = |edit: &dyn Fn(&mut ElectraConfig)| {
            let mut c = base.clone();
            edit(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(refused(&|c| c.generator_size = 1.5).contains("wider than the discriminator"));
        assert!(refused(&|c| c.generator_size = 0.0).contains("generator_size"));
        assert!(refused(&|c| c.tokenizer.family = Family::Roberta).contains("family = \"bert\""));
        assert!(refused(&|c| c.discriminator_weight = -1.0).contains("discriminator_weight"));
        let disc = EncoderConfig::preset(SizePreset::Mini, Family::Bert, 50);
        let err = generator_config(&disc, 0.7).unwrap_err().to_string();
        assert!(err.contains("divisible"), "{err}");
    }
}
