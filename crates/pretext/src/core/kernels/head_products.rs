//! The attention's products of one head on AVX-512, with `gemm` where a CPU lacks it:
//!
//! - [`head_matmul`]: `out[m × d] = s · a[m × k] · b[k × d]`, the output one head wide (`p · v`
//!   forward; `dS · k`, `dSᵀ · q` and `pᵀ · dO` backward), `a` read in place by strides
//!   (row-major or transposed), `b` from the head's columns of `[len, heads · d]` rows;
//! - [`head_scores`]: `out[m × n] = s · a[m × d] · b[n × d]ᵀ`, the inner dimension one head wide
//!   (`q · kᵀ`, `dO · vᵀ`), each row's maximum found as the row is written (the softmax's
//!   shift, which took a pass of its own over the scores).
//!
//! For heads of `d` = 16, 32 or 64 features. The small fully connected layers (weights up to
//! 256 KiB) run on the same register tiles: [`dense_product`] (forward and input gradient) and
//! [`weight_gradient`] (`xᵀ · dy` and the bias gradient).
//!
//! Why not `gemm` for `head_matmul`: its register tile is 6 columns wide, so a 16-column
//! output gets one vector by 6 accumulators (the FMA's latency, not its throughput, then bounds it) and both operands
//! are packed on every call: VideoMAE's decoder (320 tokens, heads of 16) ran these four
//! products at about half the machine's peak, a sixth of a step on a Xeon. Here a block of
//! rows keeps its whole output in registers (AVX-512: 12 rows of 16 or 32 features, 6 of 64),
//! and each step of the inner dimension loads one row of `b` and broadcasts one element of `a`
//! per row, `a` read where it lies. One `[321 × 321] · [321 × 16]` product on one Xeon thread:
//! 131-139 GFLOP/s against `gemm`'s 87 (of a 175 peak).
//!
//! For `head_scores` `gemm` was at two thirds of the peak: here 6 rows by 64 columns of scores
//! stay in registers over the `d` steps, from copies of `a` (contiguous) and `bᵀ` (aligned).
//!
//! Each output element is summed in the order of the inner dimension, one FMA per term, so the
//! result does not depend on the blocks. Other widths, `a` with neither stride 1, and CPUs
//! without AVX-512 go through [`matmul_scaled`].

use std::cell::RefCell;
use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use super::matmul::{matmul_scaled, matmul_scaled_into};
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
/// element of the `m × d` block is written, never read: `out` may be a fresh output, not
/// zeroed first (zeroing the attention's outputs was 1% of a VideoMAE step).
pub fn head_matmul(
    (out, out_rs): (&mut [MaybeUninit<f32>], usize),
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
        matmul_scaled_into(
            (out, out_rs),
            (a, a_rs, a_cs),
            (b, b_rs, 1),
            [m, d, k],
            s,
            Parallelism::None,
        );
        if let RowScale::Each(s) = scale {
            for (i, &s) in s[..m].iter().enumerate() {
                for v in &mut out[i * out_rs..i * out_rs + d] {
                    // SAFETY: the product above wrote the block.
                    *v = MaybeUninit::new(unsafe { v.assume_init() } * s);
                }
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
            out: out.as_mut_ptr().cast::<f32>(),
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

/// `out[i, j] = scale · Σ_c a[i, c] · b[j, c]` for `i < m`, `j < n`, `c < d`: a head's scores
/// `q · kᵀ` (or `dO · vᵀ`), `out` given as (data, row stride), `a` and `b` as (data, row
/// stride) with their `d` features contiguous. Where `row_max` is given, it receives each row's
/// largest element, NaNs left out (−∞ for a row of NaNs).
pub fn head_scores(
    (out, out_rs): (&mut [f32], usize),
    (a, a_rs): (&[f32], usize),
    (b, b_rs): (&[f32], usize),
    [m, n, d]: [usize; 3],
    scale: f32,
    row_max: Option<&mut [f32]>,
) {
    if let Some(max) = &row_max {
        assert!(max.len() >= m, "head scores: fewer maxima than rows");
    }
    if m == 0 || n == 0 {
        return;
    }
    if !matches!(d, 16 | 32 | 64) || !has_avx512() {
        matmul_scaled(
            (out, out_rs),
            false,
            (a, a_rs, 1),
            (b, 1, b_rs),
            [m, n, d],
            scale,
            Parallelism::None,
        );
        if let Some(max) = row_max {
            for (i, max) in max[..m].iter_mut().enumerate() {
                *max = out[i * out_rs..i * out_rs + n]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            }
        }
        return;
    }
    assert!(
        (m - 1) * out_rs + n <= out.len(),
        "head scores: output too short"
    );
    assert!((m - 1) * a_rs + d <= a.len(), "head scores: `a` too short");
    assert!((n - 1) * b_rs + d <= b.len(), "head scores: `b` too short");
    // `a`'s rows copied contiguous and aligned (a row at a constant offset from the block's
    // first), `b` transposed to `[d × n]` rows of 16-float lines, zero past `n`: a step of the
    // inner dimension then loads whole lines of `bᵀ` and broadcasts `a`'s elements.
    A_ROWS.with(|a_copy| {
        B_ROWS.with(|b_copy| {
            let (mut a_copy, mut b_copy) = (a_copy.borrow_mut(), b_copy.borrow_mut());
            let (lines, vectors) = (d / 16, n.div_ceil(16));
            if a_copy.len() < m * lines {
                a_copy.resize(m * lines, Line([0.0; 16]));
            }
            for (i, row) in a_copy.chunks_exact_mut(lines).take(m).enumerate() {
                for (line, part) in row
                    .iter_mut()
                    .zip(a[i * a_rs..i * a_rs + d].chunks_exact(16))
                {
                    line.0.copy_from_slice(part);
                }
            }
            if b_copy.len() < d * vectors {
                b_copy.resize(d * vectors, Line([0.0; 16]));
            }
            // SAFETY: the CPU has AVX-512; `b` holds `n` rows of `d` at stride `b_rs` (asserted
            // above) and the copy `d · ⌈n/16⌉` lines.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::transpose(b.as_ptr(), b_rs, [n, d], b_copy.as_mut_ptr().cast::<f32>())
            };
            let p = ScoreOperands {
                out: out.as_mut_ptr(),
                out_rs,
                a: a_copy.as_ptr().cast::<f32>(),
                a_rs: d,
                bt: b_copy.as_ptr().cast::<f32>(),
                bias: None,
                n,
                d,
            };
            // SAFETY: the CPU has AVX-512 (checked above), the assert keeps the `m × n` output
            // inside `out`, the copies hold `m × d` of `a` and `d × 16·⌈n/16⌉` of `bᵀ`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::score_rows(&p, m, scale, row_max)
            }
        })
    });
}

/// `y[m × n] = x[m × k] · w + bias` for a fully connected layer, with `w` the `[k × n]` matrix
/// (`w_transposed` false) or given as its transpose `[n × k]` (true: the input gradient
/// `dy · Wᵀ` of a layer whose weight is `[n × k]`), all row-major and contiguous. `None` where
/// the CPU lacks AVX-512, `n` (and `k`, for a transposed `w`) is not a multiple of 16 or the
/// weight is larger than 256 KiB: the caller then runs `gemm`.
///
/// Why: `gemm` ran the VideoMAE decoder's layers (5,136 rows by 64 to 256 features) at about
/// half the machine's peak, and the bias, written into the output before the product, was a
/// pass over fresh memory of its own (3.6% of a step). Here the bias is where the sums start,
/// and 6 rows by 64 columns of output stay in registers over `k`, from an aligned copy of `w`.
/// Rows are split among the pool's threads in blocks (each row summed in one order whatever
/// the split).
pub fn dense_product(
    x: &[f32],
    w: &[f32],
    w_transposed: bool,
    bias: Option<&[f32]>,
    [m, n, k]: [usize; 3],
    parallel: bool,
) -> Option<Vec<f32>> {
    if !has_avx512() || m == 0 || n == 0 || k == 0 || !n.is_multiple_of(16) {
        return None;
    }
    // Every block of rows reads all of the weight's copy: past L2's size (a BERT's
    // vocabulary projection, its 1,024-wide feed-forward layers) that streamed it from memory
    // again and again, 20% slower than `gemm`, which blocks for the caches.
    if k * n > MAX_WEIGHT {
        return None;
    }
    if w_transposed && !k.is_multiple_of(16) {
        return None;
    }
    assert_eq!(x.len(), m * k, "dense product: input of the wrong size");
    assert_eq!(w.len(), k * n, "dense product: weight of the wrong size");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "dense product: bias of the wrong size");
    }
    let vectors = n / 16;
    let mut lines = vec![Line([0.0; 16]); k * vectors];
    if w_transposed {
        // SAFETY: the CPU has AVX-512; `w` holds `n` rows of `k` (a multiple of 16) floats, the
        // copy `k · n/16` lines.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::transpose(w.as_ptr(), k, [n, k], lines.as_mut_ptr().cast::<f32>())
        };
    } else {
        for (line, part) in lines.iter_mut().zip(w.chunks_exact(16)) {
            line.0.copy_from_slice(part);
        }
    }
    let block = |first: usize, out: &mut [std::mem::MaybeUninit<f32>]| {
        let rows = out.len() / n;
        let p = ScoreOperands {
            out: out.as_mut_ptr().cast::<f32>(),
            out_rs: n,
            a: x[first * k..].as_ptr(),
            a_rs: k,
            bt: lines.as_ptr().cast::<f32>(),
            bias: bias.map(|b| b.as_ptr()),
            n,
            d: k,
        };
        // SAFETY: the CPU has AVX-512; `out` holds `rows` rows of `n`, `x` from row `first`
        // at least `rows` rows of `k`, the copy `k` rows of `n/16` lines; every output element
        // is written (the tiles cover all rows and columns).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::score_rows(&p, rows, 1.0, None)
        };
    };
    // Blocks of 96 rows (16 tiles of 6) where threads share the work.
    let task = if parallel { 96 * n } else { m * n };
    // SAFETY: each task's block writes every element of its chunk.
    Some(unsafe { super::uninit::par_written(m * n, task, |first, out| block(first / n, out)) })
}

/// `(dW, db)`: the weight gradient `xᵀ · dy` (`[k × n]`) of a fully connected layer with input
/// `x[m × k]` and output gradient `dy[m × n]`, and where `with_bias` the bias gradient `Σ_rows
/// dy` (summed in row order, as [`super::linear`]'s fallback sums it). `None` where the CPU
/// lacks AVX-512, `n` is not a multiple of 16 or the weight is larger than 256 KiB.
///
/// Why: `gemm` ran these products at two thirds of the machine's peak. Here the rows of `dy`
/// come in chunks of [`GRADIENT_ROWS`], copied to aligned lines (the bias gradient summed on
/// the way, instead of a pass of its own over `dy`), and each 6 × 64 block of `dW` is loaded
/// into registers, takes the chunk's terms and is stored back: the chunk's 64 columns of `dy`
/// stay in L1 for all of `dW`'s rows, and `dW` in L2. (The same tiles without the chunks were
/// 17% slower than `gemm`: each block of rows streamed all of `dy` from memory.) Each element
/// is summed in row order, one FMA per term, whatever the chunks and threads; threads split
/// `dW`'s rows.
pub fn weight_gradient(
    x: &[f32],
    dy: &[f32],
    [m, n, k]: [usize; 3],
    with_bias: bool,
    parallel: bool,
) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
    if !has_avx512()
        || m == 0
        || n == 0
        || k == 0
        || !n.is_multiple_of(16)
        || !k.is_multiple_of(16)
        || k * n > MAX_WEIGHT
    {
        return None;
    }
    assert_eq!(x.len(), m * k, "weight gradient: input of the wrong size");
    assert_eq!(
        dy.len(),
        m * n,
        "weight gradient: gradient of the wrong size"
    );
    let mut dw = vec![0.0f32; k * n];
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let task_rows = k.div_ceil(threads).next_multiple_of(6).min(k);
    let sums: Vec<Option<Vec<f32>>> = dw
        .par_chunks_mut(task_rows * n)
        .enumerate()
        .map(|(task, dw)| {
            let (first, rows) = (task * task_rows, dw.len() / n);
            let mut db = (with_bias && task == 0).then(|| vec![0.0f32; n]);
            let mut lines = vec![Line([0.0; 16]); GRADIENT_ROWS * n / 16];
            let groups = n / 64 + (n % 64) / 16;
            for t0 in (0..m).step_by(GRADIENT_ROWS) {
                let chunk = GRADIENT_ROWS.min(m - t0);
                let copy = lines.as_mut_ptr().cast::<f32>();
                // SAFETY: the CPU has AVX-512; `dy` holds rows `t0..t0 + chunk` of `n`, the
                // copy `GRADIENT_ROWS · n` floats, `db` `n`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let sum = db.as_mut().map(|db| db.as_mut_ptr());
                    avx512::copy_rows(dy[t0 * n..].as_ptr(), copy, [chunk, n], sum);
                };
                // The next chunk's rows of `x` and `dy`, asked for a few lines per block while
                // this one is computed: fetched when needed, they cost a quarter more.
                let next = (t0 + chunk)..(t0 + 2 * chunk).min(m);
                let bytes = |width: usize| next.len() * width * 4;
                let mut ahead = Ahead {
                    regions: [
                        (dy.as_ptr().wrapping_add(next.start * n).cast(), bytes(n)),
                        (x.as_ptr().wrapping_add(next.start * k).cast(), bytes(k)),
                    ],
                    per_block: (bytes(n) + bytes(k)).div_ceil(64 * groups * rows.div_ceil(6)),
                };
                let mut v = 0;
                while v < n / 16 {
                    let p = Operands {
                        out: dw[16 * v..].as_mut_ptr(),
                        out_rs: n,
                        a: x[t0 * k + first..].as_ptr(),
                        a_rs: 1,
                        a_cs: k,
                        b: lines[v..].as_ptr().cast::<f32>(),
                        b_rs: n,
                        k: chunk,
                    };
                    // SAFETY: the CPU has AVX-512; `dw` holds this task's `rows` rows of `n`
                    // (columns `16v..` and the block's vectors inside `n`), `x` rows `t0..t0 +
                    // chunk` of `k` with this task's features `first..first + rows` inside, the
                    // copy `chunk` rows of `n`.
                    let width = if v + 4 <= n / 16 { 4 } else { 1 };
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        if width == 4 {
                            avx512::add_rows::<4>(&p, rows, &mut ahead)
                        } else {
                            avx512::add_rows::<1>(&p, rows, &mut ahead)
                        }
                    }
                    v += width;
                }
            }
            db
        })
        .collect();
    Some((dw, sums.into_iter().next().flatten()))
}

/// Rows of `dy` per chunk of [`weight_gradient`]: 64 columns of them fill a 32 KiB half of L1.
const GRADIENT_ROWS: usize = 128;

/// The largest weight [`dense_product`] takes, in floats (256 KiB: half of the smaller L2s).
const MAX_WEIGHT: usize = 1 << 16;

/// Sixteen floats on a cache line of their own.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

thread_local! {
    /// The aligned copies of `a` and `b`, kept from call to call (no allocation once grown).
    static A_ROWS: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    static B_ROWS: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Memory to be read soon, asked for into L2 `per_block` lines at a time: regions as
/// (first byte, bytes left).
struct Ahead {
    regions: [(*const u8, usize); 2],
    per_block: usize,
}

impl Ahead {
    /// The next `per_block` lines (a prefetch never faults, whatever the address).
    #[inline]
    fn ask(&mut self) {
        let mut left = self.per_block;
        for (at, bytes) in &mut self.regions {
            while left > 0 && *bytes > 0 {
                // SAFETY: a prefetch reads nothing the program sees and never faults.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T1>(at.cast::<i8>())
                };
                *at = at.wrapping_add(64);
                *bytes = bytes.saturating_sub(64);
                left -= 1;
            }
        }
    }
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

/// A product `out[m × n] = a[m × d] · b[d × n] (+ bias)` for the tiles of [`head_scores`] and
/// [`dense_product`]: `a`'s rows `a_rs` apart, `b` as `d` rows of `⌈n/16⌉` aligned lines (zero
/// past `n`), the bias (where given) `n` floats.
struct ScoreOperands {
    out: *mut f32,
    out_rs: usize,
    a: *const f32,
    a_rs: usize,
    bt: *const f32,
    bias: Option<*const f32>,
    n: usize,
    d: usize,
}

/// Explicit intrinsics: compiled from plain loops, the blocks came out as gathers and
/// scatters (the loop over `k` vectorised through memory), 30 times slower.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_castpd_ps,
        _mm512_castps_pd, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_max_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_mul_ps,
        _mm512_reduce_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4,
        _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd,
        _mm512_unpacklo_ps,
    };

    use super::{Ahead, Operands, RowScale, ScoreOperands};

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
                unsafe { block::<V, 1, COLUMNS, false>(p, i, scale.of::<1>(i)) };
            }
            return;
        }
        let mut first = 0;
        while first < m {
            let start = first.min(m - R);
            // SAFETY: rows `start..start + R` are inside `0..m`.
            unsafe { block::<V, R, COLUMNS, false>(p, start, scale.of::<R>(start)) };
            first += R;
        }
    }

    /// Rows `first..first + R` of the output, their `R × 16V` sums kept in registers over `k`:
    /// each step loads one row of `b` and broadcasts one element of `a` per row. Where `ADD`,
    /// the sums start from the output's values and are stored unscaled (`scale` unused).
    ///
    /// # Safety
    /// As [`rows`], with rows `first..first + R` inside the operands' `m`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const V: usize, const R: usize, const COLUMNS: bool, const ADD: bool>(
        p: &Operands,
        first: usize,
        scale: [f32; R],
    ) {
        // SAFETY: rows `first..first + R`, `16V` columns of the output, as for the stores.
        let mut acc: [[__m512; V]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|v| {
                if ADD {
                    unsafe { _mm512_loadu_ps(p.out.add((first + r) * p.out_rs + 16 * v)) }
                } else {
                    _mm512_setzero_ps()
                }
            })
        });
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
                let value = if ADD { acc } else { _mm512_mul_ps(acc, s) };
                unsafe { _mm512_storeu_ps(row.add(16 * v), value) };
            }
        }
    }

    /// `out[i, ..16V] += Σ_t a[i, t] · b[t, ..16V]` for all `m` rows, `a` transposed (row
    /// stride 1): blocks of 6 rows, then one block of the rest. Blocks may not overlap here
    /// (a row added to twice would be wrong), hence the separate last block.
    ///
    /// # Safety
    /// As [`rows`] with `COLUMNS`; the output initialised.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_rows<const V: usize>(p: &Operands, m: usize, ahead: &mut Ahead) {
        const R: usize = 6;
        let full = m - m % R;
        // SAFETY (all): rows inside `0..m`.
        for first in (0..full).step_by(R) {
            ahead.ask();
            unsafe { block::<V, R, true, true>(p, first, [1.0; R]) };
        }
        ahead.ask();
        match m - full {
            0 => {}
            1 => unsafe { block::<V, 1, true, true>(p, full, [1.0; 1]) },
            2 => unsafe { block::<V, 2, true, true>(p, full, [1.0; 2]) },
            3 => unsafe { block::<V, 3, true, true>(p, full, [1.0; 3]) },
            4 => unsafe { block::<V, 4, true, true>(p, full, [1.0; 4]) },
            _ => unsafe { block::<V, 5, true, true>(p, full, [1.0; 5]) },
        }
    }

    /// `rows` rows of `n` floats (a multiple of 16) from `src` (`n` apart) to the aligned `dst`,
    /// each added to `sum` (in row order) where given.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `src` and `dst` must hold `rows · n` floats, `sum` `n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn copy_rows(
        src: *const f32,
        dst: *mut f32,
        [rows, n]: [usize; 2],
        sum: Option<*mut f32>,
    ) {
        for t in 0..rows {
            for c in (0..n).step_by(16) {
                // SAFETY: row `t < rows`, columns `c..c + 16` inside `n`.
                unsafe {
                    let y = _mm512_loadu_ps(src.add(t * n + c));
                    _mm512_storeu_ps(dst.add(t * n + c), y);
                    if let Some(sum) = sum {
                        _mm512_storeu_ps(sum.add(c), _mm512_add_ps(_mm512_loadu_ps(sum.add(c)), y));
                    }
                }
            }
        }
    }
    /// Rows of scores in blocks of 6 (the last overlapping the one before, as in [`rows`]),
    /// each block across the columns 64 at a time (24 accumulators), then 16 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the operands must hold `m` rows as [`head_scores`] lays
    /// them out.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn score_rows(
        p: &ScoreOperands,
        m: usize,
        scale: f32,
        row_max: Option<&mut [f32]>,
    ) {
        // SAFETY: passed on.
        unsafe {
            match (row_max.is_some(), scale != 1.0) {
                (true, true) => score_sized::<true, true>(p, m, scale, row_max),
                (true, false) => score_sized::<true, false>(p, m, scale, row_max),
                (false, true) => score_sized::<false, true>(p, m, scale, row_max),
                (false, false) => score_sized::<false, false>(p, m, scale, row_max),
            }
        }
    }

    /// [`score_rows`] with the maxima taken where `MAX` and the scale applied where `SCALED`
    /// (the backward's scores need neither: a sixth of a tile's work, at heads of 16).
    ///
    /// # Safety
    /// As [`score_rows`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn score_sized<const MAX: bool, const SCALED: bool>(
        p: &ScoreOperands,
        m: usize,
        scale: f32,
        row_max: Option<&mut [f32]>,
    ) {
        // SAFETY: passed on.
        unsafe {
            if m < SCORE_ROWS {
                score_blocks::<1, MAX, SCALED>(p, m, scale, row_max)
            } else {
                score_blocks::<SCORE_ROWS, MAX, SCALED>(p, m, scale, row_max)
            }
        }
    }

    /// [`score_rows`] in blocks of `R` rows.
    ///
    /// # Safety
    /// As [`score_rows`], with `R <= m`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn score_blocks<const R: usize, const MAX: bool, const SCALED: bool>(
        p: &ScoreOperands,
        m: usize,
        scale: f32,
        mut row_max: Option<&mut [f32]>,
    ) {
        let vectors = p.n.div_ceil(16);
        let mut first = 0;
        while first < m {
            let start = first.min(m - R);
            let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); R];
            let mut v = 0;
            // SAFETY (both): rows `start..start + R` and the vectors lie inside.
            while v + 4 <= vectors {
                unsafe { score_block::<4, R, MAX, SCALED>(p, start, v, scale, &mut max) };
                v += 4;
            }
            while v < vectors {
                unsafe { score_block::<1, R, MAX, SCALED>(p, start, v, scale, &mut max) };
                v += 1;
            }
            if let Some(row_max) = row_max.as_deref_mut() {
                for (r, max) in max.iter().enumerate() {
                    row_max[start + r] = _mm512_reduce_max_ps(*max);
                }
            }
            first += R;
        }
    }

    /// Rows in one block of scores.
    const SCORE_ROWS: usize = 6;

    /// Scores of rows `first..first + R` and columns
    /// `16v..16(v + V)`, the last vector masked at `n`; `max` takes their running maxima.
    ///
    /// # Safety
    /// As [`score_rows`], the rows and vectors inside the operands.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn score_block<const V: usize, const R: usize, const MAX: bool, const SCALED: bool>(
        p: &ScoreOperands,
        first: usize,
        v: usize,
        scale: f32,
        max: &mut [__m512; R],
    ) {
        let vectors = p.n.div_ceil(16);
        // Each column's sum starts from its bias, or from 0.
        let start: [__m512; V] = std::array::from_fn(|u| match p.bias {
            Some(bias) => {
                let col = 16 * (v + u);
                let mask: __mmask16 = if p.n - col >= 16 {
                    !0
                } else {
                    (1u16 << (p.n - col)) - 1
                };
                // SAFETY: lanes masked at `n`, the bias's length.
                unsafe { _mm512_maskz_loadu_ps(mask, bias.add(col)) }
            }
            None => _mm512_setzero_ps(),
        });
        let mut acc = [start; R];
        // SAFETY (every load and store): rows below `first + rows`, `c < d`, vectors below
        // `⌈n/16⌉` (the copies' extent), output columns masked at `n`.
        let a = unsafe { p.a.add(first * p.a_rs) };
        for c in 0..p.d {
            let bt = unsafe { p.bt.add((c * vectors + v) * 16) };
            let b_row: [__m512; V] =
                std::array::from_fn(|u| unsafe { _mm512_loadu_ps(bt.add(16 * u)) });
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(unsafe { *a.add(r * p.a_rs + c) });
                for (acc, &y) in acc.iter_mut().zip(&b_row) {
                    *acc = _mm512_fmadd_ps(x, y, *acc);
                }
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (r, (acc, max)) in acc.iter().zip(max.iter_mut()).enumerate() {
            let row = unsafe { p.out.add((first + r) * p.out_rs) };
            for (u, &acc) in acc.iter().enumerate() {
                let col = 16 * (v + u);
                let value = if SCALED {
                    _mm512_mul_ps(acc, scale)
                } else {
                    acc
                };
                let live = p.n - col;
                // NaN left out: `max_ps` returns its second operand when either is NaN.
                if live >= 16 {
                    unsafe { _mm512_storeu_ps(row.add(col), value) };
                    if MAX {
                        *max = _mm512_max_ps(value, *max);
                    }
                } else {
                    let mask: __mmask16 = (1u16 << live) - 1;
                    unsafe { _mm512_mask_storeu_ps(row.add(col), mask, value) };
                    if MAX {
                        *max = _mm512_mask_max_ps(*max, mask, value, *max);
                    }
                }
            }
        }
    }
    /// `bᵀ` into `d` rows of `⌈n/16⌉` lines (lanes past `n` zero): 16 rows of `b` at a time,
    /// 16 features at a time, transposed in registers (reading `b` at a stride instead, one
    /// float at a time, was a fifth of the scores' time).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `b` must hold `n` rows of `d` (a multiple of 16) floats
    /// `b_rs` apart, `bt` `d · ⌈n/16⌉ · 16` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(b: *const f32, b_rs: usize, [n, d]: [usize; 2], bt: *mut f32) {
        let vectors = n.div_ceil(16);
        for v in 0..vectors {
            let live = (n - 16 * v).min(16);
            for q in 0..d / 16 {
                // SAFETY (loads and stores): rows below `n`, features below `d`, lines below
                // `d · ⌈n/16⌉`.
                let rows: [__m512; 16] = std::array::from_fn(|lane| {
                    if lane < live {
                        unsafe { _mm512_loadu_ps(b.add((16 * v + lane) * b_rs + 16 * q)) }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (c, column) in transpose16(rows).into_iter().enumerate() {
                    unsafe { _mm512_storeu_ps(bt.add(((16 * q + c) * vectors + v) * 16), column) };
                }
            }
        }
    }

    /// A 16 × 16 block transposed: `out[c]` holds element `c` of every `rows[i]`. Pairs of rows
    /// interleaved by floats, then by pairs of floats (each 128-bit lane then holds four rows'
    /// element of one column), then the lanes gathered in two rounds of 128-bit shuffles.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(rows: [__m512; 16]) -> [__m512; 16] {
        let pairs: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (rows[i & !1], rows[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // quads[4i + k], 128-bit lane L: rows 4i..4i + 4 of column 4L + k.
        let quads: [__m512; 16] = std::array::from_fn(|j| {
            let (i, k) = (j / 4, j % 4);
            let (a, b) = (
                _mm512_castps_pd(pairs[4 * i + k / 2]),
                _mm512_castps_pd(pairs[4 * i + 2 + k / 2]),
            );
            _mm512_castpd_ps(if k % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        // halves[8h + 4s + k]: shuffle `s` of quads[8h + k] and quads[8h + 4 + k].
        let halves: [__m512; 16] = std::array::from_fn(|j| {
            let (h, s, k) = (j / 8, (j / 4) % 2, j % 4);
            let (a, b) = (quads[8 * h + k], quads[8 * h + 4 + k]);
            if s == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        });
        // Columns k and 8 + k from halves[k] (rows 0..8) and halves[8 + k] (rows 8..16),
        // columns 4 + k and 12 + k from halves[4 + k] and halves[12 + k].
        std::array::from_fn(|c| {
            let (k, s, t) = (c % 4, (c / 4) % 2, c / 8);
            let (a, b) = (halves[4 * s + k], halves[8 + 4 * s + k]);
            if t == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        })
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

    /// The floats of a slice the test initialised (or a head product wrote) whole.
    fn initialised(out: &[MaybeUninit<f32>]) -> Vec<f32> {
        // SAFETY: the callers' slices were written in full.
        out.iter().map(|v| unsafe { v.assume_init() }).collect()
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
                        let mut out = vec![MaybeUninit::new(7.0f32); (m - 1) * out_rs + d + 2];
                        head_matmul(
                            (&mut out, out_rs),
                            (&a, a_rs, a_cs),
                            (&b, b_rs),
                            [m, d, k],
                            scale,
                        );
                        let out = initialised(&out);
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
            let mut out = vec![MaybeUninit::uninit(); rows.len() * d];
            head_matmul(
                (&mut out, d),
                (&a[rows.start * k..], k, 1),
                (&b, d),
                [rows.len(), d, k],
                RowScale::All(1.0),
            );
            // Every element written: read as initialised.
            initialised(&out)
        };
        assert_eq!(product(3..m), product(0..m)[3 * d..]);
    }

    /// Scores for every width (three fast, one through `gemm`), row and column counts below,
    /// at and past a block and a vector, against the definition in f64; the row maxima, with
    /// a NaN in one row left out; the output's other columns left alone.
    #[test]
    fn scores_match_the_definition() {
        for d in [16, 32, 64, 8] {
            for (m, n) in [(1, 1), (5, 17), (6, 64), (13, 83), (40, 321)] {
                let (out_rs, a_rs, b_rs) = (n + 3, d + 2, d + 7);
                let mut a = data((m - 1) * a_rs + d, 0.6);
                let b = data((n - 1) * b_rs + d, 0.8);
                if m > 2 {
                    a[2 * a_rs] = f32::NAN;
                }
                let mut out = vec![7.0f32; (m - 1) * out_rs + n + 2];
                let mut max = vec![0.0f32; m];
                head_scores(
                    (&mut out, out_rs),
                    (&a, a_rs),
                    (&b, b_rs),
                    [m, n, d],
                    0.5,
                    Some(&mut max),
                );
                for i in 0..m {
                    let mut want_max = f64::NEG_INFINITY;
                    for j in 0..n {
                        let want = 0.5
                            * (0..d)
                                .map(|c| a[i * a_rs + c] as f64 * b[j * b_rs + c] as f64)
                                .sum::<f64>();
                        let got = out[i * out_rs + j] as f64;
                        if i == 2 && m > 2 {
                            assert!(got.is_nan(), "d {d}, [{i}, {j}]: {got}");
                            continue;
                        }
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "d {d}, m {m}, n {n}, [{i}, {j}]: {got} vs {want}"
                        );
                        want_max = want_max.max(got);
                    }
                    assert_eq!(
                        max[i] as f64, want_max,
                        "d {d}, m {m}, n {n}, row {i} maximum"
                    );
                    assert!(
                        out[i * out_rs + n..i * out_rs + out_rs.min(n + 2)]
                            .iter()
                            .all(|&v| v == 7.0)
                    );
                }
            }
        }
    }

    /// Every element of the row-major `rows × cols` matrix `got` within 1e-5 (relative) of
    /// `want(i, j)`, its definition in f64.
    fn assert_matrix(
        got: &[f32],
        [rows, cols]: [usize; 2],
        what: &str,
        want: impl Fn(usize, usize) -> f64,
    ) {
        for i in 0..rows {
            for j in 0..cols {
                let (got, want) = (got[i * cols + j] as f64, want(i, j));
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{what}, [{i}, {j}]: {got} vs {want}"
                );
            }
        }
    }

    /// The fully connected product against its definition in f64: row counts below, at and
    /// past a block and a task, `w` as given and transposed, with and without a bias, on one
    /// thread and split; and refused (for `gemm`) where the widths are not multiples of 16.
    #[test]
    fn dense_product_matches_the_definition() {
        for (m, n, k) in [(1, 16, 16), (7, 48, 32), (200, 80, 64), (13, 16, 112)] {
            let (x, w, bias) = (data(m * k, 0.3), data(k * n, 0.5), data(n, 0.7));
            // `w` transposed: `[n × k]`, element (j, c) = w[c, j].
            let w_t: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            for (transposed, weight) in [(false, &w), (true, &w_t)] {
                for with_bias in [false, true] {
                    for parallel in [false, true] {
                        let b = with_bias.then_some(&bias[..]);
                        let y = dense_product(&x, weight, transposed, b, [m, n, k], parallel);
                        let Some(y) = y else {
                            assert!(!has_avx512(), "refused on AVX-512");
                            continue;
                        };
                        let what = format!("{m}x{n}x{k}, transposed {transposed}");
                        assert_matrix(&y, [m, n], &what, |i, j| {
                            (0..k)
                                .map(|c| x[i * k + c] as f64 * w[c * n + j] as f64)
                                .sum::<f64>()
                                + if with_bias { bias[j] as f64 } else { 0.0 }
                        });
                    }
                }
            }
        }
        let big = vec![0.0f32; 16 * (MAX_WEIGHT / 16 + 16)];
        assert!(
            dense_product(
                &big[..16 * 16],
                &big,
                false,
                None,
                [16, MAX_WEIGHT / 16 + 16, 16],
                false
            )
            .is_none()
        );
        assert!(dense_product(&[0.0; 8], &[0.0; 8], false, None, [1, 8, 8], false).is_none());
        assert!(dense_product(&[0.0; 128], &[0.0; 128], true, None, [16, 16, 8], false).is_none());
    }

    /// The weight gradient against its definition in f64, and the bias gradient against the
    /// rows summed in order (the same bits): row counts below, at and past a chunk, `dW` rows
    /// in whole blocks and with a block of the rest, column counts through the wide and the
    /// single-vector tiles; the same bits on one thread and split among three; refused (for
    /// `gemm`) where a width is not a multiple of 16.
    #[test]
    fn weight_gradient_matches_the_definition() {
        for (m, n, k) in [(1, 16, 16), (128, 64, 48), (300, 80, 64), (257, 48, 32)] {
            let (x, dy) = (data(m * k, 0.2), data(m * n, 0.9));
            let Some((dw, db)) = weight_gradient(&x, &dy, [m, n, k], true, false) else {
                assert!(!has_avx512(), "refused on AVX-512");
                return;
            };
            assert_matrix(&dw, [k, n], &format!("{m}x{n}x{k}"), |i, j| {
                (0..m)
                    .map(|t| x[t * k + i] as f64 * dy[t * n + j] as f64)
                    .sum::<f64>()
            });
            let mut sum = vec![0.0f32; n];
            for row in dy.chunks_exact(n) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            assert_eq!(db, Some(sum), "{m}x{n}x{k}: bias gradient");
            let split = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap()
                .install(|| weight_gradient(&x, &dy, [m, n, k], true, true));
            assert_eq!(split, Some((dw, db)), "{m}x{n}x{k}: split among threads");
            let without = weight_gradient(&x, &dy, [m, n, k], false, false);
            assert_eq!(without.map(|(_, db)| db), Some(None));
        }
        assert!(weight_gradient(&[0.0; 16], &[0.0; 8], [1, 8, 16], false, false).is_none());
        assert!(weight_gradient(&[0.0; 8], &[0.0; 16], [1, 16, 8], false, false).is_none());
    }
}
