//! Element-wise math: exp, log, sqrt, square, pow with a scalar exponent.
//!
//! Every op here keeps its input's shape. Values outside a function's domain
//! never panic: they give what IEEE arithmetic (and NumPy/TensorFlow) gives,
//! e.g. `log(0) = -inf`, `log(-1) = NaN`, `sqrt(-1) = NaN`.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{map1, map2, map3};
use crate::kernels::exp::exp as exp_f32;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::{divide, multiply, negate, when};
use crate::ops::build;
use crate::ops::fill::zeros_like;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The shape rule of a one-input element-wise op: the input's shape.
///
/// # Errors
/// [`Error::InvalidArgument`] unless there is exactly one input.
pub(crate) fn unary_rule(op: &str, inputs: &[&TensorShape]) -> Result<TensorShape> {
    match inputs {
        [x] => Ok((*x).clone()),
        _ => Err(Error::invalid(format!(
            "{op} takes 1 input, got {}",
            inputs.len()
        ))),
    }
}

/// The shape rule of a gradient op on `n` inputs of one shape (a forward value
/// and upstream gradients): their merged shape.
///
/// # Errors
/// [`Error::InvalidArgument`] for another number of inputs, or shapes that
/// cannot be the same.
pub(crate) fn same_shape_rule(op: &str, inputs: &[&TensorShape], n: usize) -> Result<TensorShape> {
    if inputs.len() != n {
        return Err(Error::invalid(format!(
            "{op} takes {n} inputs, got {}",
            inputs.len()
        )));
    }
    inputs[1..].iter().try_fold(inputs[0].clone(), |acc, s| {
        acc.merge(s).ok_or_else(|| {
            Error::invalid(format!(
                "{op} inputs must have one shape, got {acc} and {s}"
            ))
        })
    })
}

/// Checks that a float attribute is finite.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the attribute when it is NaN or infinite.
pub(crate) fn finite_attr(op: &str, name: &str, value: f32) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{op}: attribute {name} must be finite, got {value}"
        )))
    }
}

/// `e^x`, element-wise.
pub struct Exp;

impl Op for Exp {
    fn type_name(&self) -> &'static str {
        "Exp"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], exp_f32))
    }
    // d(e^x)/dx = e^x, the output itself
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(multiply(ctx.grad(), ctx.output())?)])
    }
}

/// The natural logarithm `ln(x)`, element-wise.
pub struct Log;

impl Op for Log {
    fn type_name(&self) -> &'static str {
        "Log"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::ln))
    }
    // d(ln x)/dx = 1/x
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(divide(ctx.grad(), ctx.input(0))?)])
    }
}

/// The square root `sqrt(x)`, element-wise.
pub struct Sqrt;

impl Op for Sqrt {
    fn type_name(&self) -> &'static str {
        "Sqrt"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::sqrt))
    }
    // d(sqrt x)/dx = 1 / (2 sqrt x) = 0.5 / y
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(SqrtGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Sqrt`]: `SqrtGrad(y, dy) = 0.5 * dy / y`, with `y = sqrt(x)`
/// (TensorFlow's `SqrtGrad`), in one pass.
pub struct SqrtGrad;

impl Op for SqrtGrad {
    fn type_name(&self) -> &'static str {
        "SqrtGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, y| 0.5 * g / y)
    }
    // out = 0.5 dy / y: d out/d dy = 0.5 / y, d out/dy = -0.5 dy / y^2 = -out / y
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, g) = (ctx.input(0), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                negate(&multiply(&divide(g, y)?, ctx.output())?)
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(SqrtGrad, &[y, g]))?,
        ])
    }
}

/// `x^2`, element-wise.
pub struct Square;

impl Op for Square {
    fn type_name(&self) -> &'static str {
        "Square"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], |x| x * x))
    }
    // d(x^2)/dx = 2x: PowGrad with exponent 2, which computes 2 x dy in one pass
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(
            PowGrad { exponent: 2.0 },
            &[ctx.input(0), ctx.output(), ctx.grad()],
        )?;
        Ok(vec![Some(dx)])
    }
}

/// `x^exponent`, element-wise, for a fixed scalar exponent.
pub struct Pow {
    /// The exponent; must be finite.
    pub exponent: f32,
}

impl Pow {
    /// `x^p`: `powi` (exact repeated multiplication) for small integer `p`, else `powf`.
    fn pow(x: f32, p: f32) -> f32 {
        if p.fract() == 0.0 && p.abs() <= 16.0 {
            x.powi(p as i32)
        } else {
            x.powf(p)
        }
    }
}

impl Op for Pow {
    fn type_name(&self) -> &'static str {
        "Pow"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "exponent", self.exponent)?;
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let p = self.exponent;
        Ok(map1(inputs[0], |x| Pow::pow(x, p)))
    }
    // d(x^p)/dx = p * x^(p-1); 0 everywhere when p = 0 (x^0 is constant), the
    // upstream gradient itself when p = 1
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let p = self.exponent;
        let dx = if p == 0.0 {
            zeros_like(ctx.input(0))?
        } else if p == 1.0 {
            ctx.grad().clone()
        } else {
            ctx.add_op(
                PowGrad { exponent: p },
                &[ctx.input(0), ctx.output(), ctx.grad()],
            )?
        };
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Pow`] (and of [`Square`], exponent 2):
/// `PowGrad(x, y, dy) = dy * p * x^(p-1)`, with `y = x^p` the forward output,
/// in one pass.
///
/// `x^(p-1)` is taken as `y / x` where `x != 0` (no second power), and for
/// `p = 2` as `2 x` exactly; at `x = 0` it is the power itself (0 for `p > 1`,
/// `inf` for `p < 1`, as TensorFlow gives).
pub struct PowGrad {
    /// The exponent `p` of the forward op; must be finite.
    pub exponent: f32,
}

impl Op for PowGrad {
    fn type_name(&self) -> &'static str {
        "PowGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        finite_attr(self.type_name(), "exponent", self.exponent)?;
        same_shape_rule(self.type_name(), inputs, 3)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (x, y, grad) = (inputs[0], inputs[1], inputs[2]);
        let p = self.exponent;
        if p == 2.0 {
            return map2(grad, x, |g, x| 2.0 * x * g);
        }
        map3(grad, x, y, |g, x, y| {
            if x != 0.0 && y.is_finite() {
                g * p * (y / x)
            } else {
                g * p * Pow::pow(x, p - 1.0)
            }
        })
    }
    // out = dy * p * x^(p-1) (`y` only spares computing a power: no gradient of
    // its own): d out/d dy = p x^(p-1), the same op; d out/dx = dy p (p-1) x^(p-2)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let p = self.exponent;
        let (x, y, dy, g) = (ctx.input(0), ctx.input(1), ctx.input(2), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                let g_dy = multiply(g, dy)?;
                if p == 2.0 {
                    (g_dy * 2.0).check()
                } else {
                    let slope = (pow(x, p - 2.0)? * (p * (p - 1.0))).check()?;
                    multiply(&g_dy, &slope)
                }
            })?,
            None,
            when(ctx.needs_grad(2), || {
                ctx.add_op(PowGrad { exponent: p }, &[x, y, g])
            })?,
        ])
    }
}

/// `e^x`, element-wise.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder([2]);
/// assert_eq!(adgraph::exp(&x).unwrap().shape(), adgraph::shape![2]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn exp(x: &Node) -> Result<Node> {
    build(Exp, &[x])
}

/// The natural logarithm `ln(x)`, element-wise.
///
/// Follows IEEE/NumPy and never panics: `log(0) = -inf`, `log(x) = NaN` for
/// `x < 0`; the gradient `1/x` is `±inf` at `±0`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::log(&x).unwrap();
/// let feed = ad::Feed::new().with(&x, [1.0, 0.0, -1.0]).unwrap();
/// let v = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!(v[0], 0.0);
/// assert_eq!(v[1], f32::NEG_INFINITY);
/// assert!(v[2].is_nan());
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn log(x: &Node) -> Result<Node> {
    build(Log, &[x])
}

/// The square root, element-wise.
///
/// `sqrt(0) = 0` with gradient `+inf` (as in TF), `sqrt(x) = NaN` for `x < 0`; no panic.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder(adgraph::shape![None, 4]);
/// assert_eq!(adgraph::sqrt(&x).unwrap().shape(), adgraph::shape![None, 4]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn sqrt(x: &Node) -> Result<Node> {
    build(Sqrt, &[x])
}

/// `x^2`, element-wise.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder([2, 3]);
/// assert_eq!(adgraph::square(&x).unwrap().shape(), adgraph::shape![2, 3]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn square(x: &Node) -> Result<Node> {
    build(Square, &[x])
}

/// `x^exponent`, element-wise, with gradient `exponent * x^(exponent - 1)`.
///
/// Like NumPy's `power`: a negative `x` with a non-integer exponent gives NaN,
/// `0^p` is `inf` for `p < 0`, and the gradient at `x = 0` is `inf` for
/// `0 < p < 1`. For `exponent = 0` the output is 1 and the gradient 0 everywhere.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder([2]);
/// assert!(adgraph::pow(&x, 1.5).is_ok());
/// assert!(adgraph::pow(&x, f32::NAN).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when
/// `exponent` is not finite; or when `x` is a failed operator node.
pub fn pow(x: &Node, exponent: f32) -> Result<Node> {
    build(Pow { exponent }, &[x])
}
