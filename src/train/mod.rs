//! A training loop: a model is its graph, a step closure and a few lines.
//!
//! [`Trainer`] runs the loop every demo shares: it takes the steps (your
//! closure, given a [`Step`]: the run time, the optimizers and the next
//! mini-batch), for a number of steps or epochs; shows a [`Progress`] bar with
//! the running loss; evaluates every N steps (a second closure, given an
//! [`Eval`]); saves a training checkpoint every N steps and at the end, and
//! [resumes](Trainer::resume) exactly from one (variables, each optimizer's
//! state, step, data position and the run time's random generator: a resumed
//! run ends with the same bits as one never stopped); and records the loss and
//! metric curves in a [`History`], which [`plot_lines`] and
//! [`History::plot`] draw as PNG pictures. [`report`] prints results as
//! `key=value` lines.
//!
//! - A step with one optimizer is one call: [`Step::minimize`] (or
//!   [`Step::minimize_with`] to read other values of the step, e.g. logits
//!   for an accuracy). A step with several optimizers (a GAN's generator and
//!   discriminator, a WGAN's critic steps) uses [`Step::rt`] and
//!   [`Step::optimizers`] directly and draws as many batches as it needs.
//! - Learning-rate schedules belong to the optimizer
//!   ([`Schedule`](crate::optim::Schedule), e.g. `Adam::new(lr).schedule(..)`),
//!   whose step count is part of its checkpointed state, so a resumed run
//!   continues the schedule; [`Trainer::total_steps`] or [`Length::steps`]
//!   gives the run's length for a schedule that spans it.
//!
//! Fit `y = 2x + 1` on 64 points, in batches of 16:
//!
//! ```
//! use adgraph::{self as ad, data::Batches, optim::GradientDescent, train::Trainer};
//!
//! let x = ad::Tensor::from_shape_fn(vec![64, 1], |i| i[0] as f32 / 64.0);
//! let y = x.mapv(|v| 2.0 * v + 1.0);
//! let g = ad::Graph::with_seed(0);
//! let (xs, ys) = (g.placeholder(ad::shape![None, 1]), g.placeholder(ad::shape![None, 1]));
//! let w = g.variable(&[1, 1], ad::init::Zeros, true)?;
//! let b = g.variable(&[1], ad::init::Zeros, true)?;
//! let err = (ad::matmul(&xs, &w)? + &b - &ys).check()?;
//! let loss = ad::reduce_mean(&(&err * &err), ad::Axes::All, false)?;
//!
//! let mut trainer = Trainer::new(&g)
//!     .optimizer(GradientDescent::new(0.5))
//!     .data(Batches::new(x, y, 16, 0)?)
//!     .steps(300)
//!     .progress(false);
//! let summary = trainer.run(|s| {
//!     let (xb, yb) = s.next_batch()?;
//!     s.minimize(&loss, &ad::Feed::new().with(&xs, xb)?.with(&ys, yb)?)
//! })?;
//! assert!(summary.final_loss().unwrap() < 1e-4);
//! assert_eq!(summary.history.loss().len(), 300);
//! # Ok::<(), ad::Error>(())
//! ```
//!
//! With an evaluation every 100 steps and a checkpoint every 100 steps that
//! [`Trainer::resume`] continues from (the same trainer built again, then
//! `resume`, then `run`):
//!
//! ```no_run
//! # use adgraph::{self as ad, train::{StepOutput, Trainer}};
//! # fn demo(g: &ad::Graph, loss: &ad::Node, feed: &ad::Feed, test_loss: impl Fn(&mut ad::RunTime) -> ad::Result<f64>) -> ad::Result<()> {
//! let mut trainer = Trainer::new(g)
//!     .optimizer(ad::optim::Adam::new(1e-3))
//!     .steps(1000)
//!     .eval_every(100)
//!     .checkpoint("run.safetensors", Some(100));
//! if std::path::Path::new("run.safetensors").exists() {
//!     println!("loaded: {}", trainer.resume("run.safetensors")?);
//! }
//! let summary = trainer.run_with_eval(
//!     |s| s.minimize(loss, feed),
//!     |e| {
//!         let value = test_loss(e.rt)?;
//!         e.record("test loss", value);
//!         e.println(format!("step {}: test loss {value:.4}", e.step()));
//!         Ok(())
//!     },
//! )?;
//! summary.history.plot(std::path::Path::new("."), "my model")?;
//! # Ok(()) }
//! ```

mod history;
mod plot;
mod progress;
mod report;
mod state;
mod step;
mod trainer;

pub use history::{Curve, History};
pub use plot::{plot_lines, register_font, window_means, Series};
pub use progress::Progress;
pub use report::{report, report_lines};
pub use state::{Resumed, BATCH_KEY, EPOCH_KEY, RNG_KEY, STEP_KEY};
pub use step::{Eval, Step, StepOutput};
pub use trainer::{Length, Summary, Trainer};

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process writes the results (see [`is_primary`]).
static PRIMARY: AtomicBool = AtomicBool::new(true);

/// Whether this process writes results: [`report`]'s `key=value` lines and
/// [`plot_lines`]' pictures (and a distributed [`Trainer`]'s checkpoints and
/// progress bar). True, except on the ranks other than 0 of a distributed run
/// (`adgraph::distributed::Distributed::init` sets it), where those calls do
/// nothing, so that one copy of each is written.
pub fn is_primary() -> bool {
    PRIMARY.load(Ordering::Relaxed)
}

/// Sets [`is_primary`] for this process.
pub fn set_primary(primary: bool) {
    PRIMARY.store(primary, Ordering::Relaxed);
}
