//! Element-wise math: exp, log, log1p, sqrt, rsqrt, square, pow with a
//! scalar exponent, abs, sin, cos, erf.
//!
//! Every op here keeps its input's shape. Values outside a function's domain
//! never panic: they give what IEEE arithmetic (and NumPy/TensorFlow) gives,
//! e.g. `log(0) = -inf`, `log(-1) = NaN`, `sqrt(-1) = NaN`.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{erf as erf_f32, erf_slope, map1, map2, map3};
use crate::kernels::exp::exp as exp_f32;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::{add, divide, multiply, negate, when};
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

/// `ln(1 + x)`, element-wise, accurate for small `x`.
pub struct Log1p;

impl Op for Log1p {
    fn type_name(&self) -> &'static str {
        "Log1p"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::ln_1p))
    }
    // d ln(1 + x)/dx = 1 / (1 + x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let one = ctx.graph().constant(1.0f32)?;
        Ok(vec![Some(divide(ctx.grad(), &add(ctx.input(0), &one)?)?)])
    }
}

/// `1 / sqrt(x)`, element-wise.
pub struct Rsqrt;

impl Op for Rsqrt {
    fn type_name(&self) -> &'static str {
        "Rsqrt"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], |x| 1.0 / x.sqrt()))
    }
    // d x^(-1/2)/dx = -0.5 x^(-3/2) = -0.5 y^3
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(RsqrtGrad, &[ctx.output(), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Rsqrt`]: `RsqrtGrad(y, dy) = -0.5 * dy * y^3`, with
/// `y = 1 / sqrt(x)` (TensorFlow's `RsqrtGrad`), in one pass.
pub struct RsqrtGrad;

impl Op for RsqrtGrad {
    fn type_name(&self) -> &'static str {
        "RsqrtGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, y| -0.5 * g * (y * y * y))
    }
    // out = -0.5 dy y^3: d out/dy = -1.5 dy y^2, d out/d dy = -0.5 y^3 (the same op)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (y, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                let g_dy = multiply(g, dy)?;
                multiply(&g_dy, &(-1.5 * &square(y)?).check()?)
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(RsqrtGrad, &[y, g]))?,
        ])
    }
}

/// `|x|`, element-wise.
pub struct Abs;

impl Op for Abs {
    fn type_name(&self) -> &'static str {
        "Abs"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::abs))
    }
    // d|x|/dx = sign(x), 0 at x = 0 (as TF)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(AbsGrad, &[ctx.input(0), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Abs`]: `AbsGrad(x, dy) = dy * sign(x)` (0 where `x` is
/// 0), in one pass.
pub struct AbsGrad;

impl Op for AbsGrad {
    fn type_name(&self) -> &'static str {
        "AbsGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, x| {
            if x > 0.0 {
                g
            } else if x < 0.0 {
                -g
            } else {
                0.0
            }
        })
    }
    // Linear in dy with the same signs; the sign is piecewise constant in x (no gradient)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || {
                ctx.add_op(AbsGrad, &[ctx.input(0), ctx.grad()])
            })?,
        ])
    }
}

/// `sin(x)`, element-wise.
pub struct Sin;

impl Op for Sin {
    fn type_name(&self) -> &'static str {
        "Sin"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::sin))
    }
    // d sin(x)/dx = cos(x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(multiply(ctx.grad(), &cos(ctx.input(0))?)?)])
    }
}

/// `cos(x)`, element-wise.
pub struct Cos;

impl Op for Cos {
    fn type_name(&self) -> &'static str {
        "Cos"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], f32::cos))
    }
    // d cos(x)/dx = -sin(x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = negate(&multiply(ctx.grad(), &sin(ctx.input(0))?)?)?;
        Ok(vec![Some(dx)])
    }
}

/// The error function `erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt`, element-wise.
pub struct Erf;

impl Op for Erf {
    fn type_name(&self) -> &'static str {
        "Erf"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(map1(inputs[0], erf_f32))
    }
    // d erf(x)/dx = 2/sqrt(pi) e^(-x^2)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = ctx.add_op(ErfGrad, &[ctx.input(0), ctx.grad()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`Erf`]: `ErfGrad(x, dy) = dy * 2/sqrt(pi) * e^(-x^2)`, in one pass.
pub struct ErfGrad;

impl Op for ErfGrad {
    fn type_name(&self) -> &'static str {
        "ErfGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        map2(inputs[1], inputs[0], |g, x| g * erf_slope(x))
    }
    // out = dy * c e^(-x^2): d out/d dy = c e^(-x^2) (the same op),
    // d out/dx = -2x * dy c e^(-x^2) = -2x ErfGrad(x, dy)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, dy, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || {
                let slope = ctx.add_op(ErfGrad, &[x, &multiply(g, dy)?])?;
                multiply(&slope, &(-2.0 * x).check()?)
            })?,
            when(ctx.needs_grad(1), || ctx.add_op(ErfGrad, &[x, g]))?,
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

/// `ln(1 + x)`, element-wise, accurate for `x` near 0 (`tf.math.log1p`);
/// gradient `1 / (1 + x)`. `log1p(-1) = -inf`, NaN below -1; no panic.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::log1p(&x).unwrap();
/// let feed = ad::feed! { x => [1e-10, -1.0] }.unwrap();
/// let v = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!(v[0], 1e-10);
/// assert_eq!(v[1], f32::NEG_INFINITY);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn log1p(x: &Node) -> Result<Node> {
    build(Log1p, &[x])
}

/// `1 / sqrt(x)`, element-wise (`tf.math.rsqrt`); gradient `-0.5 x^(-3/2)`.
/// `rsqrt(0) = inf`, NaN for `x < 0`; no panic.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::rsqrt(&x).unwrap();
/// let feed = ad::feed! { x => [4.0, 0.25] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&y, &feed).unwrap(), &ad::tensor([0.5, 2.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn rsqrt(x: &Node) -> Result<Node> {
    build(Rsqrt, &[x])
}

/// `|x|`, element-wise; gradient `sign(x)`, 0 at `x = 0` (as TensorFlow).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::abs(&x).unwrap();
/// let feed = ad::feed! { x => [-2.0, 0.0, 3.0] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([2.0, 0.0, 3.0]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([-1.0, 0.0, 1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn abs(x: &Node) -> Result<Node> {
    build(Abs, &[x])
}

/// `sin(x)` (radians), element-wise; gradient `cos(x)`.
///
/// ```
/// let g = adgraph::Graph::new();
/// let x = g.placeholder([2, 3]);
/// assert_eq!(adgraph::sin(&x).unwrap().shape(), adgraph::shape![2, 3]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn sin(x: &Node) -> Result<Node> {
    build(Sin, &[x])
}

/// `cos(x)` (radians), element-wise; gradient `-sin(x)`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::cos(&x).unwrap();
/// let feed = ad::feed! { x => [0.0, std::f32::consts::PI] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&y, &feed).unwrap(), &ad::tensor([1.0, -1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn cos(x: &Node) -> Result<Node> {
    build(Cos, &[x])
}

/// The error function, element-wise (`tf.math.erf`); gradient
/// `2/sqrt(pi) e^(-x^2)`. Computed in `f64` and rounded once, so within an
/// `f32` rounding of the exact value.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = ad::erf(&x).unwrap();
/// let feed = ad::feed! { x => [0.0, 1.0, -6.0] }.unwrap();
/// let v = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!(v[0], 0.0);
/// assert!((v[1] - 0.842_700_8).abs() < 1e-7);
/// assert_eq!(v[2], -1.0);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn erf(x: &Node) -> Result<Node> {
    build(Erf, &[x])
}
