//! Gradient descent, plain and with momentum.

use ndarray::Zip;

use super::{parse_state, step_to_tensor, update_variable, Optimizer, Schedule, Slots};
use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;

/// Plain gradient descent: `p -= alpha * g`.
///
/// Its [state](Optimizer::state) is its step count, `sgd/step`.
#[derive(Clone)]
pub struct GradientDescent {
    schedule: Schedule,
    step: u64,
}

impl GradientDescent {
    /// Gradient descent with a constant learning rate `alpha`.
    pub fn new(alpha: f32) -> Self {
        GradientDescent {
            schedule: Schedule::Constant(alpha),
            step: 0,
        }
    }

    /// Uses `schedule` for the learning rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

impl Optimizer for GradientDescent {
    fn elementwise(&self) -> bool {
        true
    }

    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let alpha = self.schedule.rate(self.step);
        for (var, grad) in grads_and_vars {
            update_variable(var, grad, |p, g| p.scaled_add(-alpha, g))?;
        }
        self.step += 1;
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("sgd/step".to_string(), step_to_tensor(self.step))]
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        let parsed = parse_state(state, graph, "sgd", &["step"], &[])?;
        self.step = parsed.counters[0];
        Ok(())
    }
}

/// Gradient descent with momentum: `v = momentum * v + g`, `p -= alpha * v`.
///
/// Its [state](Optimizer::state): `momentum/step` and `momentum/velocity/<variable>`.
#[derive(Clone)]
pub struct Momentum {
    schedule: Schedule,
    momentum: f32,
    step: u64,
    velocity: Slots,
}

impl Momentum {
    /// Momentum descent with learning rate `alpha` and momentum `momentum` (e.g. 0.9).
    pub fn new(alpha: f32, momentum: f32) -> Self {
        Momentum {
            schedule: Schedule::Constant(alpha),
            momentum,
            step: 0,
            velocity: Slots::default(),
        }
    }

    /// Uses `schedule` for the learning rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

impl Optimizer for Momentum {
    fn elementwise(&self) -> bool {
        true
    }

    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let alpha = self.schedule.rate(self.step);
        let mu = self.momentum;
        for (var, grad) in grads_and_vars {
            let v = self.velocity.get_mut(var, grad)?;
            update_variable(var, grad, |p, g| {
                Zip::from(p).and(&mut *v).and(g).for_each(|p, v, &g| {
                    *v = mu * *v + g;
                    *p -= alpha * *v;
                });
            })?;
        }
        self.step += 1;
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("momentum/step".to_string(), step_to_tensor(self.step))];
        self.velocity.export("momentum", "velocity", &mut out);
        out
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        let mut parsed = parse_state(state, graph, "momentum", &["step"], &["velocity"])?;
        self.step = parsed.counters[0];
        self.velocity = parsed.slots.swap_remove(0);
        Ok(())
    }
}
