//! `pretext video ...`: pretraining on videos, and scoring what it learned.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use pretext::core::train::TrainOptions;
use pretext::video::checkpoint::{VideoCheckpoint, read_meta};
use pretext::video::config::VideoConfig;
use pretext::video::data::load_splits;
use pretext::video::data::stream::{StreamedVideos, VideoStore, open_splits};
use pretext::video::eval::{
    TaskScores, VideoReport, all_rows, forecast_scores, models_clip_features, score_task,
};
use pretext::video::methods::VideoMethod;
use pretext::video::pretrain::{check_store, pretrain};
use pretext::with_video_method;
use serde_json::json;

use crate::Global;

#[derive(Subcommand, Debug)]
pub enum VideoCommand {
    /// Pretrain a video encoder without labels (method = "videomae", "video_contrastive",
    /// "frame_order" or "next_frame"; configs/video_*.toml).
    Pretrain {
        /// Moving MNIST IDX videos (`pretext data moving-mnist`) or a folder of video files
        /// (class subfolders, optionally under train/; only train/ is read).
        #[arg(long)]
        data: PathBuf,
        /// Continue from the checkpoint in the config's train.out_dir.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh in a train.out_dir that already holds a checkpoint.
        #[arg(long)]
        overwrite: bool,
    },
    /// Score a checkpoint's frozen clip features by kNN and a linear probe on label columns,
    /// beside the same model at random initialisation, with 1, 10 and 100% of the labels;
    /// next-frame models also as forecasters, beside copying the last frame. Reads the data as
    /// the checkpoint's pretraining did: into memory, or streamed (`data.stream`).
    Eval {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data with a train and a test split (IDX videos, or train/ and test/ folders).
        #[arg(long)]
        data: PathBuf,
        /// Label columns to score (default: every column of the data).
        #[arg(long, value_delimiter = ',')]
        task: Vec<String>,
        /// Fractions of the training labels.
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,1")]
        fractions: Vec<f64>,
    },
}

pub fn run(g: &Global, cmd: VideoCommand) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    match cmd {
        VideoCommand::Pretrain {
            data,
            resume,
            overwrite,
        } => {
            let config = VideoConfig::load(g.config.as_deref(), &g.overrides())?;
            // Under MPI rank 0 speaks for the job.
            let root = pretext::core::distributed::world().is_root();
            let (train, report) = if config.data.stream {
                let set = StreamedVideos::open_train(&data, &config.data)?;
                if root {
                    eprintln!(
                        "{} (train): {} videos listed, decoded from disk as the loader needs \
                         them (unusable ones are met, counted and named there)",
                        data.display(),
                        set.len()
                    );
                }
                (VideoStore::Disk(Arc::new(set)), json!({ "streamed": true }))
            } else {
                let (train, _, report, _) = load_splits(&data, &config.data)?;
                if root {
                    eprintln!("{}", report.summary(&format!("{} (train)", data.display())));
                }
                (
                    VideoStore::Memory(Arc::new(train)),
                    serde_json::to_value(&report)?,
                )
            };
            let options = TrainOptions {
                resume,
                overwrite,
                quiet: false,
            };
            let summary = with_video_method!(config.method.as_str(), M => {
                let (_model, summary) = pretrain::<M>(&config, train.clone(), &device, &options)?;
                summary
            });
            crate::summary::print_pretrain(
                g.json,
                "video pretrain",
                &data,
                (train.len(), "videos"),
                report,
                &summary,
            );
            Ok(())
        }
        VideoCommand::Eval {
            checkpoint,
            data,
            task,
            fractions,
        } => {
            if g.config.is_some() || !g.set.is_empty() {
                bail!(
                    "video eval reads its settings from the checkpoint; it takes no --config or --set"
                );
            }
            let (_, config, _) = read_meta(&checkpoint)?;
            let report = with_video_method!(config.method.as_str(), M => {
                let ckpt = VideoCheckpoint::<M>::open(&checkpoint, &device)?;
                evaluate(&ckpt, &data, &task, &fractions, g.seed, &device)?
            });
            let dir = if checkpoint.is_dir() {
                checkpoint.clone()
            } else {
                checkpoint
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            };
            let out = dir.join("video_eval.json");
            let record = json!({ "command": "video eval", "checkpoint": checkpoint,
                                 "data": data, "result": report });
            pretext::core::checkpoint::write_atomic(
                &out,
                serde_json::to_string_pretty(&record)?.as_bytes(),
            )?;
            if g.json {
                println!("{record}");
            } else {
                print_report(&report);
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
    }
}

fn evaluate<M: VideoMethod>(
    ckpt: &VideoCheckpoint<M>,
    data: &Path,
    tasks: &[String],
    fractions: &[f64],
    seed: Option<u64>,
    device: &burn::prelude::Device,
) -> Result<VideoReport> {
    let config = &ckpt.config;
    let seed = seed.unwrap_or(config.seed);
    let needed = M::clip_frames(config).max(M::feature_frames(config));
    let data_config = config.data.first_frames_only(needed);
    let (train, test, [train_line, test_line]) = open_splits(data, &data_config)?;
    eprintln!("{train_line}");
    let test = test.with_context(|| format!("{}: no test split", data.display()))?;
    eprintln!("{test_line}");
    check_store::<M>(config, &test)?;
    if train.frame() != ckpt.frame {
        let (c, h, w) = train.frame();
        bail!(
            "{}: frames are {c}x{h}x{w}, the checkpoint was trained on {:?}",
            data.display(),
            ckpt.frame
        );
    }
    let names: Vec<String> = if tasks.is_empty() {
        train.tasks().iter().map(|t| t.name.clone()).collect()
    } else {
        tasks.to_vec()
    };
    let frames = M::feature_frames(config);
    device.seed(seed);
    let random = M::init(config, ckpt.frame, device);
    // Both models read each batch: a streamed video is decoded once.
    let models = [&ckpt.model, &random];
    let [train_pretrained, train_random] =
        models_clip_features(models, &train, &all_rows(&train), frames, device)?;
    let [test_pretrained, test_random] =
        models_clip_features(models, &test, &all_rows(&test), frames, device)?;
    let pretrained = (train_pretrained, test_pretrained);
    let baseline = (train_random, test_random);
    let mut out = Vec::new();
    for name in names {
        let score = |what: &str, (a, b): &(_, _)| {
            score_task(
                what,
                a,
                b,
                &train,
                &test,
                &name,
                fractions,
                &config.eval,
                seed,
                device,
            )
        };
        out.push((
            name.clone(),
            score("pretrained", &pretrained)?,
            score("random init", &baseline)?,
        ));
    }
    let forecast = if config.method == "next_frame" {
        let n = &config.next_frame;
        forecast_scores(&ckpt.model, &test, n.input, n.output, device)?
    } else {
        None
    };
    Ok(VideoReport {
        method: config.method.clone(),
        tasks: out,
        forecast,
    })
}

fn print_report(report: &VideoReport) {
    for (task, pretrained, random) in &report.tasks {
        for s in [pretrained, random] {
            match s {
                TaskScores::Single(s) => {
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
                        "{task:<10} {:<12} kNN / linear  {}",
                        s.features,
                        cells.join("   ")
                    );
                }
                TaskScores::Multi(s) => {
                    let cells: Vec<String> = s
                        .by_fraction
                        .iter()
                        .map(|(f, per, exact)| {
                            format!(
                                "{:>5}%: {:5.1} / {:5.1}",
                                100.0 * f,
                                100.0 * per,
                                100.0 * exact
                            )
                        })
                        .collect();
                    println!(
                        "{task:<10} {:<12} per class / exact  {}",
                        s.features,
                        cells.join("   ")
                    );
                }
            }
        }
    }
    if let Some(f) = &report.forecast {
        for s in f {
            println!(
                "forecast {:<16} MSE {:7.2}  MAE {:7.2}  SSIM {:.3}",
                s.forecast, s.mse, s.mae, s.ssim
            );
        }
    }
}
