//! Vector kernels over rows padded to a multiple of 8 floats.
//!
//! Rows are slices of [`Lane`]s (8 aligned `f32`), so every loop runs over whole chunks of 8
//! with no remainder and no bounds checks, which LLVM turns into packed SSE/AVX code.
//! Padding floats are zero and stay zero (every update adds a multiple of another padded row).
//!
//! Each kernel is generic over `FMA`. The `true` instantiation is only ever inlined into
//! functions compiled with `#[target_feature(enable = "avx2,fma")]` (chosen at run time, see
//! [`Isa`]) and uses explicit AVX2/FMA intrinsics. The `false` one uses explicit SSE intrinsics
//! on x86-64 (part of its baseline) and plain loops over `[f32; 8]` that LLVM vectorises
//! elsewhere. No `-C target-cpu=native` is needed.

// Lane loops index several arrays in lockstep on purpose: that is what vectorises.
#![allow(clippy::needless_range_loop)]

/// Eight aligned floats.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lane(pub [f32; 8]);

/// Floats per [`Lane`].
pub const LANE: usize = 8;

/// Lanes needed for `dim` floats.
pub fn lanes_for(dim: usize) -> usize {
    dim.div_ceil(LANE)
}

/// Instruction set used by the hot loops, detected once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 + FMA (x86-64 since Haswell / Zen).
    Avx2Fma,
    /// Whatever the build targets (SSE2 on x86-64).
    Generic,
}

impl Isa {
    /// The best one this CPU supports; `PRETEXT_W2V_GENERIC=1` forces [`Isa::Generic`].
    pub fn detect() -> Isa {
        if std::env::var_os("PRETEXT_W2V_GENERIC").is_some_and(|v| v != "0") {
            return Isa::Generic;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma;
            }
        }
        Isa::Generic
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2Fma => "avx2+fma",
            Isa::Generic => "generic",
        }
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `a · b` (the shorter length wins; callers pass equal lengths).
#[inline(always)]
pub fn dot<const FMA: bool>(a: &[Lane], b: &[Lane]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: `FMA = true` is only instantiated inside `avx2,fma` target-feature functions.
        return unsafe { avx2::dot(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if !FMA {
        return sse::dot(a, b);
    }
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Two independent accumulators hide the FMA latency; whole-lane copies keep LLVM on packed ops.
    let mut acc0 = [0f32; LANE];
    let mut acc1 = [0f32; LANE];
    let mut i = 0;
    while i + 2 <= n {
        let (x0, y0, x1, y1) = (a[i].0, b[i].0, a[i + 1].0, b[i + 1].0);
        for k in 0..LANE {
            acc0[k] = madd::<FMA>(x0[k], y0[k], acc0[k]);
        }
        for k in 0..LANE {
            acc1[k] = madd::<FMA>(x1[k], y1[k], acc1[k]);
        }
        i += 2;
    }
    if i < n {
        let (x0, y0) = (a[i].0, b[i].0);
        for k in 0..LANE {
            acc0[k] = madd::<FMA>(x0[k], y0[k], acc0[k]);
        }
    }
    for k in 0..LANE {
        acc0[k] += acc1[k];
    }
    hsum(acc0)
}

/// Sum of the 8 values, in a fixed order.
#[inline(always)]
fn hsum(v: [f32; LANE]) -> f32 {
    let h = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let q = [h[0] + h[2], h[1] + h[3]];
    q[0] + q[1]
}

/// `y += a * x`.
#[inline(always)]
pub fn axpy<const FMA: bool>(a: f32, x: &[Lane], y: &mut [Lane]) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: as in `dot`.
        return unsafe { avx2::axpy(a, x, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if !FMA {
        return sse::axpy(a, x, y);
    }
    for (yv, xv) in y.iter_mut().zip(x) {
        let (xs, mut ys) = (xv.0, yv.0);
        for k in 0..LANE {
            ys[k] = madd::<FMA>(a, xs[k], ys[k]);
        }
        yv.0 = ys;
    }
}

/// The negative-sampling / hierarchical-softmax update of one output row, fused in one pass:
/// `acc += g * out; out += g * inp` (reading `out` once).
#[inline(always)]
pub fn update_pair<const FMA: bool>(g: f32, inp: &[Lane], out: &mut [Lane], acc: &mut [Lane]) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: as in `dot`.
        return unsafe { avx2::update_pair(g, inp, out, acc) };
    }
    #[cfg(target_arch = "x86_64")]
    if !FMA {
        return sse::update_pair(g, inp, out, acc);
    }
    let n = inp.len().min(out.len()).min(acc.len());
    let (inp, out, acc) = (&inp[..n], &mut out[..n], &mut acc[..n]);
    for ((o, i), e) in out.iter_mut().zip(inp).zip(acc.iter_mut()) {
        let (is, os, mut es) = (i.0, o.0, e.0);
        let mut ns = [0f32; LANE];
        for k in 0..LANE {
            es[k] = madd::<FMA>(g, os[k], es[k]);
            ns[k] = madd::<FMA>(g, is[k], os[k]);
        }
        e.0 = es;
        o.0 = ns;
    }
}

/// Output rows a shared-negatives window keeps in registers (the centre word and up to 7 noise
/// words); wider windows take the one-pair path.
pub const WINDOW_OUTPUTS: usize = 8;

/// `scores[j] = inp · outs[j]` for several rows (AVX2+FMA only: callers check [`Isa`]).
///
/// # Safety
/// Inlined only into `avx2,fma` functions; every pointer is valid for `lanes` lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn dots_avx2(inp: *const Lane, outs: &[*const Lane], lanes: usize, scores: &mut [f32]) {
    // SAFETY: per the contract.
    unsafe { avx2::dots(inp, outs, lanes, scores) }
}

/// A shared-negatives window's update of its output rows and hidden gradients (AVX2+FMA only;
/// see the `avx2` module's `window_update`).
///
/// # Safety
/// As `dots_avx2`; `outs.len() <= WINDOW_OUTPUTS`; no output row is an input or hidden row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn window_update_avx2(
    outs: &[*mut Lane],
    ins: &[*const Lane],
    grads: &[f32],
    hidden: &mut [Lane],
    lanes: usize,
) {
    // SAFETY: per the contract.
    unsafe { avx2::window_update(outs, ins, grads, hidden, lanes) }
}

/// `y += x`.
#[inline(always)]
pub fn add(x: &[Lane], y: &mut [Lane]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        let (xs, mut ys) = (xv.0, yv.0);
        for k in 0..LANE {
            ys[k] += xs[k];
        }
        yv.0 = ys;
    }
}

/// `y *= a`.
#[inline(always)]
pub fn scale(a: f32, y: &mut [Lane]) {
    for yv in y.iter_mut() {
        let mut ys = yv.0;
        for k in 0..LANE {
            ys[k] *= a;
        }
        yv.0 = ys;
    }
}

/// `y = 0`.
#[inline(always)]
pub fn zero(y: &mut [Lane]) {
    for yv in y.iter_mut() {
        *yv = Lane::default();
    }
}

/// Asks the CPU to start loading the `lanes` lanes at `row` into L1 (no-op where unsupported).
#[inline(always)]
pub fn prefetch(row: *const Lane, lanes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = row.cast::<i8>();
        let mut off = 0;
        while off < lanes * std::mem::size_of::<Lane>() {
            // SAFETY: prefetching never faults, even for invalid addresses; SSE is baseline on x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, lanes);
}

/// Explicit SSE versions of the kernels for x86-64 CPUs without AVX2 (SSE2 is part of x86-64,
/// so these need no run-time check). LLVM's own vectorisation of the portable loops mixes scalar
/// and packed code here and runs 2-3x slower.
#[cfg(target_arch = "x86_64")]
mod sse {
    use super::{LANE, Lane};
    use std::arch::x86_64::*;

    // SAFETY (all functions): SSE and SSE2 are part of the x86-64 baseline, so the intrinsics
    // are available on every x86-64 CPU; a lane is 8 floats aligned to 32 bytes, so both of its
    // 4-float halves are 16-byte aligned for `_mm_load_ps` / `_mm_store_ps`, and `h + 4 <= 8`.

    #[inline(always)]
    pub(super) fn dot(a: &[Lane], b: &[Lane]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        // SAFETY: see the module comment.
        unsafe {
            let mut acc0 = _mm_setzero_ps();
            let mut acc1 = _mm_setzero_ps();
            for (x, y) in a.iter().zip(b) {
                let (px, py) = (x.0.as_ptr(), y.0.as_ptr());
                acc0 = _mm_add_ps(acc0, _mm_mul_ps(_mm_load_ps(px), _mm_load_ps(py)));
                acc1 = _mm_add_ps(
                    acc1,
                    _mm_mul_ps(_mm_load_ps(px.add(4)), _mm_load_ps(py.add(4))),
                );
            }
            let v = _mm_add_ps(acc0, acc1);
            let h = _mm_add_ps(v, _mm_movehl_ps(v, v));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
        }
    }

    #[inline(always)]
    pub(super) fn update_pair(g: f32, inp: &[Lane], out: &mut [Lane], acc: &mut [Lane]) {
        let n = inp.len().min(out.len()).min(acc.len());
        let (inp, out, acc) = (&inp[..n], &mut out[..n], &mut acc[..n]);
        // SAFETY: see the module comment.
        unsafe {
            let gv = _mm_set1_ps(g);
            for ((o, i), e) in out.iter_mut().zip(inp).zip(acc.iter_mut()) {
                for h in (0..LANE).step_by(4) {
                    let (po, pi, pe) = (
                        o.0.as_mut_ptr().add(h),
                        i.0.as_ptr().add(h),
                        e.0.as_mut_ptr().add(h),
                    );
                    let ov = _mm_load_ps(po);
                    _mm_store_ps(pe, _mm_add_ps(_mm_load_ps(pe), _mm_mul_ps(gv, ov)));
                    _mm_store_ps(po, _mm_add_ps(ov, _mm_mul_ps(gv, _mm_load_ps(pi))));
                }
            }
        }
    }

    #[inline(always)]
    pub(super) fn axpy(a: f32, x: &[Lane], y: &mut [Lane]) {
        // SAFETY: see the module comment.
        unsafe {
            let av = _mm_set1_ps(a);
            for (yv, xv) in y.iter_mut().zip(x) {
                for h in (0..LANE).step_by(4) {
                    let (py, px) = (yv.0.as_mut_ptr().add(h), xv.0.as_ptr().add(h));
                    _mm_store_ps(
                        py,
                        _mm_add_ps(_mm_load_ps(py), _mm_mul_ps(av, _mm_load_ps(px))),
                    );
                }
            }
        }
    }
}

/// Explicit AVX2/FMA versions of the kernels. They are `inline(always)` and only ever inlined
/// into functions compiled with `#[target_feature(enable = "avx2,fma")]`, where the
/// intrinsics become single instructions.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Lane;
    use std::arch::x86_64::*;

    #[inline(always)]
    fn ptr(l: &Lane) -> *const f32 {
        l.0.as_ptr()
    }

    #[inline(always)]
    fn mptr(l: &mut Lane) -> *mut f32 {
        l.0.as_mut_ptr()
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline(always)]
    pub(super) unsafe fn dot(a: &[Lane], b: &[Lane]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        // SAFETY: lanes are 32-byte aligned 8-float blocks; AVX2+FMA per the contract.
        unsafe {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 2 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_load_ps(ptr(&a[i])), _mm256_load_ps(ptr(&b[i])), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_load_ps(ptr(&a[i + 1])),
                    _mm256_load_ps(ptr(&b[i + 1])),
                    acc1,
                );
                i += 2;
            }
            if i < n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_load_ps(ptr(&a[i])), _mm256_load_ps(ptr(&b[i])), acc0);
            }
            let v = _mm256_add_ps(acc0, acc1);
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let q = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
        }
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline(always)]
    pub(super) unsafe fn update_pair(g: f32, inp: &[Lane], out: &mut [Lane], acc: &mut [Lane]) {
        let n = inp.len().min(out.len()).min(acc.len());
        let (inp, out, acc) = (&inp[..n], &mut out[..n], &mut acc[..n]);
        // SAFETY: as in `dot`.
        unsafe {
            let gv = _mm256_set1_ps(g);
            for ((o, i), e) in out.iter_mut().zip(inp).zip(acc.iter_mut()) {
                let ov = _mm256_load_ps(ptr(o));
                let ev = _mm256_fmadd_ps(gv, ov, _mm256_load_ps(ptr(e)));
                let nv = _mm256_fmadd_ps(gv, _mm256_load_ps(ptr(i)), ov);
                _mm256_store_ps(mptr(e), ev);
                _mm256_store_ps(mptr(o), nv);
            }
        }
    }

    /// The horizontal sum of two accumulators, in `dot`'s order.
    #[inline(always)]
    unsafe fn reduce(acc0: __m256, acc1: __m256) -> f32 {
        // SAFETY: AVX2 per the caller's contract.
        unsafe {
            let v = _mm256_add_ps(acc0, acc1);
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let q = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
        }
    }

    /// `scores[j] = inp · outs[j]`, four output rows at a time so each chunk of `inp` is loaded
    /// once per four; each score is summed exactly as [`dot`] sums it.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; every pointer is valid for `lanes` lanes.
    #[inline(always)]
    pub(super) unsafe fn dots(
        inp: *const Lane,
        outs: &[*const Lane],
        lanes: usize,
        scores: &mut [f32],
    ) {
        // SAFETY: pointers valid for `lanes` lanes per the contract; AVX2+FMA.
        unsafe {
            let load = |p: *const Lane, c: usize| _mm256_load_ps(ptr(&*p.add(c)));
            let mut j = 0;
            while j + 4 <= outs.len() {
                let o = [outs[j], outs[j + 1], outs[j + 2], outs[j + 3]];
                let mut a0 = [_mm256_setzero_ps(); 4];
                let mut a1 = [_mm256_setzero_ps(); 4];
                let mut c = 0;
                while c + 2 <= lanes {
                    let (x0, x1) = (load(inp, c), load(inp, c + 1));
                    for t in 0..4 {
                        a0[t] = _mm256_fmadd_ps(x0, load(o[t], c), a0[t]);
                        a1[t] = _mm256_fmadd_ps(x1, load(o[t], c + 1), a1[t]);
                    }
                    c += 2;
                }
                if c < lanes {
                    let x0 = load(inp, c);
                    for t in 0..4 {
                        a0[t] = _mm256_fmadd_ps(x0, load(o[t], c), a0[t]);
                    }
                }
                for t in 0..4 {
                    scores[j + t] = reduce(a0[t], a1[t]);
                }
                j += 4;
            }
            for (score, &o) in scores[j..].iter_mut().zip(&outs[j..]) {
                *score = dot(
                    std::slice::from_raw_parts(inp, lanes),
                    std::slice::from_raw_parts(o, lanes),
                );
            }
        }
    }

    /// The update of one shared-negatives window, lane chunk by lane chunk: the (at most
    /// [`super::WINDOW_OUTPUTS`]) output rows stay in registers while the context words, in
    /// order, read them into their hidden gradients (`hidden[i]`, overwritten) and move them by
    /// `grads[i * outs.len() + j]` times their input row. The same arithmetic in the same order
    /// as one `update_pair` per (output, context) pair, without reloading and storing the output
    /// row for every context word.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; every pointer is valid for `lanes` lanes; no output row is
    /// an input row or a hidden row.
    #[inline(always)]
    pub(super) unsafe fn window_update(
        outs: &[*mut Lane],
        ins: &[*const Lane],
        grads: &[f32],
        hidden: &mut [Lane],
        lanes: usize,
    ) {
        let k = outs.len();
        debug_assert!(k <= super::WINDOW_OUTPUTS && grads.len() == ins.len() * k);
        // SAFETY: pointers valid for `lanes` lanes per the contract; AVX2+FMA.
        unsafe {
            let mut rows = [_mm256_setzero_ps(); super::WINDOW_OUTPUTS];
            for c in 0..lanes {
                for j in 0..k {
                    rows[j] = _mm256_load_ps(ptr(&*outs[j].add(c)));
                }
                for (i, &inp) in ins.iter().enumerate() {
                    let x = _mm256_load_ps(ptr(&*inp.add(c)));
                    let mut h = _mm256_setzero_ps();
                    for j in 0..k {
                        let g = _mm256_set1_ps(grads[i * k + j]);
                        h = _mm256_fmadd_ps(g, rows[j], h);
                        rows[j] = _mm256_fmadd_ps(g, x, rows[j]);
                    }
                    _mm256_store_ps(mptr(&mut hidden[i * lanes + c]), h);
                }
                for j in 0..k {
                    _mm256_store_ps(mptr(&mut *outs[j].add(c)), rows[j]);
                }
            }
        }
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline(always)]
    pub(super) unsafe fn axpy(a: f32, x: &[Lane], y: &mut [Lane]) {
        // SAFETY: as in `dot`.
        unsafe {
            let av = _mm256_set1_ps(a);
            for (yv, xv) in y.iter_mut().zip(x) {
                let r = _mm256_fmadd_ps(av, _mm256_load_ps(ptr(xv)), _mm256_load_ps(ptr(yv)));
                _mm256_store_ps(mptr(yv), r);
            }
        }
    }
}

/// The floats of `lanes`, padding included.
pub fn as_floats(lanes: &[Lane]) -> &[f32] {
    // SAFETY: `Lane` is `repr(C)` around `[f32; 8]`: a slice of lanes is `8 * len` contiguous
    // floats, aligned beyond what `f32` needs, and borrowed for the same lifetime.
    unsafe { std::slice::from_raw_parts(lanes.as_ptr().cast::<f32>(), lanes.len() * LANE) }
}

/// Copies `src` into lanes (zero padding).
pub fn to_lanes(src: &[f32], dst: &mut [Lane]) {
    zero(dst);
    for (i, &v) in src.iter().enumerate() {
        dst[i / LANE].0[i % LANE] = v;
    }
}

/// Dot products of many rows with one vector, with the best instruction set available.
pub fn dot_rows(isa: Isa, rows: &[Lane], stride: usize, v: &[Lane], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn fast(rows: &[Lane], stride: usize, v: &[Lane], out: &mut [f32]) {
        for (o, r) in out.iter_mut().zip(rows.chunks_exact(stride)) {
            *o = dot::<true>(r, v);
        }
    }
    fn generic(rows: &[Lane], stride: usize, v: &[Lane], out: &mut [f32]) {
        for (o, r) in out.iter_mut().zip(rows.chunks_exact(stride)) {
            *o = dot::<false>(r, v);
        }
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` is only returned by `Isa::detect` after checking both features.
        Isa::Avx2Fma => unsafe { fast(rows, stride, v, out) },
        _ => generic(rows, stride, v, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(v: &[f32]) -> Vec<Lane> {
        let mut out = vec![Lane::default(); lanes_for(v.len())];
        to_lanes(v, &mut out);
        out
    }

    #[test]
    fn kernels_match_scalar() {
        let mut rng = crate::rng::Rng::new(1, 2);
        for dim in [1, 7, 8, 13, 16, 100, 300] {
            let a: Vec<f32> = (0..dim).map(|_| rng.next_f32() - 0.5).collect();
            let b: Vec<f32> = (0..dim).map(|_| rng.next_f32() - 0.5).collect();
            let (la, lb) = (lanes(&a), lanes(&b));
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot::<false>(&la, &lb)) - exact).abs() < 1e-5);
            let mut out = vec![0f32; 1];
            for isa in [Isa::Generic, Isa::detect()] {
                dot_rows(isa, &la, la.len(), &lb, &mut out);
                assert!((f64::from(out[0]) - exact).abs() < 1e-5, "{isa:?}");
            }
            #[cfg(target_arch = "x86_64")]
            if Isa::detect() == Isa::Avx2Fma {
                #[target_feature(enable = "avx2,fma")]
                fn fused(la: &[Lane], lb: &[Lane]) -> (f32, Vec<Lane>, Vec<Lane>, Vec<Lane>) {
                    let (mut o, mut e, mut y) = (lb.to_vec(), la.to_vec(), la.to_vec());
                    update_pair::<true>(0.5, la, &mut o, &mut e);
                    axpy::<true>(2.0, lb, &mut y);
                    (dot::<true>(la, lb), o, e, y)
                }
                // SAFETY: the CPU has AVX2 and FMA (just detected).
                let (d, o, e, y) = unsafe { fused(&la, &lb) };
                assert!((f64::from(d) - exact).abs() < 1e-5);
                for i in 0..dim {
                    let (oi, ei, yi) = (o[i / 8].0[i % 8], e[i / 8].0[i % 8], y[i / 8].0[i % 8]);
                    assert!((ei - (a[i] + 0.5 * b[i])).abs() < 1e-6);
                    assert!((oi - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                    assert!((yi - (a[i] + 2.0 * b[i])).abs() < 1e-6);
                }
            }
            let (mut o, mut e) = (lb.clone(), la.clone());
            update_pair::<false>(0.5, &la, &mut o, &mut e);
            for i in 0..dim {
                let (oi, ei) = (o[i / 8].0[i % 8], e[i / 8].0[i % 8]);
                assert!((ei - (a[i] + 0.5 * b[i])).abs() < 1e-6);
                assert!((oi - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
            let mut y = la.clone();
            axpy::<false>(2.0, &lb, &mut y);
            add(&lb, &mut y);
            scale(0.5, &mut y);
            for i in 0..dim {
                assert!((y[i / 8].0[i % 8] - (a[i] + 3.0 * b[i]) * 0.5).abs() < 1e-6);
            }
            // Padding stays zero.
            for i in dim..la.len() * 8 {
                assert_eq!(y[i / 8].0[i % 8], 0.0);
                assert_eq!(o[i / 8].0[i % 8], 0.0);
            }
        }
    }
}
