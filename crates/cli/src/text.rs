//! Text commands: `mlm train|eval|logits`, `electra train|eval|logits`, `simcse train`, `similar-sentences`, `tokenizer
//! train`, `fill-mask`.

use std::path::{Path, PathBuf};

use crate::outputs::{Input, refuse_output_over_inputs};

use anyhow::{Result, bail};
use clap::{Subcommand, ValueEnum};
use pretext::core::train::TrainOptions;
use pretext::text::checkpoint::{MlmCheckpoint, fill_mask};
use pretext::text::config::MlmConfig;
use pretext::text::electra::{
    ElectraCheckpoint, ElectraConfig, ElectraScores, is_electra_run, train_electra,
};
use pretext::text::hf::{export_electra_hf, export_hf};
use pretext::text::mlm::{MlmRun, train_mlm};
use pretext::text::probe::{ProbeSettings, text_probe};
use pretext::text::simcse::{SimcseConfig, run_pooling, similar_sentences, train_simcse};
use pretext::text::tokenizer::{Family, TextTokenizer};
use pretext::text::tsv::read_labelled_tsv;
use serde_json::json;

use crate::Global;

#[derive(Subcommand, Debug)]
pub enum MlmCommand {
    /// Pretrain a BERT or RoBERTa encoder by masked language modelling on a text file (one
    /// paragraph or sentence per line).
    Train {
        /// Text file, one sentence or paragraph per line.
        #[arg(long)]
        corpus: PathBuf,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a run (it is replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Held-out masked-token accuracy, loss and perplexity of a checkpoint.
    Eval {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The training corpus (its held-out lines are scored) or any text file with --all-lines.
        #[arg(long)]
        corpus: PathBuf,
        /// Score every line of the file, not only those training held out.
        #[arg(long)]
        all_lines: bool,
    },
    /// Write the model's logits for a few sentences as JSON (for checking exports).
    Logits {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        sentences: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ElectraCommand {
    /// Pretrain ELECTRA (replaced-token detection) on a text file (one paragraph or sentence
    /// per line): settings in --config (configs/electra.toml) and --set.
    Train {
        /// Text file, one sentence or paragraph per line.
        #[arg(long)]
        corpus: PathBuf,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a run (it is replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Held-out scores of both networks: the generator's masked-token accuracy, the
    /// discriminator's replaced-token detection.
    Eval {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The training corpus (its held-out lines are scored) or any text file with --all-lines.
        #[arg(long)]
        corpus: PathBuf,
        /// Score every line of the file, not only those training held out.
        #[arg(long)]
        all_lines: bool,
    },
    /// Write both networks' logits for a few sentences as JSON (for checking exports).
    Logits {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        sentences: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SimcseCommand {
    /// Train unsupervised SimCSE from a masked-language-model run on a text file (one sentence
    /// per line): settings in --config (configs/simcse.toml) and --set.
    Train {
        /// The run to start from (its folder or checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text file, one sentence per line.
        #[arg(long)]
        corpus: PathBuf,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a run (it is replaced).
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a WordPiece (BERT) or byte-level BPE (RoBERTa) tokenizer; writes tokenizer.json.
    Train {
        /// Text files, one or more.
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "bert")]
        family: FamilyArg,
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Keep case (default: lowercase, and strip accents for BERT).
        #[arg(long)]
        cased: bool,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum FamilyArg {
    Bert,
    Roberta,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Family {
        match f {
            FamilyArg::Bert => Family::Bert,
            FamilyArg::Roberta => Family::Roberta,
        }
    }
}

pub fn mlm_config(g: &Global) -> Result<MlmConfig> {
    MlmConfig::load(g.config.as_deref(), &g.overrides())
}

pub fn run_mlm(g: &Global, cmd: MlmCommand) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    match cmd {
        MlmCommand::Train {
            corpus,
            resume,
            overwrite,
        } => {
            let config = mlm_config(g)?;
            let options = TrainOptions {
                resume,
                overwrite,
                quiet: false,
            };
            let run = train_mlm(&config, &corpus, &device, &options)?;
            if !pretext::core::distributed::world().is_root() {
                // Under MPI rank 0 speaks for the job.
            } else if g.json {
                println!(
                    "{}",
                    json!({ "command": "mlm train", "corpus": corpus, "result": run })
                );
            } else {
                print_run(&run);
            }
        }
        MlmCommand::Eval {
            checkpoint,
            corpus,
            all_lines,
        } => {
            let ckpt = MlmCheckpoint::load(&checkpoint, &device)?;
            let scores = ckpt.evaluate_corpus(&corpus, all_lines, &device)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "mlm eval", "checkpoint": checkpoint, "corpus": corpus, "heldout": scores })
                );
            } else {
                println!(
                    "held-out: masked-token accuracy {:.2}%, loss {:.4}, perplexity {:.2} ({} masked tokens in {} sequences)",
                    100.0 * scores.accuracy,
                    scores.loss,
                    scores.perplexity,
                    scores.masked_tokens,
                    scores.sequences
                );
            }
        }
        MlmCommand::Logits {
            checkpoint,
            out,
            sentences,
        } => {
            crate::refuse_output_over_run_and_data("--out", &out, &checkpoint, None)?;
            let ckpt = MlmCheckpoint::load(&checkpoint, &device)?;
            let logits = ckpt.sentence_logits(&sentences, &device)?;
            pretext::core::checkpoint::write_atomic(&out, &serde_json::to_vec(&logits)?)?;
            eprintln!(
                "wrote logits of {} sentences to {}",
                sentences.len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn print_run(run: &MlmRun) {
    let s = &run.train;
    println!(
        "mlm: {} steps ({:.2} epochs of {} examples), loss {:.4} -> {:.4} (last epoch mean {:.4})",
        s.steps, s.epochs_done, run.examples, s.first_loss, s.final_loss, s.last_epoch_loss
    );
    println!(
        "trained {:.1} min in all{}",
        s.trained_secs / 60.0,
        if run.embedding_init_secs > 0.0 {
            format!(
                ", after {:.1}s of Word2Vec for the token embeddings",
                run.embedding_init_secs
            )
        } else {
            String::new()
        }
    );
    println!(
        "speed: {:.0} tokens/s ({:.1} sequences/s); tokenisation {:.1}s before training \
         ({} token cache {})",
        run.tokens_per_sec,
        run.sequences_per_sec,
        run.tokenize_secs,
        if run.token_cache_reused {
            "reused the"
        } else {
            "built the"
        },
        run.token_cache.display()
    );
    crate::summary::print_time(&s.time);
    if let Some(h) = &run.heldout {
        println!(
            "held-out: masked-token accuracy {:.2}%, loss {:.4}, perplexity {:.2} ({} masked tokens in {} sequences)",
            100.0 * h.accuracy,
            h.loss,
            h.perplexity,
            h.masked_tokens,
            h.sequences
        );
    }
    println!("checkpoint: {}", s.checkpoint.display());
}

pub fn run_electra(g: &Global, cmd: ElectraCommand) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    match cmd {
        ElectraCommand::Train {
            corpus,
            resume,
            overwrite,
        } => {
            let config: ElectraConfig = pretext::core::config::load_validated(
                g.config.as_deref(),
                &g.overrides(),
                |c: &ElectraConfig| c.validate(),
            )?;
            let options = TrainOptions {
                resume,
                overwrite,
                quiet: false,
            };
            let run = train_electra(&config, &corpus, &device, &options)?;
            if !pretext::core::distributed::world().is_root() {
                // Under MPI rank 0 speaks for the job.
            } else if g.json {
                println!(
                    "{}",
                    json!({ "command": "electra train", "corpus": corpus, "result": run })
                );
            } else {
                let s = &run.train;
                println!(
                    "electra: {} steps ({:.2} epochs of {} examples), loss {:.4} -> {:.4} (last \
                     epoch mean {:.4}); generator {} x {} wide",
                    s.steps,
                    s.epochs_done,
                    run.examples,
                    s.first_loss,
                    s.final_loss,
                    s.last_epoch_loss,
                    run.generator.layers,
                    run.generator.hidden
                );
                println!(
                    "trained {:.1} min; {:.0} tokens/s ({:.1} sequences/s); tokenisation {:.1}s",
                    s.trained_secs / 60.0,
                    run.tokens_per_sec,
                    run.sequences_per_sec,
                    run.tokenize_secs
                );
                crate::summary::print_time(&s.time);
                if let Some(h) = &run.heldout {
                    print_electra_scores(h);
                }
                println!("checkpoint: {}", s.checkpoint.display());
            }
        }
        ElectraCommand::Eval {
            checkpoint,
            corpus,
            all_lines,
        } => {
            let ckpt = ElectraCheckpoint::load(&checkpoint, &device)?;
            let scores = ckpt.evaluate_corpus(&corpus, all_lines, &device)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "electra eval", "checkpoint": checkpoint, "corpus": corpus, "heldout": scores })
                );
            } else {
                print_electra_scores(&scores);
            }
        }
        ElectraCommand::Logits {
            checkpoint,
            out,
            sentences,
        } => {
            crate::refuse_output_over_run_and_data("--out", &out, &checkpoint, None)?;
            let ckpt = ElectraCheckpoint::load(&checkpoint, &device)?;
            let logits = ckpt.sentence_logits(&sentences, &device)?;
            pretext::core::checkpoint::write_atomic(&out, &serde_json::to_vec(&logits)?)?;
            eprintln!(
                "wrote logits of {} sentences to {}",
                sentences.len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn print_electra_scores(h: &ElectraScores) {
    println!(
        "held-out: generator masked-token accuracy {:.2}% (loss {:.4}, {} masked tokens); \
         discriminator accuracy {:.2}% (loss {:.4}) on {} tokens, {:.1}% of them replaced, \
         {:.1}% of those caught ({} sequences)",
        100.0 * h.generator_accuracy,
        h.generator_loss,
        h.masked_tokens,
        100.0 * h.discriminator_accuracy,
        h.discriminator_loss,
        h.tokens,
        100.0 * h.replaced_share,
        100.0 * h.replaced_recall,
        h.sequences
    );
}

pub fn run_simcse(g: &Global, cmd: SimcseCommand) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let SimcseCommand::Train {
        checkpoint,
        corpus,
        resume,
        overwrite,
    } = cmd;
    let config: SimcseConfig = pretext::core::config::load_validated(
        g.config.as_deref(),
        &g.overrides(),
        |c: &SimcseConfig| c.validate(),
    )?;
    let options = TrainOptions {
        resume,
        overwrite,
        quiet: false,
    };
    let run = train_simcse(&config, &checkpoint, &corpus, &device, &options)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "simcse train", "corpus": corpus, "result": run })
        );
    } else {
        let s = &run.train;
        println!(
            "simcse: {} steps ({:.2} epochs of {} sentences) from {}, loss {:.4} -> {:.4} (last \
             epoch mean {:.4})",
            s.steps,
            s.epochs_done,
            run.examples,
            run.source.display(),
            s.first_loss,
            s.final_loss,
            s.last_epoch_loss
        );
        println!(
            "trained {:.1} min, {:.1} sentences/s",
            s.trained_secs / 60.0,
            run.sequences_per_sec
        );
        crate::summary::print_time(&s.time);
        println!("checkpoint: {}", s.checkpoint.display());
    }
    Ok(())
}

pub fn run_similar_sentences(
    g: &Global,
    checkpoint: &Path,
    corpus: &Path,
    max_lines: usize,
    n: usize,
    queries: &[String],
) -> Result<()> {
    if n == 0 {
        bail!("-n must be at least 1");
    }
    let device = pretext::core::device::parse(&g.device)?;
    let ckpt = MlmCheckpoint::load(checkpoint, &device)?;
    let text = pretext::text::text_file::read_text(corpus)?;
    let limit = if max_lines == 0 {
        usize::MAX
    } else {
        max_lines
    };
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(limit)
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect();
    if lines.is_empty() {
        bail!("{}: no non-empty line to search", corpus.display());
    }
    let found = similar_sentences(&ckpt, &lines, queries, n, &device)?;
    if g.json {
        let results: Vec<_> = queries
            .iter()
            .zip(&found)
            .map(|(q, f)| json!({ "query": q, "nearest": f }))
            .collect();
        println!(
            "{}",
            json!({ "command": "similar-sentences", "checkpoint": checkpoint, "corpus": corpus,
                    "searched": lines.len(), "pooling": run_pooling(&ckpt), "results": results })
        );
    } else {
        for (q, f) in queries.iter().zip(&found) {
            println!("{q}");
            for s in f {
                println!("  {:.4}  line {:>7}: {}", s.cosine, s.line, s.text);
            }
        }
    }
    Ok(())
}

pub fn run_tokenizer(g: &Global, cmd: TokenizerCommand) -> Result<()> {
    match cmd {
        TokenizerCommand::Train {
            corpus,
            family,
            vocab_size,
            cased,
            out,
        } => {
            let out = if out.is_dir() {
                out.join("tokenizer.json")
            } else {
                out
            };
            let inputs: Vec<Input> = corpus.iter().map(|c| Input::Path("--corpus", c)).collect();
            refuse_output_over_inputs("--out", &out, &inputs)?;
            let tokenizer = TextTokenizer::train(family.into(), &corpus, vocab_size, !cased)?;
            tokenizer.save(&out)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "tokenizer train", "out": out, "vocab_size": tokenizer.vocab_size(), "family": tokenizer.family().name() })
                );
            } else {
                println!(
                    "wrote a {} tokenizer of {} ids to {}",
                    tokenizer.family().name(),
                    tokenizer.vocab_size(),
                    out.display()
                );
            }
        }
    }
    Ok(())
}

pub fn run_fill_mask(g: &Global, checkpoint: PathBuf, text: String, top_k: usize) -> Result<()> {
    if top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let device = pretext::core::device::parse(&g.device)?;
    let ckpt = MlmCheckpoint::load(&checkpoint, &device)?;
    let predictions = fill_mask(&ckpt, &text, top_k, &device)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "fill-mask", "text": text, "predictions": predictions })
        );
    } else {
        for (i, candidates) in predictions.iter().enumerate() {
            if predictions.len() > 1 {
                println!("mask {}:", i + 1);
            }
            for p in candidates {
                println!("  {:<16} {:.4}", p.token, p.probability);
            }
        }
    }
    Ok(())
}

pub fn run_export(g: &Global, checkpoint: &Path, out: &Path) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    if is_electra_run(checkpoint) {
        let ckpt = ElectraCheckpoint::load(checkpoint, &device)?;
        let written = export_electra_hf(&ckpt, out)?;
        if g.json {
            println!("{}", json!({ "command": "export", "summary": written }));
        } else {
            for s in &written {
                println!(
                    "wrote {} ({} tensors, {} parameters) to {}: {}",
                    s.architecture,
                    s.tensors,
                    s.parameters,
                    s.dir.display(),
                    s.files.join(", ")
                );
            }
        }
        return Ok(());
    }
    let ckpt = MlmCheckpoint::load(checkpoint, &device)?;
    let summary = export_hf(&ckpt, out)?;
    if g.json {
        println!("{}", json!({ "command": "export", "summary": summary }));
    } else {
        println!(
            "wrote {} ({} tensors, {} parameters) to {}: {}",
            summary.architecture,
            summary.tensors,
            summary.parameters,
            summary.dir.display(),
            summary.files.join(", ")
        );
    }
    Ok(())
}

pub fn run_text_probe(
    g: &Global,
    checkpoint: &Path,
    data: &Path,
    label_column: Option<usize>,
    text_column: Option<usize>,
) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let settings: ProbeSettings = pretext::core::config::load_config(g.config.as_deref(), &g.set)?;
    let ckpt = MlmCheckpoint::load(checkpoint, &device)?;
    let texts = read_labelled_tsv(data, label_column, text_column)?;
    for w in &texts.warnings {
        eprintln!("warning: {w}");
    }
    let seed = g.seed.unwrap_or(ckpt.config.seed);
    let report = text_probe(&ckpt, &texts, &settings, seed, &device)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "eval text-probe", "checkpoint": checkpoint, "data": data, "results": report })
        );
    } else {
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        println!(
            "{}: {} train / {} test texts, {} classes",
            data.display(),
            report.train,
            report.test,
            report.classes
        );
        println!("{:<26} {:>10} {:>10}", "features", "mean", "[CLS]");
        println!(
            "{:<26} {:>10} {:>10}",
            format!("pretrained (step {})", ckpt.step),
            pct(report.pretrained.mean),
            pct(report.pretrained.cls)
        );
        println!(
            "{:<26} {:>10} {:>10}",
            "random init",
            pct(report.random.mean),
            pct(report.random.cls)
        );
        println!(
            "{:<26} {:>10}",
            format!("bag of words ({})", report.bow_features),
            pct(report.bag_of_words)
        );
        println!("{:<26} {:>10}", "majority class", pct(report.majority));
        println!("({:.0}s)", report.seconds);
    }
    Ok(())
}
