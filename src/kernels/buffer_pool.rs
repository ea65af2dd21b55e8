//! A per-thread pool of large `f32` buffers that outlive one kernel call but
//! not one cycle: conv2d's patch matrices, kept from forward to backward.
//!
//! [`scratch`](crate::kernels::scratch) serves a temporary that dies inside
//! one call; a buffer kept for backward must live until the cycle ends, while
//! the next layers take theirs. Allocating each one fresh costs page faults or
//! a zero fill every step (glibc gives large freed blocks back to the system),
//! on the order of filling the buffer itself. So a dropped [`PooledBuffer`]
//! goes back to its thread's pool, and the next request of a size it covers
//! takes it again: a training loop asks for the same sizes every step and
//! reuses the same memory. A buffer left unused for [`IDLE_TAKES`] requests is
//! freed, so a one-off size (an odd batch) does not stay pinned.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Requests after which a buffer nobody took is freed.
pub const IDLE_TAKES: u64 = 64;

/// One free buffer and the request count when it came back.
struct Free {
    buf: Vec<f32>,
    returned_at: u64,
}

/// The free buffers of one thread and the number of requests so far.
#[derive(Default)]
struct Pool {
    free: Vec<Free>,
    takes: u64,
}

impl Pool {
    /// The smallest free buffer of at least `len` elements, else the largest
    /// one grown to `len` (a new one if none is free).
    fn take(&mut self, len: usize) -> Vec<f32> {
        self.takes += 1;
        let now = self.takes;
        self.free.retain(|f| now - f.returned_at <= IDLE_TAKES);
        let fits = (0..self.free.len())
            .filter(|&i| self.free[i].buf.len() >= len)
            .min_by_key(|&i| self.free[i].buf.len());
        let largest = (0..self.free.len()).max_by_key(|&i| self.free[i].buf.len());
        let mut buf = match fits.or(largest) {
            Some(i) => self.free.swap_remove(i).buf,
            None => Vec::new(),
        };
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        buf
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A buffer of `len` elements from this thread's pool, whose contents are
/// unspecified (what an earlier user left, or zeros): overwrite what you read.
/// Dropping it returns it to the pool of the thread that drops it.
pub fn take(len: usize) -> PooledBuffer {
    let buf = POOL.with(|p| p.borrow_mut().take(len));
    PooledBuffer { buf, len }
}

/// The elements held by this thread's free buffers (for tests and reports).
pub fn retained() -> usize {
    POOL.with(|p| p.borrow().free.iter().map(|f| f.buf.len()).sum())
}

/// A buffer on loan from a thread's pool (see [`take`]); derefs to its
/// `len` elements.
pub struct PooledBuffer {
    buf: Vec<f32>,
    len: usize,
}

impl Deref for PooledBuffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // During thread teardown the pool may be gone: the buffer is then freed.
        let _ = POOL.try_with(|p| {
            if let Ok(mut pool) = p.try_borrow_mut() {
                let returned_at = pool.takes;
                pool.free.push(Free { buf, returned_at });
            }
        });
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({} elements)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_loop_reuses_the_same_memory() {
        // Each test runs on its own thread, so the pool starts empty here.
        let sizes = [300, 1_000, 50];
        let addresses = |held: &[PooledBuffer]| -> Vec<*const f32> {
            held.iter().map(|b| b.as_ptr()).collect()
        };
        let first: Vec<PooledBuffer> = sizes.iter().map(|&n| take(n)).collect();
        assert_eq!(first.iter().map(|b| b.len()).collect::<Vec<_>>(), sizes);
        let before = addresses(&first);
        drop(first);
        assert_eq!(retained(), 1_350);
        for _ in 0..10 {
            let held: Vec<PooledBuffer> = sizes.iter().map(|&n| take(n)).collect();
            assert_eq!(addresses(&held), before, "each size takes its old buffer");
        }
        assert_eq!(retained(), 1_350, "nothing new was allocated");
    }

    #[test]
    fn idle_buffers_are_freed_and_loans_are_independent() {
        let mut a = take(10);
        let mut b = take(10);
        a.fill(1.0);
        b.fill(2.0);
        assert!(a.iter().all(|&v| v == 1.0));
        drop((a, b));
        assert_eq!(retained(), 20);
        // A request larger than any free buffer grows the largest one.
        let big = take(1_000);
        assert_eq!(big.len(), 1_000);
        assert_eq!(retained(), 10);
        drop(big);
        for _ in 0..=IDLE_TAKES {
            drop(take(5));
        }
        assert_eq!(retained(), 10, "the idle large buffer was freed");
    }
}
