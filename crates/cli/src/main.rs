//! `pretext`: the command-line front end. Every job shares the global options below; commands
//! that report numbers print one JSON object on stdout with `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pretext::checkpoint::{Checkpoint, load_module};
use pretext::config::PretrainConfig;
use pretext::data::{self, ImageSet, Splits};
use pretext::eval::{Protocols, evaluate, extract};
use pretext::methods::Method;
use pretext::models::Backbone;
use pretext::train::{TrainOptions, TrainSummary, pretrain};
use pretext::with_method;
use serde_json::json;

mod text;

#[derive(Parser, Debug)]
#[command(
    name = "pretext",
    version,
    about = "Self-supervised learning: pretrain without labels, then measure what it saves"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// TOML config file (see configs/).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set optimizer.lr=0.3 (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Compute device: flex (CPU, default), wgpu, tch, tch-cuda:N (as compiled in).
    #[arg(long, global = true, default_value = "flex")]
    pub device: String,
    /// Random seed (overrides the config's `seed`).
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Worker threads for data and CPU compute (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Print one JSON object with the results on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pretrain a backbone without labels (SimCLR, BYOL).
    Pretrain {
        /// Dataset folder (IDX/MNIST layout, CIFAR batches or image folder); default: embedded Fashion-MNIST subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long)]
        resume: bool,
    },
    /// Score a checkpoint's frozen features (and a random-init backbone beside them): kNN and
    /// linear probes for image backbones; text-probe for MLM encoders (with --data FILE.tsv,
    /// settings by --set, e.g. --set max_windows=2).
    Eval {
        protocol: Protocol,
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image dataset folder, or for text-probe a TSV file of labelled texts.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Skip the random-init baseline.
        #[arg(long)]
        no_baseline: bool,
        /// text-probe: column of the label (from 0; default 1).
        #[arg(long)]
        label_column: Option<usize>,
        /// text-probe: column of the text (from 0; default the last).
        #[arg(long)]
        text_column: Option<usize>,
    },
    /// Write an MLM checkpoint in Hugging Face's format (config.json, model.safetensors,
    /// tokenizer.json), loadable with transformers' from_pretrained.
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum, default_value = "hf")]
        format: ExportFormat,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a checkpoint's features of a split to a .npy file.
    Embed {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        split: Split,
    },
    /// Pretrain SimCLR on the embedded data for a few minutes, then evaluate against random init.
    Quickstart {
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Masked language modelling (BERT, RoBERTa): train, evaluate, dump logits.
    #[command(subcommand)]
    Mlm(text::MlmCommand),
    /// Train a tokenizer (WordPiece or byte-level BPE).
    #[command(subcommand)]
    Tokenizer(text::TokenizerCommand),
    /// The most likely tokens at each [MASK] (BERT) or <mask> (RoBERTa) of a text.
    FillMask {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text with one or more mask tokens.
        text: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Word2Vec: skip-gram and CBOW word embeddings.
    #[command(subcommand)]
    Word2vec(pretext_word2vec::cli::Word2VecCommand),
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Protocol {
    Knn,
    Linear,
    All,
    TextProbe,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ExportFormat {
    Hf,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Split {
    Train,
    Test,
}

/// burn's CPU backend allocates and frees large activation buffers every step; glibc serves
/// those with fresh mmaps (a page fault per 4 KiB touched), mimalloc keeps them in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Position of `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the Rust bindings name
/// no constant for it); its documented default is 10 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 10;

/// By default mimalloc hands freed memory back to the OS after 10 ms; burn frees and
/// reallocates the same large activation buffers every step, so the kernel zeroes fresh pages
/// all the time (12% of a training profile). Keeping freed memory for reuse gives 25% more
/// MLM tokens/s at the cost of holding the peak footprint. `MIMALLOC_PURGE_DELAY` still wins.
fn keep_freed_memory() {
    // SAFETY: FFI calls that read and set one integer option of the allocator; the check on
    // the current value guards against a library whose option numbering differs.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT
            && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

const QUICKSTART_CONFIG: &str = include_str!("../../../configs/quickstart.toml");

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    if let Some(n) = g.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set --threads")?;
    }
    match cli.command {
        Command::Pretrain { data, resume } => {
            let config = load_config(&g, None)?;
            let device = pretext::device::parse(&g.device)?;
            let splits = data::load(data.as_deref())?;
            eprintln!("data: {}", splits.description);
            let summary = pretrain_any(&config, &splits.train, &device, resume, g.json)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "pretrain", "data": splits.description, "summary": summary })
                );
            } else {
                print_summary(&summary);
            }
            Ok(())
        }
        Command::Eval {
            protocol,
            checkpoint,
            data,
            no_baseline,
            label_column,
            text_column,
        } => {
            let device = pretext::device::parse(&g.device)?;
            let protocols = match protocol {
                Protocol::TextProbe => {
                    let data = data.context("text-probe needs --data FILE.tsv")?;
                    return text::run_text_probe(&g, &checkpoint, &data, label_column, text_column);
                }
                Protocol::Knn => Protocols {
                    knn: true,
                    linear: false,
                },
                Protocol::Linear => Protocols {
                    knn: false,
                    linear: true,
                },
                Protocol::All => Protocols {
                    knn: true,
                    linear: true,
                },
            };
            let splits = data::load(data.as_deref())?;
            let loaded = LoadedCheckpoint::open(&checkpoint, &device)?;
            let mut config = loaded.config.clone();
            apply_eval_overrides(&mut config, &g)?;
            let report = eval_report(&loaded, &config, &splits, protocols, !no_baseline, &device)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "eval", "checkpoint": checkpoint, "data": splits.description, "results": report })
                );
            } else {
                print_scores(&report, &loaded.config);
            }
            Ok(())
        }
        Command::Embed {
            checkpoint,
            data,
            out,
            split,
        } => {
            let device = pretext::device::parse(&g.device)?;
            let splits = data::load(data.as_deref())?;
            let loaded = LoadedCheckpoint::open(&checkpoint, &device)?;
            let set = match split {
                Split::Train => &splits.train,
                Split::Test => splits.require_test()?,
            };
            loaded.check_compatible(set)?;
            let f = extract(&loaded.backbone, set, &loaded.mean, &loaded.std, &device);
            pretext::report::write_npy(&out, &f.values, f.len(), f.dim)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "embed", "out": out, "rows": f.len(), "dim": f.dim })
                );
            } else {
                println!(
                    "wrote {} features of dimension {} to {}",
                    f.len(),
                    f.dim,
                    out.display()
                );
            }
            Ok(())
        }
        Command::Quickstart { data } => quickstart(&g, data.as_deref()),
        Command::Mlm(cmd) => text::run_mlm(&g, cmd),
        Command::Export {
            checkpoint,
            format: ExportFormat::Hf,
            out,
        } => text::run_export(&g, &checkpoint, &out),
        Command::Tokenizer(cmd) => text::run_tokenizer(&g, cmd),
        Command::FillMask {
            checkpoint,
            text,
            top_k,
        } => text::run_fill_mask(&g, checkpoint, text, top_k),
        Command::Word2vec(cmd) => pretext_word2vec::cli::run(cmd, g.json),
    }
}

fn load_config(g: &Global, default_text: Option<&str>) -> Result<PretrainConfig> {
    let mut sets = g.set.clone();
    if let Some(seed) = g.seed {
        sets.push(format!("seed={seed}"));
    }
    match (&g.config, default_text) {
        (Some(path), _) => PretrainConfig::load(Some(path), &sets),
        (None, Some(text)) => PretrainConfig::from_toml(text, "quickstart config", &sets),
        (None, None) => PretrainConfig::load(None, &sets),
    }
}

/// Eval reads the checkpoint's config; `--set eval.*` and `--seed` still apply.
fn apply_eval_overrides(config: &mut PretrainConfig, g: &Global) -> Result<()> {
    let mut sets = g.set.clone();
    if let Some(seed) = g.seed {
        sets.push(format!("seed={seed}"));
    }
    *config = PretrainConfig::from_toml(&config.to_toml(), "checkpoint config", &sets)?;
    Ok(())
}

fn pretrain_any(
    config: &PretrainConfig,
    train: &ImageSet,
    device: &Device,
    resume: bool,
    quiet: bool,
) -> Result<TrainSummary> {
    let options = TrainOptions { resume, quiet };
    with_method!(config.method.as_str(), M => {
        let (_, summary) = pretrain::<M>(config, train, device, &options)?;
        Ok(summary)
    })
}

/// A checkpoint's backbone with what is needed to feed it.
struct LoadedCheckpoint {
    config: PretrainConfig,
    backbone: Backbone,
    mean: Vec<f32>,
    std: Vec<f32>,
    shape: (usize, usize, usize),
}

impl LoadedCheckpoint {
    fn open(path: &Path, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        let text = ckpt.meta["config"]
            .as_str()
            .context("checkpoint has no config")?;
        let config: PretrainConfig =
            toml::from_str(text).context("checkpoint config is unreadable")?;
        let floats = |key: &str| -> Vec<f32> {
            ckpt.meta[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_f64())
                        .map(|v| v as f32)
                        .collect()
                })
                .unwrap_or_default()
        };
        let dim = |key: &str| ckpt.meta[key].as_u64().unwrap_or(0) as usize;
        let shape = (dim("channels"), dim("height"), dim("width"));
        let backbone = with_method!(config.method.as_str(), M => {
            let method = load_module(M::init(&config, shape.0, device), &ckpt.model)
                .with_context(|| format!("{}", path.display()))?;
            method.backbone().clone()
        });
        Ok(LoadedCheckpoint {
            mean: floats("mean"),
            std: floats("std"),
            config,
            backbone,
            shape,
        })
    }

    fn random_backbone(&self, device: &Device) -> Backbone {
        device.seed(self.config.seed);
        with_method!(self.config.method.as_str(), M => M::init(&self.config, self.shape.0, device).backbone().clone())
    }

    fn check_compatible(&self, set: &ImageSet) -> Result<()> {
        if set.channels != self.shape.0 {
            bail!(
                "the checkpoint was trained on {}-channel images, the data has {} channels",
                self.shape.0,
                set.channels
            );
        }
        Ok(())
    }
}

fn limited(set: &ImageSet, limit: usize) -> ImageSet {
    if limit > 0 {
        set.take(limit)
    } else {
        set.clone()
    }
}

fn eval_report(
    loaded: &LoadedCheckpoint,
    config: &PretrainConfig,
    splits: &Splits,
    protocols: Protocols,
    baseline: bool,
    device: &Device,
) -> Result<serde_json::Value> {
    let test = limited(splits.require_test()?, config.data.test_limit);
    let train = limited(&splits.train, config.data.train_limit);
    loaded.check_compatible(&train)?;
    let t = Instant::now();
    let score = |b: &Backbone| {
        evaluate(
            b,
            &train,
            &test,
            &loaded.mean,
            &loaded.std,
            &config.eval,
            protocols,
            config.seed,
            device,
        )
    };
    let pretrained = score(&loaded.backbone)?;
    let random = if baseline {
        Some(score(&loaded.random_backbone(device))?)
    } else {
        None
    };
    Ok(json!({
        "method": loaded.config.method,
        "train_images": train.len(),
        "test_images": test.len(),
        "knn_k": config.eval.knn_k,
        "pretrained": pretrained,
        "random_init": random,
        "seconds": t.elapsed().as_secs_f64(),
    }))
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.2}%", 100.0 * x))
}

fn print_scores(report: &serde_json::Value, config: &PretrainConfig) {
    println!(
        "evaluated on {} train / {} test images",
        report["train_images"], report["test_images"]
    );
    println!(
        "{:<22} {:>12} {:>14}",
        "backbone",
        format!("kNN (k={})", config.eval.knn_k),
        "linear probe"
    );
    let row = |name: &str, s: &serde_json::Value| {
        println!(
            "{:<22} {:>12} {:>14}",
            name,
            pct(&s["knn"]),
            pct(&s["linear"])
        );
    };
    row(
        &format!("pretrained ({})", config.method),
        &report["pretrained"],
    );
    if !report["random_init"].is_null() {
        row("random init", &report["random_init"]);
    }
}

fn print_summary(s: &TrainSummary) {
    println!(
        "{}: {} steps ({:.2} epochs), loss {:.4} -> {:.4} (last epoch mean {:.4}), {:.0} images/s",
        s.method,
        s.steps,
        s.epochs_done,
        s.first_loss,
        s.final_loss,
        s.last_epoch_loss,
        s.images_per_sec
    );
    print_time(&s.time);
    println!("checkpoint: {}", s.checkpoint.display());
}

fn print_time(t: &pretext::train::TimeBreakdown) {
    let share = |x: f64| 100.0 * x / t.total.max(1e-9);
    println!(
        "time: total {:.1}s; data wait {:.1}s ({:.1}%), forward {:.1}s ({:.0}%), backward {:.1}s ({:.0}%), optimizer {:.1}s ({:.1}%), checkpoints {:.1}s",
        t.total,
        t.data_wait,
        share(t.data_wait),
        t.forward,
        share(t.forward),
        t.backward,
        share(t.backward),
        t.optimizer,
        share(t.optimizer),
        t.checkpoint
    );
}

fn quickstart(g: &Global, data: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let config = load_config(g, Some(QUICKSTART_CONFIG))?;
    let device = pretext::device::parse(&g.device)?;
    let splits = data::load(data)?;
    eprintln!("data: {}", splits.description);
    eprintln!(
        "pretraining {} for {} epochs (batch {}) ...",
        config.method, config.epochs, config.batch_size
    );
    let summary = pretrain_any(&config, &splits.train, &device, false, g.json)?;
    if !g.json {
        print_summary(&summary);
        eprintln!(
            "evaluating frozen features (kNN and linear probe) against a random-init backbone ..."
        );
    }
    let loaded = LoadedCheckpoint::open(&summary.checkpoint, &device)?;
    let protocols = Protocols {
        knn: true,
        linear: true,
    };
    let report = eval_report(&loaded, &config, &splits, protocols, true, &device)?;
    let wall = started.elapsed().as_secs_f64();
    if g.json {
        println!(
            "{}",
            json!({ "command": "quickstart", "data": splits.description, "pretrain": summary, "results": report, "wall_seconds": wall })
        );
    } else {
        print_scores(&report, &config);
        println!("wall time: {wall:.0}s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
