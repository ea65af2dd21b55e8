//! A 5-layer convolutional network classifying Fashion-MNIST: the original
//! framework's `conv_net` demo, and adgraph's main example.
//!
//! The model: five 3×3 SAME convolutions, each followed by batch normalization
//! (batch statistics while training, moving statistics at test time) and a relu,
//! with 16, 32, 64, 128 and 256 channels and strides 1, 2, 1, 2, 2
//! (28×28 → 28 → 14 → 14 → 7 → 4); a global mean over height and width; a dense
//! layer 256 → 10 with bias. Loss: mean softmax cross-entropy over batches of 50;
//! optimizer: Adam with learning rate 1e-3, decayed to zero along a cosine over
//! the run (`--constant-lr` keeps it at 1e-3, as the notebook did). Weights start
//! from a truncated normal (stddev 0.01), batch-norm scales at one and offsets at
//! zero, as in the original notebook.
//!
//! The test set is evaluated in inference mode, in batches, at the end of every
//! epoch and after the last step: the inference network is a second set of
//! nodes on the same graph sharing the same variables.
//!
//! Run it (5 epochs of the embedded 10,000-image slice, 1,000 steps: under a
//! minute on two cores, test accuracy about 0.90; the full Fashion-MNIST reaches
//! about 0.91 in 2 epochs):
//!
//! ```text
//! cargo run --release --example conv_net
//! cargo run --release --example conv_net -- --data /usr/share/datasets/fashion-mnist --epochs 2
//! ```
//!
//! It prints `key=value` lines: `test_accuracy`, `final_loss` (the last step's
//! training loss, full `f32` precision), `steps`, `train_seconds` (training
//! only), `images_per_s` (training throughput), `eval_seconds`, and the mean
//! time of a step's `forward_ms`, `backward_ms` (gradients) and `update_ms`
//! (Adam), and the resident memory (Linux; `n/a` elsewhere) after 100 steps
//! (`rss_mib_step_100`), at the end of training (`rss_mib_end`) and at its peak
//! (`peak_rss_mib`), `comm_ms_per_step` (distributed: the time per step in
//! the gradient communication; `n/a` on one process) and `comm_wait_ms_per_rank`
//! (with `--measure-wait`: each rank's wait per step for the slowest one,
//! then not in `comm_ms_per_step`). `--check-numerics` checks every value and gradient for NaN
//! and infinity; `--infer-batch N` skips training and times one inference batch
//! of N images instead. It draws, in `--out` (default `out/conv_net/`): `loss.png` (training
//! loss per step and its running mean), `accuracy.png` (training accuracy over
//! windows of steps and test accuracy at each evaluation) and `predictions.png`
//! (test images with the predicted class, green when right, red with the true
//! class when wrong).
//!
//! Training is deterministic given `--seed` (initial weights, batch order), so
//! a run stopped after a `--save` checkpoint and resumed with `--load` (same
//! flags) ends with the same `final_loss` as an uninterrupted one; the curves of
//! a resumed run start at the step it resumed from.
//!
//! Data-parallel on MPI (see `docs/distributed.md`): each of N processes takes
//! `--batch`/N rows of every batch and the gradients are averaged before each
//! update; `--sync-bn` normalises with statistics over all ranks' rows;
//! `--balance` gives the ranks rows in proportion to their measured speeds
//! (for cores that run at different speeds; no longer the same bits per run):
//!
//! ```text
//! cargo build --release --features mpi --example conv_net
//! mpirun -np 2 target/release/examples/conv_net --distributed [--sync-bn] [--balance]
//! ```

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use adgraph::data::{one_hot, Batches, Mnist, FASHION_MNIST_CLASSES};
use adgraph::init::{Ones, TruncatedNormal, Zeros};
use adgraph::optim::{Adam, Optimizer};
use adgraph::train::{
    plot_lines, register_font, report, window_means, Series, StepOutput, Trainer,
};
use adgraph::{
    self as ad, BatchNormActivation, BatchNormConfig, Feed, Graph, Node, Padding, RunTime, Tensor,
};
use clap::Parser;
use common::{CommonArgs, Res};
use ndarray::{s, Axis};
use plotters::prelude::*;

/// Epochs over the training set when neither `--steps` nor `--epochs` is given.
const DEFAULT_EPOCHS: f64 = 5.0;
/// Mini-batch size when `--batch` is not given (the original's).
const DEFAULT_BATCH: usize = 50;
/// Output channels and stride of each convolution.
const LAYERS: [(usize, usize); 5] = [(16, 1), (32, 2), (64, 1), (128, 2), (256, 2)];
/// Number of classes.
const CLASSES: usize = 10;
/// Steps per point of the training-accuracy curve.
const ACC_WINDOW: usize = 20;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    about = "Trains the original demo's 5-layer conv net (conv → batch norm → relu, ×5; \
             global mean pool; dense) on Fashion-MNIST and evaluates it on the test set."
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Keep the learning rate at --lr for the whole run (the notebook's setting)
    /// instead of decaying it from --lr to zero along a cosine over the run.
    #[arg(long)]
    constant_lr: bool,
    /// Decay of the batch-norm moving statistics (the notebook's 0.9 suits short runs).
    #[arg(long, default_value_t = 0.9)]
    bn_decay: f32,
    /// Evaluate on the test set every N steps [default: once per epoch], and after the last step.
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Test images per inference batch.
    #[arg(long, default_value_t = 500, value_name = "N")]
    eval_batch: usize,
    /// Check every value and gradient for NaN and infinity (`set_check_numerics`),
    /// failing at the first node that holds one.
    #[arg(long)]
    check_numerics: bool,
    /// Distributed: time apart, in every gradient communication, the wait for
    /// the slowest rank (a barrier first) and the transfer; reports
    /// `comm_wait_ms_per_rank` (each rank's wait per step) beside
    /// `comm_ms_per_step` (then the transfer alone). A diagnostic: the
    /// barrier is one more small collective per step.
    #[arg(long)]
    measure_wait: bool,
    /// Instead of training, run one inference batch of N test images (repeated
    /// as needed) through the network (after --load, if given) and report its
    /// time and the peak resident memory.
    #[arg(long, value_name = "N")]
    infer_batch: Option<usize>,
}

/// The variables of one conv → batch norm → relu layer.
struct ConvLayer {
    kernel: Node,
    scale: Node,
    offset: Node,
    moving_mean: Node,
    moving_variance: Node,
    stride: usize,
}

/// All the model's variables, shared by the training and the inference network.
struct Params {
    convs: Vec<ConvLayer>,
    dense_w: Node,
    dense_b: Node,
}

/// Creates the variables on `graph` (in a fixed order, so the graph's seed fixes their values).
fn params(graph: &Graph) -> Res<Params> {
    let weights = TruncatedNormal::new(0.0, 0.01);
    let mut convs = Vec::new();
    let mut cin = 1;
    for (cout, stride) in LAYERS {
        convs.push(ConvLayer {
            kernel: graph.variable(&[3, 3, cin, cout], weights, true)?,
            scale: graph.variable(&[cout], Ones, true)?,
            offset: graph.variable(&[cout], Zeros, true)?,
            moving_mean: graph.variable(&[cout], Zeros, false)?,
            moving_variance: graph.variable(&[cout], Ones, false)?,
            stride,
        });
        cin = cout;
    }
    Ok(Params {
        convs,
        dense_w: graph.variable(&[cin, CLASSES], weights, true)?,
        dense_b: graph.variable(&[CLASSES], Zeros, true)?,
    })
}

/// The network's logits for images `x` (`[N, 28, 28, 1]`): batch norm uses the
/// batch statistics and updates the moving ones when `training`, and uses the
/// moving statistics otherwise.
/// With `--sync-bn` (distributed), the training network's batch norm takes its
/// statistics over the rows of all ranks.
fn model(x: &Node, training: bool, p: &Params, bn_decay: f32, common: &CommonArgs) -> Res<Node> {
    let bn = BatchNormConfig {
        epsilon: 1e-3,
        decay: bn_decay,
        is_training: training,
        // relu(batch_norm(conv)) in one node (see BatchNormActivation).
        activation: BatchNormActivation::Relu,
    };
    let mut h = x.clone();
    for l in &p.convs {
        let conv = ad::conv2d(&h, &l.kernel, [l.stride, l.stride], Padding::Same)?;
        h = common.batch_norm(
            &conv,
            &l.scale,
            &l.offset,
            &l.moving_mean,
            &l.moving_variance,
            bn,
        )?;
    }
    let pooled = ad::reduce_mean(&h, [1, 2], false)?; // [N, 256]
    Ok(ad::add(&ad::matmul(&pooled, &p.dense_w)?, &p.dense_b)?)
}

/// Runs the inference network on all test images, `batch` at a time; returns
/// the predicted class of each.
fn predict(
    rt: &mut RunTime,
    x: &Node,
    logits: &Node,
    images: &Tensor,
    batch: usize,
) -> ad::Result<Vec<usize>> {
    let n = images.shape()[0];
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let chunk = images.slice_axis(Axis(0), (start..(start + batch).min(n)).into());
        let feed = Feed::new().with(x, chunk.to_owned())?;
        let values = rt.forward_backward_cycle(|rt| rt.infer(&[logits], &feed))?;
        out.extend(common::argmax_rows(&values[0]));
    }
    Ok(out)
}

/// The fraction of `predicted` equal to `labels`.
fn accuracy(predicted: &[usize], labels: &[u8]) -> f64 {
    let hits = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    hits as f64 / predicted.len().max(1) as f64
}

/// Milliseconds per step spent averaging gradients across ranks (in the
/// allreduce calls, waiting for the slower rank included): `n/a` on one process.
fn comm_ms_per_step(trainer: &Trainer, steps: usize) -> String {
    #[cfg(feature = "mpi")]
    if let Some(d) = trainer.dist() {
        return format!(
            "{:.2}",
            d.stats().gradient_seconds * 1e3 / steps.max(1) as f64
        );
    }
    let _ = (trainer, steps);
    "n/a".to_string()
}

/// Each rank's milliseconds per step waiting for the slowest rank before the
/// gradient communication (`--measure-wait`), comma-separated in rank order
/// (a collective: every rank calls it); `n/a` otherwise.
fn comm_wait_ms_per_rank(trainer: &Trainer, steps: usize, measured: bool) -> String {
    #[cfg(feature = "mpi")]
    if let (Some(d), true) = (trainer.dist(), measured) {
        let mut waits = vec![0.0; d.size()];
        waits[d.rank()] = d.stats().wait_seconds * 1e3 / steps.max(1) as f64;
        d.all_reduce_sum_f64(&mut waits);
        return waits
            .iter()
            .map(|w| format!("{w:.2}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    let _ = (trainer, steps, measured);
    "n/a".to_string()
}

/// Mean milliseconds of `total` over `steps`.
fn mean_ms(total: Duration, steps: usize) -> String {
    format!("{:.1}", total.as_secs_f64() * 1e3 / steps.max(1) as f64)
}

/// An optimizer that forwards to `inner` and adds the time of each update
/// (with the gradient communication when distributed) to `spent`: it lets
/// the demo time the update apart from the backward while taking
/// [`Optimizer::optimize`]'s copy-free path.
struct TimedUpdate<'a> {
    inner: &'a mut dyn Optimizer,
    spent: &'a mut Duration,
}

impl Optimizer for TimedUpdate<'_> {
    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> ad::Result<()> {
        let t0 = Instant::now();
        let applied = self.inner.apply_gradients(grads_and_vars);
        *self.spent += t0.elapsed();
        applied
    }
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(Args::parse()))
}

/// Builds the graph, trains, evaluates, reports and draws.
fn run(args: Args) -> Res {
    common::init()?;
    if args.eval_batch == 0 {
        return Err("--eval-batch must be at least 1".into());
    }
    if args.eval_every == Some(0) {
        return Err("--eval-every must be at least 1".into());
    }
    let data = common::load_mnist(&args.common)?;
    let out_dir = args.common.out_dir("conv_net")?;
    let batch = args.common.batch.unwrap_or(DEFAULT_BATCH);
    println!("batch: {batch}");
    // The graph: variables, a training network and an inference network sharing them.
    let graph = Graph::with_seed(args.common.seed);
    let x = graph.placeholder(ad::shape![None, 28, 28, 1]);
    let y = graph.placeholder(ad::shape![None, CLASSES]);
    let p = params(&graph)?;
    let logits = model(&x, true, &p, args.bn_decay, &args.common)?;
    let loss = ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(&y, &logits)?,
        ad::Axes::All,
        false,
    )?;
    let test_logits = model(&x, false, &p, args.bn_decay, &args.common)?;

    let batches = Batches::new(
        data.train_images.nhwc(),
        one_hot(&data.train_labels, CLASSES)?,
        batch,
        args.common.seed,
    )?;
    let total = args
        .common
        .total_steps(batches.len(), batch, DEFAULT_EPOCHS);
    let eval_every = args.eval_every.unwrap_or(batches.batches_per_epoch());
    // The step size decays along a cosine: the last steps, taken with small
    // rates, settle the weights (+2-4 points of test accuracy over a constant rate).
    let schedule = common::lr_schedule(args.constant_lr, args.lr, total);
    let mut trainer = args.common.checkpointing(
        Trainer::new(&graph)
            .run_time(RunTime::with_seed(args.common.seed))
            .optimizer(Adam::new(args.lr).schedule(schedule))
            .data(batches)
            .steps(total)
            .eval_every(eval_every)
            .lines_to_stderr(true),
    )?;
    let test_images = data.test_images.nhwc();
    #[cfg(feature = "mpi")]
    if let Some(d) = trainer.dist() {
        d.set_measure_wait(args.measure_wait);
    }
    let rt = trainer.rt_mut();
    rt.set_check_numerics(args.check_numerics);
    if let Some(n) = args.infer_batch {
        return infer_once(rt, &x, &test_logits, &test_images, n);
    }
    // The images and labels are data: no gradient is needed for them.
    rt.stop_gradients_at(&[&x, &y]);

    // Training: forward, backward and update timed apart; the test set every
    // --eval-every steps and at the end.
    let (mut t_forward, mut t_backward, mut t_update) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut rss_step_100, mut rss_end, mut predicted) = (None, None, Vec::new());
    let summary = trainer.run_with_eval(
        |s| {
            let (xb, yb) = s.next_batch()?;
            let feed = Feed::new().with(&x, xb)?.with(&y, yb)?;
            let optimizer = &mut s.optimizers[0];
            let (step_loss, step_acc) = s.rt.forward_backward_cycle(|rt| -> ad::Result<_> {
                let t0 = Instant::now();
                rt.forward(&loss, &feed)?;
                let t1 = Instant::now();
                // `optimize` updates without copying the gradients or the
                // variables the run time holds; the wrapper times the update.
                let mut update = Duration::ZERO;
                TimedUpdate {
                    inner: optimizer.as_mut(),
                    spent: &mut update,
                }
                .optimize(rt, &loss, &feed, None)?;
                t_forward += t1 - t0;
                t_backward += t1.elapsed().saturating_sub(update);
                t_update += update;
                let labels = feed
                    .get(&y)
                    .ok_or_else(|| ad::Error::invalid("labels missing from the feed"))?;
                let value = rt.value(&loss)?.first().copied().unwrap_or(f32::NAN);
                Ok((value, common::accuracy(rt.value(&logits)?, labels)))
            })?;
            if !step_loss.is_finite() {
                let at = s.index();
                return Err(ad::Error::invalid(format!(
                    "the loss is {step_loss} at step {at}"
                )));
            }
            if s.index() + 1 == s.start() + 100 {
                rss_step_100 = common::memory_use().map(|m| m.rss_mib);
            }
            Ok(StepOutput::new(step_loss)
                .metric("accuracy", step_acc)
                .show("acc", step_acc))
        },
        |e| {
            if e.is_end() {
                rss_end = common::memory_use().map(|m| m.rss_mib);
            }
            predicted = predict(e.rt, &x, &test_logits, &test_images, args.eval_batch)?;
            let acc = accuracy(&predicted, &data.test_labels);
            e.record("accuracy", acc);
            if !e.is_end() {
                e.println(format!("step {}: test accuracy {acc:.4}", e.step()));
            }
            Ok(())
        },
    )?;

    let waits = comm_wait_ms_per_rank(&trainer, summary.steps_run(), args.measure_wait);
    let history = &summary.history;
    let test_accuracy = history.eval("accuracy").last().map_or(f64::NAN, |p| p.1);
    let (steps_run, train_seconds) = (summary.steps_run(), summary.train_seconds);
    report(&[
        ("test_accuracy", format!("{test_accuracy:.4}")),
        (
            "final_loss",
            format!("{}", summary.final_loss().unwrap_or(f32::NAN)),
        ),
        ("steps", summary.step.to_string()),
        ("train_seconds", format!("{train_seconds:.1}")),
        (
            "images_per_s",
            format!(
                "{:.0}",
                (steps_run * batch) as f64 / train_seconds.max(1e-9)
            ),
        ),
        ("eval_seconds", format!("{:.1}", summary.eval_seconds)),
        ("forward_ms", mean_ms(t_forward, steps_run)),
        ("backward_ms", mean_ms(t_backward, steps_run)),
        ("update_ms", mean_ms(t_update, steps_run)),
        ("comm_ms_per_step", comm_ms_per_step(&trainer, steps_run)),
        ("comm_wait_ms_per_rank", waits),
        ("rss_mib_step_100", common::mib(rss_step_100)),
        ("rss_mib_end", common::mib(rss_end)),
        (
            "peak_rss_mib",
            common::mib(common::memory_use().map(|m| m.peak_mib)),
        ),
    ]);

    // Pictures.
    plot_lines(
        &out_dir.join("loss.png"),
        "Conv net: training loss",
        "step",
        "softmax cross-entropy",
        &[
            Series::new("loss of the step's batch", history.loss().to_vec()),
            Series::new("running mean", history.running_loss().to_vec()),
        ],
    )?;
    plot_lines(
        &out_dir.join("accuracy.png"),
        "Conv net: accuracy",
        "step",
        "accuracy",
        &[
            Series::new(
                format!("training batches (mean of {ACC_WINDOW} steps)"),
                window_means(history.metric("accuracy"), ACC_WINDOW),
            ),
            Series::new(
                "test set (inference mode)",
                history.eval("accuracy").to_vec(),
            ),
        ],
    )?;
    if ad::train::is_primary() {
        save_predictions(&out_dir.join("predictions.png"), &data, &predicted, 40)?;
    }
    println!("pictures: {}", out_dir.display());
    Ok(())
}

/// `--infer-batch`: one forward pass of the inference network over `n` test
/// images (cycling through the test set), reported as `key=value` lines.
fn infer_once(rt: &mut RunTime, x: &Node, logits: &Node, images: &Tensor, n: usize) -> Res {
    let available = images.shape()[0];
    if n == 0 || available == 0 {
        return Err("--infer-batch needs at least 1 image and a non-empty test set".into());
    }
    let index: Vec<usize> = (0..n).map(|i| i % available).collect();
    let batch = images.select(Axis(0), &index);
    let before = common::memory_use();
    let feed = Feed::new().with(x, batch)?;
    let t0 = Instant::now();
    let values = rt.forward_backward_cycle(|rt| rt.infer(&[logits], &feed))?;
    let infer_ms = t0.elapsed().as_secs_f64() * 1e3;
    let predicted = common::argmax_rows(&values[0]);
    report(&[
        ("infer_batch", n.to_string()),
        ("infer_ms", format!("{infer_ms:.1}")),
        ("predicted", predicted.len().to_string()),
        (
            "rss_mib_before_infer",
            common::mib(before.map(|m| m.rss_mib)),
        ),
        (
            "peak_rss_mib",
            common::mib(common::memory_use().map(|m| m.peak_mib)),
        ),
    ]);
    Ok(())
}

/// The Fashion-MNIST name of class `i` (its number if there is none).
fn class_name(i: usize) -> String {
    FASHION_MNIST_CLASSES
        .get(i)
        .map_or_else(|| i.to_string(), |s| s.to_string())
}

/// Draws the first `n` test images in a grid, each captioned with its predicted
/// class: green when right, red followed by the true class when wrong.
fn save_predictions(path: &Path, data: &Mnist, predicted: &[usize], n: usize) -> Res {
    // The font the curves use, for the captions.
    register_font();
    let images = data.test_images.images();
    let n = n.min(images.shape()[0]);
    let (cols, scale, caption) = (8usize, 4i32, 30i32);
    let (h, w) = (images.shape()[1] as i32, images.shape()[2] as i32);
    let (cell_w, cell_h) = ((w * scale).max(110) + 8, h * scale + caption + 8);
    let rows = n.div_ceil(cols) as i32;
    let root = BitMapBackend::new(
        path,
        ((cols as i32 * cell_w) as u32, (rows * cell_h) as u32),
    )
    .into_drawing_area();
    root.fill(&WHITE)?;
    for (k, &guess) in predicted.iter().enumerate().take(n) {
        let (gx, gy) = (
            (k % cols) as i32 * cell_w + 4,
            (k / cols) as i32 * cell_h + 4,
        );
        let left = gx + (cell_w - 8 - w * scale) / 2;
        let img = images.slice(s![k, .., ..]);
        for ((i, j), &v) in img.indexed_iter() {
            let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
            let (px, py) = (left + j as i32 * scale, gy + i as i32 * scale);
            root.draw(&Rectangle::new(
                [(px, py), (px + scale, py + scale)],
                RGBColor(g, g, g).filled(),
            ))?;
        }
        let truth = data.test_labels.get(k).map(|&l| usize::from(l));
        let right = truth == Some(guess);
        let color = if right {
            RGBColor(0, 130, 0)
        } else {
            RGBColor(200, 0, 0)
        };
        let mut lines = vec![class_name(guess)];
        if !right {
            lines.push(format!("({})", truth.map_or("?".into(), class_name)));
        }
        for (i, line) in lines.into_iter().enumerate() {
            let style = ("sans-serif", 12).into_font().color(&color);
            let at = (gx, gy + h * scale + 3 + 13 * i as i32);
            root.draw(&Text::new(line, at, style))?;
        }
    }
    root.present()?;
    Ok(())
}
