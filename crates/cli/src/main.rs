//! `pretext`: the command-line front end. This file only parses and dispatches: each command
//! family lives in its own module ([`vision`], [`text`]; Word2Vec's commands come with its
//! crate). Every job shares the global options below; commands that report numbers print one
//! JSON object on stdout with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pretext::core::eval::Protocols;

use crate::outputs::{Input, refuse_output_over_inputs};

mod alloc;
mod audio;
mod bench;
mod data;
mod labels;
mod outputs;
mod report;
mod summary;
mod text;
mod video;
mod vision;

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
    /// Pretrain a backbone without labels (SimCLR, BYOL, MAE, SimMIM, autoencoders, rotation,
    /// jigsaw).
    Pretrain {
        /// Dataset folder (IDX/MNIST layout, CIFAR batches or image folder); default: embedded Fashion-MNIST subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a run (it is replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Score a checkpoint's frozen features (and a random-init backbone beside them): kNN and
    /// linear probes for image backbones; text-probe for MLM encoders (with --data FILE.tsv,
    /// settings by --set, e.g. --set max_windows=2). `labels`: the label-efficiency study
    /// (kNN, linear, fine-tuning and supervised from scratch at each labelled fraction).
    Eval {
        protocol: Protocol,
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// labels: word vectors (word2vec text or binary) to study instead of a checkpoint,
        /// on a labelled TSV (--data), against bag-of-words.
        #[arg(long)]
        vectors: Option<PathBuf>,
        /// Image dataset folder, or for text-probe a TSV file of labelled texts.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Skip the random-init baseline.
        #[arg(long)]
        no_baseline: bool,
        /// text-probe and labels on a text checkpoint: column of the label (from 0; default 1).
        #[arg(long)]
        label_column: Option<usize>,
        /// text-probe and labels on a text checkpoint: column of the text (from 0; default the last).
        #[arg(long)]
        text_column: Option<usize>,
        /// labels on an audio or video checkpoint: the label column (`class`, the subfolders,
        /// or a column of labels.tsv such as `pitch`; video: `direction` by default).
        #[arg(long)]
        task: Option<String>,
        /// labels: fractions of the training labels, e.g. 0.01,0.1,1 (eval.labels.fractions).
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        fractions: Option<Vec<f64>>,
        /// labels: repetitions with their own subsets and initialisations (eval.labels.seeds).
        #[arg(long)]
        seeds: Option<usize>,
        /// labels: which arms to run, e.g. finetune,scratch,fixmatch (eval.labels.arms; default
        /// every arm: knn, linear, finetune, scratch, distill, fixmatch, fixmatch_scratch for
        /// images).
        #[arg(long, value_delimiter = ',')]
        arms: Option<Vec<String>>,
        /// labels: take the from-scratch runs from another image run's study of the
        /// same architecture, data and settings instead of training them again.
        #[arg(long)]
        baseline_from: Option<PathBuf>,
    },
    /// Write a checkpoint for another framework: an MLM run in Hugging Face's format
    /// (config.json, model.safetensors, tokenizer.json, for transformers' from_pretrained), a
    /// ResNet backbone as a torchvision state dict or a ViT as a timm one (safetensors; the
    /// model to build is in its metadata).
    Export {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum, default_value = "hf")]
        format: ExportFormat,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a checkpoint's features of a split to a .npy file.
    Embed {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image dataset folder (IDX, CIFAR batches or an image folder); default: the embedded subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        split: Split,
    },
    /// Draw what a reconstructing checkpoint (MAE, SimMIM, autoencoders) makes of images: one
    /// PNG with bands of three rows, originals, masked or corrupted inputs, reconstructions.
    Reconstruct {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image dataset (its test split when it has one); default: the embedded subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
        /// Images to show, spread evenly over the split.
        #[arg(short = 'n', long = "images", default_value_t = 16)]
        images: usize,
    },
    /// Pretrain SimCLR on the embedded data for a few minutes, then evaluate against random init.
    Quickstart {
        /// Image dataset folder (IDX, CIFAR batches or an image folder); default: the embedded subset.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Masked language modelling (BERT, RoBERTa): train, evaluate, dump logits.
    #[command(subcommand)]
    Mlm(text::MlmCommand),
    /// Sound: pretrain on folders of clips (BYOL-A, COLA, masked spectrograms) and score it.
    #[command(subcommand)]
    Audio(audio::AudioCommand),
    /// Video: pretrain on clips (VideoMAE, temporal contrast, frame order, next-frame
    /// prediction) and score it.
    #[command(subcommand)]
    Video(video::VideoCommand),
    /// ELECTRA: pretrain a text encoder by replaced-token detection; evaluate, dump logits.
    #[command(subcommand)]
    Electra(text::ElectraCommand),
    /// SimCSE: train a masked-language-model run further into a sentence encoder.
    #[command(subcommand)]
    Simcse(text::SimcseCommand),
    /// The lines of a text file nearest in meaning to a query (by a run's sentence embeddings).
    SimilarSentences {
        /// The run folder (or its checkpoint.safetensors): a SimCSE or masked-language-model run.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text file to search, one sentence per line.
        #[arg(long)]
        corpus: PathBuf,
        /// Search the first N non-empty lines (0: all; embedding is the slow part).
        #[arg(long, default_value_t = 20_000)]
        max_lines: usize,
        /// How many lines to print per query.
        #[arg(short = 'n', long, default_value_t = 5)]
        n: usize,
        /// One or more queries.
        #[arg(required = true)]
        queries: Vec<String>,
    },
    /// Train a tokenizer (WordPiece or byte-level BPE).
    #[command(subcommand)]
    Tokenizer(text::TokenizerCommand),
    /// The most likely tokens at each [MASK] (BERT) or <mask> (RoBERTa) of a text.
    FillMask {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text with one or more mask tokens.
        text: String,
        /// How many candidates to print per mask.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Write one self-contained HTML page about a run: training curves, time, label
    /// efficiency, a 2-D map of test embeddings, nearest neighbours, confusion matrix, config.
    Report {
        /// The run folder (or its checkpoint.safetensors).
        run: PathBuf,
        /// The dataset to show (image runs); default: the embedded subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the page (default RUN/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmarks (`pretext bench ops`: op-by-op speed against the machine's peak).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Build data sets from what the machine has (`pretext data letters`).
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Word2Vec: skip-gram and CBOW word embeddings.
    #[command(subcommand)]
    Word2vec(pretext_word2vec::cli::Word2VecCommand),
    /// fastText: word embeddings from character n-grams, with vectors for unseen words.
    #[command(subcommand)]
    Fasttext(pretext_word2vec::cli::FastTextCommand),
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Protocol {
    Knn,
    Linear,
    All,
    TextProbe,
    Labels,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ExportFormat {
    /// Hugging Face transformers (masked-language-model runs).
    Hf,
    /// torchvision's resnet18() / resnet50() (image runs with a ResNet backbone).
    Torchvision,
    /// timm's VisionTransformer (image runs with a ViT backbone).
    Timm,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Split {
    Train,
    Test,
}

impl Global {
    /// The `--set` overrides, with `--seed` as one more.
    pub fn overrides(&self) -> Vec<String> {
        let mut sets = self.set.clone();
        if let Some(seed) = self.seed {
            sets.push(format!("seed={seed}"));
        }
        sets
    }
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    // Joins the MPI job when started by mpirun (with the `mpi` feature). Held until the end:
    // dropping it finalises MPI, which must not happen while other ranks wait on this one.
    let _session = match pretext::core::distributed::init() {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = only_data_parallel_jobs(&cli.command).and_then(|()| run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let world = pretext::core::distributed::world();
            if world.is_distributed() {
                eprintln!("error on rank {} of {}: {e:#}", world.rank, world.size);
                // The other ranks may wait in a collective this one will never join.
                pretext::core::distributed::abort_job(1);
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Under MPI, refuse the jobs that do not train data-parallel yet rather than run N copies.
fn only_data_parallel_jobs(command: &Command) -> Result<()> {
    let world = pretext::core::distributed::world();
    let data_parallel = matches!(
        command,
        Command::Mlm(text::MlmCommand::Train { .. })
            | Command::Pretrain { .. }
            | Command::Audio(audio::AudioCommand::Pretrain { .. })
            | Command::Video(video::VideoCommand::Pretrain { .. })
    );
    if world.is_distributed() && !data_parallel {
        bail!(
            "this job runs in one process; under mpirun (here {} ranks) only `pretext pretrain`, \
             `pretext mlm train`, `pretext audio pretrain` and `pretext video pretrain` train \
             data-parallel",
            world.size
        );
    }
    Ok(())
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
        Command::Pretrain {
            data,
            resume,
            overwrite,
        } => vision::pretrain(&g, data.as_deref(), resume, overwrite),
        Command::Eval {
            protocol,
            checkpoint,
            vectors,
            data,
            no_baseline,
            label_column,
            text_column,
            task,
            fractions,
            seeds,
            arms,
            baseline_from,
        } => {
            let given = |flag: &'static str, set: bool| set.then_some(flag);
            let text_flags = [
                given("--label-column", label_column.is_some()),
                given("--text-column", text_column.is_some()),
            ];
            let label_flags = [
                given("--fractions", fractions.is_some()),
                given("--seeds", seeds.is_some()),
                given("--arms", arms.is_some()),
                given("--vectors", vectors.is_some()),
                given("--baseline-from", baseline_from.is_some()),
                given("--task", task.is_some()),
            ];
            let baseline_flag = [given("--no-baseline", no_baseline)];
            let required = || checkpoint.clone().context("--checkpoint is required");
            let (knn, linear) = match protocol {
                Protocol::Labels => {
                    refuse_flags("labels", &[&baseline_flag])?;
                    let flags = labels::LabelFlags {
                        checkpoint: checkpoint.as_deref(),
                        vectors: vectors.as_deref(),
                        data: data.as_deref(),
                        label_column,
                        text_column,
                        fractions,
                        seeds,
                        arms,
                        baseline_from: baseline_from.as_deref(),
                        task: task.as_deref(),
                    };
                    return labels::run(&g, flags);
                }
                Protocol::TextProbe => {
                    refuse_flags("text-probe", &[&label_flags, &baseline_flag])?;
                    let data = data.context("text-probe needs --data FILE.tsv")?;
                    return text::run_text_probe(
                        &g,
                        &required()?,
                        &data,
                        label_column,
                        text_column,
                    );
                }
                Protocol::Knn => (true, false),
                Protocol::Linear => (false, true),
                Protocol::All => (true, true),
            };
            refuse_flags("knn, linear and all", &[&text_flags, &label_flags])?;
            let protocols = Protocols { knn, linear };
            vision::eval(&g, protocols, &required()?, data.as_deref(), !no_baseline)
        }
        Command::Embed {
            checkpoint,
            data,
            out,
            split,
        } => {
            refuse_output_over_run_and_data("--out", &out, &checkpoint, data.as_deref())?;
            vision::embed(
                &g,
                &checkpoint,
                data.as_deref(),
                &out,
                matches!(split, Split::Test),
            )
        }
        Command::Quickstart { data } => vision::quickstart(&g, data.as_deref()),
        Command::Reconstruct {
            checkpoint,
            data,
            out,
            images,
        } => {
            refuse_output_over_run_and_data("--out", &out, &checkpoint, data.as_deref())?;
            vision::reconstruct(&g, &checkpoint, data.as_deref(), &out, images)
        }
        Command::Mlm(cmd) => text::run_mlm(&g, cmd),
        Command::Audio(cmd) => audio::run(&g, cmd),
        Command::Video(cmd) => video::run(&g, cmd),
        Command::Export {
            checkpoint,
            format,
            out,
        } => {
            refuse_output_over_run_and_data("--out", &out, &checkpoint, None)?;
            match format {
                ExportFormat::Hf => text::run_export(&g, &checkpoint, &out),
                ExportFormat::Torchvision => {
                    vision::export_for_pytorch(&g, &checkpoint, &out, "torchvision")
                }
                ExportFormat::Timm => vision::export_for_pytorch(&g, &checkpoint, &out, "timm"),
            }
        }
        Command::Electra(cmd) => text::run_electra(&g, cmd),
        Command::Simcse(cmd) => text::run_simcse(&g, cmd),
        Command::SimilarSentences {
            checkpoint,
            corpus,
            max_lines,
            n,
            queries,
        } => text::run_similar_sentences(&g, &checkpoint, &corpus, max_lines, n, &queries),
        Command::Tokenizer(cmd) => text::run_tokenizer(&g, cmd),
        Command::FillMask {
            checkpoint,
            text,
            top_k,
        } => text::run_fill_mask(&g, checkpoint, text, top_k),
        Command::Report { run, data, out } => {
            if let Some(out) = &out {
                if out.is_dir() {
                    bail!(
                        "--out {}: a folder; give the page's file name (e.g. {}/report.html)",
                        out.display(),
                        out.display()
                    );
                }
                refuse_output_over_run_and_data("--out", out, &run, data.as_deref())?;
            }
            report::run(&g, &run, data.as_deref(), out.as_deref())
        }
        Command::Data(cmd) => data::run(&g, cmd),
        Command::Bench(cmd) => bench::run(&g, cmd),
        Command::Word2vec(cmd) => {
            refuse_global_flags("word2vec", &g)?;
            if let pretext_word2vec::cli::Word2VecCommand::Train(args) = &cmd {
                let corpus = Input::Path("--corpus", &args.corpus);
                refuse_output_over_inputs("--out", &args.out, &[corpus])?;
            }
            pretext_word2vec::cli::run(cmd, g.json)
        }
        Command::Fasttext(cmd) => {
            refuse_global_flags("fasttext", &g)?;
            if let pretext_word2vec::cli::FastTextCommand::Train(args) = &cmd {
                let corpus = Input::Path("--corpus", &args.corpus);
                refuse_output_over_inputs("--out", &args.out, &[corpus])?;
                refuse_output_over_inputs("--vec", &args.vec_path(), &[corpus])?;
                if let Some(bin) = &args.bin {
                    refuse_output_over_inputs("--bin", bin, &[corpus])?;
                }
                if args.vec_path() == args.out {
                    bail!("--vec and --out name the same file; give them different paths");
                }
            }
            pretext_word2vec::cli::run_fasttext(cmd, g.json)
        }
    }
}

/// Word2Vec's and fastText's settings are their own flags; nothing may be silently ignored.
fn refuse_global_flags(job: &str, g: &Global) -> Result<()> {
    let unused = [
        g.config.as_ref().map(|_| "--config"),
        (!g.set.is_empty()).then_some("--set"),
        (g.device != "flex").then_some("--device"),
    ];
    let unused: Vec<&str> = unused.into_iter().flatten().collect();
    if !unused.is_empty() {
        bail!(
            "{job} takes its settings as flags (see `pretext {job} train --help`) and runs on \
             the CPU; it does not use {}",
            unused.join(", ")
        );
    }
    Ok(())
}

/// The output rule for a command that reads a run (`--checkpoint`) and maybe `--data`.
fn refuse_output_over_run_and_data(
    flag: &str,
    out: &std::path::Path,
    run: &std::path::Path,
    data: Option<&std::path::Path>,
) -> Result<()> {
    let mut inputs = vec![Input::Run(run), Input::Path("--checkpoint", run)];
    if let Some(data) = data {
        inputs.push(Input::Data("--data", data));
    }
    refuse_output_over_inputs(flag, out, &inputs)
}

/// No flag is silently ignored: name the ones `protocol` does not take.
fn refuse_flags(protocol: &str, groups: &[&[Option<&str>]]) -> Result<()> {
    let given: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().flatten())
        .copied()
        .collect();
    if !given.is_empty() {
        bail!("eval {protocol} does not take {}", given.join(", "));
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

    #[test]
    fn a_negative_fraction_reaches_the_range_check() {
        // Read as a value (then refused as outside (0, 1]), not as an unknown flag "-1".
        let cli =
            Cli::try_parse_from(["pretext", "eval", "labels", "--fractions", "-1,0.5"]).unwrap();
        match cli.command {
            Command::Eval { fractions, .. } => assert_eq!(fractions, Some(vec![-1.0, 0.5])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_a_protocol_does_not_take_are_named() {
        let err = refuse_flags("knn", &[&[Some("--fractions"), None], &[Some("--seeds")]])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "eval knn does not take --fractions, --seeds");
        assert!(refuse_flags("knn", &[&[None, None]]).is_ok());
    }
}
