//! What the demos share: command-line flags, data loading, a progress bar, result
//! lines and PNG plots. Everything here uses adgraph's public API only.

#![allow(dead_code)] // each example uses a different part

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use adgraph::checkpoint::{Checkpoint, RestoreMode, OPTIMIZER_PREFIX};
use adgraph::data::{Mnist, Position};
use adgraph::optim::Optimizer;
use adgraph::{Graph, RngState, RunTime, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

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
}

impl CommonArgs {
    /// `--save`'s path when a checkpoint is due after `step`: at a multiple of
    /// `--save-every` and at the last step.
    pub fn save_due(&self, step: usize, last_step: usize) -> Option<&Path> {
        let due = step == last_step
            || self
                .save_every
                .is_some_and(|n| n > 0 && step.is_multiple_of(n));
        self.save.as_deref().filter(|_| due)
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
        match self.steps {
            Some(s) => s,
            None => {
                let epochs = self.epochs.unwrap_or(default_epochs);
                ((epochs * train_len as f64) / batch as f64).ceil().max(1.0) as usize
            }
        }
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

/// A progress bar on stderr showing the running loss (and accuracy).
pub struct Progress {
    bar: ProgressBar,
    smoothed_loss: Option<f64>,
}

impl Progress {
    /// A bar for `total` steps.
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
            smoothed_loss: None,
        }
    }

    /// Records one step's loss (and accuracy, if any); returns the running loss.
    pub fn step(&mut self, loss: f64, accuracy: Option<f64>) -> f64 {
        let running = match self.smoothed_loss {
            None => loss,
            Some(s) => 0.95 * s + 0.05 * loss,
        };
        self.smoothed_loss = Some(running);
        let msg = match accuracy {
            Some(a) => format!("loss {running:.4} acc {a:.3}"),
            None => format!("loss {running:.4}"),
        };
        self.bar.set_message(msg);
        self.bar.inc(1);
        running
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: impl AsRef<str>) {
        self.bar.println(line.as_ref());
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
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

/// Prints the results as `key=value` lines on stdout.
pub fn report(results: &[(&str, String)]) {
    for (k, v) in results {
        println!("{k}={v}");
    }
}

/// Fraction of rows whose arg-max of `logits` equals that of the one-hot `labels`.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    let argmax = |row: ndarray::ArrayView1<f32>| {
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
    };
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

fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        // Plots carry their own font so they render the same on any machine.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("DejaVuSans.ttf"),
        );
    });
}

/// One named line of a plot.
pub struct Series {
    /// The legend label.
    pub name: String,
    /// The points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a label and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// Draws line series on one chart and writes it as a PNG.
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Res {
    register_font();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes images (`[n, h, w]` or `[n, h, w, 1]`, values in [0, 1]) as a grid PNG,
/// `cols` images a row, each pixel `scale` × `scale`.
pub fn save_image_grid(path: &Path, images: &Tensor, cols: usize, scale: u32) -> Res {
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

/// The checkpoint metadata key of the run time's random generator state.
pub const RNG_KEY: &str = "rng";

/// Where training stands: the next step to run and the data position.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainState {
    /// Steps already taken.
    pub step: usize,
    /// Position of the mini-batch iterator.
    pub position: Position,
    /// The run time's random generator (dropout masks) as saved in a training
    /// checkpoint: give it to [`RunTime::set_rng_state`] on resuming. `None`
    /// when starting afresh.
    pub rng: Option<RngState>,
}

impl TrainState {
    /// Puts `rt`'s random generator where the checkpoint left it (nothing when
    /// starting afresh or from a checkpoint without a generator state).
    pub fn restore_rng(&self, rt: &mut RunTime) {
        if let Some(rng) = &self.rng {
            rt.set_rng_state(rng);
        }
    }
}

/// The generator state in a checkpoint's metadata, `None` when it holds none
/// (a checkpoint written before generator states were saved).
pub fn rng_from_metadata(meta: &BTreeMap<String, String>, path: &Path) -> Res<Option<RngState>> {
    meta.get(RNG_KEY)
        .map(|text| {
            text.parse::<RngState>()
                .map_err(|e| format!("{}: metadata {RNG_KEY}: {e}", path.display()).into())
        })
        .transpose()
}

/// Restores `--load` (if given) into `graph` and `optimizer`: a training
/// checkpoint resumes variables, optimizer state, step and data position; a
/// checkpoint of variables only restores the variables (and starts at step 0).
pub fn resume(args: &CommonArgs, graph: &Graph, optimizer: &mut dyn Optimizer) -> Res<TrainState> {
    let Some(path) = &args.load else {
        return Ok(TrainState::default());
    };
    let ckpt = Checkpoint::load(path)?;
    let has_optimizer = ckpt.tensors.keys().any(|k| k.starts_with(OPTIMIZER_PREFIX));
    if !has_optimizer {
        graph.restore_checkpoint(&ckpt, RestoreMode::Strict)?;
        println!("loaded: variables from {}", path.display());
        return Ok(TrainState::default());
    }
    let meta = graph.restore_training_checkpoint(&ckpt, optimizer)?;
    let get = |k: &str| -> Res<usize> {
        Ok(meta
            .get(k)
            .ok_or_else(|| format!("{}: metadata has no {k}", path.display()))?
            .parse()?)
    };
    let state = TrainState {
        step: get("step")?,
        position: Position {
            epoch: get("epoch")?,
            batch: get("batch")?,
        },
        rng: rng_from_metadata(&meta, path)?,
    };
    println!(
        "loaded: training state from {} at step {}",
        path.display(),
        state.step
    );
    Ok(state)
}

/// Saves the training state to `--save` when `step` is a multiple of
/// `--save-every` or the last step; atomically, so an interrupted save leaves the
/// previous checkpoint intact. The state holds the variables, the optimizer's
/// state, the step, the data position and `rt`'s random generator.
pub fn maybe_save(
    args: &CommonArgs,
    graph: &Graph,
    optimizer: &dyn Optimizer,
    rt: &RunTime,
    state: TrainState,
    last_step: usize,
) -> Res {
    if let Some(path) = args.save_due(state.step, last_step) {
        let meta = BTreeMap::from([
            ("step".to_string(), state.step.to_string()),
            ("epoch".to_string(), state.position.epoch.to_string()),
            ("batch".to_string(), state.position.batch.to_string()),
            (RNG_KEY.to_string(), rt.rng_state().to_string()),
        ]);
        graph.save_training_state(path, optimizer, &meta)?;
    }
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
