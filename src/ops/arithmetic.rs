//! Element-wise arithmetic with NumPy broadcasting: add, subtract, multiply,
//! divide, negate.
//!
//! A binary op's output has the broadcast shape of its inputs; each input's
//! gradient is the upstream gradient's contribution summed back to that input's
//! shape ([`sum_to`]). The gradients are built from these same ops, so they
//! can be differentiated again.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::broadcast_map2;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::broadcast::sum_to;
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The static shape rule of every broadcasting binary op: the broadcast of
/// its two inputs' shapes.
///
/// # Errors
/// [`Error::InvalidArgument`] unless there are exactly two inputs;
/// [`Error::Broadcast`] when their shapes cannot broadcast.
pub(crate) fn broadcast_rule(op: &str, inputs: &[&TensorShape]) -> Result<TensorShape> {
    match inputs {
        [x, y] => x.broadcast(y),
        _ => Err(Error::invalid(format!(
            "{op} takes 2 inputs, got {}",
            inputs.len()
        ))),
    }
}

/// `x + y`.
pub struct Add;

impl Op for Add {
    fn type_name(&self) -> &'static str {
        "Add"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| a + b)
    }
    // d(x+y)/dx = d(x+y)/dy = 1: the upstream gradient, summed back over broadcast axes
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, y, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || sum_to(g, x, &[y]))?,
            when(ctx.needs_grad(1), || sum_to(g, y, &[x]))?,
        ])
    }
}

/// `x - y`.
pub struct Subtract;

impl Op for Subtract {
    fn type_name(&self) -> &'static str {
        "Subtract"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| a - b)
    }
    // d(x-y)/dx = 1, d(x-y)/dy = -1 (negated after the sum: over the smaller tensor)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, y, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || sum_to(g, x, &[y]))?,
            when(ctx.needs_grad(1), || negate(&sum_to(g, y, &[x])?))?,
        ])
    }
}

/// `x * y`, element-wise.
pub struct Multiply;

impl Op for Multiply {
    fn type_name(&self) -> &'static str {
        "Multiply"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| a * b)
    }
    // d(xy)/dx = y, d(xy)/dy = x
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, y, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        Ok(vec![
            when(ctx.needs_grad(0), || sum_to(&multiply(g, y)?, x, &[y]))?,
            when(ctx.needs_grad(1), || sum_to(&multiply(g, x)?, y, &[x]))?,
        ])
    }
}

/// `x / y`, element-wise.
pub struct Divide;

impl Op for Divide {
    fn type_name(&self) -> &'static str {
        "Divide"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| a / b)
    }
    // d(x/y)/dx = 1/y, d(x/y)/dy = -x/y^2 = -(1/y) * out: both from g/y, computed once
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, y, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        let g_over_y = divide(g, y)?;
        Ok(vec![
            when(ctx.needs_grad(0), || sum_to(&g_over_y, x, &[y]))?,
            when(ctx.needs_grad(1), || {
                let dy = multiply(&g_over_y, ctx.output())?;
                negate(&sum_to(&dy, y, &[x])?)
            })?,
        ])
    }
}

/// `-x`.
pub struct Negate;

impl Op for Negate {
    fn type_name(&self) -> &'static str {
        "Negate"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(-inputs[0])
    }
    // d(-x)/dx = -1
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(negate(ctx.grad())?)])
    }
}

/// `Some(make())` when `wanted`, else `None` (an input that takes no gradient).
pub(crate) fn when(wanted: bool, make: impl FnOnce() -> Result<Node>) -> Result<Option<Node>> {
    wanted.then(make).transpose()
}

/// `x + y` with NumPy broadcasting.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2, 3]);
/// let y = g.constant([10.0f32, 20.0, 30.0]).unwrap();
/// let z = ad::add(&x, &y).unwrap();
/// assert_eq!(z.shape(), ad::shape![2, 3]);
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Broadcast`]
/// when the static shapes cannot broadcast; [`Error::GraphMismatch`].
pub fn add(x: &Node, y: &Node) -> Result<Node> {
    build(Add, &[x, y])
}

/// `x - y` with NumPy broadcasting.
///
/// # Errors
/// As [`add`].
pub fn subtract(x: &Node, y: &Node) -> Result<Node> {
    build(Subtract, &[x, y])
}

/// `x * y` (element-wise) with NumPy broadcasting.
///
/// # Errors
/// As [`add`].
pub fn multiply(x: &Node, y: &Node) -> Result<Node> {
    build(Multiply, &[x, y])
}

/// `x / y` (element-wise) with NumPy broadcasting.
///
/// # Errors
/// As [`add`].
pub fn divide(x: &Node, y: &Node) -> Result<Node> {
    build(Divide, &[x, y])
}

/// `-x`.
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn negate(x: &Node) -> Result<Node> {
    build(Negate, &[x])
}

/// The element-wise sum of several tensors of one shape: how gradient
/// contributions from several consumers are added up.
pub struct AddN;

impl Op for AddN {
    fn type_name(&self) -> &'static str {
        "AddN"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (first, rest) = inputs
            .split_first()
            .ok_or_else(|| Error::invalid("AddN needs at least one input"))?;
        rest.iter().try_fold((*first).clone(), |acc, s| {
            acc.merge(s).ok_or_else(|| {
                Error::invalid(format!(
                    "AddN inputs must have one shape, got {acc} and {s}"
                ))
            })
        })
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let shape = inputs[0].shape();
        if let Some(other) = inputs.iter().find(|t| t.shape() != shape) {
            return Err(Error::ShapeMismatch {
                what: "AddN input".into(),
                expected: TensorShape::known(shape),
                got: TensorShape::known(other.shape()),
            });
        }
        let mut sum = inputs[0].to_owned();
        for t in &inputs[1..] {
            sum += *t;
        }
        Ok(sum)
    }
    // d(sum x_i)/dx_i = 1
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(ctx.grad().clone()); ctx.inputs().len()])
    }
}

/// The element-wise sum of `xs` (all of one shape).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let a = g.constant([1.0, 2.0]).unwrap();
/// let b = g.constant([10.0, 20.0]).unwrap();
/// let s = ad::add_n(&[&a, &b, &a]).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&s, &ad::Feed::new()).unwrap(), &ad::tensor([12.0, 24.0]));
/// ```
///
/// Terms that place the gradients of pieces of one tensor ([`UnstackGrad`]
/// or [`SplitGrad`] nodes of one `x` and axis, as the gradients of the
/// pieces of an [`unstack`](crate::unstack) or [`split`](crate::split) are)
/// are joined into one [`PieceGrads`] node first: one pass over `x`'s size
/// instead of one full-size tensor per piece. Matrix products among the
/// terms that [`gradients`](crate::gradients()) built ([`matmul`](crate::matmul)
/// nodes of 2-D operands and one shape: the gradient of a weight used by
/// several products) are joined into one
/// [`MatMulSum`] node: the products accumulated in one buffer per thread, not
/// one full-size tensor each. The result is a joined node alone when no other
/// term is left.
///
/// [`MatMulSum`]: crate::ops::linalg::MatMulSum
/// [`UnstackGrad`]: crate::ops::array::UnstackGrad
/// [`SplitGrad`]: crate::ops::array::SplitGrad
/// [`PieceGrads`]: crate::ops::array::PieceGrads
///
/// # Errors
/// [`Error::InvalidArgument`] for no inputs; [`Error::Node`] when the static
/// shapes differ.
pub fn add_n(xs: &[&Node]) -> Result<Node> {
    let pieces = crate::ops::array::join_piece_gradients(xs)?;
    let joined = pieces.is_some();
    let mut terms = pieces.unwrap_or_else(|| xs.iter().map(|&n| n.clone()).collect());
    match crate::ops::linalg::join_matmul_terms(&terms)? {
        Some(t) => terms = t,
        None if !joined => return build(AddN, xs),
        None => {}
    }
    if terms.len() == 1 {
        if let Some(only) = terms.pop() {
            return Ok(only);
        }
    }
    let refs: Vec<&Node> = terms.iter().collect();
    build(AddN, &refs)
}
