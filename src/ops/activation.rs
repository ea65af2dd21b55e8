//! Activations: sigmoid, tanh, relu, leaky relu (element-wise) and softmax over
//! the last axis.
//!
//! Each gradient is one fused op of its own (`SigmoidGrad`, `TanhGrad`,
//! `ReluGrad`, `LeakyReluGrad`, `SoftmaxGrad`, as in TensorFlow), one pass over
//! memory, and each of those has a gradient too, for higher derivatives.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{
    leaky_relu as leaky_relu_value, leaky_relu_grad, map1, map2, relu as relu_value, relu_grad,
    sigmoid as sigmoid_f32, softmax_last_axis, softmax_last_axis_grad,
};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::{multiply, subtract, when};
use crate::ops::build;
use crate::ops::math::{finite_attr, same_shape_rule, unary_rule};
use crate::ops::reduce::reduce_sum;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The logistic function `1 / (1 + e^-x)`, element-wise.
pub struct Sigmoid;

impl Op for Sigmoid {
    fn type_name(&self) -> &'static str {
        "Sigmoid"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], sigmoid_f32))
    }
    // d(sigmoid x)/dx = y * (1 - y)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(SigmoidGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Sigmoid`]: `SigmoidGrad(y, dy) = dy * y * (1 - y)`, with
/// `y = sigmoid(x)` (TensorFlow's `SigmoidGrad`), in one pass.
pub struct SigmoidGrad;

impl Op for SigmoidGrad {
    fn type_name(&self) -> &'static str {
        "SigmoidGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, y| g * y * (1.0 - y))
    }
    // out = dy * y * (1 - y): d out/dy = dy * (1 - 2y), d out/d dy = y * (1 - y)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                let g_dy = multiply(g, dy)?;
                subtract(&g_dy, &(2.0 * &multiply(&g_dy, y)?).check()?)
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(SigmoidGrad, &[y, g]))?,
        ])
    }
}

/// The hyperbolic tangent, element-wise.
pub struct Tanh;

impl Op for Tanh {
    fn type_name(&self) -> &'static str {
        "Tanh"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::tanh))
    }
    // d(tanh x)/dx = 1 - y^2
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(TanhGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Tanh`]: `TanhGrad(y, dy) = dy * (1 - y^2)`, with
/// `y = tanh(x)` (TensorFlow's `TanhGrad`), in one pass.
pub struct TanhGrad;

impl Op for TanhGrad {
    fn type_name(&self) -> &'static str {
        "TanhGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, y| g * (1.0 - y * y))
    }
    // out = dy * (1 - y^2): d out/dy = -2 dy y, d out/d dy = 1 - y^2
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                (-2.0 * &multiply(&multiply(g, dy)?, y)?).check()
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(TanhGrad, &[y, g]))?,
        ])
    }
}

/// `max(x, 0)`, element-wise (NaN stays NaN).
pub struct Relu;

impl Op for Relu {
    fn type_name(&self) -> &'static str {
        "Relu"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], relu_value))
    }
    // d(relu x)/dx = 1 if x > 0 else 0 (0 at x = 0, as TF); y > 0 exactly where x > 0
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(ReluGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Relu`]: `ReluGrad(y, dy) = dy where y > 0, else 0`, with
/// `y = relu(x)` (positive exactly where `x` is), in one pass (TensorFlow's
/// `ReluGrad`).
pub struct ReluGrad;

impl Op for ReluGrad {
    fn type_name(&self) -> &'static str {
        "ReluGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, y| relu_grad(y, g))
    }
    // Linear in dy with the same mask; the mask is piecewise constant in y (no gradient)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, g) = (ctx.input(0), ctx.grad());
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || ctx.add_op(ReluGrad, &[y, g]))?,
        ])
    }
}

/// `x if x > 0 else alpha * x`, element-wise.
pub struct LeakyRelu {
    /// The slope for `x <= 0`; must be finite.
    pub alpha: f32,
}

impl Op for LeakyRelu {
    fn type_name(&self) -> &'static str {
        "LeakyRelu"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "alpha", self.alpha)?;
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let alpha = self.alpha;
        Ok(map1(inputs[0], |x| leaky_relu_value(alpha, x)))
    }
    // d(leaky_relu x)/dx = 1 if x > 0 else alpha (read from x: for alpha < 0 the
    // output's sign does not tell)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = LeakyReluGrad { alpha: self.alpha };
        let dx = ctx.add_op(op, &[ctx.input(0), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`LeakyRelu`]: `LeakyReluGrad(x, dy) = dy where x > 0, else
/// alpha * dy`, in one pass (TensorFlow's `LeakyReluGrad`).
pub struct LeakyReluGrad {
    /// The slope for `x <= 0`; must be finite.
    pub alpha: f32,
}

impl Op for LeakyReluGrad {
    fn type_name(&self) -> &'static str {
        "LeakyReluGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "alpha", self.alpha)?;
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let alpha = self.alpha;
        map2(inputs[1], inputs[0], |g, x| leaky_relu_grad(alpha, x, g))
    }
    // Linear in dy with the same slopes; the slopes are piecewise constant in x (no gradient)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, g) = (ctx.input(0), ctx.grad());
        let op = LeakyReluGrad { alpha: self.alpha };
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || ctx.add_op(op, &[x, g]))?,
        ])
    }
}

/// Softmax over the last axis: `e^(x - max) / sum(e^(x - max))` per row.
pub struct Softmax;

impl Op for Softmax {
    fn type_name(&self) -> &'static str {
        "Softmax"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let x = unary_rule(self.type_name(), inputs)?;
        if x.rank() == 0 {
            return Err(Error::Rank {
                what: "softmax input x (softmax is over the last axis)".into(),
                expected: "at least 1".into(),
                got: x,
            });
        }
        Ok(x)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        softmax_last_axis(inputs[0])
    }
    // dx = y * (g - sum(g * y, last axis, keepdims))
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(SoftmaxGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Softmax`]: `SoftmaxGrad(y, dy) = y * (dy - sum(dy * y,
/// last axis, keepdims))`, with `y = softmax(x)`, row by row in one pass.
pub struct SoftmaxGrad;

impl Op for SoftmaxGrad {
    fn type_name(&self) -> &'static str {
        "SoftmaxGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let y = same_shape_rule(self.type_name(), inputs, 2)?;
        if y.rank() == 0 {
            return Err(Error::Rank {
                what: "softmax gradient input y (softmax is over the last axis)".into(),
                expected: "at least 1".into(),
                got: y,
            });
        }
        Ok(y)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        softmax_last_axis_grad(inputs[0], inputs[1])
    }
    // out = y * (dy - s), s = sum(dy * y) per row: linear in dy, and symmetric,
    // so d out/d dy applied to g is SoftmaxGrad(y, g); with t = sum(g * y) per
    // row, d<g, out>/dy = g * (dy - s) - t * dy
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        let last = y.shape().rank() - 1;
        let row_dot = |a: &Node| reduce_sum(&multiply(a, y)?, [last], true);
        Ok(vec![
            when(ctx.needs_grad(0), || {
                let (s, t) = (row_dot(dy)?, row_dot(g)?);
                subtract(&multiply(g, &subtract(dy, &s)?)?, &multiply(&t, dy)?)
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(SoftmaxGrad, &[y, g]))?,
        ])
    }
}

/// The logistic sigmoid `1 / (1 + e^-x)`, element-wise.
///
/// Numerically stable: computed as `e^x / (1 + e^x)` for negative `x`, so
/// `sigmoid(-1e4) = 0` and `sigmoid(1e4) = 1` with gradient 0, never NaN.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::sigmoid(&x).unwrap();
/// let feed = ad::Feed::new().with(&x, [-1e4, 0.0, 1e4]).unwrap();
/// let v = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!(v, ad::tensor([0.0, 0.5, 1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn sigmoid(x: &Node) -> Result<Node> {
    build(Sigmoid, &[x])
}

/// The hyperbolic tangent, element-wise; gradient `1 - tanh(x)^2`.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder(adgraph::shape![None, 3]);
/// assert_eq!(adgraph::tanh(&x).unwrap().shape(), adgraph::shape![None, 3]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn tanh(x: &Node) -> Result<Node> {
    build(Tanh, &[x])
}

/// The rectified linear unit `max(x, 0)`, element-wise.
///
/// Its gradient is 1 where `x > 0` and 0 elsewhere, including at `x = 0` (as TF).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::relu(&x).unwrap();
/// let feed = ad::Feed::new().with(&x, [-1.0, 0.0, 2.0]).unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([0.0, 0.0, 2.0]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 0.0, 1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn relu(x: &Node) -> Result<Node> {
    build(Relu, &[x])
}

/// The leaky rectified linear unit: `x` where `x > 0`, else `alpha * x`.
///
/// Its gradient is 1 where `x > 0` and `alpha` elsewhere.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder([2]);
/// assert!(adgraph::leaky_relu(&x, 0.2).is_ok());
/// assert!(adgraph::leaky_relu(&x, f32::INFINITY).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when
/// `alpha` is not finite; or when `x` is a failed operator node.
pub fn leaky_relu(x: &Node, alpha: f32) -> Result<Node> {
    build(LeakyRelu { alpha }, &[x])
}

/// Softmax over the last axis, `e^x / sum(e^x)` per row, computed stably by
/// subtracting each row's maximum first.
///
/// The gradient is `y * (g - sum(g * y, last axis))` with `y` the output.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder(adgraph::shape![None, 10]);
/// assert_eq!(adgraph::softmax(&x).unwrap().shape(), adgraph::shape![None, 10]);
/// assert!(adgraph::softmax(&g.placeholder(adgraph::shape![])).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` is a
/// scalar; or when `x` is a failed operator node.
pub fn softmax(x: &Node) -> Result<Node> {
    build(Softmax, &[x])
}
