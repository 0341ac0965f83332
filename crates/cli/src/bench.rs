//! `pretext bench ops`: op-by-op timings against the machine's peak (core::bench);
//! `pretext bench loader`: the image loader alone; `pretext bench peak`: the machine's measured
//! f32 FMA throughput, the ceiling any implementation of a model's arithmetic runs under.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Subcommand;
use pretext::core::bench::{OpTiming, machine_peak, run_ops};
use pretext::core::loader::Schedule;
use pretext::vision::batches::view_loader;
use pretext::vision::data;
use pretext::vision::methods::view_configs;
use pretext::with_method;
use serde_json::json;

use crate::Global;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Each op of the small CNN, ResNet-18 (CIFAR stem) and BERT-mini training steps, forward
    /// and forward + backward, burn's convolution beside pretext's, in GFLOP/s and as a share
    /// of the machine's peak.
    Ops {
        /// Timed calls per op (the median is reported).
        #[arg(long, default_value_t = 10)]
        repeats: usize,
    },
    /// The machine's f32 peak, measured: every thread loops over independent vector FMAs at
    /// once (about a second). Every FLOP of a training step runs below it, so a step's FLOPs
    /// divided by this rate bound how fast any implementation can take the step.
    Peak,
    /// The image loader alone: decoding and the augmented views of the config's method
    /// (SimCLR's two by default) at data.image_size, on data.workers threads, no model; in
    /// images per second, after one warm-up batch.
    Loader {
        /// The images (default: the embedded Fashion-MNIST subset); an image folder is
        /// streamed from disk as pretraining streams it.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Batches of batch_size images to time.
        #[arg(long, default_value_t = 20)]
        batches: usize,
    },
}

pub fn run(g: &Global, cmd: BenchCommand) -> Result<()> {
    let repeats = match cmd {
        BenchCommand::Ops { repeats } => repeats,
        BenchCommand::Loader { data, batches } => return loader(g, data, batches),
        BenchCommand::Peak => return peak(g),
    };
    if g.config.is_some() || !g.set.is_empty() || g.seed.is_some() {
        bail!("pretext bench ops takes no --config, --set or --seed: its shapes are fixed");
    }
    if repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let device = pretext::core::device::parse(&g.device)?;
    let peak = machine_peak();
    let percent = |gflops: f64| 100.0 * gflops / peak.gflops;
    if !g.json {
        eprintln!("peak: {:.0} GFLOP/s = {}", peak.gflops, peak.how);
        eprintln!(
            "{:<15} {:<20} {:<8} {:<22} {:>9} {:>8} {:>6} {:>9} {:>8} {:>6}",
            "model",
            "op",
            "impl",
            "shape",
            "fwd ms",
            "GFLOP/s",
            "peak",
            "f+b ms",
            "GFLOP/s",
            "peak"
        );
    }
    let show = |t: &OpTiming| {
        if g.json {
            return;
        }
        let rate = |flops: f64, gflops: f64| {
            if flops > 0.0 {
                (format!("{gflops:.1}"), format!("{:.0}%", percent(gflops)))
            } else {
                ("-".into(), "-".into())
            }
        };
        let (f, fp) = rate(t.forward_flops, t.forward_gflops());
        let (b, bp) = rate(t.forward_backward_flops, t.forward_backward_gflops());
        eprintln!(
            "{:<15} {:<20} {:<8} {:<22} {:>9.2} {:>8} {:>6} {:>9.2} {:>8} {:>6}",
            t.model,
            t.op,
            t.implementation,
            t.shape,
            t.forward_ms,
            f,
            fp,
            t.forward_backward_ms,
            b,
            bp
        );
    };
    let timings = run_ops(&device, repeats, show);
    if g.json {
        println!(
            "{}",
            json!({ "command": "bench ops", "device": g.device, "repeats": repeats,
                    "peak": peak, "ops": timings })
        );
    }
    Ok(())
}

/// `pretext bench peak`.
fn peak(g: &Global) -> Result<()> {
    if g.config.is_some() || !g.set.is_empty() || g.seed.is_some() {
        bail!("pretext bench peak takes no --config, --set or --seed: it runs no model");
    }
    let peak = machine_peak();
    if g.json {
        println!("{}", json!({ "command": "bench peak", "peak": peak }));
    } else {
        println!("peak: {:.1} GFLOP/s f32 ({})", peak.gflops, peak.how);
    }
    Ok(())
}

/// `pretext bench loader`.
fn loader(g: &Global, data: Option<PathBuf>, batches: usize) -> Result<()> {
    if batches == 0 {
        bail!("--batches must be at least 1");
    }
    let config =
        pretext::vision::config::PretrainConfig::load(g.config.as_deref(), &g.overrides())?;
    let started = Instant::now();
    let (source, description) = data::open_train(data.as_deref(), &config.data)?;
    let (mean, std) = source.channel_stats(config.data.on_error)?;
    let views = with_method!(config.method.as_str(), M => view_configs::<M>(&config))?;
    let pipelines: Vec<_> = views
        .iter()
        .map(|v| v.build(source.size(), &mean, &std))
        .collect();
    let opened = started.elapsed().as_secs_f64();
    let batch_size = config.batch_size;
    let steps_per_epoch = source.len() / batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {batch_size} is larger than the {} images",
            source.len()
        );
    }
    let schedule = Schedule {
        batch_size,
        steps_per_epoch,
        epochs: (batches + 1).div_ceil(steps_per_epoch),
        start_epoch: 0,
        start_step: 0,
        prefetch: config.train.prefetch,
        seed: config.seed,
    };
    let mut loader = view_loader(source, Arc::new(pipelines), schedule, &config.data);
    let mut skipped = 0;
    let mut timed = Instant::now();
    for b in 0..=batches {
        let Some(batch) = loader.next_batch() else {
            break;
        };
        skipped += batch?.skipped.len();
        if b == 0 {
            timed = Instant::now();
        }
    }
    let seconds = timed.elapsed().as_secs_f64();
    let images_per_sec = (batches * batch_size) as f64 / seconds;
    let workers = match config.data.workers {
        0 => format!("the shared pool ({} threads)", rayon::current_num_threads()),
        n => format!("{n} threads"),
    };
    if g.json {
        println!(
            "{}",
            json!({ "command": "bench loader", "data": description, "views": views.len(),
                    "batch_size": batch_size, "batches": batches, "workers": config.data.workers,
                    "images_per_sec": images_per_sec, "seconds": seconds,
                    "open_seconds": opened, "skipped": skipped })
        );
    } else {
        println!("data: {description}");
        println!(
            "{} views of {batches} batches of {batch_size} on {workers}: {images_per_sec:.0} \
             images/s ({seconds:.1} s; opening and statistics {opened:.1} s; {skipped} \
             unreadable images skipped)",
            views.len()
        );
    }
    Ok(())
}
