//! Nodes written in Python: a subclass of `adgraph.core.base_node.Node` with
//! `_forward`/`_backward` in NumPy becomes an [`Op`] whose forward and
//! numeric backward call back into Python.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use adgraph::{BackwardContext, Error, ForwardContext, GradientContext, Node, Op, Result};
use adgraph::{Tensor, TensorShape};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::convert::{to_numpy, to_tensor};
use crate::local::set_pending;

/// An op whose values come from a Python node object.
pub struct PyOp {
    type_name: &'static str,
    /// A weak reference to the Python node (the graph's Python wrapper keeps
    /// the node alive; a strong one here would make an uncollectable cycle
    /// through the engine).
    node_ref: Py<PyAny>,
    shape: TensorShape,
    has_backward: bool,
}

impl PyOp {
    /// The op of a node of Python class `type_name` whose static shape is
    /// `shape`; `node_ref` is a weak reference to the Python node object;
    /// without `has_backward` the node passes no gradient to its inputs.
    pub fn new(
        type_name: &str,
        node_ref: Py<PyAny>,
        shape: TensorShape,
        has_backward: bool,
    ) -> Self {
        PyOp {
            type_name: intern(type_name),
            node_ref,
            shape,
            has_backward,
        }
    }

    /// Calls `method` of the Python node with `args`; a Python exception is
    /// kept to be raised again when the engine call returns.
    fn call<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        args: Vec<Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyAny>> {
        let raised = |e: PyErr| {
            let msg = format!("{}.{method} raised {e}", self.type_name);
            set_pending(e);
            Error::invalid(msg)
        };
        let node = self.node_ref.bind(py).call0().map_err(raised)?;
        if node.is_none() {
            return Err(Error::invalid(format!(
                "the Python object of node type {} no longer exists (its graph was freed)",
                self.type_name
            )));
        }
        let args = PyTuple::new(py, args).map_err(raised)?;
        node.call_method1(method, args).map_err(raised)
    }
}

/// `name` as a `&'static str`, leaked once per distinct name (node type names
/// of Python classes; a program defines few).
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(s) = names.get(name) {
        return s;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(name.to_string(), leaked);
    leaked
}

fn arrays<'py>(py: Python<'py>, values: &[&Tensor]) -> PyResult<Bound<'py, PyList>> {
    // Copies: the Python code may keep them (in _cache_data) past this call.
    PyList::new(py, values.iter().map(|t| to_numpy(py, (*t).clone())))
}

impl Op for PyOp {
    fn type_name(&self) -> &'static str {
        self.type_name
    }

    fn infer_shape(&self, _inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(self.shape.clone())
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Python::attach(|py| {
            let values = arrays(py, inputs).map_err(|e| Error::invalid(format!("inputs: {e}")))?;
            let out = self.call(py, "_adgraph_forward", vec![values.into_any()])?;
            to_tensor(&out).map_err(|e| {
                let msg = format!(
                    "{}._forward returned a value that is not an array: {e}",
                    self.type_name
                );
                set_pending(e);
                Error::invalid(msg)
            })
        })
    }

    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if self.has_backward {
            ctx.numeric_backward()
        } else {
            // No _backward: a leaf, as in the original (gradients stop here).
            Ok(vec![None; ctx.inputs().len()])
        }
    }

    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Python::attach(|py| {
            let values =
                arrays(py, ctx.inputs()).map_err(|e| Error::invalid(format!("inputs: {e}")))?;
            let output = to_numpy(py, ctx.output().clone()).into_any();
            let grad = to_numpy(py, grad.clone()).into_any();
            let out = self.call(
                py,
                "_adgraph_backward",
                vec![values.into_any(), output, grad],
            )?;
            let list = out.cast::<PyList>().map_err(|_| {
                Error::invalid(format!(
                    "{}: _adgraph_backward must return a list",
                    self.type_name
                ))
            })?;
            let mut grads = Vec::with_capacity(list.len());
            for item in list.iter() {
                if item.is_none() {
                    grads.push(None);
                    continue;
                }
                let t = to_tensor(&item).map_err(|e| {
                    let msg = format!(
                        "{}._backward returned a gradient that is not an array: {e}",
                        self.type_name
                    );
                    set_pending(e);
                    Error::invalid(msg)
                })?;
                grads.push(Some(t));
            }
            Ok(grads)
        })
    }
}
