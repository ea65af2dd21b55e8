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

// ---------------------------------------------------------------- sparse softmax CE

/// Random class indices (whole-number floats) in `[0, classes)`.
fn random_classes(rng: &mut ChaCha8Rng, shape: &[usize], classes: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(0..classes) as f32)
}

/// The one-hot form of sparse labels, for the dense loss.
fn one_hot(labels: &Tensor, classes: usize) -> Tensor {
    let mut shape = labels.shape().to_vec();
    shape.push(classes);
    let mut t = Tensor::zeros(IxDyn(&shape));
    for (row, &l) in t
        .lanes_mut(Axis(shape.len() - 1))
        .into_iter()
        .zip(labels.iter())
    {
        let mut row = row;
        row[l as usize] = 1.0;
    }
    t
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} is {g}, want {w}"
        );
    }
}

/// Sparse labels give the dense loss's values and gradients for their
/// one-hot form, sequential and parallel (large) arrays alike, and logits
/// of any finite magnitude stay finite.
#[test]
fn sparse_softmax_cross_entropy_matches_the_dense_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (batch, classes, scale) in [
        (vec![], 5usize, 2.0f32),
        (vec![7], 1, 2.0),
        (vec![7], 3, 2.0),
        (vec![4, 5], 27, 3.0),
        (vec![33], 8, 1e4),
        (vec![3000], 27, 3.0), // parallel blocks of rows
        (vec![40, 1700], 2, 3.0),
        (vec![5], 64, 3.0),
        (vec![3, 5], 65, 3.0), // wide rows, one at a time
        (vec![700], 100, 3.0), // wide rows in parallel
        (vec![9], 300, 1e4),
    ] {
        let mut shape = batch.clone();
        shape.push(classes);
        let g = Graph::new();
        let labels = g.placeholder(batch.as_slice());
        let dense_labels = g.placeholder(shape.as_slice());
        let logits = g.placeholder(shape.as_slice());
        let sparse = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
        let dense = ad::softmax_cross_entropy_loss(&dense_labels, &logits).unwrap();
        assert_eq!(sparse.shape(), TensorShape::known(&batch));
        let up = g.placeholder(batch.as_slice());
        let ds = ad::gradients(&[&sparse], &[&logits], Some(&[&up])).unwrap()[0]
            .clone()
            .unwrap();
        let dd = ad::gradients(&[&dense], &[&logits], Some(&[&up])).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(ds.op_type(), "SparseSoftmaxCrossEntropyGrad");
        assert_eq!(ds.shape(), TensorShape::known(&shape));
        let y = random_classes(&mut rng, &batch, classes);
        let feed = ad::feed! {
            labels => y.clone(),
            dense_labels => one_hot(&y, classes),
            logits => random(&mut rng, &shape, -scale, scale),
            up => random(&mut rng, &batch, -1.0, 1.0),
        }
        .unwrap();
        let mut rt = RunTime::new();
        let got = rt.evaluate(&[&sparse, &dense, &ds, &dd], &feed).unwrap();
        let what = format!("{shape:?} scale {scale}");
        assert!(got[0].iter().all(|v| v.is_finite()), "{what}");
        assert_close(&format!("{what} loss"), &got[0], &got[1], 1e-5);
        assert_close(&format!("{what} grad"), &got[2], &got[3], 1e-6);
    }
}

#[test]
fn sparse_softmax_cross_entropy_first_and_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for rank in 1..=3 {
        for classes in [1usize, 2, 5, 11, 70] {
            let mut shape = random_shape(&mut rng, rank - 1);
            let batch = shape.clone();
            shape.push(classes);
            let g = Graph::new();
            let labels = g.placeholder(batch.as_slice());
            let logits = g.placeholder(shape.as_slice());
            let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
            let feed = ad::feed! {
                labels => random_classes(&mut rng, &batch, classes),
                logits => random(&mut rng, &shape, -2.0, 2.0),
            }
            .unwrap();
            let what = format!("{shape:?}");
            check_gradients(&loss, &[&logits], &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
            let report = SECOND_ORDER
                .check_second_order(&loss, &[&logits], &feed)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>());
        }
    }
}

/// The upstream gradient depends on the logits too (a loss of the loss):
/// the gradient node's gradient w.r.t. its upstream input, and a third
/// derivative's worth of graph (the second derivative of the gradient node).
#[test]
fn sparse_softmax_cross_entropy_second_derivatives_through_the_upstream_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (batch, classes) in [(vec![4usize], 3usize), (vec![2, 3], 4)] {
        let mut shape = batch.clone();
        shape.push(classes);
        let g = Graph::new();
        let labels = g.placeholder(batch.as_slice());
        let logits = g.placeholder(shape.as_slice());
        let outer = g.placeholder(batch.as_slice());
        let ce = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
        let loss = ad::sigmoid_cross_entropy_loss(&outer, &ce).unwrap();
        let feed = ad::feed! {
            labels => random_classes(&mut rng, &batch, classes),
            logits => random(&mut rng, &shape, -2.0, 2.0),
            outer => random(&mut rng, &batch, 0.0, 1.0),
        }
        .unwrap();
        SECOND_ORDER
            .check_second_order(&loss, &[&logits], &feed)
            .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        // The first derivative's gradient graph, checked at the second order.
        let dz = grad(&loss, &logits);
        let s = ad::reduce_sum(&ad::tanh(&dz).unwrap(), ad::Axes::All, false).unwrap();
        SECOND_ORDER
            .check_second_order(&s, &[&logits], &feed)
            .unwrap_or_else(|e| panic!("{shape:?}, third order: {e}"));
    }
}

/// The labels take no gradient, at the first order and through the gradient node.
#[test]
fn sparse_softmax_cross_entropy_labels_take_no_gradient_at_any_order() {
    let g = Graph::new();
    let labels = g.placeholder([2]);
    let logits = g.placeholder([2, 3]);
    let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let both = ad::gradients(&[&loss], &[&labels, &logits], None).unwrap();
    assert!(both[0].is_none());
    let dz = both[1].clone().unwrap();
    let s = ad::reduce_sum(&ad::square(&dz).unwrap(), ad::Axes::All, false).unwrap();
    let second = ad::gradients(&[&s], &[&labels, &logits], None).unwrap();
    assert!(second[0].is_none());
    assert!(second[1].is_some());
    let feed =
        ad::feed! { labels => [0.0, 2.0], logits => [[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]] }.unwrap();
    SECOND_ORDER
        .check_second_order(&loss, &[&logits], &feed)
        .unwrap();
}

/// The gradient node reads the probabilities the loss kept, or recomputes
/// them (an inference pass keeps none; a node that is not the loss): the
/// same values, bit for bit, sequential and parallel.
#[test]
fn sparse_softmax_cross_entropy_gradient_recomputes_the_probabilities() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (rows, classes) in [(5usize, 4usize), (3000, 27), (7, 100), (700, 100)] {
        let g = Graph::new();
        let labels = g.placeholder([rows]);
        let logits = g.placeholder([rows, classes]);
        let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
        let up = g.placeholder([rows]);
        let dz = ad::gradients(&[&loss], &[&logits], Some(&[&up])).unwrap()[0]
            .clone()
            .unwrap();
        let not_the_loss = g.placeholder([rows]);
        let op = ad::ops::loss::SparseSoftmaxCrossEntropyGrad;
        let recomputed = g
            .add_op(op, &[&up, &labels, &logits, &not_the_loss])
            .unwrap();
        let uv = random(&mut rng, &[rows], -1.0, 1.0);
        let feed = ad::feed! {
            labels => random_classes(&mut rng, &[rows], classes),
            logits => random(&mut rng, &[rows, classes], -3.0, 3.0),
            up => uv.clone(),
            not_the_loss => uv,
        }
        .unwrap();
        let mut rt = RunTime::new();
        let kept = rt.forward(&dz, &feed).unwrap().clone();
        let inferred = RunTime::new().infer(&[&dz, &loss], &feed).unwrap();
        let other = RunTime::new().forward(&recomputed, &feed).unwrap().clone();
        assert_eq!(kept, inferred[0]);
        assert_eq!(kept, other);
        // The inference pass's loss (no probabilities kept) is the training pass's.
        assert_eq!(rt.forward(&loss, &feed).unwrap(), &inferred[1]);
    }
    // Wrong arity through add_op.
    let g = Graph::new();
    let (labels, logits) = (g.placeholder([2]), g.placeholder([2, 3]));
    let op = ad::ops::loss::SparseSoftmaxCrossEntropyGrad;
    assert!(g.add_op(op, &[&labels, &labels, &logits]).is_err());
}

/// Labels that are not class indices (2.5, -1, NaN, infinite, >= classes)
/// are errors naming the label, its position and the number of classes, in
/// the loss and in its gradient node; static shape errors at build time.
#[test]
fn sparse_softmax_cross_entropy_rejects_hostile_labels() {
    let g = Graph::new();
    let labels = g.placeholder([2, 2]);
    let logits = g.placeholder([2, 2, 3]);
    let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let dz = grad(&loss, &logits);
    let not_the_loss = g.placeholder([2, 2]);
    let op = ad::ops::loss::SparseSoftmaxCrossEntropyGrad;
    let lone_grad = g
        .add_op(op, &[&not_the_loss, &labels, &logits, &not_the_loss])
        .unwrap();
    let z = Tensor::zeros(IxDyn(&[2, 2, 3]));
    for (bad, shown, kind) in [
        (2.5f32, "2.5", "not a whole number"),
        (-1.0, "-1", "not a class index in [0, 3)"),
        (f32::NAN, "NaN", "not a whole number"),
        (f32::INFINITY, "inf", "not a whole number"),
        (3.0, "3", "not a class index in [0, 3)"),
        (1e9, "1000000000", "not a class index in [0, 3)"),
    ] {
        let y = ad::tensor([[0.0, 2.0], [bad, 1.0]]);
        let feed =
            ad::feed! { labels => y, logits => z.clone(), not_the_loss => [[1.0; 2]; 2] }.unwrap();
        for (what, node) in [("loss", &loss), ("grad", &dz), ("lone grad", &lone_grad)] {
            let e = RunTime::new().forward(node, &feed).unwrap_err().to_string();
            for part in [
                &format!("label {shown} at position [1, 0]"),
                kind,
                "3 classes",
            ] {
                assert!(
                    e.contains(part),
                    "{what}, label {bad}: {e:?} lacks {part:?}"
                );
            }
        }
    }
    // Static shapes: the labels are logits.shape[:-1]; logits have a class axis.
    let e = ad::sparse_softmax_cross_entropy_loss(&g.placeholder([3]), &logits).unwrap_err();
    assert!(e.to_string().contains("logits.shape[:-1]"), "{e}");
    assert!(ad::sparse_softmax_cross_entropy_loss(&g.placeholder([2, 3]), &logits).is_err());
    let scalar = g.placeholder(ad::shape![]);
    assert!(ad::sparse_softmax_cross_entropy_loss(&scalar, &scalar).is_err());
    // Run time: labels fed with another shape than the logits' rows.
    let open = g.placeholder(ad::shape![None]);
    let open_logits = g.placeholder(ad::shape![None, 3]);
    let loss = ad::sparse_softmax_cross_entropy_loss(&open, &open_logits).unwrap();
    let feed = ad::feed! { open => [0.0, 1.0], open_logits => [[0.0; 3]; 3] }.unwrap();
    let e = RunTime::new().forward(&loss, &feed).unwrap_err();
    assert!(
        matches!(e.root_cause(), ad::Error::ShapeMismatch { .. }),
        "{e}"
    );
}

/// No rows: an empty loss and gradient; one class: a zero loss.
#[test]
fn sparse_softmax_cross_entropy_edge_shapes() {
    let g = Graph::new();
    let labels = g.placeholder(ad::shape![None]);
    let logits = g.placeholder(ad::shape![None, 1]);
    let loss = ad::sparse_softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let dz = grad(&loss, &logits);
    let empty = ad::feed! {
        labels => Tensor::zeros(IxDyn(&[0])),
        logits => Tensor::zeros(IxDyn(&[0, 1])),
    }
    .unwrap();
    let got = RunTime::new().evaluate(&[&loss, &dz], &empty).unwrap();
    assert_eq!(got[0].shape(), &[0]);
    assert_eq!(got[1].shape(), &[0, 1]);
    let one = ad::feed! { labels => [0.0, 0.0], logits => [[5.0], [-3.0]] }.unwrap();
    let got = RunTime::new().evaluate(&[&loss, &dz], &one).unwrap();
    assert_eq!(got[0], ad::tensor([0.0, 0.0]));
    assert_eq!(got[1], ad::tensor([[0.0], [0.0]]));
}
