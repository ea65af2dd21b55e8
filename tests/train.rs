//! The training loop (`adgraph::train`): it trains a small model, evaluates on
//! its cadence, resumes from a checkpoint bit for bit (variables, one or two
//! optimizers, step, data position, dropout generator), refuses a checkpoint
//! that does not fit without changing anything, and draws its curves.

use std::path::PathBuf;

use adgraph::checkpoint::Checkpoint;
use adgraph::data::{spiral, Batches};
use adgraph::init::{GlorotUniform, Zeros};
use adgraph::optim::{Adam, GradientDescent};
use adgraph::train::{plot_lines, Resumed, Series, Step, StepOutput, Trainer};
use adgraph::{self as ad, Feed, Graph, Node, RunTime, Tensor};

/// A 2-32-3 MLP with dropout on the spiral set.
struct Model {
    graph: Graph,
    xs: Node,
    ys: Node,
    logits: Node,
    loss: Node,
}

fn model(seed: u64) -> Model {
    let graph = Graph::with_seed(seed);
    let xs = graph.placeholder(ad::shape![None, 2]);
    let ys = graph.placeholder(ad::shape![None, 3]);
    let w1 = graph
        .variable(&[2, 32], GlorotUniform::new(), true)
        .unwrap();
    let b1 = graph.variable(&[32], Zeros, true).unwrap();
    let w2 = graph
        .variable(&[32, 3], GlorotUniform::new(), true)
        .unwrap();
    let h = ad::relu(&(ad::matmul(&xs, &w1).unwrap() + &b1)).unwrap();
    let h = ad::dropout(&h, 0.3, true).unwrap();
    let logits = ad::matmul(&h, &w2).unwrap();
    let ce = ad::softmax_cross_entropy_loss(&ys, &logits).unwrap();
    let loss = ad::reduce_mean(&ce, ad::Axes::All, false).unwrap();
    Model {
        graph,
        xs,
        ys,
        logits,
        loss,
    }
}

/// The spiral set in shuffled batches of 32 (seeded: the same in every run).
fn batches() -> Batches {
    let (x, y) = spiral(60, 3, 0).unwrap();
    Batches::new(x, y, 32, 5).unwrap()
}

/// A trainer of `m` with Adam, `steps` steps, the run time seeded by `rt_seed`, no bar.
fn trainer(m: &Model, steps: usize, rt_seed: u64) -> Trainer {
    Trainer::new(&m.graph)
        .run_time(RunTime::with_seed(rt_seed))
        .optimizer(Adam::new(0.02))
        .data(batches())
        .steps(steps)
        .progress(false)
}

/// One step of `m`: an update on the next batch, the batch's mean logit as a metric.
fn step(m: &Model) -> impl FnMut(&mut Step<'_>) -> ad::Result<StepOutput> + '_ {
    move |s| {
        let (x, y) = s.next_batch()?;
        let feed = Feed::new().with(&m.xs, x)?.with(&m.ys, y)?;
        let (loss, mean_logit) = s.minimize_with(&m.loss, &feed, |rt| {
            Ok(f64::from(rt.value(&m.logits)?.mean().unwrap_or(0.0)))
        })?;
        Ok(StepOutput::new(loss).metric("mean_logit", mean_logit))
    }
}

fn weights(g: &Graph) -> Vec<Tensor> {
    g.variables(false)
        .iter()
        .map(|v| g.variable_value(v).unwrap())
        .collect()
}

fn loss_bits(points: &[(f64, f64)]) -> Vec<(usize, u32)> {
    points
        .iter()
        .map(|&(s, l)| (s as usize, (l as f32).to_bits()))
        .collect()
}

/// A fresh, empty folder.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adgraph-train-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_loop_trains_a_small_model() {
    let m = model(1);
    let mut t = trainer(&m, 150, 1);
    let summary = t.run(step(&m)).unwrap();
    assert_eq!((summary.start_step, summary.step), (0, 150));
    assert_eq!(summary.steps_run(), 150);
    let loss = summary.history.loss();
    assert_eq!(loss.len(), 150);
    assert_eq!(loss[0].0, 1.0, "steps are counted from 1");
    assert_eq!(summary.history.metric("mean_logit").len(), 150);
    assert_eq!(summary.history.running_loss().len(), 150);
    assert_eq!(
        summary.final_loss().map(f32::to_bits),
        Some((loss[149].1 as f32).to_bits())
    );
    let mean = |p: &[(f64, f64)]| p.iter().map(|q| q.1).sum::<f64>() / p.len() as f64;
    assert!(
        mean(&loss[140..]) < 0.6 * mean(&loss[..10]),
        "the loss went from {} to {}",
        mean(&loss[..10]),
        mean(&loss[140..])
    );
    assert_eq!(t.step_count(), 150);
    // Nothing left to do: a second run takes no step.
    assert_eq!(t.run(step(&m)).unwrap().steps_run(), 0);
}

#[test]
fn evaluations_run_at_start_every_n_steps_and_at_end() {
    let m = model(2);
    let mut seen = Vec::new();
    let summary = trainer(&m, 10, 2)
        .eval_every(3)
        .eval_at_start(true)
        .run_with_eval(step(&m), |e| {
            seen.push((e.step(), e.is_start(), e.is_end(), e.last().is_some()));
            e.record("twice the step", 2.0 * e.step() as f64);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        seen,
        [
            (0, true, false, false),
            (3, false, false, true),
            (6, false, false, true),
            (9, false, false, true),
            (10, false, true, true),
        ]
    );
    let evals = summary.history.eval("twice the step");
    assert_eq!(
        evals,
        [
            (0.0, 0.0),
            (3.0, 6.0),
            (6.0, 12.0),
            (9.0, 18.0),
            (10.0, 20.0)
        ]
    );

    // Without the evaluation at the end, none at the last step either, even a multiple of N.
    let mut steps = Vec::new();
    trainer(&m, 9, 2)
        .eval_every(3)
        .eval_at_end(false)
        .run_with_eval(step(&m), |e| {
            steps.push(e.step());
            Ok(())
        })
        .unwrap();
    assert_eq!(steps, [3, 6]);
}

#[test]
fn a_resumed_run_ends_with_the_same_bits_as_an_uninterrupted_one() {
    let dir = temp_dir("resume");
    let path = dir.join("ck.safetensors");

    let m = model(3);
    let mut straight = trainer(&m, 40, 3);
    let all = straight.run(step(&m)).unwrap();

    // Stopped after 20 steps (checkpoints at 10 and 20)...
    let first = model(3);
    let mut t = trainer(&first, 20, 3).checkpoint(&path, Some(10));
    t.run(step(&first)).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.metadata["step"], "20");
    assert!(ckpt.metadata.contains_key("rng"));
    assert!(ckpt.get("optimizer/adam/t").is_some());
    drop(t);

    // ...and resumed in a fresh graph and run time with other seeds: everything
    // comes from the checkpoint.
    let m2 = model(11);
    let mut resumed = trainer(&m2, 40, 12).checkpoint(&path, Some(10));
    let what = resumed.resume(&path).unwrap();
    assert_eq!(
        what,
        Resumed::Training {
            path: path.clone(),
            step: 20
        }
    );
    assert_eq!(
        what.to_string(),
        format!("training state from {} at step 20", path.display())
    );
    assert_eq!(resumed.step_count(), 20);
    let rest = resumed.run(step(&m2)).unwrap();
    assert_eq!(rest.start_step, 20);
    assert_eq!(
        loss_bits(rest.history.loss()),
        loss_bits(&all.history.loss()[20..]),
        "the losses of steps 21 to 40"
    );
    assert_eq!(
        rest.final_loss().unwrap().to_bits(),
        all.final_loss().unwrap().to_bits()
    );
    assert_eq!(weights(&m2.graph), weights(&m.graph));
    assert_eq!(Checkpoint::load(&path).unwrap().metadata["step"], "40");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_variables_only_restores_the_variables_from_step_zero() {
    let dir = temp_dir("variables");
    let path = dir.join("w.safetensors");
    let m = model(4);
    m.graph.save_variables(&path, false).unwrap();
    let m2 = model(5);
    assert_ne!(weights(&m2.graph), weights(&m.graph));
    let mut t = trainer(&m2, 5, 5);
    let what = t.resume(&path).unwrap();
    assert_eq!(
        what.to_string(),
        format!("variables from {}", path.display())
    );
    assert_eq!(t.step_count(), 0);
    assert_eq!(weights(&m2.graph), weights(&m.graph));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() {
    let dir = temp_dir("misfit");
    let path = dir.join("ck.safetensors");
    let m = model(6);
    trainer(&m, 3, 6)
        .checkpoint(&path, None)
        .run(step(&m))
        .unwrap();

    // Adam's state into gradient descent.
    let m2 = model(7);
    let before = weights(&m2.graph);
    let mut t = Trainer::new(&m2.graph)
        .optimizer(GradientDescent::new(0.1))
        .data(batches())
        .steps(5)
        .progress(false);
    let err = t.resume(&path).unwrap_err().to_string();
    assert!(err.contains("optimizer state"), "{err}");
    assert_eq!(t.step_count(), 0);
    assert_eq!(weights(&m2.graph), before);

    // A graph with one more variable: the optimizer's state fits, the
    // variables do not; the optimizer is put back as it was.
    let m3 = model(8);
    m3.graph.variable(&[1], Zeros, true).unwrap();
    let before = weights(&m3.graph);
    let mut t = trainer(&m3, 5, 8);
    let err = t.resume(&path).unwrap_err().to_string();
    assert!(err.contains("does not match the graph"), "{err}");
    let state = t.training_checkpoint().unwrap();
    assert_eq!(
        state.get("optimizer/adam/t"),
        Some(&ad::optim::step_to_tensor(0))
    );
    assert!(state.get("optimizer/adam/m/Variable").is_none());
    assert_eq!(t.step_count(), 0);
    assert_eq!(weights(&m3.graph), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A toy two-player model: two scalars, each with its own loss and optimizer.
fn two_players(seed: u64) -> (Graph, [Node; 2], [Node; 2]) {
    let g = Graph::with_seed(seed);
    let a = g.variable(&[1], GlorotUniform::new(), true).unwrap();
    let b = g.variable(&[1], GlorotUniform::new(), true).unwrap();
    // a chases b; b wants a + b = 1.
    let square_sum = |d: Node| ad::reduce_sum(&(&d * &d), ad::Axes::All, false).unwrap();
    let la = square_sum((&a - &b).check().unwrap());
    let lb = square_sum((&a + &b - 1.0).check().unwrap());
    (g, [a, b], [la, lb])
}

/// One step of each player on its own variable.
fn play(
    vars: &[Node; 2],
    losses: &[Node; 2],
) -> impl FnMut(&mut Step<'_>) -> ad::Result<StepOutput> {
    let (vars, losses) = (vars.clone(), losses.clone());
    move |s| {
        let mut total = 0.0;
        for i in 0..2 {
            let (opt, var, loss) = (&mut s.optimizers[i], &vars[i], &losses[i]);
            total += s.rt.forward_backward_cycle(|rt| -> ad::Result<f32> {
                opt.optimize(rt, loss, &Feed::new(), Some(std::slice::from_ref(var)))?;
                Ok(rt.value(loss)?.sum())
            })?;
        }
        Ok(StepOutput::new(total))
    }
}

#[test]
fn two_named_optimizers_are_saved_apart_and_resumed() {
    let dir = temp_dir("two");
    let path = dir.join("ck.safetensors");
    let build = |seed| {
        let (g, vars, losses) = two_players(seed);
        let t = Trainer::new(&g)
            .named_optimizer("a", Adam::new(0.1))
            .named_optimizer("b", Adam::new(0.05))
            .steps(12)
            .progress(false)
            .metadata("example", "two players");
        (g, vars, losses, t)
    };
    let (g, vars, losses, mut straight) = build(1);
    let all = straight.run(play(&vars, &losses)).unwrap();

    let (_, vars1, losses1, first) = build(1);
    let mut first = first.steps(5).checkpoint(&path, None);
    first.run(play(&vars1, &losses1)).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    assert!(ckpt.get("optimizer/a/adam/t").is_some());
    assert!(ckpt.get("optimizer/b/adam/t").is_some());
    assert_eq!(ckpt.metadata["example"], "two players");
    assert!(!ckpt.metadata.contains_key("epoch"), "no data, no position");

    let (g2, vars2, losses2, mut resumed) = build(2);
    resumed.resume(&path).unwrap();
    let rest = resumed.run(play(&vars2, &losses2)).unwrap();
    assert_eq!(
        loss_bits(rest.history.loss()),
        loss_bits(&all.history.loss()[5..])
    );
    assert_eq!(weights(&g2), weights(&g));

    // A trainer whose optimizers have other names refuses the checkpoint.
    let (g3, _, _) = two_players(3);
    let before = weights(&g3);
    let mut other = Trainer::new(&g3)
        .named_optimizer("a", Adam::new(0.1))
        .named_optimizer("c", Adam::new(0.05));
    let err = other.resume(&path).unwrap_err().to_string();
    assert!(err.contains("optimizer/b/"), "{err}");
    assert_eq!(weights(&g3), before);

    // Several optimizers must be named, and apart.
    let (g4, vars4, losses4) = two_players(4);
    let mut unnamed = Trainer::new(&g4)
        .optimizer(Adam::new(0.1))
        .optimizer(Adam::new(0.1))
        .steps(1)
        .progress(false);
    assert!(unnamed.run(play(&vars4, &losses4)).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_loss_stops_the_run_when_asked() {
    let m = model(9);
    let nan_at_3 = |s: &mut Step<'_>| -> ad::Result<StepOutput> {
        let loss = if s.index() == 2 { f32::NAN } else { 1.0 };
        Ok(StepOutput::new(loss))
    };
    let err = trainer(&m, 5, 9)
        .stop_on_non_finite(true)
        .run(nan_at_3)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("step 3: the loss is not finite (NaN)"),
        "{err}"
    );
    let summary = trainer(&m, 5, 9).run(nan_at_3).unwrap();
    assert_eq!(summary.step, 5);
}

#[test]
fn lengths_in_epochs_and_the_one_optimizer_of_minimize() {
    let m = model(10);
    // 180 examples in batches of 32: 2.5 epochs are 15 steps.
    assert_eq!(trainer(&m, 0, 10).epochs(2.5).total_steps().unwrap(), 15);
    assert!(Trainer::new(&m.graph).epochs(1.0).total_steps().is_err());
    let mut none = Trainer::new(&m.graph)
        .data(batches())
        .steps(1)
        .progress(false);
    let err = none.run(step(&m)).unwrap_err().to_string();
    assert!(err.contains("exactly one optimizer"), "{err}");
}

#[test]
fn curves_are_drawn_as_png() {
    let dir = temp_dir("curves");
    let m = model(11);
    let summary = trainer(&m, 20, 11)
        .eval_every(5)
        .run_with_eval(step(&m), |e| {
            e.record("mean_logit", 0.5);
            e.record("test loss", 1.0 / (1.0 + e.step() as f64));
            Ok(())
        })
        .unwrap();
    let files = summary.history.plot(&dir, "spiral MLP").unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["loss.png", "mean_logit.png", "test_loss.png"]);
    let lines = dir.join("lines.png");
    plot_lines(
        &lines,
        "a line",
        "x",
        "y",
        &[Series::new("y = x", vec![(0.0, 0.0), (1.0, 1.0)])],
    )
    .unwrap();
    for f in files.iter().chain([&lines]) {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", f.display());
        assert!(bytes.len() > 1000, "{}", f.display());
    }
    // A folder that is not there is an error, not a panic.
    assert!(summary
        .history
        .plot(&dir.join("missing"), "spiral MLP")
        .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
