//! Finite-difference gradient checks of the broadcasting arithmetic ops (add,
//! subtract, multiply, divide, negate) on random shapes, broadcasting in both
//! directions, through the free functions and the operators.

use adgraph::gradcheck::GradCheck;
use adgraph::{self as ad, shape, Error, Feed, Graph, Node, Result, RunTime, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Binary = fn(&Node, &Node) -> Result<Node>;

const OPS: [(&str, Binary); 4] = [
    ("add", ad::add),
    ("subtract", ad::subtract),
    ("multiply", ad::multiply),
    ("divide", ad::divide),
];

/// Values in ±[0.5, 1.5]: away from 0 so division is well conditioned.
fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_shape_fn(shape.to_vec(), |_| {
        let v: f32 = rng.gen_range(0.5..1.5);
        if rng.gen_bool(0.5) {
            v
        } else {
            -v
        }
    })
}

/// A random shape of rank 0..=4 and a shape that broadcasts with it: some
/// leading dims dropped, some dims set to 1 (on either side).
fn broadcast_pair(rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let rank = rng.gen_range(0..=4);
    let full: Vec<usize> = (0..rank).map(|_| rng.gen_range(1..=3)).collect();
    let drop = rng.gen_range(0..=rank);
    let mut a = full.clone();
    let mut b: Vec<usize> = full[drop..].to_vec();
    for d in b.iter_mut() {
        if rng.gen_bool(0.3) {
            *d = 1;
        }
    }
    for d in a.iter_mut() {
        if rng.gen_bool(0.2) {
            *d = 1;
        }
    }
    if rng.gen_bool(0.5) {
        (a, b)
    } else {
        (b, a)
    }
}

fn check(out: &Node, wrt: &[&Node], feed: &Feed) {
    let settings = GradCheck {
        eps: 1e-2,
        atol: 2e-3,
        rtol: 2e-3,
        seed: 1,
    };
    if let Err(e) = settings.check(out, wrt, feed) {
        panic!("{e}");
    }
}

#[test]
fn binary_ops_broadcast_and_reduce_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for round in 0..40 {
        let (sa, sb) = broadcast_pair(&mut rng);
        for (name, op) in OPS {
            let g = Graph::new();
            let a = g.placeholder(sa.as_slice());
            let b = g.placeholder(sb.as_slice());
            let out = op(&a, &b).unwrap_or_else(|e| panic!("{name} {sa:?} {sb:?}: {e}"));
            let feed = Feed::new()
                .with(&a, random_tensor(&mut rng, &sa))
                .unwrap()
                .with(&b, random_tensor(&mut rng, &sb))
                .unwrap();
            let value = RunTime::new().forward(&out, &feed).unwrap().clone();
            // The value has NumPy's broadcast shape.
            let want = ad::shape::broadcast_shapes(&sa, &sb).unwrap();
            assert_eq!(value.shape(), want.as_slice(), "round {round} {name}");
            check(&out, &[&a, &b], &feed);
        }
    }
}

#[test]
fn negate_and_operators_with_constants() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    let y = g.placeholder([3]);
    // (2 - x) / y * 3 + (-x) - [1, 2, 3]: constants on both sides of every operator.
    let out = ((2.0 - &x) / &y * 3.0 + (-&x) - [1.0, 2.0, 3.0])
        .check()
        .unwrap();
    let feed = Feed::new()
        .with(&x, random_tensor(&mut rng, &[2, 3]))
        .unwrap()
        .with(&y, random_tensor(&mut rng, &[3]))
        .unwrap();
    check(&out, &[&x, &y], &feed);
    let neg = ad::negate(&x).unwrap();
    check(&neg, &[&x], &feed);
}

#[test]
fn divide_gradient_by_hand() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = g.placeholder([]);
    let z = ad::divide(&x, &y).unwrap();
    let feed = ad::feed! { x => [1.0, 4.0], y => 2.0 }.unwrap();
    let mut rt = RunTime::new();
    rt.backward(&z, &feed, None).unwrap();
    // dz/dx = 1/y = 0.5; dz/dy = sum(-x/y^2) = -(1 + 4)/4
    assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.5, 0.5]));
    assert_eq!(rt.grad(&y).unwrap().sum(), -1.25);
}

#[test]
fn unknown_dims_broadcast_statically_and_check_at_run_time() {
    let g = Graph::new();
    let a = g.placeholder(shape![None, 1]);
    let b = g.placeholder(shape![None]);
    let c = ad::multiply(&a, &b).unwrap();
    assert_eq!(c.shape(), shape![None, None]);
    let feed = ad::feed! { a => [[1.0], [2.0]], b => [1.0, 2.0, 3.0] }.unwrap();
    let mut rt = RunTime::new();
    assert_eq!(rt.forward(&c, &feed).unwrap().shape(), &[2, 3]);
    rt.backward(&c, &feed, None).unwrap();
    // d/da = sum over b = 6 per row; d/db = sum over a = 3
    assert_eq!(rt.grad(&a).unwrap(), &ad::tensor([[6.0], [6.0]]));
    assert_eq!(rt.grad(&b).unwrap(), &ad::tensor([3.0, 3.0, 3.0]));

    let d = g.placeholder(shape![None, 3]);
    let e = ad::add(&d, &g.placeholder(shape![2, None])).unwrap();
    assert_eq!(e.shape(), shape![2, 3]);
    let bad = ad::feed! { d => [[0.0; 3]; 2], b => [0.0; 4] }.unwrap();
    let f = ad::add(&d, &b).unwrap();
    assert!(matches!(
        RunTime::new().forward(&f, &bad).unwrap_err().root_cause(),
        Error::Broadcast { .. }
    ));
}

// ---------------------------------------------------------------- second derivatives

/// Second derivatives (the gradient graph differentiated once more) against
/// finite differences of the gradient.
fn check_second(what: &str, out: &Node, wrt: &[&Node], feed: &Feed) {
    let settings = GradCheck {
        eps: 1e-2,
        atol: 5e-3,
        rtol: 5e-3,
        seed: 2,
    };
    if let Err(e) = settings.check_second_order(out, wrt, feed) {
        panic!("{what}: {e}");
    }
}

#[test]
fn binary_ops_second_derivatives_with_broadcasting() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for round in 0..30 {
        let (sa, sb) = broadcast_pair(&mut rng);
        for (name, op) in OPS {
            let g = Graph::new();
            let a = g.placeholder(sa.as_slice());
            let b = g.placeholder(sb.as_slice());
            let out = op(&a, &b).unwrap();
            let feed = Feed::new()
                .with(&a, random_tensor(&mut rng, &sa))
                .unwrap()
                .with(&b, random_tensor(&mut rng, &sb))
                .unwrap();
            let what = format!("round {round} {name} {sa:?} {sb:?}");
            // The op alone (zero for add and subtract) ...
            check_second(&what, &out, &[&a, &b], &feed);
            // ... and squared, so its gradient nodes (sum_to, negate, the
            // products) are differentiated with upstream gradients that depend
            // on the inputs.
            let squared = ad::multiply(&out, &out).unwrap();
            check_second(&format!("{what}, squared"), &squared, &[&a, &b], &feed);
            // Broadcast once more against one input.
            let mixed = ad::multiply(&out, &op(&b, &a).unwrap()).unwrap();
            check_second(
                &format!("{what}, times {name}(b, a)"),
                &mixed,
                &[&a, &b],
                &feed,
            );
        }
    }
}

#[test]
fn second_derivatives_with_unknown_dims_and_constants() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (name, op) in OPS {
        // Unknown dims on both sides: the gradients sum to the run-time shape.
        let g = Graph::new();
        let a = g.placeholder(shape![None, 1]);
        let b = g.placeholder(shape![None]);
        let out = op(&a, &b).unwrap();
        let out = ad::multiply(&out, &out).unwrap();
        let feed = Feed::new()
            .with(&a, random_tensor(&mut rng, &[2, 1]))
            .unwrap()
            .with(&b, random_tensor(&mut rng, &[3]))
            .unwrap();
        check_second(name, &out, &[&a, &b], &feed);
        // A constant operand takes no gradient.
        let c = g.constant([1.5f32, -0.75, 0.5]).unwrap();
        let out = op(&op(&a, &c).unwrap(), &op(&c, &b).unwrap()).unwrap();
        check_second(&format!("{name} with a constant"), &out, &[&a, &b], &feed);
    }
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    let y = g.placeholder([3]);
    let out = (-(&x * &y) * ad::negate(&(&x / &y)).unwrap())
        .check()
        .unwrap();
    let feed = Feed::new()
        .with(&x, random_tensor(&mut rng, &[2, 3]))
        .unwrap()
        .with(&y, random_tensor(&mut rng, &[3]))
        .unwrap();
    check_second("negate", &out, &[&x, &y], &feed);
    check_second("negate alone", &ad::negate(&x).unwrap(), &[&x], &feed);
}

#[test]
fn third_derivative_of_a_quotient() {
    // d^3/dy^3 (x / y) = -6 x / y^4, d^2/dx dy = -1 / y^2.
    let g = Graph::new();
    let x = g.placeholder(shape![]);
    let y = g.placeholder(shape![]);
    let q = ad::divide(&x, &y).unwrap();
    let d1 = ad::gradients(&[&q], &[&y], None).unwrap()[0]
        .clone()
        .unwrap();
    let grads = ad::gradients(&[&d1], &[&x, &y], None).unwrap();
    let (dxy, d2) = (grads[0].clone().unwrap(), grads[1].clone().unwrap());
    let d3 = ad::gradients(&[&d2], &[&y], None).unwrap()[0]
        .clone()
        .unwrap();
    let feed = ad::feed! { x => 3.0, y => 2.0 }.unwrap();
    let mut rt = RunTime::new();
    let v = rt.evaluate(&[&d1, &dxy, &d2, &d3], &feed).unwrap();
    assert_eq!(v[0].sum(), -0.75); // -x / y^2
    assert_eq!(v[1].sum(), -0.25);
    assert_eq!(v[2].sum(), 0.75); // 2 x / y^3
    assert_eq!(v[3].sum(), -1.125);
}

/// The gradients are as lean as the old fused backward: nothing for an add
/// of same-shaped inputs, one `SumTo` for a bias, one `Negate` for a
/// subtrahend, one product per input for a multiply, and a divide's two
/// gradients share `g / y`.
#[test]
fn gradient_graphs_add_no_needless_nodes() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 4]);
    let b = g.placeholder([4]);
    let u = g.placeholder(shape![None, 4]);
    let grads = |y: &Node| ad::gradients(&[y], &[&x, &b], Some(&[&u])).unwrap();

    let d = grads(&ad::add(&x, &b).unwrap());
    assert_eq!(d[0].as_ref().unwrap(), &u);
    let db = d[1].as_ref().unwrap();
    assert_eq!(db.op_type(), "SumTo");
    assert_eq!(db.inputs(), std::slice::from_ref(&u));

    // (Two unknown dims could differ at run time, one of them 1: fixed ones here.)
    let (p, q, w) = (
        g.placeholder([3, 4]),
        g.placeholder([3, 4]),
        g.placeholder([3, 4]),
    );
    let d = ad::gradients(&[&ad::subtract(&p, &q).unwrap()], &[&p, &q], Some(&[&w])).unwrap();
    assert_eq!(d[0].as_ref().unwrap(), &w);
    let dq = d[1].as_ref().unwrap();
    assert_eq!(dq.op_type(), "Negate");
    assert_eq!(dq.inputs(), std::slice::from_ref(&w));

    let d = grads(&ad::subtract(&x, &b).unwrap());
    let db = d[1].as_ref().unwrap();
    assert_eq!(db.op_type(), "Negate");
    assert_eq!(db.inputs()[0].op_type(), "SumTo");

    let d = grads(&ad::multiply(&x, &b).unwrap());
    assert_eq!(d[0].as_ref().unwrap().op_type(), "Multiply");
    assert_eq!(d[1].as_ref().unwrap().inputs()[0].op_type(), "Multiply");

    let d = grads(&ad::divide(&x, &b).unwrap());
    let dx = d[0].as_ref().unwrap();
    assert_eq!(dx.op_type(), "Divide");
    let db = d[1].as_ref().unwrap();
    assert_eq!(db.op_type(), "Negate");
    let product = &db.inputs()[0].inputs()[0];
    assert_eq!(product.op_type(), "Multiply");
    assert!(product.inputs().contains(dx), "g / y is computed once");

    let d = ad::gradients(&[&ad::negate(&x).unwrap()], &[&x], Some(&[&u])).unwrap();
    assert_eq!(d[0].as_ref().unwrap().op_type(), "Negate");
}
