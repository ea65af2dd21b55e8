//! A convolutional variational autoencoder (VAE) with a 2-D latent space on
//! binarised Fashion-MNIST: the original framework's `demos/conv_vae.ipynb`
//! (benchmark workload W6), itself TensorFlow's CVAE tutorial.
//!
//! The **encoder** maps an image to the mean and log-variance of a Gaussian
//! over the latent code `z` (2 numbers): conv2d 3×3 32 stride 2 VALID + bias,
//! relu, conv2d 3×3 64 stride 2 VALID + bias, relu, matmul 2304→4 + bias (mean
//! and log-variance, two each). A code is drawn by the reparameterisation
//! `z = mean + exp(0.5 · logvar) · eps`, where `eps` ~ N(0, I) is fed from a
//! seeded generator. The **decoder** maps `z` to 28×28 pixel logits: matmul
//! 2→1568 + bias, relu, reshape 7×7×32, transposed conv 3×3 →64 stride 2 SAME +
//! bias, relu, →32 stride 2 SAME + bias, relu, →1 stride 1 SAME + bias. Weights
//! start Glorot-uniform, biases zero (as in the notebook).
//!
//! The loss is the negative evidence lower bound averaged over the batch,
//! `-mean(log p(x|z) + log p(z) - log q(z|x))`, with `log p(x|z)` the negative
//! sigmoid cross-entropy of the logits summed over the pixels and the KL term
//! estimated from the one sample `z` (as the notebook does). Adam, learning
//! rate 1e-4, epsilon 1e-7, batch 32.
//!
//! The test set's negative ELBO (each image with its own fixed `eps`, so that
//! evaluations differ only by the weights) is evaluated before training, every
//! `--eval-every` steps and at the end.
//!
//! Run (about a minute on 2 cores for the default 2,000 steps):
//!
//! ```text
//! cargo run --release --example conv_vae
//! cargo run --release --example conv_vae -- --data /usr/share/datasets/fashion-mnist --epochs 5
//! cargo run --release --example conv_vae -- --steps 1000 --save vae.safetensors
//! cargo run --release --example conv_vae -- --load vae.safetensors --save vae.safetensors
//! ```
//!
//! It prints `first_test_neg_elbo=`, `last_test_neg_elbo=`, `neg_elbo_drop=`
//! (the fraction by which it fell from the first evaluation to the last),
//! `test_neg_elbo_by_step=` (every evaluation, `step:value`), `final_loss=` (the
//! last step's training loss), `train_seconds=` (evaluations excluded) and
//! `steps=`, and writes to `--out` (default
//! `out/conv_vae/`): `losses.png` (training loss per step and test negative
//! ELBO), `reconstructions.png` (rows of 8 test images, each followed by a row of
//! their reconstructions from the mean code), and `manifold.png` (the decoder's
//! images for a 20×20 grid of codes over [-2, 2]² (`--manifold-range`), `z1`
//! left to right, `z2` bottom to top). Images are drawn dark on white.
//!
//! `eps` of step `s` depends only on the seed and `s`, so a run resumed with
//! `--load` continues exactly as an uninterrupted one would (its first
//! evaluation is then the one at the step it resumed from).

mod common;

use std::time::Instant;

use adgraph::data::Batches;
use adgraph::init::{GlorotUniform, Zeros};
use adgraph::optim::Adam;
use adgraph::train::{plot_lines, report, window_means, Series, Trainer};
use adgraph::{self as ad, shape, Axes, Feed, Graph, Node, Padding, RunTime, Tensor};
use clap::Parser;
use common::{CommonArgs, Res};
use ndarray::{s, Array4, Axis};

/// Size of the latent code.
const LATENT: usize = 2;
/// Default mini-batch size (the notebook's).
const DEFAULT_BATCH: usize = 32;
/// Default number of training steps.
const DEFAULT_STEPS: usize = 2000;
/// Codes per side of the latent manifold picture.
const MANIFOLD: usize = 20;
/// Test images shown in the reconstruction picture (rows of 8).
const SHOWN: usize = 32;
/// Generator stream of the test set's `eps` (training steps use streams 0, 1, ...).
const TEST_EPS_STREAM: u64 = u64::MAX;

/// Trains a convolutional VAE with a 2-D latent space and draws what it learned.
#[derive(Parser, Debug)]
#[command(name = "conv_vae")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    /// Evaluate the test set's negative ELBO every N steps (and before and after training).
    #[arg(long, value_name = "N", default_value_t = 200)]
    eval_every: usize,
    /// Codes of the latent manifold picture range over [-R, R]².
    #[arg(long, value_name = "R", default_value_t = 2.0)]
    manifold_range: f32,
}

/// The encoder's variables.
struct Encoder {
    conv0: Node,
    bias0: Node,
    conv1: Node,
    bias1: Node,
    dense: Node,
    bias2: Node,
}

impl Encoder {
    fn new(g: &Graph) -> ad::Result<Self> {
        Ok(Encoder {
            conv0: g.variable(&[3, 3, 1, 32], GlorotUniform::new(), true)?,
            bias0: g.variable(&[32], Zeros, true)?,
            conv1: g.variable(&[3, 3, 32, 64], GlorotUniform::new(), true)?,
            bias1: g.variable(&[64], Zeros, true)?,
            dense: g.variable(&[6 * 6 * 64, 2 * LATENT], GlorotUniform::new(), true)?,
            bias2: g.variable(&[2 * LATENT], Zeros, true)?,
        })
    }

    /// `(mean, logvar)`, each `[n, LATENT]`, of images `[n, 28, 28, 1]`.
    fn build(&self, images: &Node) -> ad::Result<(Node, Node)> {
        let h = ad::conv2d(images, &self.conv0, [2, 2], Padding::Valid)?;
        let h = ad::relu(&ad::add(&h, &self.bias0)?)?;
        let h = ad::conv2d(&h, &self.conv1, [2, 2], Padding::Valid)?;
        let h = ad::relu(&ad::add(&h, &self.bias1)?)?;
        let h = ad::reshape(&h, &[-1, 6 * 6 * 64])?;
        let params = ad::add(&ad::matmul(&h, &self.dense)?, &self.bias2)?;
        let mean = ad::slice(&params, &[0, 0], &[-1, LATENT as isize])?;
        let logvar = ad::slice(&params, &[0, LATENT], &[-1, LATENT as isize])?;
        Ok((mean, logvar))
    }
}

/// The decoder's variables.
struct Decoder {
    dense: Node,
    bias0: Node,
    tconv0: Node,
    bias1: Node,
    tconv1: Node,
    bias2: Node,
    tconv2: Node,
    bias3: Node,
}

impl Decoder {
    fn new(g: &Graph) -> ad::Result<Self> {
        Ok(Decoder {
            dense: g.variable(&[LATENT, 7 * 7 * 32], GlorotUniform::new(), true)?,
            bias0: g.variable(&[7 * 7 * 32], Zeros, true)?,
            tconv0: g.variable(&[3, 3, 64, 32], GlorotUniform::new(), true)?,
            bias1: g.variable(&[64], Zeros, true)?,
            tconv1: g.variable(&[3, 3, 32, 64], GlorotUniform::new(), true)?,
            bias2: g.variable(&[32], Zeros, true)?,
            tconv2: g.variable(&[3, 3, 1, 32], GlorotUniform::new(), true)?,
            bias3: g.variable(&[1], Zeros, true)?,
        })
    }

    /// Pixel logits `[n, 28, 28, 1]` of codes `[n, LATENT]`.
    fn build(&self, z: &Node) -> ad::Result<Node> {
        let h = ad::relu(&ad::add(&ad::matmul(z, &self.dense)?, &self.bias0)?)?;
        let h = ad::reshape(&h, &[-1, 7, 7, 32])?;
        let h = ad::conv2d_transpose(&h, &self.tconv0, [2, 2], Padding::Same)?;
        let h = ad::relu(&ad::add(&h, &self.bias1)?)?;
        let h = ad::conv2d_transpose(&h, &self.tconv1, [2, 2], Padding::Same)?;
        let h = ad::relu(&ad::add(&h, &self.bias2)?)?;
        let h = ad::conv2d_transpose(&h, &self.tconv2, [1, 1], Padding::Same)?;
        ad::add(&h, &self.bias3)
    }
}

/// `n` × `LATENT` standard-normal numbers from stream `stream` of the seed's
/// generator, so that a step's `eps` does not depend on the steps before it.
fn normal(seed: u64, stream: u64, n: usize) -> ad::Result<Tensor> {
    common::standard_normal(seed, stream, n, LATENT)
}

/// The test set's mean negative ELBO, in batches.
fn test_neg_elbo(
    rt: &mut RunTime,
    nodes: &VaeNodes,
    test: &Tensor,
    test_eps: &Tensor,
    batch: usize,
) -> ad::Result<f64> {
    let n = test.shape()[0];
    let mut total = 0.0f64;
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let feed = Feed::new()
            .with(
                &nodes.images,
                test.slice_axis(Axis(0), (start..end).into()).to_owned(),
            )?
            .with(
                &nodes.eps,
                test_eps.slice_axis(Axis(0), (start..end).into()).to_owned(),
            )?;
        let loss =
            rt.forward_backward_cycle(|rt| rt.forward(&nodes.loss, &feed).map(|v| v.sum()))?;
        total += f64::from(loss) * (end - start) as f64;
    }
    Ok(total / n.max(1) as f64)
}

/// The nodes the training loop and the pictures use.
struct VaeNodes {
    images: Node,
    eps: Node,
    loss: Node,
    /// Pixel probabilities of the reconstruction.
    recon: Node,
    /// Codes fed straight to the decoder, and its pixel probabilities.
    z_grid: Node,
    decoded: Node,
}

/// Builds the VAE on `graph`.
fn build(graph: &Graph) -> ad::Result<VaeNodes> {
    let log2pi = (2.0 * std::f32::consts::PI).ln();
    let encoder = Encoder::new(graph)?;
    let decoder = Decoder::new(graph)?;

    let images = graph.placeholder(shape![None, 28, 28, 1]);
    let (mean, logvar) = encoder.build(&images)?;
    let eps = graph.placeholder(shape![None, LATENT]);
    let z = ad::add(&ad::multiply(&eps, &ad::exp(&(&logvar * 0.5))?)?, &mean)?;
    let logits = decoder.build(&z)?;

    // log p(x|z): Bernoulli likelihood of the pixels, summed per image.
    let cross_ent = ad::sigmoid_cross_entropy_loss(&images, &logits)?;
    let logpx_z = ad::negate(&ad::reduce_sum(&cross_ent, [1, 2, 3], false)?)?;
    // log p(z) under N(0, I) and log q(z|x) under N(mean, exp(logvar)), per image.
    let logpz = ad::reduce_sum(&(-0.5 * (&z * &z + log2pi)), 1, false)?;
    let d = &z - &mean;
    let logqz_x = ad::reduce_sum(
        &(-0.5 * (&d * &d * ad::exp(&ad::negate(&logvar)?)? + &logvar + log2pi)),
        1,
        false,
    )?;
    let elbo = &(&logpx_z + &logpz) - &logqz_x;
    let loss = ad::negate(&ad::reduce_mean(&elbo, Axes::All, false)?)?;

    let recon = ad::sigmoid(&logits)?;
    let z_grid = graph.placeholder(shape![None, LATENT]);
    let decoded = ad::sigmoid(&decoder.build(&z_grid)?)?;
    Ok(VaeNodes {
        images,
        eps,
        loss,
        recon,
        z_grid,
        decoded,
    })
}

/// Rows of 8 test images, each followed by a row of their reconstructions from the mean code.
fn draw_reconstructions(
    rt: &mut RunTime,
    nodes: &VaeNodes,
    test: &Tensor,
    path: &std::path::Path,
) -> ad::Result<()> {
    let n = SHOWN.min(test.shape()[0]);
    let shown = test.slice_axis(Axis(0), (0..n).into()).to_owned();
    let feed = Feed::new()
        .with(&nodes.images, shown.clone())?
        .with(&nodes.eps, Tensor::zeros(vec![n, LATENT]))?;
    let recon = rt.forward_backward_cycle(|rt| rt.forward(&nodes.recon, &feed).cloned())?;
    let rows = n.div_ceil(8);
    let mut grid = Array4::<f32>::zeros((2 * rows * 8, 28, 28, 1));
    for k in 0..n {
        let (row, col) = (k / 8, k % 8);
        grid.index_axis_mut(Axis(0), 2 * row * 8 + col)
            .assign(&shown.index_axis(Axis(0), k));
        grid.index_axis_mut(Axis(0), (2 * row + 1) * 8 + col)
            .assign(&recon.index_axis(Axis(0), k));
    }
    common::save_image_grid(path, &grid.into_dyn(), 8, 3)
}

/// The decoder's images for a `MANIFOLD` × `MANIFOLD` grid of codes over
/// `[-range, range]²`, tiled into one image.
fn draw_manifold(
    rt: &mut RunTime,
    nodes: &VaeNodes,
    range: f32,
    path: &std::path::Path,
) -> ad::Result<()> {
    let step = |i: usize| -range + 2.0 * range * i as f32 / (MANIFOLD - 1) as f32;
    let mut codes = Vec::with_capacity(MANIFOLD * MANIFOLD * LATENT);
    for row in 0..MANIFOLD {
        for col in 0..MANIFOLD {
            // z1 grows left to right, z2 bottom to top.
            codes.extend([step(col), step(MANIFOLD - 1 - row)]);
        }
    }
    let feed = Feed::new().with(&nodes.z_grid, (codes, [MANIFOLD * MANIFOLD, LATENT]))?;
    let images = rt.forward_backward_cycle(|rt| rt.forward(&nodes.decoded, &feed).cloned())?;
    let mut big = Tensor::zeros(vec![1, 28 * MANIFOLD, 28 * MANIFOLD]);
    for k in 0..MANIFOLD * MANIFOLD {
        let (row, col) = (k / MANIFOLD, k % MANIFOLD);
        big.slice_mut(s![0, row * 28..(row + 1) * 28, col * 28..(col + 1) * 28])
            .assign(&images.slice(s![k, .., .., 0]));
    }
    common::save_image_grid(path, &big, 1, 2)
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(Args::parse()))
}

fn run(args: Args) -> Res {
    common::init()?;
    args.common.single_process_only("conv_vae")?;
    let seed = args.common.seed;
    let out = args.common.out_dir("conv_vae")?;
    let mnist = common::load_mnist(&args.common)?;
    let batch = args.common.batch_or(DEFAULT_BATCH)?;
    if !(args.manifold_range.is_finite() && args.manifold_range > 0.0) {
        return Err(format!(
            "--manifold-range must be a positive number, got {}",
            args.manifold_range
        )
        .into());
    }

    // Binarised images: a pixel is 1 where its intensity exceeds 0.5.
    let binarise = |t: Tensor| t.mapv(|v| if v > 0.5 { 1.0 } else { 0.0 });
    let train = binarise(mnist.train_images.nhwc());
    let test = binarise(mnist.test_images.nhwc());
    let n_train = train.shape()[0];
    let batches = Batches::new(train, Tensor::zeros(vec![n_train, 1]), batch, seed)?;
    let total = args.common.steps_or(DEFAULT_STEPS, n_train, batch);
    println!(
        "conv_vae: batch {batch}, {total} steps, Adam lr {}, latent size {LATENT}",
        args.lr
    );

    let graph = Graph::with_seed(seed);
    let nodes = build(&graph)?;
    let mut trainer = args.common.checkpointing(
        Trainer::new(&graph)
            .run_time(RunTime::with_seed(seed))
            .optimizer(Adam::new(args.lr).beta1(0.9).beta2(0.999).epsilon(1e-7))
            .data(batches)
            .steps(total)
            .eval_at_start(true)
            .eval_every(args.eval_every)
            .stop_on_non_finite(true),
    )?;

    // Training; the test set's negative ELBO before, every --eval-every steps and after.
    let test_eps = normal(seed, TEST_EPS_STREAM, test.shape()[0])?;
    let mut eval_seconds = 0.0;
    let summary = trainer.run_with_eval(
        |s| {
            let (x, _) = s.next_batch()?;
            let eps = normal(seed, s.index() as u64, x.shape()[0])?;
            let feed = Feed::new().with(&nodes.images, x)?.with(&nodes.eps, eps)?;
            s.minimize(&nodes.loss, &feed)
        },
        |e| {
            let t = Instant::now();
            let v = test_neg_elbo(e.rt, &nodes, &test, &test_eps, 256)?;
            if !e.is_start() {
                // The evaluations during and after training.
                eval_seconds += t.elapsed().as_secs_f64();
            }
            e.record("neg_elbo", v);
            e.println(format!("step {}: test negative ELBO {v:.2}", e.step()));
            Ok(())
        },
    )?;

    // ---- results ----
    let history = &summary.history;
    let evals = history.eval("neg_elbo");
    let first = evals.first().map_or(f64::NAN, |e| e.1);
    let last = evals.last().map_or(f64::NAN, |e| e.1);
    // Training loss: mean over windows of steps, about 200 points whatever the run's length.
    let curve = history.loss();
    let window = curve.len().div_ceil(200).max(1);
    plot_lines(
        &out.join("losses.png"),
        &format!("Conv VAE: negative ELBO (train: mean of every {window} steps)"),
        "step",
        "negative ELBO (nats per image)",
        &[
            Series::new("train", window_means(curve, window)),
            Series::new("test", evals.to_vec()),
        ],
    )?;
    let rt = trainer.rt_mut();
    draw_reconstructions(rt, &nodes, &test, &out.join("reconstructions.png"))?;
    draw_manifold(rt, &nodes, args.manifold_range, &out.join("manifold.png"))?;
    let train_seconds = summary.train_seconds;
    report(&[
        ("first_test_neg_elbo", format!("{first:.4}")),
        ("last_test_neg_elbo", format!("{last:.4}")),
        ("neg_elbo_drop", format!("{:.4}", (first - last) / first)),
        (
            "test_neg_elbo_by_step",
            evals
                .iter()
                .map(|(step, v)| format!("{step}:{v:.2}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "final_loss",
            format!("{}", summary.final_loss().unwrap_or(f32::NAN)),
        ),
        ("train_seconds", format!("{train_seconds:.1}")),
        ("eval_seconds", format!("{eval_seconds:.1}")),
        (
            "step_seconds",
            format!("{:.4}", train_seconds / summary.steps_run().max(1) as f64),
        ),
        ("steps", total.to_string()),
        ("batch", batch.to_string()),
        ("out", out.display().to_string()),
    ]);
    Ok(())
}
