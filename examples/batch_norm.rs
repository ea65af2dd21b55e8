//! The batch-normalization demo: two multi-layer perceptrons, one with its
//! hidden layers batch-normalized and one without, trained side by side on the
//! same mini-batches of Fashion-MNIST and compared on the test set, as in the
//! original framework's `batch_norm` notebook (which used MNIST).
//!
//! Models (the batch-norm one is benchmark workload W3), `784 → 100 → 100 → 10`:
//! - **with batch norm**: `matmul → fused_batch_norm (eps 1e-3, decay 0.997) →
//!   sigmoid`, twice, then `matmul + bias`. Training uses the batch statistics
//!   and updates the moving ones; the test accuracy is measured in inference
//!   mode (a second set of nodes on the same variables, using the moving
//!   statistics).
//! - **without**: `matmul + bias → sigmoid`, twice, then `matmul + bias`.
//!
//! Weights are drawn from a truncated normal (stddev 0.01), layer by layer the
//! same for both models; biases and offsets zero, scales one. Loss of each:
//! the per-example softmax cross-entropy summed over the batch. Both are
//! trained by gradient descent on batches of 50: each step minimises the sum
//! of the two losses, whose gradient for each model's variables is that
//! model's own gradient, so each model is trained exactly as if alone. Both
//! models live in one graph, so `--save`/`--load` keep both (and the moving
//! statistics) in one checkpoint, with the one optimizer's state.
//!
//! Learning rate: 0.01 decaying to 0 along a half cosine over the run
//! (`--constant-lr` keeps it at 0.01, as the notebook). At a constant 0.01 the
//! weights keep moving faster than the moving statistics (decay 0.997, i.e. an
//! average over about 330 steps) can follow, and on Fashion-MNIST the
//! batch-norm model's inference-mode accuracy then swings by several points
//! from one evaluation to the next (about 3.5 points below the same network
//! evaluated with batch statistics, at step 6,000 of the full set); letting
//! the rate decay lets the statistics catch up. Default length: 25 epochs, the
//! notebook's 30,000 steps of 50 over 60,000 images (5,000 steps on the
//! embedded slice).
//!
//! Run:
//!
//! ```text
//! cargo run --release --example batch_norm                     # embedded slice
//! cargo run --release --example batch_norm -- \
//!     --data /usr/share/datasets/fashion-mnist                # 30,000 steps, as the notebook
//! cargo run --release --example batch_norm -- --save /tmp/bn.safetensors --save-every 1000
//! cargo run --release --example batch_norm -- --load /tmp/bn.safetensors  # resume after a stop
//! ```
//!
//! Prints `key=value` lines: `steps`, `batch`, `epochs`, `bn_final_loss` and
//! `plain_final_loss` (each model's summed loss at the last step), `final_loss`
//! (their sum, the objective), `bn_test_accuracy`, `plain_test_accuracy`,
//! `train_seconds`. Draws to `--out` (default `out/batch_norm/`): `loss.png`
//! (both training losses per example, averaged over blocks of steps) and
//! `accuracy.png` (both test accuracies every `--eval-every` steps).

mod common;

use std::time::Instant;

use adgraph::data::{one_hot, Batches};
use adgraph::init::{Ones, TruncatedNormal, Zeros};
use adgraph::optim::{GradientDescent, Optimizer, Schedule};
use adgraph::{self as ad, BatchNormConfig, Feed, Graph, Node, RunTime, Tensor};
use clap::Parser;
use common::{CommonArgs, Progress, Res, Series, TrainState};
use ndarray::{Axis, Slice};

const PIXELS: usize = 784;
const HIDDEN: usize = 100;
const CLASSES: usize = 10;
const EPSILON: f32 = 1e-3;
const DECAY: f32 = 0.997;
const LEARNING_RATE: f32 = 0.01;
const DEFAULT_BATCH: usize = 50;
/// Default number of passes over the training set: the notebook's 30,000
/// steps of 50 over MNIST's 60,000 training images.
const DEFAULT_EPOCHS: f64 = 25.0;
/// Test images per forward pass when evaluating.
const EVAL_BATCH: usize = 2000;

/// Trains a 784-100-100-10 sigmoid MLP with and without batch normalization
/// on the same batches and compares their test accuracy.
///
/// Defaults: 25 epochs (30,000 steps on the full set, as the notebook) of
/// gradient descent on batches of 50, learning rate 0.01 decaying to 0
/// (cosine). The learning-rate schedule spans --steps, so resume a run with the
/// --steps it was started with.
#[derive(Parser, Debug)]
#[command(about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Keep the learning rate at 0.01 for the whole run, as the notebook does; by
    /// default it decays from 0.01 to 0 along a half cosine, which lets the
    /// weights settle so the moving statistics catch up with them.
    #[arg(long)]
    constant_lr: bool,
    /// Measure both test accuracies every N steps, for the accuracy plot [default: about 50 points].
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
}

/// The weights of layer `layer` (1 to 3), drawn the same for both models.
fn weight(shape: [usize; 2], seed: u64, layer: u64) -> ad::Result<Node> {
    let init = TruncatedNormal::new(0.0, 0.01).with_seed(seed.wrapping_mul(16).wrapping_add(layer));
    ad::variable(&shape, init, true)
}

/// A batch-normalized hidden layer's variables.
struct BnLayer {
    weight: Node,
    scale: Node,
    offset: Node,
    moving_mean: Node,
    moving_variance: Node,
}

impl BnLayer {
    fn new(inputs: usize, seed: u64, layer: u64) -> ad::Result<Self> {
        Ok(BnLayer {
            weight: weight([inputs, HIDDEN], seed, layer)?,
            scale: ad::variable(&[HIDDEN], Ones, true)?,
            offset: ad::variable(&[HIDDEN], Zeros, true)?,
            moving_mean: ad::variable(&[HIDDEN], Zeros, false)?,
            moving_variance: ad::variable(&[HIDDEN], Ones, false)?,
        })
    }

    /// `sigmoid(batch_norm(x · W))`, in training or inference mode.
    fn apply(&self, x: &Node, is_training: bool) -> ad::Result<Node> {
        let config = BatchNormConfig {
            epsilon: EPSILON,
            decay: DECAY,
            is_training,
            ..Default::default()
        };
        let normalized = ad::fused_batch_norm(
            &ad::matmul(x, &self.weight)?,
            &self.scale,
            &self.offset,
            &self.moving_mean,
            &self.moving_variance,
            config,
        )?;
        ad::sigmoid(&normalized)
    }
}

/// A dense layer's variables: `x · W + b`.
struct Dense {
    weight: Node,
    bias: Node,
}

impl Dense {
    fn new(inputs: usize, outputs: usize, seed: u64, layer: u64) -> ad::Result<Self> {
        Ok(Dense {
            weight: weight([inputs, outputs], seed, layer)?,
            bias: ad::variable(&[outputs], Zeros, true)?,
        })
    }

    fn apply(&self, x: &Node) -> ad::Result<Node> {
        ad::add(&ad::matmul(x, &self.weight)?, &self.bias)
    }
}

/// The MLP with batch norm: its variables, built once, used by two sets of nodes.
struct BnMlp {
    hidden1: BnLayer,
    hidden2: BnLayer,
    output: Dense,
}

impl BnMlp {
    fn new(seed: u64) -> ad::Result<Self> {
        Ok(BnMlp {
            hidden1: BnLayer::new(PIXELS, seed, 1)?,
            hidden2: BnLayer::new(HIDDEN, seed, 2)?,
            output: Dense::new(HIDDEN, CLASSES, seed, 3)?,
        })
    }

    /// The logits, in training mode (batch statistics) or inference mode (moving statistics).
    fn logits(&self, x: &Node, is_training: bool) -> ad::Result<Node> {
        let h1 = self.hidden1.apply(x, is_training)?;
        let h2 = self.hidden2.apply(&h1, is_training)?;
        self.output.apply(&h2)
    }
}

/// The MLP without batch norm.
struct PlainMlp {
    hidden1: Dense,
    hidden2: Dense,
    output: Dense,
}

impl PlainMlp {
    fn new(seed: u64) -> ad::Result<Self> {
        Ok(PlainMlp {
            hidden1: Dense::new(PIXELS, HIDDEN, seed, 1)?,
            hidden2: Dense::new(HIDDEN, HIDDEN, seed, 2)?,
            output: Dense::new(HIDDEN, CLASSES, seed, 3)?,
        })
    }

    fn logits(&self, x: &Node) -> ad::Result<Node> {
        let h1 = ad::sigmoid(&self.hidden1.apply(x)?)?;
        let h2 = ad::sigmoid(&self.hidden2.apply(&h1)?)?;
        self.output.apply(&h2)
    }
}

/// The nodes of both models on one graph.
struct Models {
    x: Node,
    labels: Node,
    /// The batch-norm MLP in training mode.
    bn_logits: Node,
    /// The same variables in inference mode.
    bn_logits_inference: Node,
    plain_logits: Node,
    bn_loss: Node,
    plain_loss: Node,
    /// `bn_loss + plain_loss`, what the optimizer minimises.
    objective: Node,
}

/// Builds both models, their losses and the objective on `graph`.
fn build_models(graph: &Graph, seed: u64) -> ad::Result<Models> {
    let _default = graph.as_default();
    let x = ad::placeholder(ad::shape![None, PIXELS]);
    let labels = ad::placeholder(ad::shape![None, CLASSES]);
    let summed_cross_entropy = |logits: &Node| {
        ad::reduce_sum(
            &ad::softmax_cross_entropy_loss(&labels, logits)?,
            ad::Axes::All,
            false,
        )
    };

    let bn = BnMlp::new(seed)?;
    let bn_logits = bn.logits(&x, true)?;
    let bn_logits_inference = bn.logits(&x, false)?;
    let bn_loss = summed_cross_entropy(&bn_logits)?;

    let plain = PlainMlp::new(seed)?;
    let plain_logits = plain.logits(&x)?;
    let plain_loss = summed_cross_entropy(&plain_logits)?;

    let objective = ad::add(&bn_loss, &plain_loss)?;
    Ok(Models {
        x,
        labels,
        bn_logits,
        bn_logits_inference,
        plain_logits,
        bn_loss,
        plain_loss,
        objective,
    })
}

/// Test accuracy of the batch-norm MLP (inference mode) and of the plain MLP,
/// `EVAL_BATCH` examples per forward pass.
fn evaluate(rt: &mut RunTime, m: &Models, x: &Tensor, y: &Tensor) -> ad::Result<(f64, f64)> {
    let n = x.shape()[0];
    let (mut bn_hits, mut plain_hits) = (0.0, 0.0);
    for start in (0..n).step_by(EVAL_BATCH) {
        let rows = Slice::from(start..(start + EVAL_BATCH).min(n));
        let xb = x.slice_axis(Axis(0), rows).to_owned();
        let yb = y.slice_axis(Axis(0), rows).to_owned();
        let feed = Feed::new().with(&m.x, xb)?;
        let logits = rt.forward_backward_cycle(|rt| {
            rt.evaluate(&[&m.bn_logits_inference, &m.plain_logits], &feed)
        })?;
        let rows = yb.shape()[0] as f64;
        bn_hits += common::accuracy(&logits[0], &yb) * rows;
        plain_hits += common::accuracy(&logits[1], &yb) * rows;
    }
    let n = n.max(1) as f64;
    Ok((bn_hits / n, plain_hits / n))
}

/// One training step's measurements.
struct StepLog {
    bn_loss: f32,
    plain_loss: f32,
    bn_accuracy: f64,
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res {
    // This thread joins rayon's pool: no hand-off per parallel kernel.
    ad::init_thread_pool(None)?;
    ad::retain_freed_memory();
    let common = &args.common;
    let batch = common.batch.unwrap_or(DEFAULT_BATCH);
    if batch == 0 || args.eval_every == Some(0) {
        return Err("--batch and --eval-every must be at least 1".into());
    }

    // The data: flattened images in [0, 1] and one-hot labels.
    let data = common::load_mnist(common)?;
    let x_train = data.train_images.flat();
    let y_train = one_hot(&data.train_labels, CLASSES)?;
    let x_test = data.test_images.flat();
    let y_test = one_hot(&data.test_labels, CLASSES)?;
    let n_train = x_train.shape()[0];
    let steps = common.total_steps(n_train, batch, DEFAULT_EPOCHS);
    let eval_every = args.eval_every.unwrap_or((steps / 50).max(1));
    let epochs = |steps: usize| (steps * batch) as f64 / n_train.max(1) as f64;
    println!(
        "training: {steps} steps ({:.2} epochs), batch {batch}, gradient descent lr {LEARNING_RATE}{}, \
         both models on the same batches",
        epochs(steps),
        if args.constant_lr {
            ""
        } else {
            " decaying to 0 (cosine)"
        }
    );

    // One graph holds both models; one optimizer trains all their variables.
    let graph = Graph::with_seed(common.seed);
    let models = build_models(&graph, common.seed)?;
    let mut optimizer = GradientDescent::new(LEARNING_RATE);
    if !args.constant_lr {
        optimizer = optimizer.schedule(Schedule::Cosine {
            initial: LEARNING_RATE,
            minimum: 0.0,
            total_steps: steps as u64,
        });
    }
    let mut state: TrainState = common::resume(common, &graph, &mut optimizer)?;
    let mut batches = Batches::new(x_train, y_train, batch, common.seed)?;
    batches.seek(state.position)?;

    // Training.
    let mut rt = RunTime::new();
    state.restore_rng(&mut rt);
    let mut logs = Vec::new();
    let (mut bn_test, mut plain_test) = (Vec::new(), Vec::new());
    let mut progress = Progress::new(steps.saturating_sub(state.step));
    let started = Instant::now();
    while state.step < steps {
        let (xb, yb) = batches
            .next_batch()
            .ok_or("the training set yields no batch")?;
        let feed = Feed::new()
            .with(&models.x, xb)?
            .with(&models.labels, yb.clone())?;
        let log = rt.forward_backward_cycle(|rt| -> ad::Result<StepLog> {
            optimizer.optimize(rt, &models.objective, &feed, None)?;
            Ok(StepLog {
                bn_loss: rt.value(&models.bn_loss)?.sum(),
                plain_loss: rt.value(&models.plain_loss)?.sum(),
                bn_accuracy: common::accuracy(rt.value(&models.bn_logits)?, &yb),
            })
        })?;
        state.step += 1;
        state.position = batches.position();
        progress.step(
            f64::from(log.bn_loss) / yb.shape()[0] as f64,
            Some(log.bn_accuracy),
        );
        logs.push((state.step, log));
        if state.step.is_multiple_of(eval_every) || state.step == steps {
            let (bn, plain) = evaluate(&mut rt, &models, &x_test, &y_test)?;
            bn_test.push((state.step as f64, bn));
            plain_test.push((state.step as f64, plain));
            progress.println(format!(
                "step {}: test accuracy with batch norm {bn:.4}, without {plain:.4}",
                state.step
            ));
        }
        common::maybe_save(common, &graph, &optimizer, &rt, state, steps)?;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    progress.finish();

    // Evaluation (the batch-norm model in inference mode).
    let (bn_accuracy, plain_accuracy) = evaluate(&mut rt, &models, &x_test, &y_test)?;
    let (bn_final, plain_final) = logs
        .last()
        .map_or((f32::NAN, f32::NAN), |(_, l)| (l.bn_loss, l.plain_loss));
    common::report(&[
        ("steps", state.step.to_string()),
        ("batch", batch.to_string()),
        ("epochs", format!("{:.2}", epochs(state.step))),
        ("bn_final_loss", bn_final.to_string()),
        ("plain_final_loss", plain_final.to_string()),
        ("final_loss", (bn_final + plain_final).to_string()),
        ("bn_test_accuracy", format!("{bn_accuracy:.4}")),
        ("plain_test_accuracy", format!("{plain_accuracy:.4}")),
        ("train_seconds", format!("{train_seconds:.2}")),
    ]);

    // Pictures.
    let out = common.out_dir("batch_norm")?;
    let block = (logs.len() / 200).max(1);
    let per_example = |f: fn(&StepLog) -> f32| {
        block_means(
            logs.iter()
                .map(|(s, l)| (*s as f64, f64::from(f(l)) / batch as f64)),
            block,
        )
    };
    common::plot_lines(
        &out.join("loss.png"),
        &format!("training loss per example (mean of each {block} steps)"),
        "step",
        "softmax cross-entropy",
        &[
            Series::new("with batch norm", per_example(|l| l.bn_loss)),
            Series::new("without batch norm", per_example(|l| l.plain_loss)),
        ],
    )?;
    common::plot_lines(
        &out.join("accuracy.png"),
        "test accuracy (batch norm in inference mode)",
        "step",
        "test accuracy",
        &[
            Series::new("with batch norm", bn_test),
            Series::new("without batch norm", plain_test),
        ],
    )?;
    println!("pictures: {}", out.display());
    Ok(())
}

/// The mean of each block of `block` consecutive points, placed at the block's last x.
fn block_means(points: impl Iterator<Item = (f64, f64)>, block: usize) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = points.collect();
    points
        .chunks(block.max(1))
        .map(|chunk| {
            let x = chunk.last().map_or(0.0, |p| p.0);
            let y = chunk.iter().map(|p| p.1).sum::<f64>() / chunk.len() as f64;
            (x, y)
        })
        .collect()
}
