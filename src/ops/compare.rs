//! Comparisons and selections with NumPy broadcasting: `greater`, `less`,
//! `equal`, `greater_equal`, `less_equal` (1.0 / 0.0, no gradient), `where_`
//! (TensorFlow's `tf.where(condition, x, y)`), `maximum`, `minimum` and
//! `clip_by_value`.
//!
//! The gradients follow TensorFlow, also at ties and bounds: `maximum` and
//! `minimum` give the whole gradient to `x` where `x == y`; `clip_by_value`
//! passes the gradient where `lo <= x <= hi` (bounds included). Each gradient
//! is a selection of the upstream gradient (`where_`), which is linear in it,
//! so second derivatives exist (and are zero through the masks).

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::broadcast_map2;
use crate::kernels::elementwise::{map1, map2, select};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::{broadcast_rule, when};
use crate::ops::broadcast::sum_to;
use crate::ops::build;
use crate::ops::math::{same_shape_rule, unary_rule};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// An element-wise comparison: which one a [`Compare`] op makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `x > y`.
    Greater,
    /// `x < y`.
    Less,
    /// `x == y`.
    Equal,
    /// `x >= y`.
    GreaterEqual,
    /// `x <= y`.
    LessEqual,
}

impl Comparison {
    /// Whether `a` and `b` compare so (false when either is NaN, but for
    /// nothing: NaN is never equal, greater or less).
    #[inline]
    fn holds(self, a: f32, b: f32) -> bool {
        match self {
            Comparison::Greater => a > b,
            Comparison::Less => a < b,
            Comparison::Equal => a == b,
            Comparison::GreaterEqual => a >= b,
            Comparison::LessEqual => a <= b,
        }
    }
}

/// An element-wise comparison of `x` and `y` with broadcasting: 1.0 where it
/// holds, else 0.0 (TensorFlow's `Greater`, `Less`, `Equal`, `GreaterEqual`,
/// `LessEqual`, with a float result). Not differentiable.
pub struct Compare {
    /// Which comparison.
    pub kind: Comparison,
}

impl Op for Compare {
    fn type_name(&self) -> &'static str {
        match self.kind {
            Comparison::Greater => "Greater",
            Comparison::Less => "Less",
            Comparison::Equal => "Equal",
            Comparison::GreaterEqual => "GreaterEqual",
            Comparison::LessEqual => "LessEqual",
        }
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let kind = self.kind;
        broadcast_map2(inputs[0], inputs[1], |a, b| {
            if kind.holds(a, b) {
                1.0
            } else {
                0.0
            }
        })
    }
    // Piecewise constant: no gradient (as TF, which registers none).
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None, None])
    }
}

/// `condition != 0 ? x : y`, the three broadcast to one shape (TensorFlow's
/// `tf.where` with three arguments, `SelectV2`).
pub struct Select;

impl Op for Select {
    fn type_name(&self) -> &'static str {
        "Select"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        match inputs {
            [c, x, y] => c.broadcast(x)?.broadcast(y),
            _ => Err(Error::invalid(format!(
                "Select takes 3 inputs (condition, x, y), got {}",
                inputs.len()
            ))),
        }
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        select(inputs[0], inputs[1], inputs[2])
    }
    // d/dx = 1 where the condition holds, else 0; d/dy the opposite; each
    // summed back to its input's shape. None for the condition (piecewise constant).
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (c, x, y, g) = (ctx.input(0), ctx.input(1), ctx.input(2), ctx.grad());
        let zero = ctx.graph().constant(0.0f32)?;
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || {
                sum_to(&where_(c, g, &zero)?, x, &[c, y])
            })?,
            when(ctx.needs_grad(2), || {
                sum_to(&where_(c, &zero, g)?, y, &[c, x])
            })?,
        ])
    }
}

/// The gradients of `maximum`/`minimum`: `mask` makes the node that is 1
/// where `x` wins (ties included); there the upstream gradient goes to `x`,
/// elsewhere to `y`, each summed back to its input's shape.
fn selected_gradients(
    ctx: &GradientContext,
    mask: impl FnOnce() -> Result<Node>,
) -> Result<Vec<Option<Node>>> {
    let (x, y, g) = (ctx.input(0), ctx.input(1), ctx.grad());
    if !ctx.needs_grad(0) && !ctx.needs_grad(1) {
        return Ok(vec![None, None]);
    }
    let mask = mask()?;
    let zero = ctx.graph().constant(0.0f32)?;
    Ok(vec![
        when(ctx.needs_grad(0), || {
            sum_to(&where_(&mask, g, &zero)?, x, &[y])
        })?,
        when(ctx.needs_grad(1), || {
            sum_to(&where_(&mask, &zero, g)?, y, &[x])
        })?,
    ])
}

/// `max(x, y)` element-wise with broadcasting (NaN propagates).
pub struct Maximum;

impl Op for Maximum {
    fn type_name(&self) -> &'static str {
        "Maximum"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| {
            if a >= b || a.is_nan() {
                a
            } else {
                b
            }
        })
    }
    // d/dx = 1 where x >= y (ties go to x, as TF), d/dy = 1 where x < y
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        selected_gradients(ctx, || greater_equal(ctx.input(0), ctx.input(1)))
    }
}

/// `min(x, y)` element-wise with broadcasting (NaN propagates).
pub struct Minimum;

impl Op for Minimum {
    fn type_name(&self) -> &'static str {
        "Minimum"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        broadcast_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        broadcast_map2(inputs[0], inputs[1], |a, b| {
            if a <= b || a.is_nan() {
                a
            } else {
                b
            }
        })
    }
    // d/dx = 1 where x <= y (ties go to x, as TF), d/dy = 1 where x > y
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        selected_gradients(ctx, || less_equal(ctx.input(0), ctx.input(1)))
    }
}

/// Checks clip bounds: neither NaN, and `lo <= hi` (infinite bounds are fine).
fn check_bounds(op: &str, lo: f32, hi: f32) -> Result<()> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(Error::invalid(format!(
            "{op}: clip_value_min must be <= clip_value_max and neither NaN, got {lo} and {hi}"
        )));
    }
    Ok(())
}

/// `min(max(x, lo), hi)` element-wise, for fixed bounds `lo <= hi` (NaN stays NaN).
pub struct ClipByValue {
    /// The lower bound (`clip_value_min`).
    pub lo: f32,
    /// The upper bound (`clip_value_max`).
    pub hi: f32,
}

impl Op for ClipByValue {
    fn type_name(&self) -> &'static str {
        "ClipByValue"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        check_bounds(self.type_name(), self.lo, self.hi)?;
        unary_rule(self.type_name(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (lo, hi) = (self.lo, self.hi);
        Ok(map1(inputs[0], |x| {
            if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            }
        }))
    }
    // d/dx = 1 where lo <= x <= hi (the bounds included, as TF), else 0
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = ClipByValueGrad {
            lo: self.lo,
            hi: self.hi,
        };
        Ok(vec![Some(ctx.add_op(op, &[ctx.input(0), ctx.grad()])?)])
    }
}

/// The gradient of [`ClipByValue`]: `ClipByValueGrad(x, dy) = dy where
/// lo <= x <= hi, else 0`, in one pass.
pub struct ClipByValueGrad {
    /// The lower bound of the forward op.
    pub lo: f32,
    /// The upper bound of the forward op.
    pub hi: f32,
}

impl Op for ClipByValueGrad {
    fn type_name(&self) -> &'static str {
        "ClipByValueGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        check_bounds(self.type_name(), self.lo, self.hi)?;
        same_shape_rule(self.type_name(), inputs, 2)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (lo, hi) = (self.lo, self.hi);
        map2(
            inputs[1],
            inputs[0],
            |g, x| {
                if x < lo || x > hi {
                    0.0
                } else {
                    g
                }
            },
        )
    }
    // Linear in dy with the same mask; the mask is piecewise constant in x (no gradient)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = ClipByValueGrad {
            lo: self.lo,
            hi: self.hi,
        };
        Ok(vec![
            None,
            when(ctx.needs_grad(1), || {
                ctx.add_op(op, &[ctx.input(0), ctx.grad()])
            })?,
        ])
    }
}

fn compare(x: &Node, y: &Node, kind: Comparison) -> Result<Node> {
    build(Compare { kind }, &[x, y])
}

/// 1.0 where `x > y`, else 0.0, with NumPy broadcasting (`tf.greater` as a
/// float tensor). It has no gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.constant([[1.0f32, 2.0, 3.0]]).unwrap();
/// let y = g.constant(2.0f32).unwrap();
/// let z = ad::greater(&x, &y).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([[0.0, 0.0, 1.0]]));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Broadcast`] when the static
/// shapes cannot broadcast; [`Error::GraphMismatch`].
pub fn greater(x: &Node, y: &Node) -> Result<Node> {
    compare(x, y, Comparison::Greater)
}

/// 1.0 where `x < y`, else 0.0, with broadcasting (`tf.less`). No gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let z = ad::less(&g.constant([1.0f32, 2.0]).unwrap(), &g.constant(2.0f32).unwrap()).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([1.0, 0.0]));
/// ```
///
/// # Errors
/// As [`greater`].
pub fn less(x: &Node, y: &Node) -> Result<Node> {
    compare(x, y, Comparison::Less)
}

/// 1.0 where `x == y`, else 0.0, with broadcasting (`tf.equal`). No gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let z = ad::equal(&g.constant([1.0f32, 2.0]).unwrap(), &g.constant(2.0f32).unwrap()).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([0.0, 1.0]));
/// ```
///
/// # Errors
/// As [`greater`].
pub fn equal(x: &Node, y: &Node) -> Result<Node> {
    compare(x, y, Comparison::Equal)
}

/// 1.0 where `x >= y`, else 0.0, with broadcasting (`tf.greater_equal`). No gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let z = ad::greater_equal(&g.constant([1.0f32, 2.0]).unwrap(), &g.constant(2.0f32).unwrap()).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([0.0, 1.0]));
/// ```
///
/// # Errors
/// As [`greater`].
pub fn greater_equal(x: &Node, y: &Node) -> Result<Node> {
    compare(x, y, Comparison::GreaterEqual)
}

/// 1.0 where `x <= y`, else 0.0, with broadcasting (`tf.less_equal`). No gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let z = ad::less_equal(&g.constant([1.0f32, 3.0]).unwrap(), &g.constant(2.0f32).unwrap()).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([1.0, 0.0]));
/// ```
///
/// # Errors
/// As [`greater`].
pub fn less_equal(x: &Node, y: &Node) -> Result<Node> {
    compare(x, y, Comparison::LessEqual)
}

/// `condition != 0 ? x : y` element-wise (`tf.where(condition, x, y)`), the
/// three broadcast to one shape with NumPy rules. `condition` is a float
/// tensor (as the comparisons give): any nonzero value, NaN included, is true.
///
/// The gradient goes to `x` where the condition holds and to `y` elsewhere,
/// each summed back to its shape; `condition` gets none.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2, 3]);
/// let zero = g.constant(0.0f32).unwrap();
/// let relu = ad::where_(&ad::greater(&x, &zero).unwrap(), &x, &zero).unwrap();
/// let feed = ad::feed! { x => [[-1.0, 2.0, 0.5], [3.0, -4.0, 0.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&relu, &feed).unwrap(), &ad::tensor([[0.0, 2.0, 0.5], [3.0, 0.0, 0.0]]));
/// assert!(ad::where_(&g.placeholder([4]), &x, &zero).is_err()); // (4,) against (2, 3)
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Broadcast`] when the static shapes of
/// the three cannot broadcast to one; [`Error::GraphMismatch`].
pub fn where_(condition: &Node, x: &Node, y: &Node) -> Result<Node> {
    build(Select, &[condition, x, y])
}

/// `max(x, y)` element-wise with NumPy broadcasting (`tf.maximum`); NaN
/// propagates.
///
/// The gradient goes to `x` where `x >= y` (at ties all of it, as
/// TensorFlow), to `y` elsewhere, each summed back to its input's shape.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let y = g.placeholder(ad::shape![]);
/// let z = ad::maximum(&x, &y).unwrap();
/// let feed = ad::feed! { x => [1.0, 2.0, 3.0], y => 2.0 }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&z, &feed).unwrap(), &ad::tensor([2.0, 2.0, 3.0]));
/// rt.backward(&z, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 1.0, 1.0])); // the tie goes to x
/// assert_eq!(rt.grad(&y).unwrap().sum(), 1.0);
/// ```
///
/// # Errors
/// As [`greater`].
pub fn maximum(x: &Node, y: &Node) -> Result<Node> {
    build(Maximum, &[x, y])
}

/// `min(x, y)` element-wise with NumPy broadcasting (`tf.minimum`); NaN
/// propagates. The gradient goes to `x` where `x <= y` (ties to `x`), to `y`
/// elsewhere.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.constant([1.0f32, 2.0, 3.0]).unwrap();
/// let z = ad::minimum(&x, &g.constant(2.0f32).unwrap()).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &ad::Feed::new()).unwrap(), &ad::tensor([1.0, 2.0, 2.0]));
/// ```
///
/// # Errors
/// As [`greater`].
pub fn minimum(x: &Node, y: &Node) -> Result<Node> {
    build(Minimum, &[x, y])
}

/// `min(max(x, lo), hi)` element-wise (`tf.clip_by_value` with scalar
/// bounds); NaN stays NaN. Infinite bounds clip on one side only.
///
/// The gradient is the upstream gradient where `lo <= x <= hi` (at a bound
/// too, as TensorFlow) and 0 outside.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([4]);
/// let y = ad::clip_by_value(&x, -1.0, 1.0).unwrap();
/// let feed = ad::feed! { x => [-2.0, -1.0, 0.5, 3.0] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([-1.0, -1.0, 0.5, 1.0]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 1.0, 1.0, 0.0]));
/// assert!(ad::clip_by_value(&x, 1.0, -1.0).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when `lo > hi` or a
/// bound is NaN; or when `x` is a failed operator node.
pub fn clip_by_value(x: &Node, lo: f32, hi: f32) -> Result<Node> {
    build(ClipByValue { lo, hi }, &[x])
}
