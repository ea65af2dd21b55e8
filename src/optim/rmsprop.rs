//! RMSProp with the original's formula (epsilon outside the square root, slots from zero).

use ndarray::Zip;

use super::{parse_state, step_to_tensor, update_variable, Optimizer, Schedule, Slots};
use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;

/// RMSProp: `ms = rho ms + (1-rho) g²`, `mom = momentum mom + alpha g / (sqrt(ms) + eps)`,
/// `p -= mom`. Unlike TensorFlow's kernel, epsilon is outside the square root and
/// `ms` starts at 0 (the original framework's formula).
///
/// Its [state](Optimizer::state): `rmsprop/step`, `rmsprop/ms/<variable>` and
/// `rmsprop/mom/<variable>`.
#[derive(Clone)]
pub struct RmsProp {
    schedule: Schedule,
    rho: f32,
    momentum: f32,
    epsilon: f32,
    step: u64,
    ms: Slots,
    mom: Slots,
}

impl RmsProp {
    /// RMSProp with learning rate `alpha`, rho 0.9, momentum 0, epsilon 1e-10.
    pub fn new(alpha: f32) -> Self {
        RmsProp {
            schedule: Schedule::Constant(alpha),
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-10,
            step: 0,
            ms: Slots::default(),
            mom: Slots::default(),
        }
    }

    /// Sets rho, the decay of the mean square.
    pub fn rho(mut self, rho: f32) -> Self {
        self.rho = rho;
        self
    }

    /// Sets the momentum.
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets epsilon, added to `sqrt(ms)`.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Uses `schedule` for the learning rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

impl Optimizer for RmsProp {
    fn elementwise(&self) -> bool {
        true
    }

    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let alpha = self.schedule.rate(self.step);
        let (rho, mu, eps) = (self.rho, self.momentum, self.epsilon);
        for (var, grad) in grads_and_vars {
            let ms = self.ms.get_mut(var, grad)?;
            let mom = self.mom.get_mut(var, grad)?;
            update_variable(var, grad, |p, g| {
                Zip::from(p)
                    .and(&mut *ms)
                    .and(&mut *mom)
                    .and(g)
                    .for_each(|p, ms, mom, &g| {
                        *ms = rho * *ms + (1.0 - rho) * g * g;
                        *mom = mu * *mom + alpha * g / (ms.sqrt() + eps);
                        *p -= *mom;
                    });
            })?;
        }
        self.step += 1;
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("rmsprop/step".to_string(), step_to_tensor(self.step))];
        self.ms.export("rmsprop", "ms", &mut out);
        self.mom.export("rmsprop", "mom", &mut out);
        out
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        let parsed = parse_state(state, graph, "rmsprop", &["step"], &["ms", "mom"])?;
        let mut slots = parsed.slots.into_iter();
        self.step = parsed.counters[0];
        self.ms = slots.next().unwrap_or_default();
        self.mom = slots.next().unwrap_or_default();
        Ok(())
    }
}
