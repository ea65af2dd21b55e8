//! The LSTM layer: outputs and gradients against the same recurrence built
//! from plain ops on the layer's variables, finite-difference checks (first
//! and second order), the initial state, variable names and sharing, errors.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::init::{ConstantInit, RandomUniform};
use ad::layers::{Layer, Lstm};
use ad::{Feed, Graph, Node, RunTime, Tensor, TensorShape};
use adgraph as ad;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SECOND_ORDER: GradCheck = GradCheck {
    eps: 1e-2,
    atol: 1e-2,
    rtol: 1e-2,
    seed: 3,
};

fn random(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(lo..hi))
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

/// The recurrence from plain ops (slices, matmuls, sigmoid, tanh) on the
/// given variables: every step's `h` stacked, and the final `h`, `c`.
fn plain_lstm(
    x: &Node,
    kernel: &Node,
    recurrent: &Node,
    bias: &Node,
    units: usize,
    forget_bias: f32,
    initial: Option<(&Node, &Node)>,
) -> (Node, Node, Node) {
    let steps = x.shape().dim(1).unwrap();
    let (mut h, mut c) = match initial {
        Some((h0, c0)) => (Some(h0.clone()), Some(c0.clone())),
        None => (None, None),
    };
    let mut hs = Vec::new();
    let u = units as isize;
    for t in 0..steps {
        let x_t = ad::squeeze(&ad::slice(x, &[0, t, 0], &[-1, 1, -1]).unwrap(), &[1]).unwrap();
        let mut z = ad::add(&ad::matmul(&x_t, kernel).unwrap(), bias).unwrap();
        if let Some(h) = &h {
            z = ad::add(&z, &ad::matmul(h, recurrent).unwrap()).unwrap();
        }
        let gate = |k: usize| ad::slice(&z, &[0, k * units], &[-1, u]).unwrap();
        let i = ad::sigmoid(&gate(0)).unwrap();
        let f = ad::sigmoid(&(&gate(1) + forget_bias).check().unwrap()).unwrap();
        let g = ad::tanh(&gate(2)).unwrap();
        let o = ad::sigmoid(&gate(3)).unwrap();
        let ig = ad::multiply(&i, &g).unwrap();
        let c_t = match &c {
            Some(c) => ad::add(&ad::multiply(&f, c).unwrap(), &ig).unwrap(),
            None => ig,
        };
        let h_t = ad::multiply(&o, &ad::tanh(&c_t).unwrap()).unwrap();
        hs.push(h_t.clone());
        h = Some(h_t);
        c = Some(c_t);
    }
    let refs: Vec<&Node> = hs.iter().collect();
    (ad::stack(&refs, 1).unwrap(), h.unwrap(), c.unwrap())
}

/// Outputs, final state and the gradients of a nonlinear loss (w.r.t. the
/// input, the three variables and the initial state) agree with the plain
/// recurrence; sizes small and as large as W8's.
#[test]
fn lstm_matches_the_plain_recurrence() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(b, t, d, u, with_state) in &[
        (2usize, 3usize, 4usize, 5usize, false),
        (3, 1, 2, 3, true),
        (1, 4, 1, 1, true),
        (64, 16, 32, 128, false),
    ] {
        let g = Graph::with_seed(7);
        let x = g.placeholder(ad::shape![None, t, d]);
        let h0 = g.placeholder(ad::shape![None, u]);
        let c0 = g.placeholder(ad::shape![None, u]);
        let initial = with_state.then_some((&h0, &c0));
        let lstm = Lstm::new(u)
            .forget_bias(0.5)
            .bias_initializer(RandomUniform::new(-0.5, 0.5));
        let out = lstm.apply_with_state(&x, initial).unwrap();
        assert_eq!(out.outputs.shape(), ad::shape![None, t, u]);
        let (kernel, recurrent, bias) = (
            lstm.kernel().unwrap(),
            lstm.recurrent_kernel().unwrap(),
            lstm.bias().unwrap(),
        );
        let (pouts, ph, pc) = plain_lstm(&x, &kernel, &recurrent, &bias, u, 0.5, initial);
        let w = g.placeholder(ad::shape![None, t, u]);
        let loss_of = |outs: &Node, c: &Node| {
            let a = ad::reduce_sum(
                &ad::multiply(&ad::tanh(outs).unwrap(), &w).unwrap(),
                ad::Axes::All,
                false,
            )
            .unwrap();
            ad::add(
                &a,
                &ad::reduce_sum(&ad::square(c).unwrap(), ad::Axes::All, false).unwrap(),
            )
            .unwrap()
        };
        let (lf, lp) = (loss_of(&out.outputs, &out.c), loss_of(&pouts, &pc));
        let mut wrt = vec![&x, &kernel, &recurrent, &bias];
        if with_state {
            wrt.extend([&h0, &c0]);
        }
        let gf = ad::gradients(&[&lf], &wrt, None).unwrap();
        let gp = ad::gradients(&[&lp], &wrt, None).unwrap();
        let mut feed = ad::feed! {
            x => random(&mut rng, &[b, t, d], -2.0, 2.0),
            w => random(&mut rng, &[b, t, u], -1.0, 1.0),
        }
        .unwrap();
        if with_state {
            feed.insert(&h0, random(&mut rng, &[b, u], -1.0, 1.0))
                .unwrap();
            feed.insert(&c0, random(&mut rng, &[b, u], -1.0, 1.0))
                .unwrap();
        }
        let mut nodes = vec![&out.outputs, &pouts, &out.h, &ph, &out.c, &pc];
        for k in 0..wrt.len() {
            nodes.push(gf[k].as_ref().unwrap());
            nodes.push(gp[k].as_ref().unwrap());
        }
        let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
        let what = format!("[{b}, {t}, {d}] units {u} state {with_state}");
        for (k, name) in ["outputs", "h", "c"].iter().enumerate() {
            assert_close(
                &format!("{what} {name}"),
                &got[2 * k],
                &got[2 * k + 1],
                1e-5,
            );
        }
        for (k, n) in wrt.iter().enumerate() {
            assert_close(
                &format!("{what} d/d{}", n.name()),
                &got[6 + 2 * k],
                &got[7 + 2 * k],
                2e-4,
            );
        }
    }
}

/// Finite differences through the whole unrolled layer, first and second
/// order, w.r.t. the input, the variables and the initial state.
#[test]
fn lstm_first_and_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for with_state in [false, true] {
        let (b, t, d, u) = (2usize, 3usize, 2usize, 2usize);
        let g = Graph::with_seed(3);
        let x = g.placeholder([b, t, d]);
        let h0 = g.placeholder([b, u]);
        let c0 = g.placeholder([b, u]);
        let lstm = Lstm::new(u)
            .kernel_initializer(RandomUniform::new(-1.0, 1.0))
            .recurrent_initializer(RandomUniform::new(-1.0, 1.0))
            .bias_initializer(RandomUniform::new(-0.5, 0.5));
        let out = lstm
            .apply_with_state(&x, with_state.then_some((&h0, &c0)))
            .unwrap();
        let loss = ad::add(
            &ad::reduce_sum(&ad::square(&out.outputs).unwrap(), ad::Axes::All, false).unwrap(),
            &ad::reduce_sum(&out.c, ad::Axes::All, false).unwrap(),
        )
        .unwrap();
        let mut feed = Feed::new()
            .with(&x, random(&mut rng, &[b, t, d], -1.5, 1.5))
            .unwrap();
        let vars = lstm.variables();
        let mut wrt: Vec<&Node> = vec![&x];
        wrt.extend(vars.iter());
        if with_state {
            feed.insert(&h0, random(&mut rng, &[b, u], -1.0, 1.0))
                .unwrap();
            feed.insert(&c0, random(&mut rng, &[b, u], -1.0, 1.0))
                .unwrap();
            wrt.extend([&h0, &c0]);
        }
        check_gradients(&loss, &wrt, &feed).unwrap_or_else(|e| panic!("state {with_state}: {e}"));
        check_gradients(&out.outputs, &wrt, &feed)
            .unwrap_or_else(|e| panic!("state {with_state}: {e}"));
        SECOND_ORDER
            .check_second_order(&loss, &wrt, &feed)
            .unwrap_or_else(|e| panic!("state {with_state}: {e}"));
    }
}

/// The whole recurrence is one LstmSequence node; the gradients of both
/// kernels and the bias come from its one fused backward node (the input
/// kernel's through one product over all steps, the recurrent kernel's as one
/// product over all steps, the bias's as one column sum).
#[test]
fn lstm_gradient_is_fused_and_joined() {
    let g = Graph::with_seed(0);
    let x = g.placeholder(ad::shape![None, 5, 3]);
    let lstm = Lstm::new(4);
    let y = lstm.apply(&x).unwrap();
    let loss = ad::reduce_sum(&y, ad::Axes::All, false).unwrap();
    let vars = [
        lstm.kernel().unwrap(),
        lstm.recurrent_kernel().unwrap(),
        lstm.bias().unwrap(),
    ];
    let refs: Vec<&Node> = vars.iter().collect();
    let grads: Vec<Node> = ad::gradients(&[&loss], &refs, None)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let types: Vec<&str> = grads.iter().map(Node::op_type).collect();
    assert_eq!(types, ["MatMul", "LstmSequenceGradWh", "ReduceSum"]);
    // dkernel = rowsᵀ · dxw, dxw the fused backward node itself; the other
    // two read that same node.
    let dxw = &grads[0].inputs()[1];
    assert_eq!(dxw.op_type(), "LstmSequenceGrad");
    assert!(grads[1].inputs().contains(dxw));
    assert_eq!(&grads[2].inputs()[0], dxw);
    let seq = dxw
        .inputs()
        .into_iter()
        .filter(|n| n.op_type() == "LstmSequence")
        .count();
    assert_eq!(seq, 1, "the forward node is an input of its gradient");
}

#[test]
fn lstm_variables_are_named_and_shared() {
    let g = Graph::with_seed(0);
    let x = g.placeholder(ad::shape![None, 4, 3]);
    let lstm = Lstm::new(5);
    assert!(lstm.variables().is_empty());
    let a = lstm.apply(&x).unwrap();
    let b = lstm.apply(&x).unwrap();
    assert_ne!(a, b);
    assert_eq!(lstm.scope_name().unwrap(), "lstm");
    let shapes: Vec<TensorShape> = lstm.variables().iter().map(Node::shape).collect();
    assert_eq!(
        shapes,
        [ad::shape![3, 20], ad::shape![5, 20], ad::shape![20]]
    );
    assert_eq!(g.variables(true).len(), 3);
    // Default initializers: kernels within ±1/√units, bias zeros.
    let bound = 1.0 / 5f32.sqrt();
    for v in &lstm.variables()[..2] {
        let value = g.variable_value(v).unwrap();
        assert!(value.iter().all(|w| w.abs() <= bound), "{}", v.name());
        assert!(value.iter().any(|w| w.abs() > bound / 2.0), "{}", v.name());
    }
    assert!(g
        .variable_value(&lstm.bias().unwrap())
        .unwrap()
        .iter()
        .all(|&w| w == 0.0));
    // A second layer gets its own scope; a named one its name.
    let second = Lstm::new(2);
    second.apply(&x).unwrap();
    assert_eq!(second.scope_name().unwrap(), "lstm_1");
    let named = Lstm::new(2)
        .name("encoder")
        .bias_initializer(ConstantInit(0.5));
    named.apply(&x).unwrap();
    assert_eq!(named.kernel().unwrap().name(), "encoder/kernel");
    assert_eq!(
        named.recurrent_kernel().unwrap().name(),
        "encoder/recurrent_kernel"
    );
    assert!(g
        .variable_value(&named.bias().unwrap())
        .unwrap()
        .iter()
        .all(|&w| w == 0.5));
    // The ops live in the layer's scope.
    assert!(a.name().starts_with("lstm/"), "{}", a.name());
}

#[test]
fn lstm_rejects_bad_inputs_naming_the_layer() {
    let g = Graph::with_seed(0);
    let err = |r: ad::Result<Node>| r.unwrap_err().to_string();
    let e = err(Lstm::new(4).apply(&g.placeholder(ad::shape![None, 3])));
    assert!(
        e.contains("lstm (Lstm)") && e.contains("(None, 3)") && e.contains("rank 3"),
        "{e}"
    );
    let e = err(Lstm::new(4).apply(&g.placeholder(ad::shape![2, None, 3])));
    assert!(
        e.contains("lstm (Lstm)") && e.contains("(2, None, 3)"),
        "{e}"
    );
    let e = err(Lstm::new(4).apply(&g.placeholder(ad::shape![2, 3, None])));
    assert!(e.contains("(2, 3, None)"), "{e}");
    let e = err(Lstm::new(0).apply(&g.placeholder(ad::shape![2, 3, 1])));
    assert!(e.contains("units"), "{e}");
    let e = err(Lstm::new(2)
        .forget_bias(f32::INFINITY)
        .apply(&g.placeholder([2, 3, 1])));
    assert!(e.contains("forget_bias"), "{e}");
    let e = err(Lstm::new(2).apply(&g.placeholder([2, 0, 1])));
    assert!(e.contains("no time steps"), "{e}");
    // Another feature count than the variables were made for.
    let lstm = Lstm::new(3).name("enc");
    lstm.apply(&g.placeholder(ad::shape![None, 2, 4])).unwrap();
    let e = err(lstm.apply(&g.placeholder(ad::shape![None, 2, 5])));
    assert!(
        e.contains("enc (Lstm)") && e.contains("features 4") && e.contains("5"),
        "{e}"
    );
    // An initial state of the wrong size.
    let x = g.placeholder(ad::shape![None, 2, 4]);
    let bad = g.placeholder(ad::shape![None, 2]);
    let e = lstm
        .apply_with_state(&x, Some((&bad, &bad)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("enc/") && e.contains("(None, 2)"), "{e}");
    // Another graph.
    let other = Graph::new();
    let e = err(lstm.apply(&other.placeholder(ad::shape![None, 2, 4])));
    assert!(e.contains("enc"), "{e}");
}
