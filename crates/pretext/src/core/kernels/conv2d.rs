//! 2-D convolution on plain `f32` slices in NCHW, as one matrix product per image.
//!
//! Why not burn-flex's own: its forward copies every input to NHWC and repacks the weights on
//! each call, its input gradient is a transposed convolution with the same copies, and its
//! weight gradient is a convolution whose "kernel" is the whole output gradient (one small
//! product per input channel over a large unfolded input). Here every direction is one
//! `gemm` product per image on an unfolded patch matrix (im2col), in the layout the tensors
//! already have:
//!
//! - forward: `y_n[C_out, P] = W[C_out, K] · col(x_n)[K, P]`
//! - input gradient: `dx_n = col⁻¹(Wᵀ[K, C_out] · dy_n[C_out, P])` (the scatter-add adjoint)
//! - weight gradient: `dW[C_out, K] = Σ_n dy_n[C_out, P] · col(x_n)ᵀ[P, K]`
//!
//! with `K = C_in·kh·kw` and `P = H_out·W_out`. Images go in chunks (fixed by the shape) whose patch
//! matrices sit side by side, so one product covers a chunk (large enough to run near the
//! machine's peak even at 4x4 positions); chunks run in parallel, each product on one thread.
//! The weight gradient is summed per chunk, then over chunks in chunk order, so the result
//! does not depend on the number of threads or on scheduling (same seed, same numbers).

use gemm::Parallelism;
use rayon::prelude::*;

use super::matmul::matmul;

/// Columns a chunk's patch matrix aims at: enough for one product to run near peak...
const CHUNK_COLUMNS: usize = 512;
/// ...and at most this many patch-matrix entries (4 MiB of f32), to bound the scratch memory.
const CHUNK_ENTRIES: usize = 1 << 20;
/// Images per task of the backward pass (rounded up to whole chunks). Fixed, like the chunks,
/// so the weight gradient is summed in the same order on every machine and thread count.
const IMAGES_PER_GROUP: usize = 16;

/// The shapes and options of one convolution: input `[batch, in_channels, height, width]`,
/// weight `[out_channels, in_channels, kernel[0], kernel[1]]`, no groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// `(begin, end)` zero padding per spatial dimension.
    pub padding: [(usize, usize); 2],
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Output height and width.
    pub fn out_size(&self) -> [usize; 2] {
        let side = |len: usize, d: usize| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            let padded = len + self.padding[d].0 + self.padding[d].1;
            if padded < span {
                0
            } else {
                (padded - span) / self.stride[d] + 1
            }
        };
        [side(self.height, 0), side(self.width, 1)]
    }

    /// Rows of the patch matrix: `C_in·kh·kw`.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Columns of the patch matrix: output positions per image.
    fn positions(&self) -> usize {
        let [h, w] = self.out_size();
        h * w
    }

    fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// Images per chunk: from the geometry alone (never the thread count), so the weight
    /// gradient's summation order, and with it every number, is the same on every run.
    fn images_per_chunk(&self) -> usize {
        let columns = (CHUNK_ENTRIES / self.patch_len().max(1)).clamp(64, CHUNK_COLUMNS);
        columns.div_ceil(self.positions().max(1)).clamp(1, 16)
    }

    fn parallelism(&self) -> Parallelism {
        // Few images: parallelise inside each product instead of across images.
        if self.batch >= 2 * rayon::current_num_threads() {
            Parallelism::None
        } else {
            Parallelism::Rayon(rayon::current_num_threads())
        }
    }
}

/// `y = conv(x, w)`, NCHW, length `batch · out_channels · H_out · W_out`.
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    assert_eq!(x.len(), g.batch * g.image_len(), "conv2d: input length");
    assert_eq!(
        w.len(),
        g.out_channels * g.patch_len(),
        "conv2d: weight length"
    );
    let (k, p, c_out) = (g.patch_len(), g.positions(), g.out_channels);
    let mut y = vec![0.0f32; g.batch * c_out * p];
    if y.is_empty() {
        return y;
    }
    let par = g.parallelism();
    y.par_chunks_mut(g.images_per_chunk() * c_out * p)
        .zip(x.par_chunks(g.images_per_chunk() * g.image_len()))
        .for_each(|(y_chunk, x_chunk)| {
            let images = x_chunk.len() / g.image_len();
            let cols = images * p;
            let col = unfold_chunk(x_chunk, g, images);
            // out[C_out × B·P] = W[C_out × K] · col[K × B·P], then back to NCHW.
            let mut out = vec![0.0f32; c_out * cols];
            matmul(
                &mut out,
                false,
                (w, k, 1),
                (&col, cols, 1),
                [c_out, cols, k],
                par,
            );
            for (b, y_n) in y_chunk.chunks_mut(c_out * p).enumerate() {
                for (co, y_row) in y_n.chunks_mut(p).enumerate() {
                    y_row.copy_from_slice(&out[co * cols + b * p..][..p]);
                }
            }
        });
    y
}

/// The patch matrices of `images` consecutive images side by side: `[K, images · P]`, image
/// `b`'s columns at `b·P..(b+1)·P`. One product then covers them all, which keeps the
/// products large when an image has few output positions (7x7, 4x4).
fn unfold_chunk(x_chunk: &[f32], g: &ConvGeometry, images: usize) -> Vec<f32> {
    let cols = images * g.positions();
    let mut col = vec![0.0f32; g.patch_len() * cols];
    for (b, x_n) in x_chunk.chunks(g.image_len()).enumerate() {
        im2col(x_n, g, &mut col[b * g.positions()..], cols);
    }
    col
}

/// Gradients of `sum(y · dy)` with respect to the input and the weight, each only when asked.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    want_input: bool,
    want_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p, c_out) = (g.patch_len(), g.positions(), g.out_channels);
    assert_eq!(
        x.len(),
        g.batch * g.image_len(),
        "conv2d backward: input length"
    );
    assert_eq!(w.len(), c_out * k, "conv2d backward: weight length");
    assert_eq!(
        dy.len(),
        g.batch * c_out * p,
        "conv2d backward: output gradient length"
    );
    let par = g.parallelism();
    // A task takes a group of whole chunks and keeps one weight-gradient sum for all of them:
    // a partial per chunk would cost a weight-sized buffer per chunk (75 MB at ResNet's 8x8).
    let chunk = g.images_per_chunk();
    let group = chunk * IMAGES_PER_GROUP.div_ceil(chunk);
    let groups = g.batch.div_ceil(group);
    let mut dx = want_input.then(|| vec![0.0f32; x.len()]);
    let dx_groups: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) if !dx.is_empty() => dx.chunks_mut(group * g.image_len()).map(Some).collect(),
        _ => (0..groups).map(|_| None).collect(),
    };
    let partials: Vec<Option<Vec<f32>>> = dx_groups
        .into_par_iter()
        .enumerate()
        .map(|(index, mut dx_group)| {
            let mut dw = want_weight.then(|| vec![0.0f32; c_out * k]);
            let start = index * group;
            let end = (start + group).min(g.batch);
            for first in (start..end).step_by(chunk) {
                let images = (end - first).min(chunk);
                let cols = images * p;
                // dy of the chunk as one [C_out × B·P] matrix, image b's columns at b·P.
                let mut dy_chunk = vec![0.0f32; c_out * cols];
                for b in 0..images {
                    let dy_n = &dy[(first + b) * c_out * p..][..c_out * p];
                    for (co, row) in dy_n.chunks(p).enumerate() {
                        dy_chunk[co * cols + b * p..][..p].copy_from_slice(row);
                    }
                }
                if let Some(dw) = dw.as_mut() {
                    let x_chunk = &x[first * g.image_len()..(first + images) * g.image_len()];
                    let col = unfold_chunk(x_chunk, g, images);
                    // dW[C_out × K] += dy_chunk[C_out × B·P] · colᵀ[B·P × K]
                    let lhs = (&dy_chunk[..], cols, 1);
                    matmul(
                        dw,
                        first > start,
                        lhs,
                        (&col, 1, cols),
                        [c_out, k, cols],
                        par,
                    );
                }
                if let Some(dx_group) = dx_group.as_mut() {
                    // dcol[K × B·P] = Wᵀ[K × C_out] · dy_chunk[C_out × B·P], folded back.
                    let mut dcol = vec![0.0f32; k * cols];
                    let rhs = (&dy_chunk[..], cols, 1);
                    matmul(&mut dcol, false, (w, 1, k), rhs, [k, cols, c_out], par);
                    let dx_chunk = &mut dx_group[(first - start) * g.image_len()..];
                    for (b, dx_n) in dx_chunk.chunks_mut(g.image_len()).take(images).enumerate() {
                        col2im_add(&dcol[b * p..], cols, g, dx_n);
                    }
                }
            }
            dw
        })
        .collect();
    let dw = want_weight.then(|| {
        let mut total = vec![0.0f32; c_out * k];
        for partial in partials.into_iter().flatten() {
            total.iter_mut().zip(&partial).for_each(|(t, v)| *t += v);
        }
        total
    });
    (dx, dw)
}

/// The output columns `ox` whose input column `ox·stride + offset - pad` lies inside `0..len`,
/// as a half-open range.
fn valid_range(
    out_len: usize,
    len: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    // ox·stride + offset >= pad  ⇔  ox >= ceil((pad - offset) / stride)
    let lo = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    // ox·stride + offset - pad <= len - 1  ⇔  ox <= (len - 1 + pad - offset) / stride
    let hi = if len + pad <= offset {
        0
    } else {
        (len - 1 + pad - offset) / stride + 1
    };
    (lo.min(out_len), hi.min(out_len).max(lo.min(out_len)))
}

/// Unfold one image `[C_in, H, W]` into the patch matrix `[C_in·kh·kw, H_out·W_out]`, whose
/// row `r` starts at `col[r · ld]`.
fn im2col(x_n: &[f32], g: &ConvGeometry, col: &mut [f32], ld: usize) {
    let [oh, ow] = g.out_size();
    let [(pt, _), (pl, _)] = g.padding;
    let mut row = 0;
    for ci in 0..g.in_channels {
        let plane = &x_n[ci * g.height * g.width..][..g.height * g.width];
        for ki in 0..g.kernel[0] {
            for kj in 0..g.kernel[1] {
                let dst = &mut col[row * ld..][..oh * ow];
                let (y_lo, y_hi) = valid_range(oh, g.height, g.stride[0], ki * g.dilation[0], pt);
                let (x_lo, x_hi) = valid_range(ow, g.width, g.stride[1], kj * g.dilation[1], pl);
                dst[..y_lo * ow].fill(0.0);
                dst[y_hi * ow..].fill(0.0);
                for oy in y_lo..y_hi {
                    let iy = oy * g.stride[0] + ki * g.dilation[0] - pt;
                    let src = &plane[iy * g.width..][..g.width];
                    let out = &mut dst[oy * ow..][..ow];
                    out[..x_lo].fill(0.0);
                    out[x_hi..].fill(0.0);
                    let ix0 = x_lo * g.stride[1] + kj * g.dilation[1] - pl;
                    if g.stride[1] == 1 {
                        out[x_lo..x_hi].copy_from_slice(&src[ix0..ix0 + (x_hi - x_lo)]);
                    } else {
                        for (o, ox) in out[x_lo..x_hi].iter_mut().zip(0..) {
                            *o = src[ix0 + ox * g.stride[1]];
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// The adjoint of [`im2col`]: add every patch-matrix entry (row `r` at `col[r · ld]`) back onto
/// the pixel it came from.
fn col2im_add(col: &[f32], ld: usize, g: &ConvGeometry, dx_n: &mut [f32]) {
    let [oh, ow] = g.out_size();
    let [(pt, _), (pl, _)] = g.padding;
    let mut row = 0;
    for ci in 0..g.in_channels {
        let plane = &mut dx_n[ci * g.height * g.width..][..g.height * g.width];
        for ki in 0..g.kernel[0] {
            for kj in 0..g.kernel[1] {
                let src = &col[row * ld..][..oh * ow];
                let (y_lo, y_hi) = valid_range(oh, g.height, g.stride[0], ki * g.dilation[0], pt);
                let (x_lo, x_hi) = valid_range(ow, g.width, g.stride[1], kj * g.dilation[1], pl);
                for oy in y_lo..y_hi {
                    let iy = oy * g.stride[0] + ki * g.dilation[0] - pt;
                    let dst = &mut plane[iy * g.width..][..g.width];
                    let from = &src[oy * ow + x_lo..oy * ow + x_hi];
                    let ix0 = x_lo * g.stride[1] + kj * g.dilation[1] - pl;
                    if g.stride[1] == 1 {
                        dst[ix0..ix0 + from.len()]
                            .iter_mut()
                            .zip(from)
                            .for_each(|(d, v)| *d += v);
                    } else {
                        for (i, v) in from.iter().enumerate() {
                            dst[ix0 + i * g.stride[1]] += v;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive_forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [oh, ow] = g.out_size();
        let mut y = vec![0.0; g.batch * g.out_channels * oh * ow];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..g.in_channels {
                            for ki in 0..g.kernel[0] {
                                for kj in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ki * g.dilation[0]) as isize
                                        - g.padding[0].0 as isize;
                                    let ix = (ox * g.stride[1] + kj * g.dilation[1]) as isize
                                        - g.padding[1].0 as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.height as isize
                                        || ix >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * g.in_channels + ci) * g.height + iy as usize)
                                        * g.width
                                        + ix as usize;
                                    let wi = ((co * g.in_channels + ci) * g.kernel[0] + ki)
                                        * g.kernel[1]
                                        + kj;
                                    acc += x[xi] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        y[((n * g.out_channels + co) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic, no dependence on rand's stream.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub(crate) fn geometries() -> Vec<ConvGeometry> {
        let g = |batch, cin, h, w, cout, k: [usize; 2], s, p, d| ConvGeometry {
            batch,
            in_channels: cin,
            height: h,
            width: w,
            out_channels: cout,
            kernel: k,
            stride: s,
            padding: p,
            dilation: d,
        };
        vec![
            g(2, 3, 7, 9, 4, [3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            g(1, 2, 5, 5, 3, [3, 3], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            g(3, 2, 8, 7, 5, [3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
            g(2, 4, 6, 6, 3, [1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            g(2, 4, 7, 6, 3, [1, 1], [2, 2], [(0, 0), (0, 0)], [1, 1]),
            g(1, 1, 9, 8, 2, [2, 4], [1, 2], [(0, 1), (2, 1)], [1, 1]),
            g(2, 2, 9, 9, 2, [3, 3], [1, 1], [(2, 2), (2, 2)], [2, 2]),
            g(1, 3, 11, 10, 4, [7, 7], [2, 2], [(3, 3), (3, 3)], [1, 1]),
            g(17, 3, 5, 4, 2, [3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        for (i, g) in geometries().iter().enumerate() {
            let x = values(g.batch * g.image_len(), i as u64);
            let w = values(g.out_channels * g.patch_len(), 100 + i as u64);
            let fast = forward(&x, &w, g);
            let slow = naive_forward(&x, &w, g);
            assert_eq!(fast.len(), slow.len(), "{g:?}");
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The loss `sum(y · r)` is linear in `x` and in `w`, so a finite difference is exact up to
    /// rounding: each gradient entry is checked against it.
    #[test]
    fn gradients_match_finite_differences() {
        for (i, g) in geometries().iter().enumerate() {
            let x = values(g.batch * g.image_len(), i as u64);
            let w = values(g.out_channels * g.patch_len(), 100 + i as u64);
            let r = values(g.batch * g.out_channels * g.positions(), 200 + i as u64);
            let loss = |x: &[f32], w: &[f32]| -> f64 {
                naive_forward(x, w, g)
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum()
            };
            let (dx, dw) = backward(&x, &w, &r, g, true, true);
            let (dx, dw) = (dx.unwrap(), dw.unwrap());
            let eps = 0.5f32;
            for j in (0..x.len()).step_by(7) {
                let (mut hi, mut lo) = (x.clone(), x.clone());
                hi[j] += eps;
                lo[j] -= eps;
                let fd = (loss(&hi, &w) - loss(&lo, &w)) / (2.0 * eps as f64);
                assert!(
                    (fd - dx[j] as f64).abs() < 1e-3,
                    "{g:?} dx[{j}]: {fd} vs {}",
                    dx[j]
                );
            }
            for j in (0..w.len()).step_by(5) {
                let (mut hi, mut lo) = (w.clone(), w.clone());
                hi[j] += eps;
                lo[j] -= eps;
                let fd = (loss(&x, &hi) - loss(&x, &lo)) / (2.0 * eps as f64);
                assert!(
                    (fd - dw[j] as f64).abs() < 1e-3,
                    "{g:?} dw[{j}]: {fd} vs {}",
                    dw[j]
                );
            }
            // Asking for one gradient gives the same numbers as asking for both.
            let (only_dx, none) = backward(&x, &w, &r, g, true, false);
            assert!(none.is_none());
            assert_eq!(only_dx.unwrap(), dx);
            let (none, only_dw) = backward(&x, &w, &r, g, false, true);
            assert!(none.is_none());
            assert_eq!(only_dw.unwrap(), dw);
        }
    }

    #[test]
    fn weight_gradient_does_not_depend_on_the_thread_count() {
        let g = &geometries()[8];
        let x = values(g.batch * g.image_len(), 1);
        let w = values(g.out_channels * g.patch_len(), 2);
        let r = values(g.batch * g.out_channels * g.positions(), 3);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| backward(&x, &w, &r, g, true, true))
        };
        assert_eq!(run(1), run(3));
    }
}
