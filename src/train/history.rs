//! [`History`]: the curves of a training run (loss, step metrics, evaluations).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::train::plot::{plot_lines, Series};
use crate::train::step::StepOutput;

/// A named curve: `(step, value)` points in step order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curve {
    /// The metric's name.
    pub name: String,
    /// `(step, value)`, the step counted from 1 (the value after that many steps).
    pub points: Vec<(f64, f64)>,
}

/// The curves of one [`Trainer::run`](crate::train::Trainer::run): the loss and
/// its running mean at every step, each metric of the steps'
/// [`StepOutput`]s, and each value an evaluation
/// [`record`](crate::train::Eval::record)ed. A run resumed from a checkpoint
/// holds the steps it ran, from the step it resumed at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    loss: Vec<(f64, f64)>,
    running_loss: Vec<(f64, f64)>,
    metrics: Vec<Curve>,
    evals: Vec<Curve>,
}

/// Appends `(step, value)` to the curve `name` of `curves`, made if new.
fn push(curves: &mut Vec<Curve>, name: &str, step: usize, value: f64) {
    let point = (step as f64, value);
    match curves.iter_mut().find(|c| c.name == name) {
        Some(c) => c.points.push(point),
        None => curves.push(Curve {
            name: name.to_string(),
            points: vec![point],
        }),
    }
}

/// The points of the curve `name`, empty when there is none.
fn points<'a>(curves: &'a [Curve], name: &str) -> &'a [(f64, f64)] {
    curves
        .iter()
        .find(|c| c.name == name)
        .map_or(&[], |c| c.points.as_slice())
}

impl History {
    /// Records the step that brought the count to `step`.
    pub(crate) fn record_step(&mut self, step: usize, out: &StepOutput, running: f64) {
        let x = step as f64;
        self.loss.push((x, f64::from(out.loss)));
        self.running_loss.push((x, running));
        for (name, value) in &out.metrics {
            push(&mut self.metrics, name, step, *value);
        }
    }

    /// Records an evaluation's value after `step` steps.
    pub(crate) fn record_eval(&mut self, step: usize, name: &str, value: f64) {
        push(&mut self.evals, name, step, value);
    }

    /// The loss of every step, `(step, loss)`.
    pub fn loss(&self) -> &[(f64, f64)] {
        &self.loss
    }

    /// The running mean of the loss the progress bar shows, at every step.
    pub fn running_loss(&self) -> &[(f64, f64)] {
        &self.running_loss
    }

    /// The step metric `name` at every step that gave it (empty when none did).
    pub fn metric(&self, name: &str) -> &[(f64, f64)] {
        points(&self.metrics, name)
    }

    /// The evaluated value `name` at every evaluation that recorded it.
    pub fn eval(&self, name: &str) -> &[(f64, f64)] {
        points(&self.evals, name)
    }

    /// Every step metric's curve, in the order they first appeared.
    pub fn metrics(&self) -> &[Curve] {
        &self.metrics
    }

    /// Every evaluated value's curve, in the order they first appeared.
    pub fn evals(&self) -> &[Curve] {
        &self.evals
    }

    /// Draws the curves into the folder `dir` (which must exist) as PNGs:
    /// `loss.png` (the loss of each step and its running mean), then one
    /// picture per metric name, `<name>.png` (characters other than ASCII
    /// letters, digits, `-` and `_` made `_`; a metric named `loss` is drawn as
    /// `loss_metric.png`), with the steps' values and the evaluations' of that name. `title` starts each caption. Returns the
    /// files written.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when a picture cannot be written.
    pub fn plot(&self, dir: &Path, title: &str) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let path = dir.join("loss.png");
        plot_lines(
            &path,
            &format!("{title}: training loss"),
            "step",
            "loss",
            &[
                Series::new("loss of the step", self.loss.clone()),
                Series::new("running mean", self.running_loss.clone()),
            ],
        )?;
        written.push(path);
        let mut names: Vec<&str> = self.metrics.iter().map(|c| c.name.as_str()).collect();
        for c in &self.evals {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        for name in names {
            let mut series = Vec::new();
            if !self.metric(name).is_empty() {
                series.push(Series::new("training steps", self.metric(name).to_vec()));
            }
            if !self.eval(name).is_empty() {
                series.push(Series::new("evaluations", self.eval(name).to_vec()));
            }
            let mut file: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if file == "loss" {
                file.push_str("_metric");
            }
            let path = dir.join(format!("{file}.png"));
            plot_lines(&path, &format!("{title}: {name}"), "step", name, &series)?;
            written.push(path);
        }
        Ok(written)
    }
}
