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
use crate::shape::{broadcast_shapes, TensorShape};
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

/// `cond != 0 ? x : y` element by element, the three broadcast against each
/// other (NumPy rules): the kernel of `where_`.
///
/// A NaN condition counts as true (it is not 0), as in TensorFlow.
///
/// ```
/// use adgraph::kernels::elementwise::select;
/// let c = adgraph::tensor([[1.0], [0.0]]);
/// let x = adgraph::tensor([1.0, 2.0, 3.0]);
/// let y = adgraph::tensor(-1.0);
/// let z = select(&c, &x, &y).unwrap();
/// assert_eq!(z, adgraph::tensor([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]]));
/// ```
///
/// # Errors
/// [`Error::Broadcast`] when the three shapes do not broadcast to one.
pub fn select(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let pick = |c: f32, a: f32, b: f32| if c != 0.0 { a } else { b };
    if cond.shape() == x.shape() && x.shape() == y.shape() {
        return map3(cond, x, y, pick);
    }
    let out =
        broadcast_shapes(cond.shape(), x.shape()).and_then(|s| broadcast_shapes(&s, y.shape()))?;
    // The gradients of `where_`, `maximum` and `minimum` select between a
    // full-shaped gradient and a scalar 0: one pass without broadcast views.
    let first = |t: &Tensor| t.iter().next().copied().unwrap_or_default();
    if cond.shape() == out.as_slice() {
        if x.shape() == out.as_slice() && y.len() == 1 {
            let b = first(y);
            return map2(cond, x, |c, a| pick(c, a, b));
        }
        if y.shape() == out.as_slice() && x.len() == 1 {
            let a = first(x);
            return map2(cond, y, |c, b| pick(c, a, b));
        }
    }
    let views = (
        cond.broadcast(IxDyn(&out)),
        x.broadcast(IxDyn(&out)),
        y.broadcast(IxDyn(&out)),
    );
    let (Some(cb), Some(xb), Some(yb)) = views else {
        return Err(Error::Broadcast {
            lhs: TensorShape::known(cond.shape()),
            rhs: TensorShape::known(&out),
        });
    };
    let zip = Zip::from(&cb).and(&xb).and(&yb);
    Ok(if out.iter().product::<usize>() >= PARALLEL_MIN_LEN {
        zip.par_map_collect(|&c, &a, &b| pick(c, a, b))
    } else {
        zip.map_collect(|&c, &a, &b| pick(c, a, b))
    })
}

// ------------------------------------------------------------ erf and gelu

/// Chebyshev coefficients of `erf(x) / x` as a function of `u = x^2` on
/// `[0, 1]` (`t = 2u - 1`). This and the two tables below were fitted for
/// this crate: interpolation at the Chebyshev nodes of the degree, with the
/// function evaluated to 40 digits (mpmath); over the whole line the
/// resulting `erf` is within 4e-11 relative of the exact value (checked on
/// 40,000 points), far below an `f32` ulp.
const ERF_SMALL: [f64; 9] = [
    0.9754769393826541,
    -0.14226120510371365,
    0.010035582187599796,
    -0.0005768764699767485,
    2.741993125219606e-05,
    -1.1043175507343247e-06,
    3.848875541324144e-08,
    -1.1808578815239978e-09,
    3.231622510093695e-11,
];

/// Chebyshev coefficients of `erfc(x) e^(x^2)` on `[1, 4]` (`t = (2x - 5) / 3`).
const ERFC_MID: [f64; 18] = [
    0.24442575284923573,
    -0.13589862891594598,
    0.03563511414853497,
    -0.00888409861822249,
    0.002118423997553177,
    -0.00048539876408003704,
    0.00010727375453771771,
    -2.2936634481904863e-05,
    4.756874691575554e-06,
    -9.589944832662676e-07,
    1.882900688295262e-07,
    -3.6063206621001275e-08,
    6.747602049067714e-09,
    -1.2349070234231097e-09,
    2.2131488904493825e-10,
    -3.887876733249573e-11,
    6.696421542982453e-12,
    -1.1033796212098104e-12,
];

/// Chebyshev coefficients of `erfc(x) e^(x^2) x sqrt(pi)` as a function of
/// `s = 1/x` on `[0, 1/4]` (`x >= 4`, `t = 8s - 1`); the function tends to 1.
const ERFC_LARGE: [f64; 10] = [
    0.9889949206209155,
    -0.01449223964962005,
    -0.003356674341646123,
    0.00014419252046571004,
    1.2205885545749576e-05,
    -1.5364386757834568e-06,
    -1.8798622782568152e-08,
    1.6180098446229677e-08,
    -9.101464806521439e-10,
    -1.3309136087754489e-10,
];

/// `sum_k c_k T_k(t)` by Clenshaw's recurrence.
#[inline]
fn chebyshev(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0f64, 0.0f64);
    for &ck in c[1..].iter().rev() {
        (b1, b2) = (2.0 * t * b1 - b2 + ck, b1);
    }
    t * b1 - b2 + c[0]
}

/// `1 / sqrt(pi)`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

/// The complementary error function `1 - erf(x)` in `f64`, without the
/// cancellation of `1 - erf(x)` for large `x` (relative error below 1e-10
/// wherever it is a normal number).
#[inline]
pub fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 1.0 {
        1.0 - erf_f64(x)
    } else if x < 4.0 {
        (-x * x).exp() * chebyshev(&ERFC_MID, (2.0 * x - 5.0) / 3.0)
    } else {
        let s = 1.0 / x;
        (-x * x).exp() * s * FRAC_1_SQRT_PI * chebyshev(&ERFC_LARGE, 8.0 * s - 1.0)
    }
}

/// The error function `2/sqrt(pi) * integral_0^x e^(-t^2) dt` in `f64`
/// (relative error below 1e-10).
#[inline]
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    if a < 1.0 {
        x * chebyshev(&ERF_SMALL, 2.0 * x * x - 1.0)
    } else if a.is_nan() {
        x
    } else {
        (1.0 - erfc_f64(a)).copysign(x)
    }
}

/// The error function of an `f32`, computed in `f64` and rounded once: the
/// correctly rounded value but for rare ties.
///
/// ```
/// use adgraph::kernels::elementwise::erf;
/// assert_eq!(erf(0.0), 0.0);
/// assert!((erf(0.5) - 0.520_499_9).abs() < 1e-7);
/// assert_eq!(erf(-10.0), -1.0);
/// assert!(erf(f32::NAN).is_nan());
/// ```
#[inline]
pub fn erf(x: f32) -> f32 {
    erf_f64(f64::from(x)) as f32
}

/// `2/sqrt(pi) * e^(-x^2)`, the derivative of [`erf`].
#[inline]
pub fn erf_slope(x: f32) -> f32 {
    (2.0 * FRAC_1_SQRT_PI * (-f64::from(x) * f64::from(x)).exp()) as f32
}

/// `sqrt(2/pi)`, the scale inside the tanh form of gelu.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh form of gelu.
const GELU_CUBIC: f32 = 0.044_715;

/// gelu, exact form: `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, with the
/// normal distribution function `Phi(x) = 0.5 erfc(-x / sqrt 2)` in `f64`,
/// so that it stays accurate (not 0) for large negative `x`.
#[inline]
pub fn gelu_exact(x: f32) -> f32 {
    let x = f64::from(x);
    (x * 0.5 * erfc_f64(-x * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

/// The derivative of [`gelu_exact`]: `Phi(x) + x * phi(x)`, with the normal
/// density `phi(x) = e^(-x^2 / 2) / sqrt(2 pi)`.
#[inline]
pub fn gelu_exact_slope(x: f32) -> f32 {
    let x = f64::from(x);
    let cdf = 0.5 * erfc_f64(-x * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * x * x).exp() * (FRAC_1_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    (cdf + x * pdf) as f32
}

/// gelu, tanh form: `0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`,
/// computed as `x * sigmoid(2u)` (the same function: `0.5 (1 + tanh(u)) =
/// sigmoid(2u)`) with the branch-free [`exp`], so
/// that a loop of it vectorises (`f32::tanh` calls the C library once per
/// element) and stays accurate where `1 + tanh(u)` would cancel (large
/// negative `x`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    x * sigmoid(2.0 * SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x))
}

/// The derivative of [`gelu_tanh`]: with `s = sigmoid(2u)` (so `0.5 (1 + t) = s`
/// and `1 - t^2 = 4 s (1 - s)` for `t = tanh(u)`),
/// `0.5 (1 + t) + 0.5 x (1 - t^2) du/dx = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
#[inline]
pub fn gelu_tanh_slope(x: f32) -> f32 {
    let s = sigmoid(2.0 * SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x));
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
    s + 2.0 * x * s * (1.0 - s) * du
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^-|x|)`.
///
/// ```
/// use adgraph::kernels::elementwise::softplus;
/// assert_eq!(softplus(1e4), 1e4);
/// assert_eq!(softplus(-1e4), 0.0);
/// assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-7);
/// ```
#[inline]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + exp(-x.abs()).ln_1p()
}

/// The derivative of `x * sigmoid(x)` (silu): `s (1 + x (1 - s))`, `s = sigmoid(x)`.
#[inline]
pub fn silu_slope(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

// ------------------------------------------------------------ softmax along an axis

/// `x`'s shape seen as `[outer, n, inner]` around `axis`: returns `(n, inner)`.
fn around_axis(x: &Tensor, axis: usize, what: &str) -> Result<(usize, usize)> {
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(Error::invalid(format!(
            "{what}: axis {axis} is out of range for shape {}",
            TensorShape::known(shape)
        )));
    }
    Ok((shape[axis], shape[axis + 1..].iter().product()))
}

/// Calls `f(x_block, other_block, out_block, inner)` for each block of
/// `n * inner` elements (one index of the axes before `axis`; `n` the length
/// of `axis`, `inner` the size of the axes after it) of `x`, of `other` (empty
/// when `None`; it must have `x`'s shape) and of the output, and returns the
/// output. An empty block gives `other` (or `x`) back as it is.
fn along_axis(
    x: &Tensor,
    other: Option<&Tensor>,
    axis: usize,
    what: &str,
    f: impl Fn(&[f32], &[f32], &mut [f32], usize) + Sync + Send,
) -> Result<Tensor> {
    if let Some(o) = other {
        same_shape(x, o)?;
    }
    let (n, inner) = around_axis(x, axis, what)?;
    let block = n * inner;
    if block == 0 || x.is_empty() {
        return Ok(other.unwrap_or(x).clone());
    }
    let xs = row_major(x);
    let os = other.map(row_major);
    let os_ref: &[f32] = os.as_deref().unwrap_or(&[]);
    let mut out = vec![0.0f32; xs.len()];
    for_each_row(&mut out, block, |b, o| {
        let range = b * block..(b + 1) * block;
        let second = if os_ref.is_empty() {
            &[][..]
        } else {
            &os_ref[range.clone()]
        };
        f(&xs[range], second, o, inner);
    });
    Ok(Tensor::from_shape_vec(IxDyn(x.shape()), out)?)
}

/// The maximum of each of the `inner` lanes of a block `z` (`n` rows of
/// `inner`), as the shift of a stable softmax: 0 where the maximum is not
/// finite (all -inf or +inf: the result is NaN like TF, never a panic).
fn lane_shift(z: &[f32], inner: usize) -> Vec<f32> {
    let mut m = vec![f32::NEG_INFINITY; inner];
    for row in z.chunks_exact(inner) {
        for (mi, &v) in m.iter_mut().zip(row) {
            *mi = mi.max(v);
        }
    }
    for mi in &mut m {
        if !mi.is_finite() {
            *mi = 0.0;
        }
    }
    m
}

/// Writes `e^(z - shift)` into `out` lane by lane and returns each lane's sum.
fn lane_exp_sums(z: &[f32], shift: &[f32], out: &mut [f32]) -> Vec<f32> {
    let inner = shift.len();
    let mut s = vec![0.0f32; inner];
    for (orow, zrow) in out.chunks_exact_mut(inner).zip(z.chunks_exact(inner)) {
        for (((o, &v), &k), si) in orow.iter_mut().zip(zrow).zip(shift).zip(&mut s) {
            *o = exp(v - k);
            *si += *o;
        }
    }
    s
}

/// Softmax along `axis`: `e^(x - max) / sum(e^(x - max))` over that axis.
/// For the last axis (or one followed only by size-1 axes), the same row
/// kernel as [`softmax_last_axis`], bit for bit; another axis runs over lanes
/// of the axes after it, which stay contiguous (no transpose).
///
/// ```
/// use adgraph::kernels::elementwise::softmax_along;
/// let y = softmax_along(&adgraph::tensor([[0.0, 1e4], [0.0, 0.0]]), 0).unwrap();
/// assert_eq!(y, adgraph::tensor([[0.5, 1.0], [0.5, 0.0]]));
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `axis` is not an axis of `x`.
pub fn softmax_along(x: &Tensor, axis: usize) -> Result<Tensor> {
    along_axis(x, None, axis, "softmax", |z, _, out, inner| {
        if inner == 1 {
            softmax_row(z, out);
            return;
        }
        let shift = lane_shift(z, inner);
        let sums = lane_exp_sums(z, &shift, out);
        let inv: Vec<f32> = sums.iter().map(|s| 1.0 / s).collect();
        for orow in out.chunks_exact_mut(inner) {
            for (o, &k) in orow.iter_mut().zip(&inv) {
                *o *= k;
            }
        }
    })
}

/// The vector-Jacobian product of softmax along `axis`:
/// `y * (g - sum(g * y, axis))`, with `y` the softmax output.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y` and `g` differ in shape;
/// [`Error::InvalidArgument`] when `axis` is not an axis of theirs.
pub fn softmax_along_grad(y: &Tensor, g: &Tensor, axis: usize) -> Result<Tensor> {
    along_axis(
        y,
        Some(g),
        axis,
        "softmax gradient",
        |ys, gs, out, inner| {
            if inner == 1 {
                let dot: f32 = ys.iter().zip(gs).map(|(a, b)| a * b).sum();
                for ((o, &yv), &gv) in out.iter_mut().zip(ys).zip(gs) {
                    *o = yv * (gv - dot);
                }
                return;
            }
            let mut dot = vec![0.0f32; inner];
            for (yrow, grow) in ys.chunks_exact(inner).zip(gs.chunks_exact(inner)) {
                for ((d, &yv), &gv) in dot.iter_mut().zip(yrow).zip(grow) {
                    *d += yv * gv;
                }
            }
            let rows = out
                .chunks_exact_mut(inner)
                .zip(ys.chunks_exact(inner).zip(gs.chunks_exact(inner)));
            for (orow, (yrow, grow)) in rows {
                for (((o, &yv), &gv), &d) in orow.iter_mut().zip(yrow).zip(grow).zip(&dot) {
                    *o = yv * (gv - d);
                }
            }
        },
    )
}

/// Log-softmax along `axis`: `x - max - ln(sum(e^(x - max)))` over that axis,
/// finite for finite inputs of any magnitude.
///
/// ```
/// use adgraph::kernels::elementwise::log_softmax_along;
/// let y = log_softmax_along(&adgraph::tensor([[0.0, 0.0], [1e4, 0.0]]), 1).unwrap();
/// assert_eq!(y, adgraph::tensor([[-2f32.ln(), -2f32.ln()], [0.0, -1e4]]));
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `axis` is not an axis of `x`.
pub fn log_softmax_along(x: &Tensor, axis: usize) -> Result<Tensor> {
    along_axis(x, None, axis, "log_softmax", |z, _, out, inner| {
        if inner == 1 {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let shift = if m.is_finite() { m } else { 0.0 };
            let s: f32 = z.iter().map(|&v| exp(v - shift)).sum();
            let c = shift + s.ln();
            for (o, &v) in out.iter_mut().zip(z) {
                *o = v - c;
            }
            return;
        }
        let shift = lane_shift(z, inner);
        let sums = lane_exp_sums(z, &shift, out);
        let offset: Vec<f32> = shift.iter().zip(&sums).map(|(k, s)| k + s.ln()).collect();
        for (orow, zrow) in out.chunks_exact_mut(inner).zip(z.chunks_exact(inner)) {
            for ((o, &v), &c) in orow.iter_mut().zip(zrow).zip(&offset) {
                *o = v - c;
            }
        }
    })
}

/// The vector-Jacobian product of log-softmax along `axis`:
/// `g - e^y * sum(g, axis)`, with `y` the log-softmax output.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y` and `g` differ in shape;
/// [`Error::InvalidArgument`] when `axis` is not an axis of theirs.
pub fn log_softmax_along_grad(y: &Tensor, g: &Tensor, axis: usize) -> Result<Tensor> {
    along_axis(
        y,
        Some(g),
        axis,
        "log_softmax gradient",
        |ys, gs, out, inner| {
            if inner == 1 {
                let sum: f32 = gs.iter().sum();
                for ((o, &yv), &gv) in out.iter_mut().zip(ys).zip(gs) {
                    *o = gv - exp(yv) * sum;
                }
                return;
            }
            let mut sum = vec![0.0f32; inner];
            for grow in gs.chunks_exact(inner) {
                for (s, &gv) in sum.iter_mut().zip(grow) {
                    *s += gv;
                }
            }
            let rows = out
                .chunks_exact_mut(inner)
                .zip(ys.chunks_exact(inner).zip(gs.chunks_exact(inner)));
            for (orow, (yrow, grow)) in rows {
                for (((o, &yv), &gv), &s) in orow.iter_mut().zip(yrow).zip(grow).zip(&sum) {
                    *o = gv - exp(yv) * s;
                }
            }
        },
    )
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

    /// erf by its Taylor series in f64 (for |x| <= 3: the largest term is
    /// about 170, so the sum keeps about 1e-13 of relative precision).
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0f64);
        while term.abs() > 1e-18 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 * FRAC_1_SQRT_PI
    }

    /// erfc by its continued fraction, `e^(-x^2)/sqrt(pi) / (x + (1/2)/(x +
    /// 1/(x + (3/2)/(x + ...))))`, evaluated from depth 400 (x >= 2).
    fn erfc_fraction(x: f64) -> f64 {
        let mut t = x;
        for k in (1..=400).rev() {
            t = x + f64::from(k) * 0.5 / t;
        }
        (-x * x).exp() * FRAC_1_SQRT_PI / t
    }

    /// The sigmoid form of the tanh gelu and its slope agree with the tanh
    /// form computed in f64, relatively (no cancellation for negative x).
    #[test]
    fn gelu_tanh_matches_the_tanh_form() {
        let c = f64::from(SQRT_2_OVER_PI);
        for i in -2_000..=2_000 {
            let x = i as f32 * 5e-3;
            let xd = f64::from(x);
            let u = c * (xd + 0.044715 * xd.powi(3));
            let t = u.tanh();
            // 0.5 (1 + t) and 1 - t^2, from tanh where 1 + t does not cancel
            // in f64 either, else from e^(2u) (the same functions).
            let (half_one_plus_t, one_minus_t2) = if t > -0.5 {
                (0.5 * (1.0 + t), 1.0 - t * t)
            } else {
                let e = (2.0 * u).exp();
                (e / (1.0 + e), 4.0 * e / ((1.0 + e) * (1.0 + e)))
            };
            let exact = xd * half_one_plus_t;
            let slope =
                half_one_plus_t + 0.5 * xd * one_minus_t2 * c * (1.0 + 3.0 * 0.044715 * xd * xd);
            let (got, got_slope) = (f64::from(gelu_tanh(x)), f64::from(gelu_tanh_slope(x)));
            // u itself is rounded to f32 (relative error ~eps), which moves
            // sigmoid(2u) by a relative 2|u| eps for negative u.
            let rel = 1e-6 + 4.0 * u.abs() * f64::from(f32::EPSILON);
            assert!(
                (got - exact).abs() <= rel * exact.abs() + 1e-30,
                "gelu({x}) = {got}, not {exact}"
            );
            assert!(
                (got_slope - slope).abs() <= rel * slope.abs() + 3e-7,
                "gelu'({x}) = {got_slope}, not {slope}"
            );
        }
        assert_eq!(gelu_tanh(100.0), 100.0);
        assert_eq!(gelu_tanh(-100.0), 0.0);
        assert!(gelu_tanh(f32::NAN).is_nan());
    }

    #[test]
    fn erf_and_erfc_agree_with_series_and_continued_fraction() {
        for i in -3000..=3000 {
            let x = f64::from(i) * 1e-3;
            let want = erf_series(x);
            let got = erf_f64(x);
            assert!(
                (got - want).abs() <= 1e-10 * want.abs() + 1e-15,
                "erf({x}) = {got}, want {want}"
            );
            assert!((erfc_f64(x) - (1.0 - want)).abs() <= 1e-12, "erfc({x})");
            // The f32 value is the f32 nearest the exact one (or a neighbour
            // at a near tie).
            let x32 = x as f32;
            let exact = erf_series(f64::from(x32));
            let err = (f64::from(erf(x32)) - exact).abs();
            assert!(err <= 0.51 * f64::from(f32::EPSILON) * exact.abs().max(1e-30) + 1e-45);
        }
        for i in 0..=2400 {
            let x = 2.0 + f64::from(i) * 1e-2;
            let (got, want) = (erfc_f64(x), erfc_fraction(x));
            assert!(
                (got - want).abs() <= 1e-10 * want,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(4.0), 1.0);
        assert_eq!(erf(-1e30), -1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erfc_f64(f64::INFINITY), 0.0);
        assert_eq!(erfc_f64(f64::NEG_INFINITY), 2.0);
        // gelu of large negative inputs is tiny, not 0 or NaN.
        let tiny = gelu_exact(-8.0);
        assert!(tiny < 0.0 && tiny > -1e-13, "{tiny}");
        assert_eq!(gelu_exact(100.0), 100.0);
    }

    fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_shape_vec(
            IxDyn(shape),
            (0..n).map(|i| ((i * 37) % 29) as f32 * 0.3 - 4.0).collect(),
        )
        .unwrap()
    }

    /// Softmax along an axis: the last axis gives bitwise the row kernel;
    /// any axis gives the row kernel of the transposed tensor (within
    /// rounding: sums in another order), and log-softmax its logarithm.
    #[test]
    fn softmax_along_any_axis_agrees_with_the_row_kernel() {
        for shape in [
            vec![5],
            vec![3, 4],
            vec![2, 3, 4],
            vec![2, 3, 1, 5],
            vec![4, 1],
            vec![3, 0, 2],
        ] {
            let x = ramp(&shape);
            let rank = shape.len();
            let last = softmax_along(&x, rank - 1).unwrap();
            assert_eq!(last, softmax_last_axis(&x).unwrap(), "{shape:?}");
            for axis in 0..rank {
                let mut perm: Vec<usize> = (0..rank).filter(|&a| a != axis).collect();
                perm.push(axis);
                let xt = x.clone().permuted_axes(IxDyn(&perm));
                let mut inverse = vec![0; rank];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                let want = softmax_last_axis(&xt)
                    .unwrap()
                    .permuted_axes(IxDyn(&inverse));
                let got = softmax_along(&x, axis).unwrap();
                let logs = log_softmax_along(&x, axis).unwrap();
                assert_eq!(got.shape(), x.shape());
                for ((g, w), l) in got.iter().zip(want.iter()).zip(logs.iter()) {
                    assert!((g - w).abs() <= 1e-6, "{shape:?} axis {axis}: {g} vs {w}");
                    assert!(
                        (l - w.ln()).abs() <= 1e-5,
                        "{shape:?} axis {axis}: {l} vs ln {w}"
                    );
                }
                // The vector-Jacobian products against the formulas.
                let up = ramp(&shape).mapv(|v| v.sin());
                let dot = (&up * &got)
                    .sum_axis(ndarray::Axis(axis))
                    .insert_axis(ndarray::Axis(axis));
                let want_grad = &got * &(&up - &dot);
                let sum = up
                    .sum_axis(ndarray::Axis(axis))
                    .insert_axis(ndarray::Axis(axis));
                let want_log_grad = &up - &(&got * &sum);
                let got_grad = softmax_along_grad(&got, &up, axis).unwrap();
                let got_log_grad = log_softmax_along_grad(&logs, &up, axis).unwrap();
                for (a, b) in got_grad.iter().zip(want_grad.iter()) {
                    assert!((a - b).abs() <= 1e-5, "{shape:?} axis {axis}");
                }
                for (a, b) in got_log_grad.iter().zip(want_log_grad.iter()) {
                    assert!((a - b).abs() <= 1e-4, "{shape:?} axis {axis}");
                }
            }
            assert!(softmax_along(&x, rank).is_err());
        }
    }

    #[test]
    fn select_broadcasts_like_ndarray() {
        for (c, x, y) in [
            (vec![3], vec![3], vec![3]),
            (vec![2, 3], vec![], vec![2, 3]),
            (vec![2, 1], vec![1, 3], vec![2, 3]),
            (vec![3], vec![2, 3], vec![1]),
            (vec![2, 3, 4], vec![3, 1], vec![2, 1, 4]),
            (vec![], vec![2, 2], vec![2, 2]),
            (vec![2, 3], vec![2, 3], vec![]),
            (vec![300, 256], vec![256], vec![300, 1]),
        ] {
            let ct = ramp(&c).mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
            let (xt, yt) = (ramp(&x), ramp(&y).mapv(|v| -v));
            let got = select(&ct, &xt, &yt).unwrap();
            let out = broadcast_shapes(&broadcast_shapes(&c, &x).unwrap(), &y).unwrap();
            let (cb, xb, yb) = (
                ct.broadcast(IxDyn(&out)).unwrap(),
                xt.broadcast(IxDyn(&out)).unwrap(),
                yt.broadcast(IxDyn(&out)).unwrap(),
            );
            let want = Zip::from(&cb)
                .and(&xb)
                .and(&yb)
                .map_collect(|&c, &a, &b| if c != 0.0 { a } else { b });
            assert_eq!(got, want, "{c:?} {x:?} {y:?}");
        }
        assert!(select(&ramp(&[3]), &ramp(&[4]), &ramp(&[])).is_err());
        assert!(select(&ramp(&[2, 3]), &ramp(&[3]), &ramp(&[2])).is_err());
        // NaN is a true condition.
        let t = select(
            &adgraph_tensor(f32::NAN),
            &adgraph_tensor(1.0),
            &adgraph_tensor(2.0),
        )
        .unwrap();
        assert_eq!(t.sum(), 1.0);
    }

    fn adgraph_tensor(v: f32) -> Tensor {
        Tensor::from_elem(IxDyn(&[]), v)
    }

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
