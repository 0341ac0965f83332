//! The attention's products whose output is one head wide: `out[m × d] = s · a[m × k] ·
//! b[k × d]` for a head of `d` = 16, 32 or 64 features (`p · v` forward; `dS · k`, `dSᵀ · q`
//! and `pᵀ · dO` backward), with `a` read in place by strides (row-major or transposed) and
//! `b` straight from the head's columns of `[len, heads · d]` rows.
//!
//! Why not `gemm`: its register tile is 6 columns wide, so a 16-column output gets one vector
//! by 6 accumulators (the FMA's latency, not its throughput, then bounds it) and both operands
//! are packed on every call: VideoMAE's decoder (320 tokens, heads of 16) ran these four
//! products at about half the machine's peak, a sixth of a step on a Xeon. Here a block of
//! rows keeps its whole output in registers (AVX-512: 12 rows of 16 or 32 features, 6 of 64),
//! and each step of the inner dimension loads one row of `b` and broadcasts one element of `a`
//! per row, `a` read where it lies. One `[321 × 321] · [321 × 16]` product on one Xeon thread:
//! 131-139 GFLOP/s against `gemm`'s 87 (of a 175 peak).
//!
//! Each output element is summed in the order of the inner dimension, one FMA per term, so the
//! result does not depend on the blocks. Other widths, `a` with neither stride 1, and CPUs
//! without AVX-512 go through [`matmul_scaled`].

use std::cell::RefCell;

use gemm::Parallelism;

use super::matmul::matmul_scaled;
use super::simd::has_avx512;

/// What multiplies the products: one factor for every row, or one per row.
#[derive(Debug, Clone, Copy)]
pub enum RowScale<'a> {
    All(f32),
    Each(&'a [f32]),
}

impl RowScale<'_> {
    fn of<const R: usize>(&self, first: usize) -> [f32; R] {
        match self {
            RowScale::All(s) => [*s; R],
            RowScale::Each(s) => std::array::from_fn(|r| s[first + r]),
        }
    }
}

/// `out[i, ..d] = scale_i · Σ_t a[i, t] · b[t, ..d]` for `i < m`, `t < k`: `out` given as (data,
/// row stride), `a` as (data, row stride, column stride), `b` as (data, row stride). Every
/// element of the `m × d` block is overwritten (never read).
pub fn head_matmul(
    (out, out_rs): (&mut [f32], usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs): (&[f32], usize),
    [m, d, k]: [usize; 3],
    scale: RowScale,
) {
    if let RowScale::Each(s) = scale {
        assert!(s.len() >= m, "head product: fewer row scales than rows");
    }
    if m == 0 || d == 0 {
        return;
    }
    let in_place = a_cs == 1 || a_rs == 1;
    if k == 0 || !matches!(d, 16 | 32 | 64) || !in_place || !has_avx512() {
        let s = match scale {
            RowScale::All(s) => s,
            RowScale::Each(_) => 1.0,
        };
        matmul_scaled(
            (out, out_rs),
            false,
            (a, a_rs, a_cs),
            (b, b_rs, 1),
            [m, d, k],
            s,
            Parallelism::None,
        );
        if let RowScale::Each(s) = scale {
            for (i, &s) in s[..m].iter().enumerate() {
                out[i * out_rs..i * out_rs + d]
                    .iter_mut()
                    .for_each(|v| *v *= s);
            }
        }
        return;
    }
    // Every index the blocks touch lies inside the three slices.
    assert!(
        (m - 1) * out_rs + d <= out.len(),
        "head product: output too short"
    );
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "head product: `a` too short"
    );
    assert!((k - 1) * b_rs + d <= b.len(), "head product: `b` too short");
    // `b`'s rows copied to cache-line-aligned memory, one after the other: a row of 16 floats
    // straddling two lines is loaded in two parts, 15-20% slower (and it is `k · d` floats
    // against `m · k · d` multiply-adds).
    B_ROWS.with(|copy| {
        let mut copy = copy.borrow_mut();
        let lines = d / 16;
        if copy.len() < k * lines {
            copy.resize(k * lines, Line([0.0; 16]));
        }
        for (t, row) in copy.chunks_exact_mut(lines).take(k).enumerate() {
            let b_row = &b[t * b_rs..t * b_rs + d];
            for (line, part) in row.iter_mut().zip(b_row.chunks_exact(16)) {
                line.0.copy_from_slice(part);
            }
        }
        let p = Operands {
            out: out.as_mut_ptr(),
            out_rs,
            a: a.as_ptr(),
            a_rs,
            a_cs,
            b: copy.as_ptr().cast::<f32>(),
            b_rs: d,
            k,
        };
        // SAFETY: the CPU has AVX-512 (checked above), the asserts keep the `m × d` output
        // and `m × k` of `a` inside their slices, and the copy holds `k × d` of `b`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            // Twelve to twenty-four accumulators of AVX-512's 32 registers.
            match (d, a_rs == 1) {
                (16, false) => avx512::rows::<1, 12, false>(&p, m, &scale),
                (16, true) => avx512::rows::<1, 12, true>(&p, m, &scale),
                (32, false) => avx512::rows::<2, 12, false>(&p, m, &scale),
                (32, true) => avx512::rows::<2, 12, true>(&p, m, &scale),
                (64, false) => avx512::rows::<4, 6, false>(&p, m, &scale),
                _ => avx512::rows::<4, 6, true>(&p, m, &scale),
            }
        }
    });
}

/// Sixteen floats on a cache line of their own.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

thread_local! {
    /// The aligned copy of `b`, kept from call to call (no allocation once it has grown).
    static B_ROWS: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// The product's pointers, strides and inner dimension.
struct Operands {
    out: *mut f32,
    out_rs: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    k: usize,
}

/// Explicit intrinsics: compiled from plain loops, the blocks came out as gathers and
/// scatters (the loop over `k` vectorised through memory), 30 times slower.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{Operands, RowScale};

    /// How many rows of a transposed `a` are asked for ahead of the one in use.
    const AHEAD: usize = 8;

    /// All `m` rows in blocks of `R`, `V` vectors of 16 wide, `a` transposed (row stride 1)
    /// where `COLUMNS`, row-major (column stride 1) elsewhere. Where `R` does not divide `m`,
    /// the last block ends at row `m` and overlaps the one before: its rows are computed
    /// again, to the same bits, since rows are independent and written, not added to.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the operands must hold an `m × 16V` output and `m × k`,
    /// `k × 16V` inputs at their strides.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows<const V: usize, const R: usize, const COLUMNS: bool>(
        p: &Operands,
        m: usize,
        scale: &RowScale,
    ) {
        if m < R {
            for i in 0..m {
                // SAFETY: row `i < m`.
                unsafe { block::<V, 1, COLUMNS>(p, i, scale.of::<1>(i)) };
            }
            return;
        }
        let mut first = 0;
        while first < m {
            let start = first.min(m - R);
            // SAFETY: rows `start..start + R` are inside `0..m`.
            unsafe { block::<V, R, COLUMNS>(p, start, scale.of::<R>(start)) };
            first += R;
        }
    }

    /// Rows `first..first + R` of the output, their `R × 16V` sums kept in registers over `k`:
    /// each step loads one row of `b` and broadcasts one element of `a` per row.
    ///
    /// # Safety
    /// As [`rows`], with rows `first..first + R` inside the operands' `m`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const V: usize, const R: usize, const COLUMNS: bool>(
        p: &Operands,
        first: usize,
        scale: [f32; R],
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // `a` at (row `first`, column t) and `b` at row t, moved along as t grows.
        // SAFETY (every pointer step, load and store): the caller keeps rows, `t < k` and
        // the `16V` columns inside the operands.
        let mut a = unsafe { p.a.add(first * p.a_rs) };
        let mut b = p.b;
        let a_step = if COLUMNS { p.a_cs } else { 1 };
        for _ in 0..p.k {
            if COLUMNS {
                // Each step reads a row of `a` of its own: asked for ahead, it is in L1 on
                // time (the hardware's prefetch left a quarter of the time to waiting).
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD * p.a_cs).cast::<i8>());
            }
            let b_row: [__m512; V] =
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(b.add(16 * v)) });
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = unsafe { *a.add(if COLUMNS { r } else { r * p.a_rs }) };
                let x = _mm512_set1_ps(x);
                for (acc, &y) in acc.iter_mut().zip(&b_row) {
                    *acc = _mm512_fmadd_ps(x, y, *acc);
                }
            }
            a = a.wrapping_add(a_step);
            b = b.wrapping_add(p.b_rs);
        }
        for (r, (acc, s)) in acc.iter().zip(scale).enumerate() {
            let row = unsafe { p.out.add((first + r) * p.out_rs) };
            let s = _mm512_set1_ps(s);
            for (v, &acc) in acc.iter().enumerate() {
                unsafe { _mm512_storeu_ps(row.add(16 * v), _mm512_mul_ps(acc, s)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.731 + seed).sin() * 2.1).fract())
            .collect()
    }

    /// Every width (the three fast ones and one through `gemm`), row counts below, at and
    /// past a block, `a` row-major and transposed, one scale and one per row: the product
    /// against its definition in f64, with the output's other columns left alone.
    #[test]
    fn matches_the_definition() {
        for d in [16, 32, 64, 8] {
            for m in [1, 5, 12, 13, 40] {
                let k = 37;
                let (out_rs, b_rs) = (d + 3, d + 5);
                let b = data((k - 1) * b_rs + d, 0.2);
                let row_scales = data(m, 0.9);
                for transposed in [false, true] {
                    let (a_rs, a_cs) = if transposed { (1, m + 2) } else { (k + 1, 1) };
                    let a = data((m - 1) * a_rs + (k - 1) * a_cs + 1, 0.4);
                    for each in [false, true] {
                        let scale = if each {
                            RowScale::Each(&row_scales)
                        } else {
                            RowScale::All(0.25)
                        };
                        let mut out = vec![7.0f32; (m - 1) * out_rs + d + 2];
                        head_matmul(
                            (&mut out, out_rs),
                            (&a, a_rs, a_cs),
                            (&b, b_rs),
                            [m, d, k],
                            scale,
                        );
                        for i in 0..m {
                            let s = if each { row_scales[i] } else { 0.25 } as f64;
                            for l in 0..d {
                                let want = s
                                    * (0..k)
                                        .map(|t| {
                                            a[i * a_rs + t * a_cs] as f64 * b[t * b_rs + l] as f64
                                        })
                                        .sum::<f64>();
                                let got = out[i * out_rs + l] as f64;
                                assert!(
                                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                    "d {d}, m {m}, transposed {transposed}, [{i}, {l}]: {got} vs {want}"
                                );
                            }
                            if i + 1 < m {
                                assert!(
                                    out[i * out_rs + d..(i + 1) * out_rs]
                                        .iter()
                                        .all(|&v| v == 7.0)
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A row's result is the same bits whichever block computes it: computing rows 3.. alone
    /// (other block boundaries) gives what computing all rows gave them.
    #[test]
    fn rows_do_not_depend_on_the_blocks() {
        let (m, d, k) = (29, 16, 50);
        let (a, b) = (data(m * k, 0.1), data(k * d, 0.3));
        let product = |rows: std::ops::Range<usize>| {
            let mut out = vec![0.0f32; rows.len() * d];
            head_matmul(
                (&mut out, d),
                (&a[rows.start * k..], k, 1),
                (&b, d),
                [rows.len(), d, k],
                RowScale::All(1.0),
            );
            out
        };
        assert_eq!(product(3..m), product(0..m)[3 * d..]);
    }
}
