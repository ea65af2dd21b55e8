//! A per-thread scratch buffer for the large temporaries of one kernel call
//! (im2col patch matrices), reused from call to call and step to step.
//!
//! A conv layer's patch matrix is `kh*kw` times its input (9x for 3x3).
//! Allocating it per call costs a zero fill (glibc's `calloc` memsets reused
//! heap memory) and page faults, on the order of the im2col pass itself. The
//! buffer grows to the largest request, and gives memory back only when it
//! has been more than twice as large as anything asked of it for
//! [`TRIM_EVERY`] calls: a one-off large batch (a test-set evaluation between
//! training steps) does not pin its patch matrix for the rest of the run,
//! while a steady workload never shrinks and regrows.

use std::cell::RefCell;

/// Calls between checks whether the buffer is oversized.
pub const TRIM_EVERY: u32 = 64;

/// The buffer and what has been asked of it since the last check.
struct Scratch {
    buf: Vec<f32>,
    calls: u32,
    largest: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { buf: Vec::new(), calls: 0, largest: 0 })
    };
}

/// Runs `f` on a buffer of `len` elements whose contents are unspecified
/// (whatever an earlier call left, or zeros): `f` must overwrite what it reads.
///
/// If the thread's buffer is already in use (a nested call), `f` gets a fresh
/// one instead.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            s.calls += 1;
            s.largest = s.largest.max(len);
            if s.calls >= TRIM_EVERY {
                if s.buf.len() > 2 * s.largest {
                    let keep = s.largest;
                    s.buf.truncate(keep);
                    s.buf.shrink_to_fit();
                }
                s.calls = 0;
                s.largest = 0;
            }
            if s.buf.len() < len {
                s.buf.resize(len, 0.0);
            }
            f(&mut s.buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The capacity, in elements, of this thread's buffer (for tests and reports).
pub fn retained() -> usize {
    SCRATCH.with(|cell| cell.try_borrow().map_or(0, |s| s.buf.capacity()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_requested_length_and_survives_nesting() {
        with_scratch(10, |a| {
            assert_eq!(a.len(), 10);
            a.fill(1.0);
            with_scratch(4, |b| {
                assert_eq!(b.len(), 4);
                b.fill(2.0);
            });
            assert!(a.iter().all(|&v| v == 1.0));
        });
        with_scratch(3, |a| assert_eq!(a.len(), 3));
    }

    #[test]
    fn a_one_off_large_request_is_given_back_and_a_steady_one_kept() {
        // Each test runs on its own thread, so the buffer starts empty here.
        with_scratch(100, |_| ());
        with_scratch(1_000_000, |_| ()); // the evaluation batch
        assert!(retained() >= 1_000_000);
        for _ in 0..2 * TRIM_EVERY {
            with_scratch(100, |_| ()); // training steps again
        }
        assert!(retained() < 1_000, "kept {}", retained());
        for _ in 0..3 * TRIM_EVERY {
            with_scratch(50_000, |_| ());
        }
        assert!(retained() >= 50_000);
    }
}
