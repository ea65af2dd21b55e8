//! Tensors filled with one value, shaped like another node's value:
//! `ones_like` (the default upstream gradient of [`gradients`](crate::gradients()))
//! and `zeros_like`.

use crate::error::Result;
use crate::graph::Node;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::{full, Tensor};

/// A tensor of `value` with the shape of the input's value.
pub struct FillLike {
    /// The value every element takes.
    pub value: f32,
}

impl Op for FillLike {
    fn type_name(&self) -> &'static str {
        if self.value == 0.0 {
            "ZerosLike"
        } else if self.value == 1.0 {
            "OnesLike"
        } else {
            "FillLike"
        }
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(full(inputs[0].shape(), self.value))
    }
    // Constant in its input: no gradient.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// Ones with the shape of `x`'s value (`tf.ones_like`).
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn ones_like(x: &Node) -> Result<Node> {
    build(FillLike { value: 1.0 }, &[x])
}

/// Zeros with the shape of `x`'s value (`tf.zeros_like`).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2]);
/// let z = ad::zeros_like(&x).unwrap();
/// let feed = ad::feed! { x => [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&z, &feed).unwrap().shape(), &[3, 2]);
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn zeros_like(x: &Node) -> Result<Node> {
    build(FillLike { value: 0.0 }, &[x])
}
