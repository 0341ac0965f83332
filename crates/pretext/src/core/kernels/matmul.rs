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
    let extent = |(data, rs, cs): (&[f32], usize, usize), rows: usize, cols: usize| {
        assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len());
    };
    assert!(dst.len() >= m * n);
    extent(lhs, m, k);
    extent(rhs, k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
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
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
