//! Mean cross-entropy of rows of logits against one target class per row,
//! `−(1/n) Σ_r log softmax(x_r)[t_r]`, forward and backward as one op each.
//!
//! Why: written as `log_softmax(x).gather(t).mean().neg()`, the MLM loss over an 8,000-piece
//! vocabulary runs burn's log-softmax (a pass for the maximum, one for `exp` through `libm`
//! element by element, one for the sum, one for the subtraction, each with its own backward)
//! and a gather whose backward scatters into a zeroed `[n, vocab]` tensor: 7% of a BERT-mini
//! step. Here the forward keeps one number per row (its log-sum-exp) and the backward writes
//! `(softmax(x_r) − onehot(t_r)) · g / n` in one pass.

use rayon::prelude::*;

use super::activation::{exp, lanes};
use crate::with_avx2;

/// Logits per parallel task (whole rows): large enough that scheduling costs nothing.
const TASK: usize = 1 << 15;

fn rows_per_task(classes: usize) -> usize {
    (TASK / classes.max(1)).max(1)
}

with_avx2! {
    /// `max + ln Σ exp(x − max)` of one row.
    fn log_sum_exp(row: &[f32]) -> f32 {
        let max = lanes(row, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
        let max = max.into_iter().fold(f32::NEG_INFINITY, f32::max);
        let sum = lanes(row, 0.0, |s, v| s + exp(v - max)).iter().sum::<f32>();
        max + sum.ln()
    }
}

with_avx2! {
    /// `dx = scale · (exp(x − lse) − [j = target])` for one row.
    fn softmax_minus_target(dx: &mut [f32], row: &[f32], lse: f32, target: usize, scale: f32) {
        for (d, &x) in dx.iter_mut().zip(row) {
            *d = scale * exp(x - lse);
        }
        dx[target] -= scale;
    }
}

/// The mean loss over the rows and each row's log-sum-exp (for the backward). `logits` is
/// row-major `[targets.len(), classes]`.
pub fn forward(logits: &[f32], classes: usize, targets: &[usize]) -> (f32, Vec<f32>) {
    let rows = targets.len();
    assert_eq!(logits.len(), rows * classes, "cross-entropy: logits size");
    assert!(
        rows > 0 && classes > 0,
        "cross-entropy: no rows or no classes"
    );
    assert!(
        targets.iter().all(|&t| t < classes),
        "cross-entropy: a target outside the classes"
    );
    let block = rows_per_task(classes);
    let mut lse = vec![0.0f32; rows];
    lse.par_chunks_mut(block)
        .zip(logits.par_chunks(block * classes))
        .for_each(|(lse, x)| {
            for (l, row) in lse.iter_mut().zip(x.chunks(classes)) {
                *l = log_sum_exp(row);
            }
        });
    // Summed in row order in f64: the same loss whatever the threads.
    let total: f64 = lse
        .iter()
        .zip(targets)
        .enumerate()
        .map(|(r, (&l, &t))| (l - logits[r * classes + t]) as f64)
        .sum();
    ((total / rows as f64) as f32, lse)
}

/// The logits' gradient for an upstream gradient `grad` of the mean loss.
pub fn backward(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    lse: &[f32],
    grad: f32,
) -> Vec<f32> {
    assert_eq!(
        lse.len(),
        targets.len(),
        "cross-entropy backward: statistics"
    );
    assert_eq!(
        logits.len(),
        targets.len() * classes,
        "cross-entropy backward: logits size"
    );
    let scale = grad / targets.len() as f32;
    let block = rows_per_task(classes);
    let mut dx = vec![0.0f32; logits.len()];
    dx.par_chunks_mut(block * classes)
        .zip(logits.par_chunks(block * classes))
        .zip(lse.par_chunks(block).zip(targets.par_chunks(block)))
        .for_each(|((dx, x), (lse, targets))| {
            for (((d, row), &l), &t) in dx
                .chunks_mut(classes)
                .zip(x.chunks(classes))
                .zip(lse)
                .zip(targets)
            {
                softmax_minus_target(d, row, l, t, scale);
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss and gradient against the definitions in f64, with large logits (the shift by the
    /// maximum must keep `exp` finite).
    #[test]
    fn matches_the_definition() {
        let classes = 37;
        let targets = [3usize, 0, 36, 17, 17];
        let logits: Vec<f32> = (0..targets.len() * classes)
            .map(|i| (i as f32 * 0.77).sin() * 9.0 + if i % 11 == 0 { 80.0 } else { 0.0 })
            .collect();
        let (loss, lse) = forward(&logits, classes, &targets);
        let dx = backward(&logits, classes, &targets, &lse, 2.0);
        let mut want = 0.0f64;
        for (r, &t) in targets.iter().enumerate() {
            let row: Vec<f64> = logits[r * classes..(r + 1) * classes]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            want += (lse - row[t]) / targets.len() as f64;
            for (j, &v) in row.iter().enumerate() {
                let g =
                    2.0 / targets.len() as f64 * ((v - lse).exp() - if j == t { 1.0 } else { 0.0 });
                let got = dx[r * classes + j] as f64;
                assert!((got - g).abs() < 1e-5, "dx[{r}, {j}]: {got} vs {g}");
            }
        }
        assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
    }
}
