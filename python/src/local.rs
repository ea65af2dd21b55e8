//! Keeping adgraph's single-threaded objects safe behind Python handles, and
//! running the engine with the GIL released.
//!
//! adgraph's graphs and run times live on one thread (they share state through
//! `Rc`/`RefCell`, like TensorFlow 1's default graph). A Python object that
//! wraps one is a [`Local`]: usable only from the thread that made it (any
//! other thread gets a `RuntimeError`, never undefined behaviour), and, if
//! Python frees it on another thread, leaked rather than dropped there.
//!
//! [`engine`] runs an engine call with the GIL released ([`Python::detach`]):
//! the call runs on the same thread, so the `Rc`s it touches stay on their
//! thread; other Python threads meanwhile cannot reach them (every handle is a
//! [`Local`]). A custom node's `_forward`/`_backward` reattaches to call into
//! Python; an exception it raises is kept ([`set_pending`]) and raised again
//! unchanged once the engine has unwound.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::thread::{self, ThreadId};

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A value usable only on the thread that made it.
pub struct Local<T> {
    value: ManuallyDrop<T>,
    owner: ThreadId,
}

// SAFETY: the value is only reached through `get`, which checks that the
// caller is the owning thread, and is dropped only on that thread (`Drop`
// leaks it elsewhere). So moving or sharing the handle across threads never
// lets two threads touch the value.
unsafe impl<T> Send for Local<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Local<T> {}

impl<T> Local<T> {
    /// Wraps `value`, owned by the calling thread.
    pub fn new(value: T) -> Self {
        Local {
            value: ManuallyDrop::new(value),
            owner: thread::current().id(),
        }
    }

    /// The value, when called on the owning thread.
    ///
    /// # Errors
    /// `RuntimeError` on any other thread.
    pub fn get(&self) -> PyResult<&T> {
        if thread::current().id() == self.owner {
            Ok(&self.value)
        } else {
            Err(PyRuntimeError::new_err(
                "adgraph graphs, nodes, run times and optimizers belong to the thread that made \
                 them; use them from that thread (build and run each graph on one thread)",
            ))
        }
    }
}

impl<T> Drop for Local<T> {
    fn drop(&mut self) {
        if thread::current().id() == self.owner {
            // SAFETY: dropped once, here, on the owning thread.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
        // On another thread: leaked, as touching the value there could race
        // with its owner.
    }
}

/// Moves a value into [`Python::detach`]'s closure (which must be `Send`).
///
/// Sound here because the closure runs on the calling thread: nothing moves
/// to another thread.
pub struct SendBox<T>(T);

// SAFETY: used only to pass values into and out of `Python::detach`, whose
// closure runs on the current thread.
unsafe impl<T> Send for SendBox<T> {}

impl<T> SendBox<T> {
    /// The value (a method, so that a closure captures the whole box).
    pub fn into_inner(self) -> T {
        self.0
    }
}

thread_local! {
    /// Seconds this thread has spent in engine calls ([`engine`], and the
    /// run times' resets), for measuring the Python layer's own overhead.
    static ENGINE_SECONDS: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    /// Ids of the graphs an engine call is running on (this thread).
    static RUNNING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// The first Python exception raised by a callback during an engine call.
    static PENDING: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Marks a graph as running until dropped.
struct Running(u64);

impl Running {
    fn enter(id: u64) -> Running {
        RUNNING.with(|r| r.borrow_mut().push(id));
        Running(id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().rposition(|&g| g == self.0) {
                r.remove(i);
            }
        });
    }
}

/// Fails when graph `id` is running a forward or backward pass: what would
/// change it (new nodes, new variable values) must wait until the pass is over.
///
/// # Errors
/// `RuntimeError` naming `what`.
pub fn check_not_running(id: u64, what: &str) -> PyResult<()> {
    if RUNNING.with(|r| r.borrow().contains(&id)) {
        return Err(PyRuntimeError::new_err(format!(
            "cannot {what} while the graph is running a forward or backward pass (inside a \
             custom node's _forward or _backward): do it before or after the run"
        )));
    }
    Ok(())
}

/// Keeps `err` (a Python exception raised by a callback) to be raised when the
/// engine call returns; the first one wins.
pub fn set_pending(err: PyErr) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Some(err);
        }
    });
}

/// The Python exception kept by a callback, if any.
pub fn take_pending() -> Option<PyErr> {
    PENDING.with(|p| p.borrow_mut().take())
}

/// Runs `f` (an engine call on graph `graph_id`) with the GIL released;
/// engine errors become Python exceptions ([`to_pyerr`]), a Python exception
/// raised by a custom node comes back as itself, and a panic (a bug) becomes
/// a `RuntimeError` instead of crossing into Python.
///
/// # Errors
/// As described; `RuntimeError` when the graph is already running (a custom
/// node's callback may not start another pass on its own graph).
pub fn engine<T, F>(py: Python<'_>, graph_id: u64, f: F) -> PyResult<T>
where
    F: FnOnce() -> adgraph::Result<T>,
{
    check_not_running(graph_id, "start another forward or backward pass on it")?;
    let _running = Running::enter(graph_id);
    let outer = take_pending();
    let job = SendBox(f);
    let started = std::time::Instant::now();
    let out = py
        .detach(move || {
            let f = job.into_inner();
            SendBox(std::panic::catch_unwind(AssertUnwindSafe(f)))
        })
        .into_inner();
    add_engine_time(started);
    let raised = take_pending();
    if let Some(e) = outer {
        set_pending(e);
    }
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(raised.unwrap_or_else(|| to_pyerr(&e))),
        Err(panic) => Err(raised.unwrap_or_else(|| internal_error(panic.as_ref()))),
    }
}

/// Adds the time since `started` to this thread's engine time.
pub fn add_engine_time(started: std::time::Instant) {
    let spent = started.elapsed().as_secs_f64();
    ENGINE_SECONDS.with(|s| s.set(s.get() + spent));
}

/// Seconds this thread has spent in the engine (forward, backward, optimizer
/// updates, resets) since it started: a step's time minus the engine's time
/// over the step is what the Python layer costs (`python/bench.py`).
#[pyfunction]
pub fn engine_seconds() -> f64 {
    ENGINE_SECONDS.with(|s| s.get())
}

/// Runs `f` (graph building that may fail), turning a panic into a `RuntimeError`.
///
/// # Errors
/// As [`engine`], without the GIL release.
pub fn guarded<T>(f: impl FnOnce() -> adgraph::Result<T>) -> PyResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_pyerr(&e)),
        Err(panic) => Err(internal_error(panic.as_ref())),
    }
}

fn internal_error(panic: &(dyn std::any::Any + Send)) -> PyErr {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    PyRuntimeError::new_err(format!(
        "adgraph internal error (a bug in adgraph, please report it): {msg}"
    ))
}

/// The Python exception for an engine error, carrying its message: `KeyError`
/// for an unfed placeholder or an unknown node name, `TypeError` for a node of
/// the wrong kind, `OSError` for a file that cannot be read or written,
/// `ValueError` for everything else (shapes, values, arguments).
pub fn to_pyerr(e: &adgraph::Error) -> PyErr {
    use adgraph::Error as E;
    let msg = e.to_string();
    match e.root_cause() {
        E::MissingFeed { .. } | E::UnknownNode(_) => PyKeyError::new_err(msg),
        E::WrongKind { .. } => PyTypeError::new_err(msg),
        E::Io { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}
