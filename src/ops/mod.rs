//! The built-in ops, one file per family. Each op is a struct implementing
//! [`Op`] with its shape rule, forward and gradient side by side,
//! plus a free function that adds it to the graph of its inputs.

pub mod activation;
pub mod arithmetic;
pub mod array;
pub mod attention;
pub mod broadcast;
pub mod compare;
pub mod conv;
pub mod dropout;
pub mod fill;
pub mod index;
pub mod layer_norm;
pub mod linalg;
pub mod loss;
pub mod math;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod rnn;
pub mod rnn_sequence;
pub mod scan;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::op::Op;

/// Adds `op` on `inputs` to the graph of the first input.
pub(crate) fn build(op: impl Op, inputs: &[&Node]) -> Result<Node> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::invalid(format!("{} needs at least one input", op.type_name())))?;
    first.graph.clone().add_op(op, inputs)
}
