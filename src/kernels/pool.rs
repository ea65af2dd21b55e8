//! Max and average pooling over NHWC images, forward and backward, and the
//! gather that is the adjoint of max pooling's backward.
//!
//! Forward makes a single pass per output cell over the real (non-padding)
//! cells of its window, with the channels innermost (contiguous in NHWC), one
//! rayon task per output row. Backward is a scatter-add, one rayon task per
//! image. Nothing is allocated per element.

use rayon::prelude::*;

use super::im2col::Window2d;

/// The arg-max of a window that holds no input cell (it cannot happen with
/// TensorFlow's SAME or VALID padding). Backward skips it.
pub const NO_ARGMAX: usize = usize::MAX;

/// Max pooling: `out[n,oy,ox,c]` is the largest `x` in the window, padding
/// never wins. `argmax` gets, for each output element, the flat index into `x`
/// of the first (in row-major window order) cell holding that maximum.
///
/// `x` is `[N,H,W,C]`; `out` and `argmax` are `[N,OH,OW,C]`, all row-major.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn max_pool(x: &[f32], g: &Window2d, out: &mut [f32], argmax: &mut [usize]) {
    let c = g.channels;
    assert_eq!(x.len(), g.input_len(), "max_pool: input length");
    assert_eq!(out.len(), g.output_cells() * c, "max_pool: output length");
    assert_eq!(argmax.len(), out.len(), "max_pool: argmax length");
    let row_len = g.out_w * c;
    if row_len == 0 || out.is_empty() {
        return;
    }
    out.par_chunks_mut(row_len)
        .zip(argmax.par_chunks_mut(row_len))
        .enumerate()
        .for_each(|(r, (orow, arow))| {
            let (n, oy) = (r / g.out_h, r % g.out_h);
            let (y0, ylo, yhi) = g.taps_y(oy);
            for (ox, (o, a)) in orow
                .chunks_exact_mut(c)
                .zip(arow.chunks_exact_mut(c))
                .enumerate()
            {
                let (x0, xlo, xhi) = g.taps_x(ox);
                let mut first = true;
                for ky in ylo..yhi {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in xlo..xhi {
                        let ix = (x0 + kx as isize) as usize;
                        let base = ((n * g.in_h + iy) * g.in_w + ix) * c;
                        let src = &x[base..base + c];
                        if first {
                            o.copy_from_slice(src);
                            for (j, ai) in a.iter_mut().enumerate() {
                                *ai = base + j;
                            }
                            first = false;
                        } else {
                            // Bit masks, not branches (nor selects, which LLVM
                            // may turn back into branches): which cell wins is
                            // data dependent, and mispredictions cost 5x here.
                            for (j, ((oj, aj), &v)) in
                                o.iter_mut().zip(a.iter_mut()).zip(src).enumerate()
                            {
                                let better = usize::from(v > *oj).wrapping_neg();
                                *aj = (*aj & !better) | ((base + j) & better);
                                let fbetter = better as u32;
                                *oj = f32::from_bits(
                                    (oj.to_bits() & !fbetter) | (v.to_bits() & fbetter),
                                );
                            }
                        }
                    }
                }
                if first {
                    o.fill(0.0);
                    a.fill(NO_ARGMAX);
                }
            }
        });
}

/// Max pooling's backward: overwrites `dx` (`[N,H,W,C]`) with each output
/// gradient `dy[i]` added at `argmax[i]` (as written by [`max_pool`]).
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
/// Indices outside their image (such as [`NO_ARGMAX`]) are skipped.
pub fn max_pool_backward(dy: &[f32], argmax: &[usize], g: &Window2d, dx: &mut [f32]) {
    let c = g.channels;
    assert_eq!(dx.len(), g.input_len(), "max_pool_backward: input length");
    assert_eq!(
        dy.len(),
        g.output_cells() * c,
        "max_pool_backward: output length"
    );
    assert_eq!(argmax.len(), dy.len(), "max_pool_backward: argmax length");
    let image = g.in_h * g.in_w * c;
    let out_image = g.out_h * g.out_w * c;
    if image == 0 || dx.is_empty() {
        return;
    }
    if out_image == 0 {
        dx.fill(0.0);
        return;
    }
    dx.par_chunks_mut(image)
        .zip(dy.par_chunks(out_image).zip(argmax.par_chunks(out_image)))
        .enumerate()
        .for_each(|(n, (dxi, (dyi, ai)))| {
            dxi.fill(0.0);
            let base = n * image;
            for (&d, &a) in dyi.iter().zip(ai) {
                if let Some(cell) = dxi.get_mut(a.wrapping_sub(base)) {
                    *cell += d;
                }
            }
        });
}

/// The adjoint of [`max_pool_backward`] (max pooling's second derivative):
/// overwrites `out` (`[N,OH,OW,C]`) with `g[argmax[i]]` for each output
/// element `i` (`g` is `[N,H,W,C]`), 0 where the arg-max lies outside its
/// image (such as [`NO_ARGMAX`]). One rayon task per image.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn max_pool_gather(g_in: &[f32], argmax: &[usize], g: &Window2d, out: &mut [f32]) {
    let c = g.channels;
    assert_eq!(g_in.len(), g.input_len(), "max_pool_gather: input length");
    assert_eq!(
        out.len(),
        g.output_cells() * c,
        "max_pool_gather: output length"
    );
    assert_eq!(argmax.len(), out.len(), "max_pool_gather: argmax length");
    let image = g.in_h * g.in_w * c;
    let out_image = g.out_h * g.out_w * c;
    if out_image == 0 || out.is_empty() {
        return;
    }
    if image == 0 {
        out.fill(0.0);
        return;
    }
    out.par_chunks_mut(out_image)
        .zip(argmax.par_chunks(out_image))
        .zip(g_in.par_chunks(image))
        .enumerate()
        .for_each(|(n, ((oi, ai), gi))| {
            let base = n * image;
            for (o, &a) in oi.iter_mut().zip(ai) {
                *o = gi.get(a.wrapping_sub(base)).copied().unwrap_or(0.0);
            }
        });
}

/// Average pooling: `out[n,oy,ox,c]` is the mean of `x` over the real cells of
/// the window; padding cells are left out of the divisor (TensorFlow).
///
/// `x` is `[N,H,W,C]`, `out` is `[N,OH,OW,C]`, both row-major.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn avg_pool(x: &[f32], g: &Window2d, out: &mut [f32]) {
    let c = g.channels;
    assert_eq!(x.len(), g.input_len(), "avg_pool: input length");
    assert_eq!(out.len(), g.output_cells() * c, "avg_pool: output length");
    let row_len = g.out_w * c;
    if row_len == 0 || out.is_empty() {
        return;
    }
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(r, orow)| {
            let (n, oy) = (r / g.out_h, r % g.out_h);
            let (y0, ylo, yhi) = g.taps_y(oy);
            for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
                let (x0, xlo, xhi) = g.taps_x(ox);
                o.fill(0.0);
                for ky in ylo..yhi {
                    let iy = (y0 + ky as isize) as usize;
                    let ix = (x0 + xlo as isize) as usize;
                    let base = ((n * g.in_h + iy) * g.in_w + ix) * c;
                    // The window's cells of this row are contiguous.
                    for cell in x[base..base + (xhi - xlo) * c].chunks_exact(c) {
                        for (oj, &v) in o.iter_mut().zip(cell) {
                            *oj += v;
                        }
                    }
                }
                let count = (yhi - ylo) * (xhi - xlo);
                if count > 0 {
                    let inv = 1.0 / count as f32;
                    o.iter_mut().for_each(|v| *v *= inv);
                }
            }
        });
}

/// Average pooling's backward: overwrites `dx` (`[N,H,W,C]`) with, for each
/// input cell, the sum of `dy / count` over the windows that hold it, `count`
/// being the window's number of real cells.
///
/// **Panics** if the slices' lengths do not fit `g` (callers check shapes).
pub fn avg_pool_backward(dy: &[f32], g: &Window2d, dx: &mut [f32]) {
    let c = g.channels;
    assert_eq!(dx.len(), g.input_len(), "avg_pool_backward: input length");
    assert_eq!(
        dy.len(),
        g.output_cells() * c,
        "avg_pool_backward: output length"
    );
    let image = g.in_h * g.in_w * c;
    let out_image = g.out_h * g.out_w * c;
    if image == 0 || dx.is_empty() {
        return;
    }
    if out_image == 0 {
        dx.fill(0.0);
        return;
    }
    dx.par_chunks_mut(image)
        .zip(dy.par_chunks(out_image))
        .for_each(|(dxi, dyi)| {
            dxi.fill(0.0);
            for (o, d) in dyi.chunks_exact(c).enumerate() {
                let (oy, ox) = (o / g.out_w, o % g.out_w);
                let (y0, ylo, yhi) = g.taps_y(oy);
                let (x0, xlo, xhi) = g.taps_x(ox);
                let count = (yhi - ylo) * (xhi - xlo);
                if count == 0 {
                    continue;
                }
                let inv = 1.0 / count as f32;
                for ky in ylo..yhi {
                    let iy = (y0 + ky as isize) as usize;
                    let ix = (x0 + xlo as isize) as usize;
                    let base = (iy * g.in_w + ix) * c;
                    for cell in dxi[base..base + (xhi - xlo) * c].chunks_exact_mut(c) {
                        for (a, &v) in cell.iter_mut().zip(d) {
                            *a += v * inv;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3x3 windows at stride 2 over 2 images of 5x4x2, SAME padding.
    fn geometry() -> Window2d {
        Window2d {
            batch: 2,
            in_h: 5,
            in_w: 4,
            channels: 2,
            k_h: 3,
            k_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_top: 1,
            pad_left: 0,
            out_h: 3,
            out_w: 2,
        }
    }

    #[test]
    fn the_gather_is_the_adjoint_of_max_pool_backward() {
        let g = geometry();
        let x: Vec<f32> = (0..g.input_len())
            .map(|i| ((i * 37) % 101) as f32)
            .collect();
        let len = g.output_cells() * g.channels;
        let (mut out, mut argmax) = (vec![0.0; len], vec![0; len]);
        max_pool(&x, &g, &mut out, &mut argmax);
        let dy: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).sin()).collect();
        let gin: Vec<f32> = (0..g.input_len()).map(|i| (i as f32 * 1.3).cos()).collect();
        let mut dx = vec![f32::NAN; g.input_len()];
        max_pool_backward(&dy, &argmax, &g, &mut dx);
        let mut gathered = vec![f32::NAN; len];
        max_pool_gather(&gin, &argmax, &g, &mut gathered);
        for (o, &a) in gathered.iter().zip(&argmax) {
            assert_eq!(*o, gin[a]);
        }
        // <gather(g), dy> = <g, scatter(dy)>
        let lhs: f64 = gathered
            .iter()
            .zip(&dy)
            .map(|(a, b)| f64::from(a * b))
            .sum();
        let rhs: f64 = gin.iter().zip(&dx).map(|(a, b)| f64::from(a * b)).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
