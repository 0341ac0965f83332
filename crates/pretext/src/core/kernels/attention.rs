//! Multi-head scaled dot-product attention as one op, forward and backward:
//! `out = dropout(softmax(q kᵀ / √d + mask)) v` per head, on `[batch, len, heads · head_dim]`
//! rows as the projections write them.
//!
//! Why: as a chain of tensor ops, attention splits the heads (a copy), materialises the
//! `[batch, heads, len, len]` scores, their masked copy, their softmax and its dropped copy,
//! keeps them all for the backward and joins the heads again (another copy). For VideoMAE's
//! decoder (321 tokens, 16-wide heads) that is 13 M floats per tensor per block, and copying
//! them cost more than the products (docs/video.md). Here one task per sequence walks its
//! heads: the scores of one head (`len × len`, in cache) are computed and exponentiated (one
//! fused pass), multiplied by the values, and the head's `head_dim` outputs per row divided by
//! the row's sum, written straight into the head's columns of the output (dividing the `len`
//! probabilities instead was a pass over the scores of its own). The backward recomputes the
//! exponentials from each row's maximum (flash-attention's trade: a product more, no
//! `len × len` tensor kept), so the op keeps only its inputs and two floats per row.
//!
//! The scores are `(q kᵀ)·(1/√d)`, padded keys get [`MASKED_SCORE`], whose exponential is 0, and
//! dropout draws its mask with `dropout.rs`'s counter-based generator at the index the element
//! has in the `[batch, heads, len, len]` tensor, so the op computes what the chain of ops
//! computes, dropout mask included (tested in `core::transformer`).

use std::cell::RefCell;

use rayon::prelude::*;

use super::activation::{exp_shifted_in_place, softmax_grad_in_place, softmax_shift};
use super::dropout;
use super::head_products::{RowScale, head_matmul, head_scores};
use super::uninit::written;
use crate::with_avx2;

/// Score given to padded keys before the softmax: its exponential is exactly 0 in f32, so
/// padding has no influence at all on real tokens.
pub const MASKED_SCORE: f32 = -1e9;

/// Sizes: `batch` sequences of `len` tokens, `heads` heads of `head_dim` features each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }

    /// Offset of head `h`'s columns in sequence `b`'s rows.
    fn offset(&self, b: usize, h: usize) -> usize {
        b * self.len * self.dim() + h * self.head_dim
    }
}

/// Dropout on the attention probabilities: the key of its mask, the probability, and the
/// index of the first score in the draw (under MPI, where the rank's share of the global
/// batch's scores begins).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbDropout {
    pub key: u64,
    pub prob: f64,
    pub first: u32,
}

/// What the forward keeps for the backward: per (sequence, head, query) the softmax's shift
/// (the row's maximum) and the reciprocal of its sum of exponentials.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxStats {
    pub shift: Vec<f32>,
    pub inv_sum: Vec<f32>,
}

/// What the op reads besides `q`, `k`, `v`: the shape, which keys are padding (`[batch, len]`,
/// true at padded positions) and the dropout.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSetup<'a> {
    pub shape: AttentionShape,
    pub key_pad: Option<&'a [bool]>,
    pub dropout: Option<ProbDropout>,
}

impl AttentionSetup<'_> {
    fn check(&self, tensors: &[(&[f32], &str)]) {
        let s = self.shape;
        for (t, what) in tensors {
            assert_eq!(
                t.len(),
                s.batch * s.len * s.dim(),
                "attention: {what} of the wrong size"
            );
        }
        if let Some(pad) = self.key_pad {
            assert_eq!(pad.len(), s.batch * s.len, "attention: padding mask size");
        }
        assert!(
            s.batch * s.heads * s.len * s.len <= u32::MAX as usize,
            "attention: more than 2^32 scores in one call"
        );
    }

    /// Index of score `(b, h, 0, 0)` in the dropout's draw: its place in the `[batch, heads,
    /// len, len]` tensor, after the dropout's first index.
    fn first_score(&self, b: usize, h: usize) -> u32 {
        let s = self.shape;
        let first = self.dropout.map_or(0, |d| d.first);
        first.wrapping_add(((b * s.heads + h) * s.len * s.len) as u32)
    }

    /// `scores ← (q kᵀ)/√d` for head `h` of sequence `b`, padded keys masked; where `shift`
    /// is given, each row's softmax shift goes there ([`softmax_shift`]: the row's maximum, 0
    /// where that is not finite), found by the product as it writes the rows when no key is
    /// padded.
    fn scores(
        &self,
        scores: &mut [f32],
        q: &[f32],
        k: &[f32],
        b: usize,
        h: usize,
        mut shift: Option<&mut [f32]>,
    ) {
        let s = self.shape;
        let (len, dim, at) = (s.len, s.dim(), s.offset(b, h));
        let dims = [len, len, s.head_dim];
        // Without padding the product finds each row's maximum as it writes the row.
        let found = self.key_pad.is_none();
        head_scores(
            (scores, len),
            (&q[at..], dim),
            (&k[at..], dim),
            dims,
            s.scale(),
            shift.as_deref_mut().filter(|_| found),
        );
        if let Some(pad) = self.key_pad {
            mask_keys(scores, &pad[b * len..(b + 1) * len]);
        }
        for (shift, row) in shift.into_iter().flatten().zip(scores.chunks(len)) {
            if !found {
                *shift = softmax_shift(row);
            } else if !shift.is_finite() {
                *shift = 0.0;
            }
        }
    }
}

with_avx2! {
    /// Padded keys' scores set to [`MASKED_SCORE`] in every row.
    fn mask_keys(scores: &mut [f32], pad: &[bool]) {
        for row in scores.chunks_mut(pad.len()) {
            for (v, &p) in row.iter_mut().zip(pad) {
                if p {
                    *v = MASKED_SCORE;
                }
            }
        }
    }
}

with_avx2! {
    /// `dst[i, ..width] = src[i, ..width] · inv[i]`, `dst`'s rows `width` apart and `src`'s
    /// `src_stride` apart: the softmax's division applied to a head's `head_dim` output
    /// gradients rather than to its `len` probabilities.
    fn scale_rows(dst: &mut [f32], src: &[f32], src_stride: usize, width: usize, inv: &[f32]) {
        for ((row, i), &inv) in dst.chunks_exact_mut(width).zip(0..).zip(inv) {
            let src = &src[i * src_stride..i * src_stride + width];
            for (d, &v) in row.iter_mut().zip(src) {
                *d = v * inv;
            }
        }
    }
}

/// Two `len × len` matrices of scratch per thread, kept from call to call: allocating and
/// zeroing fresh ones for each sequence was a pass over memory of its own (about 1% of a
/// VideoMAE step). Every element is written before it is read.
fn with_scratch<R>(n: usize, work: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    SCRATCH.with(|scratch| {
        let (a, b) = &mut *scratch.borrow_mut();
        for buffer in [&mut *a, &mut *b] {
            if buffer.len() < n {
                buffer.resize(n, 0.0);
            }
        }
        work(&mut a[..n], &mut b[..n])
    })
}

/// The attention output `[batch, len, heads · head_dim]` and the rows' softmax statistics.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], setup: AttentionSetup) -> (Vec<f32>, SoftmaxStats) {
    setup.check(&[(q, "queries"), (k, "keys"), (v, "values")]);
    let s = setup.shape;
    let (len, dim) = (s.len, s.dim());
    let mut shift = vec![0.0f32; s.batch * s.heads * len];
    let mut inv_sum = vec![0.0f32; s.batch * s.heads * len];
    if s.batch * len * dim == 0 {
        return (Vec::new(), SoftmaxStats { shift, inv_sum });
    }
    // SAFETY: each sequence's heads write all `dim` columns of its `len` rows (`head_matmul`
    // writes its whole block).
    let out = unsafe {
        written(s.batch * len * dim, |out| {
            out.par_chunks_mut(len * dim)
                .zip(
                    shift
                        .par_chunks_mut(s.heads * len)
                        .zip(inv_sum.par_chunks_mut(s.heads * len)),
                )
                .enumerate()
                .for_each(|(b, (out, (shift, inv_sum)))| {
                    // The softmax's numerators: each row is divided by its sum after the product,
                    // on `head_dim` outputs instead of `len` probabilities.
                    with_scratch(len * len, |exps, _| {
                        for h in 0..s.heads {
                            let rows = h * len..(h + 1) * len;
                            setup.scores(exps, q, k, b, h, Some(&mut shift[rows.clone()]));
                            for ((row, shift), inv) in exps
                                .chunks_mut(len)
                                .zip(&shift[rows.clone()])
                                .zip(&mut inv_sum[rows.clone()])
                            {
                                *inv = 1.0 / exp_shifted_in_place(row, *shift);
                            }
                            if let Some(d) = setup.dropout {
                                dropout::apply_in_place(
                                    exps,
                                    d.key,
                                    d.prob,
                                    setup.first_score(b, h),
                                );
                            }
                            head_matmul(
                                (&mut out[h * s.head_dim..], dim),
                                (exps, len, 1),
                                (&v[s.offset(b, h)..], dim),
                                [len, s.head_dim, len],
                                RowScale::Each(&inv_sum[rows]),
                            );
                        }
                    });
                })
        })
    };
    (out, SoftmaxStats { shift, inv_sum })
}

/// The gradients `(dq, dk, dv)` from the inputs, the forward's statistics and the output
/// gradient `d_out`.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stats: &SoftmaxStats,
    d_out: &[f32],
    setup: AttentionSetup,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    setup.check(&[
        (q, "queries"),
        (k, "keys"),
        (v, "values"),
        (d_out, "gradient"),
    ]);
    let s = setup.shape;
    let (len, dim) = (s.len, s.dim());
    assert_eq!(
        stats.shift.len(),
        s.batch * s.heads * len,
        "attention backward: statistics"
    );
    let n = q.len();
    if n == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let (mut dq, mut dk, mut dv) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let scale = s.scale();
    dq.spare_capacity_mut()[..n]
        .par_chunks_mut(len * dim)
        .zip(
            dk.spare_capacity_mut()[..n]
                .par_chunks_mut(len * dim)
                .zip(dv.spare_capacity_mut()[..n].par_chunks_mut(len * dim)),
        )
        .enumerate()
        .for_each(|(b, (dq, (dk, dv)))| {
            let mut d_out_scaled = vec![0.0f32; len * s.head_dim];
            with_scratch(len * len, |exps, grad| {
                for h in 0..s.heads {
                    let (at, cols) = (s.offset(b, h), h * s.head_dim);
                    let rows = (b * s.heads + h) * len..(b * s.heads + h + 1) * len;
                    let (shift, inv_sum) = (&stats.shift[rows.clone()], &stats.inv_sum[rows]);
                    // The forward's numerators again: the same scores and shifts, the same bits.
                    setup.scores(exps, q, k, b, h, None);
                    for (row, &shift) in exps.chunks_mut(len).zip(shift) {
                        exp_shifted_in_place(row, shift);
                    }
                    // dv = dropout(P)ᵀ · d_out, P's division moved onto d_out's rows.
                    let kept = match setup.dropout {
                        Some(d) => {
                            grad.copy_from_slice(exps);
                            dropout::apply_in_place(grad, d.key, d.prob, setup.first_score(b, h));
                            &*grad
                        }
                        None => &*exps,
                    };
                    scale_rows(&mut d_out_scaled, &d_out[at..], dim, s.head_dim, inv_sum);
                    head_matmul(
                        (&mut dv[cols..], dim),
                        (kept, 1, len),
                        (&d_out_scaled, s.head_dim),
                        [len, s.head_dim, len],
                        RowScale::All(1.0),
                    );
                    // dP = dropout'(d_out · vᵀ), then through the softmax row by row.
                    head_scores(
                        (grad, len),
                        (&d_out[at..], dim),
                        (&v[at..], dim),
                        [len, len, s.head_dim],
                        1.0,
                        None,
                    );
                    if let Some(d) = setup.dropout {
                        dropout::apply_in_place(grad, d.key, d.prob, setup.first_score(b, h));
                    }
                    for ((g, e), &inv) in grad.chunks_mut(len).zip(exps.chunks(len)).zip(inv_sum) {
                        softmax_grad_in_place(g, e, inv);
                    }
                    // A masked score is a constant: no gradient reaches q or k through it.
                    if let Some(pad) = setup.key_pad {
                        zero_masked(grad, &pad[b * len..(b + 1) * len]);
                    }
                    // dq = dS · k / √d, dk = dSᵀ · q / √d
                    head_matmul(
                        (&mut dq[cols..], dim),
                        (grad, len, 1),
                        (&k[at..], dim),
                        [len, s.head_dim, len],
                        RowScale::All(scale),
                    );
                    head_matmul(
                        (&mut dk[cols..], dim),
                        (grad, 1, len),
                        (&q[at..], dim),
                        [len, s.head_dim, len],
                        RowScale::All(scale),
                    );
                }
            });
        });
    // SAFETY: each sequence's heads wrote all `dim` columns of its `len` rows of the three
    // (`head_matmul` writes its whole block).
    unsafe {
        dq.set_len(n);
        dk.set_len(n);
        dv.set_len(n);
    }
    (dq, dk, dv)
}

with_avx2! {
    fn zero_masked(grad: &mut [f32], pad: &[bool]) {
        for row in grad.chunks_mut(pad.len()) {
            for (g, &p) in row.iter_mut().zip(pad) {
                if p {
                    *g = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.613 + seed).sin() * 1.7)
            .collect()
    }

    const SHAPE: AttentionShape = AttentionShape {
        batch: 2,
        len: 5,
        heads: 3,
        head_dim: 4,
    };

    /// The definition written out in f64, head by head, for one sequence element.
    fn reference(q: &[f32], k: &[f32], v: &[f32], pad: &[bool]) -> Vec<f64> {
        let s = SHAPE;
        let dim = s.dim();
        let mut out = vec![0.0f64; q.len()];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.len {
                    let at = |t: &[f32], row: usize, d: usize| {
                        t[b * s.len * dim + row * dim + h * s.head_dim + d] as f64
                    };
                    let scores: Vec<f64> = (0..s.len)
                        .map(|j| {
                            if pad[b * s.len + j] {
                                MASKED_SCORE as f64
                            } else {
                                (0..s.head_dim)
                                    .map(|d| at(q, i, d) * at(k, j, d))
                                    .sum::<f64>()
                                    / (s.head_dim as f64).sqrt()
                            }
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for d in 0..s.head_dim {
                        out[b * s.len * dim + i * dim + h * s.head_dim + d] =
                            (0..s.len).map(|j| e[j] / total * at(v, j, d)).sum();
                    }
                }
            }
        }
        out
    }

    fn pad() -> Vec<bool> {
        // The second sequence's last two tokens are padding.
        (0..SHAPE.batch * SHAPE.len)
            .map(|i| i >= 2 * SHAPE.len - 2)
            .collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        let n = SHAPE.batch * SHAPE.len * SHAPE.dim();
        let (q, k, v) = (data(n, 0.1), data(n, 0.2), data(n, 0.3));
        let pad = pad();
        let setup = AttentionSetup {
            shape: SHAPE,
            key_pad: Some(&pad),
            dropout: None,
        };
        let (out, _) = forward(&q, &k, &v, setup);
        for (i, (a, b)) in out.iter().zip(reference(&q, &k, &v, &pad)).enumerate() {
            assert!((*a as f64 - b).abs() < 1e-5, "out[{i}]: {a} vs {b}");
        }
    }

    /// Gradients against central differences of `Σ w ⊙ out`, with padding and dropout.
    #[test]
    fn gradients_match_finite_differences() {
        let n = SHAPE.batch * SHAPE.len * SHAPE.dim();
        let (q, k, v, w) = (data(n, 0.4), data(n, 0.5), data(n, 0.6), data(n, 0.7));
        let pad = pad();
        for dropout in [
            None,
            Some(ProbDropout {
                key: 99,
                prob: 0.3,
                first: 0,
            }),
        ] {
            let setup = AttentionSetup {
                shape: SHAPE,
                key_pad: Some(&pad),
                dropout,
            };
            let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
                let (out, _) = forward(q, k, v, setup);
                out.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum()
            };
            let (_, stats) = forward(&q, &k, &v, setup);
            let grads = backward(&q, &k, &v, &stats, &w, setup);
            let inputs = [&q, &k, &v];
            for (which, grad) in [grads.0, grads.1, grads.2].iter().enumerate() {
                for j in (0..n).step_by(7) {
                    let h = 1e-2f32;
                    let shifted = |delta: f32| {
                        let mut t: [Vec<f32>; 3] = inputs.map(|t| t.to_vec());
                        t[which][j] += delta;
                        loss(&t[0], &t[1], &t[2])
                    };
                    let fd = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
                    assert!(
                        (fd - grad[j] as f64).abs() < 2e-3,
                        "input {which}, element {j}, dropout {dropout:?}: {fd} vs {}",
                        grad[j]
                    );
                }
            }
        }
    }

    /// Each sequence run alone, its dropout's first index where its scores begin in the
    /// batch, gives the batch's output (what ranks holding shares of a batch do under MPI).
    #[test]
    fn a_sequence_alone_from_its_first_score_drops_as_in_the_batch() {
        let n = SHAPE.batch * SHAPE.len * SHAPE.dim();
        let (q, k, v) = (data(n, 0.3), data(n, 0.2), data(n, 0.1));
        let pad = pad();
        let dropout = |first| ProbDropout {
            key: 1234,
            prob: 0.4,
            first,
        };
        let batch = AttentionSetup {
            shape: SHAPE,
            key_pad: Some(&pad),
            dropout: Some(dropout(0)),
        };
        let (whole, _) = forward(&q, &k, &v, batch);
        let (rows, scores) = (SHAPE.len * SHAPE.dim(), SHAPE.heads * SHAPE.len * SHAPE.len);
        let one = AttentionShape { batch: 1, ..SHAPE };
        for b in 0..SHAPE.batch {
            let part = |t: &[f32]| t[b * rows..(b + 1) * rows].to_vec();
            let alone = |first| AttentionSetup {
                shape: one,
                key_pad: Some(&pad[b * SHAPE.len..(b + 1) * SHAPE.len]),
                dropout: Some(dropout(first)),
            };
            let (out, _) = forward(&part(&q), &part(&k), &part(&v), alone((b * scores) as u32));
            assert_eq!(out, whole[b * rows..(b + 1) * rows], "sequence {b}");
            if b > 0 {
                let (from_zero, _) = forward(&part(&q), &part(&k), &part(&v), alone(0));
                assert_ne!(from_zero, out, "sequence {b} drawn from index 0");
            }
        }
    }

    /// Padded keys take no gradient and change nothing for the real tokens.
    #[test]
    fn padded_keys_are_invisible() {
        let n = SHAPE.batch * SHAPE.len * SHAPE.dim();
        let (q, k, v) = (data(n, 0.8), data(n, 0.9), data(n, 1.0));
        let pad = pad();
        let setup = AttentionSetup {
            shape: SHAPE,
            key_pad: Some(&pad),
            dropout: None,
        };
        let (out, stats) = forward(&q, &k, &v, setup);
        let mut k2 = k.clone();
        let mut v2 = v.clone();
        let dim = SHAPE.dim();
        for (i, _) in pad.iter().enumerate().filter(|(_, p)| **p) {
            for d in 0..dim {
                k2[i * dim + d] += 5.0;
                v2[i * dim + d] -= 3.0;
            }
        }
        assert_eq!(forward(&q, &k2, &v2, setup).0, out);
        let (_, dk, dv) = backward(&q, &k, &v, &stats, &data(n, 1.1), setup);
        for (i, _) in pad.iter().enumerate().filter(|(_, p)| **p) {
            assert!(dk[i * dim..(i + 1) * dim].iter().all(|&g| g == 0.0));
            assert!(dv[i * dim..(i + 1) * dim].iter().all(|&g| g == 0.0));
        }
    }
}
