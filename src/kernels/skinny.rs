//! Matrix products with a narrow result (`n` <= 16 columns): logits of a
//! classifier, `[batch, 784] x [784, 10]`, and their weight gradients.
//!
//! A general sgemm packs its left operand into panels first; with 10 output
//! columns the packing is as much work as the product, and the `gemm` crate's
//! micro-kernels run mostly masked (W2's `[100, 784] x [784, 10]`: 36 us on one
//! thread, about 22 GFLOP/s). Here each output row is one AVX-512 register of
//! up to 16 lanes, eight rows at a time, summed straight from the operands in
//! `k` order: no packing, and a result that does not depend on threads.
//!
//! Used only where the CPU has AVX-512F (checked at run time) and the product
//! is small enough that it would run on one thread anyway; everything else
//! goes to the `gemm` crate. (x86-64 only: elsewhere the module is absent.)

/// Widest result this kernel takes: one AVX-512 register of `f32`.
pub const MAX_COLS: usize = 16;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `c = alpha * a · b + beta * c` for `a: [m, k]` at strides `(a_rs, a_cs)`,
/// `b: [k, n]` with contiguous rows at row stride `b_rs`, and `c: [m, n]` with
/// contiguous rows at row stride `c_rs`; with `beta == 0`, `c` is only written.
///
/// # Safety
/// [`available`] must be true and `n <= MAX_COLS`; the pointers must be valid
/// for those shapes and strides (`c` for writes, and reads if `beta != 0`),
/// and `c` must overlap neither `a` nor `b`.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs): (*const f32, isize),
    beta: f32,
    (c, c_rs): (*mut f32, isize),
) {
    use std::arch::x86_64::*;
    debug_assert!(n > 0 && n <= MAX_COLS);
    let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
    let (alpha_v, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    // SAFETY (whole body): every offset stays within the shapes the caller vouched for.
    let finish = |acc: __m512, row: usize| unsafe {
        let dst = c.offset(row as isize * c_rs);
        let mut out = _mm512_mul_ps(acc, alpha_v);
        if beta != 0.0 {
            out = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), beta_v, out);
        }
        _mm512_mask_storeu_ps(dst, mask, out);
    };
    const ROWS: usize = 8;
    let mut i = 0;
    while i + ROWS <= m {
        let mut acc = [_mm512_setzero_ps(); ROWS];
        let a_row = a.offset(i as isize * a_rs);
        for p in 0..k as isize {
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, b.offset(p * b_rs)) };
            let a_col = a_row.offset(p * a_cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = unsafe { _mm512_set1_ps(*a_col.offset(r as isize * a_rs)) };
                *acc = _mm512_fmadd_ps(av, bv, *acc);
            }
        }
        for (r, acc) in acc.into_iter().enumerate() {
            finish(acc, i + r);
        }
        i += ROWS;
    }
    for row in i..m {
        let mut acc = _mm512_setzero_ps();
        let a_row = a.offset(row as isize * a_rs);
        for p in 0..k as isize {
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, b.offset(p * b_rs)) };
            let av = unsafe { _mm512_set1_ps(*a_row.offset(p * a_cs)) };
            acc = _mm512_fmadd_ps(av, bv, acc);
        }
        finish(acc, row);
    }
}
