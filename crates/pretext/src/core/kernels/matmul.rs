//! The one matrix product the kernels call: `gemm` on plain `f32` slices, with strides so
//! transposed operands are read in place.

use std::mem::MaybeUninit;

use gemm::Parallelism;

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]`; `dst` row-major and contiguous, `lhs` and `rhs`
/// given as (data, row stride, column stride) so transposes cost nothing.
pub fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    [m, n, k]: [usize; 3],
    parallelism: Parallelism,
) {
    matmul_scaled((dst, n), accumulate, lhs, rhs, [m, n, k], 1.0, parallelism);
}

/// `dst[m × n] (+)= scale · lhs[m × k] · rhs[k × n]` with `dst` given as (data, row stride):
/// a block of columns of a wider matrix (one attention head's slice of `[len, dim]`) is written
/// in place.
pub fn matmul_scaled(
    (dst, dst_rs): (&mut [f32], usize),
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    [m, n, k]: [usize; 3],
    scale: f32,
    parallelism: Parallelism,
) {
    if k == 0 {
        extent((dst.len(), dst_rs, 1), m, n);
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: `dst` is an exclusively borrowed, initialised slice of `dst.len()` floats.
    unsafe {
        product(
            (dst.as_mut_ptr(), dst.len(), dst_rs),
            accumulate,
            lhs,
            rhs,
            [m, n, k],
            scale,
            parallelism,
        )
    };
}

/// `dst[m × n] = scale · lhs[m × k] · rhs[k × n]` into a block of columns of a destination
/// that may be uninitialised (a fresh output, not zeroed first): every element of the block
/// is written, none read, the rest of `dst` left alone.
pub fn matmul_scaled_into(
    (dst, dst_rs): (&mut [MaybeUninit<f32>], usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    [m, n, k]: [usize; 3],
    scale: f32,
    parallelism: Parallelism,
) {
    extent((dst.len(), dst_rs, 1), m, n);
    if k == 0 {
        for row in 0..m {
            dst[row * dst_rs..row * dst_rs + n].fill(MaybeUninit::new(0.0));
        }
        return;
    }
    // SAFETY: `dst` is an exclusively borrowed slice of `dst.len()` floats, which `gemm`
    // writes without reading (not accumulating).
    unsafe {
        product(
            (dst.as_mut_ptr().cast::<f32>(), dst.len(), dst_rs),
            false,
            lhs,
            rhs,
            [m, n, k],
            scale,
            parallelism,
        )
    };
}

/// `lhs[m × k] · rhs[k × n]` as a new row-major `[m × n]`, written without being zeroed first:
/// the product overwrites every element, and zeroing was a pass over fresh memory of its own.
pub fn matmul_new(
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    [m, n, k]: [usize; 3],
    parallelism: Parallelism,
) -> Vec<f32> {
    if k == 0 || m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds `m · n` floats, which the product (k > 0, not accumulating:
    // `gemm` does not read the destination) writes, every one, before `set_len` exposes them.
    unsafe {
        product(
            (dst.as_mut_ptr(), m * n, n),
            false,
            lhs,
            rhs,
            [m, n, k],
            1.0,
            parallelism,
        );
        dst.set_len(m * n);
    }
    dst
}

/// Panics unless every index of a `rows × cols` matrix at (row stride, column stride) lies
/// in `len` elements.
fn extent((len, rs, cs): (usize, usize, usize), rows: usize, cols: usize) {
    assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len);
}

/// The product on a destination given as (pointer, length, row stride).
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` floats (and reads, when accumulating), and
/// must not overlap `lhs` or `rhs`.
unsafe fn product(
    (dst, dst_len, dst_rs): (*mut f32, usize, usize),
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    [m, n, k]: [usize; 3],
    scale: f32,
    parallelism: Parallelism,
) {
    extent((dst_len, dst_rs, 1), m, n);
    extent((lhs.0.len(), lhs.1, lhs.2), m, k);
    extent((rhs.0.len(), rhs.1, rhs.2), k, n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index the product touches inside the three
    // buffers; the caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dst (+)= scale · lhs · rhs` in f64, one element at a time.
    fn reference(
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        lhs: (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
        [m, n, k]: [usize; 3],
        scale: f32,
    ) {
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k)
                    .map(|p| {
                        lhs.0[i * lhs.1 + p * lhs.2] as f64 * rhs.0[p * rhs.1 + j * rhs.2] as f64
                    })
                    .sum();
                let d = &mut dst[i * dst_rs + j];
                let value = scale as f64 * sum;
                *d = if accumulate {
                    *d + value as f32
                } else {
                    value as f32
                };
            }
        }
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000)
            .map(|v| v as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Narrow and wide destinations written into a block of columns of a wider matrix, with a
    /// transposed operand, overwritten and accumulated.
    #[test]
    fn products_match_a_reference_for_narrow_and_wide_destinations() {
        for [m, n, k] in [
            [321, 16, 321],
            [200, 7, 40],
            [70, 31, 33],
            [321, 64, 16],
            [5, 3, 2],
        ] {
            let dst_rs = n + 5;
            let lhs = values(m * k, 1);
            let rhs = values(k * n, 2);
            for accumulate in [false, true] {
                // lhs row-major; rhs read transposed from a column-major store.
                let lhs_op = (&lhs[..], k, 1);
                let rhs_op = (&rhs[..], 1, k);
                let mut got = values(m * dst_rs, 3);
                let mut want = got.clone();
                matmul_scaled(
                    (&mut got, dst_rs),
                    accumulate,
                    lhs_op,
                    rhs_op,
                    [m, n, k],
                    0.25,
                    Parallelism::None,
                );
                reference(
                    &mut want,
                    dst_rs,
                    accumulate,
                    lhs_op,
                    rhs_op,
                    [m, n, k],
                    0.25,
                );
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{m}x{n}x{k}, accumulate {accumulate}: element {i} is {g}, want {w}"
                    );
                }
            }
        }
    }
}
