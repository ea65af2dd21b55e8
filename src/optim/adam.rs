//! Adam (the original's formula, identical to TF1's `AdamOptimizer`) and AdamW.

use ndarray::Zip;

use super::{parse_state, step_to_tensor, update_variable, Optimizer, Schedule, Slots};
use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;

/// Adam: `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g²`,
/// `p -= alpha_t m / (sqrt(v) + eps)` with `alpha_t = alpha sqrt(1-b2^t) / (1-b1^t)`.
/// One step count `t` (from 1) is shared by all variables.
///
/// Its [state](Optimizer::state): `adam/t`, `adam/m/<variable>` and `adam/v/<variable>`.
#[derive(Clone)]
pub struct Adam {
    schedule: Schedule,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    weight_decay: f32,
    t: u64,
    m: Slots,
    v: Slots,
}

impl Adam {
    /// Adam with learning rate `alpha` and the usual defaults
    /// (beta1 0.9, beta2 0.999, epsilon 1e-8).
    pub fn new(alpha: f32) -> Self {
        Adam {
            schedule: Schedule::Constant(alpha),
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            t: 0,
            m: Slots::default(),
            v: Slots::default(),
        }
    }

    /// Sets beta1, the decay of the first moment.
    pub fn beta1(mut self, beta1: f32) -> Self {
        self.beta1 = beta1;
        self
    }

    /// Sets beta2, the decay of the second moment.
    pub fn beta2(mut self, beta2: f32) -> Self {
        self.beta2 = beta2;
        self
    }

    /// Sets epsilon, added to `sqrt(v)`.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Uses `schedule` for the learning rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The number of steps applied so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    fn state_as(&self, kind: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{kind}/t"), step_to_tensor(self.t))];
        self.m.export(kind, "m", &mut out);
        self.v.export(kind, "v", &mut out);
        out
    }

    fn load_state_as(
        &mut self,
        kind: &str,
        state: &[(String, Tensor)],
        graph: &Graph,
    ) -> Result<()> {
        let parsed = parse_state(state, graph, kind, &["t"], &["m", "v"])?;
        let mut slots = parsed.slots.into_iter();
        self.t = parsed.counters[0];
        self.m = slots.next().unwrap_or_default();
        self.v = slots.next().unwrap_or_default();
        Ok(())
    }
}

/// Elements from which a variable's update is split over rayon's threads
/// (W4's `[3, 3, 128, 256]` kernel, 294,912 elements: its update ~0.2 ms on
/// one thread; below ~64K the hand-off costs more than half the update).
const PARALLEL_ELEMENTS: usize = 1 << 16;

impl Optimizer for Adam {
    fn elementwise(&self) -> bool {
        true
    }

    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let alpha = self.schedule.rate(self.t);
        self.t += 1;
        // Bias corrections in f64: beta^t underflows gracefully and stays exact longer.
        let t = self.t as i32;
        let alpha_t = (f64::from(alpha) * (1.0 - f64::from(self.beta2).powi(t)).sqrt()
            / (1.0 - f64::from(self.beta1).powi(t))) as f32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        // AdamW's decoupled decay uses the scheduled rate, not the bias-corrected one.
        let decay = alpha * self.weight_decay;
        for (var, grad) in grads_and_vars {
            let m = self.m.get_mut(var, grad)?;
            let v = self.v.get_mut(var, grad)?;
            update_variable(var, grad, |p, g| {
                let step = |p: &mut f32, m: &mut f32, v: &mut f32, &g: &f32| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= alpha_t * *m / (v.sqrt() + eps) + decay * *p;
                };
                let zip = Zip::from(p).and(&mut *m).and(&mut *v).and(g);
                // Element-wise, so the same bits on any number of threads.
                if zip.size() >= PARALLEL_ELEMENTS {
                    zip.par_for_each(step);
                } else {
                    zip.for_each(step);
                }
            })?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.state_as("adam")
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        self.load_state_as("adam", state, graph)
    }
}

/// AdamW: Adam with decoupled weight decay, `p -= alpha * wd * p` besides the Adam step.
///
/// Its [state](Optimizer::state): `adamw/t`, `adamw/m/<variable>` and `adamw/v/<variable>`.
#[derive(Clone)]
pub struct AdamW(Adam);

impl AdamW {
    /// AdamW with learning rate `alpha` and weight decay `weight_decay` (e.g. 0.01).
    pub fn new(alpha: f32, weight_decay: f32) -> Self {
        let mut adam = Adam::new(alpha);
        adam.weight_decay = weight_decay;
        AdamW(adam)
    }

    /// The inner Adam, to set betas, epsilon or a schedule.
    pub fn with_adam(mut self, f: impl FnOnce(Adam) -> Adam) -> Self {
        let decay = self.0.weight_decay;
        self.0 = f(self.0);
        self.0.weight_decay = decay;
        self
    }
}

impl Optimizer for AdamW {
    fn elementwise(&self) -> bool {
        true
    }

    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        self.0.apply_gradients(grads_and_vars)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.0.state_as("adamw")
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        self.0.load_state_as("adamw", state, graph)
    }
}
