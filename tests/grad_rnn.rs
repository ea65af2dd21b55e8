//! The fused LSTM cell: values and gradients against the same math written
//! with simple ops, finite-difference checks of first and second
//! derivatives, the gradient nodes' sharing and recomputation, errors; and
//! the joined gradient of unstack/split pieces ([`PieceGrads`]) it relies on.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::ops::array::PieceGrads;
use ad::ops::rnn::{DcPrev, GateInput, LstmCellGrad, LstmCellGradOf};
use ad::{Feed, Graph, Node, RunTime, Tensor, TensorShape};
use adgraph as ad;
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
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(lo..hi))
}

/// The cell from simple ops: `(h_t, c_t)`.
fn composed(z: &Node, c_prev: Option<&Node>, forget_bias: f32) -> (Node, Node) {
    let gates = ad::split(z, 4, 1).unwrap();
    let i = ad::sigmoid(&gates[0]).unwrap();
    let f = ad::sigmoid(&(&gates[1] + forget_bias).check().unwrap()).unwrap();
    let g = ad::tanh(&gates[2]).unwrap();
    let o = ad::sigmoid(&gates[3]).unwrap();
    let ig = ad::multiply(&i, &g).unwrap();
    let c = match c_prev {
        Some(cp) => ad::add(&ad::multiply(&f, cp).unwrap(), &ig).unwrap(),
        None => ig,
    };
    let h = ad::multiply(&o, &ad::tanh(&c).unwrap()).unwrap();
    (h, c)
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

/// A cell on placeholders `z` `[b, 4u]` and (optionally) `c_prev` `[b, u]`.
struct Cell {
    g: Graph,
    z: Node,
    c_prev: Option<Node>,
    h: Node,
    c: Node,
}

fn build_cell(b: usize, u: usize, with_c: bool, forget_bias: f32) -> Cell {
    let g = Graph::new();
    let z = g.placeholder([b, 4 * u]);
    let c_prev = with_c.then(|| g.placeholder([b, u]));
    let (h, c) = ad::lstm_cell(&z, c_prev.as_ref(), forget_bias).unwrap();
    Cell { g, z, c_prev, h, c }
}

fn feed_cell(cell: &Cell, b: usize, u: usize, rng: &mut ChaCha8Rng) -> Feed {
    let mut feed = Feed::new()
        .with(&cell.z, random(rng, &[b, 4 * u], -2.0, 2.0))
        .unwrap();
    if let Some(cp) = &cell.c_prev {
        feed.insert(cp, random(rng, &[b, u], -1.5, 1.5)).unwrap();
    }
    feed
}

/// `sum(w_h ⊙ h) + sum(w_c ⊙ c²)`: both outputs reached, with an upstream
/// gradient of `c` that depends on the inputs.
fn loss_of(h: &Node, c: &Node, w: &Node) -> Node {
    let a = ad::reduce_sum(&ad::multiply(h, w).unwrap(), ad::Axes::All, false).unwrap();
    let b = ad::reduce_sum(&ad::square(c).unwrap(), ad::Axes::All, false).unwrap();
    ad::add(&a, &b).unwrap()
}

const SIZES: &[(usize, usize)] = &[(1, 1), (3, 2), (4, 5), (2, 17)];

/// Values and first derivatives against the composition, for small and
/// large (split over threads) batches, with and without `c_prev`.
#[test]
fn lstm_cell_matches_the_composition_of_simple_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let large = [(64usize, 128usize), (300, 64)];
    for &(b, u) in SIZES.iter().chain(&large) {
        for with_c in [true, false] {
            for fb in [1.0f32, 0.0, -0.5] {
                let cell = build_cell(b, u, with_c, fb);
                let (hc, cc) = composed(&cell.z, cell.c_prev.as_ref(), fb);
                assert_eq!(cell.h.shape(), TensorShape::known(&[b, u]));
                assert_eq!(cell.c.shape(), TensorShape::known(&[b, u]));
                let w = cell.g.placeholder([b, u]);
                let (lf, lc) = (loss_of(&cell.h, &cell.c, &w), loss_of(&hc, &cc, &w));
                let mut wrt = vec![&cell.z];
                wrt.extend(cell.c_prev.as_ref());
                let gf = ad::gradients(&[&lf], &wrt, None).unwrap();
                let gc = ad::gradients(&[&lc], &wrt, None).unwrap();
                assert_eq!(gf[0].as_ref().unwrap().op_type(), "LstmCellGrad");
                let mut feed = feed_cell(&cell, b, u, &mut rng);
                feed.insert(&w, random(&mut rng, &[b, u], -1.0, 1.0))
                    .unwrap();
                let mut nodes = vec![&cell.h, &hc, &cell.c, &cc];
                for k in 0..wrt.len() {
                    nodes.push(gf[k].as_ref().unwrap());
                    nodes.push(gc[k].as_ref().unwrap());
                }
                let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
                let what = format!("[{b}, {u}] c_prev {with_c} forget_bias {fb}");
                assert_close(&format!("{what} h"), &got[0], &got[1], 1e-6);
                assert_close(&format!("{what} c"), &got[2], &got[3], 1e-6);
                assert_close(&format!("{what} dz"), &got[4], &got[5], 1e-5);
                if with_c {
                    assert_close(&format!("{what} dc_prev"), &got[6], &got[7], 1e-5);
                }
            }
        }
    }
}

#[test]
fn lstm_cell_first_and_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(b, u) in SIZES {
        for with_c in [true, false] {
            let cell = build_cell(b, u, with_c, 1.0);
            let feed = feed_cell(&cell, b, u, &mut rng);
            let mut wrt = vec![&cell.z];
            wrt.extend(cell.c_prev.as_ref());
            let what = format!("[{b}, {u}] c_prev {with_c}");
            for out in [&cell.h, &cell.c] {
                check_gradients(out, &wrt, &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
                let report = SECOND_ORDER
                    .check_second_order(out, &wrt, &feed)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(report.elements, b * u * if with_c { 5 } else { 4 });
                for x in &wrt {
                    SECOND_ORDER
                        .check_second_order(out, &[x], &feed)
                        .unwrap_or_else(|e| panic!("{what} w.r.t. {}: {e}", x.name()));
                }
            }
        }
    }
}

/// Both outputs feeding a nonlinear loss, so the cell's upstream gradient
/// holds both halves and depends on the inputs; and the gradient graph
/// itself checked at the second order (third derivatives of the cell).
#[test]
fn lstm_cell_second_derivatives_through_the_upstream_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &(b, u) in &[(2usize, 3usize), (3, 1)] {
        for with_c in [true, false] {
            let cell = build_cell(b, u, with_c, 1.0);
            let w = cell.g.placeholder([b, u]);
            let loss = loss_of(&cell.h, &cell.c, &w);
            let mut feed = feed_cell(&cell, b, u, &mut rng);
            feed.insert(&w, random(&mut rng, &[b, u], -1.0, 1.0))
                .unwrap();
            let mut wrt = vec![&cell.z];
            wrt.extend(cell.c_prev.as_ref());
            let what = format!("[{b}, {u}] c_prev {with_c}");
            check_gradients(&loss, &wrt, &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
            SECOND_ORDER
                .check_second_order(&loss, &wrt, &feed)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let grads = ad::gradients(&[&loss], &wrt, None).unwrap();
            let terms: Vec<Node> = grads
                .iter()
                .map(|g| {
                    let s = ad::sin(g.as_ref().unwrap()).unwrap();
                    ad::reduce_sum(&s, ad::Axes::All, false).unwrap()
                })
                .collect();
            let refs: Vec<&Node> = terms.iter().collect();
            let s = ad::add_n(&refs).unwrap();
            SECOND_ORDER
                .check_second_order(&s, &wrt, &feed)
                .unwrap_or_else(|e| panic!("{what}, third order: {e}"));
        }
    }
}

/// Two steps chained (`c` of the first is `c_prev` of the second, `h` of
/// the first feeds the second's `z`): the recurrence's gradients by finite
/// differences, first and second order.
#[test]
fn two_chained_cells_have_the_right_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, u) = (2usize, 2usize);
    let g = Graph::new();
    let z1 = g.placeholder([b, 4 * u]);
    let x2 = g.placeholder([b, 4 * u]);
    let wh = g.placeholder([u, 4 * u]);
    let (h1, c1) = ad::lstm_cell(&z1, None, 1.0).unwrap();
    let z2 = ad::add(&x2, &ad::matmul(&h1, &wh).unwrap()).unwrap();
    let (h2, _) = ad::lstm_cell(&z2, Some(&c1), 1.0).unwrap();
    let loss = ad::reduce_sum(&ad::square(&h2).unwrap(), ad::Axes::All, false).unwrap();
    let feed = ad::feed! {
        z1 => random(&mut rng, &[b, 4 * u], -1.5, 1.5),
        x2 => random(&mut rng, &[b, 4 * u], -1.5, 1.5),
        wh => random(&mut rng, &[u, 4 * u], -1.0, 1.0),
    }
    .unwrap();
    let wrt = [&z1, &x2, &wh];
    check_gradients(&loss, &wrt, &feed).unwrap();
    SECOND_ORDER.check_second_order(&loss, &wrt, &feed).unwrap();
}

/// With both inputs wanted, the dz node keeps dc_prev and the dc_prev node
/// reads it (dz is one of its inputs); each alone gives the same values,
/// and so does an inference pass, which keeps nothing (recomputed gates).
#[test]
fn lstm_cell_gradient_nodes_share_and_recompute() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (b, u) in [(3usize, 4usize), (64, 300)] {
        let cell = build_cell(b, u, true, 1.0);
        let cp = cell.c_prev.clone().unwrap();
        let up_h = cell.g.placeholder([b, u]);
        let up_c = cell.g.placeholder([b, u]);
        let loss = ad::add(
            &ad::reduce_sum(&ad::multiply(&cell.h, &up_h).unwrap(), ad::Axes::All, false).unwrap(),
            &ad::reduce_sum(&ad::multiply(&cell.c, &up_c).unwrap(), ad::Axes::All, false).unwrap(),
        )
        .unwrap();
        let both: Vec<Node> = ad::gradients(&[&loss], &[&cell.z, &cp], None)
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let types: Vec<&str> = both.iter().map(Node::op_type).collect();
        assert_eq!(types, ["LstmCellGrad", "LstmCellGradCPrev"]);
        assert!(both[1].inputs().iter().any(|i| i == &both[0]));
        // The two upstream pieces arrive joined in one node.
        let d_state = &both[0].inputs()[0];
        assert_eq!(d_state.op_type(), "PieceGrads");
        let alone: Vec<Node> = [&cell.z, &cp]
            .iter()
            .map(|w| {
                ad::gradients(&[&loss], &[w], None).unwrap()[0]
                    .clone()
                    .unwrap()
            })
            .collect();
        assert_eq!(alone[1].op_type(), "LstmCellGradCPrev");
        assert!(!alone[1]
            .inputs()
            .iter()
            .any(|i| i.op_type() == "LstmCellGrad"));
        let mut feed = feed_cell(&cell, b, u, &mut rng);
        feed.insert(&up_h, random(&mut rng, &[b, u], -1.0, 1.0))
            .unwrap();
        feed.insert(&up_c, random(&mut rng, &[b, u], -1.0, 1.0))
            .unwrap();
        let nodes: Vec<&Node> = both.iter().chain(&alone).collect();
        let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
        assert_eq!(got[0], got[2], "dz shared and alone");
        assert_eq!(got[1], got[3], "dc_prev shared and alone");
        let inferred = RunTime::new().infer(&nodes, &feed).unwrap();
        assert_eq!(got, inferred);
        // A gradient node whose forward input is not a cell recomputes the
        // gates from z and c_prev: the same values.
        let d_up = cell.g.placeholder([2, b, u]);
        let not_the_forward = cell.g.placeholder([1]);
        let lone = cell
            .g
            .add_op(
                LstmCellGrad {
                    forget_bias: 1.0,
                    gate_inputs: vec![GateInput::Full],
                    has_c_prev: true,
                    of: LstmCellGradOf::Z,
                    dc_prev: DcPrev::Skip,
                },
                &[&d_up, &cell.z, &cp, &not_the_forward],
            )
            .unwrap();
        let state = cell.h.inputs()[0].clone();
        let via_cell = cell
            .g
            .add_op(
                LstmCellGrad {
                    forget_bias: 1.0,
                    gate_inputs: vec![GateInput::Full],
                    has_c_prev: true,
                    of: LstmCellGradOf::Z,
                    dc_prev: DcPrev::Skip,
                },
                &[&d_up, &cell.z, &cp, &state],
            )
            .unwrap();
        feed.insert(&d_up, random(&mut rng, &[2, b, u], -1.0, 1.0))
            .unwrap();
        feed.insert(&not_the_forward, Tensor::zeros(vec![1]))
            .unwrap();
        let got = RunTime::new().evaluate(&[&lone, &via_cell], &feed).unwrap();
        assert_eq!(got[0], got[1]);
    }
}

/// A cell whose z is a row block of a `[steps·b, 4u]` node, a `[b, 4u]`
/// node and a `[4u]` bias: the same values and gradients as the sum
/// written out (split, add) feeding the plain cell, first and second
/// derivatives by finite differences for every part and `c_prev`, and the
/// gradient of each part in its own shape (a SplitGrad piece, dz, a sum).
#[test]
fn lstm_cell_from_parts_is_the_cell_of_the_sum() {
    use ad::ops::rnn::GatePart;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (b, u, steps) in [(1usize, 1usize, 1usize), (3, 2, 4), (2, 5, 3), (64, 128, 2)] {
        for t in [0, steps - 1] {
            let g = Graph::new();
            let xw = g.placeholder([steps * b, 4 * u]);
            let rec = g.placeholder([b, 4 * u]);
            let bias = g.placeholder([4 * u]);
            let cp = g.placeholder([b, u]);
            let parts = [
                GatePart::Bias(&bias),
                GatePart::RowBlock {
                    of: &xw,
                    index: t,
                    count: steps,
                },
                GatePart::Full(&rec),
            ];
            let (h, c) = ad::lstm_cell_from_parts(&parts, Some(&cp), 1.0).unwrap();
            assert_eq!(h.shape(), TensorShape::known(&[b, u]));
            let z = ad::add(
                &ad::add(&ad::split(&xw, steps, 0).unwrap()[t], &rec).unwrap(),
                &bias,
            )
            .unwrap();
            let (hc, cc) = composed(&z, Some(&cp), 1.0);
            let w = g.placeholder([b, u]);
            let (lf, lc) = (loss_of(&h, &c, &w), loss_of(&hc, &cc, &w));
            let wrt = [&xw, &rec, &bias, &cp];
            let gf = ad::gradients(&[&lf], &wrt, None).unwrap();
            let gc = ad::gradients(&[&lc], &wrt, None).unwrap();
            let types: Vec<&str> = gf.iter().map(|n| n.as_ref().unwrap().op_type()).collect();
            assert_eq!(
                types,
                [
                    "SplitGrad",
                    "LstmCellGrad",
                    "ReduceSum",
                    "LstmCellGradCPrev"
                ]
            );
            let feed = ad::feed! {
                xw => random(&mut rng, &[steps * b, 4 * u], -1.5, 1.5),
                rec => random(&mut rng, &[b, 4 * u], -1.0, 1.0),
                bias => random(&mut rng, &[4 * u], -0.5, 0.5),
                cp => random(&mut rng, &[b, u], -1.5, 1.5),
                w => random(&mut rng, &[b, u], -1.0, 1.0),
            }
            .unwrap();
            let mut nodes = vec![&h, &hc, &c, &cc];
            for k in 0..wrt.len() {
                nodes.push(gf[k].as_ref().unwrap());
                nodes.push(gc[k].as_ref().unwrap());
            }
            let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
            let what = format!("[{b}, {u}] step {t} of {steps}");
            for (k, name) in ["h", "c", "dxw", "drec", "dbias", "dc_prev"]
                .iter()
                .enumerate()
            {
                let tol = if k < 2 { 1e-6 } else { 1e-5 };
                assert_close(&format!("{what} {name}"), &got[2 * k], &got[2 * k + 1], tol);
            }
            // An inference pass recomputes the gates from the parts.
            assert_eq!(got, RunTime::new().infer(&nodes, &feed).unwrap());
            if b * u <= 10 {
                check_gradients(&lf, &wrt, &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
                SECOND_ORDER
                    .check_second_order(&lf, &wrt, &feed)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}

/// Parts that do not fit together are errors naming the cell and the shapes.
#[test]
fn lstm_cell_from_parts_rejects_parts_that_do_not_fit() {
    use ad::ops::rnn::GatePart;
    let g = Graph::new();
    let xw = g.placeholder(ad::shape![None, 8]);
    let rec = g.placeholder([2, 8]);
    let bias = g.placeholder([8]);
    let block = |index, count| GatePart::RowBlock {
        of: &xw,
        index,
        count,
    };
    let err = |parts: &[GatePart]| {
        ad::lstm_cell_from_parts(parts, None, 1.0)
            .unwrap_err()
            .to_string()
    };
    let e = err(&[GatePart::Bias(&bias)]);
    assert!(
        e.contains("LstmCell") && e.contains("besides a bias"),
        "{e}"
    );
    let e = err(&[block(3, 3)]);
    assert!(e.contains("row block 3 of 3"), "{e}");
    let e = err(&[GatePart::Full(&rec), GatePart::Bias(&g.placeholder([12]))]);
    assert!(e.contains("LstmCell") && e.contains("(12,)"), "{e}");
    let e = err(&[GatePart::Full(&rec), GatePart::Full(&g.placeholder([3, 8]))]);
    assert!(e.contains("(3, 8)"), "{e}");
    let e = err(&[GatePart::Bias(&rec), GatePart::Full(&rec)]);
    assert!(e.contains("gate bias"), "{e}");
    let six = g.placeholder([6, 8]);
    let e = err(&[GatePart::RowBlock {
        of: &six,
        index: 0,
        count: 4,
    }]);
    assert!(e.contains("do not cut into 4 equal blocks"), "{e}");
    // Unknown rows: checked when fed.
    let (h, _) =
        ad::lstm_cell_from_parts(&[block(1, 4), GatePart::Bias(&bias)], None, 1.0).unwrap();
    let feed =
        ad::feed! { xw => Tensor::zeros(vec![6, 8]), bias => Tensor::zeros(vec![8]) }.unwrap();
    let e = RunTime::new().infer(&[&h], &feed).unwrap_err().to_string();
    assert!(e.contains("do not cut into 4 equal blocks"), "{e}");
    let feed =
        ad::feed! { xw => Tensor::zeros(vec![8, 8]), bias => Tensor::zeros(vec![8]) }.unwrap();
    let out = RunTime::new().infer(&[&h], &feed).unwrap();
    assert_eq!(out[0].shape(), [2, 2]);
}

#[test]
fn lstm_cell_rejects_bad_shapes_naming_the_node() {
    let g = Graph::new();
    let z = g.placeholder(ad::shape![None, 8]);
    // Not 4 * units.
    let e = ad::lstm_cell(&g.placeholder([3, 6]), None, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LstmCell") && e.contains("(3, 6)") && e.contains("4 * units"),
        "{e}"
    );
    // Not a matrix.
    let e = ad::lstm_cell(&g.placeholder([3]), None, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected rank 2"), "{e}");
    // c_prev of the wrong size or batch.
    let e = ad::lstm_cell(&z, Some(&g.placeholder([5, 3])), 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c_prev") && e.contains("(5, 3)") && e.contains("(None, 2)"),
        "{e}"
    );
    let e = ad::lstm_cell(&g.placeholder([4, 8]), Some(&g.placeholder([3, 2])), 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c_prev"), "{e}");
    // A forget bias that is not finite.
    let e = ad::lstm_cell(&z, None, f32::NAN).unwrap_err().to_string();
    assert!(e.contains("forget_bias"), "{e}");
    // Run time: a batch that differs between z and c_prev, fed.
    let cp = g.placeholder(ad::shape![None, 2]);
    let (h, _) = ad::lstm_cell(&z, Some(&cp), 1.0).unwrap();
    let feed = ad::feed! { z => [[0.0; 8]; 2], cp => [[0.0; 2]; 3] }.unwrap();
    let e = RunTime::new().forward(&h, &feed).unwrap_err().to_string();
    assert!(
        e.contains("LstmCell") && e.contains("(3, 2)") && e.contains("(2, 2)"),
        "{e}"
    );
}

/// Pieces of an unstack or a split reached by the gradient come back as one
/// [`PieceGrads`] node: values as the sum of the pieces' placed gradients
/// (zeros for pieces without one, sums for pieces taken twice), first and
/// second derivatives by finite differences.
#[test]
fn piece_gradients_are_joined_into_one_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let g = Graph::new();
    let x = g.placeholder([3, 4, 5]);
    let pieces = ad::unstack(&x, 1).unwrap();
    let again = ad::unstack(&x, 1).unwrap();
    let w = g.placeholder([3, 5]);
    // Pieces 0, 1, 3 (not 2), piece 1 twice (from a second unstack).
    let terms: Vec<Node> = [&pieces[0], &pieces[1], &pieces[3], &again[1]]
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let t = ad::multiply(
                &ad::sin(p).unwrap(),
                &(&w * (k as f32 + 1.0)).check().unwrap(),
            )
            .unwrap();
            ad::reduce_sum(&t, ad::Axes::All, false).unwrap()
        })
        .collect();
    let refs: Vec<&Node> = terms.iter().collect();
    let loss = ad::add_n(&refs).unwrap();
    let dx = ad::gradients(&[&loss], &[&x], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dx.op_type(), "PieceGrads");
    let feed = ad::feed! {
        x => random(&mut rng, &[3, 4, 5], -1.0, 1.0),
        w => random(&mut rng, &[3, 5], -1.0, 1.0),
    }
    .unwrap();
    let got = RunTime::new().forward(&dx, &feed).unwrap().clone();
    let (xv, wv) = (feed.get(&x).unwrap(), feed.get(&w).unwrap());
    for i in 0..3 {
        for j in 0..4 {
            for k in 0..5 {
                let scale = match j {
                    0 => 1.0,
                    1 => 2.0 + 4.0,
                    3 => 3.0,
                    _ => 0.0,
                };
                let want = xv[[i, j, k]].cos() * wv[[i, k]] * scale;
                assert!((got[[i, j, k]] - want).abs() < 1e-5, "[{i}, {j}, {k}]");
            }
        }
    }
    check_gradients(&loss, &[&x, &w], &feed).unwrap();
    SECOND_ORDER
        .check_second_order(&loss, &[&x, &w], &feed)
        .unwrap();

    // Split pieces along the last axis, all of them: a concatenation.
    let parts = ad::split(&x, [2, -1, 1], 2).unwrap();
    let terms: Vec<Node> = parts
        .iter()
        .map(|p| ad::reduce_sum(&ad::square(p).unwrap(), ad::Axes::All, false).unwrap())
        .collect();
    let refs: Vec<&Node> = terms.iter().collect();
    let loss = ad::add_n(&refs).unwrap();
    let dx = ad::gradients(&[&loss], &[&x], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dx.op_type(), "PieceGrads");
    let got = RunTime::new().forward(&dx, &feed).unwrap().clone();
    assert_eq!(got, xv * 2.0);
    check_gradients(&loss, &[&x], &feed).unwrap();
    SECOND_ORDER
        .check_second_order(&loss, &[&x], &feed)
        .unwrap();

    // A piece gradient that does not fit its piece is rejected.
    let bad = g.placeholder([3, 4]);
    let e = g
        .add_op(
            PieceGrads {
                axis: 1,
                pieces: vec![ad::ops::array::Piece::Unstack(0)],
            },
            &[&bad, &x],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PieceGrads") && e.contains("(3, 4)") && e.contains("(3, 5)"),
        "{e}"
    );
}
