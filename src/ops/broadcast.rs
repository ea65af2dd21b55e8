//! The gradient side of NumPy broadcasting: summing a gradient back to the
//! shape of an input that was broadcast ([`sum_to`]), and its adjoint,
//! repeating a tensor up to the shape of another ([`broadcast_like`]).
//!
//! `sum_to` decides from the static shapes which axes to sum when it can, so
//! the usual `x + bias` with `x: [None, 10]` sums a fixed axis and never holds
//! `x`'s value for its shape; only where a dim is unknown on both sides does it
//! read the input's run-time shape.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::{broadcast_to_shape, sum_to_shape};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Sums away `leading` leading axes, then sums `axes` (of what is left)
/// keeping them with size 1.
pub struct SumTo {
    /// How many leading axes are summed away.
    pub leading: usize,
    /// The axes (after the leading ones are gone) summed to size 1.
    pub axes: Vec<usize>,
    /// The static shape of the result.
    pub shape: TensorShape,
}

impl Op for SumTo {
    fn type_name(&self) -> &'static str {
        "SumTo"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        if inputs[0].rank() < self.leading + self.shape.rank() {
            return Err(Error::invalid(format!(
                "cannot sum shape {} to {}",
                inputs[0], self.shape
            )));
        }
        Ok(self.shape.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let x = inputs[0];
        let mut target: Vec<usize> = x.shape()[self.leading..].to_vec();
        for &a in &self.axes {
            if let Some(d) = target.get_mut(a) {
                *d = 1;
            }
        }
        Ok(sum_to_shape(x, &target))
    }
    // The adjoint of a sum is a broadcast back to the summed input's shape.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(broadcast_like(ctx.grad(), ctx.input(0))?)])
    }
}

/// `x` summed to the shape of `like`'s value (read at run time).
pub struct SumToShapeOf;

impl Op for SumToShapeOf {
    fn type_name(&self) -> &'static str {
        "SumToShapeOf"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[1].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        check_broadcasts(inputs[1].shape(), inputs[0].shape())?;
        Ok(sum_to_shape(inputs[0], inputs[1].shape()))
    }
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(broadcast_like(ctx.grad(), ctx.input(0))?), None])
    }
}

/// `x` repeated up to the shape of `like`'s value (NumPy broadcasting).
pub struct BroadcastLike;

impl Op for BroadcastLike {
    fn type_name(&self) -> &'static str {
        "BroadcastLike"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let out = inputs[0].broadcast(inputs[1])?;
        out.merge(inputs[1]).ok_or_else(|| {
            Error::invalid(format!("cannot broadcast {} to {}", inputs[0], inputs[1]))
        })
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        if inputs[0].shape() == inputs[1].shape() {
            return Ok(inputs[0].clone());
        }
        broadcast_to_shape(inputs[0], inputs[1].shape(), 1.0)
    }
    // The adjoint of a broadcast is a sum back to the input's shape.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![
            Some(sum_to(ctx.grad(), ctx.input(0), &[ctx.input(1)])?),
            None,
        ])
    }
}

fn check_broadcasts(small: &[usize], big: &[usize]) -> Result<()> {
    let lead = big.len().checked_sub(small.len());
    let fits = lead.is_some_and(|lead| {
        small
            .iter()
            .zip(&big[lead..])
            .all(|(&s, &b)| s == b || s == 1)
    });
    if fits {
        Ok(())
    } else {
        Err(Error::Broadcast {
            lhs: TensorShape::known(small),
            rhs: TensorShape::known(big),
        })
    }
}

/// `x` repeated up to the shape of `like`'s value.
///
/// # Errors
/// [`Error::Node`] when the static shapes cannot broadcast.
pub fn broadcast_like(x: &Node, like: &Node) -> Result<Node> {
    if x.shape() == like.shape() && x.shape().is_fully_defined() {
        return Ok(x.clone());
    }
    build(BroadcastLike, &[x, like])
}

/// `grad` (the gradient of a broadcasting op's output) summed back to the
/// shape of its input `like`; `others` are the op's other inputs, which tell
/// from their static shapes whether an unknown dim of `like` was broadcast.
/// Returns `grad` itself when nothing is summed.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3]);
/// let b = g.placeholder([3]);
/// let y = ad::add(&x, &b).unwrap();
/// let db = ad::sum_to(&y, &b, &[&x]).unwrap();
/// assert_eq!(db.op_type(), "SumTo"); // a fixed axis, no run-time shape needed
/// let dx = ad::sum_to(&y, &x, &[&b]).unwrap();
/// assert_eq!(dx, y); // nothing to sum
/// ```
///
/// # Errors
/// [`Error::Node`] when `grad`'s rank is below `like`'s.
pub fn sum_to(grad: &Node, like: &Node, others: &[&Node]) -> Result<Node> {
    let (o, k) = (grad.shape(), like.shape());
    if o.rank() < k.rank() {
        return build(SumToShapeOf, &[grad, like]);
    }
    let leading = o.rank() - k.rank();
    let mut axes = Vec::new();
    for a in 0..k.rank() {
        let out_dim = o.dim(leading + a);
        match k.dim(a) {
            Some(1) => {
                if out_dim != Some(1) {
                    axes.push(a);
                }
            }
            Some(_) => {}
            None => {
                // Unknown here: it equals the output's dim if no other input
                // can have broadcast along this axis (absent there, or 1).
                let others_trivial = others.iter().all(|n| {
                    let s = n.shape();
                    let offset = o.rank() - s.rank().min(o.rank());
                    (leading + a) < offset || s.dim(leading + a - offset) == Some(1)
                });
                if !others_trivial {
                    return build(SumToShapeOf, &[grad, like]);
                }
            }
        }
    }
    if leading == 0 && axes.is_empty() {
        return Ok(grad.clone());
    }
    build(
        SumTo {
            leading,
            axes,
            shape: k,
        },
        &[grad],
    )
}
