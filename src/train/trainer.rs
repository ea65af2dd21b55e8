//! [`Trainer`]: the training loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::data::Batches;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::optim::Optimizer;
use crate::runtime::RunTime;
use crate::train::history::History;
use crate::train::progress::Progress;
use crate::train::state::{self, Parts, Resumed};
use crate::train::step::{Eval, EvalPoint, Step, StepOutput};

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    /// This many steps in all (counted from step 0, also when resumed).
    Steps(usize),
    /// This many passes over the data: `ceil(epochs · examples / batch size)`
    /// steps, at least 1.
    Epochs(f64),
}

impl Length {
    /// The number of steps, for `examples` examples in batches of `batch_size`.
    ///
    /// ```
    /// use adgraph::train::Length;
    /// assert_eq!(Length::Steps(7).steps(100, 10), 7);
    /// assert_eq!(Length::Epochs(2.5).steps(100, 30), 9); // 250 / 30, rounded up
    /// ```
    pub fn steps(self, examples: usize, batch_size: usize) -> usize {
        match self {
            Length::Steps(n) => n,
            Length::Epochs(epochs) => ((epochs * examples as f64) / batch_size.max(1) as f64)
                .ceil()
                .max(1.0) as usize,
        }
    }
}

/// What a [`Trainer::run`] did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The step the run started at (non-zero when resumed).
    pub start_step: usize,
    /// The steps taken at its end.
    pub step: usize,
    /// Seconds spent in the steps (evaluations not included).
    pub train_seconds: f64,
    /// Seconds spent in evaluations.
    pub eval_seconds: f64,
    /// The last step's output (`None` when the run took no step).
    pub last: Option<StepOutput>,
    /// The curves of the run.
    pub history: History,
}

impl Summary {
    /// The number of steps this run took.
    pub fn steps_run(&self) -> usize {
        self.step - self.start_step
    }

    /// The last step's loss.
    pub fn final_loss(&self) -> Option<f32> {
        self.last.as_ref().map(|o| o.loss)
    }
}

/// The training loop: it takes the steps (a closure of yours), shows a
/// progress bar, evaluates every N steps (another closure), saves a training
/// checkpoint every N steps and at the end, resumes exactly from one, and
/// records the curves. See the [module docs](crate::train) for an example.
///
/// A trainer owns the [`RunTime`], the optimizers and the data (a
/// [`Batches`]), so that a checkpoint can hold all of them; a step reaches
/// them through its [`Step`]. Build it with the builder methods, then
/// [`resume`](Trainer::resume) (optionally) and [`run`](Trainer::run).
///
/// Each step: the step closure runs; the step count goes up; the loss is
/// checked ([`stop_on_non_finite`](Trainer::stop_on_non_finite)), recorded
/// and shown; an evaluation runs if one is due; a checkpoint is saved if one
/// is due. Evaluations run every [`eval_every`](Trainer::eval_every) steps
/// before the last, and optionally before the first step
/// ([`eval_at_start`](Trainer::eval_at_start)) and after the last
/// ([`eval_at_end`](Trainer::eval_at_end), after the last checkpoint).
pub struct Trainer {
    graph: Graph,
    rt: RunTime,
    optimizers: Vec<Box<dyn Optimizer>>,
    names: Vec<String>,
    batches: Option<Batches>,
    length: Length,
    eval_every: usize,
    eval_at_start: bool,
    eval_at_end: bool,
    checkpoint: Option<PathBuf>,
    checkpoint_every: usize,
    metadata: BTreeMap<String, String>,
    show_progress: bool,
    lines_to_stderr: bool,
    stop_on_non_finite: bool,
    step: usize,
    #[cfg(feature = "mpi")]
    dist: Option<crate::distributed::Distributed>,
}

impl Trainer {
    /// A trainer of the variables of `graph`, with a [`RunTime::new`], no
    /// optimizer, no data, no evaluation before the last step, no checkpoints
    /// and 0 steps.
    pub fn new(graph: &Graph) -> Self {
        Trainer {
            graph: graph.clone(),
            rt: RunTime::new(),
            optimizers: Vec::new(),
            names: Vec::new(),
            batches: None,
            length: Length::Steps(0),
            eval_every: 0,
            eval_at_start: false,
            eval_at_end: true,
            checkpoint: None,
            checkpoint_every: 0,
            metadata: BTreeMap::new(),
            show_progress: true,
            lines_to_stderr: false,
            stop_on_non_finite: false,
            step: 0,
            #[cfg(feature = "mpi")]
            dist: None,
        }
    }

    /// Uses `rt` as the run time (e.g. [`RunTime::with_seed`] for its dropout masks).
    pub fn run_time(mut self, rt: RunTime) -> Self {
        self.rt = rt;
        self
    }

    /// Adds the trainer's optimizer; its checkpoint state goes under
    /// `optimizer/`. A trainer with several optimizers names each
    /// ([`named_optimizer`](Trainer::named_optimizer)).
    pub fn optimizer(self, optimizer: impl Optimizer + 'static) -> Self {
        self.named_optimizer("", optimizer)
    }

    /// Adds an optimizer named `name`; its checkpoint state goes under
    /// `optimizer/<name>/`. Steps reach it as `s.optimizers[i]`, `i` the
    /// order it was added in.
    pub fn named_optimizer(
        mut self,
        name: impl Into<String>,
        optimizer: impl Optimizer + 'static,
    ) -> Self {
        self.names.push(name.into());
        let optimizer: Box<dyn Optimizer> = Box::new(optimizer);
        #[cfg(feature = "mpi")]
        let optimizer = match &self.dist {
            Some(d) => crate::distributed::data_parallel(optimizer, d),
            None => optimizer,
        };
        self.optimizers.push(optimizer);
        self
    }

    /// Trains data-parallel on the ranks of `dist` (feature `mpi`): every
    /// rank runs this trainer on the same graph, and
    /// - the variables are set to rank 0's at the start of each
    ///   [`run`](Trainer::run) (so also after a [`resume`](Trainer::resume),
    ///   whose checkpoint rank 0 reads and sends to the others);
    /// - [`Step::next_batch`] gives each rank its rows of the global batch
    ///   (`--batch` stays the global batch: rank `r` of `N` takes rows
    ///   `r·B/N .. (r+1)·B/N` of each batch, in the same seeded order);
    /// - each optimizer (added before or after) averages the gradients
    ///   across ranks before its update, weighted by each rank's share of
    ///   the batch ([`AveragedOptimizer`](crate::distributed::AveragedOptimizer));
    ///   with [`Distributed::set_shard_optimizer`](crate::distributed::Distributed::set_shard_optimizer)
    ///   on, an element-wise one ([`Optimizer::elementwise`], every built-in
    ///   one) has its update split across the ranks instead
    ///   ([`ShardedOptimizer`](crate::distributed::ShardedOptimizer): each
    ///   rank updates `1/N` of the elements and keeps their optimizer state);
    /// - each step's loss and metrics are averaged across ranks (weighted
    ///   likewise), so that all ranks record and check the global values;
    /// - only rank 0 saves checkpoints (every rank takes part in gathering
    ///   the optimizer state into them), shows the progress bar and prints
    ///   evaluation lines.
    ///
    /// An error in a step, an evaluation or a checkpoint save on any rank
    /// aborts the whole job after printing it (the other ranks could not know
    /// of it and would wait forever).
    #[cfg(feature = "mpi")]
    pub fn distributed(mut self, dist: &crate::distributed::Distributed) -> Self {
        if self.dist.is_none() {
            self.optimizers = std::mem::take(&mut self.optimizers)
                .into_iter()
                .map(|o| crate::distributed::data_parallel(o, dist))
                .collect();
        }
        self.dist = Some(dist.clone());
        self
    }

    /// The ranks this trainer trains on, if [`distributed`](Trainer::distributed).
    #[cfg(feature = "mpi")]
    pub fn dist(&self) -> Option<&crate::distributed::Distributed> {
        self.dist.as_ref()
    }

    /// The training data, as mini-batches ([`Step::next_batch`]); its position
    /// is saved in checkpoints.
    pub fn data(mut self, batches: Batches) -> Self {
        self.batches = Some(batches);
        self
    }

    /// Runs until `steps` steps are taken in all.
    pub fn steps(mut self, steps: usize) -> Self {
        self.length = Length::Steps(steps);
        self
    }

    /// Runs for `epochs` passes over the data (see [`Length::Epochs`]).
    pub fn epochs(mut self, epochs: f64) -> Self {
        self.length = Length::Epochs(epochs);
        self
    }

    /// Evaluates every `n` steps, before the last (0: never).
    pub fn eval_every(mut self, n: usize) -> Self {
        self.eval_every = n;
        self
    }

    /// Whether to evaluate before the run's first step (default: no).
    pub fn eval_at_start(mut self, on: bool) -> Self {
        self.eval_at_start = on;
        self
    }

    /// Whether to evaluate after the run's last step (default: yes).
    pub fn eval_at_end(mut self, on: bool) -> Self {
        self.eval_at_end = on;
        self
    }

    /// Saves a training checkpoint to `path` every `every` steps (`None` or
    /// 0: only at the end) and after the last step, atomically (an
    /// interrupted save leaves the previous file whole).
    pub fn checkpoint(mut self, path: impl Into<PathBuf>, every: Option<usize>) -> Self {
        self.checkpoint = Some(path.into());
        self.checkpoint_every = every.unwrap_or(0);
        self
    }

    /// Adds `key = value` to the metadata of the checkpoints it saves (the
    /// keys `step`, `epoch`, `batch` and `rng` are the trainer's own).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether to show the progress bar (default: yes, where stderr is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.show_progress = on;
        self
    }

    /// Whether lines an evaluation prints ([`Eval::println`]) go to stderr
    /// when there is no bar to print them above (default: no, they are dropped).
    pub fn lines_to_stderr(mut self, on: bool) -> Self {
        self.lines_to_stderr = on;
        self
    }

    /// Whether a step whose loss is NaN or infinite ends the run with an error
    /// (`step N: the loss is not finite (NaN)`; default: no).
    pub fn stop_on_non_finite(mut self, on: bool) -> Self {
        self.stop_on_non_finite = on;
        self
    }

    /// The run's length in steps.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a length in epochs without data.
    pub fn total_steps(&self) -> Result<usize> {
        match (self.length, &self.batches) {
            (Length::Steps(n), _) => Ok(n),
            (length, Some(b)) => Ok(length.steps(b.len(), b.batch_size())),
            (Length::Epochs(_), None) => Err(Error::invalid(
                "a length in epochs needs the trainer's data (Trainer::data)",
            )),
        }
    }

    /// The steps taken so far (after a [`resume`](Trainer::resume), the
    /// checkpoint's step).
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The run time.
    pub fn rt(&self) -> &RunTime {
        &self.rt
    }

    /// The run time, e.g. to evaluate after training or to set
    /// [`RunTime::stop_gradients_at`].
    pub fn rt_mut(&mut self) -> &mut RunTime {
        &mut self.rt
    }

    /// The optimizers, in the order they were added.
    pub fn optimizers(&self) -> &[Box<dyn Optimizer>] {
        &self.optimizers
    }

    /// The data.
    pub fn batches(&self) -> Option<&Batches> {
        self.batches.as_ref()
    }

    /// Restores the checkpoint at `path`. A training checkpoint (one with
    /// optimizer state, as [`run`](Trainer::run) saves) restores the variables,
    /// each optimizer's state, the step, the data position and the run time's
    /// random generator, so that the run continues exactly as one never
    /// stopped; a checkpoint of variables only restores the variables (all of
    /// them, by name and shape) and training starts from step 0. Call it after
    /// the builder methods. Everything is checked first: on error nothing has
    /// changed.
    ///
    /// # Errors
    /// As [`Checkpoint::load`]; [`Error::Checkpoint`] when the checkpoint does
    /// not fit the graph, an optimizer or the data, or its metadata is missing
    /// or malformed; [`Error::InvalidArgument`] for badly named optimizers.
    pub fn resume(&mut self, path: impl AsRef<Path>) -> Result<Resumed> {
        state::check_names(&self.names)?;
        let path = path.as_ref();
        #[cfg(feature = "mpi")]
        let ckpt = match &self.dist {
            Some(d) => {
                let bytes = d.broadcast_file(path)?;
                Checkpoint::from_bytes(&bytes).map_err(|e| match e {
                    Error::Checkpoint { message, .. } => Error::Checkpoint {
                        path: path.display().to_string(),
                        message,
                    },
                    other => other,
                })?
            }
            None => Checkpoint::load(path)?,
        };
        #[cfg(not(feature = "mpi"))]
        let ckpt = Checkpoint::load(path)?;
        let (resumed, step) = state::restore(
            &ckpt,
            path,
            Parts {
                graph: &self.graph,
                optimizers: &mut self.optimizers,
                names: &self.names,
                batches: self.batches.as_mut(),
                rt: &mut self.rt,
            },
        )?;
        self.step = step;
        Ok(resumed)
    }

    /// The training checkpoint of where training stands now. In a
    /// distributed run (feature `mpi`) it gathers the optimizers' state from
    /// the ranks (`distributed::ShardedOptimizer`):
    /// call it on every rank at the same point.
    ///
    /// # Errors
    /// As [`Graph::training_checkpoint`]; [`Error::InvalidArgument`] for badly
    /// named optimizers.
    pub fn training_checkpoint(&self) -> Result<Checkpoint> {
        state::check_names(&self.names)?;
        state::training_checkpoint(
            &self.graph,
            &self.optimizers,
            &self.names,
            self.step,
            self.batches.as_ref().map(Batches::position),
            &self.rt,
            &self.metadata,
        )
    }

    /// Saves [`training_checkpoint`](Trainer::training_checkpoint) to `path`, atomically.
    ///
    /// # Errors
    /// As [`training_checkpoint`](Trainer::training_checkpoint) and [`Checkpoint::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.training_checkpoint()?.save(path)
    }

    /// Runs the steps left, with no evaluation; see
    /// [`run_with_eval`](Trainer::run_with_eval).
    ///
    /// # Errors
    /// As [`run_with_eval`](Trainer::run_with_eval).
    pub fn run(
        &mut self,
        step: impl FnMut(&mut Step<'_>) -> Result<StepOutput>,
    ) -> Result<Summary> {
        self.run_inner(step, None::<fn(&mut Eval<'_>) -> Result<()>>)
    }

    /// Runs the steps left: `step` takes one training step; `eval` evaluates
    /// when due (it records values with [`Eval::record`] and prints lines with
    /// [`Eval::println`]).
    ///
    /// # Errors
    /// The first error of a closure, of a checkpoint save, or of a step's
    /// non-finite loss; [`Error::InvalidArgument`] for a length in epochs
    /// without data or badly named optimizers.
    pub fn run_with_eval(
        &mut self,
        step: impl FnMut(&mut Step<'_>) -> Result<StepOutput>,
        eval: impl FnMut(&mut Eval<'_>) -> Result<()>,
    ) -> Result<Summary> {
        self.run_inner(step, Some(eval))
    }

    fn run_inner(
        &mut self,
        step_fn: impl FnMut(&mut Step<'_>) -> Result<StepOutput>,
        eval_fn: Option<impl FnMut(&mut Eval<'_>) -> Result<()>>,
    ) -> Result<Summary> {
        #[cfg(feature = "mpi")]
        if let Some(d) = self.dist.clone() {
            return self.run_distributed(&d, step_fn, eval_fn);
        }
        self.run_loop(step_fn, eval_fn)
    }

    /// A distributed run: the same checks and starting variables on every
    /// rank, then the loop; an error on any rank aborts the job.
    #[cfg(feature = "mpi")]
    fn run_distributed(
        &mut self,
        d: &crate::distributed::Distributed,
        step_fn: impl FnMut(&mut Step<'_>) -> Result<StepOutput>,
        eval_fn: Option<impl FnMut(&mut Eval<'_>) -> Result<()>>,
    ) -> Result<Summary> {
        // Symmetric checks: every rank gets the same answer, so an error here
        // is returned by all of them.
        state::check_names(&self.names)?;
        let total = self.total_steps()?;
        d.check_same("the run's length in steps", total as u64)?;
        d.check_same("the step the run starts from", self.step as u64)?;
        d.broadcast_variables(&self.graph)?;
        if !d.is_primary() {
            self.show_progress = false;
            self.lines_to_stderr = false;
        }
        match self.run_loop(step_fn, eval_fn) {
            Ok(summary) => Ok(summary),
            Err(e) if d.size() > 1 => {
                eprintln!(
                    "error on rank {} of {}: {e}\naborting the job: the other ranks cannot go on without this one",
                    d.rank(),
                    d.size()
                );
                d.abort(1)
            }
            Err(e) => Err(e),
        }
    }

    fn run_loop(
        &mut self,
        mut step_fn: impl FnMut(&mut Step<'_>) -> Result<StepOutput>,
        mut eval_fn: Option<impl FnMut(&mut Eval<'_>) -> Result<()>>,
    ) -> Result<Summary> {
        state::check_names(&self.names)?;
        let total = self.total_steps()?;
        let start = self.step;
        let todo = total.saturating_sub(start);
        let progress = if self.show_progress {
            Progress::new(todo)
        } else {
            Progress::hidden(todo)
        };
        let mut progress = progress.lines_to_stderr(self.lines_to_stderr);
        let mut history = History::default();
        let mut last: Option<StepOutput> = None;
        let mut eval_seconds = 0.0;

        // One evaluation, timed; `None` when there is no eval closure.
        macro_rules! evaluate {
            ($point:expr) => {
                if let Some(eval) = eval_fn.as_mut() {
                    let t0 = Instant::now();
                    let mut ctx = Eval {
                        rt: &mut self.rt,
                        step: self.step,
                        point: $point,
                        last: last.as_ref(),
                        history: &mut history,
                        progress: &progress,
                    };
                    eval(&mut ctx)?;
                    Some(t0.elapsed().as_secs_f64())
                } else {
                    None
                }
            };
        }

        if self.eval_at_start {
            eval_seconds += evaluate!(EvalPoint::Start).unwrap_or(0.0);
        }
        let started = Instant::now();
        let mut eval_in_loop = 0.0;
        while self.step < total {
            let out = step_fn(&mut Step {
                rt: &mut self.rt,
                optimizers: &mut self.optimizers,
                batches: self.batches.as_mut(),
                index: self.step,
                start,
                total,
                #[cfg(feature = "mpi")]
                dist: self.dist.as_ref(),
            })?;
            #[cfg(feature = "mpi")]
            let out = match &self.dist {
                Some(d) => average_output(d, out),
                None => out,
            };
            self.step += 1;
            if self.stop_on_non_finite && !out.loss.is_finite() {
                return Err(Error::invalid(format!(
                    "step {}: the loss is not finite ({})",
                    self.step, out.loss
                )));
            }
            let shown = out.shown.as_ref().map(|(l, v)| (l.as_str(), *v));
            let running = progress.step(f64::from(out.loss), shown);
            history.record_step(self.step, &out, running);
            last = Some(out);
            if self.eval_every > 0 && self.step.is_multiple_of(self.eval_every) && self.step < total
            {
                eval_in_loop += evaluate!(EvalPoint::Periodic).unwrap_or(0.0);
            }
            #[cfg(feature = "mpi")]
            let writes = self.dist.as_ref().is_none_or(|d| d.is_primary());
            #[cfg(not(feature = "mpi"))]
            let writes = true;
            if let Some(path) = &self.checkpoint {
                let due = self.step == total
                    || (self.checkpoint_every > 0
                        && self.step.is_multiple_of(self.checkpoint_every));
                if due {
                    // Every rank gathers (the optimizer state may be split
                    // across them); rank 0 writes.
                    let ckpt = self.training_checkpoint()?;
                    if writes {
                        ckpt.save(path)?;
                    }
                }
            }
        }
        let train_seconds = (started.elapsed().as_secs_f64() - eval_in_loop).max(0.0);
        eval_seconds += eval_in_loop;
        if self.eval_at_end {
            eval_seconds += evaluate!(EvalPoint::End).unwrap_or(0.0);
        }
        progress.finish();
        Ok(Summary {
            start_step: start,
            step: self.step,
            train_seconds,
            eval_seconds,
            last,
            history,
        })
    }
}

/// `out` with its loss and metrics averaged across the ranks of `d`, each
/// rank weighted by its share of the step's batch (one small allreduce).
#[cfg(feature = "mpi")]
fn average_output(d: &crate::distributed::Distributed, mut out: StepOutput) -> StepOutput {
    if d.size() == 1 {
        return out;
    }
    let share = f64::from(d.share());
    let mut values: Vec<f64> = std::iter::once(f64::from(out.loss))
        .chain(out.metrics.iter().map(|(_, v)| *v))
        .chain(out.shown.iter().map(|(_, v)| *v))
        .map(|v| v * share)
        .collect();
    d.all_reduce_sum_f64(&mut values);
    let mut it = values.into_iter();
    out.loss = it.next().unwrap_or(f64::NAN) as f32;
    for (_, v) in out.metrics.iter_mut().chain(out.shown.iter_mut()) {
        *v = it.next().unwrap_or(f64::NAN);
    }
    out
}
