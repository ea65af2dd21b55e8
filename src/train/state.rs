//! The training state a checkpoint carries, so that a stopped run resumes
//! exactly where it was: every variable, each optimizer's state, the step, the
//! data's position and the run time's random generator (dropout masks).
//!
//! Layout (one safetensors file, see [`checkpoint`](crate::checkpoint)): the
//! variables under their names; a trainer's only optimizer's state under
//! `optimizer/` (as [`Graph::save_training_state`](crate::Graph::save_training_state)
//! writes it), or each named optimizer's under `optimizer/<name>/`; metadata
//! `step`, `epoch` and `batch` (the [`Position`] of the data, when the trainer
//! has data), `rng` (the [`RngState`]'s text) and the trainer's own
//! [metadata](crate::train::Trainer::metadata).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, RestoreMode, OPTIMIZER_PREFIX};
use crate::data::{Batches, Position};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::optim::Optimizer;
use crate::rng_state::RngState;
use crate::runtime::RunTime;
use crate::tensor::Tensor;

/// Metadata key of the number of steps taken.
pub const STEP_KEY: &str = "step";
/// Metadata key of the data position's epoch.
pub const EPOCH_KEY: &str = "epoch";
/// Metadata key of the data position's batch within its epoch.
pub const BATCH_KEY: &str = "batch";
/// Metadata key of the run time's random generator state.
pub const RNG_KEY: &str = "rng";

/// What [`Trainer::resume`](crate::train::Trainer::resume) restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// A checkpoint of variables only (no optimizer state): the variables were
    /// restored, and training starts from step 0.
    Variables {
        /// The checkpoint.
        path: PathBuf,
    },
    /// A training checkpoint: variables, optimizer states, step, data
    /// position and random generator were restored.
    Training {
        /// The checkpoint.
        path: PathBuf,
        /// The step training resumes after.
        step: usize,
    },
}

/// `variables from PATH` or `training state from PATH at step N`.
impl fmt::Display for Resumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resumed::Variables { path } => write!(f, "variables from {}", path.display()),
            Resumed::Training { path, step } => {
                write!(f, "training state from {} at step {step}", path.display())
            }
        }
    }
}

/// The parts of a trainer a checkpoint saves and restores.
pub(crate) struct Parts<'a> {
    pub(crate) graph: &'a Graph,
    pub(crate) optimizers: &'a mut [Box<dyn Optimizer>],
    pub(crate) names: &'a [String],
    pub(crate) batches: Option<&'a mut Batches>,
    pub(crate) rt: &'a mut RunTime,
}

/// Where optimizer `name`'s state lives in a checkpoint.
fn prefix(name: &str) -> String {
    if name.is_empty() {
        OPTIMIZER_PREFIX.to_string()
    } else {
        format!("{OPTIMIZER_PREFIX}{name}/")
    }
}

/// The names a trainer may give its optimizers: one unnamed, or all named,
/// distinct and without a `/`.
pub(crate) fn check_names(names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() && names.len() > 1 {
            return Err(Error::invalid(
                "a trainer with several optimizers must name each (Trainer::named_optimizer)",
            ));
        }
        if name.contains('/') {
            return Err(Error::invalid(format!(
                "optimizer name {name:?} contains a '/'"
            )));
        }
        if names[..i].contains(name) {
            return Err(Error::invalid(format!("two optimizers named {name:?}")));
        }
    }
    Ok(())
}

/// The training checkpoint of the trainer's parts after `step` steps.
pub(crate) fn training_checkpoint(
    graph: &Graph,
    optimizers: &[Box<dyn Optimizer>],
    names: &[String],
    step: usize,
    position: Option<Position>,
    rt: &RunTime,
    extra: &BTreeMap<String, String>,
) -> Result<Checkpoint> {
    let mut ckpt = graph.variables_checkpoint(false)?;
    for (name, optimizer) in names.iter().zip(optimizers) {
        let prefix = prefix(name);
        for (key, value) in optimizer.state() {
            ckpt.insert(format!("{prefix}{key}"), value)?;
        }
    }
    let mut metadata = extra.clone();
    metadata.insert(STEP_KEY.to_string(), step.to_string());
    if let Some(p) = position {
        metadata.insert(EPOCH_KEY.to_string(), p.epoch.to_string());
        metadata.insert(BATCH_KEY.to_string(), p.batch.to_string());
    }
    metadata.insert(RNG_KEY.to_string(), rt.rng_state().to_string());
    ckpt.metadata = metadata;
    Ok(ckpt)
}

/// An error about the checkpoint at `path`.
fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// `err` (of restoring an in-memory checkpoint) as an error about `path`.
fn at_path(path: &Path, err: Error) -> Error {
    match err {
        Error::Checkpoint { message, .. } => bad(path, message),
        other => other,
    }
}

/// Restores `ckpt` (read from `path`) into `parts`: a training checkpoint
/// (one with optimizer state) restores everything and returns the step it was
/// saved at; a checkpoint of variables only restores the variables (strictly)
/// and returns step 0. Everything is checked before anything changes: on
/// error, the parts are as they were.
pub(crate) fn restore(
    ckpt: &Checkpoint,
    path: &Path,
    parts: Parts<'_>,
) -> Result<(Resumed, usize)> {
    let Parts {
        graph,
        optimizers,
        names,
        batches,
        rt,
    } = parts;
    let has_optimizer_state = ckpt.tensors.keys().any(|k| k.starts_with(OPTIMIZER_PREFIX));
    if !has_optimizer_state {
        graph
            .restore_checkpoint(ckpt, RestoreMode::Strict)
            .map_err(|e| at_path(path, e))?;
        let resumed = Resumed::Variables {
            path: path.to_path_buf(),
        };
        return Ok((resumed, 0));
    }

    // The metadata.
    let number = |key: &str| -> Result<usize> {
        let text = ckpt
            .metadata
            .get(key)
            .ok_or_else(|| bad(path, format!("metadata has no {key}")))?;
        text.parse()
            .map_err(|e| bad(path, format!("metadata {key} {text:?}: {e}")))
    };
    let step = number(STEP_KEY)?;
    let position = match &batches {
        None => None,
        Some(b) => {
            let p = Position {
                epoch: number(EPOCH_KEY)?,
                batch: number(BATCH_KEY)?,
            };
            if p.batch > b.batches_per_epoch() {
                return Err(bad(
                    path,
                    format!(
                        "data position: batch {} of an epoch of {} batches",
                        p.batch,
                        b.batches_per_epoch()
                    ),
                ));
            }
            Some(p)
        }
    };
    let rng = ckpt
        .metadata
        .get(RNG_KEY)
        .map(|text| {
            text.parse::<RngState>()
                .map_err(|e| bad(path, format!("metadata {RNG_KEY}: {e}")))
        })
        .transpose()?;

    // Each optimizer's state; every optimizer entry must belong to one.
    let prefixes: Vec<String> = names.iter().map(|n| prefix(n)).collect();
    let mut states: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); names.len()];
    for (key, value) in &ckpt.tensors {
        if !key.starts_with(OPTIMIZER_PREFIX) {
            continue;
        }
        let owner = prefixes
            .iter()
            .position(|p| key.starts_with(p.as_str()))
            .ok_or_else(|| {
                bad(
                    path,
                    format!("{key:?} is the state of no optimizer of this trainer (its optimizers: {names:?})"),
                )
            })?;
        states[owner].push((key[prefixes[owner].len()..].to_string(), value.clone()));
    }

    // Load them, then the variables; on an error, put back what was loaded.
    let before: Vec<Vec<(String, Tensor)>> = optimizers.iter().map(|o| o.state()).collect();
    let roll_back = |optimizers: &mut [Box<dyn Optimizer>], loaded: usize| {
        for (optimizer, state) in optimizers.iter_mut().zip(&before).take(loaded) {
            // A state the optimizer itself gave back loads.
            let _ = optimizer.load_state(state, graph);
        }
    };
    for i in 0..optimizers.len() {
        if let Err(e) = optimizers[i].load_state(&states[i], graph) {
            roll_back(optimizers, i);
            let which = if names[i].is_empty() {
                "optimizer state".to_string()
            } else {
                format!("state of optimizer {:?}", names[i])
            };
            return Err(bad(path, format!("{which}: {e}")));
        }
    }
    if let Err(e) = graph.restore_checkpoint(ckpt, RestoreMode::Strict) {
        roll_back(optimizers, optimizers.len());
        return Err(at_path(path, e));
    }

    // Nothing fails from here on.
    if let (Some(b), Some(p)) = (batches, position) {
        b.seek(p)?;
    }
    if let Some(rng) = &rng {
        rt.set_rng_state(rng);
    }
    let resumed = Resumed::Training {
        path: path.to_path_buf(),
        step,
    };
    Ok((resumed, step))
}
