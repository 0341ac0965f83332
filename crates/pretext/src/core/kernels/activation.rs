//! GELU and softmax on `f32` slices, forward and backward, written as straight-line arithmetic
//! over contiguous runs so the compiler vectorises them.
//!
//! Why: burn-flex evaluates GELU's `erf` through `libm` one element at a time (measured 87 ms
//! forward + backward for BERT-mini's 16x128x1024 FFN activation, PyTorch 6 ms) and builds
//! softmax and its backward from generic reductions (13 ms against 1.8 ms at 16x4x128x128).
//!
//! `exp` is a degree-6 polynomial after range reduction and `erf` is Abramowitz & Stegun
//! 7.1.26 (absolute error under 1.5e-7); both are tested against the standard library.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::uninit::par_written;
use crate::with_avx2;

/// Elements per parallel task: large enough that scheduling costs nothing.
const TASK: usize = 1 << 14;

/// `eˣ` for `f32`, relative error about 2e-7; exactly 0 below -87.3 (masked attention scores
/// rely on it), +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (underflow, overflow) = (x < -87.3, x > 88.7);
    let (p, n) = exp_reduced(x);
    // 2^n in two factors so each stays a normal number for every n the clamp allows
    // (-126..=128).
    let half = n >> 1;
    let y = p * power_of_two(half) * power_of_two(n - half);
    if underflow {
        0.0
    } else if overflow {
        f32::INFINITY
    } else {
        y
    }
}

/// [`exp`] for `x <= 0` (a softmax numerator after the shift by its row's maximum), without
/// what only large positive arguments need: the overflow branch and the second of the two
/// factors of 2ⁿ (for x <= 0, n >= -126 and 2ⁿ is one normal number). The same bits as [`exp`]
/// there. A positive argument (a row holding +inf, whose shift is then 0) still gives about
/// eˣ, and +inf from 88.4 on, so a diverged row stays non-finite.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let underflow = x < -87.3;
    let (p, n) = exp_reduced(x);
    let y = p * power_of_two(n);
    if underflow { 0.0 } else { y }
}

/// `eˣ = p · 2ⁿ` for `x` clamped to [-87.3, 88.7], with `p = eʳ`, |r| <= ln2/2.
#[inline(always)]
fn exp_reduced(x: f32) -> (f32, i32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by adding and removing 1.5·2²³ (plain adds vectorise; `round` is a
    // library call on baseline x86-64). While `t` is in [2²³, 2²⁴) its low mantissa bits hold
    // 0x400000 + n, so n as an integer comes from the bits: a float-to-int `as` would be eight
    // scalar conversions with saturation fix-ups per vector.
    const ROUND: f32 = 12_582_912.0;
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    // e^r by its Taylor series to r^6 (Horner, one fused multiply-add a degree: see `simd.rs`
    // on why fused products give the same bits on every machine).
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = r.mul_add(p, 1.0 / 24.0);
    let p = r.mul_add(p, 1.0 / 6.0);
    let p = r.mul_add(p, 0.5);
    let p = r.mul_add(p, 1.0);
    let p = r.mul_add(p, 1.0);
    (p, (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32))
}

/// 2ᵏ through the exponent bits (+inf for k = 128).
#[inline(always)]
fn power_of_two(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_and_gaussian(x).0
}

/// `(erf(x), exp(−x²))`: the formula needs the second, and GELU's gradient reuses it for the
/// normal density, so the backward takes one exponential instead of two.
#[inline(always)]
fn erf_and_gaussian(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = t.mul_add(1.061_405_4, -1.453_152);
    let poly = t.mul_add(poly, 1.421_413_8);
    let poly = t.mul_add(poly, -0.284_496_74);
    let poly = t * t.mul_add(poly, 0.254_829_6);
    let gaussian = exp_nonpositive(-a * a);
    ((-poly).mul_add(gaussian, 1.0).copysign(x), gaussian)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

with_avx2! {
    /// Writes every element of `y`.
    fn gelu_chunk(y: &mut [MaybeUninit<f32>], x: &[f32]) {
        assert_eq!(y.len(), x.len());
        let split = y.len() - y.len() % WIDE;
        let (y_wide, y_tail) = y.split_at_mut(split);
        for (y, x) in y_wide.chunks_exact_mut(WIDE).zip(x.chunks_exact(WIDE)) {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(gelu(x));
            }
        }
        for (y, &x) in y_tail.iter_mut().zip(&x[split..]) {
            y.write(gelu(x));
        }
    }
}

with_avx2! {
    /// Writes every element of `dx`.
    fn gelu_grad_chunk(dx: &mut [MaybeUninit<f32>], x: &[f32], dy: &[f32]) {
        assert!(dx.len() == x.len() && x.len() == dy.len());
        let split = dx.len() - dx.len() % WIDE;
        let (dx_wide, dx_tail) = dx.split_at_mut(split);
        let blocks = dx_wide.chunks_exact_mut(WIDE).zip(x.chunks_exact(WIDE)).zip(dy.chunks_exact(WIDE));
        for ((d, x), g) in blocks {
            for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                d.write(gelu_grad(x, g));
            }
        }
        for ((d, &x), &g) in dx_tail.iter_mut().zip(&x[split..]).zip(&dy[split..]) {
            d.write(gelu_grad(x, g));
        }
    }
}

/// Elements per step of the loops that evaluate an exponential each: four vectors of
/// [`LANES`] as one block, so the compiler interleaves four independent evaluations. One at
/// a time, their long chains of dependent operations filled the scheduler (the softmax's
/// exponentials 7% slower on a Xeon). The same operations on each element: the same bits.
const WIDE: usize = 4 * LANES;

/// The sum of `N` (a power of two) running sums, halved pairwise: a few vector additions
/// instead of `N` dependent scalar ones (64 cycles a row of scores summed in order, a sixth of
/// the softmax's exponentials; 10% faster so).
#[inline(always)]
fn tree_sum<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// `x·Φ(x)`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `g·(Φ(x) + x·φ(x))`.
#[inline(always)]
fn gelu_grad(x: f32, g: f32) -> f32 {
    let (erf, gaussian) = erf_and_gaussian(x * FRAC_1_SQRT_2);
    let cdf = 0.5 * (1.0 + erf);
    // φ(x) = exp(−x²/2)/√(2π), and exp(−(x/√2)²) is that exponential.
    let pdf = FRAC_1_SQRT_2PI * gaussian;
    g * (cdf + x * pdf)
}

/// `gelu(x) = x·Φ(x)`, Φ the standard normal distribution function (the exact, erf form).
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    // SAFETY: `gelu_chunk` writes every element of its chunk.
    unsafe {
        par_written(x.len(), TASK, |first, y| {
            gelu_chunk(y, &x[first..first + y.len()])
        })
    }
}

/// `dx = dy·(Φ(x) + x·φ(x))`.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "gelu backward: gradient length");
    // SAFETY: `gelu_grad_chunk` writes every element of its chunk.
    unsafe {
        par_written(x.len(), TASK, |first, dx| {
            let range = first..first + dx.len();
            gelu_grad_chunk(dx, &x[range.clone()], &dy[range])
        })
    }
}

/// Running values per lane in [`lanes`]: one AVX-512 register, two AVX2 ones, four SSE ones.
/// The lane count fixes the order of the additions, so it is the same on every machine.
pub(super) const LANES: usize = 16;

/// [`LANES`] running values folded over `x` (lane `i` sees elements `i, i + 16, ...`):
/// written so the compiler keeps them in registers.
#[inline(always)]
pub(super) fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; LANES] {
    let mut acc = [init; LANES];
    // Whole chunks by index, so the lanes stay in a register: a zip over `chunks(16)` has a
    // variable length, and the compiler then keeps `acc` on the stack (a store-to-load stall
    // per chunk).
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            acc[lane] = f(acc[lane], chunk[lane]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a = f(*a, v);
    }
    acc
}

with_avx2! {
    /// The largest element of `row`, or 0 where that is not finite (a row of -inf, every key
    /// masked, then gives 0/0 = NaN, as burn's softmax does): the shift that keeps `exp`
    /// finite.
    pub fn softmax_shift(row: &[f32]) -> f32 {
        let max = lanes(row, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
        let max = max.into_iter().fold(f32::NEG_INFINITY, f32::max);
        if max.is_finite() {
            max
        } else {
            0.0
        }
    }
}

with_avx2! {
    /// `row ← exp(row − shift)` for a `shift` no smaller than the row's elements, returning
    /// the sum of the exponentials: one pass, the sum kept in [`LANES`] lanes (added pairwise
    /// at the end). The softmax's numerators, before the division by their sum.
    pub fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut wide = row.chunks_exact_mut(WIDE);
        for chunk in &mut wide {
            for e in chunk.iter_mut() {
                *e = exp_nonpositive(*e - shift);
            }
            for part in chunk.chunks_exact(LANES) {
                for lane in 0..LANES {
                    acc[lane] += part[lane];
                }
            }
        }
        let mut chunks = wide.into_remainder().chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for lane in 0..LANES {
                let e = exp_nonpositive(chunk[lane] - shift);
                chunk[lane] = e;
                acc[lane] += e;
            }
        }
        for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
            *v = exp_nonpositive(*v - shift);
            *a += *v;
        }
        tree_sum(acc)
    }
}

with_avx2! {
    /// Softmax of one row in place; returns the row's shift (its maximum) and the reciprocal
    /// of its sum of exponentials, from which a backward can recompute the row.
    pub fn softmax_in_place(row: &mut [f32]) -> (f32, f32) {
        let shift = softmax_shift(row);
        let inv = 1.0 / exp_shifted_in_place(row, shift);
        row.iter_mut().for_each(|v| *v *= inv);
        (shift, inv)
    }
}

with_avx2! {
    /// `g ← y ⊙ (g − Σ g ⊙ y)` for one row with `y = e · inv`: the upstream gradient `g` of the
    /// softmax output `y` becomes the gradient of its input. Taking the numerators `e` and the
    /// reciprocal of their sum (`inv = 1` for normalised rows) spares attention a pass that
    /// would normalise its rows first.
    pub fn softmax_grad_in_place(g: &mut [f32], e: &[f32], inv: f32) {
        let mut acc = [0.0f32; LANES];
        let (es, gs) = (e.chunks_exact(LANES), g.chunks_exact(LANES));
        let tail = es.remainder().iter().zip(gs.remainder());
        for (es, gs) in es.zip(gs) {
            for lane in 0..LANES {
                acc[lane] += es[lane] * gs[lane];
            }
        }
        for (a, (&u, &v)) in acc.iter_mut().zip(tail) {
            *a += u * v;
        }
        let dot = inv * acc.iter().sum::<f32>();
        for (g, &e) in g.iter_mut().zip(e) {
            *g = (e * inv) * (*g - dot);
        }
    }
}

/// Softmax over consecutive rows of length `row` (the last dimension).
pub fn softmax_forward(x: &[f32], row: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    if row == 0 {
        return y;
    }
    let rows_per_task = (TASK / row).max(1);
    y.par_chunks_mut(rows_per_task * row).for_each(|y| {
        for y in y.chunks_mut(row) {
            softmax_in_place(y);
        }
    });
    y
}

/// `dx = y ⊙ (dy − Σ dy ⊙ y)` per row, from the forward's output `y`.
pub fn softmax_backward(y: &[f32], dy: &[f32], row: usize) -> Vec<f32> {
    assert_eq!(y.len(), dy.len(), "softmax backward: gradient length");
    let mut dx = dy.to_vec();
    if row == 0 {
        return dx;
    }
    let rows_per_task = (TASK / row).max(1);
    dx.par_chunks_mut(rows_per_task * row)
        .zip(y.par_chunks(rows_per_task * row))
        .for_each(|(dx, y)| {
            for (dx, y) in dx.chunks_mut(row).zip(y.chunks(row)) {
                softmax_grad_in_place(dx, y, 1.0);
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-4000..=4000).map(|i| i as f32 / 400.0)
    }

    #[test]
    fn exp_matches_the_standard_library() {
        for x in (-8730..=8870).map(|i| i as f32 / 100.0) {
            let (fast, exact) = (exp(x), (x as f64).exp());
            assert!(
                ((fast as f64 - exact) / exact).abs() < 5e-7,
                "exp({x}): {fast} vs {exact}"
            );
        }
        assert_eq!(exp(-87.4), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
    }

    #[test]
    fn exp_of_a_nonpositive_argument_has_exps_bits() {
        for x in (-9000..=0).map(|i| i as f32 / 100.0) {
            assert_eq!(exp_nonpositive(x).to_bits(), exp(x).to_bits(), "exp({x})");
        }
        assert_eq!(exp_nonpositive(-1e30), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(f32::INFINITY), f32::INFINITY);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_its_published_error() {
        // The standard library has no erf: compare with a high-order series, exact in f64.
        let series = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        for x in (-300..=300).map(|i| i as f32 / 100.0) {
            let err = (erf(x) as f64 - series(x as f64)).abs();
            // 1.5e-7 in exact arithmetic, plus f32 rounding of `1 - poly·exp`.
            assert!(err < 5e-7, "erf({x}): off by {err}");
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() {
        let x: Vec<f32> = grid().step_by(37).collect();
        let dx = gelu_backward(&x, &vec![1.0; x.len()]);
        for (&x, &d) in x.iter().zip(&dx) {
            let h = 1e-2f32;
            let [hi, lo] = [x + h, x - h].map(|v| gelu_forward(&[v])[0] as f64);
            let fd = (hi - lo) / (2.0 * h as f64);
            assert!((fd - d as f64).abs() < 2e-3, "gelu'({x}): {fd} vs {d}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_the_gradient_matches_finite_differences() {
        let x: Vec<f32> = grid().step_by(401).collect();
        let row = 5;
        let x = &x[..x.len() / row * row];
        let y = softmax_forward(x, row);
        for r in y.chunks(row) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let dy: Vec<f32> = (0..x.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let dx = softmax_backward(&y, &dy, row);
        let loss = |x: &[f32]| -> f64 {
            softmax_forward(x, row)
                .iter()
                .zip(&dy)
                .map(|(a, b)| (a * b) as f64)
                .sum()
        };
        for j in 0..x.len() {
            let h = 1e-2f32;
            let (mut hi, mut lo) = (x.to_vec(), x.to_vec());
            hi[j] += h;
            lo[j] -= h;
            let fd = (loss(&hi) - loss(&lo)) / (2.0 * h as f64);
            assert!(
                (fd - dx[j] as f64).abs() < 1e-3,
                "dx[{j}]: {fd} vs {}",
                dx[j]
            );
        }
    }
}
