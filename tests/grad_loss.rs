//! Gradient nodes of the losses: second derivatives (finite differences of
//! the gradient graph), the label gradients, and the fused gradient ops'
//! cached and recomputed paths.

use adgraph as ad;
use adgraph::gradcheck::{check_gradients, GradCheck};
use adgraph::{Feed, Graph, Node, RunTime, Tensor, TensorShape};
use ndarray::{Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Steps of 1e-2 on inputs of magnitude ~1 (f32 sums), tolerances to match.
const SECOND_ORDER: GradCheck = GradCheck {
    eps: 1e-2,
    atol: 1e-2,
    rtol: 1e-2,
    seed: 3,
};

fn random(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(lo..hi))
}

fn random_shape(rng: &mut ChaCha8Rng, rank: usize) -> Vec<usize> {
    (0..rank).map(|_| rng.gen_range(1..=4)).collect()
}

/// Random soft labels (rows summing to 1) or one-hot labels.
fn random_labels(rng: &mut ChaCha8Rng, shape: &[usize], soft: bool) -> Tensor {
    let n = *shape.last().unwrap();
    let mut t = Tensor::zeros(IxDyn(shape));
    for mut row in t.lanes_mut(Axis(shape.len() - 1)) {
        if soft {
            row.mapv_inplace(|_| rng.gen_range(0.01f32..1.0));
            let s = row.sum();
            row.mapv_inplace(|v| v / s);
        } else {
            row[rng.gen_range(0..n)] = 1.0;
        }
    }
    t
}

/// The only gradient of `ys` w.r.t. `x`.
fn grad(y: &Node, x: &Node) -> Node {
    ad::gradients(&[y], &[x], None).unwrap()[0].clone().unwrap()
}

// ---------------------------------------------------------------- softmax CE

#[test]
fn softmax_cross_entropy_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for rank in 1..=3 {
        for soft in [false, true] {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let labels = g.placeholder(shape.as_slice());
            let logits = g.placeholder(shape.as_slice());
            let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
            let feed = ad::feed! {
                labels => random_labels(&mut rng, &shape, soft),
                logits => random(&mut rng, &shape, -2.0, 2.0),
            }
            .unwrap();
            let report = SECOND_ORDER
                .check_second_order(&loss, &[&logits], &feed)
                .unwrap_or_else(|e| panic!("{shape:?} soft {soft}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>());
        }
    }
}

/// The upstream gradient depends on the logits too (a loss of the loss):
/// the gradient node's gradient w.r.t. its upstream input.
#[test]
fn softmax_cross_entropy_second_derivatives_through_the_upstream_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for shape in [vec![4usize, 3], vec![2, 3, 4]] {
        let g = Graph::new();
        let labels = g.placeholder(shape.as_slice());
        let logits = g.placeholder(shape.as_slice());
        let batch = &shape[..shape.len() - 1];
        let outer = g.placeholder(batch);
        let ce = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
        let loss = ad::sigmoid_cross_entropy_loss(&outer, &ce).unwrap();
        let feed = ad::feed! {
            labels => random_labels(&mut rng, &shape, true),
            logits => random(&mut rng, &shape, -2.0, 2.0),
            outer => random(&mut rng, batch, 0.0, 1.0),
        }
        .unwrap();
        SECOND_ORDER
            .check_second_order(&loss, &[&logits], &feed)
            .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
    }
}

/// The labels take no gradient (TF1's softmax_cross_entropy_with_logits), at
/// the first order and through the gradient node.
#[test]
fn softmax_cross_entropy_labels_take_no_gradient_at_any_order() {
    let g = Graph::new();
    let labels = g.placeholder([2, 3]);
    let logits = g.placeholder([2, 3]);
    let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let both = ad::gradients(&[&loss], &[&labels, &logits], None).unwrap();
    assert!(both[0].is_none());
    let dz = both[1].clone().unwrap();
    assert_eq!(dz.op_type(), "SoftmaxCrossEntropyGrad");
    let s = ad::reduce_sum(&dz, ad::Axes::All, false).unwrap();
    let second = ad::gradients(&[&s], &[&labels, &logits], None).unwrap();
    assert!(second[0].is_none());
    assert!(second[1].is_some());
}

/// The gradient node reads the probabilities the loss kept, or recomputes
/// them (an inference pass keeps none; a node that is not the loss): the
/// same values.
#[test]
fn softmax_cross_entropy_gradient_recomputes_the_probabilities() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shape = [5usize, 4];
    let g = Graph::new();
    let labels = g.placeholder(shape);
    let logits = g.placeholder(shape);
    let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let up = g.placeholder([5]);
    let dz = ad::gradients(&[&loss], &[&logits], Some(&[&up])).unwrap()[0]
        .clone()
        .unwrap();
    let not_the_loss = g.placeholder([5]);
    let op = ad::ops::loss::SoftmaxCrossEntropyGrad;
    let recomputed = g
        .add_op(op, &[&up, &labels, &logits, &not_the_loss])
        .unwrap();
    let uv = random(&mut rng, &[5], -1.0, 1.0);
    let feed = ad::feed! {
        labels => random_labels(&mut rng, &shape, true),
        logits => random(&mut rng, &shape, -3.0, 3.0),
        up => uv.clone(),
        not_the_loss => uv,
    }
    .unwrap();
    let mut rt = RunTime::new();
    let kept = rt.forward(&dz, &feed).unwrap().clone();
    let inferred = RunTime::new().infer(&[&dz], &feed).unwrap().remove(0);
    let other = RunTime::new().forward(&recomputed, &feed).unwrap().clone();
    assert_eq!(kept, inferred);
    assert_eq!(kept, other);
    // Wrong arity through add_op.
    let op = ad::ops::loss::SoftmaxCrossEntropyGrad;
    assert!(g.add_op(op, &[&up, &labels, &logits]).is_err());
}

// ---------------------------------------------------------------- sigmoid CE

#[test]
fn sigmoid_cross_entropy_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for rank in 0..=3 {
        let shape = random_shape(&mut rng, rank);
        let g = Graph::new();
        let labels = g.placeholder(shape.as_slice());
        let logits = g.placeholder(shape.as_slice());
        let loss = ad::sigmoid_cross_entropy_loss(&labels, &logits).unwrap();
        let feed = ad::feed! {
            labels => random(&mut rng, &shape, 0.0, 1.0),
            logits => random(&mut rng, &shape, -3.0, 3.0),
        }
        .unwrap();
        let report = SECOND_ORDER
            .check_second_order(&loss, &[&labels, &logits], &feed)
            .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert_eq!(report.elements, 2 * shape.iter().product::<usize>());
        SECOND_ORDER
            .check_second_order(&loss, &[&logits], &feed)
            .unwrap_or_else(|e| panic!("{shape:?}, logits only: {e}"));
    }
}

/// TensorFlow's label gradient: `-logits * upstream`.
#[test]
fn sigmoid_cross_entropy_label_gradient() {
    let g = Graph::new();
    let labels = g.placeholder([3]);
    let logits = g.placeholder([3]);
    let loss = ad::sigmoid_cross_entropy_loss(&labels, &logits).unwrap();
    let feed = ad::feed! { labels => [0.0, 0.5, 1.0], logits => [2.0, -1.0, 0.25] }.unwrap();
    let mut rt = RunTime::new();
    rt.backward(&loss, &feed, Some(ad::tensor([1.0, 2.0, -4.0])))
        .unwrap();
    assert_eq!(rt.grad(&labels).unwrap(), &ad::tensor([-2.0, 2.0, 1.0]));
    check_gradients(&loss, &[&labels, &logits], &feed).unwrap();
    let dy = grad(&loss, &labels);
    assert_eq!(dy.op_type(), "SigmoidCrossEntropyGrad");
    // Wrong arity through add_op.
    let op = ad::ops::loss::SigmoidCrossEntropyGrad {
        of: ad::ops::loss::CrossEntropyInput::Logits,
    };
    assert!(g.add_op(op, &[&labels, &logits]).is_err());
}

// ---------------------------------------------------------------- l2norm

#[test]
fn l2norm_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for scale in [1.0f32, 0.5, -0.3] {
        for rank in 0..=3 {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = ad::l2norm(&x, scale).unwrap();
            let feed = Feed::new()
                .with(&x, random(&mut rng, &shape, -2.0, 2.0))
                .unwrap();
            let report = SECOND_ORDER
                .check_second_order(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("{shape:?} scale {scale}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>());
        }
    }
    // The gradient keeps x's static shape, unknown dims included.
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 3]);
    let y = ad::l2norm(&x, 2.0).unwrap();
    assert_eq!(grad(&y, &x).shape(), TensorShape::new(vec![None, Some(3)]));
}
