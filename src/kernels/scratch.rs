//! A per-thread scratch buffer for the large temporaries of one kernel call
//! (im2col patch matrices), reused from call to call and step to step.
//!
//! A conv layer's patch matrix is `kh*kw` times its input (9x for 3x3).
//! Allocating it per call costs a zero fill (glibc's `calloc` memsets reused
//! heap memory) and page faults, on the order of the im2col pass itself. The
//! buffer only grows: it holds the largest patch matrix this thread has built,
//! for the life of the thread.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` elements whose contents are unspecified
/// (whatever an earlier call left, or zeros): `f` must overwrite what it reads.
///
/// If the thread's buffer is already in use (a nested call), `f` gets a fresh
/// one instead.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                // Grows only: shrinking and growing back would zero fill again.
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
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
}
