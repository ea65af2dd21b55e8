//! `adgraph._native.Graph` and `adgraph._native.Node`: handles on an
//! [`adgraph::Graph`] and its nodes, for the Python package to build on.

use adgraph::checkpoint::RestoreMode;
use adgraph::{Graph, Node, TensorShape};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;

use crate::convert::{to_numpy, to_tensor, to_tensor_no_nan};
use crate::local::{check_not_running, guarded, Local};
use crate::pyop::PyOp;

/// A node of a graph (the engine's handle; the Python `Node` wraps one).
#[pyclass(frozen, name = "Node", module = "adgraph._native")]
pub struct NativeNode {
    node: Local<Node>,
    /// The graph's process-unique id.
    #[pyo3(get)]
    pub graph_id: u64,
    /// The node's index in its graph (creation order).
    #[pyo3(get)]
    pub index: usize,
}

impl NativeNode {
    /// A handle on `node`, usable from this thread.
    pub fn new(node: Node) -> Self {
        NativeNode {
            graph_id: node.graph().id(),
            index: node.id().index(),
            node: Local::new(node),
        }
    }

    /// The engine node (on its own thread only).
    ///
    /// # Errors
    /// `RuntimeError` on another thread.
    pub fn get(&self) -> PyResult<&Node> {
        self.node.get()
    }
}

/// Engine nodes from a list of handles.
pub fn nodes_of(handles: &[Bound<'_, NativeNode>]) -> PyResult<Vec<Node>> {
    handles.iter().map(|h| h.get().get().cloned()).collect()
}

/// The dims of a static shape, `None` where unknown.
pub fn dims_of(shape: &TensorShape) -> Vec<Option<usize>> {
    shape.dims().to_vec()
}

#[pymethods]
impl NativeNode {
    /// The node's unique name in its graph.
    fn name(&self) -> PyResult<String> {
        Ok(self.get()?.name())
    }

    /// Its type (`Placeholder`, `Variable`, `Add`, ...).
    fn op_type(&self) -> PyResult<&'static str> {
        Ok(self.get()?.op_type())
    }

    /// Its static shape: a list of sizes, `None` where unknown.
    fn dims(&self) -> PyResult<Vec<Option<usize>>> {
        Ok(dims_of(&self.get()?.shape()))
    }

    /// Its inputs, in order.
    fn inputs(&self) -> PyResult<Vec<NativeNode>> {
        Ok(self
            .get()?
            .inputs()
            .into_iter()
            .map(NativeNode::new)
            .collect())
    }

    /// Whether it is a trainable variable.
    fn is_trainable(&self) -> PyResult<bool> {
        Ok(self.get()?.is_trainable())
    }

    /// Whether the engine built it as part of a gradient.
    fn is_gradient(&self) -> PyResult<bool> {
        Ok(self.get()?.is_gradient())
    }

    /// Its graph.
    fn graph(&self) -> PyResult<NativeGraph> {
        Ok(NativeGraph::new(self.get()?.graph().clone()))
    }

    fn __repr__(&self) -> PyResult<String> {
        Ok(format!("{:?}", self.get()?))
    }
}

/// A graph (the engine's handle; the Python `Graph` wraps one).
#[pyclass(frozen, name = "Graph", module = "adgraph._native")]
pub struct NativeGraph {
    graph: Local<Graph>,
    /// The graph's process-unique id.
    #[pyo3(get)]
    pub id: u64,
}

impl NativeGraph {
    /// A handle on `graph`, usable from this thread.
    pub fn new(graph: Graph) -> Self {
        NativeGraph {
            id: graph.id(),
            graph: Local::new(graph),
        }
    }

    /// The engine graph (on its own thread only).
    ///
    /// # Errors
    /// `RuntimeError` on another thread.
    pub fn get(&self) -> PyResult<&Graph> {
        self.graph.get()
    }

    /// The graph, when it may be changed now.
    fn get_mut(&self, what: &str) -> PyResult<&Graph> {
        check_not_running(self.id, what)?;
        self.get()
    }
}

#[pymethods]
impl NativeGraph {
    /// An empty graph.
    #[new]
    #[pyo3(signature = (seed = 0))]
    fn py_new(seed: u64) -> Self {
        NativeGraph::new(Graph::with_seed(seed))
    }

    /// The number of nodes (the engine's gradient nodes included).
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.get()?.len())
    }

    /// A placeholder of static shape `dims` (`None` = unknown size).
    fn placeholder(&self, dims: Vec<Option<usize>>) -> PyResult<NativeNode> {
        let g = self.get_mut("add a placeholder")?;
        Ok(NativeNode::new(g.placeholder(TensorShape::new(dims))))
    }

    /// A constant holding `value` (anything NumPy makes a float32 array of; NaN refused).
    fn constant(&self, value: &Bound<'_, PyAny>) -> PyResult<NativeNode> {
        let g = self.get_mut("add a constant")?;
        let t = to_tensor_no_nan(value, "the value of a Constant")?;
        guarded(|| g.constant(t)).map(NativeNode::new)
    }

    /// A variable of shape `dims`, all zeros until set.
    fn variable(&self, dims: Vec<usize>, trainable: bool) -> PyResult<NativeNode> {
        let g = self.get_mut("add a variable")?;
        guarded(|| g.variable(&dims, adgraph::init::Zeros, trainable)).map(NativeNode::new)
    }

    /// The variables in creation order (only trainable ones if asked).
    fn variables(&self, only_trainable: bool) -> PyResult<Vec<NativeNode>> {
        Ok(self
            .get()?
            .variables(only_trainable)
            .into_iter()
            .map(NativeNode::new)
            .collect())
    }

    /// The node called `name`.
    ///
    /// Raises `KeyError` when there is none.
    fn node(&self, name: &str) -> PyResult<NativeNode> {
        self.get()?
            .node(name)
            .map(NativeNode::new)
            .map_err(|e| PyKeyError::new_err(e.to_string()))
    }

    /// The node at `index` (creation order).
    fn node_at(&self, index: usize) -> PyResult<NativeNode> {
        let g = self.get()?;
        g.nodes()
            .into_iter()
            .nth(index)
            .map(NativeNode::new)
            .ok_or_else(|| {
                PyValueError::new_err(format!("no node {index} in a graph of {}", g.len()))
            })
    }

    /// A copy of a variable's value.
    fn variable_value<'py>(
        &self,
        py: Python<'py>,
        node: &NativeNode,
    ) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
        let g = self.get()?;
        let n = node.get()?;
        guarded(|| g.variable_value(n)).map(|t| to_numpy(py, t))
    }

    /// Sets a variable's value (its shape must be the variable's).
    fn set_variable_value(&self, node: &NativeNode, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let g = self.get_mut("set a variable's value")?;
        let n = node.get()?;
        let t = to_tensor(value)?;
        guarded(|| g.set_variable_value(n, t))
    }

    /// Adds a node computed by a Python `Node` subclass: `node_ref` is a weak
    /// reference to the Python node, whose `_adgraph_forward` and
    /// `_adgraph_backward` the engine calls; `dims` its static shape.
    #[pyo3(signature = (type_name, node_ref, inputs, dims, has_backward))]
    fn add_py_op(
        &self,
        type_name: &str,
        node_ref: Py<PyAny>,
        inputs: Vec<Bound<'_, NativeNode>>,
        dims: Vec<Option<usize>>,
        has_backward: bool,
    ) -> PyResult<NativeNode> {
        let g = self.get_mut("add a node")?;
        let inputs = nodes_of(&inputs)?;
        let op = PyOp::new(type_name, node_ref, TensorShape::new(dims), has_backward);
        let refs: Vec<&Node> = inputs.iter().collect();
        guarded(|| g.add_op(op, &refs)).map(NativeNode::new)
    }

    /// Saves the variables (only trainable ones if asked) to a safetensors file.
    fn save_checkpoint(&self, path: &str, only_trainable: bool) -> PyResult<()> {
        let g = self.get()?;
        guarded(|| g.save_variables(path, only_trainable))
    }

    /// Restores variables from a safetensors file by name; `strict`: every
    /// variable must be in the file with its shape and nothing else may be.
    /// Returns (restored, missing, unexpected, mismatched) names.
    #[allow(clippy::type_complexity)]
    fn restore_checkpoint(
        &self,
        path: &str,
        strict: bool,
    ) -> PyResult<(Vec<String>, Vec<String>, Vec<String>, Vec<String>)> {
        let g = self.get_mut("restore variables")?;
        let mode = if strict {
            RestoreMode::Strict
        } else {
            RestoreMode::Partial
        };
        let report = guarded(|| g.restore_variables(path, mode))?;
        Ok((
            report.restored,
            report.missing,
            report.unexpected,
            report.mismatched.into_iter().map(|m| m.name).collect(),
        ))
    }

    /// The graph in Graphviz's dot language.
    fn to_dot(&self) -> PyResult<String> {
        Ok(self.get()?.to_dot())
    }

    fn __repr__(&self) -> PyResult<String> {
        Ok(format!("{:?}", self.get()?))
    }
}
