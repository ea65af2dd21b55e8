//! Optimizers: gradient descent, momentum, Adam, AdamW and RMSProp, with the
//! original framework's update formulas.
//!
//! Each offers the original's three calls: [`compute_gradients`](Optimizer::compute_gradients)
//! (backward from an objective, then the gradient of each variable),
//! [`apply_gradients`](Optimizer::apply_gradients) (one update step from given
//! gradients), and [`optimize`](Optimizer::optimize) (both). Gradients can be
//! clipped by global norm in between ([`clip_by_global_norm`]) and the learning
//! rate can follow a [`Schedule`].
//!
//! ```
//! use adgraph as ad;
//! use ad::optim::{GradientDescent, Optimizer};
//!
//! // Minimise (w - 3)^2 by gradient descent.
//! let g = ad::Graph::new();
//! let w = g.variable(&[1], ad::init::Zeros, true).unwrap();
//! let d = &w - 3.0;
//! let loss = (&d * &d).check().unwrap();
//! let mut opt = GradientDescent::new(0.1);
//! let mut rt = ad::RunTime::new();
//! for _ in 0..100 {
//!     rt.forward_backward_cycle(|rt| opt.optimize(rt, &loss, &ad::Feed::new(), None)).unwrap();
//! }
//! assert!((g.variable_value(&w).unwrap()[0] - 3.0).abs() < 1e-4);
//! ```

mod adam;
mod clip;
mod gradient_descent;
mod rmsprop;
mod schedule;

pub use adam::{Adam, AdamW};
pub use clip::{clip_by_global_norm, global_norm};
pub use gradient_descent::{GradientDescent, Momentum};
pub use rmsprop::RmsProp;
pub use schedule::Schedule;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::graph::{Node, NodeId};
use crate::runtime::{Feed, RunTime};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Pairs of a variable and the gradient of an objective w.r.t. it.
pub type GradsAndVars = Vec<(Node, Tensor)>;

/// An optimizer: turns gradients into updates of trainable variables.
pub trait Optimizer {
    /// Applies one update step to each `(variable, gradient)` pair.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when a node is not a variable, [`Error::ShapeMismatch`]
    /// when a gradient's shape is not its variable's.
    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()>;

    /// Runs backward from `objective` (computing forward as needed) and returns the
    /// gradient of each variable of `var_list` (all trainable variables of the
    /// objective's graph when `None`). A variable the objective does not depend
    /// on gets a zero gradient.
    ///
    /// # Errors
    /// Any error of forward or backward.
    fn compute_gradients(
        &self,
        rt: &mut RunTime,
        objective: &Node,
        feed: &Feed,
        var_list: Option<&[Node]>,
    ) -> Result<GradsAndVars> {
        rt.backward(objective, feed, None)?;
        let vars = match var_list {
            Some(v) => v.to_vec(),
            None => objective.graph().variables(true),
        };
        vars.into_iter()
            .map(|v| {
                let grad = match rt.grad(&v) {
                    Ok(g) => g.clone(),
                    Err(_) => Tensor::zeros(v.graph().variable_value(&v)?.shape()),
                };
                Ok((v, grad))
            })
            .collect()
    }

    /// [`compute_gradients`](Optimizer::compute_gradients) then
    /// [`apply_gradients`](Optimizer::apply_gradients).
    ///
    /// # Errors
    /// As those two.
    fn optimize(
        &mut self,
        rt: &mut RunTime,
        objective: &Node,
        feed: &Feed,
        var_list: Option<&[Node]>,
    ) -> Result<()> {
        let grads = self.compute_gradients(rt, objective, feed, var_list)?;
        self.apply_gradients(&grads)
    }
}

/// Checks that `grad` fits `var` and applies `update(value, grad)` to the variable in place.
pub(crate) fn update_variable(
    var: &Node,
    grad: &Tensor,
    update: impl FnOnce(&mut Tensor, &Tensor),
) -> Result<()> {
    let graph = var.graph();
    let shape = var.shape();
    if !shape.is_compatible_with(grad.shape()) {
        return Err(Error::ShapeMismatch {
            what: format!("gradient for variable {}", var.name()),
            expected: shape,
            got: TensorShape::known(grad.shape()),
        });
    }
    graph.update_variable_in_place(var, |value| update(value, grad))
}

/// Per-variable slots (moments, momentum buffers), zero until first used.
#[derive(Default, Clone)]
pub(crate) struct Slots {
    values: HashMap<(u64, NodeId), Tensor>,
}

impl Slots {
    pub(crate) fn get_mut(&mut self, var: &Node, shape: &[usize]) -> &mut Tensor {
        self.values
            .entry((var.graph().id(), var.id()))
            .or_insert_with(|| Tensor::zeros(shape))
    }
}
