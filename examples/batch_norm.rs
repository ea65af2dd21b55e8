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
//! `train_seconds` (evaluations excluded). Draws to `--out` (default
//! `out/batch_norm/`): `loss.png` (both training losses per example, averaged
//! over blocks of steps) and `accuracy.png` (both test accuracies every
//! `--eval-every` steps).

mod common;

use adgraph::data::Batches;
use adgraph::init::{Ones, TruncatedNormal, Zeros};
use adgraph::optim::GradientDescent;
use adgraph::train::{plot_lines, report, window_means, Series, StepOutput, Trainer};
use adgraph::{self as ad, BatchNormConfig, Feed, Graph, Node, RunTime, Tensor};
use clap::Parser;
use common::{CommonArgs, Res};

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
    let accuracy = common::batched_accuracy(x, y, EVAL_BATCH, |xb| {
        let feed = Feed::new().with(&m.x, xb)?;
        rt.forward_backward_cycle(|rt| {
            rt.evaluate(&[&m.bn_logits_inference, &m.plain_logits], &feed)
        })
    })?;
    Ok((accuracy[0], accuracy[1]))
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res {
    common::init()?;
    let common = &args.common;
    // Its objective is a sum over the batch (the original's), which averaged
    // gradients would scale by 1/ranks: it trains on one process.
    common.single_process_only("batch_norm")?;
    let batch = common.batch.unwrap_or(DEFAULT_BATCH);
    if batch == 0 || args.eval_every == Some(0) {
        return Err("--batch and --eval-every must be at least 1".into());
    }

    // The data: flattened images in [0, 1] and one-hot labels.
    let data = common::Flat::of(&common::load_mnist(common)?, CLASSES)?;
    let n_train = data.x_train.shape()[0];
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
    let m = build_models(&graph, common.seed)?;
    let schedule = common::lr_schedule(args.constant_lr, LEARNING_RATE, steps);
    let mut trainer = common.checkpointing(
        Trainer::new(&graph)
            .optimizer(GradientDescent::new(LEARNING_RATE).schedule(schedule))
            .data(Batches::new(
                data.x_train,
                data.y_train,
                batch,
                common.seed,
            )?)
            .steps(steps)
            .eval_every(eval_every),
    )?;

    // Training; both test accuracies every --eval-every steps and at the end.
    let summary = trainer.run_with_eval(
        |s| {
            let (xb, yb) = s.next_batch()?;
            let feed = Feed::new().with(&m.x, xb)?.with(&m.labels, yb.clone())?;
            let (_, (bn_loss, plain_loss, bn_accuracy)) =
                s.minimize_with(&m.objective, &feed, |rt| {
                    Ok((
                        rt.value(&m.bn_loss)?.sum(),
                        rt.value(&m.plain_loss)?.sum(),
                        common::accuracy(rt.value(&m.bn_logits)?, &yb),
                    ))
                })?;
            // The bar shows the batch-norm model's loss per example.
            Ok(StepOutput::new(bn_loss / yb.shape()[0] as f32)
                .metric("bn_loss", f64::from(bn_loss))
                .metric("plain_loss", f64::from(plain_loss))
                .show("acc", bn_accuracy))
        },
        |e| {
            let (bn, plain) = evaluate(e.rt, &m, &data.x_test, &data.y_test)?;
            e.record("bn", bn);
            e.record("plain", plain);
            e.println(format!(
                "step {}: test accuracy with batch norm {bn:.4}, without {plain:.4}",
                e.step()
            ));
            Ok(())
        },
    )?;

    // Results: the last evaluation is the trained models' (batch norm in inference mode).
    let history = &summary.history;
    let last = |curve: &[(f64, f64)]| curve.last().map_or(f64::NAN, |p| p.1);
    let loss = |name| summary.last.as_ref().and_then(|o| o.get(name));
    let bn_final = loss("bn_loss").map_or(f32::NAN, |v| v as f32);
    let plain_final = loss("plain_loss").map_or(f32::NAN, |v| v as f32);
    report(&[
        ("steps", summary.step.to_string()),
        ("batch", batch.to_string()),
        ("epochs", format!("{:.2}", epochs(summary.step))),
        ("bn_final_loss", bn_final.to_string()),
        ("plain_final_loss", plain_final.to_string()),
        ("final_loss", (bn_final + plain_final).to_string()),
        (
            "bn_test_accuracy",
            format!("{:.4}", last(history.eval("bn"))),
        ),
        (
            "plain_test_accuracy",
            format!("{:.4}", last(history.eval("plain"))),
        ),
        ("train_seconds", format!("{:.2}", summary.train_seconds)),
    ]);

    // Pictures.
    let out = common.out_dir("batch_norm")?;
    let block = (history.loss().len() / 200).max(1);
    let per_example = |name| {
        let points: Vec<(f64, f64)> = history
            .metric(name)
            .iter()
            .map(|&(step, loss)| (step, loss / batch as f64))
            .collect();
        window_means(&points, block)
    };
    plot_lines(
        &out.join("loss.png"),
        &format!("training loss per example (mean of each {block} steps)"),
        "step",
        "softmax cross-entropy",
        &[
            Series::new("with batch norm", per_example("bn_loss")),
            Series::new("without batch norm", per_example("plain_loss")),
        ],
    )?;
    plot_lines(
        &out.join("accuracy.png"),
        "test accuracy (batch norm in inference mode)",
        "step",
        "test accuracy",
        &[
            Series::new("with batch norm", history.eval("bn").to_vec()),
            Series::new("without batch norm", history.eval("plain").to_vec()),
        ],
    )?;
    println!("pictures: {}", out.display());
    Ok(())
}
