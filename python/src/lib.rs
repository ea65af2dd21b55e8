//! `adgraph._native`: the compiled half of the `adgraph` Python package.
//!
//! A thin layer over adgraph's public Rust API: handles on graphs, nodes, run
//! times and optimizers, the op functions, and [`pyop::PyOp`], through which
//! nodes written in Python take part in a graph. The pure-Python package
//! (`python/adgraph/`) builds the original np-auto-diff API on these.
//!
//! Every engine error becomes a Python exception carrying the engine's
//! message (`ValueError`, `TypeError`, `KeyError`, `OSError`); the engine runs
//! with the GIL released; no panic reaches Python (see [`local`]).

mod convert;
mod graph;
mod local;
mod ops;
mod optim;
mod pyop;
mod runtime;
mod train;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<graph::NativeGraph>()?;
    m.add_class::<graph::NativeNode>()?;
    m.add_class::<runtime::NativeRunTime>()?;
    m.add_class::<optim::NativeOptimizer>()?;
    m.add_class::<train::NativeTrainer>()?;
    m.add_class::<train::PyStep>()?;
    m.add_class::<train::PyEval>()?;
    m.add_function(wrap_pyfunction!(ops::unary, m)?)?;
    m.add_function(wrap_pyfunction!(ops::binary, m)?)?;
    m.add_function(wrap_pyfunction!(ops::unary_attr, m)?)?;
    m.add_function(wrap_pyfunction!(ops::gelu, m)?)?;
    m.add_function(wrap_pyfunction!(ops::clip_by_value, m)?)?;
    m.add_function(wrap_pyfunction!(ops::where_, m)?)?;
    m.add_function(wrap_pyfunction!(ops::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(ops::reshape, m)?)?;
    m.add_function(wrap_pyfunction!(ops::transpose, m)?)?;
    m.add_function(wrap_pyfunction!(ops::reduce, m)?)?;
    m.add_function(wrap_pyfunction!(ops::arg_reduce, m)?)?;
    m.add_function(wrap_pyfunction!(ops::pad, m)?)?;
    m.add_function(wrap_pyfunction!(ops::concat, m)?)?;
    m.add_function(wrap_pyfunction!(ops::stack, m)?)?;
    m.add_function(wrap_pyfunction!(ops::add_n, m)?)?;
    m.add_function(wrap_pyfunction!(ops::slice, m)?)?;
    m.add_function(wrap_pyfunction!(ops::multi, m)?)?;
    m.add_function(wrap_pyfunction!(ops::tile, m)?)?;
    m.add_function(wrap_pyfunction!(ops::expand_dims, m)?)?;
    m.add_function(wrap_pyfunction!(ops::squeeze, m)?)?;
    m.add_function(wrap_pyfunction!(ops::broadcast_to, m)?)?;
    m.add_function(wrap_pyfunction!(ops::cumsum, m)?)?;
    m.add_function(wrap_pyfunction!(ops::softmax_axis, m)?)?;
    m.add_function(wrap_pyfunction!(ops::gather, m)?)?;
    m.add_function(wrap_pyfunction!(ops::one_hot, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dropout, m)?)?;
    m.add_function(wrap_pyfunction!(ops::fused_batch_norm, m)?)?;
    m.add_function(wrap_pyfunction!(ops::layer_norm, m)?)?;
    m.add_function(wrap_pyfunction!(ops::conv, m)?)?;
    m.add_function(wrap_pyfunction!(ops::pool, m)?)?;
    m.add_function(wrap_pyfunction!(ops::gradients, m)?)?;
    m.add_function(wrap_pyfunction!(ops::hessian_vector_product, m)?)?;
    m.add_function(wrap_pyfunction!(ops::jacobian, m)?)?;
    m.add_function(wrap_pyfunction!(ops::init_thread_pool, m)?)?;
    m.add_function(wrap_pyfunction!(ops::retain_freed_memory, m)?)?;
    m.add_function(wrap_pyfunction!(local::engine_seconds, m)?)?;
    Ok(())
}
