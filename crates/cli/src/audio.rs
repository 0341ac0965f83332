//! `pretext audio ...`: pretraining on folders of clips, and scoring what it learned.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Subcommand;
use pretext::audio::checkpoint::AudioCheckpoint;
use pretext::audio::config::AudioConfig;
use pretext::audio::data::load_splits;
use pretext::audio::data::stream::{ClipStore, StreamedClips, read_splits};
use pretext::audio::eval::{
    FeatureScores, align_labels, score_features, split_features, standardise,
};
use pretext::audio::methods::AudioMethod;
use pretext::audio::pretrain::pretrain;
use pretext::core::eval::Features;
use pretext::core::train::TrainOptions;
use pretext::with_audio_method;
use serde_json::json;

use crate::Global;

#[derive(Subcommand, Debug)]
pub enum AudioCommand {
    /// Pretrain an audio encoder without labels (method = "byol_a", "cola" or "audio_mae";
    /// configs/audio_*.toml).
    Pretrain {
        /// Folder of clips: class subfolders, optionally under train/ (only train/ is read).
        #[arg(long)]
        data: PathBuf,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a checkpoint.
        #[arg(long)]
        overwrite: bool,
    },
    /// Score a checkpoint's frozen features by kNN and a linear probe on one label column,
    /// beside the same encoder at random initialisation and logistic regression on the mean
    /// and standard deviation of the log-mel bands, with 1, 10 and 100% of the labels.
    Eval {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Folder with train/ and test/ splits.
        #[arg(long)]
        data: PathBuf,
        /// Score on this folder instead of DATA/test (e.g. DATA/recorded: real recordings).
        #[arg(long)]
        test: Option<PathBuf>,
        /// The label column: `class` (the subfolders) or a column of labels.tsv (pitch...).
        #[arg(long, default_value = "class")]
        task: String,
        /// Fractions of the training labels.
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,1")]
        fractions: Vec<f64>,
    },
}

pub fn run(g: &Global, cmd: AudioCommand) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    match cmd {
        AudioCommand::Pretrain {
            data,
            resume,
            overwrite,
        } => {
            let config = AudioConfig::load(g.config.as_deref(), &g.overrides())?;
            // Under MPI rank 0 speaks for the job.
            let root = pretext::core::distributed::world().is_root();
            let (train, report) = if config.data.stream {
                let set = StreamedClips::open_train(&data, &config.data)?;
                if root {
                    eprintln!(
                        "{} (train): {} clips listed, streamed from disk (unusable ones are met, \
                     counted and named as the loader reads them)",
                        data.display(),
                        set.len()
                    );
                }
                (ClipStore::Disk(Arc::new(set)), json!({ "streamed": true }))
            } else {
                let (train, _, report, _) = load_splits(&data, &config.data)?;
                if root {
                    eprintln!("{}", report.summary(&format!("{} (train)", data.display())));
                }
                (
                    ClipStore::Memory(Arc::new(train)),
                    serde_json::to_value(&report)?,
                )
            };
            let options = TrainOptions {
                resume,
                overwrite,
                quiet: false,
            };
            let summary = with_audio_method!(config.method.as_str(), M => {
                let (_model, summary) = pretrain::<M>(&config, train.clone(), &device, &options)?;
                summary
            });
            crate::summary::print_pretrain(
                g.json,
                "audio pretrain",
                &data,
                (train.len(), "clips"),
                report,
                &summary,
            );
            Ok(())
        }
        AudioCommand::Eval {
            checkpoint,
            data,
            test,
            task,
            fractions,
        } => {
            if g.config.is_some() || !g.set.is_empty() {
                bail!(
                    "audio eval reads its settings from the checkpoint; it takes no --config or --set"
                );
            }
            let ckpt = AudioCheckpoint::open(&checkpoint, &device)?;
            let seed = g.seed.unwrap_or(ckpt.config.seed);
            let scores = evaluate(
                &ckpt,
                &data,
                test.as_deref(),
                &task,
                &fractions,
                seed,
                &device,
            )?;
            let out = ckpt.dir.join(format!("audio_eval_{task}.json"));
            let record = json!({ "command": "audio eval", "checkpoint": checkpoint, "data": data,
                                 "test": test, "task": task, "scores": scores });
            pretext::core::checkpoint::write_atomic(
                &out,
                serde_json::to_string_pretty(&record)?.as_bytes(),
            )?;
            if g.json {
                println!("{record}");
            } else {
                print_scores(&task, &scores);
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
    }
}

/// Read the train and test clips as the checkpoint's config reads them; score the checkpoint,
/// its encoder at random initialisation and the log-mel statistics on `task`.
fn evaluate(
    ckpt: &AudioCheckpoint,
    data: &Path,
    test_dir: Option<&Path>,
    task: &str,
    fractions: &[f64],
    seed: u64,
    device: &burn::prelude::Device,
) -> Result<Vec<FeatureScores>> {
    let config = &ckpt.config;
    let mut data_config = config.data.clone();
    (data_config.train_limit, data_config.test_limit) = (0, 0);
    let (train, test) = read_splits(data, test_dir, &data_config)?;
    let train_column = train.task(task)?;
    let (rows, _) = align_labels(train_column, test.task(task)?);
    if rows.is_empty() {
        bail!("no test clip has a '{task}' class that the training split has");
    }
    device.seed(seed);
    let random = with_audio_method!(config.method.as_str(), M => {
        M::init(config, config.data.mel.n_mels, config.data.crop_frames, device).encoder()
    });
    let encoders = [&ckpt.encoder, &random];
    let all: Vec<usize> = (0..train.len()).collect();
    let on_error = data_config.on_error;
    let a = split_features(&encoders, &train, &all, ckpt.norm(), on_error, device)?;
    let b = split_features(&encoders, &test, &rows, ckpt.norm(), on_error, device)?;
    for (split, f) in [("train", &a), ("test", &b)] {
        if !f.skipped.is_empty() {
            eprintln!(
                "{split}: skipped {} unusable clip(s), e.g. {}",
                f.skipped.len(),
                f.skipped[0]
            );
        }
    }
    // Labels of the clips read, the test split's renumbered by the training split's classes.
    let train_labels: Vec<u32> = a.kept.iter().map(|&i| train_column.labels[i]).collect();
    let (_, test_labels) = align_labels(train_column, &test.task(task)?.select(&b.kept));
    let classes = &train_column.classes;
    let score = |name: &str, (x, y): (Features, Features)| {
        score_features(
            name,
            &x,
            &y,
            &train_labels,
            &test_labels,
            classes,
            fractions,
            &config.eval,
            seed,
            device,
        )
    };
    // Standardised with the training clips' statistics, as BYOL-A evaluates embeddings.
    let mut out = Vec::new();
    for (name, (x, y)) in ["pretrained", "random init"]
        .into_iter()
        .zip(a.encoders.iter().zip(&b.encoders))
    {
        out.push(score(name, standardise(x, y))?);
    }
    out.push(score(
        "log-mel mean+std",
        standardise(&a.logmel, &b.logmel),
    )?);
    Ok(out)
}

fn print_scores(task: &str, scores: &[FeatureScores]) {
    println!("task '{task}': kNN / linear accuracy (%) by fraction of training labels");
    for s in scores {
        let cells: Vec<String> = s
            .by_fraction
            .iter()
            .map(|(f, knn, lin)| {
                format!(
                    "{:>5}%: {:5.1} / {:5.1}",
                    100.0 * f,
                    100.0 * knn,
                    100.0 * lin
                )
            })
            .collect();
        println!(
            "  {:<18} ({:>4}-d)  {}",
            s.features,
            s.dim,
            cells.join("   ")
        );
    }
}
