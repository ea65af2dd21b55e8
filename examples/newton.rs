//! Second-order training: softmax regression on Fashion-MNIST by Newton's
//! method, each step solved by conjugate gradients on Hessian-vector products
//! (Newton–CG, "truncated Newton"), against plain gradient descent.
//!
//! Model: the logistic-regression demo's (`logits = x · W + b`, `W` 784 × 10
//! from a truncated normal with stddev 0.01, `b` zero; loss: mean softmax
//! cross-entropy plus `l2norm(W, 1e-3)`, which keeps the Hessian positive
//! definite). The gradient `g` and the Hessian-vector product `H v` are graph
//! nodes ([`adgraph::gradients`], [`adgraph::hessian_vector_product`]: the
//! gradient graph differentiated once more), evaluated on the whole training
//! set. A Newton step solves `H p = -g` by conjugate gradients (at most
//! `--cg-iters` products, stopping when the residual falls below
//! `--cg-tol` × |g|), then takes the largest of `p, p/2, p/4, ...` that lowers
//! the loss enough (Armijo).
//!
//! First it trains the same model from the same start by the logistic-regression
//! demo's gradient descent (learning rate 0.5 decaying to 0 along a cosine,
//! mini-batches of 100) for `--gd-epochs` (3) epochs, and prints that run's test
//! accuracy as `gd_test_accuracy=`; then Newton–CG from the same start, for at most
//! `--steps` (10) Newton steps, stopping early once it matches that accuracy
//! unless `--all-steps` is given.
//!
//! ```text
//! cargo run --release --example newton
//! cargo run --release --example newton -- --data /usr/share/datasets/fashion-mnist
//! ```
//!
//! Prints `key=value` lines: `gd_test_accuracy`, `test_accuracy` (Newton's),
//! `newton_steps`, `hessian_vector_products`, `final_loss`, `gd_seconds` and
//! `newton_seconds`; draws `accuracy.png` (test accuracy per Newton step beside
//! gradient descent's final one) in `--out` (default `out/newton/`).

mod common;

use std::time::Instant;

use adgraph::data::{one_hot, Batches};
use adgraph::init::{TruncatedNormal, Zeros};
use adgraph::optim::{GradientDescent, Optimizer, Schedule};
use adgraph::train::{plot_lines, report, Series};
use adgraph::{self as ad, Feed, Graph, Node, RunTime, Tensor};
use clap::Parser;
use common::{CommonArgs, Res};
use ndarray::{Axis, Slice};

const PIXELS: usize = 784;
const CLASSES: usize = 10;
const L2_SCALE: f32 = 1e-3;
const GD_LEARNING_RATE: f32 = 0.5;
const GD_BATCH: usize = 100;
const DEFAULT_NEWTON_STEPS: usize = 10;
/// Examples per forward pass when evaluating or summing over the training set.
const CHUNK: usize = 10_000;

/// Trains softmax regression by Newton–CG (Hessian-vector products) and by
/// gradient descent, from the same start, and compares their test accuracy.
#[derive(Parser, Debug)]
#[command(about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Epochs of the gradient-descent baseline.
    #[arg(long, default_value_t = 3.0)]
    gd_epochs: f64,
    /// Most Hessian-vector products per Newton step.
    #[arg(long, default_value_t = 20)]
    cg_iters: usize,
    /// Conjugate gradients stop when |H p + g| < tol · |g|.
    #[arg(long, default_value_t = 1e-3)]
    cg_tol: f64,
    /// Take all --steps Newton steps even after matching gradient descent.
    #[arg(long)]
    all_steps: bool,
}

/// The model's nodes, with its gradient and Hessian-vector product as nodes.
struct Model {
    x: Node,
    labels: Node,
    params: [Node; 2],
    logits: Node,
    loss: Node,
    /// `d loss / d params`.
    grads: [Node; 2],
    /// Directions fed for the Hessian-vector product, one per parameter.
    directions: [Node; 2],
    /// `H · directions`.
    hvp: [Node; 2],
}

fn build_model(graph: &Graph) -> Res<Model> {
    let _default = graph.as_default();
    let x = ad::placeholder(ad::shape![None, PIXELS]);
    let labels = ad::placeholder(ad::shape![None, CLASSES]);
    let weight = ad::variable(&[PIXELS, CLASSES], TruncatedNormal::new(0.0, 0.01), true)?;
    let bias = ad::variable(&[CLASSES], Zeros, true)?;
    let logits = ad::add(&ad::matmul(&x, &weight)?, &bias)?;
    let cross_entropy = ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(&labels, &logits)?,
        ad::Axes::All,
        false,
    )?;
    let loss = ad::add(&cross_entropy, &ad::l2norm(&weight, L2_SCALE)?)?;
    let params = [weight, bias];
    let refs: Vec<&Node> = params.iter().collect();
    let grads = ad::gradients(&[&loss], &refs, None)?;
    let directions = [
        ad::placeholder([PIXELS, CLASSES]),
        ad::placeholder([CLASSES]),
    ];
    let direction_refs: Vec<&Node> = directions.iter().collect();
    let hvp = ad::hessian_vector_product(&loss, &refs, &direction_refs)?;
    let some = |n: Option<Node>| n.ok_or("the loss does not depend on a parameter");
    let [g0, g1]: [Option<Node>; 2] = grads.try_into().map_err(|_| "two gradients")?;
    let [h0, h1]: [Option<Node>; 2] = hvp.try_into().map_err(|_| "two products")?;
    Ok(Model {
        x,
        labels,
        params,
        logits,
        loss,
        grads: [some(g0)?, some(g1)?],
        directions,
        hvp: [some(h0)?, some(h1)?],
    })
}

/// A point in parameter space: one tensor per parameter.
type Params = Vec<Tensor>;

fn dot(a: &Params, b: &Params) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(&u, &v)| f64::from(u) * f64::from(v))
                .sum::<f64>()
        })
        .sum()
}

/// `a + s · b`.
fn axpy(a: &Params, s: f64, b: &Params) -> Params {
    a.iter().zip(b).map(|(x, y)| x + &(y * s as f32)).collect()
}

/// The training set, whole, in chunks that bound the memory of one pass.
struct Data {
    x: Tensor,
    y: Tensor,
}

impl Data {
    fn chunks(&self) -> impl Iterator<Item = (Tensor, Tensor, f64)> + '_ {
        let n = self.x.shape()[0];
        (0..n).step_by(CHUNK).map(move |start| {
            let rows = Slice::from(start..(start + CHUNK).min(n));
            let xb = self.x.slice_axis(Axis(0), rows).to_owned();
            let yb = self.y.slice_axis(Axis(0), rows).to_owned();
            let weight = xb.shape()[0] as f64 / n as f64;
            (xb, yb, weight)
        })
    }
}

/// Evaluates `targets` on the whole training set: each target's value is the
/// chunk values weighted by the chunks' shares (the loss is a mean over
/// examples, so its gradient and Hessian are too; the L2 term, the same in
/// every chunk, comes out once).
fn over_training_set(
    rt: &mut RunTime,
    model: &Model,
    data: &Data,
    targets: &[&Node],
    extra: &[(&Node, &Tensor)],
) -> Res<Vec<Tensor>> {
    let mut sums: Option<Vec<Tensor>> = None;
    for (xb, yb, weight) in data.chunks() {
        let mut feed = Feed::new().with(&model.x, xb)?.with(&model.labels, yb)?;
        for (node, value) in extra {
            feed.insert(node, *value)?;
        }
        let values = rt.forward_backward_cycle(|rt| rt.infer(targets, &feed))?;
        let scaled: Vec<Tensor> = values.into_iter().map(|v| v * weight as f32).collect();
        sums = Some(match sums {
            None => scaled,
            Some(acc) => acc.iter().zip(&scaled).map(|(a, b)| a + b).collect(),
        });
    }
    Ok(sums.ok_or("no training data")?)
}

fn set_params(graph: &Graph, model: &Model, values: &Params) -> Res {
    for (node, value) in model.params.iter().zip(values) {
        graph.set_variable_value(node, value.clone())?;
    }
    Ok(())
}

fn test_accuracy(rt: &mut RunTime, model: &Model, x: &Tensor, y: &Tensor) -> Res<f64> {
    let feed = Feed::new().with(&model.x, x.clone())?;
    let logits = rt.forward_backward_cycle(|rt| rt.infer(&[&model.logits], &feed))?;
    Ok(common::accuracy(&logits[0], y))
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res {
    common::init()?;
    let common = &args.common;
    common.single_process_only("newton")?;
    let data = common::load_mnist(common)?;
    let train = Data {
        x: data.train_images.flat(),
        y: one_hot(&data.train_labels, CLASSES)?,
    };
    let x_test = data.test_images.flat();
    let y_test = one_hot(&data.test_labels, CLASSES)?;
    let n_train = train.x.shape()[0];
    let newton_steps = common.steps.unwrap_or(DEFAULT_NEWTON_STEPS);

    let graph = Graph::with_seed(common.seed);
    let model = build_model(&graph)?;
    let start: Params = model
        .params
        .iter()
        .map(|p| graph.variable_value(p))
        .collect::<ad::Result<_>>()?;
    let mut rt = RunTime::new();

    // ---- the baseline: the logistic-regression demo's gradient descent ----
    let gd_steps = ((args.gd_epochs * n_train as f64) / GD_BATCH as f64).ceil() as usize;
    println!(
        "gradient descent: {gd_steps} steps ({} epochs) of batch {GD_BATCH}, lr {GD_LEARNING_RATE} decaying to 0 (cosine)",
        args.gd_epochs
    );
    let mut gd = GradientDescent::new(GD_LEARNING_RATE).schedule(Schedule::Cosine {
        initial: GD_LEARNING_RATE,
        minimum: 0.0,
        total_steps: gd_steps as u64,
    });
    let mut batches = Batches::new(train.x.clone(), train.y.clone(), GD_BATCH, common.seed)?;
    let gd_started = Instant::now();
    for _ in 0..gd_steps {
        let (xb, yb) = batches
            .next_batch()
            .ok_or("the training set yields no batch")?;
        let feed = Feed::new().with(&model.x, xb)?.with(&model.labels, yb)?;
        rt.forward_backward_cycle(|rt| gd.optimize(rt, &model.loss, &feed, Some(&model.params)))?;
    }
    let gd_seconds = gd_started.elapsed().as_secs_f64();
    let gd_accuracy = test_accuracy(&mut rt, &model, &x_test, &y_test)?;
    println!("gradient descent: test accuracy {gd_accuracy:.4} in {gd_seconds:.1} s");

    // ---- Newton-CG from the same start ----
    set_params(&graph, &model, &start)?;
    let mut theta = start;
    let mut hvp_count = 0usize;
    let mut accuracy_curve = vec![(0.0, test_accuracy(&mut rt, &model, &x_test, &y_test)?)];
    let mut accuracy = accuracy_curve[0].1;
    let mut loss = f64::NAN;
    let mut steps_taken = 0;
    let newton_started = Instant::now();
    for step in 1..=newton_steps {
        let grad_refs: Vec<&Node> = std::iter::once(&model.loss).chain(&model.grads).collect();
        let mut values = over_training_set(&mut rt, &model, &train, &grad_refs, &[])?;
        let grad: Params = values.split_off(1);
        loss = f64::from(values[0].sum());
        let grad_norm = dot(&grad, &grad).sqrt();

        // Conjugate gradients on H p = -g, from p = 0.
        let mut p: Params = grad.iter().map(|g| Tensor::zeros(g.shape())).collect();
        let mut r: Params = grad.iter().map(|g| -g).collect();
        let mut d = r.clone();
        let mut rr = dot(&r, &r);
        let mut iters = 0;
        while iters < args.cg_iters && rr.sqrt() > args.cg_tol * grad_norm {
            let extra: Vec<(&Node, &Tensor)> = model.directions.iter().zip(&d).collect();
            let hvp_refs: Vec<&Node> = model.hvp.iter().collect();
            let hd = over_training_set(&mut rt, &model, &train, &hvp_refs, &extra)?;
            hvp_count += 1;
            iters += 1;
            let curvature = dot(&d, &hd);
            if curvature <= 0.0 {
                break; // not a descent direction any more (cannot happen with the L2 term)
            }
            let alpha = rr / curvature;
            p = axpy(&p, alpha, &d);
            r = axpy(&r, -alpha, &hd);
            let rr_next = dot(&r, &r);
            d = axpy(&r, rr_next / rr, &d);
            rr = rr_next;
        }

        // Backtracking line search (Armijo) along p.
        let slope = dot(&grad, &p);
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..20 {
            let candidate = axpy(&theta, t, &p);
            set_params(&graph, &model, &candidate)?;
            let l = over_training_set(&mut rt, &model, &train, &[&model.loss], &[])?;
            let l = f64::from(l[0].sum());
            if l <= loss + 1e-4 * t * slope {
                accepted = Some((candidate, l));
                break;
            }
            t *= 0.5;
        }
        let Some((next, next_loss)) = accepted else {
            set_params(&graph, &model, &theta)?;
            println!("step {step}: no step along the Newton direction lowers the loss; stopping");
            break;
        };
        theta = next;
        loss = next_loss;
        steps_taken = step;
        accuracy = test_accuracy(&mut rt, &model, &x_test, &y_test)?;
        accuracy_curve.push((step as f64, accuracy));
        println!(
            "newton step {step}: loss {loss:.5}, |g| {grad_norm:.3e}, {iters} CG products, step length {t}, test accuracy {accuracy:.4}"
        );
        if accuracy >= gd_accuracy && !args.all_steps {
            break;
        }
    }
    let newton_seconds = newton_started.elapsed().as_secs_f64();

    report(&[
        ("gd_test_accuracy", format!("{gd_accuracy:.4}")),
        ("test_accuracy", format!("{accuracy:.4}")),
        ("newton_steps", steps_taken.to_string()),
        ("hessian_vector_products", hvp_count.to_string()),
        ("final_loss", format!("{loss:.6}")),
        ("gd_seconds", format!("{gd_seconds:.1}")),
        ("newton_seconds", format!("{newton_seconds:.1}")),
    ]);
    let out = common.out_dir("newton")?;
    let last = accuracy_curve.last().map_or(1.0, |p| p.0).max(1.0);
    plot_lines(
        &out.join("accuracy.png"),
        "softmax regression: Newton-CG test accuracy",
        "Newton step",
        "test accuracy",
        &[
            Series::new("Newton-CG", accuracy_curve),
            Series::new(
                format!("gradient descent, {} epochs", args.gd_epochs),
                vec![(0.0, gd_accuracy), (last, gd_accuracy)],
            ),
        ],
    )?;
    println!("pictures: {}", out.display());
    Ok(())
}
