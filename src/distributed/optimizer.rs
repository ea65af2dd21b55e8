//! [`AveragedOptimizer`]: an optimizer whose updates use the gradients averaged across ranks.

use crate::distributed::Distributed;
use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// Wraps an optimizer so that each update uses the gradients averaged across
/// the ranks ([`Distributed::average_gradients`]), as Horovod's
/// `DistributedOptimizer`: every rank then applies the same update to the same
/// variables. Its state is the wrapped optimizer's (the same names in a
/// checkpoint).
///
/// [`optimize`](Optimizer::optimize) and
/// [`apply_gradients`](Optimizer::apply_gradients) average; within the cycle,
/// [`RunTime::grad`](crate::RunTime::grad) still reads this rank's own
/// gradients. Every rank must call it at the same points, with the same
/// variables.
///
/// ```no_run
/// use adgraph::{distributed::{AveragedOptimizer, Distributed}, optim::Adam};
/// let dist = Distributed::init().unwrap();
/// let optimizer = AveragedOptimizer::new(Adam::new(1e-3), &dist);
/// ```
pub struct AveragedOptimizer {
    inner: Box<dyn Optimizer>,
    dist: Distributed,
}

impl AveragedOptimizer {
    /// `optimizer`, averaging over the ranks of `dist`.
    pub fn new(optimizer: impl Optimizer + 'static, dist: &Distributed) -> Self {
        Self::boxed(Box::new(optimizer), dist)
    }

    /// A boxed `optimizer`, averaging over the ranks of `dist`.
    pub fn boxed(optimizer: Box<dyn Optimizer>, dist: &Distributed) -> Self {
        AveragedOptimizer {
            inner: optimizer,
            dist: dist.clone(),
        }
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &dyn Optimizer {
        self.inner.as_ref()
    }
}

impl Optimizer for AveragedOptimizer {
    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let averaged = self.dist.average_gradients(grads_and_vars)?;
        self.inner.apply_gradients(&averaged)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.inner.state()
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        self.inner.load_state(state, graph)
    }
}
