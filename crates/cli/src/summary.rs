//! How every training job prints where its time went.

use pretext::core::train::TimeBreakdown;

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
