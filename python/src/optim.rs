//! `adgraph._native.Optimizer`: the engine's optimizers (gradient descent,
//! momentum, Adam, AdamW, RMSProp) for the Python optimizer classes.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use adgraph::optim::{Adam, AdamW, GradientDescent, Momentum, Optimizer, RmsProp};
use adgraph::{Feed, Graph, Node, RunTime, Tensor};
use numpy::PyArrayDyn;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{to_numpy, to_tensor};
use crate::graph::{nodes_of, NativeGraph, NativeNode};
use crate::local::{check_not_running, engine, guarded, Local};
use crate::runtime::{build_feed, NativeRunTime};

/// An optimizer and its state (moments, step count), keyed by variable.
#[pyclass(frozen, name = "Optimizer", module = "adgraph._native")]
pub struct NativeOptimizer {
    opt: Local<Rc<RefCell<Box<dyn Optimizer>>>>,
}

impl NativeOptimizer {
    fn wrap(opt: impl Optimizer + 'static) -> Self {
        let opt: Box<dyn Optimizer> = Box::new(opt);
        NativeOptimizer {
            opt: Local::new(Rc::new(RefCell::new(opt))),
        }
    }

    fn opt(&self) -> PyResult<RefMut<'_, Box<dyn Optimizer>>> {
        self.opt
            .get()?
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("this optimizer is already in use (re-entered)"))
    }

    /// The same optimizer (same state) as an [`Optimizer`] a trainer can own.
    pub fn shared(&self) -> PyResult<SharedOptimizer> {
        Ok(SharedOptimizer(self.opt.get()?.clone()))
    }
}

/// An optimizer shared between its Python object and a trainer: both see
/// one state.
pub struct SharedOptimizer(Rc<RefCell<Box<dyn Optimizer>>>);

impl Optimizer for SharedOptimizer {
    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> adgraph::Result<()> {
        self.0.borrow_mut().apply_gradients(grads_and_vars)
    }
    fn compute_gradients(
        &self,
        rt: &mut RunTime,
        objective: &Node,
        feed: &Feed,
        var_list: Option<&[Node]>,
    ) -> adgraph::Result<adgraph::optim::GradsAndVars> {
        self.0
            .borrow()
            .compute_gradients(rt, objective, feed, var_list)
    }
    fn optimize(
        &mut self,
        rt: &mut RunTime,
        objective: &Node,
        feed: &Feed,
        var_list: Option<&[Node]>,
    ) -> adgraph::Result<()> {
        self.0.borrow_mut().optimize(rt, objective, feed, var_list)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.0.borrow().state()
    }
    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> adgraph::Result<()> {
        self.0.borrow_mut().load_state(state, graph)
    }
}

#[pymethods]
impl NativeOptimizer {
    /// `v -= alpha * g`.
    #[staticmethod]
    fn gradient_descent(alpha: f32) -> Self {
        Self::wrap(GradientDescent::new(alpha))
    }

    /// `mom = momentum * mom + g`, `v -= alpha * mom`.
    #[staticmethod]
    fn momentum(alpha: f32, momentum: f32) -> Self {
        Self::wrap(Momentum::new(alpha, momentum))
    }

    /// Adam in TF1's (and the original's) form.
    #[staticmethod]
    fn adam(alpha: f32, beta1: f32, beta2: f32, epsilon: f32) -> Self {
        Self::wrap(Adam::new(alpha).beta1(beta1).beta2(beta2).epsilon(epsilon))
    }

    /// AdamW: decoupled weight decay, then Adam.
    #[staticmethod]
    fn adamw(alpha: f32, weight_decay: f32, beta1: f32, beta2: f32, epsilon: f32) -> Self {
        Self::wrap(
            AdamW::new(alpha, weight_decay)
                .with_adam(|a| a.beta1(beta1).beta2(beta2).epsilon(epsilon)),
        )
    }

    /// RMSProp with the original's formula (PyTorch's).
    #[staticmethod]
    fn rmsprop(alpha: f32, rho: f32, momentum: f32, epsilon: f32) -> Self {
        Self::wrap(
            RmsProp::new(alpha)
                .rho(rho)
                .momentum(momentum)
                .epsilon(epsilon),
        )
    }

    /// Backward from `objective` and one update of `var_list` (the graph's
    /// trainable variables when `None`), in `runtime`'s current cycle.
    #[pyo3(signature = (runtime, objective, feed = None, var_list = None))]
    fn optimize(
        &self,
        py: Python<'_>,
        runtime: &NativeRunTime,
        objective: &NativeNode,
        feed: Option<&Bound<'_, PyDict>>,
        var_list: Option<Vec<Bound<'_, NativeNode>>>,
    ) -> PyResult<()> {
        let objective = objective.get()?;
        let feed = build_feed(feed, objective.graph())?;
        let vars = var_list.as_deref().map(nodes_of).transpose()?;
        let mut opt = self.opt()?;
        let mut st = runtime.state()?;
        st.bind(objective);
        let rt = &mut st.rt;
        let opt = &mut **opt;
        engine(py, objective.graph().id(), || {
            opt.optimize(rt, objective, &feed, vars.as_deref())
        })
    }

    /// One update from `[(gradient, variable)]` pairs.
    fn apply_gradients(
        &self,
        py: Python<'_>,
        pairs: Vec<(Bound<'_, PyAny>, Bound<'_, NativeNode>)>,
    ) -> PyResult<()> {
        let mut grads: Vec<(Node, Tensor)> = Vec::with_capacity(pairs.len());
        for (g, v) in &pairs {
            let v = v.get().get()?.clone();
            check_not_running(v.graph().id(), "update variables")?;
            grads.push((v, to_tensor(g)?));
        }
        let mut opt = self.opt()?;
        let opt = &mut **opt;
        match grads.first() {
            Some((v, _)) => {
                let id = v.graph().id();
                engine(py, id, || opt.apply_gradients(&grads))
            }
            None => Ok(()),
        }
    }

    /// The state (step counts, moments) as named arrays.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyArrayDyn<f32>>)>> {
        Ok(self
            .opt()?
            .state()
            .into_iter()
            .map(|(k, t)| (k, to_numpy(py, t)))
            .collect())
    }

    /// Replaces the state with one read by `state`, finding variables by name in `graph`.
    fn load_state(
        &self,
        state: Vec<(String, Bound<'_, PyAny>)>,
        graph: &NativeGraph,
    ) -> PyResult<()> {
        let state = state
            .iter()
            .map(|(k, v)| Ok((k.clone(), to_tensor(v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let g = graph.get()?;
        let mut opt = self.opt()?;
        guarded(|| opt.load_state(&state, g))
    }
}
