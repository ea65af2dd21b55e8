//! The products a convolution is lowered to, `im2col(x) · k`,
//! `col2im(dy · kᵀ)` and the kernel gradient `im2col(x)ᵀ · dy`, computed one
//! block of whole images at a time.
//!
//! Done for the whole batch at once, each is a pass that writes a patch
//! matrix `kh*kw` times the size of the images (9x for 3x3; 11 MB for W4's
//! `[50, 14, 14, 32]` layer) and a gemm that reads it back, long after it has
//! left the core's cache. Done per block of a few images (at least
//! [`MIN_BLOCK_ROWS`] patch rows, so that the gemm still amortises its packing
//! of `k`), the block's patches are read back from the core's own cache, and
//! each block is one task on rayon's pool with a single-threaded gemm, so the
//! threads do not meet between the im2col and the gemm. A training forward
//! then keeps no patch matrix: the backward rebuilds each block's patches
//! for the kernel gradient. Measured on the 2-core machine (medians of 40
//! interleaved rounds, `[50, 14, 14, 32]` 3x3 stride 1 to 64 channels, memory
//! retained between calls): forward 1.45 -> 1.29 ms, input gradient 1.72 ->
//! 1.38 ms; W4's training step, 12 interleaved rounds, 27.5 -> 23.9 ms (in a
//! slow phase of the machine).
//!
//! Blocks are whole images: a block's `col2im` then writes only its own
//! images, so blocks never write the same cell. A batch too small for
//! [`MIN_BLOCKS`] blocks goes whole, with the gemm split over the threads.
//! Which path and which blocks depend on the shapes only, every block is one
//! product on one thread, and partial sums are added in a fixed order, so
//! results do not depend on the number of threads.

use std::mem::MaybeUninit;

use ndarray::{s, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::kernels::gemm::{
    matmul_serial_add, matmul_serial_into, matmul_vec, matmul_vec_split_inner, sgemm,
};
use crate::kernels::im2col::{col2im_serial, col2im_vec, im2col, im2col_serial, Window2d};
use crate::kernels::scratch::with_scratch;

/// Patch rows a block has at least: each block's gemm packs `k` again, so a
/// block needs rows enough to pay for that. (W4's `[50, 7, 7, 128]` layer,
/// 16 rows an image and a 1.2 MB kernel, in blocks of 16 images was no
/// faster forward than whole and slower for the input gradient, 1.50 against
/// 1.41 ms; it goes whole.)
pub const MIN_BLOCK_ROWS: usize = 256;

/// Blocks a batch must make to be split (fewer, and one thread may finish
/// its blocks long before the other).
pub const MIN_BLOCKS: usize = 8;

/// Partial kernel gradients a batch in blocks sums at most: the blocks of
/// one group add into the group's partial sum, one after another. (A
/// partial sum per block cost more than the blocks saved where the kernel is
/// large against a block: W5's `[5, 5, 128, 256]` transposed convolution, 42
/// blocks of 294 rows, had 137 MB of partial sums and its backward went 89 ->
/// 99 ms; in 8 groups, 79-100 ms in a noisy phase against 107-117.)
pub const MAX_GROUPS: usize = 8;

/// Images per block for the geometry `g`, or `None` when the batch goes whole.
pub fn images_per_block(g: &Window2d) -> Option<usize> {
    let per_image = g.out_h * g.out_w;
    if per_image == 0 || g.batch == 0 {
        return None;
    }
    let images = MIN_BLOCK_ROWS.div_ceil(per_image);
    (g.batch.div_ceil(images) >= MIN_BLOCKS).then_some(images)
}

/// `im2col(x) · k`: the `[N*OH*OW, Cout]` result (row-major) of the patch
/// matrix of `x` (`[N, H, W, C]` over `g`) times `k` (`[kh*kw*C, Cout]`).
///
/// With `keep` (`N*OH*OW * kh*kw*C` elements) the patch matrix is left there
/// (a training forward keeps it for the kernel gradient); without, it lives
/// block by block in each thread's scratch buffer.
///
/// **Panics** if the lengths do not fit `g` and `k` (callers check shapes).
pub fn patches_times(
    x: &[f32],
    g: &Window2d,
    k: ArrayView2<f32>,
    keep: Option<&mut [f32]>,
) -> Vec<f32> {
    let (cells, plen, cout) = (g.output_cells(), g.patch_len(), k.ncols());
    assert_eq!(k.nrows(), plen, "patches_times: kernel rows");
    let per_image = g.out_h * g.out_w;
    let image_len = g.in_h * g.in_w * g.channels;
    let Some(images) = images_per_block(g).filter(|_| cells * cout > 0 && plen > 0) else {
        let whole = |cols: &mut [f32]| {
            im2col(x, g, cols);
            let cols = ArrayView2::from_shape((cells, plen), &*cols).expect("patch matrix shape");
            matmul_vec(cols, k)
        };
        return match keep {
            Some(cols) => whole(cols),
            None => with_scratch(cells * plen, whole),
        };
    };
    let block = |b: usize, out: &mut [MaybeUninit<f32>], cols: &mut [f32]| {
        let n = out.len() / (per_image * cout);
        let bg = Window2d { batch: n, ..*g };
        let xs = &x[b * images * image_len..][..n * image_len];
        let cols = &mut cols[..n * per_image * plen];
        im2col_serial(xs, &bg, cols);
        let cols = ArrayView2::from_shape((n * per_image, plen), &*cols).expect("block shape");
        matmul_serial_into(cols, k, out);
    };
    let len = cells * cout;
    let mut out = Vec::with_capacity(len);
    let blocks = out.spare_capacity_mut()[..len].par_chunks_mut(images * per_image * cout);
    match keep {
        Some(keep) => {
            assert_eq!(keep.len(), cells * plen, "patches_times: kept length");
            blocks
                .zip(keep.par_chunks_mut(images * per_image * plen))
                .enumerate()
                .for_each(|(b, (out, cols))| block(b, out, cols));
        }
        None => blocks.enumerate().for_each(|(b, out)| {
            with_scratch(images * per_image * plen, |cols| block(b, out, cols));
        }),
    }
    // SAFETY: the blocks cover all `len` elements, and each block's gemm
    // writes every element of its part.
    unsafe { out.set_len(len) };
    out
}

/// `im2col(u)ᵀ · v`: the `[kh*kw*C, Cv]` product (row-major) of the patch
/// matrix of `u` (`[N, H, W, C]` over `g`) transposed, times `v`
/// (`[N*OH*OW, Cv]`): a convolution's kernel gradient. With `k`
/// (`[kh*kw*C, Cout]`), also `im2col(u) · k` from the same patches (a
/// transposed convolution's input gradient).
///
/// Block by block, the blocks fall into at most [`MAX_GROUPS`] groups of
/// consecutive blocks; each group adds its blocks' products into a partial
/// sum of its own, in block order, and the partial sums are added in group
/// order, so the result does not depend on the number of threads. A batch
/// that goes whole is one product over the whole patch matrix, its inner
/// dimension split in halves ([`matmul_vec_split_inner`]).
///
/// **Panics** if the shapes do not fit `g` (callers check shapes).
pub fn patches_t_times(
    u: &[f32],
    g: &Window2d,
    v: ArrayView2<f32>,
    k: Option<ArrayView2<f32>>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (cells, plen, cv) = (g.output_cells(), g.patch_len(), v.ncols());
    assert_eq!(v.nrows(), cells, "patches_t_times: rows of v");
    let per_image = g.out_h * g.out_w;
    let image_len = g.in_h * g.in_w * g.channels;
    let Some(images) = images_per_block(g).filter(|_| plen * cv > 0) else {
        return with_scratch(cells * plen, |cols| {
            im2col(u, g, cols);
            let cols = ArrayView2::from_shape((cells, plen), &*cols).expect("patch matrix shape");
            (
                matmul_vec_split_inner(cols.t(), v),
                k.map(|k| matmul_vec(cols, k)),
            )
        });
    };
    let rows_per_block = images * per_image;
    let blocks = cells.div_ceil(rows_per_block);
    let groups = blocks.min(MAX_GROUPS);
    // Group `i` has blocks `first(i)..first(i + 1)`.
    let first = |i: usize| i * blocks / groups;
    let cout = k.map_or(0, |k| k.ncols());
    // The rows of im2col(u)·k, cut at the groups' first rows.
    let mut y: Vec<f32> = Vec::with_capacity(cells * cout);
    let mut y_rest = &mut y.spare_capacity_mut()[..cells * cout];
    let mut y_groups = Vec::with_capacity(groups);
    for i in 0..groups {
        let rows = (first(i + 1) * rows_per_block).min(cells) - first(i) * rows_per_block;
        let (head, tail) = std::mem::take(&mut y_rest).split_at_mut(rows * cout);
        y_groups.push(head);
        y_rest = tail;
    }
    let part_len = plen * cv;
    let mut parts = vec![0.0f32; groups * part_len];
    parts
        .par_chunks_mut(part_len)
        .zip(y_groups)
        .enumerate()
        .for_each(|(i, (part, y))| {
            for b in first(i)..first(i + 1) {
                let n = images.min(g.batch - b * images);
                let rows = n * per_image;
                let bg = Window2d { batch: n, ..*g };
                let us = &u[b * images * image_len..][..n * image_len];
                let vb = v.slice(s![b * rows_per_block..b * rows_per_block + rows, ..]);
                with_scratch(rows * plen, |cols| {
                    im2col_serial(us, &bg, cols);
                    let cols = ArrayView2::from_shape((rows, plen), &*cols).expect("block shape");
                    matmul_serial_add(cols.t(), vb, part);
                    if let Some(k) = k {
                        let at = (b - first(i)) * rows_per_block * cout;
                        matmul_serial_into(cols, k, &mut y[at..at + rows * cout]);
                    }
                });
            }
        });
    // SAFETY: the groups' row ranges cover all `cells * cout` elements, and
    // every block's gemm wrote every element of its rows.
    unsafe { y.set_len(cells * cout) };
    (sum_parts(&parts, part_len), k.map(|_| y))
}

/// The element-wise sum of the consecutive `len`-element parts of `parts`,
/// added in part order (in parallel over elements, never over parts).
fn sum_parts(parts: &[f32], len: usize) -> Vec<f32> {
    let mut sum = parts[..len].to_vec();
    sum.par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let at = c * SUM_CHUNK;
            for part in parts.chunks_exact(len).skip(1) {
                for (s, p) in chunk.iter_mut().zip(&part[at..]) {
                    *s += p;
                }
            }
        });
    sum
}

/// Elements per task of [`sum_parts`].
const SUM_CHUNK: usize = 1 << 14;

/// `col2im(dy · kt)`: the `[N, H, W, C]` result (row-major) of putting the
/// rows of `dy · kt` (`dy`: `[N*OH*OW, Cout]`, `kt`: `[Cout, kh*kw*C]`) back
/// onto the input cells of `g` they belong to, summed.
///
/// **Panics** if the shapes do not fit `g` (callers check shapes).
pub fn col2im_of_product(dy: ArrayView2<f32>, kt: ArrayView2<f32>, g: &Window2d) -> Vec<f32> {
    let (cells, plen) = (g.output_cells(), g.patch_len());
    assert_eq!(dy.nrows(), cells, "col2im_of_product: rows of dy");
    assert_eq!(kt.ncols(), plen, "col2im_of_product: columns of kt");
    let per_image = g.out_h * g.out_w;
    let image_len = g.in_h * g.in_w * g.channels;
    let len = g.input_len();
    let Some(images) = images_per_block(g).filter(|_| len > 0 && plen > 0) else {
        return with_scratch(cells * plen, |dcols| {
            let mut c = ArrayViewMut2::from_shape((cells, plen), &mut *dcols).expect("dcols shape");
            sgemm(1.0, dy, kt, 0.0, &mut c);
            col2im_vec(dcols, g)
        });
    };
    let mut dx = Vec::with_capacity(len);
    dx.spare_capacity_mut()[..len]
        .par_chunks_mut(images * image_len)
        .enumerate()
        .for_each(|(b, dx)| {
            let n = dx.len() / image_len;
            let bg = Window2d { batch: n, ..*g };
            let first = b * images * per_image;
            let dy = dy.slice(s![first..first + n * per_image, ..]);
            with_scratch(n * per_image * plen, |dcols| {
                // SAFETY: the gemm writes only initialised values.
                matmul_serial_into(dy, kt, unsafe { as_uninit(dcols) });
                col2im_serial(dcols, &bg, dx);
            });
        });
    // SAFETY: the blocks cover all `len` elements and col2im_serial writes
    // every element of its block.
    unsafe { dx.set_len(len) };
    dx
}

/// `s` viewed as possibly uninitialised elements, for a writer that takes
/// such a slice.
///
/// # Safety
/// Only initialised values may be written through the result (`s` must stay
/// initialised).
unsafe fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout; the caller writes only
    // initialised values.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector with entries in [-1, 1).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// 3x3 windows over `batch` images of `size`x`size`x`c`, SAME padding.
    fn geometry(batch: usize, size: usize, c: usize, stride: usize) -> Window2d {
        let out = size.div_ceil(stride);
        let pad = ((out - 1) * stride + 3).saturating_sub(size) / 2;
        Window2d {
            batch,
            in_h: size,
            in_w: size,
            channels: c,
            k_h: 3,
            k_w: 3,
            stride_h: stride,
            stride_w: stride,
            pad_top: pad,
            pad_left: pad,
            out_h: out,
            out_w: out,
        }
    }

    /// The whole-batch products, for comparison: im2col then gemm, and gemm
    /// then col2im.
    fn whole(
        g: &Window2d,
        x: &[f32],
        k: ArrayView2<f32>,
        dy: ArrayView2<f32>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut cols = vec![0.0; g.output_cells() * g.patch_len()];
        im2col(x, g, &mut cols);
        let cmat = ArrayView2::from_shape((g.output_cells(), g.patch_len()), &cols[..]).unwrap();
        let y = matmul_vec(cmat, k);
        let dcols = matmul_vec(dy, k.t());
        (y, col2im_vec(&dcols, g))
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn blocks_agree_with_the_whole_batch() {
        // 33 images of 9x9 (4 per block: 9 blocks, the last of one image) and
        // 30 of 16x16 at stride 2 (8 blocks, the last of two images).
        for (g, cout) in [(geometry(33, 9, 3, 1), 5), (geometry(30, 16, 2, 2), 7)] {
            assert!(images_per_block(&g).is_some(), "{g:?} goes whole");
            let x = values(g.input_len(), 1);
            let k = values(g.patch_len() * cout, 2);
            let k = ArrayView2::from_shape((g.patch_len(), cout), &k[..]).unwrap();
            let dy = values(g.output_cells() * cout, 3);
            let dy = ArrayView2::from_shape((g.output_cells(), cout), &dy[..]).unwrap();
            let (y_want, dx_want) = whole(&g, &x, k, dy);

            assert_close(&patches_times(&x, &g, k, None), &y_want, "y");
            let mut kept = vec![f32::NAN; g.output_cells() * g.patch_len()];
            assert_close(
                &patches_times(&x, &g, k, Some(&mut kept)),
                &y_want,
                "y, kept",
            );
            let mut cols = vec![0.0; kept.len()];
            im2col(&x, &g, &mut cols);
            assert_eq!(kept, cols, "the kept patch matrix");
            assert_close(&col2im_of_product(dy, k.t(), &g), &dx_want, "dx");

            // im2col(x)ᵀ · dy, and with it im2col(x) · k.
            let cmat =
                ArrayView2::from_shape((g.output_cells(), g.patch_len()), &cols[..]).unwrap();
            let dk_want = matmul_vec(cmat.t(), dy);
            let (dk, none) = patches_t_times(&x, &g, dy, None);
            assert_close(&dk, &dk_want, "dk");
            assert!(none.is_none());
            let (dk, y) = patches_t_times(&x, &g, dy, Some(k));
            assert_close(&dk, &dk_want, "dk with y");
            assert_close(&y.unwrap(), &y_want, "y with dk");
        }
    }

    #[test]
    fn small_batches_go_whole_and_empty_shapes_give_empty_results() {
        let g = geometry(7, 9, 3, 1);
        assert_eq!(images_per_block(&g), None);
        let x = values(g.input_len(), 4);
        let k = values(g.patch_len() * 2, 5);
        let k = ArrayView2::from_shape((g.patch_len(), 2), &k[..]).unwrap();
        let dy = values(g.output_cells() * 2, 6);
        let dy = ArrayView2::from_shape((g.output_cells(), 2), &dy[..]).unwrap();
        let (y_want, dx_want) = whole(&g, &x, k, dy);
        assert_close(&patches_times(&x, &g, k, None), &y_want, "y");
        assert_close(&col2im_of_product(dy, k.t(), &g), &dx_want, "dx");
        let mut cols = vec![0.0; g.output_cells() * g.patch_len()];
        im2col(&x, &g, &mut cols);
        let cmat = ArrayView2::from_shape((g.output_cells(), g.patch_len()), &cols[..]).unwrap();
        let (dk, y) = patches_t_times(&x, &g, dy, Some(k));
        assert_close(&dk, &matmul_vec(cmat.t(), dy), "dk");
        assert_close(&y.unwrap(), &y_want, "y with dk");

        // No output channels, no input channels.
        let g = geometry(40, 9, 3, 1);
        let x = values(g.input_len(), 7);
        let k = ArrayView2::from_shape((g.patch_len(), 0), &[][..]).unwrap();
        assert!(patches_times(&x, &g, k, None).is_empty());
        let dy = ArrayView2::from_shape((g.output_cells(), 0), &[][..]).unwrap();
        assert_eq!(col2im_of_product(dy, k.t(), &g), vec![0.0; g.input_len()]);
        let g = geometry(40, 9, 0, 1);
        let k = ArrayView2::from_shape((0, 4), &[][..]).unwrap();
        assert_eq!(
            patches_times(&[], &g, k, None),
            vec![0.0; g.output_cells() * 4]
        );
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let g = geometry(33, 9, 3, 1);
        let x = values(g.input_len(), 8);
        let k = values(g.patch_len() * 4, 9);
        let k = ArrayView2::from_shape((g.patch_len(), 4), &k[..]).unwrap();
        let dy = values(g.output_cells() * 4, 10);
        let dy = ArrayView2::from_shape((g.output_cells(), 4), &dy[..]).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    patches_times(&x, &g, k, None),
                    col2im_of_product(dy, k.t(), &g),
                    patches_t_times(&x, &g, dy, Some(k)),
                )
            })
        };
        assert_eq!(run(1), run(3));
    }
}
