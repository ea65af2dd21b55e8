//! The thread pool adgraph's kernels run on, and how to make the thread that
//! runs the graph one of its workers.
//!
//! Every parallel kernel (gemm, im2col, batch norm, ...) splits its work over
//! rayon's global pool. Called from a thread outside the pool (a program's
//! main thread), a parallel kernel is handed to the pool's workers while the
//! caller sleeps until they are done, so each kernel costs a hand-off and two
//! wake-ups, and the caller's core sits idle meanwhile. A conv net's training
//! step runs a few hundred such kernels. [`init_thread_pool`] builds the global
//! pool with the calling thread as one of its workers: a kernel called from it
//! starts at once on that thread, and the other workers take parts of it.

use crate::error::{Error, Result};

/// Builds rayon's global pool with `num_threads` threads (`None`: one per
/// core, as rayon's default) of which **the calling thread is one**; returns
/// the number of threads.
///
/// Call it once, at the start of the program, from the thread that will run
/// the graphs ([`RunTime`](crate::RunTime)). On the 2-core machine of the
/// benchmarks it took the W4 conv net's training step from about 29 to 25 ms
/// (median of interleaved runs; `examples/bench.rs`), and changed the other
/// workloads by less than the machine's noise. Without it everything works
/// the same, on rayon's default pool.
///
/// The calling thread works for the pool only while it is inside a parallel
/// kernel (or another rayon call): tasks that other threads hand to the pool
/// meanwhile run on the remaining workers.
///
/// ```
/// // In a program's `main` (a doctest shares no pool with other tests):
/// let threads = adgraph::init_thread_pool(Some(2)).unwrap();
/// assert_eq!(threads, 2);
/// assert_eq!(rayon::current_num_threads(), 2);
/// // A second call fails: the global pool is built once per process.
/// assert!(adgraph::init_thread_pool(None).is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `num_threads` is `Some(0)`, or when
/// rayon's global pool already exists (built by an earlier call, by other
/// code, or implicitly by a parallel kernel that ran before).
pub fn init_thread_pool(num_threads: Option<usize>) -> Result<usize> {
    if num_threads == Some(0) {
        return Err(Error::invalid(
            "init_thread_pool: num_threads must be at least 1",
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
        .map_err(|e| Error::invalid(format!("init_thread_pool: {e}")))?;
    Ok(rayon::current_num_threads())
}
