//! The one matrix product the kernels call: `gemm` on plain `f32` slices, with strides so
//! transposed operands are read in place.

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
    let extent = |(len, rs, cs): (usize, usize, usize), rows: usize, cols: usize| {
        assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len);
    };
    extent((dst.len(), dst_rs, 1), m, n);
    extent((lhs.0.len(), lhs.1, lhs.2), m, k);
    extent((rhs.0.len(), rhs.1, rhs.2), k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every index the product touches inside the three slices;
    // `dst` is exclusively borrowed and does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
