//! `adgraph._native.Trainer`: adgraph's training loop ([`adgraph::train`])
//! with the step and the evaluation written in Python.
//!
//! The step and evaluation callables get a handle ([`PyStep`], [`PyEval`])
//! valid only during their call: it points at the loop's step context, and is
//! closed (any use raises) when the call returns.

use std::cell::{Cell, RefCell};

use adgraph::data::Batches;
use adgraph::train::{Eval, Step, StepOutput, Summary, Trainer};
use adgraph::{Error, RunTime};
use numpy::PyArrayDyn;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{to_numpy, to_tensor};
use crate::graph::{NativeGraph, NativeNode};
use crate::local::{engine, guarded, set_pending, take_pending, Local};
use crate::optim::NativeOptimizer;
use crate::runtime::build_feed;

/// A mini-batch `(x, y)` as NumPy arrays.
type Batch<'py> = (Bound<'py, PyArrayDyn<f32>>, Bound<'py, PyArrayDyn<f32>>);

/// A training loop over a graph's variables.
#[pyclass(frozen, name = "Trainer", module = "adgraph._native")]
pub struct NativeTrainer {
    trainer: Local<RefCell<Trainer>>,
    graph_id: u64,
}

fn closed() -> PyErr {
    PyRuntimeError::new_err("this step or evaluation handle is only valid during its call")
}

/// The step context of the call in progress (null outside it).
#[pyclass(frozen, name = "Step", module = "adgraph._native")]
pub struct PyStep {
    step: Local<Cell<*mut Step<'static>>>,
    graph_id: u64,
}

impl PyStep {
    fn with<T>(&self, f: impl FnOnce(&mut Step<'static>) -> PyResult<T>) -> PyResult<T> {
        let ptr = self.step.get()?.get();
        if ptr.is_null() {
            return Err(closed());
        }
        // SAFETY: non-null only while the trainer's step closure runs (it is
        // reset to null before the closure returns), on this thread, and the
        // step outlives that call; the `'static` is never handed out.
        f(unsafe { &mut *ptr })
    }
}

#[pymethods]
impl PyStep {
    /// The number of steps taken before this one.
    #[getter]
    fn index(&self) -> PyResult<usize> {
        self.with(|s| Ok(s.index()))
    }

    /// The number of steps the run ends at.
    #[getter]
    fn total(&self) -> PyResult<usize> {
        self.with(|s| Ok(s.total()))
    }

    /// The next mini-batch `(x, y)` of the trainer's data.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Batch<'py>> {
        self.with(|s| {
            let (x, y) = guarded(|| s.next_batch())?;
            Ok((to_numpy(py, x), to_numpy(py, y)))
        })
    }

    /// One update of the trainer's optimizer on `loss` in a cycle of its own;
    /// returns the loss.
    #[pyo3(signature = (loss, feed = None))]
    fn minimize(
        &self,
        py: Python<'_>,
        loss: &NativeNode,
        feed: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<f32> {
        let loss = loss.get()?;
        let feed = build_feed(feed, loss.graph())?;
        let id = self.graph_id;
        self.with(|s| Ok(engine(py, id, || s.minimize(loss, &feed))?.loss))
    }
}

/// The evaluation context of the call in progress (null outside it).
#[pyclass(frozen, name = "Eval", module = "adgraph._native")]
pub struct PyEval {
    eval: Local<Cell<*mut Eval<'static>>>,
}

impl PyEval {
    fn with<T>(&self, f: impl FnOnce(&mut Eval<'static>) -> PyResult<T>) -> PyResult<T> {
        let ptr = self.eval.get()?.get();
        if ptr.is_null() {
            return Err(closed());
        }
        // SAFETY: as `PyStep::with`.
        f(unsafe { &mut *ptr })
    }
}

#[pymethods]
impl PyEval {
    /// The steps taken so far.
    #[getter]
    fn step(&self) -> PyResult<usize> {
        self.with(|e| Ok(e.step()))
    }

    /// Whether this evaluation is the one after the last step.
    #[getter]
    fn is_end(&self) -> PyResult<bool> {
        self.with(|e| Ok(e.is_end()))
    }

    /// Records `value` under `name` in the run's history.
    fn record(&self, name: &str, value: f64) -> PyResult<()> {
        self.with(|e| {
            e.record(name, value);
            Ok(())
        })
    }

    /// Prints a line above the progress bar.
    fn println(&self, line: &str) -> PyResult<()> {
        self.with(|e| {
            e.println(line);
            Ok(())
        })
    }
}

/// A step's result from what the Python step returned: a loss, or
/// `(loss, {metric: value})`.
fn step_output(value: &Bound<'_, PyAny>) -> PyResult<StepOutput> {
    if let Ok((loss, metrics)) = value.extract::<(f32, Bound<'_, PyDict>)>() {
        let mut out = StepOutput::new(loss);
        for (k, v) in metrics.iter() {
            out = out.metric(k.extract::<String>()?, v.extract::<f64>()?);
        }
        return Ok(out);
    }
    value.extract::<f32>().map(StepOutput::new).map_err(|_| {
        PyTypeError::new_err("a step must return its loss, or (loss, {metric: value})")
    })
}

/// Keeps a Python exception for the loop's caller, as an engine error.
fn raised(e: PyErr) -> Error {
    let msg = format!("a Python callback raised {e}");
    set_pending(e);
    Error::invalid(msg)
}

fn curves(py: Python<'_>, curves: &[adgraph::train::Curve]) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    for c in curves {
        d.set_item(&c.name, c.points.clone())?;
    }
    Ok(d.unbind())
}

fn summary_dict(py: Python<'_>, s: &Summary) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("start_step", s.start_step)?;
    d.set_item("step", s.step)?;
    d.set_item("train_seconds", s.train_seconds)?;
    d.set_item("eval_seconds", s.eval_seconds)?;
    d.set_item("final_loss", s.final_loss())?;
    d.set_item("loss", s.history.loss().to_vec())?;
    d.set_item("running_loss", s.history.running_loss().to_vec())?;
    d.set_item("metrics", curves(py, s.history.metrics())?)?;
    d.set_item("evals", curves(py, s.history.evals())?)?;
    Ok(d.unbind())
}

#[pymethods]
impl NativeTrainer {
    /// A trainer of `graph`'s variables with `optimizers` (`[(name, optimizer)]`),
    /// for `steps` steps or `epochs` passes over `data` (`(x, y, batch_size, seed)`).
    #[new]
    #[pyo3(signature = (graph, optimizers, steps = None, epochs = None, data = None,
                        eval_every = 0, eval_at_start = false, eval_at_end = true,
                        checkpoint = None, checkpoint_every = None, progress = true, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        graph: &NativeGraph,
        optimizers: Vec<(String, Bound<'_, NativeOptimizer>)>,
        steps: Option<usize>,
        epochs: Option<f64>,
        data: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>, usize, u64)>,
        eval_every: usize,
        eval_at_start: bool,
        eval_at_end: bool,
        checkpoint: Option<String>,
        checkpoint_every: Option<usize>,
        progress: bool,
        seed: u64,
    ) -> PyResult<Self> {
        let g = graph.get()?;
        let mut t = Trainer::new(g).run_time(RunTime::with_seed(seed));
        for (name, opt) in &optimizers {
            t = t.named_optimizer(name.clone(), opt.get().shared()?);
        }
        if let Some((x, y, batch_size, data_seed)) = data {
            let (x, y) = (to_tensor(&x)?, to_tensor(&y)?);
            t = t.data(guarded(|| Batches::new(x, y, batch_size, data_seed))?);
        }
        t = match (steps, epochs) {
            (Some(n), None) => t.steps(n),
            (None, Some(e)) => t.epochs(e),
            _ => return Err(PyTypeError::new_err("give exactly one of steps and epochs")),
        };
        t = t
            .eval_every(eval_every)
            .eval_at_start(eval_at_start)
            .eval_at_end(eval_at_end)
            .progress(progress);
        if let Some(path) = checkpoint {
            t = t.checkpoint(path, checkpoint_every);
        }
        Ok(NativeTrainer {
            trainer: Local::new(RefCell::new(t)),
            graph_id: graph.id,
        })
    }

    /// Runs the steps left: `step_fn(step)` takes one step and returns its loss
    /// (or `(loss, {metric: value})`); `eval_fn(eval)`, if given, evaluates when
    /// due. Returns the run's summary as a dict.
    #[pyo3(signature = (step_fn, eval_fn = None))]
    fn run(
        &self,
        py: Python<'_>,
        step_fn: Bound<'_, PyAny>,
        eval_fn: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyDict>> {
        let mut trainer = self
            .trainer
            .get()?
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("this trainer is already running"))?;
        let graph_id = self.graph_id;
        let step_handle = Bound::new(
            py,
            PyStep {
                step: Local::new(Cell::new(std::ptr::null_mut())),
                graph_id,
            },
        )?;
        let eval_handle = Bound::new(
            py,
            PyEval {
                eval: Local::new(Cell::new(std::ptr::null_mut())),
            },
        )?;
        let step = |s: &mut Step<'_>| -> adgraph::Result<StepOutput> {
            let cell = step_handle.get().step.get().map_err(raised)?;
            cell.set((s as *mut Step<'_>).cast::<Step<'static>>());
            let out = step_fn.call1((step_handle.clone(),));
            cell.set(std::ptr::null_mut());
            step_output(&out.map_err(raised)?).map_err(raised)
        };
        let outcome = match &eval_fn {
            None => trainer.run(step),
            Some(eval_fn) => {
                let eval = |e: &mut Eval<'_>| -> adgraph::Result<()> {
                    let cell = eval_handle.get().eval.get().map_err(raised)?;
                    cell.set((e as *mut Eval<'_>).cast::<Eval<'static>>());
                    let out = eval_fn.call1((eval_handle.clone(),));
                    cell.set(std::ptr::null_mut());
                    out.map(|_| ()).map_err(raised)
                };
                trainer.run_with_eval(step, eval)
            }
        };
        match outcome {
            Ok(summary) => summary_dict(py, &summary),
            Err(e) => Err(take_pending().unwrap_or_else(|| crate::local::to_pyerr(&e))),
        }
    }

    /// Restores a checkpoint (variables, optimizer states, step, data
    /// position, random generator); returns what was restored, as text.
    fn resume(&self, path: &str) -> PyResult<String> {
        let mut t = self
            .trainer
            .get()?
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("this trainer is running"))?;
        guarded(|| t.resume(path)).map(|r| r.to_string())
    }

    /// Saves a training checkpoint to `path`.
    fn save(&self, path: &str) -> PyResult<()> {
        let t = self
            .trainer
            .get()?
            .try_borrow()
            .map_err(|_| PyRuntimeError::new_err("this trainer is running"))?;
        guarded(|| t.save(path))
    }

    /// The number of steps taken so far.
    #[getter]
    fn step_count(&self) -> PyResult<usize> {
        Ok(self
            .trainer
            .get()?
            .try_borrow()
            .map_err(|_| PyRuntimeError::new_err("this trainer is running"))?
            .step_count())
    }
}
