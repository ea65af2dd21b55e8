//! Index ops (gather, embedding_lookup, one_hot): values, finite-difference
//! checks of first and second derivatives (GatherGrad's own gradient
//! included), static shapes with unknown dims, and hostile indices (a
//! fraction, a negative, NaN, infinity, out of range) that must give a clear
//! error naming the node, the value, its position and the valid range, never
//! a panic or a wrong read.

use ad::gradcheck::{check_gradients, check_second_derivatives};
use ad::{shape, Error, Feed, Graph, Node, RunTime, Tensor, TensorShape};
use adgraph as ad;
use ndarray::{Dimension, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-1.0f32..1.0))
}

/// Whole-number indices in `[0, limit)` of `shape`, with a repeat when there
/// are at least two.
fn random_indices(rng: &mut ChaCha8Rng, shape: &[usize], limit: usize) -> Tensor {
    let mut t = Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(0..limit) as f32);
    if t.len() >= 2 {
        let first = t.iter().next().copied().unwrap_or(0.0);
        if let Some(last) = t.iter_mut().last() {
            *last = first;
        }
    }
    t
}

/// A placeholder of static shape `static_shape` fed with `value`.
fn fed_value(g: &Graph, feed: &mut Feed, static_shape: TensorShape, value: Tensor) -> Node {
    let x = g.placeholder(static_shape);
    feed.insert(&x, value).unwrap();
    x
}

fn forward(out: &Node, feed: &Feed) -> ad::Result<Tensor> {
    RunTime::new().forward(out, feed).cloned()
}

fn check(out: &Node, wrt: &[&Node], feed: &Feed, context: &str) {
    if let Err(e) = check_gradients(out, wrt, feed) {
        panic!("{context}: {e}");
    }
}

fn check2(out: &Node, wrt: &[&Node], feed: &Feed, context: &str) {
    match check_second_derivatives(out, wrt, feed) {
        Ok(report) => assert!(report.elements > 0, "{context}: nothing checked"),
        Err(e) => panic!("{context} (second order): {e}"),
    }
}

/// `q · W · qᵀ` for `q` = the `n` elements of `y` as a row and a random
/// constant `W`: a quadratic function of a linear op's output, so that the
/// second derivative runs through the gradient of the op's gradient node.
fn quad(y: &Node, n: usize, r: &mut ChaCha8Rng) -> Node {
    let w = y.graph().constant(random_tensor(r, &[n, n])).unwrap();
    let q = ad::reshape(y, &[1, -1]).unwrap();
    let qw = ad::matmul(&q, &w).unwrap();
    ad::matmul_transposed(&qw, &q, false, true).unwrap()
}

/// The op types of the gradient of `out` w.r.t. `x` and of everything it needs
/// down to (not including) nodes of the forward graph.
fn gradient_op_types(out: &Node, x: &Node) -> Vec<String> {
    let dx = ad::gradients(&[out], &[x], None).unwrap()[0]
        .clone()
        .unwrap();
    let mut types = Vec::new();
    let mut stack = vec![dx];
    while let Some(n) = stack.pop() {
        if !n.is_gradient() {
            continue;
        }
        types.push(n.op_type().to_string());
        stack.extend(n.inputs());
    }
    types
}

/// A naive gather, element by element.
fn naive_gather(params: &Tensor, indices: &Tensor, axis: usize) -> Tensor {
    let p = params.shape();
    let mut dims = p[..axis].to_vec();
    dims.extend_from_slice(indices.shape());
    dims.extend_from_slice(&p[axis + 1..]);
    let ir = indices.ndim();
    Tensor::from_shape_fn(IxDyn(&dims), |ix| {
        let ix = ix.slice();
        let idx: Vec<usize> = ix[axis..axis + ir].to_vec();
        let i = indices[IxDyn(&idx)] as usize;
        let mut at = ix[..axis].to_vec();
        at.push(i);
        at.extend_from_slice(&ix[axis + ir..]);
        params[IxDyn(&at)]
    })
}

// ---------------------------------------------------------------------------
// gather
// ---------------------------------------------------------------------------

#[test]
fn gather_values_and_gradients() {
    let mut r = rng(1);
    for case in 0..20 {
        let rank = r.gen_range(1..=3);
        let p_shape: Vec<usize> = (0..rank).map(|_| r.gen_range(1..=4)).collect();
        let axis = r.gen_range(0..rank);
        let i_rank = case % 3; // scalar, vector, matrix indices
        let i_shape: Vec<usize> = (0..i_rank).map(|_| r.gen_range(1..=3)).collect();
        let params = random_tensor(&mut r, &p_shape);
        let indices = random_indices(&mut r, &i_shape, p_shape[axis]);
        let want = naive_gather(&params, &indices, axis);

        let g = Graph::new();
        let mut feed = Feed::new();
        let p = fed_value(&g, &mut feed, TensorShape::known(&p_shape), params);
        let i = fed_value(&g, &mut feed, TensorShape::known(&i_shape), indices);
        let y = ad::gather(&p, &i, axis).unwrap();
        assert_eq!(y.shape(), TensorShape::known(want.shape()));
        assert_eq!(forward(&y, &feed).unwrap(), want);
        let context = format!("gather {p_shape:?} by {i_shape:?} on axis {axis}");
        check(&y, &[&p], &feed, &context);
        // Indices take no gradient.
        assert!(ad::gradients(&[&y], &[&i], None).unwrap()[0].is_none());
    }
}

#[test]
fn gather_repeated_index_accumulates() {
    let g = Graph::new();
    let p = g.placeholder([4, 2]);
    let i = g.placeholder([5]);
    let y = ad::gather(&p, &i, 0).unwrap();
    let feed = ad::feed! {
        p => [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
        i => [3.0, 0.0, 3.0, 3.0, 1.0],
    }
    .unwrap();
    let u = ad::tensor([
        [1.0, 10.0],
        [2.0, 20.0],
        [3.0, 30.0],
        [4.0, 40.0],
        [5.0, 50.0],
    ]);
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, Some(u)).unwrap();
    assert_eq!(
        rt.grad(&p).unwrap(),
        &ad::tensor([[2.0, 20.0], [5.0, 50.0], [0.0, 0.0], [8.0, 80.0]])
    );
}

#[test]
fn gather_scalar_index_removes_the_axis() {
    let g = Graph::new();
    let p = g.placeholder([2, 3, 2]);
    let i = g.constant(1.0).unwrap();
    let y = ad::gather(&p, &i, 1).unwrap();
    assert_eq!(y.shape(), shape![2, 2]);
    let value = Tensor::from_shape_fn(IxDyn(&[2, 3, 2]), |ix| {
        (ix[0] * 100 + ix[1] * 10 + ix[2]) as f32
    });
    let feed = Feed::new().with(&p, value).unwrap();
    assert_eq!(
        forward(&y, &feed).unwrap(),
        ad::tensor([[10.0, 11.0], [110.0, 111.0]])
    );
}

#[test]
fn gather_second_derivatives() {
    let mut r = rng(2);
    // (params static, params concrete, indices concrete, axis)
    let cases: Vec<(TensorShape, Vec<usize>, Vec<usize>, usize)> = vec![
        (shape![5], vec![5], vec![], 0),
        (shape![4, 3], vec![4, 3], vec![3], 0),
        (shape![4, 3], vec![4, 3], vec![2, 2], 1),
        (shape![2, 5, 3], vec![2, 5, 3], vec![2, 3], 1),
        (shape![None, 3, 4], vec![2, 3, 4], vec![5], 2),
        (shape![None, None], vec![3, 2], vec![4], 0),
    ];
    for (static_shape, p_shape, i_shape, axis) in cases {
        let g = Graph::new();
        let mut feed = Feed::new();
        let params = random_tensor(&mut r, &p_shape);
        let indices = random_indices(&mut r, &i_shape, p_shape[axis]);
        let p = fed_value(&g, &mut feed, static_shape.clone(), params);
        let i = fed_value(&g, &mut feed, TensorShape::known(&i_shape), indices);
        let y = ad::gather(&p, &i, axis).unwrap();
        let n = forward(&y, &feed).unwrap().len();
        let z = quad(&y, n, &mut r);
        let context = format!("gather {static_shape} by {i_shape:?} on axis {axis}");
        check(&z, &[&p], &feed, &context);
        check2(&z, &[&p], &feed, &context);
        let types = gradient_op_types(&z, &p);
        assert!(types.contains(&"GatherGrad".to_string()), "{types:?}");
    }
}

#[test]
fn gather_grad_gradient_is_a_gather() {
    // d/dparams of sum(v * dL/dparams), where dL/dparams = GatherGrad(g(params)):
    // runs through GatherGrad's gradient (a gather of the upstream).
    let mut r = rng(3);
    let g = Graph::new();
    let mut feed = Feed::new();
    let p = fed_value(&g, &mut feed, shape![5, 2], random_tensor(&mut r, &[5, 2]));
    let i = fed_value(&g, &mut feed, shape![4], ad::tensor([4.0, 1.0, 4.0, 0.0]));
    let y = ad::gather(&p, &i, 0).unwrap();
    let loss = ad::reduce_sum(&ad::pow(&y, 3.0).unwrap(), ad::Axes::All, false).unwrap();
    let dp = ad::gradients(&[&loss], &[&p], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dp.op_type(), "GatherGrad");
    let d2 = ad::gradients(&[&dp], &[&p], None).unwrap()[0]
        .clone()
        .unwrap();
    // sum_i 6 y_i, scattered back: row 4 twice, rows 1 and 0 once, rows 2 and 3 not.
    let pv = feed.get(&p).unwrap().clone();
    let got = forward(&d2, &feed).unwrap();
    for (row, times) in [(0, 1.0), (1, 1.0), (2, 0.0), (3, 0.0), (4, 2.0)] {
        for c in 0..2 {
            let want = times * 6.0 * pv[[row, c]];
            assert!((got[[row, c]] - want).abs() < 1e-5, "row {row}: {got}");
        }
    }
    check2(&loss, &[&p], &feed, "gather then cube");
}

#[test]
fn gather_static_shapes_with_unknown_dims() {
    let g = Graph::new();
    let p = g.placeholder(shape![None, 3, 4]);
    let i = g.placeholder(shape![None, 2]);
    assert_eq!(
        ad::gather(&p, &i, 0).unwrap().shape(),
        shape![None, 2, 3, 4]
    );
    assert_eq!(
        ad::gather(&p, &i, 1).unwrap().shape(),
        shape![None, None, 2, 4]
    );
    assert_eq!(
        ad::gather(&p, &i, 2).unwrap().shape(),
        shape![None, 3, None, 2]
    );
    let s = g.placeholder(shape![]);
    assert_eq!(ad::gather(&p, &s, 2).unwrap().shape(), shape![None, 3]);
    assert!(matches!(
        ad::gather(&p, &i, 3).unwrap_err().root_cause(),
        Error::Axis { axis: 3, rank: 3 }
    ));
    let scalar = g.placeholder(shape![]);
    assert!(ad::gather(&scalar, &i, 0).is_err());
}

#[test]
fn embedding_lookup_is_gather_on_axis_0() {
    let mut r = rng(4);
    let g = Graph::new();
    let mut feed = Feed::new();
    let table = fed_value(&g, &mut feed, shape![6, 3], random_tensor(&mut r, &[6, 3]));
    let ids = fed_value(
        &g,
        &mut feed,
        shape![None, 2],
        ad::tensor([[5.0, 0.0], [5.0, 2.0], [1.0, 1.0]]),
    );
    let e = ad::embedding_lookup(&table, &ids).unwrap();
    assert_eq!(e.shape(), shape![None, 2, 3]);
    let same = ad::gather(&table, &ids, 0).unwrap();
    assert_eq!(forward(&e, &feed).unwrap(), forward(&same, &feed).unwrap());
    let z = quad(&e, 18, &mut r);
    check(&z, &[&table], &feed, "embedding_lookup");
    check2(&z, &[&table], &feed, "embedding_lookup");
}

// ---------------------------------------------------------------------------
// hostile indices
// ---------------------------------------------------------------------------

/// The forward error of `out`, which must be a node error naming `op`.
fn forward_error(out: &Node, feed: &Feed, op: &str) -> (String, Error) {
    let e = forward(out, feed).expect_err("expected an error");
    let msg = e.to_string();
    assert!(matches!(e, Error::Node { .. }), "{msg}");
    assert!(msg.contains(op), "the error names the node ({op}): {msg}");
    (msg, e.root_cause().clone())
}

#[test]
fn gather_rejects_hostile_indices() {
    let g = Graph::new();
    let p = g.placeholder([5, 2]);
    let i = g.placeholder(shape![2, 2]);
    let y = ad::gather(&p, &i, 0).unwrap();
    let params = Tensor::zeros(IxDyn(&[5, 2]));
    for (bad, text, out_of_bounds) in [
        (2.5f32, "2.5", false),
        (-1.0, "-1", true),
        (f32::NAN, "NaN", false),
        (f32::INFINITY, "inf", false),
        (5.0, "5", true),
        (1e9, "1000000000", true),
    ] {
        let idx = Tensor::from_shape_vec(vec![2, 2], vec![0.0, 4.0, bad, 1.0]).unwrap();
        let feed = Feed::new()
            .with(&p, params.clone())
            .unwrap()
            .with(&i, idx)
            .unwrap();
        let (msg, root) = forward_error(&y, &feed, "Gather");
        assert!(msg.contains(&format!("indices[1, 0] = {text}")), "{msg}");
        assert!(msg.contains("[0, 5)"), "the valid range: {msg}");
        if out_of_bounds {
            assert!(matches!(root, Error::OutOfBounds(_)), "{root:?}");
        } else {
            assert!(matches!(root, Error::InvalidArgument(_)), "{root:?}");
        }
        // Backward fails the same way, never panics.
        let mut rt = RunTime::new();
        assert!(rt.backward(&y, &feed, None).is_err());
    }
}

#[test]
fn gather_on_an_inner_axis_checks_that_axis() {
    let g = Graph::new();
    let p = g.placeholder([2, 3]);
    let i = g.placeholder([2]);
    let y = ad::gather(&p, &i, 1).unwrap();
    let feed = ad::feed! { p => [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], i => [2.0, 3.0] }.unwrap();
    let (msg, _) = forward_error(&y, &feed, "Gather");
    assert!(
        msg.contains("indices[1] = 3") && msg.contains("[0, 3)"),
        "{msg}"
    );
    assert!(msg.contains("axis 1"), "{msg}");
    // An empty axis accepts no index at all, and an empty index list is fine.
    let g = Graph::new();
    let p = g.placeholder([0, 2]);
    let i = g.placeholder([1]);
    let y = ad::gather(&p, &i, 0).unwrap();
    let feed = Feed::new()
        .with(&p, Tensor::zeros(IxDyn(&[0, 2])))
        .unwrap()
        .with(&i, ad::tensor([0.0]))
        .unwrap();
    let (msg, _) = forward_error(&y, &feed, "Gather");
    assert!(msg.contains("empty"), "{msg}");
    let i0 = g.placeholder([0]);
    let y0 = ad::gather(&p, &i0, 0).unwrap();
    let feed = Feed::new()
        .with(&p, Tensor::zeros(IxDyn(&[0, 2])))
        .unwrap()
        .with(&i0, Tensor::zeros(IxDyn(&[0])))
        .unwrap();
    assert_eq!(forward(&y0, &feed).unwrap().shape(), &[0, 2]);
}

#[test]
fn embedding_lookup_rejects_a_bad_id_by_position() {
    let g = Graph::new();
    let table = g.placeholder([3, 2]);
    let ids = g.placeholder([3]);
    let e = ad::embedding_lookup(&table, &ids).unwrap();
    let feed = Feed::new()
        .with(&table, Tensor::zeros(IxDyn(&[3, 2])))
        .unwrap()
        .with(&ids, ad::tensor([0.0, 2.0, 3.0]))
        .unwrap();
    let (msg, _) = forward_error(&e, &feed, "Gather");
    assert!(
        msg.contains("indices[2] = 3") && msg.contains("[0, 3)"),
        "{msg}"
    );
}

#[test]
fn gather_grad_validates_its_inputs() {
    // A GatherGrad built by hand: bad shapes at build time, bad indices in forward.
    let g = Graph::new();
    let grad = g.placeholder([2, 3]);
    let idx = g.placeholder([2]);
    let params = g.placeholder([4, 3]);
    let op = || ad::ops::index::GatherGrad { axis: 0 };
    let dx = g.add_op(op(), &[&grad, &idx, &params]).unwrap();
    assert_eq!(dx.shape(), shape![4, 3]);
    let wrong = g.placeholder([3, 3]);
    assert!(g.add_op(op(), &[&wrong, &idx, &params]).is_err());
    assert!(g.add_op(op(), &[&grad, &idx]).is_err());
    let feed = Feed::new()
        .with(&grad, Tensor::ones(IxDyn(&[2, 3])))
        .unwrap()
        .with(&idx, ad::tensor([1.0, -1.0]))
        .unwrap()
        .with(&params, Tensor::zeros(IxDyn(&[4, 3])))
        .unwrap();
    let (msg, _) = forward_error(&dx, &feed, "GatherGrad");
    assert!(msg.contains("indices[1] = -1"), "{msg}");
}

// ---------------------------------------------------------------------------
// one_hot
// ---------------------------------------------------------------------------

#[test]
fn one_hot_values() {
    let g = Graph::new();
    let i = g.placeholder(shape![None, 2]);
    let y = ad::one_hot(&i, 3, 5.0, -1.0).unwrap();
    assert_eq!(y.shape(), shape![None, 2, 3]);
    let feed = ad::feed! { i => [[0.0, 2.0], [-1.0, 3.0], [1.0, 1.0]] }.unwrap();
    assert_eq!(
        forward(&y, &feed).unwrap(),
        ad::tensor([
            [[5.0, -1.0, -1.0], [-1.0, -1.0, 5.0]],
            // Out of range, as in TF: all off.
            [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]],
            [[-1.0, 5.0, -1.0], [-1.0, 5.0, -1.0]],
        ])
    );
    // A scalar index, depth 0.
    let s = g.constant(1.0).unwrap();
    assert_eq!(ad::one_hot(&s, 4, 1.0, 0.0).unwrap().shape(), shape![4]);
    let z = ad::one_hot(&s, 0, 1.0, 0.0).unwrap();
    assert_eq!(forward(&z, &Feed::new()).unwrap().shape(), &[0]);
}

#[test]
fn one_hot_rejects_non_integers() {
    let g = Graph::new();
    let i = g.placeholder([2, 2]);
    let y = ad::one_hot(&i, 4, 1.0, 0.0).unwrap();
    for (bad, text) in [
        (0.5f32, "0.5"),
        (f32::NAN, "NaN"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let idx = Tensor::from_shape_vec(vec![2, 2], vec![0.0, 1.0, 3.0, bad]).unwrap();
        let feed = Feed::new().with(&i, idx).unwrap();
        let (msg, root) = forward_error(&y, &feed, "OneHot");
        assert!(msg.contains(&format!("indices[1, 1] = {text}")), "{msg}");
        assert!(matches!(root, Error::InvalidArgument(_)), "{root:?}");
    }
    // Large whole numbers are out of range, not errors.
    let feed = ad::feed! { i => [[1e20, -1e20], [4.0, 2.0]] }.unwrap();
    assert_eq!(
        forward(&y, &feed).unwrap().sum(),
        1.0,
        "only the 2 is a hot entry"
    );
}

#[test]
fn one_hot_takes_no_gradient_but_composes() {
    // A loss through one_hot (labels) and a differentiable path: the labels
    // get no gradient, the logits get theirs, to second order.
    let mut r = rng(5);
    let g = Graph::new();
    let mut feed = Feed::new();
    let labels = fed_value(&g, &mut feed, shape![3], ad::tensor([2.0, 0.0, 1.0]));
    let x = fed_value(&g, &mut feed, shape![3, 3], random_tensor(&mut r, &[3, 3]));
    let hot = ad::one_hot(&labels, 3, 1.0, 0.0).unwrap();
    let y = ad::reduce_sum(
        &ad::multiply(&hot, &ad::pow(&x, 3.0).unwrap()).unwrap(),
        ad::Axes::All,
        false,
    )
    .unwrap();
    let grads = ad::gradients(&[&y], &[&labels, &x], None).unwrap();
    assert!(grads[0].is_none());
    assert!(grads[1].is_some());
    check(&y, &[&x], &feed, "one_hot * x^3");
    check2(&y, &[&x], &feed, "one_hot * x^3");
}

#[test]
fn gather_third_derivatives() {
    // sum(gather(p)^4): the gradient's second derivative runs through the
    // gradient of GatherGrad's gradient (a gather, whose gradient is a GatherGrad).
    let mut r = rng(6);
    let g = Graph::new();
    let mut feed = Feed::new();
    let p = fed_value(&g, &mut feed, shape![3, 2], random_tensor(&mut r, &[3, 2]));
    let i = fed_value(
        &g,
        &mut feed,
        shape![2, 2],
        ad::tensor([[1.0, 2.0], [1.0, 1.0]]),
    );
    let y = ad::gather(&p, &i, 0).unwrap();
    let loss = ad::reduce_sum(&ad::pow(&y, 4.0).unwrap(), ad::Axes::All, false).unwrap();
    let dp = ad::gradients(&[&loss], &[&p], None).unwrap()[0]
        .clone()
        .unwrap();
    check2(&dp, &[&p], &feed, "gather: third order");
}
