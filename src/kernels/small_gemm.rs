//! Matrix products small enough to run on one thread: the layers of an MLP
//! (`[300, 50] x [50, 50]`, `[50, 784] x [784, 100]`), a classifier's logits
//! (`[100, 784] x [784, 10]`) and their gradients.
//!
//! A general sgemm packs both operands into panels before it multiplies; at
//! these sizes the packing is as much work as the product, and its
//! micro-kernels run half masked when a side is 3, 10 or 50 long. Here a tile
//! of up to [`MAX_ROWS`] rows by two AVX-512 registers (32 columns) of the
//! result is held in 24 registers and summed straight from the operands in
//! `k` order: each step loads one row of `b` (two vectors) and broadcasts one
//! element of `a` per row, 24 fused multiply-adds for 14 loads, so the FMA
//! units, not the loads, set the pace. No packing when the operands' layout
//! allows it; otherwise the smaller operand is transposed once into a
//! buffer. The result does not depend on the number of threads.
//!
//! `c = a · b` is computed as is when `b`'s rows are contiguous, or as
//! `cᵀ = bᵀ · aᵀ` when `a`'s columns are (a weight gradient `xᵀ · dy`, whose
//! long side `x`'s features then fills the registers instead of the 10
//! classes), whichever leaves fewer lanes idle.
//!
//! Measured on the 2-core machine (one thread; the `gemm` crate / here):
//! see the `gemm_probe` figures in the README's Performance section.
//!
//! Used only where the CPU has AVX-512F (checked at run time); x86-64 only.

use std::arch::x86_64::*;

use crate::kernels::buffer_pool;

/// Rows of the result in one register tile.
pub const MAX_ROWS: usize = 12;

/// Longest inner dimension taken: beyond it a tile's rows of `a` and column
/// panel of `b` no longer stay in the caches, and the `gemm` crate's blocked
/// kernel is faster.
pub const MAX_INNER: usize = 1024;

/// Lanes of one AVX-512 register of `f32`.
const LANES: usize = 16;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// A matrix operand: first element and the strides of its rows and columns,
/// in elements.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Operand {
    /// The same elements read as the transposed matrix.
    fn t(self) -> Self {
        Operand {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// The result: first element and strides, in elements.
#[derive(Clone, Copy)]
struct Dest {
    ptr: *mut f32,
    rs: isize,
    cs: isize,
}

/// `c = alpha * a · b + beta * c` for `a: [m, k]`, `b: [k, n]`, `c: [m, n]`,
/// each given as (pointer, row stride, column stride) in elements; with
/// `beta == 0`, `c` is only written.
///
/// # Safety
/// [`available`] must be true, `k >= 1`; the pointers must be valid for those
/// shapes and strides (`c` for writes, and reads if `beta != 0`), and `c` must
/// overlap neither `a` nor `b`.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs, b_cs): (*const f32, isize, isize),
    beta: f32,
    (c, c_rs, c_cs): (*mut f32, isize, isize),
) {
    let a = Operand {
        ptr: a,
        rs: a_rs,
        cs: a_cs,
    };
    let b = Operand {
        ptr: b,
        rs: b_rs,
        cs: b_cs,
    };
    let c = Dest {
        ptr: c,
        rs: c_rs,
        cs: c_cs,
    };
    // Cost of each orientation in vector FMAs, plus one per element to pack or
    // to store one lane at a time.
    let vectors = |len: usize| len.div_ceil(LANES);
    let direct =
        m * vectors(n) * k + if b.cs == 1 { 0 } else { k * n } + if c.cs == 1 { 0 } else { m * n };
    let transposed =
        n * vectors(m) * k + if a.rs == 1 { 0 } else { m * k } + if c.rs == 1 { 0 } else { m * n };
    // SAFETY (both): the caller vouches for the operands; `oriented` reads
    // `b` by contiguous rows only, which it packs into a buffer if need be.
    unsafe {
        if direct <= transposed {
            oriented((m, n, k), alpha, a, b, beta, c);
        } else {
            let ct = Dest {
                ptr: c.ptr,
                rs: c.cs,
                cs: c.rs,
            };
            oriented((n, m, k), alpha, b.t(), a.t(), beta, ct);
        }
    }
}

/// [`gemm`] in the orientation chosen: packs `b` into contiguous rows unless
/// they already are, then runs the tiles.
#[target_feature(enable = "avx512f")]
unsafe fn oriented(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: Dest,
) {
    if b.cs == 1 {
        // SAFETY: as the caller's.
        unsafe { tiles((m, n, k), alpha, a, (b.ptr, b.rs), beta, c) };
        return;
    }
    let mut packed = buffer_pool::take(k * n);
    for (p, row) in packed.chunks_exact_mut(n).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // SAFETY: `b` is valid for `[k, n]` at its strides.
            *v = unsafe { *b.ptr.offset(p as isize * b.rs + j as isize * b.cs) };
        }
    }
    // SAFETY: `packed` holds `b` row-major at row stride `n`.
    unsafe { tiles((m, n, k), alpha, a, (packed.as_ptr(), n as isize), beta, c) };
}

/// Runs the register tiles over `c`, a panel of 32 columns (the last one 16
/// or narrower) at a time and, within it, [`MAX_ROWS`] rows at a time: the
/// panel of `b` is read once per tile of rows and stays in cache between them.
#[target_feature(enable = "avx512f")]
unsafe fn tiles(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    (b, b_rs): (*const f32, isize),
    beta: f32,
    c: Dest,
) {
    let mut row = 0;
    while row < m {
        let rows = (m - row).min(MAX_ROWS);
        let mut col = 0;
        while col < n {
            let width = (n - col).min(2 * LANES);
            let tile = Tile {
                k,
                a: a.ptr.wrapping_offset(row as isize * a.rs),
                a_rs: a.rs,
                a_cs: a.cs,
                b: b.wrapping_add(col),
                b_rs,
                width,
                c: c.ptr
                    .wrapping_offset(row as isize * c.rs + col as isize * c.cs),
                c_rs: c.rs,
                c_cs: c.cs,
                alpha,
                beta,
            };
            // SAFETY: the tile lies within the shapes the caller vouched for.
            unsafe {
                if width > LANES {
                    dispatch_rows::<2>(rows, &tile);
                } else {
                    dispatch_rows::<1>(rows, &tile);
                }
            }
            col += width;
        }
        row += rows;
    }
}

/// One tile's operands: `rows x width` of the result, `width <= 16 * NV`.
struct Tile {
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    width: usize,
    c: *mut f32,
    c_rs: isize,
    c_cs: isize,
    alpha: f32,
    beta: f32,
}

/// Calls the tile kernel instantiated for `rows` (a constant, so the
/// accumulators are registers).
#[target_feature(enable = "avx512f")]
unsafe fn dispatch_rows<const NV: usize>(rows: usize, t: &Tile) {
    // SAFETY (every arm): as the caller's.
    unsafe {
        match rows {
            1 => tile::<1, NV>(t),
            2 => tile::<2, NV>(t),
            3 => tile::<3, NV>(t),
            4 => tile::<4, NV>(t),
            5 => tile::<5, NV>(t),
            6 => tile::<6, NV>(t),
            7 => tile::<7, NV>(t),
            8 => tile::<8, NV>(t),
            9 => tile::<9, NV>(t),
            10 => tile::<10, NV>(t),
            11 => tile::<11, NV>(t),
            _ => tile::<MAX_ROWS, NV>(t),
        }
    }
}

/// `R x (16 * NV)` of the result (the last vector masked to `t.width`), in
/// `R * NV` registers.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const NV: usize>(t: &Tile) {
    let last = t.width - (NV - 1) * LANES;
    let last_mask: __mmask16 = if last >= LANES {
        0xffff
    } else {
        ((1u32 << last) - 1) as __mmask16
    };
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    // Row r of the tile is read at `rows[r / 3] + (r % 3) * a_rs`: separate
    // base pointers for each three rows, each advanced on its own, because
    // with one pointer the compiler reaches row r by adding `a_rs` r times,
    // a chain of dependent adds that took as long as the FMAs themselves.
    let (rs, rs2) = (t.a_rs, 2 * t.a_rs);
    let mut rows: [*const f32; MAX_ROWS.div_ceil(3)] =
        std::array::from_fn(|g| t.a.wrapping_offset(3 * g as isize * rs));
    let mut b = t.b;
    for _ in 0..t.k {
        // SAFETY: `b` points at a row of the panel, `a` at a column of the
        // tile's rows, both within the operands.
        unsafe {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = if v + 1 == NV {
                    _mm512_maskz_loadu_ps(last_mask, b.add(v * LANES))
                } else {
                    _mm512_loadu_ps(b.add(v * LANES))
                };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let base = rows[r / 3];
                let at = match r % 3 {
                    0 => base,
                    1 => base.offset(rs),
                    _ => base.offset(rs2),
                };
                let av = _mm512_set1_ps(*at);
                for (acc, bv) in acc.iter_mut().zip(bv) {
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            }
        }
        for base in rows.iter_mut().take(R.div_ceil(3)) {
            *base = base.wrapping_offset(t.a_cs);
        }
        b = b.wrapping_offset(t.b_rs);
    }
    let (alpha, beta) = (_mm512_set1_ps(t.alpha), _mm512_set1_ps(t.beta));
    for (r, acc) in acc.into_iter().enumerate() {
        for (v, acc) in acc.into_iter().enumerate() {
            let mask = if v + 1 == NV { last_mask } else { 0xffff };
            let lanes = if v + 1 == NV { last } else { LANES };
            let dst =
                t.c.wrapping_offset(r as isize * t.c_rs + (v * LANES) as isize * t.c_cs);
            let mut out = _mm512_mul_ps(acc, alpha);
            // SAFETY: `dst` and the `lanes` elements after it (at `c_cs`) are
            // within `c`.
            unsafe {
                if t.c_cs == 1 {
                    if t.beta != 0.0 {
                        out = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), beta, out);
                    }
                    _mm512_mask_storeu_ps(dst, mask, out);
                } else {
                    // A transposed result: one lane at a time.
                    let mut lane = [0.0f32; LANES];
                    _mm512_storeu_ps(lane.as_mut_ptr(), out);
                    for (l, value) in lane.iter().take(lanes).enumerate() {
                        let d = dst.offset(l as isize * t.c_cs);
                        *d = if t.beta != 0.0 {
                            t.beta.mul_add(*d, *value)
                        } else {
                            *value
                        };
                    }
                }
            }
        }
    }
}
