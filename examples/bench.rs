//! The workload benchmark: the original framework's six demo models as training
//! steps, timed, printed in the same form as the PyTorch peer script so the two
//! can be compared as a ratio.
//!
//! One **step** is forward + backward + parameter update on one fixed batch
//! (W4inf: forward only). The workloads (`../shared/bench/README.md` defines
//! them; `../shared/bench/torch_workloads.py` is the same set in PyTorch):
//!
//! | id    | model                                                           | batch | loss / optimizer                      |
//! |-------|-----------------------------------------------------------------|-------|---------------------------------------|
//! | W1    | spiral MLP 2-50-50-3, relu                                       | 300   | mean softmax CE + 1e-3 l2norm per weight / GD 0.1 |
//! | W2    | logistic regression 784→10                                       | 100   | mean softmax CE + 1e-3 l2norm / GD 0.5 |
//! | W3    | MLP 784-100-100-10, matmul → batch norm → sigmoid (twice)        | 50    | summed softmax CE / GD 0.01           |
//! | W4    | conv net: 5 × (3×3 SAME conv → batch norm → relu), mean pool, dense | 50 | mean softmax CE / Adam 1e-3           |
//! | W4inf | W4 in inference mode (moving statistics), forward only           | 256   | —                                     |
//! | W5    | DCGAN: a D step on 250 real + 250 generated images, then a G step | 250(+250) | sigmoid CE / Adam 1e-4 on both |
//! | W6    | conv VAE, latent 2                                               | 32    | −mean(ELBO) / Adam 1e-4               |
//! | W7    | character transformer (2 pre-LN blocks, 4 causal heads, d 64)    | 64×16 | mean sparse softmax CE / AdamW 1e-3   |
//! | W8    | character LSTM: embedding 27→32, LSTM 128 × 16 steps, dense 128→27 | 64 × 16 | mean sparse softmax CE / Adam 2e-3 |
//!
//! Each workload is timed for `--steps` steps (50) after `--warmup` untimed ones
//! (10), each step on its own clock; a slow workload (W5) stops its warm-up
//! after 10 seconds and its timing after `--budget` seconds (60), but times at
//! least 20 steps. Each prints one line:
//!
//! ```text
//! W4 adgraph step_ms_median=12.345 steps_per_s=81.00 gflops=314.3 n=50 min_ms=12.001 foreign_cpu=3% batch 50 threads=2
//! ```
//!
//! `gflops` is the workload's matmul/convolution work per step (forward and
//! backward, the figures of the shared README's table) over the median step
//! time; W4inf adds `images_per_s`. `foreign_cpu` is the CPU that *other*
//! processes used during the timed steps, as a share of all cores (from
//! `/proc/stat`; absent elsewhere): figures taken while it is high are noise.
//!
//! Compare with PyTorch by running both back to back on an idle machine and
//! dividing the medians:
//!
//! ```text
//! /tmp/torch-venv/bin/python ../shared/bench/torch_workloads.py --only W1,W2,W3,W4,W4inf,W5,W6
//! cargo run --release --example bench
//! cargo run --release --example bench -- --only W4 --profile
//! ```
//!
//! Data: the embedded Fashion-MNIST slice, or the full set with `--data DIR`;
//! W1 uses the spiral data set. Timings do not depend on which images are used.
//! Layouts differ (adgraph is NHWC, torch NCHW) but the work is the same.
//! `--profile` then runs up to ten more steps with the run-time profiler on and
//! prints the ten nodes with the most time (`ADGRAPH_PROFILE_TOP=N` in the
//! environment: N of them) and the time per op type (the timed
//! steps are not profiled, so the profiler's overhead does not reach them; the
//! optimizer's update is not a node, so it is not in the profile).
//! `--threads N` sizes rayon's global pool (default: one thread per core); the
//! thread running the steps is one of them (`adgraph::init_thread_pool`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use adgraph::data::words::{token_stream, windows, Words, VOCAB};
use adgraph::data::{one_hot, spiral, train_test_split, Batches, Mnist};
use adgraph::init::{FromTensor, GlorotUniform, Ones, RandomUniform, TruncatedNormal, Zeros};
use adgraph::layers::Lstm;
use adgraph::optim::{Adam, AdamW, GradientDescent, Optimizer};
use adgraph::{
    self as ad, shape, Axes, BatchNormActivation, BatchNormConfig, Feed, Graph, Initializer, Node,
    Padding, RunTime, Tensor,
};
use clap::Parser;
use common::Res;
use ndarray::{concatenate, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use BatchNormActivation::{Identity, LeakyRelu, Relu};

/// Every workload, in the order they run.
const ALL: [&str; 9] = ["W1", "W2", "W3", "W4", "W4inf", "W5", "W6", "W7", "W8"];
/// Seed of the weights, the batch choice, the noise and the dropout masks.
const SEED: u64 = 0;
/// Fashion-MNIST classes.
const CLASSES: usize = 10;
/// Timed steps taken even past `--budget` (the benchmark's rule: a median of at least 20).
const MIN_STEPS: usize = 20;
/// Warm-up time after which the warm-up stops early (the slow workloads are warm after one step).
const WARMUP_LIMIT: Duration = Duration::from_secs(10);

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    about = "Times a training step of each of the original framework's demo models \
             (workloads W1-W6 of ../shared/bench/README.md) and prints one line per workload, \
             in the form of the PyTorch peer script's."
)]
struct Args {
    /// Comma-separated workloads to run, of W1,W2,W3,W4,W4inf,W5,W6,W7,W8.
    #[arg(long, default_value = "W1,W2,W3,W4,W4inf,W5,W6", value_name = "IDS")]
    only: String,
    /// Timed steps per workload (fewer, but at least 20, when they exceed --budget).
    #[arg(long, default_value_t = 50, value_name = "N")]
    steps: usize,
    /// Untimed steps before the timed ones (fewer, but at least one, once they
    /// have taken 10 seconds).
    #[arg(long, default_value_t = 10, value_name = "N")]
    warmup: usize,
    /// Seconds of timed steps per workload after which the timing stops, once
    /// 20 steps (or --steps, if fewer) are done.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    budget: f64,
    /// Folder with the four MNIST-format files (e.g. /usr/share/datasets/fashion-mnist).
    /// Without it, the Fashion-MNIST slice shipped in data/fashion-mnist is used.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// After timing, profile some more steps and print the top ops.
    #[arg(long)]
    profile: bool,
    /// Threads of rayon's global pool (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// One step of a workload in the given run time; returns the step's scalar result.
type StepFn = Box<dyn FnMut(&mut RunTime) -> ad::Result<f32>>;

/// A workload ready to run: its state lives in the closure, which runs one
/// step in the given run time and returns a scalar of the step's result (the
/// loss; for inference, the sum of the logits) to check it is finite.
struct Prepared {
    step: StepFn,
    /// What the step is, for the result line.
    note: String,
}

/// The static facts of a workload.
struct Spec {
    id: &'static str,
    /// Matmul/convolution GFLOP per step (the shared README's table).
    gflop: f64,
    /// Images per step, for `images_per_s` (inference only, as the torch script).
    images: Option<usize>,
    build: fn(&Mnist) -> Res<Prepared>,
}

const SPECS: [Spec; 9] = [
    Spec {
        id: "W1",
        gflop: 0.005,
        images: None,
        build: w1,
    },
    Spec {
        id: "W2",
        gflop: 0.003,
        images: None,
        build: w2,
    },
    Spec {
        id: "W3",
        gflop: 0.019,
        images: None,
        build: w3,
    },
    Spec {
        id: "W4",
        gflop: 3.88,
        images: None,
        build: w4,
    },
    Spec {
        id: "W4inf",
        gflop: 6.64,
        images: Some(W4INF_BATCH),
        build: w4inf,
    },
    Spec {
        id: "W5",
        gflop: 154.0,
        images: None,
        build: w5,
    },
    Spec {
        id: "W6",
        gflop: 1.05,
        images: None,
        build: w6,
    },
    Spec {
        id: "W7",
        gflop: 0.640,
        images: None,
        build: w7,
    },
    Spec {
        id: "W8",
        gflop: 0.525,
        images: None,
        build: w8,
    },
];

fn main() -> std::process::ExitCode {
    common::exit_code(run(Args::parse()))
}

fn run(args: Args) -> Res {
    let wanted: Vec<&str> = args.only.split(',').map(str::trim).collect();
    if let Some(bad) = wanted.iter().find(|w| !ALL.contains(w)) {
        return Err(format!(
            "--only: unknown workload {bad:?} (known: {})",
            ALL.join(",")
        )
        .into());
    }
    if args.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if !(args.budget.is_finite() && args.budget >= 0.0) {
        return Err(format!("--budget must be a number of seconds, got {}", args.budget).into());
    }
    // This thread joins rayon's pool (see adgraph::init_thread_pool).
    ad::init_thread_pool(args.threads).map_err(|e| format!("--threads: {e}"))?;
    // Steps reuse the memory the previous step freed (see adgraph::memory).
    ad::retain_freed_memory();
    let data = match &args.data {
        Some(dir) => Mnist::load(dir).map_err(|e| format!("--data {}: {e}", dir.display()))?,
        None => Mnist::embedded()?,
    };
    println!(
        "data: {} ({} train, {} test images); warmup={} steps={} threads={}",
        args.data.as_ref().map_or_else(
            || "the embedded Fashion-MNIST slice".to_string(),
            |d| d.display().to_string()
        ),
        data.train_images.len(),
        data.test_images.len(),
        args.warmup,
        args.steps,
        rayon::current_num_threads()
    );
    for spec in SPECS.iter().filter(|s| wanted.contains(&s.id)) {
        let mut prepared = (spec.build)(&data).map_err(|e| format!("{}: {e}", spec.id))?;
        let mut rt = RunTime::with_seed(SEED);
        let check = |v: f32, when: &str| -> Res {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{}: the step's result is {v} {when}", spec.id).into())
            }
        };
        let warm_start = Instant::now();
        for _ in 0..args.warmup {
            check((prepared.step)(&mut rt)?, "during warm-up")?;
            if warm_start.elapsed() > WARMUP_LIMIT {
                break;
            }
        }
        let cpu = CpuSample::now();
        let mut times = Vec::with_capacity(args.steps);
        let mut last = 0.0;
        let timed_start = Instant::now();
        while times.len() < args.steps {
            let t0 = Instant::now();
            last = (prepared.step)(&mut rt)?;
            times.push(t0.elapsed());
            if times.len() >= MIN_STEPS && timed_start.elapsed().as_secs_f64() > args.budget {
                break;
            }
        }
        let foreign = cpu.and_then(|c| c.foreign_share());
        check(last, "after the timed steps")?;
        println!("{}", result_line(spec, &mut times, foreign, &prepared.note));

        if args.profile {
            let steps = args.steps.min(10);
            rt.enable_profiling(true);
            for _ in 0..steps {
                (prepared.step)(&mut rt)?;
            }
            let profile = rt.profile().ok_or("the profiler did not record")?;
            println!(
                "{} profile over {steps} steps:\n{}",
                spec.id,
                profile.top(
                    std::env::var("ADGRAPH_PROFILE_TOP")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10)
                )
            );
            let total = profile.total().as_secs_f64().max(1e-12);
            let per_type: Vec<String> = profile
                .by_op_type()
                .iter()
                .map(|(op, d)| format!("{op} {:.1}%", 100.0 * d.as_secs_f64() / total))
                .collect();
            println!(
                "{} per op type: {} total_ms_per_step={:.3}",
                spec.id,
                per_type.join(", "),
                1e3 * total / steps as f64
            );
            rt.enable_profiling(false);
        }
    }
    Ok(())
}

/// The result line, in the torch script's form plus `gflops=`.
fn result_line(spec: &Spec, times: &mut [Duration], foreign: Option<f64>, note: &str) -> String {
    times.sort();
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2].as_secs_f64()
    } else {
        (times[n / 2 - 1] + times[n / 2]).as_secs_f64() / 2.0
    };
    let mut line = format!(
        "{} adgraph step_ms_median={:.3} steps_per_s={:.2} gflops={:.1} n={n} min_ms={:.3}",
        spec.id,
        median * 1e3,
        1.0 / median,
        spec.gflop / median,
        times[0].as_secs_f64() * 1e3
    );
    if let Some(images) = spec.images {
        line += &format!(" images_per_s={:.1}", images as f64 / median);
    }
    if let Some(f) = foreign {
        line += &format!(" foreign_cpu={f:.0}%");
    }
    line + &format!(" {note} threads={}", rayon::current_num_threads())
}

/// CPU time counters at one moment: the machine's (all cores) and this
/// process's, in clock ticks, read from `/proc` (Linux only).
struct CpuSample {
    machine_busy: u64,
    machine_total: u64,
    own: u64,
}

impl CpuSample {
    fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal
        let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
        let machine_total: u64 = ticks.iter().sum();
        // /proc/self/stat: utime and stime are fields 14 and 15; the command
        // name (field 2) may hold spaces, so count from its closing parenthesis.
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = own_stat.get(own_stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(CpuSample {
            machine_busy: machine_total - idle,
            machine_total,
            own,
        })
    }

    /// The percentage of all cores' time since `self` that other processes used.
    fn foreign_share(&self) -> Option<f64> {
        let now = CpuSample::now()?;
        let total = now.machine_total.checked_sub(self.machine_total)?;
        if total == 0 {
            return None;
        }
        let busy = now.machine_busy.saturating_sub(self.machine_busy);
        let own = now.own.saturating_sub(self.own);
        Some(100.0 * busy.saturating_sub(own) as f64 / total as f64)
    }
}

// ------------------------------------------------------------------ helpers

/// One fixed batch of `n` rows of `x` with their `y`, chosen at random (seeded).
fn fixed_batch(x: Tensor, y: Tensor, n: usize) -> Res<(Tensor, Tensor)> {
    let available = x.shape()[0];
    if available < n {
        return Err(format!("the data has {available} images, the workload needs {n}").into());
    }
    Ok(Batches::new(x, y, n, SEED)?
        .next_batch()
        .ok_or("no batch drawn")?)
}

/// `n` training images as `[n, 784]` and their one-hot labels.
fn flat_batch(data: &Mnist, n: usize) -> Res<(Tensor, Tensor)> {
    fixed_batch(
        data.train_images.flat(),
        one_hot(&data.train_labels, CLASSES)?,
        n,
    )
}

/// `n` training images as `[n, 28, 28, 1]` and their one-hot labels.
fn image_batch(data: &Mnist, n: usize) -> Res<(Tensor, Tensor)> {
    fixed_batch(
        data.train_images.nhwc(),
        one_hot(&data.train_labels, CLASSES)?,
        n,
    )
}

/// A training step: backward from `loss`, then `optimizer` updates all
/// trainable variables. Gradients stop at the data placeholders `data`, as no
/// gradient is wanted for them.
fn train_step(
    loss: Node,
    feed: Feed,
    mut optimizer: impl Optimizer + 'static,
    data: &[&Node],
    note: String,
) -> Prepared {
    let data: Vec<Node> = data.iter().map(|n| (*n).clone()).collect();
    let mut stopped = false;
    Prepared {
        step: Box::new(move |rt| {
            if !stopped {
                rt.stop_gradients_at(&data.iter().collect::<Vec<_>>());
                stopped = true;
            }
            rt.forward_backward_cycle(|rt| {
                optimizer.optimize(rt, &loss, &feed, None)?;
                Ok(rt.value(&loss)?.sum())
            })
        }),
        note,
    }
}

/// `matmul(x, w)` for a new trainable `w` of `[inputs, outputs]`.
fn dense(
    g: &Graph,
    x: &Node,
    inputs: usize,
    outputs: usize,
    init: impl Initializer + 'static,
) -> Res<(Node, Node)> {
    let w = g.variable(&[inputs, outputs], init, true)?;
    Ok((ad::matmul(x, &w)?, w))
}

/// `x + b` for a new trainable bias `b` of `[n]` (zeros).
fn bias(g: &Graph, x: &Node, n: usize) -> Res<Node> {
    Ok(ad::add(x, &g.variable(&[n], Zeros, true)?)?)
}

/// Batch normalisation over the last dim (`c` channels) with new variables:
/// scale 1, offset 0 (trainable), moving mean 0 and variance 1.
fn batch_norm(
    g: &Graph,
    x: &Node,
    c: usize,
    decay: f32,
    training: bool,
    activation: BatchNormActivation,
) -> Res<Node> {
    let config = BatchNormConfig {
        epsilon: 1e-3,
        decay,
        is_training: training,
        activation,
    };
    Ok(ad::fused_batch_norm(
        x,
        &g.variable(&[c], Ones, true)?,
        &g.variable(&[c], Zeros, true)?,
        &g.variable(&[c], Zeros, false)?,
        &g.variable(&[c], Ones, false)?,
        config,
    )?)
}

/// The mean of the softmax cross-entropy of `logits` against one-hot `labels`.
fn mean_softmax_ce(labels: &Node, logits: &Node) -> Res<Node> {
    Ok(ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(labels, logits)?,
        Axes::All,
        false,
    )?)
}

/// `n` standard-normal rows of `dim` values, seeded.
fn normal(n: usize, dim: usize) -> Res<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let values = (0..n * dim)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Tensor::from_shape_vec(vec![n, dim], values)?)
}

// ------------------------------------------------------------------ W1-W3

/// W1: the spiral MLP, full batch of 300 points, GD 0.1 with an L2 penalty on each weight.
fn w1(_: &Mnist) -> Res<Prepared> {
    let (x_all, y_all) = spiral(150, 3, SEED)?;
    let split = train_test_split(&x_all, &y_all, 1.0 / 3.0, SEED)?;
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 2]);
    let y = g.placeholder(shape![None, 3]);
    let init = TruncatedNormal::new(0.0, 0.01);
    let (h, w1) = dense(&g, &x, 2, 50, init)?;
    let h = ad::relu(&bias(&g, &h, 50)?)?;
    let (h, w2) = dense(&g, &h, 50, 50, init)?;
    let h = ad::relu(&bias(&g, &h, 50)?)?;
    let (h, w3) = dense(&g, &h, 50, 3, init)?;
    let logits = bias(&g, &h, 3)?;
    let mut loss = mean_softmax_ce(&y, &logits)?;
    for w in [&w1, &w2, &w3] {
        loss = ad::add(&loss, &ad::l2norm(w, 1e-3)?)?;
    }
    let n = split.x_train.shape()[0];
    let feed = Feed::new()
        .with(&x, split.x_train)?
        .with(&y, split.y_train)?;
    Ok(train_step(
        loss,
        feed,
        GradientDescent::new(0.1),
        &[&x, &y],
        format!("full batch {n}"),
    ))
}

/// W2: logistic regression on a batch of 100 images, GD 0.5 with an L2 penalty.
fn w2(data: &Mnist) -> Res<Prepared> {
    let (xb, yb) = flat_batch(data, 100)?;
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 784]);
    let y = g.placeholder(shape![None, CLASSES]);
    let (h, w) = dense(&g, &x, 784, CLASSES, TruncatedNormal::new(0.0, 0.01))?;
    let logits = bias(&g, &h, CLASSES)?;
    let loss = ad::add(&mean_softmax_ce(&y, &logits)?, &ad::l2norm(&w, 1e-3)?)?;
    let feed = Feed::new().with(&x, xb)?.with(&y, yb)?;
    Ok(train_step(
        loss,
        feed,
        GradientDescent::new(0.5),
        &[&x, &y],
        "batch 100".into(),
    ))
}

/// W3: the batch-norm MLP on a batch of 50 images; the loss is the per-example
/// cross-entropy summed (the notebook backpropagates from the vector), GD 0.01.
fn w3(data: &Mnist) -> Res<Prepared> {
    let (xb, yb) = flat_batch(data, 50)?;
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 784]);
    let y = g.placeholder(shape![None, CLASSES]);
    let init = TruncatedNormal::new(0.0, 0.01);
    let mut h = x.clone();
    let mut inputs = 784;
    for _ in 0..2 {
        let (m, _) = dense(&g, &h, inputs, 100, init)?;
        h = ad::sigmoid(&batch_norm(&g, &m, 100, 0.997, true, Identity)?)?;
        inputs = 100;
    }
    let (m, _) = dense(&g, &h, 100, CLASSES, init)?;
    let logits = bias(&g, &m, CLASSES)?;
    let loss = ad::reduce_sum(
        &ad::softmax_cross_entropy_loss(&y, &logits)?,
        Axes::All,
        false,
    )?;
    let feed = Feed::new().with(&x, xb)?.with(&y, yb)?;
    Ok(train_step(
        loss,
        feed,
        GradientDescent::new(0.01),
        &[&x, &y],
        "batch 50, CE sum".into(),
    ))
}

// ------------------------------------------------------------------ W4

/// Output channels and stride of each convolution of the conv net.
const CONV_LAYERS: [(usize, usize); 5] = [(16, 1), (32, 2), (64, 1), (128, 2), (256, 2)];
/// Images per W4inf step.
const W4INF_BATCH: usize = 256;

/// The conv net's logits for images `x`: batch norm on batch statistics (and
/// moving-statistics updates, decay 0.9) when `training`, on the moving ones otherwise.
fn conv_net(g: &Graph, x: &Node, training: bool) -> Res<Node> {
    let init = TruncatedNormal::new(0.0, 0.01);
    let mut h = x.clone();
    let mut cin = 1;
    for (cout, stride) in CONV_LAYERS {
        let kernel = g.variable(&[3, 3, cin, cout], init, true)?;
        let conv = ad::conv2d(&h, &kernel, [stride, stride], Padding::Same)?;
        h = batch_norm(g, &conv, cout, 0.9, training, Relu)?;
        cin = cout;
    }
    let pooled = ad::reduce_mean(&h, [1, 2], false)?;
    let (m, _) = dense(g, &pooled, cin, CLASSES, init)?;
    bias(g, &m, CLASSES)
}

/// W4: the conv net training on a batch of 50 images, Adam 1e-3.
fn w4(data: &Mnist) -> Res<Prepared> {
    let (xb, yb) = image_batch(data, 50)?;
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 28, 28, 1]);
    let y = g.placeholder(shape![None, CLASSES]);
    let loss = mean_softmax_ce(&y, &conv_net(&g, &x, true)?)?;
    let feed = Feed::new().with(&x, xb)?.with(&y, yb)?;
    let adam = Adam::new(1e-3).beta1(0.9).beta2(0.999).epsilon(1e-8);
    Ok(train_step(loss, feed, adam, &[&x, &y], "batch 50".into()))
}

/// W4inf: the conv net in inference mode on the first 256 test images.
fn w4inf(data: &Mnist) -> Res<Prepared> {
    let images = data.test_images.nhwc();
    if images.shape()[0] < W4INF_BATCH {
        return Err(format!(
            "the data has {} test images, W4inf needs {W4INF_BATCH}",
            images.shape()[0]
        )
        .into());
    }
    let xb = images
        .slice_axis(Axis(0), (0..W4INF_BATCH).into())
        .to_owned();
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 28, 28, 1]);
    let logits = conv_net(&g, &x, false)?;
    let feed = Feed::new().with(&x, xb)?;
    Ok(Prepared {
        step: Box::new(move |rt| {
            rt.forward_backward_cycle(|rt| Ok(rt.infer(&[&logits], &feed)?[0].sum()))
        }),
        note: format!("batch {W4INF_BATCH} eval mode"),
    })
}

// ------------------------------------------------------------------ W5

/// Images per W5 batch (real, and as many generated).
const W5_BATCH: usize = 250;
/// Slope of W5's leaky relus for negative inputs.
const LEAK: f32 = 0.3;

/// The DCGAN generator on noise `z` `[n, 100]`, in training mode (batch norm
/// decay 0.999); weights uniform in ±1e-4 as the notebook. Returns the images
/// `[n, 28, 28, 1]` and the trainable variables.
fn generator(g: &Graph, z: &Node) -> Res<(Node, Vec<Node>)> {
    let init = RandomUniform::new(-1e-4, 1e-4);
    let before = g.variables(true).len();
    let (h, _) = dense(g, z, 100, 7 * 7 * 256, init)?;
    let h = batch_norm(g, &h, 7 * 7 * 256, 0.999, true, LeakyRelu(LEAK))?;
    let mut h = ad::reshape(&h, &[-1, 7, 7, 256])?;
    let mut cin = 256;
    for (cout, stride) in [(128, 1), (64, 2)] {
        let kernel = g.variable(&[5, 5, cout, cin], init, true)?;
        let t = ad::conv2d_transpose(&h, &kernel, [stride, stride], Padding::Same)?;
        h = batch_norm(g, &t, cout, 0.999, true, LeakyRelu(LEAK))?;
        cin = cout;
    }
    let kernel = g.variable(&[5, 5, 1, cin], init, true)?;
    let images = ad::tanh(&ad::conv2d_transpose(&h, &kernel, [2, 2], Padding::Same)?)?;
    Ok((images, g.variables(true)[before..].to_vec()))
}

/// The DCGAN discriminator's logits `[n, 1]` for images `[n, 28, 28, 1]`
/// (dropout 0.3 on), and its trainable variables.
fn discriminator(g: &Graph, images: &Node) -> Res<(Node, Vec<Node>)> {
    let init = RandomUniform::new(-1e-4, 1e-4);
    let before = g.variables(true).len();
    let mut h = images.clone();
    let mut cin = 1;
    for cout in [64, 128] {
        let kernel = g.variable(&[5, 5, cin, cout], init, true)?;
        let conv = bias(g, &ad::conv2d(&h, &kernel, [2, 2], Padding::Same)?, cout)?;
        h = ad::dropout(&ad::leaky_relu(&conv, LEAK)?, 0.3, true)?;
        cin = cout;
    }
    let flat = ad::reshape(&h, &[-1, 7 * 7 * 128])?;
    let (m, _) = dense(g, &flat, 7 * 7 * 128, 1, init)?;
    Ok((bias(g, &m, 1)?, g.variables(true)[before..].to_vec()))
}

/// W5: one DCGAN step as the torch script takes it. D step: G's images (no
/// gradient into G) and 250 real ones through D, gradient of D's loss w.r.t.
/// D's variables. G step: the same graph run again (a new G forward and D
/// forward on all 500 images), gradient of the loss of the generated half
/// labelled real w.r.t. G's variables. One Adam (1e-4) applies both.
fn w5(data: &Mnist) -> Res<Prepared> {
    let (real, _) = fixed_batch(
        data.train_images.nhwc().mapv(|v| v * 2.0 - 1.0),
        Tensor::zeros(vec![data.train_images.len(), 1]),
        W5_BATCH,
    )?;
    let g = Graph::with_seed(SEED);
    let z = g.placeholder(shape![None, 100]);
    let real_in = g.placeholder(shape![None, 28, 28, 1]);
    let labels = g.placeholder(shape![None, 1]);
    let fake_labels = g.placeholder(shape![None, 1]);
    let (fake, g_vars) = generator(&g, &z)?;
    let both = ad::concat(&[&real_in, &fake], 0)?;
    let (logits, d_vars) = discriminator(&g, &both)?;
    let d_loss = ad::reduce_mean(
        &ad::sigmoid_cross_entropy_loss(&labels, &logits)?,
        Axes::All,
        false,
    )?;
    let fake_logits = ad::slice(&logits, &[W5_BATCH, 0], &[-1, -1])?;
    let g_loss = ad::reduce_mean(
        &ad::sigmoid_cross_entropy_loss(&fake_labels, &fake_logits)?,
        Axes::All,
        false,
    )?;
    let ones = ad::tensor::full(&[W5_BATCH, 1], 1.0);
    let feed = Feed::new()
        .with(&z, normal(W5_BATCH, 100)?)?
        .with(&real_in, real)?
        .with(
            &labels,
            concatenate![Axis(0), ones, Tensor::zeros(vec![W5_BATCH, 1])],
        )?
        .with(&fake_labels, ones.clone())?;
    let mut adam = Adam::new(1e-4).beta1(0.9).beta2(0.999).epsilon(1e-8);
    // Inputs that never need a gradient.
    let data_nodes = [
        z.clone(),
        real_in.clone(),
        labels.clone(),
        fake_labels.clone(),
    ];
    Ok(Prepared {
        step: Box::new(move |rt| {
            // D step: the generated images are data here.
            rt.clear_stop_gradients();
            rt.stop_gradients_at(&data_nodes.iter().chain([&fake]).collect::<Vec<_>>());
            let (mut grads, d_value) = rt.forward_backward_cycle(|rt| -> ad::Result<_> {
                let grads = adam.compute_gradients(rt, &d_loss, &feed, Some(&d_vars))?;
                Ok((grads, rt.value(&d_loss)?.sum()))
            })?;
            // G step: D's variables take no gradient.
            rt.clear_stop_gradients();
            rt.stop_gradients_at(&data_nodes.iter().chain(&d_vars).collect::<Vec<_>>());
            let (g_grads, g_value) = rt.forward_backward_cycle(|rt| -> ad::Result<_> {
                let grads = adam.compute_gradients(rt, &g_loss, &feed, Some(&g_vars))?;
                Ok((grads, rt.value(&g_loss)?.sum()))
            })?;
            grads.extend(g_grads);
            adam.apply_gradients(&grads)?;
            Ok(d_value + g_value)
        }),
        note: format!("batch {W5_BATCH}(+{W5_BATCH} fake); D step + G step"),
    })
}

// ------------------------------------------------------------------ W6

/// Latent size of the VAE.
const LATENT: usize = 2;

/// W6: the convolutional VAE on 32 binarised images, loss −mean(ELBO), Adam 1e-4.
fn w6(data: &Mnist) -> Res<Prepared> {
    let n = 32;
    let images = data.train_images.nhwc();
    if images.shape()[0] < n {
        return Err(format!("the data has {} images, W6 needs {n}", images.shape()[0]).into());
    }
    let xb = images
        .slice_axis(Axis(0), (0..n).into())
        .mapv(|v| if v > 0.5 { 1.0 } else { 0.0 });
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, 28, 28, 1]);
    let eps = g.placeholder(shape![None, LATENT]);
    let glorot = GlorotUniform::new;
    // Encoder: two 3×3 VALID convolutions with stride 2, then dense to mean and log-variance.
    let mut h = x.clone();
    let mut cin = 1;
    for cout in [32, 64] {
        let kernel = g.variable(&[3, 3, cin, cout], glorot(), true)?;
        h = ad::relu(&bias(
            &g,
            &ad::conv2d(&h, &kernel, [2, 2], Padding::Valid)?,
            cout,
        )?)?;
        cin = cout;
    }
    let flat = ad::reshape(&h, &[-1, 6 * 6 * 64])?;
    let (m, _) = dense(&g, &flat, 6 * 6 * 64, 2 * LATENT, glorot())?;
    let params = bias(&g, &m, 2 * LATENT)?;
    let mean = ad::slice(&params, &[0, 0], &[-1, LATENT as isize])?;
    let logvar = ad::slice(&params, &[0, LATENT], &[-1, LATENT as isize])?;
    let z = ad::add(&ad::multiply(&eps, &ad::exp(&(&logvar * 0.5))?)?, &mean)?;
    // Decoder: dense to 7×7×32, then transposed convolutions 64 and 32 (stride 2) and 1.
    let (m, _) = dense(&g, &z, LATENT, 7 * 7 * 32, glorot())?;
    let mut h = ad::reshape(&ad::relu(&bias(&g, &m, 7 * 7 * 32)?)?, &[-1, 7, 7, 32])?;
    let mut cin = 32;
    for (cout, stride) in [(64, 2), (32, 2), (1, 1)] {
        let kernel = g.variable(&[3, 3, cout, cin], glorot(), true)?;
        let t = ad::conv2d_transpose(&h, &kernel, [stride, stride], Padding::Same)?;
        h = bias(&g, &t, cout)?;
        if cout != 1 {
            h = ad::relu(&h)?;
        }
        cin = cout;
    }
    let logits = h;
    // −mean(log p(x|z) + log p(z) − log q(z|x)).
    let log2pi = (2.0 * std::f32::consts::PI).ln();
    let cross_ent = ad::sigmoid_cross_entropy_loss(&x, &logits)?;
    let logpx_z = ad::negate(&ad::reduce_sum(&cross_ent, [1, 2, 3], false)?)?;
    let logpz = ad::reduce_sum(&(-0.5 * (&z * &z + log2pi)), 1, false)?;
    let d = &z - &mean;
    let logqz_x = ad::reduce_sum(
        &(-0.5 * (&d * &d * ad::exp(&ad::negate(&logvar)?)? + &logvar + log2pi)),
        1,
        false,
    )?;
    let elbo = &(&logpx_z + &logpz) - &logqz_x;
    let loss = ad::negate(&ad::reduce_mean(&elbo, Axes::All, false)?)?;
    let feed = Feed::new().with(&x, xb)?.with(&eps, normal(n, LATENT)?)?;
    let adam = Adam::new(1e-4).beta1(0.9).beta2(0.999).epsilon(1e-7);
    Ok(train_step(
        loss,
        feed,
        adam,
        &[&x, &eps],
        format!("batch {n}"),
    ))
}

// ------------------------------------------------------------------ W7

/// W7: the character transformer (`common::transformer`, the demo's graph) on
/// the README's fixed batch: 64 training windows at the offsets of
/// `numpy.random.RandomState(0).randint(0, len - 16, size=64)`; AdamW 1e-3,
/// betas (0.9, 0.99), weight decay 0.01.
fn w7(_: &Mnist) -> Res<Prepared> {
    use adgraph::data::words::{token_stream, windows, Words};
    let config = common::transformer::Config::default();
    let (train, _) = Words::embedded()?.split(0);
    let stream = token_stream(&train);
    let offsets = numpy_randint(0, stream.len() - config.context, 64);
    // The README's check of the fixed batch.
    if offsets[..4] != [305_711, 435_829, 117_952, 152_315] {
        return Err(format!(
            "W7 batch offsets {:?} differ from the README's",
            &offsets[..4]
        )
        .into());
    }
    let (xb, yb) = windows(&stream, &offsets, config.context)?;
    let g = Graph::with_seed(SEED);
    let model = common::transformer::build(&g, config)?;
    let feed = Feed::new().with(&model.x, xb)?.with(&model.y, yb)?;
    let adamw = AdamW::new(1e-3, 0.01).with_adam(|a| a.beta1(0.9).beta2(0.99).epsilon(1e-8));
    Ok(train_step(
        model.loss,
        feed,
        adamw,
        &[&model.x, &model.y],
        "batch 64x16".into(),
    ))
}

/// `numpy.random.RandomState(seed).randint(0, high, size=n)` (NumPy's legacy
/// generator: MT19937 seeded by `init_genrand`, integers below 2³² drawn by
/// masked rejection from 32-bit outputs), for `high <= 2^32`.
fn numpy_randint(seed: u32, high: usize, n: usize) -> Vec<usize> {
    let mut mt = Mt19937::new(seed);
    let range = (high - 1) as u32;
    let mut mask = range;
    for shift in [1, 2, 4, 8, 16] {
        mask |= mask >> shift;
    }
    (0..n)
        .map(|_| loop {
            let v = mt.next_u32() & mask;
            if v <= range {
                break v as usize;
            }
        })
        .collect()
}

/// The Mersenne Twister MT19937 (Matsumoto and Nishimura, 1998).
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}
// ------------------------------------------------------------------ W8

/// W7/W8: windows per batch and tokens per window.
const LM_BATCH: usize = 64;
const LM_T: usize = 16;

/// W8: the character LSTM (embedding 27→32, LSTM 128 over 16 steps, dense
/// 128→27) on W7's fixed batch (the README's 64 windows), mean sparse
/// softmax CE over the 1,024 positions, Adam 2e-3.
fn w8(_: &Mnist) -> Res<Prepared> {
    let (train, _) = Words::embedded()?.split(0);
    let stream = token_stream(&train);
    let offsets = numpy_randint(0, stream.len() - LM_T, LM_BATCH);
    let (xb, yb) = windows(&stream, &offsets, LM_T)?;
    let g = Graph::with_seed(SEED);
    let x = g.placeholder(shape![None, LM_T]);
    let y = g.placeholder(shape![None, LM_T]);
    let (emb, hidden) = (32, 128);
    let table = g.variable(&[VOCAB, emb], FromTensor(normal(VOCAB, emb)?), true)?;
    let e = ad::embedding_lookup(&table, &x)?;
    let h = Lstm::new(hidden).apply(&e)?;
    let bound = 1.0 / (hidden as f32).sqrt();
    let rows = ad::reshape(&h, &[-1, hidden as isize])?;
    let (m, _) = dense(&g, &rows, hidden, VOCAB, RandomUniform::new(-bound, bound))?;
    let logits = bias(&g, &m, VOCAB)?;
    let labels = ad::reshape(&y, &[-1])?;
    let loss = ad::reduce_mean(
        &ad::sparse_softmax_cross_entropy_loss(&labels, &logits)?,
        Axes::All,
        false,
    )?;
    let feed = Feed::new().with(&x, xb)?.with(&y, yb)?;
    Ok(train_step(
        loss,
        feed,
        Adam::new(2e-3),
        &[&x, &y],
        format!("batch {LM_BATCH}x{LM_T}"),
    ))
}
