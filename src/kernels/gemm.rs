//! Matrix multiplication: the one place adgraph calls its sgemm, so the
//! implementation can be swapped and benchmarked alone.
//!
//! This is the `gemm` crate's f32 kernel: it picks AVX-512 (or AVX2/FMA)
//! micro-kernels at run time and splits the work over **rayon's** pool, the one
//! pool every other adgraph kernel uses, so gemm threads and elementwise
//! threads never compete for the cores. It splits only the rows and columns of
//! the result, never the sum over the inner dimension, so a product is bitwise
//! the same whatever the number of threads.

use std::mem::MaybeUninit;

use gemm::{gemm, Parallelism};

#[cfg(target_arch = "x86_64")]
use crate::kernels::small_gemm;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

/// `c = alpha * a · b + beta * c`. Any strides (transposed views are free).
///
/// With `beta == 0`, `c`'s old contents are not read (NaNs in it do not
/// propagate).
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
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "sgemm: shapes [{m}, {k}] x [{k2}, {n}] -> {:?} do not agree",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: only the scaled old contents remain.
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.map_inplace(|v| *v *= beta);
        }
        return;
    }
    let c_s = c.strides();
    let (c_rs, c_cs) = (c_s[0], c_s[1]);
    // SAFETY: `c` is a live view of `[m, n]` elements at these strides, borrowed
    // mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm_raw(
            alpha,
            a,
            b,
            beta,
            (c.as_mut_ptr(), c_rs, c_cs),
            parallelism(m, n, k),
            true,
        )
    }
}

/// `a · b` (`[m, k] x [k, n]`) into a new row-major `Vec` of `m*n` elements,
/// written once by the kernel: no zero fill first, as `vec![0.0; m*n]` followed
/// by [`sgemm`] would do.
///
/// **Panics** if the inner dimensions differ; callers check shapes first.
pub fn matmul_vec(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Vec<f32> {
    let ((m, k), n) = (a.dim(), b.ncols());
    matmul_vec_on(a, b, parallelism(m, n, k))
}

/// [`matmul_vec`] with the threading given.
fn matmul_vec_on(a: ArrayView2<f32>, b: ArrayView2<f32>, threads: Parallelism) -> Vec<f32> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert_eq!(
        k, k2,
        "matmul_vec: shapes [{m}, {k}] x [{k2}, {n}] do not agree"
    );
    let len = m * n;
    if k == 0 || len == 0 {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: `out` has room for `m*n` elements, row-major at strides (n, 1);
    // with `beta == 0` gemm reads none of them and writes every one, so all
    // `len` elements are initialised when `set_len` runs.
    unsafe {
        gemm_raw(
            1.0,
            a,
            b,
            0.0,
            (out.as_mut_ptr(), n as isize, 1),
            threads,
            true,
        );
        out.set_len(len);
    }
    out
}

/// `a · b` (`[m, k] x [k, n]`) into `out` (`m*n` elements, row-major, whose
/// old contents need not be initialised: every element is written), on the
/// calling thread only.
///
/// For one block of a product that the caller already splits over threads
/// (a convolution's images, `crate::kernels::conv_blocks`). Such blocks of a
/// few hundred rows go to the `gemm` crate's cache-blocked kernel, which runs
/// them at the core's peak (measured 198-206 GFLOP/s on one core for W4's
/// blocks, against 175-200 for the small-product kernel); products with few
/// rows (`m < 192`, a kernel gradient's `kh*kw*C` rows for few channels) or
/// under a million multiply-adds go to the small-product kernel, faster there
/// (`[9, 784] x [784, 16]` 2.37 -> 1.41 us, `[144, 392] x [392, 32]` 20.8 ->
/// 17.8 us).
///
/// **Panics** if the shapes do not agree; callers check shapes first.
pub fn matmul_serial_into(a: ArrayView2<f32>, b: ArrayView2<f32>, out: &mut [MaybeUninit<f32>]) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && out.len() == m * n,
        "matmul_serial_into: shapes [{m}, {k}] x [{k2}, {n}] -> {} elements do not agree",
        out.len()
    );
    if out.is_empty() {
        return;
    }
    if k == 0 {
        out.fill(MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: `out` is `m*n` elements, row-major at (n, 1), borrowed mutably
    // so it aliases neither view; with beta 0 the kernels read none of it and
    // write every element.
    unsafe { serial_product(a, b, 0.0, out.as_mut_ptr().cast::<f32>()) }
}

/// `out += a · b` (`[m, k] x [k, n]`, `out` `m*n` elements, row-major), on
/// the calling thread only, with the kernels [`matmul_serial_into`] would
/// choose: one block's share of a sum over blocks.
///
/// **Panics** if the shapes do not agree; callers check shapes first.
pub fn matmul_serial_add(a: ArrayView2<f32>, b: ArrayView2<f32>, out: &mut [f32]) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && out.len() == m * n,
        "matmul_serial_add: shapes [{m}, {k}] x [{k2}, {n}] -> {} elements do not agree",
        out.len()
    );
    if out.is_empty() || k == 0 {
        return;
    }
    // SAFETY: `out` is `m*n` initialised elements, row-major at (n, 1),
    // borrowed mutably so it aliases neither view.
    unsafe { serial_product(a, b, 1.0, out.as_mut_ptr()) }
}

/// `c = a · b + beta * c` on the calling thread, `c` row-major `[m, n]` at
/// (n, 1), by the kernel [`matmul_serial_into`]'s doc describes. `k >= 1`.
///
/// # Safety
/// `c` must be valid for writes of `m*n` elements (and reads, if `beta !=
/// 0`) and overlap neither view.
unsafe fn serial_product(a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, c: *mut f32) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let small = m < 192 || m * n * k < 1 << 20;
    // SAFETY: the caller vouches for `c`, row-major at (n, 1).
    unsafe {
        gemm_raw(
            1.0,
            a,
            b,
            beta,
            (c, n as isize, 1),
            Parallelism::None,
            small,
        )
    }
}

/// `a · b` (`[m, k] x [k, n]`) as the sum of two products over the halves of
/// the inner dimension, each on one thread, the two side by side on rayon's
/// pool; the second is then added into the first.
///
/// For a long inner dimension and a small result (a convolution's kernel
/// gradient: `[kh*kw*Cin, N*OH*OW] x [N*OH*OW, Cout]`) the one-product gemm
/// can split only the small result over threads. Measured on the 2-core
/// machine, one product / two halves: W4's kernel gradients
/// `[9, 39200] x [39200, 16]` 0.24 / 0.14 ms, `[144, 9800] x [9800, 32]` 0.75 /
/// 0.62, `[288, 9800] x [9800, 64]` 2.08 / 1.79, `[576, 2450] x [2450, 128]`
/// 1.70 / 1.47. Products whose inner dimension is not at least twice the
/// longer side of the result (`[1152, 800] x [800, 256]`: no gain), or too
/// small to split at all, go to [`matmul_vec`] whole. The split depends on
/// the shape only, so the result is the same for any number of threads (it
/// differs from [`matmul_vec`]'s in the last bits: another order of
/// summation).
///
/// **Panics** if the inner dimensions differ; callers check shapes first.
pub fn matmul_vec_split_inner(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Vec<f32> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert_eq!(
        k, k2,
        "matmul_vec_split_inner: shapes [{m}, {k}] x [{k2}, {n}] do not agree"
    );
    let long_inner = k >= 2 * m.max(n);
    if !long_inner || matches!(parallelism(m, n, k), Parallelism::None) {
        return matmul_vec(a, b);
    }
    let half = k / 2;
    let (mut first, second) = rayon::join(
        || {
            matmul_vec_on(
                a.slice(s![.., ..half]),
                b.slice(s![..half, ..]),
                Parallelism::None,
            )
        },
        || {
            matmul_vec_on(
                a.slice(s![.., half..]),
                b.slice(s![half.., ..]),
                Parallelism::None,
            )
        },
    );
    first.iter_mut().zip(&second).for_each(|(x, y)| *x += y);
    first
}

/// `c = alpha * a · b + beta * c` for a raw destination `c = (pointer, row
/// stride, column stride)` of `[m, n]` elements, on the threads given; with
/// `beta == 0` it only writes `c`. `k` must be non-zero (the caller handles
/// the empty sum).
///
/// A product on one thread goes to the small-product kernel when
/// `small_on_one_thread` says so and the kernel can take it (AVX-512F, `k` at
/// most [`small_gemm::MAX_INNER`]), otherwise to the `gemm` crate.
///
/// # Safety
/// `c` must be valid for writes (and for reads if `beta != 0`) of every element
/// `c + i*c_rs + j*c_cs`, `i < m`, `j < n`, and overlap neither `a` nor `b`.
unsafe fn gemm_raw(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    (c, c_rs, c_cs): (*mut f32, isize, isize),
    parallelism: Parallelism,
    small_on_one_thread: bool,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    debug_assert!(k > 0 && k == b.nrows());
    let (a_s, b_s) = (a.strides(), b.strides());
    #[cfg(target_arch = "x86_64")]
    if small_on_one_thread
        && matches!(parallelism, Parallelism::None)
        && k <= small_gemm::MAX_INNER
        && small_gemm::available()
    {
        // SAFETY: AVX-512F is present and `k >= 1`; the views and the caller
        // vouch for the rest.
        unsafe {
            small_gemm::gemm(
                (m, n, k),
                alpha,
                (a.as_ptr(), a_s[0], a_s[1]),
                (b.as_ptr(), b_s[0], b_s[1]),
                beta,
                (c, c_rs, c_cs),
            );
        }
        return;
    }
    // SAFETY: `a` and `b` are live views of the shapes given, at their own
    // strides; the caller vouches for `c`. gemm computes
    // `dst = alpha·dst + beta·lhs·rhs` (its alpha scales dst, its beta the product).
    unsafe {
        gemm(
            m,
            n,
            k,
            c,
            c_cs,
            c_rs,
            beta != 0.0,
            a.as_ptr(),
            a_s[1],
            a_s[0],
            b.as_ptr(),
            b_s[1],
            b_s[0],
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Whether a product of `[m, k] x [k, n]` is split over rayon's threads.
///
/// Measured on the 2-core machine (single thread vs two, `gemm` 0.19): below
/// about half a million multiply-adds the hand-off costs more than it saves in
/// a tight loop, and inside a training step, where rayon's workers have gone to
/// sleep between products, waking them costs more: W1-W3 (products of 0.1 to 4
/// million multiply-adds) ran fastest with no split below 4 million. A product
/// with few rows (`m` < 192) and a short inner dimension is up
/// to 2.5x *slower* on two threads (e.g. `[50, 300] x [300, 100]`: 25 us on
/// one, 63 us on two). Long inner dimensions (the weight gradients of
/// convolutions: `k` = batch x height x width) gain at any `m`.
/// Wide results (`n >= 512`) and products of at least 64 rows with a long inner
/// dimension (`k >= 512`) gain again: the LSTM's per-step `[64, 128] x [128,
/// 512]` and its gradients `[128, 64] x [64, 512]`, `[64, 512] x [512, 128]`
/// (W8: 18.2 -> 14.9 ms a step, 3 interleaved pairs, 2026-12-03).
/// The choice depends on the shape only, never on the thread count, so results
/// stay bitwise the same on any number of threads.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    const MIN_WORK: usize = 1 << 22;
    let work = m.saturating_mul(n).saturating_mul(k);
    if work >= MIN_WORK && (m >= 192 || k >= 2048 || n >= 512 || (m >= 64 && k >= 512)) {
        // 0 = rayon's current number of threads.
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `a · b` into a new matrix.
///
/// **Panics** if the inner dimensions differ; callers check shapes first.
pub fn matmul(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let shape = (a.nrows(), b.ncols());
    Array2::from_shape_vec(shape, matmul_vec(a, b)).expect("matmul_vec returns rows*cols elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix with entries in [-1, 1).
    fn mat(rows: usize, cols: usize, seed: u32) -> Array2<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        Array2::from_shape_fn((rows, cols), |_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
    }

    /// `f` run on a pool of `threads` threads.
    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(f)
    }

    /// The naive triple loop, in f64.
    fn reference(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols())
                .map(|p| f64::from(a[[i, p]]) * f64::from(b[[p, j]]))
                .sum()
        })
    }

    #[test]
    fn agrees_with_naive_product_for_all_layouts() {
        for (m, k, n) in [
            (1, 7, 5),
            (5, 1, 3),
            (37, 2, 9),
            (70, 33, 65),
            (130, 300, 17),
        ] {
            let a = mat(m, k, 1);
            let bt = mat(n, k, 2); // b = btᵀ: a transposed view
            let b = bt.t();
            let want = reference(a.view(), b);
            let mut c = mat(m, n, 3);
            let old = c.clone();
            sgemm(0.5, a.view(), b, 2.0, &mut c.view_mut());
            for ((i, j), v) in c.indexed_iter() {
                let w = 0.5 * want[[i, j]] + 2.0 * f64::from(old[[i, j]]);
                assert!(
                    (f64::from(*v) - w).abs() < 1e-4 * (k as f64),
                    "{m}x{k}x{n} at {i},{j}"
                );
            }
            // beta = 0 ignores c's contents, NaN included.
            let mut c = Array2::from_elem((m, n), f32::NAN);
            let at = a.t().to_owned(); // a given as a transposed view too
            sgemm(1.0, at.t(), b, 0.0, &mut c.view_mut());
            for ((i, j), v) in c.indexed_iter() {
                assert!((f64::from(*v) - want[[i, j]]).abs() < 1e-4 * (k as f64));
            }
        }
    }

    #[test]
    fn matmul_vec_writes_every_element() {
        for (m, k, n) in [(1, 3, 1), (33, 17, 65), (300, 9, 16), (4, 0, 5)] {
            let (a, b) = (mat(m, k, 6), mat(k, n, 7));
            let got = matmul_vec(a.view(), b.t().to_owned().t());
            let want = reference(a.view(), b.view());
            assert_eq!(got.len(), m * n);
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-4 * (k.max(1) as f64),
                    "{m}x{k}x{n}"
                );
            }
        }
    }

    /// Single-thread products (the AVX-512 `small_gemm` kernel where the CPU
    /// has it): every row remainder of its 12-row tiles, panel widths below,
    /// at and above one and two registers, `a` and `b` in both layouts (so
    /// both orientations and both packings), a transposed `c` (stored a lane
    /// at a time), and `beta` zero (NaNs in `c` ignored) and not.
    #[test]
    fn single_thread_products_agree_with_naive_product_in_every_layout() {
        let mut shapes = vec![(100, 784, 10), (784, 100, 10), (50, 784, 100), (300, 50, 3)];
        shapes.extend((1..=13).map(|m| (m, 5, 17)));
        shapes.extend([1, 15, 16, 17, 31, 32, 33, 48, 50].map(|n| (29, 7, n)));
        shapes.extend([(3, 1, 2), (2, 1024, 3), (40, 2, 40)]);
        for (m, k, n) in shapes {
            for (trans_a, trans_b, trans_c) in (0..8).map(|f| (f & 1 != 0, f & 2 != 0, f & 4 != 0))
            {
                let a = if trans_a {
                    mat(k, m, 9).reversed_axes()
                } else {
                    mat(m, k, 9)
                };
                let b = if trans_b {
                    mat(n, k, 8).reversed_axes()
                } else {
                    mat(k, n, 8)
                };
                let want = reference(a.view(), b.view());
                let fresh = |fill: f32| {
                    if trans_c {
                        Array2::from_elem((n, m), fill).reversed_axes()
                    } else {
                        Array2::from_elem((m, n), fill)
                    }
                };
                let mut c = fresh(f32::NAN);
                sgemm(1.0, a.view(), b.view(), 0.0, &mut c.view_mut());
                let mut c2 = fresh(0.25);
                sgemm(2.0, a.view(), b.view(), -1.0, &mut c2.view_mut());
                let tol = 1e-5 * (k as f64).sqrt() * 10.0;
                for ((i, j), w) in want.indexed_iter() {
                    let case =
                        format!("{m}x{k}x{n} ta={trans_a} tb={trans_b} tc={trans_c} at {i},{j}");
                    assert!((f64::from(c[[i, j]]) - w).abs() < tol, "{case}");
                    assert!(
                        (f64::from(c2[[i, j]]) - (2.0 * w - 0.25)).abs() < 2.0 * tol,
                        "{case} beta"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_scales_c() {
        let (a, b) = (Array2::<f32>::zeros((3, 0)), Array2::<f32>::zeros((0, 2)));
        let mut c = Array2::from_elem((3, 2), 4.0f32);
        sgemm(1.0, a.view(), b.view(), 0.5, &mut c.view_mut());
        assert!(c.iter().all(|&v| v == 2.0));
        sgemm(1.0, a.view(), b.view(), 0.0, &mut c.view_mut());
        assert!(c.iter().all(|&v| v == 0.0));
    }

    /// Results must not depend on how many threads rayon has: the inner sum
    /// is never split, so 1, 2 and 3 threads give the same bits.
    #[test]
    fn split_inner_agrees_and_does_not_depend_on_threads() {
        // Long inner dimensions (split in halves), one too short to split, one
        // too small to split at all.
        for (m, k, n) in [(144, 9800, 32), (9, 20000, 16), (300, 400, 300), (5, 7, 3)] {
            let a = mat(k, m, 8).reversed_axes(); // a transposed view, as dK's
            let b = mat(k, n, 9);
            let want = reference(a.view(), b.view());
            let run =
                |threads: usize| on_threads(threads, || matmul_vec_split_inner(a.view(), b.view()));
            let one = run(1);
            assert_eq!(one.len(), m * n);
            for (g, w) in one.iter().zip(want.iter()) {
                let tol = 1e-5 * (k as f64).sqrt() * w.abs().max(1.0) * 10.0;
                assert!((f64::from(*g) - w).abs() < tol, "{m}x{k}x{n}: {g} vs {w}");
            }
            let two = run(2);
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{k}x{n}: 2 threads differ from 1"
            );
        }
    }

    #[test]
    fn bitwise_identical_for_any_thread_count() {
        // Shapes like the im2col products of a conv net, forward and backward.
        for (m, k, n, trans_a) in [
            (2000, 9, 16, false),
            (1960, 144, 32, false),
            (288, 1960, 64, true),
            (490, 64, 576, false),
        ] {
            let a = if trans_a {
                mat(k, m, 4).reversed_axes()
            } else {
                mat(m, k, 4)
            };
            let b = mat(k, n, 5);
            let run = |threads: usize| {
                let mut c = Array2::zeros((m, n));
                on_threads(threads, || {
                    sgemm(1.0, a.view(), b.view(), 0.0, &mut c.view_mut())
                });
                c
            };
            let one = run(1);
            for t in [2, 3] {
                let many = run(t);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n}: {t} threads differ from 1"
                );
            }
        }
    }
}
