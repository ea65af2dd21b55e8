//! Activations: sigmoid, tanh, relu, leaky relu, softplus, elu, gelu (exact
//! and tanh forms), silu (element-wise), and softmax and log-softmax along an
//! axis (the last one by default).
//!
//! Each gradient is one fused op of its own (`SigmoidGrad`, `TanhGrad`,
//! `ReluGrad`, `LeakyReluGrad`, `SoftplusGrad`, `EluGrad`, `GeluGrad`,
//! `SiluGrad`, `SoftmaxGrad`, `LogSoftmaxGrad`, as in TensorFlow), one pass
//! over memory, and each of those has a gradient too, for higher derivatives:
//! written out where it is short, else the gradient of the same math written
//! with simple ops ([`GradientContext::gradient_of_composition`]).

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{
    gelu_exact, gelu_exact_slope, gelu_tanh, gelu_tanh_slope, leaky_relu as leaky_relu_value,
    leaky_relu_grad, log_softmax_along, log_softmax_along_grad, map1, map2, map3,
    relu as relu_value, relu_grad, sigmoid as sigmoid_f32, silu_slope, softmax_along,
    softmax_along_grad, softmax_last_axis, softmax_last_axis_grad, softplus as softplus_f32,
};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::{add, multiply, negate, subtract, when};
use crate::ops::build;
use crate::ops::compare::{less, where_};
use crate::ops::math::{erf, exp, finite_attr, same_shape_rule, square, unary_rule};
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
        let last = ctx.input(0).shape().rank() - 1;
        softmax_grad_gradient(ctx, last, |y, g| ctx.add_op(SoftmaxGrad, &[y, g]))
    }
}

/// The gradient of a softmax gradient op along `axis` (see [`SoftmaxGrad`]);
/// `again(y, g)` builds the same op on `g` (its derivative in `dy`).
fn softmax_grad_gradient(
    ctx: &GradientContext,
    axis: usize,
    again: impl FnOnce(&Node, &Node) -> Result<Node>,
) -> Result<Vec<Option<Node>>> {
    let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
    let dot = |a: &Node| reduce_sum(&multiply(a, y)?, [axis], true);
    Ok(vec![
        when(ctx.needs_grad(0), || {
            let (s, t) = (dot(dy)?, dot(g)?);
            subtract(&multiply(g, &subtract(dy, &s)?)?, &multiply(&t, dy)?)
        })?,
        when(ctx.needs_grad(1), || again(y, g))?,
    ])
}

/// The rank rule of the ops along an axis: the input's shape, which must
/// have the axis.
fn axis_rule(op: &str, shape: TensorShape, axis: usize) -> Result<TensorShape> {
    if axis >= shape.rank() {
        return Err(Error::Rank {
            what: format!("{op} input x (along axis {axis})"),
            expected: format!("at least {}", axis + 1),
            got: shape,
        });
    }
    Ok(shape)
}

/// Softmax along a given axis: `e^(x - max) / sum(e^(x - max))` over it.
/// (For the last axis, [`softmax_axis`] builds [`Softmax`], the same kernel.)
pub struct SoftmaxAxis {
    /// The axis the softmax runs along.
    pub axis: usize,
}

impl Op for SoftmaxAxis {
    fn type_name(&self) -> &'static str {
        "SoftmaxAxis"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let x = unary_rule(self.type_name(), inputs)?;
        axis_rule(self.type_name(), x, self.axis)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        softmax_along(inputs[0], self.axis)
    }
    // dx = y * (g - sum(g * y, axis, keepdims))
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = SoftmaxAxisGrad { axis: self.axis };
        Ok(vec![Some(ctx.add_op(op, &[ctx.output(), ctx.grad()])?)])
    }
}

/// The gradient of [`SoftmaxAxis`]: `y * (dy - sum(dy * y, axis, keepdims))`,
/// with `y = softmax(x)`, in one pass over the lanes of the axis.
pub struct SoftmaxAxisGrad {
    /// The axis of the forward softmax.
    pub axis: usize,
}

impl Op for SoftmaxAxisGrad {
    fn type_name(&self) -> &'static str {
        "SoftmaxAxisGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let y = same_shape_rule(self.type_name(), inputs, 2)?;
        axis_rule(self.type_name(), y, self.axis)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        softmax_along_grad(inputs[0], inputs[1], self.axis)
    }
    // As SoftmaxGrad's, along `axis`: linear and symmetric in dy; with
    // s = sum(dy * y), t = sum(g * y) along the axis, d<g, out>/dy = g (dy - s) - t dy
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let axis = self.axis;
        softmax_grad_gradient(ctx, axis, |y, g| {
            ctx.add_op(SoftmaxAxisGrad { axis }, &[y, g])
        })
    }
}

/// Log-softmax along an axis: `x - max - ln(sum(e^(x - max)))` over it.
pub struct LogSoftmax {
    /// The axis the log-softmax runs along.
    pub axis: usize,
}

impl Op for LogSoftmax {
    fn type_name(&self) -> &'static str {
        "LogSoftmax"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let x = unary_rule(self.type_name(), inputs)?;
        axis_rule(self.type_name(), x, self.axis)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        log_softmax_along(inputs[0], self.axis)
    }
    // dx = g - softmax(x) * sum(g, axis, keepdims), softmax(x) = e^y
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = LogSoftmaxGrad { axis: self.axis };
        Ok(vec![Some(ctx.add_op(op, &[ctx.output(), ctx.grad()])?)])
    }
}

/// The gradient of [`LogSoftmax`]: `dy - e^y * sum(dy, axis, keepdims)`, with
/// `y = log_softmax(x)`, in one pass over the lanes of the axis.
pub struct LogSoftmaxGrad {
    /// The axis of the forward log-softmax.
    pub axis: usize,
}

impl Op for LogSoftmaxGrad {
    fn type_name(&self) -> &'static str {
        "LogSoftmaxGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let y = same_shape_rule(self.type_name(), inputs, 2)?;
        axis_rule(self.type_name(), y, self.axis)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        log_softmax_along_grad(inputs[0], inputs[1], self.axis)
    }
    // out = dy - p * S(dy), p = e^y, S the sum along the axis (kept, and
    // broadcast back): d<g, out>/d dy = g - S(g * p) (S is self-adjoint),
    // d<g, out>/dy = -g * p * S(dy)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        let g_p = multiply(g, &exp(y)?)?;
        Ok(vec![
            when(ctx.needs_grad(0), || {
                negate(&multiply(&g_p, &reduce_sum(dy, [self.axis], true)?)?)
            })?,
            when(ctx.needs_grad(1), || {
                subtract(g, &reduce_sum(&g_p, [self.axis], true)?)
            })?,
        ])
    }
}

/// `ln(1 + e^x)`, element-wise, stable for any magnitude.
pub struct Softplus;

impl Op for Softplus {
    fn type_name(&self) -> &'static str {
        "Softplus"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], softplus_f32))
    }
    // d softplus(x)/dx = sigmoid(x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(SoftplusGrad, &[ctx.input(0), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Softplus`]: `SoftplusGrad(x, dy) = dy * sigmoid(x)`
/// (TensorFlow's `SoftplusGrad`), in one pass.
pub struct SoftplusGrad;

impl Op for SoftplusGrad {
    fn type_name(&self) -> &'static str {
        "SoftplusGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, x| g * sigmoid_f32(x))
    }
    // out = dy * sigmoid(x): d out/d dy = sigmoid(x) (the same op),
    // d out/dx = dy * s (1 - s) = SigmoidGrad(sigmoid(x), dy)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                ctx.add_op(SigmoidGrad, &[&sigmoid(x)?, &multiply(g, dy)?])
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(SoftplusGrad, &[x, g]))?,
        ])
    }
}

/// The exponential linear unit: `x` where `x > 0`, else `alpha * (e^x - 1)`.
pub struct Elu {
    /// The scale of the negative part; must be finite.
    pub alpha: f32,
}

impl Op for Elu {
    fn type_name(&self) -> &'static str {
        "Elu"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "alpha", self.alpha)?;
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let alpha = self.alpha;
        Ok(map1(inputs[0], |x| {
            if x > 0.0 {
                x
            } else {
                alpha * x.exp_m1()
            }
        }))
    }
    // d elu(x)/dx = 1 for x >= 0 (1 at 0, as TF), alpha e^x = y + alpha for x < 0
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = EluGrad { alpha: self.alpha };
        let dx = ctx.add_op(op, &[ctx.input(0), ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Elu`]: `EluGrad(x, y, dy) = dy * (y + alpha)` where
/// `x < 0`, else `dy`, with `y = elu(x)` (so no second exponential), in one
/// pass (TensorFlow's `EluGrad`, which reads the sign from `y`; here from
/// `x`, right for any sign of alpha).
pub struct EluGrad {
    /// The scale of the forward op; must be finite.
    pub alpha: f32,
}

impl Op for EluGrad {
    fn type_name(&self) -> &'static str {
        "EluGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "alpha", self.alpha)?;
        same_shape_rule(self.type_name(), inputs, 3)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let alpha = self.alpha;
        map3(inputs[2], inputs[0], inputs[1], |g, x, y| {
            if x < 0.0 {
                g * (y + alpha)
            } else {
                g
            }
        })
    }
    // Partial derivatives (y is an input of its own): linear in dy, the same
    // op; d out/dy = dy where x < 0, else 0; the branch is piecewise constant
    // in x (no gradient)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, y, dy, g) = (ctx.input(0), ctx.input(1), ctx.input(2), ctx.grad());
        let op = EluGrad { alpha: self.alpha };
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || {
                let zero = ctx.graph().constant(0.0f32)?;
                where_(&less(x, &zero)?, &multiply(g, dy)?, &zero)
            })?,
            when(ctx.needs_grad(2), || ctx.add_op(op, &[x, y, g]))?,
        ])
    }
}

/// The Gaussian error linear unit `x * Phi(x)` (`Phi` the standard normal
/// distribution function), exact or in its tanh approximation.
pub struct Gelu {
    /// The tanh form `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` when
    /// true, else the exact `0.5 x (1 + erf(x / sqrt 2))`.
    pub approximate: bool,
}

impl Op for Gelu {
    fn type_name(&self) -> &'static str {
        "Gelu"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        // One call per form, not a function pointer: the kernel is inlined
        // into the loop, which then vectorises (the tanh form: 1.7 ns an
        // element instead of 14 on the 2-core machine).
        Ok(if self.approximate {
            map1(inputs[0], gelu_tanh)
        } else {
            map1(inputs[0], gelu_exact)
        })
    }
    // exact: d gelu/dx = Phi(x) + x phi(x); tanh form, with t its tanh and
    // u = sqrt(2/pi) (x + 0.044715 x^3): 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = GeluGrad {
            approximate: self.approximate,
        };
        Ok(vec![Some(ctx.add_op(op, &[ctx.input(0), ctx.grad()])?)])
    }
}

/// The gradient of [`Gelu`]: `GeluGrad(x, dy) = dy * gelu'(x)`, in one pass.
pub struct GeluGrad {
    /// Which form of gelu (see [`Gelu::approximate`]).
    pub approximate: bool,
}

impl Op for GeluGrad {
    fn type_name(&self) -> &'static str {
        "GeluGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        // As Gelu's forward: no function pointer, so the loop vectorises.
        if self.approximate {
            map2(inputs[1], inputs[0], |g, x| g * gelu_tanh_slope(x))
        } else {
            map2(inputs[1], inputs[0], |g, x| g * gelu_exact_slope(x))
        }
    }
    // out = dy * gelu'(x), with gelu'(x) written with erf/exp or tanh nodes:
    // the gradient of that composition
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let approximate = self.approximate;
        ctx.gradient_of_composition(|v| {
            let (x, dy) = (&v[0], &v[1]);
            multiply(dy, &gelu_slope_nodes(x, approximate)?)
        })
    }
}

/// gelu'(x) built from simple ops (see [`Gelu::gradient`]'s formulas).
fn gelu_slope_nodes(x: &Node, approximate: bool) -> Result<Node> {
    use std::f32::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};
    if approximate {
        let c = (FRAC_2_SQRT_PI * FRAC_1_SQRT_2, 0.044_715f32);
        let x2 = square(x)?;
        let t = tanh(&((x + &(&x2 * x) * c.1) * c.0))?;
        let du = (((&x2 * (3.0 * c.1)) + 1.0) * c.0).check()?;
        let one_minus_t2 = (1.0 - square(&t)?).check()?;
        add(
            &((&t + 1.0) * 0.5),
            &(multiply(&multiply(x, &one_minus_t2)?, &du)? * 0.5),
        )
    } else {
        // Phi(x) = 0.5 (1 + erf(x / sqrt 2)), phi(x) = e^(-x^2/2) / sqrt(2 pi)
        let cdf = ((erf(&(x * FRAC_1_SQRT_2))? + 1.0) * 0.5).check()?;
        let inv_sqrt_2pi = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * 0.5;
        let pdf = (exp(&(square(x)? * -0.5))? * inv_sqrt_2pi).check()?;
        add(&cdf, &multiply(x, &pdf)?)
    }
}

/// The sigmoid linear unit (swish) `x * sigmoid(x)`, element-wise.
pub struct Silu;

impl Op for Silu {
    fn type_name(&self) -> &'static str {
        "Silu"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], |x| x * sigmoid_f32(x)))
    }
    // d (x s)/dx = s (1 + x (1 - s)), s = sigmoid(x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(SiluGrad, &[ctx.input(0), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Silu`]: `SiluGrad(x, dy) = dy * s (1 + x (1 - s))`,
/// `s = sigmoid(x)`, in one pass.
pub struct SiluGrad;

impl Op for SiluGrad {
    fn type_name(&self) -> &'static str {
        "SiluGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, x| g * silu_slope(x))
    }
    // out = dy * s (1 + x (1 - s)): the gradient of that composition
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|v| {
            let (x, dy) = (&v[0], &v[1]);
            let s = sigmoid(x)?;
            let slope = (&s * ((x * (1.0 - &s)) + 1.0)).check()?;
            multiply(dy, &slope)
        })
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

/// Softmax along `axis` (`tf.nn.softmax(x, axis)`): `e^x / sum(e^x)` over
/// that axis, computed stably. The last axis builds [`Softmax`] (the same as
/// [`softmax`]); another axis runs over the lanes of the axes after it, with
/// no transpose.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2, 3]);
/// let y = ad::softmax_axis(&x, 0).unwrap();
/// let feed = ad::feed! { x => [[0.0, 1.0, 5.0], [0.0, 1.0, 5.0]] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&y, &feed).unwrap(), &ad::tensor([[0.5; 3]; 2]));
/// assert_eq!(ad::softmax_axis(&x, 1).unwrap().op_type(), "Softmax");
/// assert!(ad::softmax_axis(&x, 2).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` has no axis `axis`; or
/// when `x` is a failed operator node.
pub fn softmax_axis(x: &Node, axis: usize) -> Result<Node> {
    if axis + 1 == x.shape().rank() {
        build(Softmax, &[x])
    } else {
        build(SoftmaxAxis { axis }, &[x])
    }
}

/// Log-softmax along `axis` (`tf.nn.log_softmax(x, axis)`):
/// `x - ln(sum(e^x))` over that axis, computed stably (finite for finite
/// inputs of any magnitude). Its gradient is `g - softmax(x) * sum(g, axis)`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([1, 2]);
/// let y = ad::log_softmax(&x, 1).unwrap();
/// let feed = ad::feed! { x => [[1e4, 0.0]] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&y, &feed).unwrap(), &ad::tensor([[0.0, -1e4]]));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` has no axis `axis`; or
/// when `x` is a failed operator node.
pub fn log_softmax(x: &Node, axis: usize) -> Result<Node> {
    build(LogSoftmax { axis }, &[x])
}

/// `ln(1 + e^x)`, element-wise (`tf.nn.softplus`), computed as
/// `max(x, 0) + ln(1 + e^-|x|)`: no overflow for large `x`, no loss for very
/// negative `x`. Its gradient is `sigmoid(x)`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::softplus(&x).unwrap();
/// let feed = ad::feed! { x => [-1e4, 0.0, 1e4] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([0.0, 2f32.ln(), 1e4]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 0.5, 1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn softplus(x: &Node) -> Result<Node> {
    build(Softplus, &[x])
}

/// The exponential linear unit (`tf.nn.elu`, Keras' `alpha`): `x` where
/// `x > 0`, else `alpha * (e^x - 1)`. Its gradient is 1 for `x >= 0` (1 at
/// 0, as TensorFlow) and `alpha e^x` below.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::elu(&x, 1.0).unwrap();
/// let feed = ad::feed! { x => [2.0, -1e4] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&y, &feed).unwrap(), &ad::tensor([2.0, -1.0]));
/// assert!(ad::elu(&x, f32::NAN).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when `alpha` is not
/// finite; or when `x` is a failed operator node.
pub fn elu(x: &Node, alpha: f32) -> Result<Node> {
    build(Elu { alpha }, &[x])
}

/// The Gaussian error linear unit (`tf.nn.gelu`): `0.5 x (1 + erf(x /
/// sqrt 2))`, or with `approximate` the tanh form `0.5 x (1 + tanh(sqrt(2/pi)
/// (x + 0.044715 x^3)))`. The two differ by up to about 5e-4 (near x = -2.7).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([1]);
/// let feed = ad::feed! { x => [1.0] }.unwrap();
/// let exact = ad::gelu(&x, false).unwrap();
/// let tanh_form = ad::gelu(&x, true).unwrap();
/// let mut rt = ad::RunTime::new();
/// assert!((rt.forward(&exact, &feed).unwrap()[0] - 0.841_344_7).abs() < 1e-6);
/// assert!((rt.forward(&tanh_form, &feed).unwrap()[0] - 0.841_192).abs() < 1e-6);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn gelu(x: &Node, approximate: bool) -> Result<Node> {
    build(Gelu { approximate }, &[x])
}

/// The sigmoid linear unit (`tf.nn.silu`, swish): `x * sigmoid(x)`; its
/// gradient is `s (1 + x (1 - s))` with `s = sigmoid(x)`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::silu(&x).unwrap();
/// let feed = ad::feed! { x => [0.0, 1e4] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([0.0, 1e4]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.5, 1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn silu(x: &Node) -> Result<Node> {
    build(Silu, &[x])
}
