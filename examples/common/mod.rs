//! What the demos share beyond `adgraph::train`: command-line flags, data
//! loading, accuracy and image grids. Everything here uses adgraph's public API only.

#![allow(dead_code)] // each example uses a different part

pub mod char_lm;

use std::error::Error;
use std::path::{Path, PathBuf};

use adgraph::data::{one_hot, Mnist};
use adgraph::optim::Schedule;
use adgraph::train::{plot_lines, History, Length, Series, Step, StepOutput, Trainer};
use adgraph::{Feed, Node, Tensor};
use ndarray::{Axis, Slice};
use plotters::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Result type of the examples' `main`.
pub type Res<T = ()> = Result<T, Box<dyn Error>>;

/// The flags every demo takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Folder with the four MNIST-format files (e.g. /usr/share/datasets/fashion-mnist).
    /// Without it, the Fashion-MNIST slice shipped in data/fashion-mnist is used.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Total number of training steps (overrides --epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Number of passes over the training set (used when --steps is not given).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Mini-batch size (each demo has its own default, printed at start).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of initializers, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for the PNG pictures [default: out/<example>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Save the variables to this checkpoint (safetensors) at the end.
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,
    /// Resume from this checkpoint: variables, optimizer state, step and data
    /// position (a checkpoint of variables only restores just the variables).
    #[arg(long, value_name = "PATH")]
    pub load: Option<PathBuf>,
    /// Also save to --save every N steps (the last save is at the end).
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Train data-parallel on MPI, one process per rank, e.g.
    /// `mpirun -np 2 target/release/examples/conv_net --distributed` (on by
    /// itself when launched by mpirun or srun): each of N ranks takes batch/N
    /// rows of every global --batch, gradients are averaged before each
    /// update, and rank 0 alone writes checkpoints, pictures and results.
    /// Needs a build with `--features mpi`.
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: batch norm statistics over the rows of all ranks
    /// (synchronised batch norm) instead of each rank's own rows.
    #[arg(long)]
    pub sync_bn: bool,
    /// With --distributed: split the optimizer's update and state across
    /// the ranks (ZeRO stage 1: reduce-scatter, each rank updates 1/N of the
    /// elements, allgather) instead of every rank updating everything.
    #[arg(long)]
    pub shard_optimizer: bool,
    /// With --distributed: split each global batch in proportion to the
    /// ranks' speeds on the last steps (a rank on a slower core takes fewer
    /// rows, so the others wait less); the same global batch and update up
    /// to rounding, but no longer the same bits from run to run.
    #[arg(long)]
    pub balance: bool,
    /// Threads of this process's pool [default: all cores, shared evenly
    /// among the ranks on this machine when launched by mpirun].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The MPI job's handle, once started: kept as long as the flags, so that
    /// MPI runs until the demo ends (graph nodes do not keep it running).
    #[cfg(feature = "mpi")]
    #[arg(skip)]
    dist_handle: std::cell::RefCell<Option<adgraph::distributed::Distributed>>,
}

/// The number of ranks of the MPI job that launched this process (Open MPI's
/// `mpirun`, MPICH's `mpiexec`, Slurm's `srun` with PMIx), `None` when not
/// launched by one.
pub fn launched_ranks() -> Option<usize> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    var("OMPI_COMM_WORLD_SIZE")
        .or_else(|| var("PMI_SIZE"))
        .or_else(|| var("PMIX_RANK").and_then(|_| var("SLURM_NTASKS")))
}

/// This process's rank in the job that launched it (see [`launched_ranks`]).
pub fn launched_rank() -> Option<usize> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    var("OMPI_COMM_WORLD_RANK")
        .or_else(|| var("PMI_RANK"))
        .or_else(|| var("PMIX_RANK"))
}

/// The number of ranks of this job on this machine (1 when not launched by MPI).
pub fn local_ranks() -> usize {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .or_else(|| var("MPI_LOCALNRANKS"))
        .or_else(|| var("SLURM_NTASKS_PER_NODE"))
        .unwrap_or(1)
        .max(1)
}

/// The value of `--threads` on the command line (already checked by clap),
/// for [`init`], which runs before the demo hands its flags around.
fn threads_flag() -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--threads" {
            args.get(i + 1)?.parse().ok()
        } else {
            a.strip_prefix("--threads=")?.parse().ok()
        }
    })
}

impl CommonArgs {
    /// Whether this run is data-parallel: `--distributed`, or launched by mpirun.
    pub fn is_distributed(&self) -> bool {
        self.distributed || launched_ranks().is_some()
    }

    /// The MPI job's handle when [`is_distributed`](CommonArgs::is_distributed),
    /// started on first use.
    #[cfg(feature = "mpi")]
    pub fn dist(&self) -> Res<Option<adgraph::distributed::Distributed>> {
        if !self.is_distributed() {
            if self.sync_bn {
                return Err("--sync-bn needs a distributed run (--distributed, or mpirun)".into());
            }
            if self.shard_optimizer {
                return Err(
                    "--shard-optimizer needs a distributed run (--distributed, or mpirun)".into(),
                );
            }
            if self.balance {
                return Err("--balance needs a distributed run (--distributed, or mpirun)".into());
            }
            return Ok(None);
        }
        if let Some(d) = self.dist_handle.borrow().as_ref() {
            return Ok(Some(d.clone()));
        }
        let d = adgraph::distributed::Distributed::init()?;
        *self.dist_handle.borrow_mut() = Some(d.clone());
        Ok(Some(d))
    }

    /// Errors for the distributed flags of a build without MPI.
    #[cfg(not(feature = "mpi"))]
    fn no_mpi(&self) -> Res {
        if self.is_distributed() || self.sync_bn || self.shard_optimizer || self.balance {
            let launched = match launched_ranks() {
                Some(n) => format!(" (launched by mpirun with {n} ranks)"),
                None => String::new(),
            };
            return Err(format!(
                "--distributed, --sync-bn, --shard-optimizer and --balance need a build with \
                 MPI{launched}: \
                 cargo build --release --features mpi --examples (see docs/distributed.md)"
            )
            .into());
        }
        Ok(())
    }

    /// An error when the run is distributed: for demos that train on one
    /// process only (`demo` names it).
    pub fn single_process_only(&self, demo: &str) -> Res {
        if self.is_distributed() || self.sync_bn || self.shard_optimizer || self.balance {
            return Err(format!(
                "{demo} trains on one process only: --distributed, --sync-bn, --shard-optimizer, \
                 --balance \
                 and mpirun are for \
                 conv_net, logistic_regression and spiral"
            )
            .into());
        }
        Ok(())
    }

    /// An error for `--sync-bn`: for demos that take the other distributed
    /// flags but have no synchronised batch norm (`demo` names it).
    pub fn no_sync_bn(&self, demo: &str) -> Res {
        if self.sync_bn {
            return Err(format!(
                "{demo} has no synchronised batch norm: --sync-bn is for conv_net"
            )
            .into());
        }
        Ok(())
    }

    /// Batch normalization as `ad::fused_batch_norm`, or with statistics over
    /// all ranks (`sync_batch_norm`) with `--sync-bn` in training mode.
    pub fn batch_norm(
        &self,
        x: &Node,
        scale: &Node,
        offset: &Node,
        moving_mean: &Node,
        moving_variance: &Node,
        config: adgraph::BatchNormConfig,
    ) -> Res<Node> {
        #[cfg(feature = "mpi")]
        if self.sync_bn {
            if let Some(d) = self.dist()? {
                return Ok(adgraph::distributed::sync_batch_norm(
                    x,
                    scale,
                    offset,
                    moving_mean,
                    moving_variance,
                    config,
                    &d,
                )?);
            }
        }
        #[cfg(not(feature = "mpi"))]
        self.no_mpi()?;
        Ok(adgraph::fused_batch_norm(
            x,
            scale,
            offset,
            moving_mean,
            moving_variance,
            config,
        )?)
    }

    /// `trainer` with `--save` (every `--save-every` steps and at the end),
    /// distributed when [`is_distributed`](CommonArgs::is_distributed), then
    /// resumed from `--load` if given (saying what it loaded). Call it once
    /// the trainer's run time, optimizers and data are set.
    pub fn checkpointing(&self, trainer: Trainer) -> Res<Trainer> {
        let trainer = match &self.save {
            Some(path) => trainer.checkpoint(path, self.save_every),
            None => trainer,
        };
        #[cfg(feature = "mpi")]
        let mut trainer = match self.dist()? {
            Some(d) => {
                println!(
                    "distributed: {} ranks ({} thread(s) on rank 0), the global batch split across them{}",
                    d.size(),
                    rayon::current_num_threads(),
                    if self.sync_bn { ", synchronised batch norm" } else { "" }
                );
                d.set_shard_optimizer(self.shard_optimizer);
                if self.shard_optimizer {
                    println!("distributed: the optimizer's update split across the ranks");
                }
                d.set_balance(self.balance);
                if self.balance {
                    println!("distributed: each batch split by the ranks' speeds");
                }
                trainer.distributed(&d)
            }
            None => trainer,
        };
        #[cfg(not(feature = "mpi"))]
        let mut trainer = {
            self.no_mpi()?;
            trainer
        };
        if let Some(path) = &self.load {
            println!("loaded: {}", trainer.resume(path)?);
        }
        Ok(trainer)
    }

    /// `--steps`, else `--epochs` over `train_len` examples in batches of
    /// `batch`, else `default` steps.
    pub fn steps_or(&self, default: usize, train_len: usize, batch: usize) -> usize {
        match (self.steps, self.epochs) {
            (None, None) => default,
            _ => self.total_steps(train_len, batch, 0.0),
        }
    }

    /// `--batch`, else `default`; an error for 0.
    pub fn batch_or(&self, default: usize) -> Res<usize> {
        match self.batch.unwrap_or(default) {
            0 => Err("--batch must be at least 1".into()),
            batch => Ok(batch),
        }
    }

    /// The output folder, created if needed.
    pub fn out_dir(&self, example: &str) -> Res<PathBuf> {
        let dir = self
            .out
            .clone()
            .unwrap_or_else(|| Path::new("out").join(example));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create output folder {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Total steps: `--steps`, else `--epochs` (or `default_epochs`) over `train_len` examples.
    pub fn total_steps(&self, train_len: usize, batch: usize, default_epochs: f64) -> usize {
        let length = match self.steps {
            Some(s) => Length::Steps(s),
            None => Length::Epochs(self.epochs.unwrap_or(default_epochs)),
        };
        length.steps(train_len, batch)
    }
}

/// Loads the MNIST-format data named by `--data`, or the shipped slice, and
/// says which on the first line of output.
pub fn load_mnist(args: &CommonArgs) -> Res<Mnist> {
    let mnist = match &args.data {
        Some(dir) => {
            let m = Mnist::load(dir)?;
            println!(
                "data: {} ({} train, {} test images)",
                dir.display(),
                m.train_images.len(),
                m.test_images.len()
            );
            m
        }
        None => {
            let m = Mnist::embedded()?;
            println!(
                "data: the embedded Fashion-MNIST slice in {} ({} train, {} test images); \
                 pass --data DIR for the full set",
                adgraph::data::default_data_dir().display(),
                m.train_images.len(),
                m.test_images.len()
            );
            m
        }
    };
    Ok(mnist)
}

/// Images flattened to rows of 784 pixels in [0, 1], and one-hot labels.
pub struct Flat {
    pub x_train: Tensor,
    pub y_train: Tensor,
    pub x_test: Tensor,
    pub y_test: Tensor,
}

impl Flat {
    /// The training and test sets of `data`, labels one-hot over `classes`.
    pub fn of(data: &Mnist, classes: usize) -> Res<Flat> {
        Ok(Flat {
            x_train: data.train_images.flat(),
            y_train: one_hot(&data.train_labels, classes)?,
            x_test: data.test_images.flat(),
            y_test: one_hot(&data.test_labels, classes)?,
        })
    }
}

/// A demo's exit: success, or the error printed readably on stderr and failure.
pub fn exit_code(result: Res) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The index of the largest entry of a row (the first of equal ones; 0 for an
/// empty row or one of NaNs).
fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The arg-max of each row of a `[n, k]` tensor (of axis 0's subviews' first axis).
pub fn argmax_rows(t: &Tensor) -> Vec<usize> {
    t.outer_iter()
        .map(|row| row.into_dimensionality().map_or(0, argmax))
        .collect()
}

/// Fraction of rows whose arg-max of `logits` equals that of the one-hot `labels`.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    let (Ok(l), Ok(y)) = (
        logits.view().into_dimensionality::<ndarray::Ix2>(),
        labels.view().into_dimensionality::<ndarray::Ix2>(),
    ) else {
        return 0.0;
    };
    let hits = l
        .rows()
        .into_iter()
        .zip(y.rows())
        .filter(|(a, b)| argmax(a.view()) == argmax(b.view()))
        .count();
    hits as f64 / l.nrows().max(1) as f64
}

/// The accuracy on `(x, y)` of each classifier whose logits `logits` gives
/// for a chunk of `x`, `batch` rows at a time.
pub fn batched_accuracy(
    x: &Tensor,
    y: &Tensor,
    batch: usize,
    mut logits: impl FnMut(Tensor) -> adgraph::Result<Vec<Tensor>>,
) -> adgraph::Result<Vec<f64>> {
    let n = x.shape()[0];
    let mut hits = Vec::new();
    for start in (0..n).step_by(batch.max(1)) {
        let rows = Slice::from(start..(start + batch).min(n));
        let yb = y.slice_axis(Axis(0), rows);
        let outputs = logits(x.slice_axis(Axis(0), rows).to_owned())?;
        hits.resize(outputs.len(), 0.0);
        for (h, l) in hits.iter_mut().zip(&outputs) {
            *h += accuracy(l, &yb.to_owned()) * yb.shape()[0] as f64;
        }
    }
    Ok(hits.into_iter().map(|h| h / n.max(1) as f64).collect())
}

/// A classifier's training step: one update on `loss` with the next batch fed
/// to `x` and `labels`; the batch's accuracy (the arg-max of `logits` against
/// the one-hot labels) is the step's metric `accuracy`, shown in the bar.
pub fn classifier_step<'n>(
    x: &'n Node,
    labels: &'n Node,
    logits: &'n Node,
    loss: &'n Node,
) -> impl FnMut(&mut Step<'_>) -> adgraph::Result<StepOutput> + 'n {
    move |s| {
        let (xb, yb) = s.next_batch()?;
        let feed = Feed::new().with(x, xb)?.with(labels, yb.clone())?;
        let (loss, acc) =
            s.minimize_with(loss, &feed, |rt| Ok(accuracy(rt.value(logits)?, &yb)))?;
        Ok(StepOutput::new(loss)
            .metric("accuracy", acc)
            .show("acc", acc))
    }
}

/// `loss.png` (`loss_series`: the loss of each step, on a `loss_axis`) and
/// `accuracy.png` (the training batches' accuracy at each step and the test
/// set's at each evaluation) in `out`, captioned `<model>: ...`.
pub fn plot_loss_and_accuracy(
    out: &Path,
    model: &str,
    loss_axis: &str,
    loss_series: &str,
    history: &History,
) -> adgraph::Result<()> {
    plot_lines(
        &out.join("loss.png"),
        &format!("{model}: training loss"),
        "step",
        loss_axis,
        &[Series::new(loss_series, history.loss().to_vec())],
    )?;
    plot_lines(
        &out.join("accuracy.png"),
        &format!("{model}: accuracy"),
        "step",
        "accuracy",
        &[
            Series::new("training batch", history.metric("accuracy").to_vec()),
            Series::new("test set", history.eval("accuracy").to_vec()),
        ],
    )
}

/// The learning rate `lr` at every step (`constant`), or decaying from `lr` to
/// 0 along a half cosine over `steps` steps.
pub fn lr_schedule(constant: bool, lr: f32, steps: usize) -> Schedule {
    if constant {
        Schedule::Constant(lr)
    } else {
        Schedule::Cosine {
            initial: lr,
            minimum: 0.0,
            total_steps: steps as u64,
        }
    }
}

/// `rows × cols` standard-normal numbers from stream `stream` of the seed's
/// generator, so that a step's noise depends on the seed and its stream only
/// (a resumed run draws the same).
pub fn standard_normal(
    seed: u64,
    stream: u64,
    rows: usize,
    cols: usize,
) -> adgraph::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Tensor::from_shape_vec(vec![rows, cols], values)?)
}

/// Joins rayon's pool with this thread (no hand-off per parallel kernel) and
/// keeps freed memory for the next step: what every demo does first.
///
/// The pool has `--threads` threads (read from the command line, so that
/// every demo honours the flag), else one per core, shared evenly among the
/// ranks on this machine when launched by mpirun. On a rank other than 0 of
/// an MPI job, stdout is sent to /dev/null (rank 0 prints the lines; errors
/// still go to stderr).
pub fn init() -> Res {
    let threads = threads_flag().or_else(|| {
        let local = local_ranks();
        (local > 1).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / local).max(1)
        })
    });
    adgraph::init_thread_pool(threads).map_err(|e| format!("--threads: {e}"))?;
    adgraph::retain_freed_memory();
    if launched_rank().is_some_and(|r| r > 0) {
        quiet_stdout()?;
    }
    Ok(())
}

/// Sends this process's stdout to /dev/null.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn quiet_stdout() -> Res {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    std::io::stdout().flush()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 on two open descriptors; stdout's old file is closed by it.
    if unsafe { libc::dup2(null.as_raw_fd(), 1) } < 0 {
        return Err(format!(
            "cannot redirect stdout: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

/// Elsewhere every rank prints (only the results are rank 0's alone).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn quiet_stdout() -> Res {
    Ok(())
}

/// Writes images (`[n, h, w]` or `[n, h, w, 1]`, values in [0, 1]) as a grid PNG,
/// `cols` images a row, each pixel `scale` × `scale`.
///
/// # Errors
/// [`adgraph::Error::Io`] when the picture cannot be drawn or written.
pub fn save_image_grid(
    path: &Path,
    images: &Tensor,
    cols: usize,
    scale: u32,
) -> adgraph::Result<()> {
    draw_image_grid(path, images, cols, scale).map_err(|e| adgraph::Error::Io {
        path: path.display().to_string(),
        message: format!("cannot draw the picture: {e}"),
    })
}

fn draw_image_grid(path: &Path, images: &Tensor, cols: usize, scale: u32) -> Res {
    if !adgraph::train::is_primary() {
        return Ok(());
    }
    let shape = images.shape();
    if shape.len() < 3 {
        return Err(format!("image grid needs [n, h, w(, 1)], got {shape:?}").into());
    }
    let (n, h, w) = (shape[0], shape[1], shape[2]);
    let cols = cols.max(1);
    let rows = n.div_ceil(cols);
    let gap = 2u32;
    let cell_w = w as u32 * scale + gap;
    let cell_h = h as u32 * scale + gap;
    let root = BitMapBackend::new(
        path,
        (cols as u32 * cell_w + gap, rows as u32 * cell_h + gap),
    )
    .into_drawing_area();
    root.fill(&WHITE)?;
    let flat: Vec<f32> = images.iter().copied().collect();
    let per_image = h * w * shape[3..].iter().product::<usize>();
    for k in 0..n {
        let (gx, gy) = (
            (k % cols) as u32 * cell_w + gap,
            (k / cols) as u32 * cell_h + gap,
        );
        for i in 0..h {
            for j in 0..w {
                let v = flat[k * per_image + (i * w + j) * (per_image / (h * w))];
                let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
                let (px, py) = (gx + j as u32 * scale, gy + i as u32 * scale);
                root.draw(&Rectangle::new(
                    [
                        (px as i32, py as i32),
                        ((px + scale) as i32, (py + scale) as i32),
                    ],
                    RGBColor(g, g, g).filled(),
                ))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// This process's resident memory, read from `/proc/self/status`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryUse {
    /// Resident set size now (`VmRSS`), in MiB.
    pub rss_mib: f64,
    /// Peak resident set size so far (`VmHWM`), in MiB.
    pub peak_mib: f64,
}

/// The resident memory of this process, or `None` where `/proc/self/status` is
/// missing or unreadable (any system but Linux).
pub fn memory_use() -> Option<MemoryUse> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // Lines read like "VmRSS:	  123456 kB".
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<f64>()
            .ok()
    };
    Some(MemoryUse {
        rss_mib: kib("VmRSS:")? / 1024.0,
        peak_mib: kib("VmHWM:")? / 1024.0,
    })
}

/// A MiB figure as printed in the result lines, `n/a` where it is unknown.
pub fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}

/// The W7 character transformer, shared by the char_transformer demo and the benchmark.
pub mod transformer;
