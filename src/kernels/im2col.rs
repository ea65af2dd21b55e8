//! im2col / col2im for 2-D convolutions over NHWC images, and [`Window2d`], the
//! geometry of a sliding window shared with the pooling kernels.
//!
//! `im2col` lays every receptive field (patch) of the input out as one row of a
//! `[N*OH*OW, kh*kw*C]` matrix, in `(ky, kx, c)` order: the order of a HWIO kernel
//! viewed as a `[kh*kw*C, Cout]` matrix. A convolution is then one gemm, whose
//! `[N*OH*OW, Cout]` result is already the NHWC output. `col2im` is its adjoint:
//! it sums each patch row back onto the input cells it came from.
//!
//! Both split their work over rayon's threads, by output row (im2col) or by
//! input row (col2im, gathering, so no two threads write the same cell), and
//! allocate nothing per element.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// The geometry of a 2-D window sliding over NHWC images: input size, window
/// size, strides, padding before (top/left; the rest of the padding is after)
/// and output size.
///
/// Padding cells hold no data: im2col writes zeros for them and col2im drops
/// what falls on them. Strides and window sizes must be non-zero (the ops
/// check this before building one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Images in the batch (N).
    pub batch: usize,
    /// Input height (H).
    pub in_h: usize,
    /// Input width (W).
    pub in_w: usize,
    /// Channels of the input (C).
    pub channels: usize,
    /// Window height (kh).
    pub k_h: usize,
    /// Window width (kw).
    pub k_w: usize,
    /// Vertical stride (sh).
    pub stride_h: usize,
    /// Horizontal stride (sw).
    pub stride_w: usize,
    /// Padding rows before the first input row.
    pub pad_top: usize,
    /// Padding columns before the first input column.
    pub pad_left: usize,
    /// Output height (OH).
    pub out_h: usize,
    /// Output width (OW).
    pub out_w: usize,
}

impl Window2d {
    /// Elements of the input, `N*H*W*C`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.channels
    }

    /// Output cells (rows of the im2col matrix), `N*OH*OW`.
    pub fn output_cells(&self) -> usize {
        self.batch * self.out_h * self.out_w
    }

    /// Elements of one patch (columns of the im2col matrix), `kh*kw*C`.
    pub fn patch_len(&self) -> usize {
        self.k_h * self.k_w * self.channels
    }

    /// Whether the window is a 1x1, stride-1, unpadded one: then the input,
    /// viewed as `[N*H*W, C]`, already is the im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.out_h == self.in_h
            && self.out_w == self.in_w
    }

    /// Along the height: see [`taps`].
    #[inline]
    pub(crate) fn taps_y(&self, oy: usize) -> (isize, usize, usize) {
        taps(oy, self.stride_h, self.pad_top, self.k_h, self.in_h)
    }

    /// Along the width: see [`taps`].
    #[inline]
    pub(crate) fn taps_x(&self, ox: usize) -> (isize, usize, usize) {
        taps(ox, self.stride_w, self.pad_left, self.k_w, self.in_w)
    }
}

/// For output index `o` along one dim: the input index under tap 0 (negative
/// inside the padding before) and the range `lo..hi` of taps that fall on real
/// input cells (`lo <= hi`; empty when the window lies in the padding).
#[inline]
pub(crate) fn taps(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    n: usize,
) -> (isize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let hi = (n as isize - start).clamp(0, k as isize) as usize;
    let lo = ((-start).max(0) as usize).min(hi);
    (start, lo, hi)
}

/// `dst.copy_from_slice(src)`, for the short runs im2col copies: a kernel row
/// of `kw*C` floats (48 to 384 for W4's layers, 3 for a one-channel image).
///
/// With AVX-512 (the crate builds for the CPU it is built on): whole 16-lane
/// vectors and one masked vector for the rest, inline. A `memcpy` call per
/// run, as `copy_from_slice` makes for a length not known at compile time,
/// cost as much as the copying (perf: 4.7% of a W4 step in memmove beside
/// 4.6% in the im2col loop).
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use std::arch::x86_64::{
            _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_storeu_ps,
        };
        let (n, d, s) = (dst.len(), dst.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: both slices hold `n` elements; full vectors cover
        // `i..i + 16 <= n` and the masked one only the `n - i < 16` left.
        // AVX-512F is enabled for the whole build (cfg above).
        unsafe {
            while i + 16 <= n {
                _mm512_storeu_ps(d.add(i), _mm512_loadu_ps(s.add(i)));
                i += 16;
            }
            if i < n {
                let mask = (1u16 << (n - i)) - 1;
                _mm512_mask_storeu_ps(d.add(i), mask, _mm512_maskz_loadu_ps(mask, s.add(i)));
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
            let d: &mut [f32; N] = dst.try_into().expect("copy: lengths agree");
            *d = src.try_into().expect("copy: lengths agree");
        }
        match dst.len() {
            1 => dst[0] = src[0],
            2 => fixed::<2>(dst, src),
            3 => fixed::<3>(dst, src),
            6 => fixed::<6>(dst, src),
            9 => fixed::<9>(dst, src),
            _ => dst.copy_from_slice(src),
        }
    }
}

/// Writes the im2col matrix of `x` (`[N,H,W,C]`, row-major) into `cols`
/// (`[N*OH*OW, kh*kw*C]`, row-major), zeros for padding, split over rayon's
/// threads by output row.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn im2col(x: &[f32], g: &Window2d, cols: &mut [f32]) {
    im2col_into(x, g, cols, true);
}

/// [`im2col`] on the calling thread only: for a block of images inside a task
/// that is already one of several in parallel.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn im2col_serial(x: &[f32], g: &Window2d, cols: &mut [f32]) {
    im2col_into(x, g, cols, false);
}

/// The body of [`im2col`], on rayon's threads when `parallel`.
fn im2col_into(x: &[f32], g: &Window2d, cols: &mut [f32], parallel: bool) {
    assert_eq!(x.len(), g.input_len(), "im2col: input length");
    assert_eq!(
        cols.len(),
        g.output_cells() * g.patch_len(),
        "im2col: cols length"
    );
    let row_len = g.out_w * g.patch_len();
    if row_len == 0 {
        return;
    }
    for_each_row(cols, row_len, parallel, |r, chunk| {
        im2col_row(x, g, r, chunk)
    });
}

/// `f(r, row)` for every `row_len`-element row `r` of `rows`, on rayon's
/// threads when `parallel`.
fn for_each_row<T: Send>(
    rows: &mut [T],
    row_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if parallel {
        rows.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        rows.chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

/// The `OW` patches of output row `r` (image `r / OH`, row `r % OH`) into
/// `chunk` (`OW * kh*kw*C` elements).
#[inline]
fn im2col_row(x: &[f32], g: &Window2d, r: usize, chunk: &mut [f32]) {
    let (c, k) = (g.channels, g.patch_len());
    let image = g.in_h * g.in_w * c;
    let kwc = g.k_w * c;
    let (n, oy) = (r / g.out_h, r % g.out_h);
    let xi = &x[n * image..(n + 1) * image];
    let (y0, ylo, yhi) = g.taps_y(oy);
    for (ox, patch) in chunk.chunks_exact_mut(k).enumerate() {
        let (x0, xlo, xhi) = g.taps_x(ox);
        for (ky, seg) in patch.chunks_exact_mut(kwc).enumerate() {
            if ky < ylo || ky >= yhi || xlo == xhi {
                seg.fill(0.0);
                continue;
            }
            // Taps xlo..xhi of this kernel row are contiguous in x.
            let iy = (y0 + ky as isize) as usize;
            let ix = (x0 + xlo as isize) as usize;
            let from = (iy * g.in_w + ix) * c;
            if xlo == 0 && xhi == g.k_w {
                // Interior: the whole kernel row.
                copy(seg, &xi[from..from + kwc]);
                continue;
            }
            seg[..xlo * c].fill(0.0);
            copy(
                &mut seg[xlo * c..xhi * c],
                &xi[from..from + (xhi - xlo) * c],
            );
            seg[xhi * c..].fill(0.0);
        }
    }
}

/// The adjoint of [`im2col`]: overwrites `dx` (`[N,H,W,C]`) with the sum, over
/// every patch row of `cols` (`[N*OH*OW, kh*kw*C]`), of its entries put back on
/// the input cells they were copied from; entries on padding are dropped.
/// Split over rayon's threads by input row.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn col2im(cols: &[f32], g: &Window2d, dx: &mut [f32]) {
    // SAFETY: MaybeUninit<f32> has f32's layout, and col2im_into writes only
    // initialised values, so `dx` stays initialised.
    let dx = unsafe { &mut *(dx as *mut [f32] as *mut [MaybeUninit<f32>]) };
    col2im_into(cols, g, dx, true);
}

/// [`col2im`] on the calling thread only, into `dx` whose contents need not
/// be initialised (every element is written).
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn col2im_serial(cols: &[f32], g: &Window2d, dx: &mut [MaybeUninit<f32>]) {
    col2im_into(cols, g, dx, false);
}

/// [`col2im`] into a new `Vec` of `g.input_len()` elements, written once (no
/// zero fill of the whole array first: each input row is zeroed just before
/// its sums, while it is in cache).
///
/// **Panics** if `cols`' length does not fit `g` (callers check shapes).
pub fn col2im_vec(cols: &[f32], g: &Window2d) -> Vec<f32> {
    let len = g.input_len();
    let mut dx = Vec::with_capacity(len);
    col2im_into(cols, g, &mut dx.spare_capacity_mut()[..len], true);
    // SAFETY: col2im_into initialises every element of its destination.
    unsafe { dx.set_len(len) };
    dx
}

/// The body of [`col2im`]: initialises every element of `dx`, on rayon's
/// threads when `parallel`.
fn col2im_into(cols: &[f32], g: &Window2d, dx: &mut [MaybeUninit<f32>], parallel: bool) {
    assert_eq!(dx.len(), g.input_len(), "col2im: input length");
    assert_eq!(
        cols.len(),
        g.output_cells() * g.patch_len(),
        "col2im: cols length"
    );
    let row_len = g.in_w * g.channels;
    if row_len == 0 || dx.is_empty() {
        return;
    }
    if g.patch_len() == 0 {
        dx.fill(MaybeUninit::new(0.0));
        return;
    }
    // One task per input row (n, iy), gathering from the output rows whose
    // windows cover it: no two tasks write the same cell.
    for_each_row(dx, row_len, parallel, |r, row| col2im_row(cols, g, r, row));
}

/// Input row `r` (image `r / H`, row `r % H`) of [`col2im`]'s result.
#[inline]
fn col2im_row(cols: &[f32], g: &Window2d, r: usize, row: &mut [MaybeUninit<f32>]) {
    let (c, k) = (g.channels, g.patch_len());
    let kwc = g.k_w * c;
    row.fill(MaybeUninit::new(0.0));
    // SAFETY: every element of `row` was just initialised, and
    // MaybeUninit<f32> has f32's layout.
    let dst = unsafe { &mut *(row as *mut [MaybeUninit<f32>] as *mut [f32]) };
    let (n, iy) = (r / g.in_h, r % g.in_h);
    for ky in 0..g.k_h {
        // iy = oy*sh - pad_top + ky
        let Some(t) = (iy + g.pad_top).checked_sub(ky) else {
            break;
        };
        if t % g.stride_h != 0 || t / g.stride_h >= g.out_h {
            continue;
        }
        let oy = t / g.stride_h;
        let crow = &cols[(n * g.out_h + oy) * g.out_w * k..][..g.out_w * k];
        for (ox, patch) in crow.chunks_exact(k).enumerate() {
            let (x0, xlo, xhi) = g.taps_x(ox);
            if xlo == xhi {
                continue;
            }
            let src = &patch[ky * kwc + xlo * c..ky * kwc + xhi * c];
            let ix = (x0 + xlo as isize) as usize;
            let d = &mut dst[ix * c..(ix + xhi - xlo) * c];
            for (a, b) in d.iter_mut().zip(src) {
                *a += *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        h: usize,
        w: usize,
        c: usize,
        k: usize,
        s: usize,
        pad: usize,
        out: (usize, usize),
    ) -> Window2d {
        Window2d {
            batch: 2,
            in_h: h,
            in_w: w,
            channels: c,
            k_h: k,
            k_w: k + 1,
            stride_h: s,
            stride_w: s,
            pad_top: pad,
            pad_left: pad,
            out_h: out.0,
            out_w: out.1,
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> == <x, col2im(y)>.
    #[test]
    fn col2im_is_adjoint_of_im2col() {
        for g in [
            geom(5, 6, 2, 3, 1, 1, (5, 5)),
            geom(5, 6, 3, 2, 2, 0, (2, 3)),
            geom(4, 4, 1, 3, 3, 1, (2, 2)),
        ] {
            let x: Vec<f32> = (0..g.input_len()).map(|i| (i % 7) as f32 - 3.0).collect();
            let y: Vec<f32> = (0..g.output_cells() * g.patch_len())
                .map(|i| (i % 5) as f32 * 0.5 - 1.0)
                .collect();
            let mut cols = vec![0.0; y.len()];
            im2col(&x, &g, &mut cols);
            let mut dx = vec![1.0; x.len()];
            col2im(&y, &g, &mut dx);
            assert_eq!(col2im_vec(&y, &g), dx);
            let mut serial = vec![MaybeUninit::new(f32::NAN); x.len()];
            col2im_serial(&y, &g, &mut serial);
            // SAFETY: col2im_serial initialised every element.
            let serial: Vec<f32> = serial.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(serial, dx);
            let mut cols_serial = vec![f32::NAN; cols.len()];
            im2col_serial(&x, &g, &mut cols_serial);
            assert_eq!(cols_serial, cols);
            let lhs: f32 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs} for {g:?}");
        }
    }

    #[test]
    fn taps_clip_to_input() {
        assert_eq!(taps(0, 1, 1, 3, 4), (-1, 1, 3));
        assert_eq!(taps(3, 1, 1, 3, 4), (2, 0, 2));
        assert_eq!(taps(0, 1, 5, 3, 4), (-5, 3, 3));
    }
}
