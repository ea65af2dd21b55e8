//! What the loop hands the user's closures: [`Step`] (one training step's
//! run time, optimizers and data) and [`Eval`] (an evaluation's), and what a
//! step gives back, [`StepOutput`].

use crate::data::Batches;
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::optim::Optimizer;
use crate::runtime::{Feed, RunTime};
use crate::tensor::Tensor;
use crate::train::history::History;
use crate::train::progress::Progress;

/// What one training step gives back: its loss (shown by the progress bar as
/// a running mean, recorded, and checked if the trainer
/// [stops on a non-finite loss](crate::train::Trainer::stop_on_non_finite)),
/// named metrics (recorded in the [`History`]) and a value for the bar.
///
/// ```
/// use adgraph::train::StepOutput;
/// let out = StepOutput::new(0.25).metric("accuracy", 0.9).show("acc", 0.9);
/// assert_eq!(out.get("accuracy"), Some(0.9));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The step's loss.
    pub loss: f32,
    /// Named values of the step, recorded as curves.
    pub metrics: Vec<(String, f64)>,
    /// A labelled value the progress bar shows after the running loss.
    pub shown: Option<(String, f64)>,
}

impl StepOutput {
    /// A step's output with its loss and nothing else.
    pub fn new(loss: f32) -> Self {
        StepOutput {
            loss,
            metrics: Vec::new(),
            shown: None,
        }
    }

    /// Adds the metric `name` (recorded at every step that gives it).
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }

    /// Shows `label value` in the progress bar after the running loss.
    pub fn show(mut self, label: impl Into<String>, value: f64) -> Self {
        self.shown = Some((label.into(), value));
        self
    }

    /// The metric `name`, if the step gave it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find_map(|(n, v)| (n == name).then_some(*v))
    }
}

/// One training step's context: the run time, the trainer's optimizers (in
/// the order they were added) and its data.
///
/// The fields are public so that a step can use the run time and an optimizer
/// at once (`s.optimizers[0].optimize(s.rt, ...)`), as a step with several
/// optimizers does.
pub struct Step<'a> {
    /// The trainer's run time.
    pub rt: &'a mut RunTime,
    /// The trainer's optimizers, in the order they were added.
    pub optimizers: &'a mut [Box<dyn Optimizer>],
    pub(crate) batches: Option<&'a mut Batches>,
    pub(crate) index: usize,
    pub(crate) start: usize,
    pub(crate) total: usize,
    #[cfg(feature = "mpi")]
    pub(crate) dist: Option<&'a crate::distributed::Distributed>,
}

impl Step<'_> {
    /// The number of steps taken before this one (0 for the first step of a
    /// run from scratch): a function of it (e.g. a noise stream) is the same
    /// in a resumed run.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The step this run started at (non-zero when resumed).
    pub fn start(&self) -> usize {
        self.start
    }

    /// The number of steps the run ends at.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The trainer's mini-batches.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the trainer has no data.
    pub fn batches(&mut self) -> Result<&mut Batches> {
        self.batches
            .as_deref_mut()
            .ok_or_else(|| Error::invalid("the trainer has no data (Trainer::data)"))
    }

    /// The next mini-batch `(x, y)` of the trainer's data. In a distributed
    /// run (`Trainer::distributed`, feature `mpi`), this rank's rows of the
    /// next global batch (`Distributed::shard`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the trainer has no data or it yields
    /// no batch, or (distributed) when the batch has fewer rows than ranks.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let (x, y) = self
            .batches()?
            .next_batch()
            .ok_or_else(|| Error::invalid("the training set yields no batch"))?;
        #[cfg(feature = "mpi")]
        if let Some(d) = self.dist {
            return d.shard(x, y);
        }
        Ok((x, y))
    }

    /// One update of the trainer's only optimizer on `loss` (all trainable
    /// variables), in a forward/backward cycle of its own; returns the loss.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the trainer has not exactly one
    /// optimizer; any error of forward, backward or the update.
    pub fn minimize(&mut self, loss: &Node, feed: &Feed) -> Result<StepOutput> {
        let (value, ()) = self.minimize_with(loss, feed, |_| Ok(()))?;
        Ok(StepOutput::new(value))
    }

    /// As [`minimize`](Step::minimize), and `read` sees the run time before
    /// the cycle ends (to read other values of the step, e.g. the logits for
    /// an accuracy); returns the loss and what `read` returned.
    ///
    /// # Errors
    /// As [`minimize`](Step::minimize), and what `read` returns.
    pub fn minimize_with<T>(
        &mut self,
        loss: &Node,
        feed: &Feed,
        read: impl FnOnce(&RunTime) -> Result<T>,
    ) -> Result<(f32, T)> {
        let count = self.optimizers.len();
        let [optimizer] = &mut *self.optimizers else {
            return Err(Error::invalid(format!(
                "Step::minimize needs a trainer with exactly one optimizer, this one has {count}"
            )));
        };
        self.rt.forward_backward_cycle(|rt| {
            optimizer.optimize(rt, loss, feed, None)?;
            let value = rt.value(loss)?.sum();
            Ok((value, read(rt)?))
        })
    }
}

/// When an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvalPoint {
    /// Before the first step of the run.
    Start,
    /// Every N steps, before the last.
    Periodic,
    /// After the last step.
    End,
}

/// An evaluation's context: the run time, where training stands, the last
/// step's output, and places to record values and print lines.
pub struct Eval<'a> {
    /// The trainer's run time.
    pub rt: &'a mut RunTime,
    pub(crate) step: usize,
    pub(crate) point: EvalPoint,
    pub(crate) last: Option<&'a StepOutput>,
    pub(crate) history: &'a mut History,
    pub(crate) progress: &'a Progress,
}

impl Eval<'_> {
    /// The number of steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether this is the evaluation before the run's first step.
    pub fn is_start(&self) -> bool {
        self.point == EvalPoint::Start
    }

    /// Whether this is the evaluation after the run's last step.
    pub fn is_end(&self) -> bool {
        self.point == EvalPoint::End
    }

    /// The last step's output (`None` before the first step of this run).
    pub fn last(&self) -> Option<&StepOutput> {
        self.last
    }

    /// Records `value` as the evaluated `name` at this step, in the run's
    /// [`History`].
    pub fn record(&mut self, name: &str, value: f64) {
        self.history.record_eval(self.step, name, value);
    }

    /// Prints a line above the progress bar.
    pub fn println(&self, line: impl AsRef<str>) {
        self.progress.println(line);
    }
}
