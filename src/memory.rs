//! Keeping freed memory in the process for the next training step, instead of
//! handing it back to the kernel and faulting it in again.
//!
//! A training or inference step allocates its activations, gradients and
//! patch matrices afresh and frees them at the end of the cycle. glibc's
//! allocator serves blocks above its *mmap threshold* with their own `mmap`
//! and unmaps them on free, and gives the top of its heap back once more than
//! its *trim threshold* is free there; both thresholds adapt, but only up to
//! a few megabytes. A conv net's buffers are tens of megabytes, so every step
//! got fresh pages from the kernel: each 4 KiB page one fault plus a zero
//! fill. Measured on the 2-core machine, W4 inference (batch 256,
//! `examples/bench.rs`): about 7,000 page faults per step, and the step 15%
//! slower than with the memory kept.

/// glibc's largest mmap threshold (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit
/// targets): blocks up to this size come from the heap and are reused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Tells the process's allocator to keep what is freed for reuse: blocks up
/// to 32 MiB come from its heap rather than from their own mappings, and the
/// heap is not shrunk when its top is free. Returns whether it could
/// (glibc on Linux; elsewhere it does nothing and returns `false`).
///
/// Call it once at the start of a program that trains or evaluates in a
/// loop (the benchmark and the demos do). The process then keeps its peak
/// heap for its lifetime: memory freed by one step is what the next step
/// gets, so its resident size does not drop between steps. It changes no
/// result, only where memory comes from.
///
/// ```
/// let kept = adgraph::retain_freed_memory();
/// assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two of the allocator's parameters; any
        // value is valid (out-of-range ones are refused with 0).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
