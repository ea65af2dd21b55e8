//! The built-in ops, one file per family. Each op is a struct implementing
//! [`Op`](crate::Op) with its shape rule, forward and backward side by side,
//! plus a free function that adds it to the graph of its inputs.

pub mod arithmetic;
pub mod dropout;
pub mod math;
pub mod norm;

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
