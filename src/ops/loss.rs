//! Losses: the L2 penalty `l2norm`, softmax cross-entropy over the last axis and
//! element-wise sigmoid cross-entropy.
//!
//! The cross-entropy losses take `(labels, logits)` in that order, as the original
//! framework does; they are not reduced over the batch. Their gradients are
//! fused ops of their own ([`SoftmaxCrossEntropyGrad`], reading the
//! probabilities the forward kept, and [`SigmoidCrossEntropyGrad`]), whose
//! gradients (second derivatives) are those of the same math written with
//! simple ops.
//!
//! Label gradients follow TensorFlow 1's functions: softmax cross-entropy
//! gives the labels none (`tf.nn.softmax_cross_entropy_with_logits` stops the
//! gradient into them; its `_v2` does not), sigmoid cross-entropy gives them
//! `-logits * upstream` (`tf.nn.sigmoid_cross_entropy_with_logits` is built from
//! ops, labels included).

use ndarray::arr0;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{
    map2, map3, sigmoid, softmax_cross_entropy, softmax_cross_entropy_grad, sum_of_squares,
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
