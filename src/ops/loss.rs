//! Losses: the L2 penalty `l2norm`, softmax cross-entropy over the last axis and
//! element-wise sigmoid cross-entropy.
//!
//! The cross-entropy losses take `(labels, logits)` in that order, as the original
//! framework does; they are not reduced over the batch, and only the logits take
//! a gradient (the labels get none).

use ndarray::arr0;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{
    map1, map2, map3, sigmoid, softmax_cross_entropy, softmax_cross_entropy_grad, sum_of_squares,
};
use crate::kernels::exp::exp;
use crate::op::{BackwardContext, ForwardContext, Op};
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
    // dL/dx = g * scale * x
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let k = grad.sum() * self.scale;
        Ok(vec![Some(map1(ctx.input(0), |x| k * x))])
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
        ctx.save(probs);
        Ok(loss)
    }
    // dL/dlogits = g[..., None] * (softmax(logits) - labels); labels take no gradient
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let dlogits = if ctx.needs_grad(1) {
            let probs = ctx.saved::<Tensor>()?;
            Some(softmax_cross_entropy_grad(grad, probs, ctx.input(0))?)
        } else {
            None
        };
        Ok(vec![None, dlogits])
    }
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
    // dL/dz = g * (sigmoid(z) - y); labels take no gradient
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let dlogits = if ctx.needs_grad(1) {
            Some(map3(grad, ctx.input(0), ctx.input(1), |g, y, z| {
                g * (sigmoid(z) - y)
            })?)
        } else {
            None
        };
        Ok(vec![None, dlogits])
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
/// `upstream[..., None] * (softmax(logits) - labels)`.
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
/// (in `[0, 1]`). Only `logits` takes a gradient: `upstream * (sigmoid(z) - y)`.
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
