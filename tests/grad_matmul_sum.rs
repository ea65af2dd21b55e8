//! `MatMulSum`: the sum of matrix products that `add_n` makes of the product
//! terms of a gradient (a weight used by several products, e.g. an unrolled
//! recurrence's kernel). Values against the separate products, every flag
//! combination, the bits independent of the thread count, first and second
//! derivatives by finite differences, which sums are joined, and errors.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::ops::linalg::MatMulSum;
use ad::{Graph, Node, RunTime, Tensor};
use adgraph as ad;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(-1.0..1.0))
}

/// The `MatMulSum` of the products' operands (their flags cycling as in
/// [`products`]).
fn matmul_sum(g: &Graph, operands: &[Node]) -> Node {
    let flags = (0..operands.len() / 2)
        .map(|k| (k % 2 == 1, k % 4 >= 2))
        .collect();
    let refs: Vec<&Node> = operands.iter().collect();
    g.add_op(MatMulSum { flags }, &refs).unwrap()
}

/// `n` products `op(a_i)·op(b_i)` of result `[p, r]` and inner `q`, with the
/// flags cycling through all four combinations; returns the graph, the
/// operands and the products.
fn products(n: usize, (p, q, r): (usize, usize, usize)) -> (Graph, Vec<Node>, Vec<Node>) {
    let g = Graph::new();
    let mut operands = Vec::new();
    let mut prods = Vec::new();
    for k in 0..n {
        let (ta, tb) = (k % 2 == 1, k % 4 >= 2);
        let a = g.placeholder(if ta { [q, p] } else { [p, q] });
        let b = g.placeholder(if tb { [r, q] } else { [q, r] });
        prods.push(ad::matmul_transposed(&a, &b, ta, tb).unwrap());
        operands.push(a);
        operands.push(b);
    }
    (g, operands, prods)
}

#[test]
fn the_sum_has_the_values_of_the_separate_products() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (n, dims) in [
        (2, (3, 4, 5)),
        (5, (1, 1, 1)),
        (15, (128, 64, 512)),
        (7, (9, 33, 2)),
    ] {
        let (g, operands, prods) = products(n, dims);
        let sum = matmul_sum(&g, &operands);
        // The user's own products are added as they are (they may have other uses).
        let refs: Vec<&Node> = prods.iter().collect();
        assert_eq!(ad::add_n(&refs).unwrap().op_type(), "AddN");
        let mut feed = ad::Feed::new();
        for o in &operands {
            let shape: Vec<usize> = o.shape().dims().iter().map(|d| d.unwrap()).collect();
            feed.insert(o, random(&mut rng, &shape)).unwrap();
        }
        let mut nodes = vec![&sum];
        nodes.extend(prods.iter());
        let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
        let mut want = got[1].clone();
        for t in &got[2..] {
            want = &want + t;
        }
        let tol = 1e-5 * dims.1 as f32 * n as f32;
        for (x, y) in got[0].iter().zip(want.iter()) {
            assert!((x - y).abs() <= tol, "{n} terms {dims:?}: {x} vs {y}");
        }
    }
}

/// The groups depend on the number of terms only: one thread and two give
/// the same bits.
#[test]
fn the_sum_does_not_depend_on_the_thread_count() {
    // The graph is per thread: each pool builds and runs its own.
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut rng = ChaCha8Rng::seed_from_u64(2);
                let (g, operands, _) = products(15, (64, 32, 96));
                let sum = matmul_sum(&g, &operands);
                let mut feed = ad::Feed::new();
                for o in &operands {
                    let shape: Vec<usize> = o.shape().dims().iter().map(|d| d.unwrap()).collect();
                    feed.insert(o, random(&mut rng, &shape)).unwrap();
                }
                RunTime::new().infer(&[&sum], &feed).unwrap()
            })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

#[test]
fn first_and_second_derivatives_of_every_operand() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for n in [2, 5] {
        let (g, operands, _) = products(n, (2, 3, 2));
        let sum = matmul_sum(&g, &operands);
        // A nonlinear loss, so the second derivatives are not all zero.
        let w = g.placeholder([2, 2]);
        let loss = ad::reduce_sum(
            &ad::multiply(&ad::square(&sum).unwrap(), &w).unwrap(),
            ad::Axes::All,
            false,
        )
        .unwrap();
        let mut feed = ad::Feed::new().with(&w, random(&mut rng, &[2, 2])).unwrap();
        for o in &operands {
            let shape: Vec<usize> = o.shape().dims().iter().map(|d| d.unwrap()).collect();
            feed.insert(o, random(&mut rng, &shape)).unwrap();
        }
        let wrt: Vec<&Node> = operands.iter().collect();
        check_gradients(&loss, &wrt, &feed).unwrap();
        GradCheck {
            eps: 1e-2,
            atol: 1e-2,
            rtol: 1e-2,
            seed: 4,
        }
        .check_second_order(&loss, &wrt, &feed)
        .unwrap();
    }
}

/// A weight used by several products: its gradient is one MatMulSum node.
#[test]
fn a_shared_weight_gets_one_summed_gradient() {
    let g = Graph::new();
    let w = g.placeholder([4, 3]);
    let xs: Vec<Node> = (0..6).map(|_| g.placeholder([5, 4])).collect();
    let mut h = ad::matmul(&xs[0], &w).unwrap();
    for x in &xs[1..] {
        h = ad::add(&h, &ad::tanh(&ad::matmul(x, &w).unwrap()).unwrap()).unwrap();
    }
    let loss = ad::reduce_sum(&h, ad::Axes::All, false).unwrap();
    let dw = ad::gradients(&[&loss], &[&w], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dw.op_type(), "MatMulSum");
    assert_eq!(dw.inputs().len(), 12);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut feed = ad::Feed::new().with(&w, random(&mut rng, &[4, 3])).unwrap();
    for x in &xs {
        feed.insert(x, random(&mut rng, &[5, 4])).unwrap();
    }
    check_gradients(&loss, &[&w], &feed).unwrap();
}

/// In a gradient, products of one shape are joined and the other terms added
/// beside them; a MatMulSum built by hand checks its inputs.
#[test]
fn shapes_and_errors() {
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([3, 4]);
    let c = g.placeholder([3, 2]);
    // w reaches the loss through two products and directly (a non-product term).
    let w = g.placeholder([3, 4]);
    let y = ad::add(&ad::matmul(&a, &w).unwrap(), &ad::matmul(&a, &w).unwrap()).unwrap();
    let loss = ad::add(
        &ad::reduce_sum(&ad::tanh(&y).unwrap(), ad::Axes::All, false).unwrap(),
        &ad::reduce_sum(&ad::square(&w).unwrap(), ad::Axes::All, false).unwrap(),
    )
    .unwrap();
    let dw = ad::gradients(&[&loss], &[&w], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dw.op_type(), "AddN");
    let types: Vec<&str> = dw.inputs().iter().map(Node::op_type).collect();
    assert!(
        types.contains(&"MatMulSum") && types.len() == 2,
        "{types:?}"
    );
    let p1 = ad::matmul(&a, &b).unwrap();
    let p3 = ad::matmul(&c, &a).unwrap(); // [3, 3]
    assert!(
        ad::add_n(&[&p1, &p3]).is_err(),
        "different shapes do not add"
    );
    let e = g
        .add_op(
            ad::ops::linalg::MatMulSum {
                flags: vec![(false, false)],
            },
            &[&a],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MatMulSum") && e.contains("takes 2 inputs"),
        "{e}"
    );
    let e = g
        .add_op(
            ad::ops::linalg::MatMulSum {
                flags: vec![(false, false); 2],
            },
            &[&a, &b, &c, &a],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MatMulSum term 1") && e.contains("(3, 3)"),
        "{e}"
    );
}
