//! Element-wise and last-axis (row) kernels: single-pass maps over one, two or
//! three same-shaped arrays, a numerically stable sigmoid, softmax over the last
//! axis and its vector-Jacobian product, and softmax cross-entropy.
//!
//! Arrays with at least [`PARALLEL_MIN_LEN`] elements are processed with rayon
//! (ndarray's `par_map_collect`, or rayon's `par_chunks` for rows); smaller ones
//! in one sequential pass, where a thread hand-off would cost more than it saves.

use std::borrow::Cow;

use ndarray::{IxDyn, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::exp::exp;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Arrays with at least this many elements are processed in parallel.
pub const PARALLEL_MIN_LEN: usize = 1 << 16;

/// `f` applied to every element of `x`, in one pass.
///
/// ```
/// use adgraph::kernels::elementwise::map1;
/// let x = adgraph::tensor([1.0, -2.0]);
/// assert_eq!(map1(&x, |v| 2.0 * v), adgraph::tensor([2.0, -4.0]));
/// ```
pub fn map1(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
    if x.len() >= PARALLEL_MIN_LEN {
        Zip::from(x).par_map_collect(|&v| f(v))
    } else {
        x.mapv(f)
    }
}

/// Checks that `b` has `a`'s shape (ndarray's `Zip` would panic otherwise).
fn same_shape(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: "operands of an element-wise kernel".into(),
            expected: TensorShape::known(a.shape()),
            got: TensorShape::known(b.shape()),
        })
    }
}

/// `f(a, b)` element by element for two arrays of the same shape, in one pass.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes differ (no broadcasting here).
pub fn map2(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Result<Tensor> {
    same_shape(a, b)?;
    let zip = Zip::from(a).and(b);
    Ok(if a.len() >= PARALLEL_MIN_LEN {
        zip.par_map_collect(|&a, &b| f(a, b))
    } else {
        zip.map_collect(|&a, &b| f(a, b))
    })
}

/// `f(a, b, c)` element by element for three arrays of the same shape, in one pass.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes differ (no broadcasting here).
pub fn map3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) -> Result<Tensor> {
    same_shape(a, b)?;
    same_shape(a, c)?;
    let zip = Zip::from(a).and(b).and(c);
    Ok(if a.len() >= PARALLEL_MIN_LEN {
        zip.par_map_collect(|&a, &b, &c| f(a, b, c))
    } else {
        zip.map_collect(|&a, &b, &c| f(a, b, c))
    })
}

/// `x` where `x > 0`, else 0 (NaN stays NaN): the one definition the `Relu`
/// op and batch norm's fused relu share, so they agree bit for bit.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x <= 0.0 {
        0.0
    } else {
        x
    }
}

/// `g` times relu's derivative at `x`: `g` where `x > 0`, else 0 (0 at
/// `x = 0`, as TensorFlow).
#[inline(always)]
pub fn relu_grad(x: f32, g: f32) -> f32 {
    if x > 0.0 {
        g
    } else {
        0.0
    }
}

/// `x` where `x > 0`, else `alpha * x`: shared by the `LeakyRelu` op and
/// batch norm's fused leaky relu.
#[inline(always)]
pub fn leaky_relu(alpha: f32, x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        alpha * x
    }
}

/// `g` times leaky relu's derivative at `x`: `g` where `x > 0`, else
/// `alpha * g`.
#[inline(always)]
pub fn leaky_relu_grad(alpha: f32, x: f32, g: f32) -> f32 {
    if x > 0.0 {
        g
    } else {
        alpha * g
    }
}

/// `1 / (1 + e^-x)`, without overflow: `e^x / (1 + e^x)` for negative `x`.
///
/// Both halves share `e = e^-|x|` and end in a select rather than a branch:
/// activations have random signs, and a mispredicted branch per element cost
/// more than the exponential (a `[50, 100]` sigmoid: 29 us with the branch).
///
/// ```
/// use adgraph::kernels::elementwise::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert_eq!(sigmoid(1e4), 1.0);
/// assert_eq!(sigmoid(-1e4), 0.0);
/// ```
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// The elements of `x` in row-major order, borrowed when `x` is already so
/// laid out (copied otherwise): the flat view every slice kernel works on.
///
/// ```
/// use adgraph::kernels::elementwise::row_major;
/// let x = adgraph::tensor([[1.0, 2.0], [3.0, 4.0]]);
/// assert_eq!(&*row_major(&x), &[1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(&*row_major(&x.t().to_owned()), &[1.0, 3.0, 2.0, 4.0]);
/// ```
pub fn row_major(x: &Tensor) -> Cow<'_, [f32]> {
    match x.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().copied().collect()),
    }
}

/// Calls `f(r, row)` for each row `r` (a chunk of `n` elements) of `out`, in
/// parallel when `out` is large. `n` must be positive.
fn for_each_row(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PARALLEL_MIN_LEN {
        out.par_chunks_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, row)| f(r, row));
    }
}

/// The length of the last axis of `x`.
fn last_dim(x: &Tensor, what: &str) -> Result<usize> {
    x.shape().last().copied().ok_or_else(|| Error::Rank {
        what: what.into(),
        expected: "at least 1".into(),
        got: TensorShape::known(x.shape()),
    })
}

/// Rows of at most this many classes take [`softmax_row`]'s scalar pass.
const SHORT_ROW: usize = 8;

/// Writes the softmax of `z` into `out` (same length, non-empty) and returns
/// `(max(z), ln(sum(e^(z - max))))`, so that `log_softmax(z)_j = z_j - max - ln_sum`.
#[inline]
fn softmax_row(z: &[f32], out: &mut [f32]) -> (f32, f32) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // An all -inf (or all +inf) row: shift by 0 to give NaN like TF, never panic.
    let shift = if m.is_finite() { m } else { 0.0 };
    let s = if z.len() <= SHORT_ROW {
        // A few classes: one scalar pass; vector loops would be all set-up.
        let mut s = 0.0f32;
        for (o, &v) in out.iter_mut().zip(z) {
            *o = exp(v - shift);
            s += *o;
        }
        s
    } else {
        // The exponentials first, then their sum: a loop that also accumulated
        // the sum would be kept scalar (float sums are not reordered).
        for (o, &v) in out.iter_mut().zip(z) {
            *o = exp(v - shift);
        }
        out.iter().sum()
    };
    let inv = 1.0 / s;
    for o in out.iter_mut() {
        *o *= inv;
    }
    (shift, s.ln())
}

/// Rows per block of [`softmax_ce_block`]: one AVX-512 register of lanes.
const BLOCK_ROWS: usize = 16;

/// Softmax cross-entropy of [`BLOCK_ROWS`] rows of `n <= SHORT_ROW` classes
/// (`z`, `y`: the block's logits and labels, row-major) at once: probabilities
/// into `probs`, losses into `loss`. Class by class across the rows, so that
/// the exponentials and the arithmetic run as vectors of 16 rows; per row the
/// same operations in the same order as [`softmax_row`] and the scalar loss,
/// so bitwise the same results. (W1's `[300, 3]` logits: 13 µs a forward
/// as one row at a time.)
fn softmax_ce_block(z: &[f32], y: &[f32], n: usize, probs: &mut [f32], loss: &mut [f32]) {
    debug_assert!(n <= SHORT_ROW && z.len() == n * BLOCK_ROWS);
    // zt[j][r] = z[r * n + j]: class j of the block's rows.
    let mut zt = [[0.0f32; BLOCK_ROWS]; SHORT_ROW];
    let mut yt = [[0.0f32; BLOCK_ROWS]; SHORT_ROW];
    for (r, (zr, yr)) in z.chunks_exact(n).zip(y.chunks_exact(n)).enumerate() {
        for j in 0..n {
            zt[j][r] = zr[j];
            yt[j][r] = yr[j];
        }
    }
    let mut max = [f32::NEG_INFINITY; BLOCK_ROWS];
    for zj in &zt[..n] {
        for (m, &v) in max.iter_mut().zip(zj) {
            *m = m.max(v);
        }
    }
    // An all -inf (or all +inf) row: shift by 0 to give NaN like TF.
    let shift = max.map(|m| if m.is_finite() { m } else { 0.0 });
    let mut et = [[0.0f32; BLOCK_ROWS]; SHORT_ROW];
    let mut sum = [0.0f32; BLOCK_ROWS];
    for (ej, zj) in et[..n].iter_mut().zip(&zt) {
        for (((e, &v), &k), s) in ej.iter_mut().zip(zj).zip(&shift).zip(&mut sum) {
            *e = exp(v - k);
            *s += *e;
        }
    }
    let inv = sum.map(|s| 1.0 / s);
    let ln_sum = sum.map(f32::ln);
    let mut total = [-0.0f32; BLOCK_ROWS]; // as `Iterator::sum` starts
    for j in 0..n {
        for r in 0..BLOCK_ROWS {
            total[r] += yt[j][r] * ((shift[r] - zt[j][r]) + ln_sum[r]);
        }
    }
    for (r, (pr, l)) in probs.chunks_exact_mut(n).zip(loss).enumerate() {
        for (j, p) in pr.iter_mut().enumerate() {
            *p = et[j][r] * inv[r];
        }
        *l = total[r];
    }
}

/// Softmax over the last axis: `e^(x - max) / sum(e^(x - max))` per row, the
/// row maximum subtracted so that no exponential overflows.
///
/// ```
/// use adgraph::kernels::elementwise::softmax_last_axis;
/// let y = softmax_last_axis(&adgraph::tensor([[0.0, 0.0], [1e4, 0.0]])).unwrap();
/// assert_eq!(y, adgraph::tensor([[0.5, 0.5], [1.0, 0.0]]));
/// ```
///
/// # Errors
/// [`Error::Rank`] when `x` is a scalar.
pub fn softmax_last_axis(x: &Tensor) -> Result<Tensor> {
    let n = last_dim(x, "softmax input")?;
    if n == 0 {
        return Ok(x.clone());
    }
    let z = row_major(x);
    let mut out = vec![0.0f32; z.len()];
    for_each_row(&mut out, n, |r, row| {
        softmax_row(&z[r * n..(r + 1) * n], row);
    });
    Ok(Tensor::from_shape_vec(IxDyn(x.shape()), out)?)
}

/// The vector-Jacobian product of softmax over the last axis:
/// `y * (g - sum(g * y, last axis))`, with `y` the softmax output and `g` the
/// upstream gradient.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y` and `g` differ in shape; [`Error::Rank`]
/// when they are scalars.
pub fn softmax_last_axis_grad(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape(y, g)?;
    let n = last_dim(y, "softmax output")?;
    if n == 0 {
        return Ok(g.clone());
    }
    let (ys, gs) = (row_major(y), row_major(g));
    let mut out = vec![0.0f32; ys.len()];
    for_each_row(&mut out, n, |r, row| {
        let (yr, gr) = (&ys[r * n..(r + 1) * n], &gs[r * n..(r + 1) * n]);
        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        for ((o, &yv), &gv) in row.iter_mut().zip(yr).zip(gr) {
            *o = yv * (gv - dot);
        }
    });
    Ok(Tensor::from_shape_vec(IxDyn(y.shape()), out)?)
}

/// Softmax cross-entropy over the last axis: for each row, with `z` the logits
/// and `y` the labels, `loss = -sum(y * log_softmax(z)) = sum(y * (max(z) - z + ln(sum(e^(z - max)))))`.
///
/// Returns the losses (shape `labels.shape[:-1]`) and `softmax(logits)` (for the
/// gradient). Finite for finite logits of any magnitude.
///
/// # Errors
/// [`Error::ShapeMismatch`] when labels and logits differ in shape; [`Error::Rank`]
/// when they are scalars.
pub fn softmax_cross_entropy(labels: &Tensor, logits: &Tensor) -> Result<(Tensor, Tensor)> {
    same_shape(logits, labels)?;
    let n = last_dim(logits, "logits")?;
    let batch_shape = &logits.shape()[..logits.ndim() - 1];
    let rows: usize = batch_shape.iter().product();
    if n == 0 {
        return Ok((Tensor::zeros(IxDyn(batch_shape)), logits.clone()));
    }
    let (ys, zs) = (row_major(labels), row_major(logits));
    let mut probs = vec![0.0f32; zs.len()];
    let mut loss = vec![0.0f32; rows];
    let row_loss = |r: usize, p: &mut [f32], l: &mut f32| {
        let (zr, yr) = (&zs[r * n..(r + 1) * n], &ys[r * n..(r + 1) * n]);
        let (m, ln_sum) = softmax_row(zr, p);
        *l = yr
            .iter()
            .zip(zr)
            .map(|(&y, &z)| y * ((m - z) + ln_sum))
            .sum();
    };
    if n <= SHORT_ROW && zs.len() < PARALLEL_MIN_LEN {
        let block = n * BLOCK_ROWS;
        let full = rows / BLOCK_ROWS;
        let blocks = probs
            .chunks_exact_mut(block)
            .zip(loss.chunks_exact_mut(BLOCK_ROWS));
        for (b, (p, l)) in blocks.enumerate() {
            let range = b * block..(b + 1) * block;
            softmax_ce_block(&zs[range.clone()], &ys[range], n, p, l);
        }
        // The last rows, fewer than a block, one at a time.
        for r in full * BLOCK_ROWS..rows {
            let (p, l) = (&mut probs[r * n..(r + 1) * n], &mut loss[r]);
            row_loss(r, p, l);
        }
    } else if zs.len() >= PARALLEL_MIN_LEN {
        probs
            .par_chunks_mut(n)
            .zip(loss.par_iter_mut())
            .enumerate()
            .for_each(|(r, (p, l))| row_loss(r, p, l));
    } else {
        probs
            .chunks_mut(n)
            .zip(loss.iter_mut())
            .enumerate()
            .for_each(|(r, (p, l))| row_loss(r, p, l));
    }
    Ok((
        Tensor::from_shape_vec(IxDyn(batch_shape), loss)?,
        Tensor::from_shape_vec(IxDyn(logits.shape()), probs)?,
    ))
}

/// The gradient of softmax cross-entropy w.r.t. the logits:
/// `g[..., None] * (probs - labels)`, with `g` shaped `labels.shape[:-1]`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes do not fit together.
pub fn softmax_cross_entropy_grad(g: &Tensor, probs: &Tensor, labels: &Tensor) -> Result<Tensor> {
    same_shape(probs, labels)?;
    let n = last_dim(probs, "logits")?;
    if g.shape() != &probs.shape()[..probs.ndim() - 1] {
        return Err(Error::ShapeMismatch {
            what: "upstream gradient of softmax cross-entropy".into(),
            expected: TensorShape::known(&probs.shape()[..probs.ndim() - 1]),
            got: TensorShape::known(g.shape()),
        });
    }
    if n == 0 {
        return Ok(probs.clone());
    }
    let (gs, ps, ys) = (row_major(g), row_major(probs), row_major(labels));
    let mut out = vec![0.0f32; ps.len()];
    for_each_row(&mut out, n, |r, row| {
        let gr = gs[r];
        let (pr, yr) = (&ps[r * n..(r + 1) * n], &ys[r * n..(r + 1) * n]);
        for ((o, &p), &y) in row.iter_mut().zip(pr).zip(yr) {
            *o = gr * (p - y);
        }
    });
    Ok(Tensor::from_shape_vec(IxDyn(probs.shape()), out)?)
}

/// `sum(x^2)`, accumulated in `f64`.
///
/// ```
/// use adgraph::kernels::elementwise::sum_of_squares;
/// assert_eq!(sum_of_squares(&adgraph::tensor([3.0, -4.0])), 25.0);
/// ```
pub fn sum_of_squares(x: &Tensor) -> f64 {
    match x.as_slice_memory_order() {
        // Chunk sums added in chunk order: the result does not depend on the
        // number of threads.
        Some(s) if s.len() >= PARALLEL_MIN_LEN => s
            .par_chunks(1 << 14)
            .map(squares_in_lanes)
            .collect::<Vec<f64>>()
            .iter()
            .sum(),
        Some(s) => squares_in_lanes(s),
        None => squares_in_lanes(&x.iter().copied().collect::<Vec<f32>>()),
    }
}

/// `sum(x^2)` in f64 over eight interleaved partial sums: one running sum
/// waits on each add's latency (a 7,840-weight l2norm took 6 us; the lanes
/// vectorise and overlap).
fn squares_in_lanes(xs: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            let d = f64::from(v);
            *l += d * d;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-row blocks of short rows give bitwise what one row at a time
    /// gives (softmax_row and the loss sum), for every short class count,
    /// with a remainder of rows, and rows of -inf, huge and NaN logits.
    #[test]
    fn short_row_blocks_match_one_row_at_a_time() {
        for n in 1..=SHORT_ROW {
            let rows = 2 * BLOCK_ROWS + 5;
            let mut z: Vec<f32> = (0..rows * n)
                .map(|i| ((i * 7919) % 201) as f32 * 0.07 - 7.0)
                .collect();
            z[..n].fill(f32::NEG_INFINITY);
            z[n] = 1e30;
            z[3 * n] = f32::NAN;
            let y: Vec<f32> = (0..rows * n)
                .map(|i| ((i % n) == (i / n) % n) as u8 as f32)
                .collect();
            let (zt, yt) = (
                Tensor::from_shape_vec(IxDyn(&[rows, n]), z.clone()).unwrap(),
                Tensor::from_shape_vec(IxDyn(&[rows, n]), y.clone()).unwrap(),
            );
            let (loss, probs) = softmax_cross_entropy(&yt, &zt).unwrap();
            for r in 0..rows {
                let (zr, yr) = (&z[r * n..(r + 1) * n], &y[r * n..(r + 1) * n]);
                let mut p = vec![0.0; n];
                let (m, ln_sum) = softmax_row(zr, &mut p);
                let l: f32 = yr
                    .iter()
                    .zip(zr)
                    .map(|(&y, &z)| y * ((m - z) + ln_sum))
                    .sum();
                assert_eq!(loss[[r]].to_bits(), l.to_bits(), "n={n} row {r}: loss");
                for j in 0..n {
                    assert_eq!(
                        probs[[r, j]].to_bits(),
                        p[j].to_bits(),
                        "n={n} row {r} class {j}"
                    );
                }
            }
        }
    }
}
