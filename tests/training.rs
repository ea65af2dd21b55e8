//! A short training run is reproducible: the same seeds give bitwise the same
//! weights and losses, other seeds give others, and the loss goes down.

use adgraph::data::{spiral, Batches};
use adgraph::init::{GlorotUniform, Zeros};
use adgraph::optim::{Adam, Optimizer};
use adgraph::{self as ad, Feed, Graph, RunTime, Tensor};

/// Trains a 2-16-3 MLP with dropout on the spiral set; returns the losses and
/// the final weights.
fn train(seed: u64) -> (Vec<f32>, Vec<Tensor>) {
    let (x, y) = spiral(50, 3, 0).unwrap();
    let g = Graph::with_seed(seed);
    let xs = g.placeholder(ad::shape![None, 2]);
    let ys = g.placeholder(ad::shape![None, 3]);
    let w1 = g.variable(&[2, 16], GlorotUniform::new(), true).unwrap();
    let b1 = g.variable(&[16], Zeros, true).unwrap();
    let w2 = g.variable(&[16, 3], GlorotUniform::new(), true).unwrap();
    let h = ad::relu(&(ad::matmul(&xs, &w1).unwrap() + &b1)).unwrap();
    let h = ad::dropout(&h, 0.1, true).unwrap();
    let logits = ad::matmul(&h, &w2).unwrap();
    let ce = ad::softmax_cross_entropy_loss(&ys, &logits).unwrap();
    let loss = ad::reduce_mean(&ce, ad::Axes::All, false).unwrap();

    let mut opt = Adam::new(0.05);
    let mut rt = RunTime::with_seed(seed);
    let mut batches = Batches::new(x, y, 30, seed).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let (bx, by) = batches.next_batch().unwrap();
        let feed = Feed::new().with(&xs, bx).unwrap().with(&ys, by).unwrap();
        let l = rt
            .forward_backward_cycle(|rt| {
                opt.optimize(rt, &loss, &feed, None)?;
                rt.value(&loss).map(|v| v.sum())
            })
            .unwrap();
        losses.push(l);
    }
    let weights = g
        .variables(true)
        .iter()
        .map(|v| g.variable_value(v).unwrap())
        .collect();
    (losses, weights)
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let (losses_a, weights_a) = train(3);
    let (losses_b, weights_b) = train(3);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&losses_a), bits(&losses_b));
    assert_eq!(weights_a, weights_b);
    let (losses_c, weights_c) = train(4);
    assert_ne!(bits(&losses_a), bits(&losses_c));
    assert_ne!(weights_a, weights_c);
    // And it learns.
    let first: f32 = losses_a[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses_a[55..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.7 * first, "loss {first} -> {last}");
}

/// `optimize` (which updates in place, reading the gradients where backward
/// left them) takes the same step as `compute_gradients` + `apply_gradients`
/// (which copy), bit for bit, and leaves the cycle readable: the gradients as
/// backward made them, an updated variable's value as its new value.
#[test]
fn optimize_in_place_matches_compute_then_apply() {
    let build = || {
        let g = Graph::with_seed(3);
        let x = g.placeholder(ad::shape![None, 4]);
        let w = g.variable(&[4, 3], GlorotUniform::new(), true).unwrap();
        let b = g.variable(&[3], Zeros, true).unwrap();
        let unused = g.variable(&[2], Zeros, true).unwrap();
        let y = ad::tanh(&(ad::matmul(&x, &w).unwrap() + &b)).unwrap();
        let loss = ad::reduce_sum(&(&y * &y), ad::Axes::All, false).unwrap();
        let feed = Feed::new()
            .with(
                &x,
                Tensor::from_shape_fn(ndarray::IxDyn(&[5, 4]), |i| {
                    (i[0] * 4 + i[1]) as f32 * 0.1 - 0.9
                }),
            )
            .unwrap();
        (g, w, b, unused, loss, feed)
    };
    let (g1, w1, b1, u1, loss1, feed1) = build();
    let (g2, w2, b2, u2, loss2, feed2) = build();
    let mut opt1 = Adam::new(0.01);
    let mut opt2 = Adam::new(0.01);
    let (mut rt1, mut rt2) = (RunTime::new(), RunTime::new());
    for _ in 0..3 {
        let (grad_w, value_w) = rt1
            .forward_backward_cycle(|rt| -> ad::Result<_> {
                opt1.optimize(rt, &loss1, &feed1, None)?;
                assert!(rt.grad(&u1).is_err(), "the unused variable has no gradient");
                Ok((rt.grad(&w1)?.clone(), rt.value(&w1)?.clone()))
            })
            .unwrap();
        let want_grad_w = rt2
            .forward_backward_cycle(|rt| -> ad::Result<_> {
                let grads = opt2.compute_gradients(rt, &loss2, &feed2, None)?;
                opt2.apply_gradients(&grads)?;
                Ok(rt.grad(&w2)?.clone())
            })
            .unwrap();
        assert_eq!(grad_w, want_grad_w);
        assert_eq!(value_w, g1.variable_value(&w1).unwrap());
        for (a, b) in [(&w1, &w2), (&b1, &b2), (&u1, &u2)] {
            assert_eq!(g1.variable_value(a).unwrap(), g2.variable_value(b).unwrap());
        }
    }
    let (g0, w0, ..) = build();
    assert_ne!(
        g1.variable_value(&w1).unwrap(),
        g0.variable_value(&w0).unwrap(),
        "the steps moved w"
    );
}

/// Adam splits the update of a large variable (here 90,000 elements) over
/// threads: the same bits on one thread as on three, and the bias-corrected
/// rule of the first step, element by element.
#[test]
fn adam_updates_a_large_variable_the_same_on_any_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let g = Graph::with_seed(5);
            let w = g.variable(&[300, 300], GlorotUniform::new(), true).unwrap();
            let loss = ad::reduce_sum(&ad::tanh(&w).unwrap(), ad::Axes::All, false).unwrap();
            let before = g.variable_value(&w).unwrap();
            let mut opt = Adam::new(0.01);
            let mut rt = RunTime::new();
            let grad = rt
                .forward_backward_cycle(|rt| -> ad::Result<_> {
                    opt.optimize(rt, &loss, &Feed::new(), None)?;
                    Ok(rt.grad(&w)?.clone())
                })
                .unwrap();
            (before, grad, g.variable_value(&w).unwrap())
        })
    };
    let (before, grad, after) = run(1);
    assert_eq!(run(3), (before.clone(), grad.clone(), after.clone()));
    // Step 1: m = 0.1 g, v = 0.001 g², alpha_t = 0.01 * sqrt(0.001) / 0.1.
    let alpha_t = 0.01 * 0.001f64.sqrt() / 0.1;
    for ((&p0, &g), &p1) in before.iter().zip(&grad).zip(&after) {
        let (m, v) = (0.1 * f64::from(g), 0.001 * f64::from(g).powi(2));
        let want = f64::from(p0) - alpha_t * m / (v.sqrt() + 1e-8);
        assert!((f64::from(p1) - want).abs() < 1e-6, "{p1} vs {want}");
    }
}
