//! Batch normalisation with batch statistics (training mode), NCHW `f32` slices, forward and
//! backward each in two passes.
//!
//! Why: burn's default `batch_norm_train` and its backward are a dozen generic tensor ops, each
//! a full pass over the activation and most with a transposing copy (`swap_dims(0, 1)` then a
//! reshape to `[C, N·H·W]`); measured at 220 ms forward + backward on the small CNN's first
//! layer (512x32x28x28) against 21 ms for the forward alone.
//!
//! With `x̂ = (x − μ_c)·σ_c⁻¹` (biased variance, as burn), `y = γ_c x̂ + β_c`, and `M = N·H·W`:
//! `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`, `dx = γ_c σ_c⁻¹ (dy − dβ_c/M − x̂·dγ_c/M)`.
//! Channel sums run in `f64`, one channel per task, so they do not depend on the threads.

use rayon::prelude::*;

/// `[batch, channels, positions]` of an NCHW tensor (positions = H·W, or 1 for `[N, C]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub positions: usize,
}

impl NormShape {
    fn count(&self) -> usize {
        self.batch * self.positions
    }

    /// The `positions`-long runs of channel `c`, one per image.
    fn runs<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let (image, run) = (self.channels * self.positions, self.positions);
        (0..self.batch).map(move |n| &data[n * image + c * run..][..run])
    }
}

/// Per-channel mean and biased variance, the forward's output.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// `y = γ (x − μ) / sqrt(σ² + ε) + β` with the batch's own statistics, which are returned too.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    s: &NormShape,
) -> (Vec<f32>, BatchStats) {
    assert_eq!(
        x.len(),
        s.batch * s.channels * s.positions,
        "batch_norm: input length"
    );
    assert!(
        gamma.len() == s.channels && beta.len() == s.channels,
        "batch_norm: parameters"
    );
    let count = s.count().max(1) as f64;
    let (mean, variance): (Vec<f32>, Vec<f32>) = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let mean = s.runs(x, c).map(|run| lane_sum(run, |v| v)).sum::<f64>() / count;
            let m = mean as f32;
            let var = s
                .runs(x, c)
                .map(|run| lane_sum(run, |v| (v - m) * (v - m)))
                .sum::<f64>()
                / count;
            (m, var as f32)
        })
        .unzip();
    let (scale, shift) = affine(&mean, &variance, gamma, beta, epsilon);
    let mut y = vec![0.0f32; x.len()];
    let image = s.channels * s.positions;
    if image > 0 {
        y.par_chunks_mut(image)
            .zip(x.par_chunks(image))
            .for_each(|(y_n, x_n)| {
                for c in 0..s.channels {
                    let range = c * s.positions..(c + 1) * s.positions;
                    let (a, b) = (scale[c], shift[c]);
                    y_n[range.clone()]
                        .iter_mut()
                        .zip(&x_n[range])
                        .for_each(|(y, &x)| *y = x * a + b);
                }
            });
    }
    (y, BatchStats { mean, variance })
}

/// `Σ f(a_i)` over one run with eight `f32` accumulators (so it vectorises), in `f64`: runs
/// are one image's plane of a channel, short enough for `f32` partial sums.
fn lane_sum(a: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in acc.iter_mut().zip(chunk) {
            *s += f(v);
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>() + rest.iter().map(|&v| f(v) as f64).sum::<f64>()
}

/// `Σ f(a_i, b_i)`, as [`lane_sum`].
fn lane_dot(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for ((s, &u), &v) in acc.iter_mut().zip(xa).zip(xb) {
            *s += f(u, v);
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>()
        + ra.iter()
            .zip(rb)
            .map(|(&u, &v)| f(u, v) as f64)
            .sum::<f64>()
}

/// Per channel, `y = x·scale + shift` folds the normalisation and the affine parameters.
fn affine(
    mean: &[f32],
    variance: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    (0..mean.len())
        .map(|c| {
            let inv_std = 1.0 / (variance[c] as f64 + epsilon).sqrt();
            let scale = gamma[c] as f64 * inv_std;
            (
                scale as f32,
                (beta[c] as f64 - mean[c] as f64 * scale) as f32,
            )
        })
        .unzip()
}

/// Gradients of `sum(y · dy)`: input, γ and β.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    stats: &BatchStats,
    epsilon: f64,
    dy: &[f32],
    s: &NormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), dy.len(), "batch_norm backward: gradient length");
    let inv_std: Vec<f64> = stats
        .variance
        .iter()
        .map(|&v| 1.0 / (v as f64 + epsilon).sqrt())
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let mean = stats.mean[c];
            let (mut dg, mut db) = (0.0f64, 0.0f64);
            for (xs, gs) in s.runs(x, c).zip(s.runs(dy, c)) {
                db += lane_sum(gs, |g| g);
                dg += lane_dot(xs, gs, |x, g| g * (x - mean));
            }
            ((dg * inv_std[c]) as f32, db as f32)
        })
        .unzip();
    let count = s.count().max(1) as f64;
    // dx = k·dy + a·x + b per channel, with k = γσ⁻¹, a = −k·dγ·σ⁻¹/M, b = −k·dβ/M − a·μ.
    let coefficients: Vec<(f32, f32, f32)> = (0..s.channels)
        .map(|c| {
            let k = gamma[c] as f64 * inv_std[c];
            let a = -k * dgamma[c] as f64 * inv_std[c] / count;
            let b = -k * dbeta[c] as f64 / count - a * stats.mean[c] as f64;
            (k as f32, a as f32, b as f32)
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    let image = s.channels * s.positions;
    if image > 0 {
        dx.par_chunks_mut(image)
            .zip(x.par_chunks(image).zip(dy.par_chunks(image)))
            .for_each(|(dx_n, (x_n, dy_n))| {
                for (c, &(k, a, b)) in coefficients.iter().enumerate() {
                    let range = c * s.positions..(c + 1) * s.positions;
                    for ((d, &x), &g) in dx_n[range.clone()]
                        .iter_mut()
                        .zip(&x_n[range.clone()])
                        .zip(&dy_n[range])
                    {
                        *d = k * g + a * x + b;
                    }
                }
            });
    }
    (dx, dgamma, dbeta)
}
