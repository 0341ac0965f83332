//! 2-D max pooling on NCHW `f32` slices, remembering where each maximum came from so the
//! backward pass is one scatter.
//!
//! Why: burn-flex 0.22's max pool measured 85 ms for a 2x2 pool over 512x32x28x28, four times
//! the small CNN's first convolution; this one reads each input once per window.

use rayon::prelude::*;

/// Input `[batch·channels planes, height, width]`, window, stride and `(begin, end)` padding
/// (padded cells never win). No dilation, floor rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [(usize, usize); 2],
}

impl PoolGeometry {
    pub fn out_size(&self) -> [usize; 2] {
        let side = |len: usize, d: usize| {
            let padded = len + self.padding[d].0 + self.padding[d].1;
            if padded < self.kernel[d] {
                0
            } else {
                (padded - self.kernel[d]) / self.stride[d] + 1
            }
        };
        [side(self.height, 0), side(self.width, 1)]
    }
}

/// The pooled planes and, per output, the index of its maximum within its input plane (the
/// first one on ties, as burn; `u32::MAX` for a window that lies wholly in the padding).
pub fn forward(x: &[f32], g: &PoolGeometry) -> (Vec<f32>, Vec<u32>) {
    let plane = g.height * g.width;
    assert_eq!(x.len(), g.planes * plane, "max_pool2d: input length");
    let [oh, ow] = g.out_size();
    let out_plane = oh * ow;
    let mut y = vec![0.0f32; g.planes * out_plane];
    let mut arg = vec![0u32; g.planes * out_plane];
    if out_plane == 0 || plane == 0 {
        return (y, arg);
    }
    y.par_chunks_mut(out_plane)
        .zip(arg.par_chunks_mut(out_plane))
        .zip(x.par_chunks(plane))
        .for_each(|((y_p, arg_p), x_p)| pool_plane(x_p, g, y_p, arg_p));
    (y, arg)
}

/// One plane. Windows wholly inside the image (all of them without padding) take the tight
/// loop; windows that reach into the padding clip their rows and columns.
fn pool_plane(x_p: &[f32], g: &PoolGeometry, y_p: &mut [f32], arg_p: &mut [u32]) {
    let [oh, ow] = g.out_size();
    if g.kernel == [2, 2] && g.stride == [2, 2] && g.padding == [(0, 0), (0, 0)] {
        return pool_plane_2x2(x_p, g.width, [oh, ow], y_p, arg_p);
    }
    let [(pt, _), (pl, _)] = g.padding;
    let [kh, kw] = g.kernel;
    for oy in 0..oh {
        let top = (oy * g.stride[0]) as isize - pt as isize;
        let rows = top.max(0) as usize..((top + kh as isize).max(0) as usize).min(g.height);
        let inside_rows = top >= 0 && top as usize + kh <= g.height;
        for ox in 0..ow {
            let left = (ox * g.stride[1]) as isize - pl as isize;
            let (best, at) = if inside_rows && left >= 0 && left as usize + kw <= g.width {
                let (top, left) = (top as usize, left as usize);
                let mut at = top * g.width + left;
                let mut best = x_p[at];
                for iy in top..top + kh {
                    let row = &x_p[iy * g.width + left..][..kw];
                    for (j, &v) in row.iter().enumerate() {
                        // `>` keeps the first maximum; a NaN wins so it propagates. Written
                        // as selects, not branches: the comparison is a coin flip on real
                        // activations and a mispredicted branch per element cost 3x.
                        let take = (v > best) | v.is_nan();
                        best = if take { v } else { best };
                        at = if take { iy * g.width + left + j } else { at };
                    }
                }
                (best, at as u32)
            } else {
                let cols =
                    left.max(0) as usize..((left + kw as isize).max(0) as usize).min(g.width);
                let (mut best, mut at) = (f32::NEG_INFINITY, u32::MAX);
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let v = x_p[iy * g.width + ix];
                        if at == u32::MAX || v > best || v.is_nan() {
                            best = v;
                            at = (iy * g.width + ix) as u32;
                        }
                    }
                }
                (best, at)
            };
            y_p[oy * ow + ox] = best;
            arg_p[oy * ow + ox] = at;
        }
    }
}

/// The small CNN's 2x2 pool with stride 2: two input rows per output row, four candidates.
fn pool_plane_2x2(
    x_p: &[f32],
    width: usize,
    [oh, ow]: [usize; 2],
    y_p: &mut [f32],
    arg_p: &mut [u32],
) {
    for oy in 0..oh {
        let (top, bottom) = (
            &x_p[2 * oy * width..][..2 * ow],
            &x_p[(2 * oy + 1) * width..][..2 * ow],
        );
        let (y_row, arg_row) = (&mut y_p[oy * ow..][..ow], &mut arg_p[oy * ow..][..ow]);
        for ox in 0..ow {
            let base = (2 * oy * width + 2 * ox) as u32;
            let candidates = [
                (top[2 * ox], base),
                (top[2 * ox + 1], base + 1),
                (bottom[2 * ox], base + width as u32),
                (bottom[2 * ox + 1], base + width as u32 + 1),
            ];
            let (mut best, mut at) = candidates[0];
            for &(v, i) in &candidates[1..] {
                let take = (v > best) | v.is_nan();
                best = if take { v } else { best };
                at = if take { i } else { at };
            }
            y_row[ox] = best;
            arg_row[ox] = at;
        }
    }
}

/// The input gradient: each output's gradient added onto its maximum's input cell.
pub fn backward(dy: &[f32], arg: &[u32], g: &PoolGeometry) -> Vec<f32> {
    let plane = g.height * g.width;
    let [oh, ow] = g.out_size();
    let out_plane = oh * ow;
    assert_eq!(
        dy.len(),
        g.planes * out_plane,
        "max_pool2d backward: gradient length"
    );
    let mut dx = vec![0.0f32; g.planes * plane];
    if out_plane == 0 || plane == 0 {
        return dx;
    }
    dx.par_chunks_mut(plane)
        .zip(dy.par_chunks(out_plane).zip(arg.par_chunks(out_plane)))
        .for_each(|(dx_p, (dy_p, arg_p))| {
            for (&g, &at) in dy_p.iter().zip(arg_p) {
                if at != u32::MAX {
                    dx_p[at as usize] += g;
                }
            }
        });
    dx
}
