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
//! allows it; otherwise the operand read by rows is transposed once into a
//! buffer (in whichever orientation that costs least). The result does not
//! depend on the number of threads.
//!
//! `c = a · b` is computed as is when `b`'s rows are contiguous, or as
//! `cᵀ = bᵀ · aᵀ` when `a`'s columns are (a weight gradient `xᵀ · dy`, whose
//! long side `x`'s features then fills the registers instead of the 10
//! classes), whichever leaves fewer lanes idle. A result of at most 16
//! columns from a long sum over contiguous rows of `a` (logits
//! `[100, 784] x [784, 10]`) is computed as dot products instead: vectors
//! along the sum, so no lane idles however narrow `c` is.
//!
//! `examples/gemm_shapes.rs` times it on the benchmark workloads' products
//! (figures against the `gemm` crate in the README's Performance section).
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
    // Dot products of a's contiguous rows with b's columns (packed into rows):
    // every lane busy however narrow the result, plus a horizontal sum per
    // element of c.
    let dots = if a.cs == 1 && n <= LANES {
        m * n * vectors(k) + k * n + 2 * m * n
    } else {
        usize::MAX
    };
    // SAFETY (all three): the caller vouches for the operands; `oriented`
    // reads `b` by contiguous rows only, and `dot_products` `a` by contiguous
    // rows, packing what is not.
    unsafe {
        if dots < direct.min(transposed) {
            dot_products((m, n, k), alpha, a, b, beta, c);
        } else if direct <= transposed {
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

/// Rows of `a` per tile of [`dot_tile`] for a result of `N` columns: as
/// many as keep the `R * N` accumulators, `R` rows of `a` and one row of
/// `bᵀ` within the 32 registers.
macro_rules! dot_dispatch {
    ($n:expr, $f:ident, $args:tt; $($N:literal => $R:literal),*) => {
        match $n {
            $($N => $f::<$N, $R> $args,)*
            _ => unreachable!("dot products take 1 to 16 columns"),
        }
    };
}

/// `c = alpha * a · b + beta * c` as `m * n` dot products of length `k`, for
/// `a` with contiguous rows (`a.cs == 1`) and `n <= 16`: `b`'s columns are
/// packed by chunks of 16 along `k`, and each tile of rows sums 16 products
/// per instruction along `k`, then adds its lanes.
#[target_feature(enable = "avx512f")]
unsafe fn dot_products(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: Dest,
) {
    debug_assert!(a.cs == 1 && (1..=LANES).contains(&n));
    // bᵀ by chunks of 16 along k, the n columns of a chunk side by side
    // (`[k / 16, n, 16]`, zeros past k): a tile reads a chunk's vectors at
    // fixed offsets from one pointer. (With `bᵀ` as `[n, k]` rows, the
    // compiler reached row j by j dependent adds per step, as long a chain as
    // the FMAs.)
    let chunks = k.div_ceil(LANES);
    let mut bt = buffer_pool::take(chunks * n * LANES);
    // One gather per 16 elements of a column (a scalar loop of strided reads
    // cost as much as W2's whole product); offsets must fit an i32.
    let gather = i32::try_from(LANES as isize * b.rs.abs() + n as isize * b.cs.abs()).is_ok();
    for (q, chunk) in bt.chunks_exact_mut(n * LANES).enumerate() {
        let first = q * LANES;
        let valid = (k - first).min(LANES);
        for (j, lanes) in chunk.chunks_exact_mut(LANES).enumerate() {
            // SAFETY: rows `first..first + valid` of column `j` of `b`; the
            // masked-off lanes are not read.
            unsafe {
                let column = b.ptr.offset(first as isize * b.rs + j as isize * b.cs);
                if gather {
                    let index = _mm512_mullo_epi32(
                        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                        _mm512_set1_epi32(b.rs as i32),
                    );
                    let mask = ((1u32 << valid) - 1) as __mmask16;
                    let v = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        index,
                        column.cast(),
                    );
                    _mm512_storeu_ps(lanes.as_mut_ptr(), v);
                } else {
                    for (l, v) in lanes.iter_mut().enumerate() {
                        *v = if l < valid {
                            *column.offset(l as isize * b.rs)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
    let t = DotTiles {
        m,
        k,
        alpha,
        a,
        bt: bt.as_ptr(),
        beta,
        c,
    };
    // SAFETY: `bt` holds `b`'s columns as rows of `k`; the caller vouches for
    // `a` and `c`.
    unsafe {
        dot_dispatch!(n, dot_rows, (&t);
            1 => 12, 2 => 10, 3 => 7, 4 => 6, 5 => 5, 6 => 4, 7 => 3, 8 => 3,
            9 => 3, 10 => 2, 11 => 2, 12 => 2, 13 => 2, 14 => 2, 15 => 1, 16 => 1)
    }
}

/// The operands of [`dot_products`] once `b` is packed: `bt` is
/// `[k / 16, n, 16]`.
struct DotTiles {
    m: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    bt: *const f32,
    beta: f32,
    c: Dest,
}

/// Every row of `c` (`N` columns), `R` rows at a time, the rest one by one.
#[target_feature(enable = "avx512f")]
unsafe fn dot_rows<const N: usize, const R: usize>(t: &DotTiles) {
    let mut row = 0;
    // SAFETY (both calls): rows within `c` and `a`.
    while row + R <= t.m {
        unsafe { dot_tile::<N, R>(t, row) };
        row += R;
    }
    while row < t.m {
        unsafe { dot_tile::<N, 1>(t, row) };
        row += 1;
    }
}

/// Rows `row..row + R` of `c`: `R x N` accumulators of 16 lanes, summed
/// along `k` a vector at a time (the last one masked), then each added up.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dot_tile<const N: usize, const R: usize>(t: &DotTiles, row: usize) {
    let rows: [*const f32; R] =
        std::array::from_fn(|r| t.a.ptr.wrapping_offset((row + r) as isize * t.a.rs));
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let mut p = 0;
    let mut chunk = t.bt;
    while p < t.k {
        let mask: __mmask16 = if t.k - p >= LANES {
            0xffff
        } else {
            ((1u32 << (t.k - p)) - 1) as __mmask16
        };
        // SAFETY: lanes `p..min(p + 16, k)` of rows of `a` (the masked-off
        // lanes are not read) and one chunk of `bt`.
        unsafe {
            let av: [__m512; R] =
                std::array::from_fn(|r| _mm512_maskz_loadu_ps(mask, rows[r].add(p)));
            for j in 0..N {
                let bv = _mm512_loadu_ps(chunk.add(j * LANES));
                for (acc, &av) in acc.iter_mut().zip(&av) {
                    acc[j] = _mm512_fmadd_ps(av, bv, acc[j]);
                }
            }
        }
        p += LANES;
        chunk = chunk.wrapping_add(N * LANES);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, &acc) in acc.iter().enumerate() {
            let dst =
                t.c.ptr
                    .wrapping_offset((row + r) as isize * t.c.rs + j as isize * t.c.cs);
            let sum = t.alpha * _mm512_reduce_add_ps(acc);
            // SAFETY: element (row + r, j) of `c`.
            unsafe {
                *dst = if t.beta != 0.0 {
                    t.beta.mul_add(*dst, sum)
                } else {
                    sum
                };
            }
        }
    }
}
