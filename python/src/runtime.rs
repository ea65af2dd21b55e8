//! `adgraph._native.RunTime`: an [`adgraph::RunTime`] driven from Python, with
//! feeds given as dicts keyed by Python nodes.

use std::cell::{RefCell, RefMut};

use adgraph::optim::{GradientDescent, Optimizer};
use adgraph::{Feed, Graph, Node, RunTime};
use numpy::PyArrayDyn;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{to_numpy, to_tensor_no_nan};
use crate::graph::{nodes_of, NativeNode};
use crate::local::{add_engine_time, engine, guarded, Local};

/// A run time and the graph it is bound to in the current cycle.
pub struct RtState {
    pub rt: RunTime,
    pub graph: Option<Graph>,
}

/// The state of forward/backward cycles (the engine's handle; the Python
/// `RunTime` wraps one).
#[pyclass(frozen, name = "RunTime", module = "adgraph._native")]
pub struct NativeRunTime {
    state: Local<RefCell<RtState>>,
}

impl NativeRunTime {
    /// The state, for a call that runs the engine.
    pub fn state(&self) -> PyResult<RefMut<'_, RtState>> {
        self.state.get()?.try_borrow_mut().map_err(|_| {
            PyRuntimeError::new_err(
                "this RunTime is running a forward or backward pass already: inside a custom \
                 node's _forward or _backward, read only the node's inputs (input.forward(...)) \
                 and its own gradient (runtime._bwval[self.name])",
            )
        })
    }

    fn state_ref(&self) -> PyResult<std::cell::Ref<'_, RtState>> {
        self.state.get()?.try_borrow().map_err(|_| {
            PyRuntimeError::new_err("this RunTime is running a forward or backward pass")
        })
    }
}

impl RtState {
    /// Notes the graph this cycle runs on (the engine checks it is the same).
    pub fn bind(&mut self, node: &Node) {
        if self.graph.is_none() {
            self.graph = Some(node.graph().clone());
        }
    }
}

/// The feed for a run on `graph` from a dict `{node: value}`: values go to the
/// graph's placeholders (checked against their static shapes, NaN refused);
/// entries for other nodes are ignored, as the original did.
///
/// # Errors
/// `TypeError` for a key that is not a node; `ValueError` for a value that
/// does not fit, or holds NaN.
pub fn build_feed(feed: Option<&Bound<'_, PyDict>>, graph: &Graph) -> PyResult<Feed> {
    let mut out = Feed::new();
    let Some(feed) = feed else {
        return Ok(out);
    };
    let py = feed.py();
    for (key, value) in feed.iter() {
        let native = key.getattr(intern!(py, "_native")).map_err(|_| {
            PyTypeError::new_err(format!(
                "feed_dict keys must be nodes, got {}",
                key.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let native = native.cast::<NativeNode>().map_err(|_| {
            PyTypeError::new_err("feed_dict key is a node not yet added to its graph")
        })?;
        let node = native.get().get()?;
        if node.graph() != graph || node.op_type() != "Placeholder" {
            continue;
        }
        let name = node.name();
        let t = to_tensor_no_nan(&value, &format!("the value fed to {name}"))?;
        guarded(|| out.insert(node, t).map(|_| ()))?;
    }
    Ok(out)
}

#[pymethods]
impl NativeRunTime {
    /// A run time whose random generator (dropout masks) starts from `seed`.
    #[new]
    #[pyo3(signature = (seed = 0))]
    fn new(seed: u64) -> Self {
        NativeRunTime {
            state: Local::new(RefCell::new(RtState {
                rt: RunTime::with_seed(seed),
                graph: None,
            })),
        }
    }

    /// The value of `node` in this cycle (computed with what it needs, once).
    #[pyo3(signature = (node, feed = None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        node: &NativeNode,
        feed: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let node = node.get()?;
        let feed = build_feed(feed, node.graph())?;
        let mut st = self.state()?;
        st.bind(node);
        let rt = &mut st.rt;
        let value = engine(py, node.graph().id(), || rt.forward(node, &feed).cloned())?;
        Ok(to_numpy(py, value))
    }

    /// Back-propagates `upstream` (all ones when `None`) from `node`.
    #[pyo3(signature = (node, feed = None, upstream = None))]
    fn backward(
        &self,
        py: Python<'_>,
        node: &NativeNode,
        feed: Option<&Bound<'_, PyDict>>,
        upstream: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let node = node.get()?;
        let feed = build_feed(feed, node.graph())?;
        let upstream = upstream
            .map(|u| to_tensor_no_nan(u, &format!("the gradient sent back to {}", node.name())))
            .transpose()?;
        let mut st = self.state()?;
        st.bind(node);
        let rt = &mut st.rt;
        engine(py, node.graph().id(), || rt.backward(node, &feed, upstream))
    }

    /// The values of `nodes` in one pass that keeps no intermediate value.
    #[pyo3(signature = (nodes, feed = None))]
    fn infer<'py>(
        &self,
        py: Python<'py>,
        nodes: Vec<Bound<'py, NativeNode>>,
        feed: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let nodes = nodes_of(&nodes)?;
        let Some(first) = nodes.first() else {
            return Ok(Vec::new());
        };
        let feed = build_feed(feed, first.graph())?;
        let mut st = self.state()?;
        st.bind(first);
        let rt = &mut st.rt;
        let refs: Vec<&Node> = nodes.iter().collect();
        let values = engine(py, first.graph().id(), || rt.infer(&refs, &feed))?;
        Ok(values.into_iter().map(|t| to_numpy(py, t)).collect())
    }

    /// Back-propagates from `objective` and returns `[(gradient, variable)]`
    /// for `var_list` (the graph's trainable variables when `None`); a
    /// variable the objective does not reach gets zeros.
    #[pyo3(signature = (objective, feed = None, var_list = None))]
    fn compute_gradients<'py>(
        &self,
        py: Python<'py>,
        objective: &NativeNode,
        feed: Option<&Bound<'py, PyDict>>,
        var_list: Option<Vec<Bound<'py, NativeNode>>>,
    ) -> PyResult<Vec<(Bound<'py, PyArrayDyn<f32>>, NativeNode)>> {
        let objective = objective.get()?;
        let feed = build_feed(feed, objective.graph())?;
        let vars = var_list.as_deref().map(nodes_of).transpose()?;
        let mut st = self.state()?;
        st.bind(objective);
        let rt = &mut st.rt;
        let pairs = engine(py, objective.graph().id(), || {
            // compute_gradients keeps no optimizer state: any optimizer computes them.
            GradientDescent::new(0.0).compute_gradients(rt, objective, &feed, vars.as_deref())
        })?;
        Ok(pairs
            .into_iter()
            .map(|(v, g)| (to_numpy(py, g), NativeNode::new(v)))
            .collect())
    }

    /// The value of `node` computed in this cycle, or `None`.
    fn value<'py>(
        &self,
        py: Python<'py>,
        node: &NativeNode,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f32>>>> {
        let st = self.state_ref()?;
        Ok(st
            .rt
            .value(node.get()?)
            .ok()
            .map(|t| to_numpy(py, t.clone())))
    }

    /// The gradient of `node` in this cycle, or `None`.
    fn grad<'py>(
        &self,
        py: Python<'py>,
        node: &NativeNode,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f32>>>> {
        let st = self.state_ref()?;
        Ok(st
            .rt
            .grad(node.get()?)
            .ok()
            .map(|t| to_numpy(py, t.clone())))
    }

    /// The forward value of the node called `name` in this cycle.
    fn get_fwval<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let st = self.state_ref()?;
        let t = guarded(|| st.rt.get_fwval(name).cloned())?;
        Ok(to_numpy(py, t))
    }

    /// The gradient of the node called `name` in this cycle.
    fn get_bwval<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let st = self.state_ref()?;
        let t = guarded(|| st.rt.get_bwval(name).cloned())?;
        Ok(to_numpy(py, t))
    }

    /// Names of the nodes with a value (`forward`) or a gradient in this cycle.
    fn names_with(&self, forward: bool) -> PyResult<Vec<String>> {
        let st = self.state_ref()?;
        let Some(graph) = &st.graph else {
            return Ok(Vec::new());
        };
        Ok(graph
            .nodes()
            .into_iter()
            .filter(|n| {
                if forward {
                    st.rt.value(n).is_ok()
                } else {
                    st.rt.grad(n).is_ok()
                }
            })
            .map(|n| n.name())
            .collect())
    }

    /// Clears the cycle's values and gradients (stopped nodes stay).
    fn reset(&self) -> PyResult<()> {
        let mut st = self.state()?;
        let started = std::time::Instant::now();
        st.rt.reset();
        st.graph = None;
        add_engine_time(started);
        Ok(())
    }

    /// Stops gradients at `nodes` until `clear_stop_gradients`.
    fn stop_gradients_at(&self, nodes: Vec<Bound<'_, NativeNode>>) -> PyResult<()> {
        let nodes = nodes_of(&nodes)?;
        let refs: Vec<&Node> = nodes.iter().collect();
        self.state()?.rt.stop_gradients_at(&refs);
        Ok(())
    }

    /// Lets gradients flow through every node again.
    fn clear_stop_gradients(&self) -> PyResult<()> {
        self.state()?.rt.clear_stop_gradients();
        Ok(())
    }

    /// Checks every value and gradient for NaN and infinity (off by default).
    fn set_check_numerics(&self, on: bool) -> PyResult<()> {
        self.state()?.rt.set_check_numerics(on);
        Ok(())
    }

    /// Turns the per-node profiler on (a new profile) or off.
    fn enable_profiling(&self, on: bool) -> PyResult<()> {
        self.state()?.rt.enable_profiling(on);
        Ok(())
    }

    /// The profile's `top` most expensive nodes as text, or `None` when off.
    #[pyo3(signature = (top = 10))]
    fn profile(&self, top: usize) -> PyResult<Option<String>> {
        let st = self.state_ref()?;
        Ok(st.rt.profile().map(|p| p.top(top).to_string()))
    }

    /// The random generator's state as text (for exact resumption).
    fn rng_state(&self) -> PyResult<String> {
        Ok(self.state_ref()?.rt.rng_state().to_string())
    }

    /// Puts the random generator at a state read by `rng_state`.
    fn set_rng_state(&self, state: &str) -> PyResult<()> {
        let parsed: adgraph::RngState = state
            .parse()
            .map_err(|e: adgraph::Error| PyValueError::new_err(e.to_string()))?;
        self.state()?.rt.set_rng_state(&parsed);
        Ok(())
    }
}
