//! [`Progress`]: the progress bar of a training run, with its running loss.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Weights of the previous running mean and of the newest loss in the running mean.
const KEEP: f64 = 0.95;
const NEW: f64 = 0.05;

/// A progress bar on stderr: steps done, the running mean of the loss (and one
/// more value of the step, e.g. its accuracy), elapsed time and time left.
///
/// The bar draws only where stderr is a terminal; elsewhere it is hidden, and
/// [`println`](Progress::println) prints nothing unless
/// [`lines_to_stderr`](Progress::lines_to_stderr) is set. It is cleared when
/// [`finish`](Progress::finish)ed or dropped (a run that fails leaves no bar).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    running: Option<f64>,
    lines_to_stderr: bool,
}

impl Progress {
    /// A bar for `total` steps on stderr (hidden where stderr is no terminal).
    pub fn new(total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar,
            running: None,
            lines_to_stderr: false,
        }
    }

    /// A bar that never draws (it still keeps the running loss).
    pub fn hidden(total: usize) -> Self {
        let bar = ProgressBar::hidden();
        bar.set_length(total as u64);
        Progress {
            bar,
            running: None,
            lines_to_stderr: false,
        }
    }

    /// Whether [`println`](Progress::println) writes its line to stderr when
    /// the bar is hidden (default: no, it then prints nothing).
    pub fn lines_to_stderr(mut self, on: bool) -> Self {
        self.lines_to_stderr = on;
        self
    }

    /// Whether the bar is hidden (stderr is no terminal, or made by [`hidden`](Progress::hidden)).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Records one step's loss and moves the bar on; `shown` is a labelled
    /// value shown after the loss (e.g. `("acc", 0.93)`). Returns the running
    /// mean of the loss: `0.95 · previous + 0.05 · loss`, the first loss itself.
    pub fn step(&mut self, loss: f64, shown: Option<(&str, f64)>) -> f64 {
        let running = match self.running {
            None => loss,
            Some(r) => KEEP * r + NEW * loss,
        };
        self.running = Some(running);
        let msg = match shown {
            Some((label, value)) => format!("loss {running:.4} {label} {value:.3}"),
            None => format!("loss {running:.4}"),
        };
        self.bar.set_message(msg);
        self.bar.inc(1);
        running
    }

    /// The running mean of the loss, `None` before the first step.
    pub fn running_loss(&self) -> Option<f64> {
        self.running
    }

    /// Prints a line above the bar (see [`lines_to_stderr`](Progress::lines_to_stderr)
    /// for a hidden bar).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            if self.lines_to_stderr {
                eprintln!("{}", line.as_ref());
            }
        } else {
            self.bar.println(line.as_ref());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_loss_is_an_exponential_mean() {
        let mut p = Progress::hidden(3);
        assert_eq!(p.step(2.0, None), 2.0);
        assert_eq!(p.step(4.0, Some(("acc", 0.5))), 0.95 * 2.0 + 0.05 * 4.0);
        assert_eq!(p.running_loss(), Some(0.95 * 2.0 + 0.05 * 4.0));
        assert!(p.is_hidden());
    }
}
