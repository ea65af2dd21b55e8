//! The whole-sequence LSTM node (`lstm_sequence`): values and gradients of
//! every input against the same steps unrolled as cell nodes, for batches of
//! one row group and of several, with and without an initial state; finite
//! differences of first and second derivatives; the bits independent of the
//! thread count; the recomputation of an inference pass; errors.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::ops::rnn::GatePart;
use ad::{Feed, Graph, Node, RunTime, Tensor};
use adgraph as ad;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(-scale..scale))
}

/// The sequence's inputs as placeholders, and a feed for them.
struct Seq {
    g: Graph,
    inputs: Vec<Node>,
    feed: Feed,
}

fn seq(t: usize, b: usize, h: usize, initial: bool, seed: u64) -> Seq {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = Graph::new();
    let mut shapes = vec![vec![t * b, 4 * h], vec![h, 4 * h], vec![4 * h]];
    if initial {
        shapes.push(vec![b, h]);
        shapes.push(vec![b, h]);
    }
    let mut feed = Feed::new();
    let inputs: Vec<Node> = shapes
        .iter()
        .map(|s| {
            let p = g.placeholder(s.as_slice());
            let scale = if s.len() == 2 && s[0] == h { 0.6 } else { 1.2 };
            feed.insert(&p, random(&mut rng, s, scale)).unwrap();
            p
        })
        .collect();
    Seq { g, inputs, feed }
}

/// The same steps as cell nodes: `[2, T, B, H]`.
fn unrolled(s: &Seq, t: usize) -> Node {
    let (xw, wh, b) = (&s.inputs[0], &s.inputs[1], &s.inputs[2]);
    let (mut h, mut c) = match s.inputs.len() {
        5 => (Some(s.inputs[3].clone()), Some(s.inputs[4].clone())),
        _ => (None, None),
    };
    let (mut hs, mut cs) = (vec![], vec![]);
    for k in 0..t {
        let rec = h.as_ref().map(|h| ad::matmul(h, wh).unwrap());
        let mut parts = vec![
            GatePart::RowBlock {
                of: xw,
                index: k,
                count: t,
            },
            GatePart::Bias(b),
        ];
        parts.extend(rec.as_ref().map(GatePart::Full));
        let (h_t, c_t) = ad::lstm_cell_from_parts(&parts, c.as_ref(), 1.0).unwrap();
        hs.push(h_t.clone());
        cs.push(c_t.clone());
        h = Some(h_t);
        c = Some(c_t);
    }
    let hs: Vec<&Node> = hs.iter().collect();
    let cs: Vec<&Node> = cs.iter().collect();
    ad::stack(
        &[&ad::stack(&hs, 0).unwrap(), &ad::stack(&cs, 0).unwrap()],
        0,
    )
    .unwrap()
}

fn fused(s: &Seq, t: usize) -> Node {
    let initial = (s.inputs.len() == 5).then(|| (&s.inputs[3], &s.inputs[4]));
    ad::lstm_sequence(&s.inputs[0], &s.inputs[1], &s.inputs[2], initial, t, 1.0).unwrap()
}

/// `sum(w ⊙ out²)`: every h_t and c_t reached, nonlinearly.
fn loss(out: &Node, w: &Node) -> Node {
    ad::reduce_sum(
        &ad::multiply(&ad::square(out).unwrap(), w).unwrap(),
        ad::Axes::All,
        false,
    )
    .unwrap()
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

#[test]
fn the_sequence_node_matches_the_unrolled_cells() {
    for &(t, b, h, initial) in &[
        (1usize, 1usize, 1usize, false),
        (3, 2, 4, true),
        (4, 3, 2, false),
        (16, 64, 128, false),
        (5, 100, 8, true),
    ] {
        let mut s = seq(t, b, h, initial, 3);
        let (f, u) = (fused(&s, t), unrolled(&s, t));
        assert_eq!(f.shape(), u.shape());
        let w = s.g.placeholder([2, t, b, h]);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        s.feed
            .insert(&w, random(&mut rng, &[2, t, b, h], 1.0))
            .unwrap();
        let (lf, lu) = (loss(&f, &w), loss(&u, &w));
        let wrt: Vec<&Node> = s.inputs.iter().collect();
        let gf = ad::gradients(&[&lf], &wrt, None).unwrap();
        let gu = ad::gradients(&[&lu], &wrt, None).unwrap();
        // One step from a zero state never reads Wh: the unrolled cells give
        // no gradient for it, the fused node zeros.
        let zero = ad::multiply(&s.inputs[1], &s.g.constant(0.0f32).unwrap()).unwrap();
        let mut nodes = vec![&f, &u];
        for k in 0..wrt.len() {
            nodes.push(gf[k].as_ref().unwrap());
            nodes.push(gu[k].as_ref().unwrap_or(&zero));
        }
        let got = RunTime::new().evaluate(&nodes, &s.feed).unwrap();
        let what = format!("T {t} B {b} H {h} initial {initial}");
        assert_close(&format!("{what} output"), &got[0], &got[1], 1e-5);
        let names = ["dxw", "dWh", "db", "dh0", "dc0"];
        for k in 0..wrt.len() {
            let tol = 1e-4 * (1.0 + (t as f32).sqrt());
            assert_close(
                &format!("{what} {}", names[k]),
                &got[2 + 2 * k],
                &got[3 + 2 * k],
                tol,
            );
        }
        // An inference pass keeps nothing: the gradient recomputes the forward.
        let inferred = RunTime::new().infer(&nodes, &s.feed).unwrap();
        assert_eq!(got, inferred, "{what}: inference recomputation");
    }
}

#[test]
fn first_and_second_derivatives_of_every_input() {
    for &(t, b, h, initial) in &[(3usize, 2usize, 2usize, true), (2, 1, 3, false)] {
        let mut s = seq(t, b, h, initial, 5);
        let out = fused(&s, t);
        let w = s.g.placeholder([2, t, b, h]);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        s.feed
            .insert(&w, random(&mut rng, &[2, t, b, h], 1.0))
            .unwrap();
        let l = loss(&out, &w);
        let wrt: Vec<&Node> = s.inputs.iter().collect();
        check_gradients(&l, &wrt, &s.feed).unwrap();
        GradCheck {
            eps: 1e-2,
            atol: 2e-2,
            rtol: 2e-2,
            seed: 7,
        }
        .check_second_order(&l, &wrt, &s.feed)
        .unwrap();
    }
}

/// Row groups are cut by the batch size only: 1, 2 or 3 threads give the
/// same bits, forward and backward.
#[test]
fn the_bits_do_not_depend_on_the_thread_count() {
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let s = seq(6, 100, 16, true, 11);
                let out = fused(&s, 6);
                let l = ad::reduce_sum(&ad::square(&out).unwrap(), ad::Axes::All, false).unwrap();
                let wrt: Vec<&Node> = s.inputs.iter().collect();
                let grads: Vec<Node> = ad::gradients(&[&l], &wrt, None)
                    .unwrap()
                    .into_iter()
                    .map(Option::unwrap)
                    .collect();
                let mut nodes = vec![&out];
                nodes.extend(grads.iter());
                RunTime::new().evaluate(&nodes, &s.feed).unwrap()
            })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn shapes_that_do_not_fit_are_errors_naming_the_node() {
    let g = Graph::new();
    let xw = g.placeholder(ad::shape![None, 16]);
    let wh = g.placeholder([4, 16]);
    let b = g.placeholder([16]);
    let err = |r: ad::Result<Node>| r.unwrap_err().to_string();
    let e = err(ad::lstm_sequence(
        &g.placeholder([7, 16]),
        &wh,
        &b,
        None,
        3,
        1.0,
    ));
    assert!(
        e.contains("LstmSequence") && e.contains("not 3 steps"),
        "{e}"
    );
    let e = err(ad::lstm_sequence(
        &xw,
        &g.placeholder([3, 12]),
        &b,
        None,
        3,
        1.0,
    ));
    assert!(e.contains("LstmSequence"), "{e}");
    let e = err(ad::lstm_sequence(
        &xw,
        &wh,
        &g.placeholder([12]),
        None,
        3,
        1.0,
    ));
    assert!(e.contains("4 * units"), "{e}");
    let e = err(ad::lstm_sequence(&xw, &wh, &b, None, 0, 1.0));
    assert!(e.contains("steps must be at least 1"), "{e}");
    let h0 = g.placeholder([2, 5]);
    let e = err(ad::lstm_sequence(&xw, &wh, &b, Some((&h0, &h0)), 3, 1.0));
    assert!(e.contains("h_0") && e.contains("(2, 5)"), "{e}");
    // Rows known only at run time: checked when fed.
    let out = ad::lstm_sequence(&xw, &wh, &b, None, 3, 1.0).unwrap();
    let feed = ad::feed! {
        xw => Tensor::zeros(vec![7, 16]),
        wh => Tensor::zeros(vec![4, 16]),
        b => Tensor::zeros(vec![16]),
    }
    .unwrap();
    let e = RunTime::new()
        .infer(&[&out], &feed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not 3 steps"), "{e}");
}
