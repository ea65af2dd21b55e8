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
//! An optimizer's state (step count, moments, velocities) can be read with
//! [`Optimizer::state`] and put back with [`Optimizer::load_state`], keyed by
//! variable *name*, so that training resumes exactly from a checkpoint (see
//! [`Graph::save_training_state`](crate::Graph::save_training_state)). The
//! hyperparameters (learning rate, schedule, betas, ...) are not part of the
//! state: resume with an optimizer built the same way.
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
use crate::graph::{Graph, Node, NodeId};
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
    /// Only the gradients these variables need are computed (the objective's
    /// gradient graph w.r.t. them, built once and reused): within the cycle
    /// [`RunTime::grad`] reads the variables' gradients, not those of other
    /// nodes (the input placeholders' included); call
    /// [`RunTime::backward`] for every node's.
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
        let vars = objective_vars(objective, var_list);
        rt.backward_to(objective, feed, None, Some(&vars))?;
        vars.into_iter()
            .map(|v| {
                let grad = match rt.grad(&v) {
                    Ok(g) => g.clone(),
                    Err(_) => zero_gradient(&v)?,
                };
                Ok((v, grad))
            })
            .collect()
    }

    /// [`compute_gradients`](Optimizer::compute_gradients) then
    /// [`apply_gradients`](Optimizer::apply_gradients), without copying
    /// either: the update reads each gradient where backward left it, and
    /// changes each variable's value in place.
    ///
    /// (Called separately inside a cycle, the two copy: `compute_gradients`
    /// returns gradients the caller owns, and while the run time still holds a
    /// variable's value from this cycle's forward, `apply_gradients` updates a
    /// copy of it, leaving the run time's as it was. Measured on the batch-norm
    /// MLP W3 of `examples/bench.rs`, those copies were about a tenth of the
    /// step.)
    ///
    /// Afterwards, within the cycle, [`RunTime::grad`] reads the gradients as
    /// before, and [`RunTime::value`] of an updated variable reads its *new*
    /// value, as the original's cached forward value (the variable's array,
    /// updated in place) did.
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
        let vars = objective_vars(objective, var_list);
        rt.backward_to(objective, feed, None, Some(&vars))?;
        let mut grads = Vec::with_capacity(vars.len());
        let mut moved = Vec::with_capacity(vars.len());
        for v in vars {
            let grad = rt.take_grad(&v);
            moved.push(grad.is_some());
            let grad = match grad {
                Some(g) => g,
                None => zero_gradient(&v)?,
            };
            grads.push((v, grad));
        }
        let held: Vec<bool> = grads.iter().map(|(v, _)| rt.release_value(v)).collect();
        let applied = self.apply_gradients(&grads);
        for ((v, grad), (moved, held)) in grads.into_iter().zip(moved.into_iter().zip(held)) {
            if moved {
                rt.restore_grad(&v, grad);
            }
            if held {
                rt.refresh_value(&v)?;
            }
        }
        applied
    }

    /// The optimizer's state as named tensors, in a fixed order: step counts (as
    /// [`step_to_tensor`]) named `<kind>/<counter>`, then per-variable slots named
    /// `<kind>/<slot>/<variable name>` sorted by variable name, e.g. `adam/t`,
    /// `adam/m/Variable`, `adam/m/Variable_0`, `adam/v/Variable`, ... Every name contains a `/`, so
    /// it never equals a variable's name. The default: no state.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Replaces the optimizer's state with `state` (as made by
    /// [`state`](Optimizer::state) of an optimizer of the same kind), finding the
    /// variables by name in `graph`. All of `state` is checked before anything
    /// changes: on error the optimizer is left as it was. Slots of variables
    /// absent from `state` start again from zero when first used. The default
    /// accepts only an empty state.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an entry of another optimizer kind or not
    /// known to this one, a duplicate, a missing step count, a step count that
    /// is not a valid encoding, a variable name that is not a variable of
    /// `graph`, or a slot whose shape is not its variable's.
    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        let _ = graph;
        match state.first() {
            None => Ok(()),
            Some((name, _)) => Err(Error::invalid(format!(
                "this optimizer keeps no state, but the state given has entry {name:?}"
            ))),
        }
    }

    /// Whether the update is element-wise: each element of a variable's new
    /// value depends only on the same element of the variable, of its
    /// gradient and of the optimizer's per-variable slots, and on counters
    /// every variable shares (no norms or other reductions over a variable).
    /// Such an update can be split across processes by ranges of elements
    /// (`distributed::ShardedOptimizer`, feature `mpi`). Every built-in
    /// optimizer is; the default is `false`.
    fn elementwise(&self) -> bool {
        false
    }
}

/// Words of a step count stored by [`step_to_tensor`]; each holds 24 bits, exact in `f32`.
const STEP_WORDS: usize = 3;
const STEP_WORD_BITS: u32 = 24;

/// A step count as a tensor exactly representable in `f32`: shape `[3]`, the
/// count's 24-bit words from the lowest, `count = w[0] + w[1] * 2^24 + w[2] * 2^48`
/// (so any `u64` round-trips exactly; in NumPy: `int(w[0]) + (int(w[1]) << 24) + (int(w[2]) << 48)`).
///
/// ```
/// use adgraph::optim::{step_from_tensor, step_to_tensor};
/// let t = step_to_tensor(16_777_217);
/// assert_eq!(t.as_slice().unwrap(), &[1.0, 1.0, 0.0]);
/// assert_eq!(step_from_tensor(&t).unwrap(), 16_777_217);
/// assert_eq!(step_from_tensor(&step_to_tensor(u64::MAX)).unwrap(), u64::MAX);
/// ```
pub fn step_to_tensor(count: u64) -> Tensor {
    let mask = (1u64 << STEP_WORD_BITS) - 1;
    let words: Vec<f32> = (0..STEP_WORDS as u32)
        .map(|i| ((count >> (i * STEP_WORD_BITS)) & mask) as f32)
        .collect();
    ndarray::Array1::from(words).into_dyn()
}

/// The step count stored in `t` by [`step_to_tensor`].
///
/// # Errors
/// [`Error::InvalidArgument`] when `t` is not of shape `[3]`, a word is not an
/// integer in `[0, 2^24)`, or the count exceeds `u64::MAX`.
pub fn step_from_tensor(t: &Tensor) -> Result<u64> {
    if t.shape() != [STEP_WORDS] {
        return Err(Error::invalid(format!(
            "a step count is a tensor of shape [{STEP_WORDS}], got shape {:?}",
            t.shape()
        )));
    }
    let limit = (1u64 << STEP_WORD_BITS) as f32;
    let mut count: u64 = 0;
    for (i, &w) in t.iter().enumerate() {
        if !(w.is_finite() && w >= 0.0 && w < limit && w.fract() == 0.0) {
            return Err(Error::invalid(format!(
                "word {i} of a step count must be an integer in [0, 2^24), got {w}"
            )));
        }
        let w = u128::from(w as u32) << (i as u32 * STEP_WORD_BITS);
        let total = u128::from(count) + w;
        count = u64::try_from(total)
            .map_err(|_| Error::invalid("step count exceeds u64::MAX".to_string()))?;
    }
    Ok(count)
}

/// A state parsed by [`parse_state`]: the step counts and the slot sets, in the
/// order of the names asked for.
pub(crate) struct ParsedState {
    pub(crate) counters: Vec<u64>,
    pub(crate) slots: Vec<Slots>,
}

/// Parses `state` entries `<kind>/<counter>` and `<kind>/<slot>/<variable>`,
/// checking everything (see [`Optimizer::load_state`]).
pub(crate) fn parse_state(
    state: &[(String, Tensor)],
    graph: &Graph,
    kind: &str,
    counter_names: &[&str],
    slot_names: &[&str],
) -> Result<ParsedState> {
    let mut counters: Vec<Option<u64>> = vec![None; counter_names.len()];
    let mut slots: Vec<Slots> = vec![Slots::default(); slot_names.len()];
    for (key, value) in state {
        let rest = key
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "state entry {key:?} is not state of this optimizer (its entries are named {kind}/...)"
                ))
            })?;
        if let Some(i) = counter_names.iter().position(|c| *c == rest) {
            if counters[i].is_some() {
                return Err(Error::invalid(format!("duplicate state entry {key:?}")));
            }
            let count = step_from_tensor(value)
                .map_err(|e| Error::invalid(format!("state entry {key:?}: {e}")))?;
            counters[i] = Some(count);
            continue;
        }
        let (slot, var_name) = rest.split_once('/').ok_or_else(|| {
            Error::invalid(format!(
                "state entry {key:?} is not known to this optimizer"
            ))
        })?;
        let i = slot_names.iter().position(|s| *s == slot).ok_or_else(|| {
            Error::invalid(format!(
                "state entry {key:?}: this optimizer has no slot {slot:?} (it has {slot_names:?})"
            ))
        })?;
        let var = graph
            .node(var_name)
            .map_err(|e| Error::invalid(format!("state entry {key:?}: {e}")))?;
        if var.op_type() != "Variable" {
            return Err(Error::invalid(format!(
                "state entry {key:?}: {var_name} is a {}, not a Variable",
                var.op_type()
            )));
        }
        let shape = var.shape();
        if !shape.is_compatible_with(value.shape()) {
            return Err(Error::invalid(format!(
                "state entry {key:?} has shape {}, but variable {var_name} has shape {shape}",
                TensorShape::known(value.shape())
            )));
        }
        if !slots[i].insert(&var, value.clone()) {
            return Err(Error::invalid(format!("duplicate state entry {key:?}")));
        }
    }
    let counters = counters
        .into_iter()
        .zip(counter_names)
        .map(|(c, name)| {
            c.ok_or_else(|| Error::invalid(format!("state has no entry {kind}/{name}")))
        })
        .collect::<Result<Vec<u64>>>()?;
    Ok(ParsedState { counters, slots })
}

/// Checks that `grad` fits `var` and applies `update(value, grad)` to the variable in place.
/// The variables an optimizer step covers: `var_list`, or every trainable
/// variable of the objective's graph.
fn objective_vars(objective: &Node, var_list: Option<&[Node]>) -> Vec<Node> {
    match var_list {
        Some(v) => v.to_vec(),
        None => objective.graph().variables(true),
    }
}

/// The gradient of a variable the objective does not depend on: zeros.
fn zero_gradient(var: &Node) -> Result<Tensor> {
    Ok(Tensor::zeros(var.graph().variable_value(var)?.shape()))
}

pub(crate) fn update_variable(
    var: &Node,
    grad: &Tensor,
    update: impl FnOnce(&mut Tensor, &Tensor),
) -> Result<()> {
    check_gradient(var, grad)?;
    var.graph()
        .update_variable_in_place(var, |value| update(value, grad))
}

/// Checks that `grad` fits `var`'s shape.
pub(crate) fn check_gradient(var: &Node, grad: &Tensor) -> Result<()> {
    let shape = var.shape();
    if !shape.is_compatible_with(grad.shape()) {
        return Err(Error::ShapeMismatch {
            what: format!("gradient for variable {}", var.name()),
            expected: shape,
            got: TensorShape::known(grad.shape()),
        });
    }
    Ok(())
}

/// Per-variable slots (moments, momentum buffers), zero until first used, with
/// the variable's name (for [`Optimizer::state`]).
#[derive(Default, Clone)]
pub(crate) struct Slots {
    values: HashMap<(u64, NodeId), (String, Tensor)>,
}

impl Slots {
    /// The slot of `var`, made as zeros of the gradient's shape on first use;
    /// checks first that `grad` fits `var`, so a slot always has its variable's shape.
    pub(crate) fn get_mut(&mut self, var: &Node, grad: &Tensor) -> Result<&mut Tensor> {
        check_gradient(var, grad)?;
        let (_, value) = self
            .values
            .entry((var.graph().id(), var.id()))
            .or_insert_with(|| (var.name(), Tensor::zeros(grad.shape())));
        Ok(value)
    }

    /// Sets `var`'s slot; false when it was already set.
    fn insert(&mut self, var: &Node, value: Tensor) -> bool {
        let key = (var.graph().id(), var.id());
        if self.values.contains_key(&key) {
            return false;
        }
        self.values.insert(key, (var.name(), value));
        true
    }

    /// Appends `<kind>/<slot>/<variable name>` entries, sorted by variable name.
    pub(crate) fn export(&self, kind: &str, slot: &str, out: &mut Vec<(String, Tensor)>) {
        let mut entries: Vec<&(String, Tensor)> = self.values.values().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(
            entries
                .into_iter()
                .map(|(name, value)| (format!("{kind}/{slot}/{name}"), value.clone())),
        );
    }
}
