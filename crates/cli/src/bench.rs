//! `pretext bench ops`: op-by-op timings against the machine's peak (core::bench).

use anyhow::{Result, bail};
use clap::Subcommand;
use pretext::core::bench::{OpTiming, machine_peak, run_ops};
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
}

pub fn run(g: &Global, cmd: BenchCommand) -> Result<()> {
    if g.config.is_some() || !g.set.is_empty() || g.seed.is_some() {
        bail!("pretext bench takes no --config, --set or --seed: its shapes are fixed");
    }
    let BenchCommand::Ops { repeats } = cmd;
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
