//! Losses: the L2 penalty `l2norm`, softmax cross-entropy over the last axis
//! (with dense labels, or sparse labels: class indices) and element-wise
//! sigmoid cross-entropy.
//!
//! The cross-entropy losses take `(labels, logits)` in that order, as the original
//! framework does; they are not reduced over the batch. Their gradients are
//! fused ops of their own ([`SoftmaxCrossEntropyGrad`] and
//! [`SparseSoftmaxCrossEntropyGrad`], reading the probabilities the forward
//! kept, and [`SigmoidCrossEntropyGrad`]), whose gradients (second
//! derivatives) are those of the same math written with simple ops.
//!
//! Label gradients follow TensorFlow 1's functions: softmax cross-entropy
//! gives the labels none (`tf.nn.softmax_cross_entropy_with_logits` stops the
//! gradient into them; its `_v2` does not), sigmoid cross-entropy gives them
//! `-logits * upstream` (`tf.nn.sigmoid_cross_entropy_with_logits` is built from
//! ops, labels included).

use std::mem::MaybeUninit;

use ndarray::{arr0, IxDyn};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{
    map2, map3, row_major, sigmoid, softmax_cross_entropy, softmax_cross_entropy_grad,
    sum_of_squares, PARALLEL_MIN_LEN,
};
use crate::kernels::exp::exp;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::ops::math::{finite_attr, unary_rule};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The merged static shape of `(labels, logits)`.
///
/// # Errors
/// [`Error::InvalidArgument`] unless there are exactly two inputs,
/// [`Error::ShapeMismatch`] when their shapes cannot be the same.
fn labels_logits_rule(op: &str, inputs: &[&TensorShape]) -> Result<TensorShape> {
    let [labels, logits] = inputs else {
        return Err(Error::invalid(format!(
            "{op} takes 2 inputs (labels, logits), got {}",
            inputs.len()
        )));
    };
    labels.merge(logits).ok_or_else(|| Error::ShapeMismatch {
        what: "labels must have the shape of logits".into(),
        expected: (*logits).clone(),
        got: (*labels).clone(),
    })
}

/// Checks at run time that the labels' value has the logits' shape.
///
/// # Errors
/// [`Error::ShapeMismatch`] when it does not.
fn check_labels(labels: &Tensor, logits: &Tensor) -> Result<()> {
    if labels.shape() == logits.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: "labels must have the shape of logits".into(),
            expected: TensorShape::known(logits.shape()),
            got: TensorShape::known(labels.shape()),
        })
    }
}

/// `scale * 0.5 * sum(x^2)`, a scalar.
pub struct L2Norm {
    /// The factor in front; must be finite.
    pub scale: f32,
}

impl Op for L2Norm {
    fn type_name(&self) -> &'static str {
        "L2Norm"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "scale", self.scale)?;
        unary_rule(self.type_name(), inputs)?;
        Ok(TensorShape::scalar())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let value = f64::from(self.scale) * 0.5 * sum_of_squares(inputs[0]);
        Ok(arr0(value as f32).into_dyn())
    }
    // dL/dx = g * scale * x (g a scalar)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if !ctx.needs_grad(0) {
            return Ok(vec![None]);
        }
        let k = if self.scale == 1.0 {
            ctx.grad().clone()
        } else {
            crate::multiply(ctx.grad(), &ctx.graph().constant(self.scale)?)?
        };
        Ok(vec![Some(crate::multiply(ctx.input(0), &k)?)])
    }
}

/// Softmax cross-entropy over the last axis, one loss per example.
pub struct SoftmaxCrossEntropyLoss;

impl Op for SoftmaxCrossEntropyLoss {
    fn type_name(&self) -> &'static str {
        "SoftmaxCrossEntropyLoss"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let shape = labels_logits_rule(self.type_name(), inputs)?;
        match shape.dims().split_last() {
            Some((_, batch)) => Ok(TensorShape::new(batch.to_vec())),
            None => Err(Error::Rank {
                what: "labels and logits (the classes are the last axis)".into(),
                expected: "at least 1".into(),
                got: shape,
            }),
        }
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        check_labels(inputs[0], inputs[1])?;
        let (loss, probs) = softmax_cross_entropy(inputs[0], inputs[1])?;
        // For the gradient node (recomputed when missing): an optional cache.
        if !ctx.is_inference() {
            ctx.save(probs);
        }
        Ok(loss)
    }
    // dL/dlogits = g[..., None] * (softmax(logits) - labels) (SoftmaxCrossEntropyGrad);
    // the labels take no gradient (TF1's softmax_cross_entropy_with_logits).
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dlogits = ctx
            .needs_grad(1)
            .then(|| {
                ctx.add_op(
                    SoftmaxCrossEntropyGrad,
                    &[ctx.grad(), ctx.input(0), ctx.input(1), ctx.output()],
                )
            })
            .transpose()?;
        Ok(vec![None, dlogits])
    }
}

/// The gradient of [`SoftmaxCrossEntropyLoss`] w.r.t. the logits:
/// `g[..., None] * (softmax(logits) - labels)`. Inputs: `g` (the upstream
/// gradient, one value per example), `labels`, `logits`, and the loss node,
/// whose kept probabilities are read (recomputed when not held).
pub struct SoftmaxCrossEntropyGrad;

impl Op for SoftmaxCrossEntropyGrad {
    fn type_name(&self) -> &'static str {
        "SoftmaxCrossEntropyGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [g, labels, logits, _loss] = inputs else {
            return Err(Error::invalid(format!(
                "SoftmaxCrossEntropyGrad takes 4 inputs (g, labels, logits, the loss node), \
                 got {}",
                inputs.len()
            )));
        };
        let loss = SoftmaxCrossEntropyLoss.infer_shape(&[labels, logits])?;
        if !g.is_compatible(&loss) {
            return Err(Error::ShapeMismatch {
                what: "upstream gradient of softmax cross-entropy".into(),
                expected: loss,
                got: (*g).clone(),
            });
        }
        labels_logits_rule(self.type_name(), &[labels, logits])
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (g, labels, logits) = (inputs[0], inputs[1], inputs[2]);
        check_labels(labels, logits)?;
        let recomputed;
        let probs = match ctx.input_saved::<Tensor>(3) {
            Some(p) if p.shape() == logits.shape() => p,
            _ => {
                recomputed = softmax_cross_entropy(labels, logits)?.1;
                &recomputed
            }
        };
        softmax_cross_entropy_grad(g, probs, labels)
    }
    // The gradient of g[..., None] * (softmax(logits) - labels) as ops; the
    // labels stay without a gradient.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| {
            let (g, labels, logits) = (&inputs[0], &inputs[1], &inputs[2]);
            let diff = crate::subtract(&crate::softmax(logits)?, &crate::stop_gradient(labels)?)?;
            times_last_axis_broadcast(&diff, g)
        })
    }
}

/// `x * g[..., None]`: `g` (shaped like `x` without its last axis) repeated
/// along `x`'s last axis. Written as a transpose that brings the last axis to
/// the front, a broadcasting multiply, and the transpose back.
fn times_last_axis_broadcast(x: &Node, g: &Node) -> Result<Node> {
    let rank = x.shape().rank();
    if rank <= 1 {
        return crate::multiply(x, g);
    }
    let to_front: Vec<usize> = std::iter::once(rank - 1).chain(0..rank - 1).collect();
    let to_back: Vec<usize> = (1..rank).chain(std::iter::once(0)).collect();
    let product = crate::multiply(&crate::transpose(x, &to_front)?, g)?;
    crate::transpose(&product, &to_back)
}

/// Sigmoid cross-entropy, element-wise.
pub struct SigmoidCrossEntropyLoss;

impl Op for SigmoidCrossEntropyLoss {
    fn type_name(&self) -> &'static str {
        "SigmoidCrossEntropyLoss"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        labels_logits_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        check_labels(inputs[0], inputs[1])?;
        // max(z, 0) - z*y + ln(1 + e^-|z|): no exponential of a positive number.
        map2(inputs[0], inputs[1], |y, z| {
            z.max(0.0) - z * y + exp(-z.abs()).ln_1p()
        })
    }
    // dL/dz = g * (sigmoid(z) - y), dL/dy = -z * g (SigmoidCrossEntropyGrad)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let args = [ctx.grad(), ctx.input(0), ctx.input(1)];
        let grad = |of| ctx.add_op(SigmoidCrossEntropyGrad { of }, &args);
        Ok(vec![
            ctx.needs_grad(0)
                .then(|| grad(CrossEntropyInput::Labels))
                .transpose()?,
            ctx.needs_grad(1)
                .then(|| grad(CrossEntropyInput::Logits))
                .transpose()?,
        ])
    }
}

/// Which input of a cross-entropy loss a gradient node is the gradient of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossEntropyInput {
    /// The labels (`y`).
    Labels,
    /// The logits (`z`).
    Logits,
}

/// The gradient of [`SigmoidCrossEntropyLoss`], one pass: w.r.t. the logits
/// `g * (sigmoid(z) - y)`, w.r.t. the labels `-z * g`. Inputs: `g` (the
/// upstream gradient), `labels` (`y`), `logits` (`z`).
pub struct SigmoidCrossEntropyGrad {
    /// The input whose gradient this node gives.
    pub of: CrossEntropyInput,
}

impl Op for SigmoidCrossEntropyGrad {
    fn type_name(&self) -> &'static str {
        "SigmoidCrossEntropyGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [g, labels, logits] = inputs else {
            return Err(Error::invalid(format!(
                "SigmoidCrossEntropyGrad takes 3 inputs (g, labels, logits), got {}",
                inputs.len()
            )));
        };
        let shape = labels_logits_rule(self.type_name(), &[labels, logits])?;
        shape.merge(g).ok_or_else(|| Error::ShapeMismatch {
            what: "upstream gradient of sigmoid cross-entropy".into(),
            expected: shape.clone(),
            got: (*g).clone(),
        })
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (g, labels, logits) = (inputs[0], inputs[1], inputs[2]);
        check_labels(labels, logits)?;
        match self.of {
            CrossEntropyInput::Logits => map3(g, labels, logits, |g, y, z| g * (sigmoid(z) - y)),
            CrossEntropyInput::Labels => map2(g, logits, |g, z| -z * g),
        }
    }
    // The gradient of the same math as ops: g * (sigmoid(z) - y), or -(g * z).
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let of = self.of;
        ctx.gradient_of_composition(|inputs| {
            let (g, labels, logits) = (&inputs[0], &inputs[1], &inputs[2]);
            match of {
                CrossEntropyInput::Logits => {
                    crate::multiply(g, &crate::subtract(&crate::sigmoid(logits)?, labels)?)
                }
                CrossEntropyInput::Labels => crate::negate(&crate::multiply(g, logits)?),
            }
        })
    }
}

/// The static shape of a sparse loss, `labels.shape` merged with
/// `logits.shape[:-1]`.
///
/// # Errors
/// [`Error::InvalidArgument`] unless there are exactly two inputs,
/// [`Error::Rank`] when the logits are a scalar, [`Error::ShapeMismatch`] when
/// the labels do not have the logits' shape without its last axis.
fn sparse_rule(op: &str, inputs: &[&TensorShape]) -> Result<TensorShape> {
    let [labels, logits] = inputs else {
        return Err(Error::invalid(format!(
            "{op} takes 2 inputs (labels, logits), got {}",
            inputs.len()
        )));
    };
    let Some((_, batch)) = logits.dims().split_last() else {
        return Err(Error::Rank {
            what: format!("{op} logits (the classes are the last axis)"),
            expected: "at least 1".into(),
            got: (*logits).clone(),
        });
    };
    let batch = TensorShape::new(batch.to_vec());
    labels.merge(&batch).ok_or_else(|| Error::ShapeMismatch {
        what: format!("{op} labels (one class index per row of logits: logits.shape[:-1])"),
        expected: batch.clone(),
        got: (*labels).clone(),
    })
}

/// Checks the run-time values of sparse labels against logits: the labels'
/// shape is `logits.shape[:-1]` and every label is a whole number in
/// `[0, classes)`. Returns `(rows, classes)`.
///
/// # Errors
/// [`Error::Rank`] for scalar logits, [`Error::ShapeMismatch`] for labels of
/// another shape, [`Error::InvalidArgument`] for a label that is not a whole
/// number (2.5, NaN, infinite), [`Error::OutOfBounds`] for one outside
/// `[0, classes)`; both name the label, its position and the class count.
fn check_sparse_labels(labels: &Tensor, logits: &Tensor) -> Result<(usize, usize)> {
    let Some((&classes, batch)) = logits.shape().split_last() else {
        return Err(Error::Rank {
            what: "sparse softmax cross-entropy logits (the classes are the last axis)".into(),
            expected: "at least 1".into(),
            got: TensorShape::known(logits.shape()),
        });
    };
    if labels.shape() != batch {
        return Err(Error::ShapeMismatch {
            what: "sparse softmax cross-entropy labels (one class index per row of logits: \
                   logits.shape[:-1])"
                .into(),
            expected: TensorShape::known(batch),
            got: TensorShape::known(labels.shape()),
        });
    }
    // `classes as f32` is exact for any class count an f32 label could name.
    let top = classes as f32;
    let valid = |l: f32| l >= 0.0 && l < top && l.fract() == 0.0;
    if labels.iter().all(|&l| valid(l)) {
        return Ok((labels.len(), classes));
    }
    // The first bad label, by position (the error path only).
    let Some((index, &label)) = labels.indexed_iter().find(|(_, &l)| !valid(l)) else {
        return Ok((labels.len(), classes));
    };
    let position = ndarray::Dimension::slice(&index).to_vec();
    if label.fract() == 0.0 {
        Err(Error::OutOfBounds(format!(
            "sparse softmax cross-entropy label {label} at position {position:?} of the \
             labels is not a class index in [0, {classes}) ({classes} classes)"
        )))
    } else {
        Err(Error::invalid(format!(
            "sparse softmax cross-entropy label {label} at position {position:?} of the labels \
             is not a whole number (labels are class indices in [0, {classes}), {classes} \
             classes)"
        )))
    }
}

/// Rows of at most this many classes take the blocked kernel
/// ([`softmax_block`]); wider rows are worked on one at a time
/// ([`softmax_row`]), where the reductions along a row are long enough to
/// vectorise.
const BLOCK_CLASSES: usize = 64;
/// Rows per block of [`softmax_block`]: two AVX2 (one AVX-512) registers of
/// lanes, so that the exponentials and reductions of a block run as vectors
/// across rows.
const BLOCK: usize = 16;
/// About this many logits make one parallel task.
const TASK_ELEMENTS: usize = 1 << 14;
/// Independent accumulators of the row reductions of [`softmax_row`], so
/// that they vectorise (a single float accumulator stays scalar: float sums
/// are not reordered).
const LANES: usize = 8;

/// Softmax cross-entropy of [`BLOCK`] rows of `n <= BLOCK_CLASSES` logits
/// (`z`, row-major) at once, for the classes `labels`: `softmax(z)` into the
/// first rows of `probs` and `-log_softmax(z)[label]` into the first values
/// of `loss`, as many as each holds (a last, partial block of zero-padded
/// rows). The block is transposed into `et` (`n` lanes of rows), so that
/// the row maximum, the exponentials and their sums are vector operations
/// across the 16 rows, with no reduction along a row: one pass over the
/// logits. (`[512, 27]` logits on the 2-core machine: 26 µs a forward,
/// against 36 µs one row at a time, with three short horizontal reductions
/// per row, and 54 µs for the dense loss's kernel.)
fn softmax_block(
    z: &[f32],
    labels: &[f32],
    n: usize,
    et: &mut [[f32; BLOCK]],
    probs: Option<&mut [MaybeUninit<f32>]>,
    loss: Option<&mut [f32]>,
) {
    debug_assert!(z.len() == BLOCK * n && labels.len() == BLOCK && et.len() == n);
    for (r, zr) in z.chunks_exact(n).enumerate() {
        for (e, &v) in et.iter_mut().zip(zr) {
            e[r] = v;
        }
    }
    let mut max = [f32::NEG_INFINITY; BLOCK];
    for e in et.iter() {
        for (m, &v) in max.iter_mut().zip(e) {
            *m = m.max(v);
        }
    }
    // An all -inf (or all +inf) row: shift by 0 to give NaN like TF, never panic.
    let shift = max.map(|m| if m.is_finite() { m } else { 0.0 });
    let mut sum = [0.0f32; BLOCK];
    for e in et.iter_mut() {
        for ((v, &k), s) in e.iter_mut().zip(&shift).zip(&mut sum) {
            *v = exp(*v - k);
            *s += *v;
        }
    }
    if let Some(loss) = loss {
        for (r, l) in loss.iter_mut().enumerate() {
            let k = labels[r] as usize;
            *l = (shift[r] - z[r * n + k]) + sum[r].ln();
        }
    }
    if let Some(probs) = probs {
        let inv = sum.map(|s| 1.0 / s);
        for (r, pr) in probs.chunks_exact_mut(n).enumerate() {
            for (o, e) in pr.iter_mut().zip(et.iter()) {
                o.write(e[r] * inv[r]);
            }
        }
    }
}

/// The largest element of a row (NaNs are skipped, as by `f32::max`).
#[inline]
fn row_max(z: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    rest.iter().fold(
        acc.into_iter().fold(f32::NEG_INFINITY, f32::max),
        |m, &v| m.max(v),
    )
}

/// The sum of a row, in [`LANES`] accumulators.
#[inline]
fn row_sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    rest.iter().fold(acc.iter().sum::<f32>(), |s, &x| s + x)
}

/// Softmax cross-entropy of one row of logits `z` (more than
/// [`BLOCK_CLASSES`]) for class `k`: `softmax(z)` into `p` (the same length;
/// a scratch row when the probabilities are not wanted), and the loss
/// `(shift - z_k) + ln(sum(e^(z - shift)))` returned.
fn softmax_row(z: &[f32], k: usize, p: &mut [MaybeUninit<f32>]) -> f32 {
    let m = row_max(z);
    // An all -inf (or all +inf) row: shift by 0 to give NaN like TF.
    let shift = if m.is_finite() { m } else { 0.0 };
    for (o, &v) in p.iter_mut().zip(z) {
        o.write(exp(v - shift));
    }
    // SAFETY: every element of `p` (as long as `z`) was just written.
    let p = unsafe { &mut *(p as *mut [MaybeUninit<f32>] as *mut [f32]) };
    let s = row_sum(p);
    let inv = 1.0 / s;
    for v in p.iter_mut() {
        *v *= inv;
    }
    (shift - z[k]) + s.ln()
}

/// Sparse softmax cross-entropy of the `rows` rows of `n > 0` logits `z`
/// (labels `y`, checked): `softmax(z)` into `probs` and the losses into
/// `loss`, each when given (`rows * n` and `rows` long). Blocks of
/// [`BLOCK`] rows for narrow rows, one row at a time for wide ones: each
/// row's values depend only on the row, never on where a task starts.
fn softmax_rows(
    z: &[f32],
    y: &[f32],
    n: usize,
    mut probs: Option<&mut [MaybeUninit<f32>]>,
    mut loss: Option<&mut [f32]>,
) {
    let rows = y.len();
    if n > BLOCK_CLASSES {
        let mut scratch = Vec::new();
        for r in 0..rows {
            let p = match probs.as_deref_mut() {
                Some(p) => &mut p[r * n..(r + 1) * n],
                None => {
                    scratch.resize_with(n, MaybeUninit::uninit);
                    &mut scratch[..]
                }
            };
            let l = softmax_row(&z[r * n..(r + 1) * n], y[r] as usize, p);
            if let Some(loss) = loss.as_deref_mut() {
                loss[r] = l;
            }
        }
        return;
    }
    let mut et = vec![[0.0f32; BLOCK]; n];
    let mut padded: Vec<f32> = Vec::new();
    for b in 0..rows.div_ceil(BLOCK) {
        let (r0, r1) = (b * BLOCK, ((b + 1) * BLOCK).min(rows));
        let p = probs.as_deref_mut().map(|p| &mut p[r0 * n..r1 * n]);
        let l = loss.as_deref_mut().map(|l| &mut l[r0..r1]);
        if r1 - r0 == BLOCK {
            softmax_block(&z[r0 * n..r1 * n], &y[r0..r1], n, &mut et, p, l);
        } else {
            // The last rows, zero-padded to a block (their results unused).
            padded.clear();
            padded.extend_from_slice(&z[r0 * n..r1 * n]);
            padded.resize(BLOCK * n, 0.0);
            let mut labels = [0.0f32; BLOCK];
            labels[..r1 - r0].copy_from_slice(&y[r0..r1]);
            softmax_block(&padded, &labels, n, &mut et, p, l);
        }
    }
}

/// [`softmax_rows`] over all rows, in parallel tasks of whole blocks for
/// large arrays; `probs` (when wanted) is returned as a new vector.
fn softmax_rows_par(
    z: &[f32],
    y: &[f32],
    n: usize,
    want_probs: bool,
    loss: Option<&mut [f32]>,
) -> Option<Vec<f32>> {
    let len = z.len();
    let mut probs: Option<Vec<f32>> = want_probs.then(|| Vec::with_capacity(len));
    let spare = probs.as_mut().map(|v| &mut v.spare_capacity_mut()[..len]);
    if len < PARALLEL_MIN_LEN {
        softmax_rows(z, y, n, spare, loss);
    } else {
        let task = ((TASK_ELEMENTS / n).div_ceil(BLOCK) * BLOCK).max(BLOCK);
        let run = |t: usize, p, l| {
            let rows = t * task..((t + 1) * task).min(y.len());
            softmax_rows(&z[rows.start * n..rows.end * n], &y[rows], n, p, l);
        };
        match (spare, loss) {
            (Some(p), Some(l)) => p
                .par_chunks_mut(task * n)
                .zip(l.par_chunks_mut(task))
                .enumerate()
                .for_each(|(t, (p, l))| run(t, Some(p), Some(l))),
            (Some(p), None) => p
                .par_chunks_mut(task * n)
                .enumerate()
                .for_each(|(t, p)| run(t, Some(p), None)),
            (None, Some(l)) => l
                .par_chunks_mut(task)
                .enumerate()
                .for_each(|(t, l)| run(t, None, Some(l))),
            (None, None) => {}
        }
    }
    if let Some(v) = probs.as_mut() {
        // SAFETY: the rows cover all `len = rows * n` elements, and
        // `softmax_block` / `softmax_row` wrote every element of each row.
        unsafe { v.set_len(len) };
    }
    probs
}

/// A vector of `len` elements written row by row (`n` elements per row, `n >
/// 0`, `len` a multiple of `n`) by `f(r, row)`, in parallel for large
/// arrays; `f` must write every element of its row. Not zero-filled first:
/// every element is about to be written.
fn write_rows(
    len: usize,
    n: usize,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    debug_assert!(n > 0 && len.is_multiple_of(n));
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len >= PARALLEL_MIN_LEN {
        spare
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        spare
            .chunks_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
    // SAFETY: the rows cover all `len` elements (a multiple of `n`) and `f`
    // wrote every element of each.
    unsafe { out.set_len(len) };
    out
}

/// The losses of sparse softmax cross-entropy, `-log_softmax(logits)[label]`
/// per row, and the probabilities `softmax(logits)` when `keep_probs`. The
/// labels must have been checked ([`check_sparse_labels`]).
fn sparse_softmax_cross_entropy(
    labels: &Tensor,
    logits: &Tensor,
    (rows, n): (usize, usize),
    keep_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let batch = IxDyn(labels.shape());
    if rows == 0 || n == 0 {
        let probs = keep_probs.then(|| logits.clone());
        return Ok((Tensor::zeros(batch), probs));
    }
    let (ys, zs) = (row_major(labels), row_major(logits));
    let mut loss = vec![0.0f32; rows];
    let probs = softmax_rows_par(&zs, &ys, n, keep_probs, Some(&mut loss));
    let probs = probs
        .map(|p| Tensor::from_shape_vec(IxDyn(logits.shape()), p))
        .transpose()?;
    Ok((Tensor::from_shape_vec(batch, loss)?, probs))
}

/// Sparse softmax cross-entropy over the last axis, one loss per example
/// (TensorFlow's `SparseSoftmaxCrossEntropyWithLogits`): inputs `labels`
/// (class indices as whole-number floats, shaped `logits.shape[:-1]`) and
/// `logits`.
pub struct SparseSoftmaxCrossEntropyLoss;

impl Op for SparseSoftmaxCrossEntropyLoss {
    fn type_name(&self) -> &'static str {
        "SparseSoftmaxCrossEntropyLoss"
    }
    // labels: logits.shape[:-1]; output: the labels' shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        sparse_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (labels, logits) = (inputs[0], inputs[1]);
        let dims = check_sparse_labels(labels, logits)?;
        // The probabilities are an optional cache for the gradient node
        // (recomputed when missing): none in an inference pass.
        let keep = !ctx.is_inference();
        let (loss, probs) = sparse_softmax_cross_entropy(labels, logits, dims, keep)?;
        if let Some(probs) = probs {
            ctx.save(probs);
        }
        Ok(loss)
    }
    // dL/dlogits = g[..., None] * (softmax(logits) - one_hot(labels))
    // (SparseSoftmaxCrossEntropyGrad); the labels (indices) take no gradient.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dlogits = ctx
            .needs_grad(1)
            .then(|| {
                ctx.add_op(
                    SparseSoftmaxCrossEntropyGrad,
                    &[ctx.grad(), ctx.input(0), ctx.input(1), ctx.output()],
                )
            })
            .transpose()?;
        Ok(vec![None, dlogits])
    }
}

/// The gradient of [`SparseSoftmaxCrossEntropyLoss`] w.r.t. the logits:
/// `g[..., None] * (softmax(logits) - one_hot(labels))`, one pass per row.
/// Inputs: `g` (the upstream gradient, one value per example), `labels`,
/// `logits`, and the loss node, whose kept probabilities are read
/// (recomputed when not held).
pub struct SparseSoftmaxCrossEntropyGrad;

impl Op for SparseSoftmaxCrossEntropyGrad {
    fn type_name(&self) -> &'static str {
        "SparseSoftmaxCrossEntropyGrad"
    }
    // The logits' shape (the labels' dims merged in).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [g, labels, logits, _loss] = inputs else {
            return Err(Error::invalid(format!(
                "SparseSoftmaxCrossEntropyGrad takes 4 inputs (g, labels, logits, the loss \
                 node), got {}",
                inputs.len()
            )));
        };
        let batch = sparse_rule(self.type_name(), &[labels, logits])?;
        let batch = batch.merge(g).ok_or_else(|| Error::ShapeMismatch {
            what: "upstream gradient of sparse softmax cross-entropy".into(),
            expected: batch.clone(),
            got: (*g).clone(),
        })?;
        let mut dims = batch.dims().to_vec();
        dims.push(logits.dims().last().copied().flatten());
        Ok(TensorShape::new(dims))
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (g, labels, logits) = (inputs[0], inputs[1], inputs[2]);
        let (rows, n) = check_sparse_labels(labels, logits)?;
        if g.shape() != labels.shape() {
            return Err(Error::ShapeMismatch {
                what: "upstream gradient of sparse softmax cross-entropy".into(),
                expected: TensorShape::known(labels.shape()),
                got: TensorShape::known(g.shape()),
            });
        }
        if rows == 0 || n == 0 {
            return Ok(Tensor::zeros(IxDyn(logits.shape())));
        }
        let (gs, ys) = (row_major(g), row_major(labels));
        let kept = ctx
            .input_saved::<Tensor>(3)
            .filter(|p| p.shape() == logits.shape())
            .map(row_major);
        let out = match kept {
            // out = g * p, and g * (p - 1) at the label.
            Some(ps) => write_rows(ps.len(), n, |r, row| {
                let (gr, k) = (gs[r], ys[r] as usize);
                let pr = &ps[r * n..(r + 1) * n];
                for (o, &p) in row.iter_mut().zip(pr) {
                    o.write(gr * p);
                }
                row[k].write(gr * (pr[k] - 1.0));
            }),
            // The probabilities recomputed (by the loss's kernel, so the
            // same values), then turned into the gradient in place.
            None => {
                let zs = row_major(logits);
                let mut out = softmax_rows_par(&zs, &ys, n, true, None).unwrap_or_default();
                let fix = |(r, row): (usize, &mut [f32])| {
                    let (gr, k) = (gs[r], ys[r] as usize);
                    let pk = row[k];
                    for v in row.iter_mut() {
                        *v *= gr;
                    }
                    row[k] = gr * (pk - 1.0);
                };
                if out.len() >= PARALLEL_MIN_LEN {
                    out.par_chunks_mut(n).enumerate().for_each(fix);
                } else {
                    out.chunks_mut(n).enumerate().for_each(fix);
                }
                out
            }
        };
        Ok(Tensor::from_shape_vec(IxDyn(logits.shape()), out)?)
    }
    // The gradient of g[..., None] * (softmax(logits) - one_hot(labels)) as
    // ops; the labels stay without a gradient.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| {
            let (g, labels, logits) = (&inputs[0], &inputs[1], &inputs[2]);
            let one_hot = build(SparseLabelsOneHot, &[labels, logits])?;
            let diff = crate::subtract(&crate::softmax(logits)?, &one_hot)?;
            times_last_axis_broadcast(&diff, g)
        })
    }
}

/// `one_hot(labels)` with as many classes as `logits` has (its last axis),
/// shaped like `logits`: the constant part of
/// [`SparseSoftmaxCrossEntropyGrad`]'s composition. Inputs `labels` (checked
/// as the loss checks them) and `logits` (only its shape is used). Takes no
/// gradient.
pub struct SparseLabelsOneHot;

impl Op for SparseLabelsOneHot {
    fn type_name(&self) -> &'static str {
        "SparseLabelsOneHot"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let batch = sparse_rule(self.type_name(), inputs)?;
        let mut dims = batch.dims().to_vec();
        dims.push(inputs[1].dims().last().copied().flatten());
        Ok(TensorShape::new(dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (labels, logits) = (inputs[0], inputs[1]);
        let (_, n) = check_sparse_labels(labels, logits)?;
        let mut out = vec![0.0f32; logits.len()];
        for (r, &l) in labels.iter().enumerate() {
            out[r * n + l as usize] = 1.0;
        }
        Ok(Tensor::from_shape_vec(IxDyn(logits.shape()), out)?)
    }
    // Piecewise constant in the labels, independent of the logits' values.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None, None])
    }
}

/// The L2 penalty `scale * 0.5 * sum(x^2)`, a scalar (shape `[]`); its gradient
/// is `scale * x` times the upstream scalar. The sum is accumulated in `f64`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let w = g.placeholder([2, 2]);
/// let penalty = ad::l2norm(&w, 2.0).unwrap();
/// assert_eq!(penalty.shape(), ad::shape![]);
/// let feed = ad::Feed::new().with(&w, [[1.0, 2.0], [0.0, -1.0]]).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&penalty, &feed).unwrap(), &ad::tensor(6.0));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when
/// `scale` is not finite; or when `x` is a failed operator node.
pub fn l2norm(x: &Node, scale: f32) -> Result<Node> {
    build(L2Norm { scale }, &[x])
}

/// Softmax cross-entropy between `labels` and `logits`, over the last axis, per
/// example: `loss[...] = -sum_j labels[..., j] * log_softmax(logits)[..., j]`.
///
/// The output has shape `labels.shape[:-1]` (no mean over the batch). Labels may
/// be one-hot or soft (rows summing to 1). The log-softmax is computed with the
/// row maximum subtracted, so logits of any finite magnitude (e.g. `1e4`) give
/// finite losses and gradients. Only `logits` takes a gradient:
/// `upstream[..., None] * (softmax(logits) - labels)`; the labels take none,
/// as with TensorFlow 1's `tf.nn.softmax_cross_entropy_with_logits` (TF's
/// `_v2` also differentiates w.r.t. the labels, `-log_softmax(logits) *
/// upstream[..., None]`: build the loss from ops for that).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let labels = g.placeholder(ad::shape![None, 3]);
/// let logits = g.placeholder(ad::shape![None, 3]);
/// let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
/// assert_eq!(loss.shape(), ad::shape![None]);
/// assert!(ad::softmax_cross_entropy_loss(&labels, &g.placeholder([4, 2])).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::ShapeMismatch`] when the
/// static shapes of `labels` and `logits` are incompatible, or [`Error::Rank`]
/// when they are scalars; run time: the same when the fed values' shapes differ.
pub fn softmax_cross_entropy_loss(labels: &Node, logits: &Node) -> Result<Node> {
    build(SoftmaxCrossEntropyLoss, &[labels, logits])
}

/// Sigmoid cross-entropy between `labels` (`y`) and `logits` (`z`), element-wise:
/// `max(z, 0) - z * y + ln(1 + e^-|z|)`, the same shape as the inputs, no reduction.
///
/// Stable for logits of any finite magnitude (e.g. `±1e4`). Labels may be soft
/// (in `[0, 1]`). The gradients are TensorFlow's
/// (`tf.nn.sigmoid_cross_entropy_with_logits`): `upstream * (sigmoid(z) - y)`
/// for the logits and `-z * upstream` for the labels.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let y = g.placeholder([2]);
/// let z = g.placeholder([2]);
/// let loss = ad::sigmoid_cross_entropy_loss(&y, &z).unwrap();
/// let feed = ad::feed! { y => [1.0, 0.0], z => [1e4, 1e4] }.unwrap();
/// let v = ad::RunTime::new().forward(&loss, &feed).unwrap().clone();
/// assert_eq!(v, ad::tensor([0.0, 1e4]));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::ShapeMismatch`] when the
/// static shapes of `labels` and `logits` are incompatible; run time: the same
/// when the fed values' shapes differ.
pub fn sigmoid_cross_entropy_loss(labels: &Node, logits: &Node) -> Result<Node> {
    build(SigmoidCrossEntropyLoss, &[labels, logits])
}

/// Sparse softmax cross-entropy between class indices `labels` and `logits`
/// over the last axis, per example: `loss[...] = -log_softmax(logits)[...,
/// labels[...]]` (TensorFlow's
/// `tf.nn.sparse_softmax_cross_entropy_with_logits`).
///
/// `labels` holds class indices as whole-number floats, shaped
/// `logits.shape[:-1]`, each in `[0, classes)` (`classes` =
/// `logits.shape[-1]`); the output has the labels' shape (no mean over the
/// batch). One fused pass per row: the row maximum is subtracted, so logits of
/// any finite magnitude give finite losses, and the probabilities are kept
/// for the gradient, `upstream[..., None] * (softmax(logits) -
/// one_hot(labels))` ([`SparseSoftmaxCrossEntropyGrad`], differentiable
/// again). The labels take no gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let labels = g.placeholder(ad::shape![None]);
/// let logits = g.placeholder(ad::shape![None, 3]);
/// let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
/// assert_eq!(loss.shape(), ad::shape![None]);
/// let feed = ad::feed! { labels => [2.0, 0.0], logits => [[0.0, 0.0, 0.0], [1e4, 0.0, 0.0]] }
///     .unwrap();
/// let v = ad::RunTime::new().forward(&loss, &feed).unwrap().clone();
/// assert!((v[0] - 3f32.ln()).abs() < 1e-6 && v[1] == 0.0);
/// // A label that is not a class index is an error naming it.
/// let bad = ad::feed! { labels => [3.0, 0.0], logits => [[0.0; 3]; 2] }.unwrap();
/// let e = ad::RunTime::new().forward(&loss, &bad).unwrap_err();
/// assert!(e.to_string().contains("label 3 at position [0]"));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `logits` is a scalar, or
/// [`Error::ShapeMismatch`] when the static shape of `labels` is not that of
/// `logits` without its last axis; at run time, the same for the fed values,
/// [`Error::InvalidArgument`] for a label that is not a whole number (`2.5`,
/// NaN) and [`Error::OutOfBounds`] for one outside `[0, classes)` (`-1`,
/// `classes`), naming the label, its position and the number of classes.
pub fn sparse_softmax_cross_entropy_loss(labels: &Node, logits: &Node) -> Result<Node> {
    build(SparseSoftmaxCrossEntropyLoss, &[labels, logits])
}
