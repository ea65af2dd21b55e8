//! A deep convolutional generative adversarial network (DCGAN) that learns to
//! draw Fashion-MNIST garments: the original framework's `demos/dcgan.ipynb`
//! (benchmark workload W5).
//!
//! Two networks play against each other. The **generator** G turns a
//! 100-dimensional standard-normal noise vector into a 28×28 image in [-1, 1]:
//! matmul 100→12544, batch norm, leaky relu (0.3), reshape to 7×7×256; then
//! three 5×5 SAME transposed convolutions, →128 (stride 1) and →64 (stride 2)
//! each followed by batch norm and leaky relu, and →1 (stride 2) followed by
//! tanh. The **discriminator** D turns an image into one logit: two 5×5 SAME
//! convolutions with stride 2 (64 and 128 channels, each + bias, leaky relu 0.3,
//! dropout 0.3) and a matmul 6272→1 + bias. Weights start Glorot-uniform
//! (`--init notebook`: uniform in [-1e-4, 1e-4] as in the notebook), biases and
//! batch-norm offsets at 0, scales at 1.
//!
//! Each step draws a batch of real images (scaled to [-1, 1]) and as many noise
//! vectors, then takes two gradients at the same parameters:
//! * G's: the sigmoid cross-entropy of D's logits on G(z) labelled *real* (1),
//!   w.r.t. G's variables;
//! * D's: the sigmoid cross-entropy of D's logits on the real images labelled 1
//!   and the same generated images labelled 0, w.r.t. D's variables (the
//!   generated images are fed as values, so no gradient reaches G);
//!
//! and applies them with two Adam optimizers (learning rate 2e-4, beta1 0.5 as in
//! the DCGAN paper; the notebook's 1e-4 and beta1 0.9 learn far slower here), one
//! over each network's variables. The notebook computes the generated images
//! twice per step; here the G pass's images are reused for the D pass: the same
//! images for less work.
//!
//! The default 3,000 steps of batch 32 see about 10 passes over the embedded
//! 10,000 images. Measured on the embedded data (seed 0, a loaded 2-core
//! machine, 0.88 s a step): at step 500 the samples are checkered blobs, by
//! step 2,000 the checkerboard is gone and shirts, trousers and sneakers show,
//! and at step 3,000 the grid holds recognisable shirts, pullovers, dresses,
//! trousers, sneakers and bags (rough, but garments). With the notebook's
//! `--lr 1e-4 --beta1 0.9` they are still checkered blobs after 800 steps.
//! `--label-smoothing 0.1` makes D aim at 0.9 for real images (one-sided label
//! smoothing), and `--sample-bn batch` draws the grids with the samples' own
//! batch statistics instead of the moving averages.
//!
//! ```text
//! cargo run --release --example dcgan
//! cargo run --release --example dcgan -- --lr 1e-4 --beta1 0.9 --steps 800
//! cargo run --release --example dcgan -- --data /usr/share/datasets/fashion-mnist --batch 64
//! cargo run --release --example dcgan -- --steps 200 --save gan.safetensors
//! cargo run --release --example dcgan -- --steps 400 --load gan.safetensors --save gan.safetensors
//! ```
//!
//! It prints `d_loss=` and `g_loss=` (the last step's), `train_seconds=`
//! (sample grids excluded), `step_seconds=` and `steps=`, and writes to `--out`
//! (default `out/dcgan/`): `losses.png` (D's and G's loss, averaged over
//! windows of steps), `real.png` (64 training images), `samples_step_NNNNN.png`
//! every `--sample-every` steps and `samples.png` at the end (an 8×8 grid of
//! G's images from 64 fixed noise vectors, G in inference mode: batch norm with
//! its moving statistics). Images are drawn dark on white.
//!
//! `--loss wgan-gp` trains a Wasserstein GAN with gradient penalty (Gulrajani
//! et al., 2017) instead: the discriminator becomes a critic (the same network
//! with no dropout and no sigmoid; no batch norm, as the paper asks) scoring
//! images, its loss is `mean(D(fake)) - mean(D(real)) + λ·mean((|∇D(x̂)| - 1)²)`
//! at random interpolates `x̂ = ε·real + (1-ε)·fake` (ε uniform per image; λ =
//! `--gp-weight`, 10; `--gp-mode one-sided` penalises only norms above 1), and the
//! generator minimises `-mean(D(G(z)))`. The penalty's `∇D(x̂)` is a gradient
//! built as graph nodes ([`adgraph::gradients`]) and differentiated again for the
//! critic's update. The critic takes `--critic-steps` (5) steps per generator
//! step, each on a new real batch and new noise; both use Adam with the paper's
//! learning rate 1e-4, beta1 0.5 and beta2 0.9 (unless `--lr`/`--beta1` say
//! otherwise). `steps` count generator steps.
//!
//! `--save`/`--load` keep the variables and *both* optimizers' states in one
//! safetensors file (the optimizers' under `optimizer/d/` and `optimizer/g/`),
//! with the step, the data position and the run time's random generator
//! (dropout masks). The noise of step `s` depends only on the seed and `s`, so
//! a resumed run sees the same batches, noise and masks as an uninterrupted one.

mod common;

use std::path::Path;

use adgraph::data::Batches;
use adgraph::init::{GlorotUniform, Ones, RandomUniform, Zeros};
use adgraph::optim::{Adam, GradsAndVars};
use adgraph::train::{plot_lines, report, window_means, Series, StepOutput, Trainer};
use adgraph::{
    self as ad, shape, BatchNormActivation, BatchNormConfig, Feed, Graph, Node, Padding, RunTime,
    Tensor,
};
use clap::Parser;
use common::{CommonArgs, Res};
use ndarray::{concatenate, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Length of the noise vector.
const NOISE_DIM: usize = 100;
/// Slope of the leaky relus for negative inputs.
const LEAK: f32 = 0.3;
/// Dropout rate in the discriminator.
const DROPOUT: f32 = 0.3;
/// Images in a sample grid (8 × 8).
const SAMPLES: usize = 64;
/// The trainer's optimizers: the discriminator's (or critic's) and the generator's.
const D: usize = 0;
const G: usize = 1;

/// Trains a DCGAN on Fashion-MNIST and draws its samples.
#[derive(Parser, Debug)]
#[command(name = "dcgan")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Learning rate of both Adam optimizers [default: 2e-4, the DCGAN paper's (the
    /// notebook used 1e-4); with --loss wgan-gp 1e-4, the WGAN-GP paper's].
    #[arg(long)]
    lr: Option<f32>,
    /// Adam's beta1 for both optimizers [default: 0.5, the DCGAN and WGAN-GP papers'; the
    /// notebook used 0.9, which needs thousands more steps before samples look like garments].
    #[arg(long)]
    beta1: Option<f32>,
    /// The adversarial loss: the DCGAN's sigmoid cross-entropy, or a Wasserstein
    /// critic with gradient penalty (WGAN-GP).
    #[arg(long, value_enum, default_value_t = Loss::Gan)]
    loss: Loss,
    /// WGAN-GP: weight λ of the gradient penalty.
    #[arg(long, default_value_t = 10.0)]
    gp_weight: f32,
    /// WGAN-GP: penalise (|∇D| - 1)² on both sides of 1, or only above 1.
    #[arg(long, value_enum, default_value_t = GpMode::TwoSided)]
    gp_mode: GpMode,
    /// WGAN-GP: critic steps per generator step.
    #[arg(long, default_value_t = 5)]
    critic_steps: usize,
    /// Decay of the generator's batch-norm moving statistics, which draw the samples.
    #[arg(long, default_value_t = 0.99)]
    bn_decay: f32,
    /// Initial weights: Glorot uniform, or uniform in [-1e-4, 1e-4] as the notebook.
    #[arg(long, value_enum, default_value_t = Init::Glorot)]
    init: Init,
    /// Also draw a sample grid every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 200)]
    sample_every: usize,
    /// One-sided label smoothing: D's target for real images is 1 - S (0: none).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    label_smoothing: f32,
    /// Which batch-norm statistics the sample grids use: the moving averages
    /// (inference mode) or the 64 samples' own batch statistics.
    #[arg(long, value_enum, default_value_t = SampleBn::Moving)]
    sample_bn: SampleBn,
}

/// The adversarial loss.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// Sigmoid cross-entropy of a discriminator's logits (the DCGAN).
    Gan,
    /// A Wasserstein critic with gradient penalty (WGAN-GP).
    WganGp,
}

/// Which side of 1 the gradient penalty acts on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GpMode {
    /// `(|∇D| - 1)²`, as in the paper.
    TwoSided,
    /// `max(|∇D| - 1, 0)²`.
    OneSided,
}

/// The batch-norm statistics the generator uses when drawing sample grids.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SampleBn {
    /// The moving averages kept during training (inference mode).
    Moving,
    /// The statistics of the sampled batch itself (training mode).
    Batch,
}

/// Default mini-batch size (a step of the notebook's 250 takes about 8 times as long).
const DEFAULT_BATCH: usize = 32;
/// Default number of steps.
const DEFAULT_STEPS: usize = 3000;

/// How the weights start (biases and batch-norm offsets start at 0, scales at 1).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Init {
    /// Glorot (Xavier) uniform.
    Glorot,
    /// Uniform in [-1e-4, 1e-4], as in the notebook.
    Notebook,
}

/// A trainable weight of `shape`, initialised by `init`.
fn weight(g: &Graph, shape: &[usize], init: Init) -> ad::Result<Node> {
    match init {
        Init::Glorot => g.variable(shape, GlorotUniform::new(), true),
        Init::Notebook => g.variable(shape, RandomUniform::new(-1e-4, 1e-4), true),
    }
}

/// The variables of one batch normalisation over `c` channels.
struct BatchNormVars {
    scale: Node,
    offset: Node,
    moving_mean: Node,
    moving_variance: Node,
}

impl BatchNormVars {
    fn new(g: &Graph, c: usize) -> ad::Result<Self> {
        Ok(BatchNormVars {
            scale: g.variable(&[c], Ones, true)?,
            offset: g.variable(&[c], Zeros, true)?,
            moving_mean: g.variable(&[c], Zeros, false)?,
            moving_variance: g.variable(&[c], Ones, false)?,
        })
    }

    fn apply(&self, x: &Node, config: BatchNormConfig) -> ad::Result<Node> {
        ad::fused_batch_norm(
            x,
            &self.scale,
            &self.offset,
            &self.moving_mean,
            &self.moving_variance,
            config,
        )
    }
}

/// The generator's variables; [`Generator::build`] adds a copy of the network.
struct Generator {
    dense: Node,
    bn0: BatchNormVars,
    tconv0: Node,
    bn1: BatchNormVars,
    tconv1: Node,
    bn2: BatchNormVars,
    tconv2: Node,
    bn_decay: f32,
}

impl Generator {
    fn new(g: &Graph, init: Init, bn_decay: f32) -> ad::Result<Self> {
        let w = |shape: &[usize]| weight(g, shape, init);
        Ok(Generator {
            dense: w(&[NOISE_DIM, 7 * 7 * 256])?,
            bn0: BatchNormVars::new(g, 7 * 7 * 256)?,
            tconv0: w(&[5, 5, 128, 256])?,
            bn1: BatchNormVars::new(g, 128)?,
            tconv1: w(&[5, 5, 64, 128])?,
            bn2: BatchNormVars::new(g, 64)?,
            tconv2: w(&[5, 5, 1, 64])?,
            bn_decay,
        })
    }

    /// The variables the generator's optimizer updates.
    fn trainable(&self) -> Vec<Node> {
        let mut vars = vec![self.dense.clone()];
        for (w, bn) in [
            (&self.tconv0, &self.bn0),
            (&self.tconv1, &self.bn1),
            (&self.tconv2, &self.bn2),
        ] {
            vars.extend([bn.scale.clone(), bn.offset.clone(), w.clone()]);
        }
        vars
    }

    /// Images `[n, 28, 28, 1]` in [-1, 1] from noise `[n, 100]`; batch norm uses
    /// (and updates) batch statistics when `training`, the moving ones otherwise.
    fn build(&self, z: &Node, training: bool) -> ad::Result<Node> {
        let bn = BatchNormConfig {
            epsilon: 1e-3,
            decay: self.bn_decay,
            is_training: training,
            // leaky_relu(batch_norm(h)) in one node (see BatchNormActivation).
            activation: BatchNormActivation::LeakyRelu(LEAK),
        };
        let h = ad::matmul(z, &self.dense)?;
        let h = self.bn0.apply(&h, bn)?;
        let h = ad::reshape(&h, &[-1, 7, 7, 256])?;
        let h = ad::conv2d_transpose(&h, &self.tconv0, [1, 1], Padding::Same)?;
        let h = self.bn1.apply(&h, bn)?;
        let h = ad::conv2d_transpose(&h, &self.tconv1, [2, 2], Padding::Same)?;
        let h = self.bn2.apply(&h, bn)?;
        let h = ad::conv2d_transpose(&h, &self.tconv2, [2, 2], Padding::Same)?;
        ad::tanh(&h)
    }
}

/// The discriminator's variables; [`Discriminator::build`] adds a copy of the network.
struct Discriminator {
    conv0: Node,
    bias0: Node,
    conv1: Node,
    bias1: Node,
    dense: Node,
    bias2: Node,
}

impl Discriminator {
    fn new(g: &Graph, init: Init) -> ad::Result<Self> {
        let w = |shape: &[usize]| weight(g, shape, init);
        let b = |n: usize| g.variable(&[n], Zeros, true);
        Ok(Discriminator {
            conv0: w(&[5, 5, 1, 64])?,
            bias0: b(64)?,
            conv1: w(&[5, 5, 64, 128])?,
            bias1: b(128)?,
            dense: w(&[7 * 7 * 128, 1])?,
            bias2: b(1)?,
        })
    }

    fn trainable(&self) -> Vec<Node> {
        vec![
            self.conv0.clone(),
            self.bias0.clone(),
            self.conv1.clone(),
            self.bias1.clone(),
            self.dense.clone(),
            self.bias2.clone(),
        ]
    }

    /// One logit `[n, 1]` per image `[n, 28, 28, 1]`; dropout only when `training`.
    fn build(&self, images: &Node, training: bool) -> ad::Result<Node> {
        let h = ad::conv2d(images, &self.conv0, [2, 2], Padding::Same)?;
        let h = ad::leaky_relu(&ad::add(&h, &self.bias0)?, LEAK)?;
        let h = ad::dropout(&h, DROPOUT, training)?;
        let h = ad::conv2d(&h, &self.conv1, [2, 2], Padding::Same)?;
        let h = ad::leaky_relu(&ad::add(&h, &self.bias1)?, LEAK)?;
        let h = ad::dropout(&h, DROPOUT, training)?;
        let h = ad::reshape(&h, &[-1, 7 * 7 * 128])?;
        ad::add(&ad::matmul(&h, &self.dense)?, &self.bias2)
    }
}

/// `n` standard-normal noise vectors. Stream `stream` of the seed's generator,
/// so the noise of a step does not depend on the steps before it.
fn noise(seed: u64, stream: u64, n: usize) -> ad::Result<Tensor> {
    common::standard_normal(seed, stream, n, NOISE_DIM)
}

/// The WGAN-GP penalty `λ · mean_i (|∇ D(x̂)_i| - 1)²` (one-sided: only norms
/// above 1), with `∇ D(x̂)` the gradient of the critic's scores w.r.t. its
/// input, as graph nodes: differentiating this penalty for the critic's update
/// differentiates that gradient again.
fn gradient_penalty(
    disc: &Discriminator,
    x_hat: &Node,
    weight: f32,
    mode: GpMode,
) -> ad::Result<Node> {
    let scores = disc.build(x_hat, false)?;
    let total = ad::reduce_sum(&scores, ad::Axes::All, false)?;
    let grad = ad::gradients(&[&total], &[x_hat], None)?
        .remove(0)
        .ok_or_else(|| ad::Error::invalid("the critic's scores do not depend on its input"))?;
    // Per-image norm; the 1e-12 keeps the square root's derivative finite at 0.
    let squares = ad::reduce_sum(&ad::square(&grad)?, [1, 2, 3], false)?;
    let norms = ad::sqrt(&(&squares + 1e-12).check()?)?;
    let excess = (&norms - 1.0).check()?;
    let excess = match mode {
        GpMode::TwoSided => excess,
        GpMode::OneSided => ad::relu(&excess)?,
    };
    let penalty = ad::reduce_mean(&ad::square(&excess)?, ad::Axes::All, false)?;
    ad::multiply(&penalty, &penalty.graph().constant(weight)?)
}

/// `ε·real + (1-ε)·fake` with one ε per image, uniform in [0, 1), drawn from
/// stream `stream` of the seed (so a resumed run draws the same).
fn interpolate(real: &Tensor, fake: &Tensor, seed: u64, stream: u64) -> ad::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
    rng.set_stream(stream);
    let mut out = fake.clone();
    for (mut o, r) in out.outer_iter_mut().zip(real.outer_iter()) {
        let eps: f32 = rand::Rng::gen(&mut rng);
        o.zip_mut_with(&r, |f, &r| *f = eps * r + (1.0 - eps) * *f);
    }
    Ok(out)
}

/// Images in [-1, 1] mapped to [0, 1] for [`common::save_image_grid`].
fn to_unit(images: &Tensor) -> Tensor {
    images.mapv(|v| (v + 1.0) * 0.5)
}

/// Runs the inference-mode generator on the fixed noise and writes the grid.
fn draw_samples(
    rt: &mut RunTime,
    samples: &Node,
    z: &Node,
    fixed: &Tensor,
    path: &Path,
) -> ad::Result<()> {
    let feed = Feed::new().with(z, fixed.clone())?;
    let images = rt.forward_backward_cycle(|rt| rt.forward(samples, &feed).cloned())?;
    common::save_image_grid(path, &to_unit(&images), 8, 2)
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(Args::parse()))
}

fn run(args: Args) -> Res {
    common::init()?;
    args.common.single_process_only("dcgan")?;
    let seed = args.common.seed;
    let out = args.common.out_dir("dcgan")?;
    let mnist = common::load_mnist(&args.common)?;
    let batch = args.common.batch_or(DEFAULT_BATCH)?;

    // Real images in [-1, 1], NHWC; the labels are not used.
    let real = mnist.train_images.nhwc().mapv(|v| v * 2.0 - 1.0);
    let n_train = real.shape()[0];
    if n_train < batch {
        return Err(format!("--batch {batch} is larger than the {n_train} training images").into());
    }
    let batches =
        Batches::new(real.clone(), Tensor::zeros(vec![n_train, 1]), batch, seed)?.drop_last(true);
    let total = args.common.steps_or(DEFAULT_STEPS, n_train, batch);
    let wgan = args.loss == Loss::WganGp;
    let lr = args.lr.unwrap_or(if wgan { 1e-4 } else { 2e-4 });
    let beta1 = args.beta1.unwrap_or(0.5);
    let beta2 = if wgan { 0.9 } else { 0.999 };
    if wgan {
        if args.critic_steps == 0 {
            return Err("--critic-steps must be at least 1".into());
        }
        println!(
            "dcgan: WGAN-GP, batch {batch}, {total} generator steps of {} critic steps, Adam lr {lr} \
             beta1 {beta1} beta2 {beta2}, gradient penalty {} ({:?})",
            args.critic_steps, args.gp_weight, args.gp_mode
        );
    } else {
        println!(
            "dcgan: batch {batch} (+{batch} generated), {total} steps, Adam lr {lr} beta1 {beta1}"
        );
    }

    // ---- the graph ----
    let graph = Graph::with_seed(seed);
    let gen = Generator::new(&graph, args.init, args.bn_decay)?;
    let disc = Discriminator::new(&graph, args.init)?;
    let g_vars = gen.trainable();
    let d_vars = disc.trainable();

    let z = graph.placeholder(shape![None, NOISE_DIM]);
    let fake = gen.build(&z, true)?;
    let d_images = graph.placeholder(shape![None, 28, 28, 1]);
    let (g_loss, d_loss, real_labels, d_labels, x_hat) = if wgan {
        // The critic: the discriminator without dropout, its logit a score.
        let g_loss = ad::negate(&ad::reduce_mean(
            &disc.build(&fake, false)?,
            ad::Axes::All,
            false,
        )?)?;
        // Real images in the first `batch` rows of d_images, G's in the rest.
        let scores = disc.build(&d_images, false)?;
        let b = batch as isize;
        let real_mean =
            ad::reduce_mean(&ad::slice(&scores, &[0, 0], &[b, 1])?, ad::Axes::All, false)?;
        let fake_mean = ad::reduce_mean(
            &ad::slice(&scores, &[batch, 0], &[-1, 1])?,
            ad::Axes::All,
            false,
        )?;
        let x_hat = graph.placeholder(shape![None, 28, 28, 1]);
        let penalty = gradient_penalty(&disc, &x_hat, args.gp_weight, args.gp_mode)?;
        let d_loss = ad::add(&ad::subtract(&fake_mean, &real_mean)?, &penalty)?;
        (g_loss, d_loss, None, None, Some(x_hat))
    } else {
        // G's objective: D should call G's images real.
        let fake_logits = disc.build(&fake, true)?;
        let real_labels = graph.placeholder(shape![None, 1]);
        let g_loss = ad::reduce_mean(
            &ad::sigmoid_cross_entropy_loss(&real_labels, &fake_logits)?,
            ad::Axes::All,
            false,
        )?;
        // D's objective on real images (label 1) and G's images (label 0), fed as values.
        let d_labels = graph.placeholder(shape![None, 1]);
        let d_logits = disc.build(&d_images, true)?;
        let d_loss = ad::reduce_mean(
            &ad::sigmoid_cross_entropy_loss(&d_labels, &d_logits)?,
            ad::Axes::All,
            false,
        )?;
        (g_loss, d_loss, Some(real_labels), Some(d_labels), None)
    };

    // Samples: the generator in inference mode (batch norm with its moving statistics).
    let samples = gen.build(&z, args.sample_bn == SampleBn::Batch)?;

    // Two optimizers, each over its network's variables; their states are saved
    // under optimizer/d/ and optimizer/g/.
    let adam = || Adam::new(lr).beta1(beta1).beta2(beta2).epsilon(1e-8);
    let mut trainer = args.common.checkpointing(
        Trainer::new(&graph)
            .run_time(RunTime::with_seed(seed))
            .named_optimizer("d", adam())
            .named_optimizer("g", adam())
            .data(batches)
            .steps(total)
            .eval_every(args.sample_every)
            .eval_at_end(false)
            .metadata("example", "dcgan"),
    )?;

    let fixed_noise = noise(seed, u64::MAX, SAMPLES)?;
    let first_real = real
        .slice_axis(Axis(0), (0..SAMPLES.min(n_train)).into())
        .to_owned();
    common::save_image_grid(&out.join("real.png"), &to_unit(&first_real), 8, 2)?;

    if !(0.0..1.0).contains(&args.label_smoothing) {
        return Err(format!(
            "--label-smoothing {} is not in [0, 1)",
            args.label_smoothing
        )
        .into());
    }
    let ones = ad::tensor::full(&[batch, 1], 1.0);
    let real_targets = ad::tensor::full(&[batch, 1], 1.0 - args.label_smoothing);
    let d_targets = concatenate![Axis(0), real_targets, Tensor::zeros(vec![batch, 1])];
    let d_var_refs: Vec<&Node> = d_vars.iter().collect();

    // ---- training ----
    let summary = trainer.run_with_eval(
        |s| {
            let step = s.index();
            let (d_loss_val, g_loss_val) = if let Some(x_hat) = &x_hat {
                // The critic's steps, each on a new real batch and new noise.
                let mut d_loss_val = f32::NAN;
                for k in 0..args.critic_steps {
                    let (real_batch, _) = s.next_batch()?;
                    let stream = (step * (args.critic_steps + 1) + k) as u64;
                    let z_feed = Feed::new().with(&z, noise(seed, stream, batch)?)?;
                    let fake_val =
                        s.rt.forward_backward_cycle(|rt| rt.forward(&fake, &z_feed).cloned())?;
                    let hat = interpolate(&real_batch, &fake_val, seed, stream)?;
                    let d_feed = Feed::new()
                        .with(&d_images, concatenate![Axis(0), real_batch, fake_val])?
                        .with(x_hat, hat)?;
                    let d_opt = &mut s.optimizers[D];
                    d_loss_val = s.rt.forward_backward_cycle(|rt| -> ad::Result<f32> {
                        d_opt.optimize(rt, &d_loss, &d_feed, Some(&d_vars))?;
                        Ok(rt.value(&d_loss)?.sum())
                    })?;
                }
                // The generator's step against the updated critic.
                let stream = (step * (args.critic_steps + 1) + args.critic_steps) as u64;
                let g_feed = Feed::new().with(&z, noise(seed, stream, batch)?)?;
                let g_opt = &mut s.optimizers[G];
                s.rt.stop_gradients_at(&d_var_refs);
                let g_loss_val = s.rt.forward_backward_cycle(|rt| -> ad::Result<f32> {
                    g_opt.optimize(rt, &g_loss, &g_feed, Some(&g_vars))?;
                    Ok(rt.value(&g_loss)?.sum())
                });
                s.rt.clear_stop_gradients();
                (d_loss_val, g_loss_val?)
            } else {
                let missing = || ad::Error::invalid("no labels");
                let real_labels = real_labels.as_ref().ok_or_else(missing)?;
                let d_labels = d_labels.as_ref().ok_or_else(missing)?;
                let (real_batch, _) = s.next_batch()?;
                let z_val = noise(seed, step as u64, batch)?;

                // G's gradient (D's variables take none: they are not G's to update).
                let g_feed = Feed::new()
                    .with(&z, z_val)?
                    .with(real_labels, ones.clone())?;
                let (d_opt, g_opt) = (&s.optimizers[D], &s.optimizers[G]);
                s.rt.stop_gradients_at(&d_var_refs);
                let g_pass =
                    s.rt.forward_backward_cycle(|rt| -> ad::Result<(GradsAndVars, f32, Tensor)> {
                        let grads = g_opt.compute_gradients(rt, &g_loss, &g_feed, Some(&g_vars))?;
                        Ok((grads, rt.value(&g_loss)?.sum(), rt.value(&fake)?.clone()))
                    });
                s.rt.clear_stop_gradients();
                let (g_grads, g_loss_val, fake_val) = g_pass?;

                // D's gradient at the same parameters, on the real batch and those images.
                let both = concatenate![Axis(0), real_batch, fake_val];
                let d_feed = Feed::new()
                    .with(&d_images, both)?
                    .with(d_labels, d_targets.clone())?;
                let (d_grads, d_loss_val) =
                    s.rt.forward_backward_cycle(|rt| -> ad::Result<(GradsAndVars, f32)> {
                        let grads = d_opt.compute_gradients(rt, &d_loss, &d_feed, Some(&d_vars))?;
                        Ok((grads, rt.value(&d_loss)?.sum()))
                    })?;

                s.optimizers[D].apply_gradients(&d_grads)?;
                s.optimizers[G].apply_gradients(&g_grads)?;
                (d_loss_val, g_loss_val)
            };
            if !(d_loss_val.is_finite() && g_loss_val.is_finite()) {
                return Err(ad::Error::invalid(format!(
                    "step {}: a loss is not finite (d_loss {d_loss_val}, g_loss {g_loss_val})",
                    step + 1
                )));
            }
            // The bar shows the running sum of the two losses.
            Ok(StepOutput::new(d_loss_val + g_loss_val)
                .metric("d_loss", f64::from(d_loss_val))
                .metric("g_loss", f64::from(g_loss_val)))
        },
        // A sample grid every --sample-every steps.
        |e| {
            let last = |name| e.last().and_then(|o| o.get(name)).unwrap_or(f64::NAN);
            e.println(format!(
                "step {}: d_loss {:.4} g_loss {:.4}",
                e.step(),
                last("d_loss"),
                last("g_loss")
            ));
            let path = out.join(format!("samples_step_{:05}.png", e.step()));
            draw_samples(e.rt, &samples, &z, &fixed_noise, &path)
        },
    )?;

    // ---- results ----
    draw_samples(
        trainer.rt_mut(),
        &samples,
        &z,
        &fixed_noise,
        &out.join("samples.png"),
    )?;
    // Mean over windows of steps: about 200 points whatever the run's length.
    let history = &summary.history;
    let window = history.loss().len().div_ceil(200).max(1);
    let (title, d_name) = if wgan {
        (
            "WGAN-GP losses (critic: W-distance estimate + penalty)",
            "critic",
        )
    } else {
        ("DCGAN losses (sigmoid cross-entropy)", "discriminator")
    };
    plot_lines(
        &out.join("losses.png"),
        &format!("{title}; mean of every {window} steps"),
        "step",
        "loss",
        &[
            Series::new(d_name, window_means(history.metric("d_loss"), window)),
            Series::new("generator", window_means(history.metric("g_loss"), window)),
        ],
    )?;
    let last = |name| summary.last.as_ref().and_then(|o| o.get(name));
    let (d_last, g_last) = (
        last("d_loss").map_or(f32::NAN, |v| v as f32),
        last("g_loss").map_or(f32::NAN, |v| v as f32),
    );
    let train_seconds = summary.train_seconds;
    report(&[
        ("d_loss", format!("{d_last}")),
        ("g_loss", format!("{g_last}")),
        ("train_seconds", format!("{train_seconds:.1}")),
        (
            "step_seconds",
            format!("{:.3}", train_seconds / summary.steps_run().max(1) as f64),
        ),
        ("steps", total.to_string()),
        ("batch", batch.to_string()),
        ("out", out.display().to_string()),
    ]);
    Ok(())
}
