//! How every training job prints where its time went.

use pretext::core::train::{TimeBreakdown, TrainSummary};

pub fn print_time(t: &TimeBreakdown) {
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

/// The one-line result of a pretraining run over `examples` (clips, videos) of `data`, or its
/// JSON record (`command`, the data, what reading met, the summary) under `--json`.
pub fn print_pretrain(
    json: bool,
    command: &str,
    data: &std::path::Path,
    (examples, unit): (usize, &str),
    read: serde_json::Value,
    s: &TrainSummary,
) {
    // Under MPI rank 0 speaks for the job.
    if !pretext::core::distributed::world().is_root() {
        return;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "command": command, "data": data, unit: examples,
                                "read": read, "result": s })
        );
    } else {
        println!(
            "{}: {} steps ({:.2} epochs of {examples} {unit}), loss {:.4} -> {:.4}; {:.1} \
             {unit}/s, {:.0}s; checkpoint {}",
            s.method,
            s.steps,
            s.epochs_done,
            s.first_loss,
            s.final_loss,
            s.images_per_sec,
            s.time.total,
            s.checkpoint.display()
        );
    }
}
