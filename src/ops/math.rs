//! Element-wise math: exp, log, sqrt, square, pow with a scalar exponent.
//!
//! Every op here keeps its input's shape. Values outside a function's domain
//! never panic: they give what IEEE arithmetic (and NumPy/TensorFlow) gives,
//! e.g. `log(0) = -inf`, `log(-1) = NaN`, `sqrt(-1) = NaN`.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{map1, map2, map3};
use crate::kernels::exp::exp as exp_f32;
use crate::op::{BackwardContext, ForwardContext, Op};
use crate::ops::build;
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
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(map2(grad, ctx.output(), |g, y| g * y)?)])
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
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(map2(grad, ctx.input(0), |g, x| g / x)?)])
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
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(map2(grad, ctx.output(), |g, y| 0.5 * g / y)?)])
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
    // d(x^2)/dx = 2x
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(map2(grad, ctx.input(0), |g, x| 2.0 * x * g)?)])
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
    // d(x^p)/dx = p * x^(p-1); 0 everywhere when p = 0 (x^0 is constant)
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let p = self.exponent;
        if p == 0.0 {
            return Ok(vec![Some(Tensor::zeros(ctx.input(0).raw_dim()))]);
        }
        if p == 1.0 {
            return Ok(vec![Some(grad.clone())]);
        }
        Ok(vec![Some(map3(
            grad,
            ctx.input(0),
            ctx.output(),
            |g, x, y| {
                // p * x^(p-1) = p * y / x where x != 0; at x = 0 take the power itself
                // (0 for p > 1, inf for p < 1, as TF gives).
                if x != 0.0 && y.is_finite() {
                    g * p * (y / x)
                } else {
                    g * p * Pow::pow(x, p - 1.0)
                }
            },
        )?)])
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
