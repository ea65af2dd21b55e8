//! Matrix multiplication: the one place adgraph calls its sgemm, so the
//! implementation can be swapped and benchmarked alone.
//!
//! Today this is `matrixmultiply`'s blocked sgemm (AVX2/FMA kernels picked at run
//! time) through ndarray, with its own threading over the machine's cores.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// `c = alpha * a · b + beta * c`. Any strides (transposed views are free).
///
/// **Panics** if the shapes do not agree (`a: [m,k]`, `b: [k,n]`, `c: [m,n]`);
/// callers check shapes first and report errors.
pub fn sgemm(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    c: &mut ArrayViewMut2<f32>,
) {
    general_mat_mul(alpha, &a, &b, beta, c);
}

/// `a · b` into a new matrix.
///
/// **Panics** if the inner dimensions differ; callers check shapes first.
pub fn matmul(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
    c
}
