//! The spiral demo: a small multi-layer perceptron learns to tell apart the
//! three arms of a "rotating galaxy" of 2-D points that no straight line can
//! separate.
//!
//! Data: 3 spiral arms of 150 points each (`adgraph::data::spiral`, angle noise
//! 0.2), split into 300 training and 150 test points, as in the original
//! framework's `spiral_dataset` notebook. No MNIST files are used: `--data` is
//! accepted (the flags are shared by all demos) but ignored.
//!
//! Model (benchmark workload W1): `2 → 50 → 50 → 3`, ReLU after each hidden
//! layer; weights drawn from a truncated normal (stddev 0.01), biases zero.
//! Loss: mean softmax cross-entropy plus `l2norm(w, 1e-3)` for each of the
//! three weight matrices. Full-batch gradient descent, learning rate 0.1,
//! 10,000 steps.
//!
//! Run:
//!
//! ```text
//! cargo run --release --example spiral
//! cargo run --release --example spiral -- --steps 3000 --out /tmp/spiral
//! cargo run --release --example spiral -- --save /tmp/spiral.safetensors --steps 5000
//! cargo run --release --example spiral -- --load /tmp/spiral.safetensors   # on to 10,000
//! ```
//!
//! Prints `key=value` lines: `steps`, `batch`, `final_loss` (the last step's
//! training loss), `train_accuracy`, `test_accuracy`, `train_seconds` (the
//! steps, test evaluations excluded). Draws to `--out` (default `out/spiral/`):
//! `loss.png`, `accuracy.png` (training accuracy each step, test accuracy every
//! 100 steps) and `decision_regions.png` (the class the network predicts at
//! each point of the plane, with the training points as dots and the test
//! points as rings).

mod common;

use std::path::Path;

use adgraph::data::{spiral, train_test_split, Batches};
use adgraph::init::{TruncatedNormal, Zeros};
use adgraph::optim::GradientDescent;
use adgraph::train::{register_font, report, Trainer};
use adgraph::{self as ad, Feed, Graph, Node, RunTime, Tensor};
use clap::Parser;
use common::{CommonArgs, Res};
use plotters::prelude::*;

/// Points in each spiral arm.
const POINTS_PER_CLASS: usize = 150;
/// Spiral arms, i.e. classes.
const CLASSES: usize = 3;
/// Share of the points held out for testing (150 of 450).
const TEST_FRACTION: f64 = 1.0 / 3.0;
const HIDDEN: usize = 50;
const L2_SCALE: f32 = 1e-3;
const LEARNING_RATE: f32 = 0.1;
/// The notebook's number of steps.
const DEFAULT_STEPS: usize = 10_000;
/// Test accuracy is measured every this many steps (for the accuracy plot).
const EVAL_EVERY: usize = 100;

/// Trains a 2-50-50-3 ReLU network on the spiral data set.
///
/// The data are generated, so --data is ignored. Defaults: 10,000 full-batch
/// (300 points) gradient-descent steps.
#[derive(Parser, Debug)]
#[command(about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// The network's graph nodes.
struct Model {
    x: Node,
    labels: Node,
    logits: Node,
    loss: Node,
}

/// Builds the MLP and its training loss on `graph`.
fn build_model(graph: &Graph) -> ad::Result<Model> {
    let _default = graph.as_default();
    let init = TruncatedNormal::new(0.0, 0.01);
    let x = ad::placeholder(ad::shape![None, 2]);
    let labels = ad::placeholder(ad::shape![None, CLASSES]);

    let w1 = ad::variable(&[2, HIDDEN], init, true)?;
    let b1 = ad::variable(&[HIDDEN], Zeros, true)?;
    let w2 = ad::variable(&[HIDDEN, HIDDEN], init, true)?;
    let b2 = ad::variable(&[HIDDEN], Zeros, true)?;
    let w3 = ad::variable(&[HIDDEN, CLASSES], init, true)?;
    let b3 = ad::variable(&[CLASSES], Zeros, true)?;

    let h1 = ad::relu(&ad::add(&ad::matmul(&x, &w1)?, &b1)?)?;
    let h2 = ad::relu(&ad::add(&ad::matmul(&h1, &w2)?, &b2)?)?;
    let logits = ad::add(&ad::matmul(&h2, &w3)?, &b3)?;

    let cross_entropy = ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(&labels, &logits)?,
        ad::Axes::All,
        false,
    )?;
    let mut loss = cross_entropy;
    for w in [&w1, &w2, &w3] {
        loss = ad::add(&loss, &ad::l2norm(w, L2_SCALE)?)?;
    }
    Ok(Model {
        x,
        labels,
        logits,
        loss,
    })
}

/// The network's logits for the points `x`, in a cycle of their own.
fn predict(rt: &mut RunTime, model: &Model, x: &Tensor) -> ad::Result<Tensor> {
    let feed = Feed::new().with(&model.x, x.clone())?;
    rt.forward_backward_cycle(|rt| rt.forward(&model.logits, &feed).cloned())
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res {
    common::init()?;
    let common = &args.common;
    common.no_sync_bn("spiral")?;
    if let Some(dir) = &common.data {
        println!(
            "data: the spiral set is generated; --data {} is ignored",
            dir.display()
        );
    }

    // The data: 450 points, 300 to train on, 150 to test on.
    let (x_all, y_all) = spiral(POINTS_PER_CLASS, CLASSES, common.seed)?;
    let split = train_test_split(&x_all, &y_all, TEST_FRACTION, common.seed)?;
    let n_train = split.x_train.shape()[0];
    println!(
        "data: spiral, {CLASSES} classes, {} train and {} test points",
        n_train,
        split.x_test.shape()[0]
    );
    let batch = common.batch_or(n_train)?;
    let steps = common.steps_or(DEFAULT_STEPS, n_train, batch);
    println!("training: {steps} steps, batch {batch}, gradient descent lr {LEARNING_RATE}");

    // The graph and the trainer, resumed if --load was given.
    let graph = Graph::with_seed(common.seed);
    let model = build_model(&graph)?;
    let batches = Batches::new(
        split.x_train.clone(),
        split.y_train.clone(),
        batch,
        common.seed,
    )?;
    let mut trainer = common.checkpointing(
        Trainer::new(&graph)
            .optimizer(GradientDescent::new(LEARNING_RATE))
            .data(batches)
            .steps(steps)
            .eval_every(EVAL_EVERY),
    )?;

    // Training; the test accuracy every 100 steps and at the end.
    let summary = trainer.run_with_eval(
        common::classifier_step(&model.x, &model.labels, &model.logits, &model.loss),
        |e| {
            let logits = predict(e.rt, &model, &split.x_test)?;
            e.record("accuracy", common::accuracy(&logits, &split.y_test));
            Ok(())
        },
    )?;

    // Evaluation.
    let rt = trainer.rt_mut();
    let train_accuracy = common::accuracy(&predict(rt, &model, &split.x_train)?, &split.y_train);
    let test_accuracy = common::accuracy(&predict(rt, &model, &split.x_test)?, &split.y_test);
    let final_loss = summary.final_loss().unwrap_or(f32::NAN);
    report(&[
        ("steps", summary.step.to_string()),
        ("batch", batch.to_string()),
        ("final_loss", final_loss.to_string()),
        ("train_accuracy", format!("{train_accuracy:.4}")),
        ("test_accuracy", format!("{test_accuracy:.4}")),
        ("train_seconds", format!("{:.2}", summary.train_seconds)),
    ]);

    // Pictures.
    let out = common.out_dir("spiral")?;
    common::plot_loss_and_accuracy(
        &out,
        "spiral MLP",
        "loss",
        "training loss",
        &summary.history,
    )?;
    let regions = out.join("decision_regions.png");
    plot_decision_regions(&regions, trainer.rt_mut(), &model, &split)?;
    println!("pictures: {}", out.display());
    Ok(())
}

/// Half-width of the square of the plane shown (the points lie in the unit disc).
const EXTENT: f64 = 1.15;
/// Grid cells along each side of the decision-region picture.
const GRID: usize = 240;
/// Light fills of the regions and dark colours of the points, one per class.
const REGION_COLOURS: [RGBColor; CLASSES] = [
    RGBColor(250, 200, 200),
    RGBColor(200, 235, 200),
    RGBColor(200, 210, 250),
];
const POINT_COLOURS: [RGBColor; CLASSES] = [
    RGBColor(200, 30, 30),
    RGBColor(20, 140, 20),
    RGBColor(30, 60, 210),
];

/// Classifies a dense grid over the plane, colours each cell by the predicted
/// class and draws the training points (dots) and test points (rings) on top.
fn plot_decision_regions(
    path: &Path,
    rt: &mut RunTime,
    model: &Model,
    split: &ad::data::Split,
) -> Res {
    // The centres of the grid cells, row by row.
    let cell = 2.0 * EXTENT / GRID as f64;
    let centre = |i: usize| -EXTENT + (i as f64 + 0.5) * cell;
    let mut grid = Vec::with_capacity(GRID * GRID * 2);
    for i in 0..GRID {
        for j in 0..GRID {
            grid.push(centre(j) as f32);
            grid.push(centre(i) as f32);
        }
    }
    let grid = Tensor::from_shape_vec(ndarray::IxDyn(&[GRID * GRID, 2]), grid)?;
    let classes = common::argmax_rows(&predict(rt, model, &grid)?);

    register_font();
    let root = BitMapBackend::new(path, (760, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("spiral MLP: decision regions", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(-EXTENT..EXTENT, -EXTENT..EXTENT)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(classes.iter().enumerate().map(|(k, &class)| {
        let (x, y) = (centre(k % GRID), centre(k / GRID));
        let half = cell / 2.0;
        Rectangle::new(
            [(x - half, y - half), (x + half, y + half)],
            REGION_COLOURS[class % CLASSES].filled(),
        )
    }))?;
    for (points, labels, filled) in [
        (&split.x_train, &split.y_train, true),
        (&split.x_test, &split.y_test, false),
    ] {
        let classes = common::argmax_rows(labels);
        chart.draw_series(points.outer_iter().zip(classes).map(|(p, class)| {
            let colour = POINT_COLOURS[class % CLASSES];
            let style = if filled {
                colour.filled()
            } else {
                colour.stroke_width(2)
            };
            Circle::new((f64::from(p[0]), f64::from(p[1])), 4, style)
        }))?;
    }
    root.present()?;
    Ok(())
}
