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
