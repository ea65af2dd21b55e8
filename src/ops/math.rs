//! Element-wise math: exp, log, sqrt, square, pow with a scalar exponent.

use crate::error::Result;
use crate::graph::Node;
use crate::op::{BackwardContext, ForwardContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// `e^x`, element-wise.
pub struct Exp;

impl Op for Exp {
    fn type_name(&self) -> &'static str {
        "Exp"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(inputs[0].mapv(f32::exp))
    }
    // d(e^x)/dx = e^x, the output itself
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad * ctx.output())])
    }
}

/// `e^x`, element-wise.
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn exp(x: &Node) -> Result<Node> {
    build(Exp, &[x])
}
