//! layer_norm: values and gradients against the same math written with
//! simple ops, finite-difference checks of first and second derivatives
//! (the [`LayerNormGrad`] nodes' own gradients), the sharing of the column
//! sums between the gradient nodes, the recomputed statistics, and errors.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::ops::layer_norm::{LayerNormGrad, LayerNormGradOf, ParamSums};
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

/// A layer norm of a placeholder `x` with placeholders `gamma` and `beta`.
struct Ln {
    g: Graph,
    x: Node,
    gamma: Node,
    beta: Node,
    y: Node,
}

fn build_ln(shape: &[usize], begin: usize, eps: f32) -> Ln {
    let g = Graph::new();
    let x = g.placeholder(shape);
    let gamma = g.placeholder(&shape[begin..]);
    let beta = g.placeholder(&shape[begin..]);
    let y = ad::layer_norm(&x, &gamma, &beta, begin, eps).unwrap();
    Ln {
        g,
        x,
        gamma,
        beta,
        y,
    }
}

fn feed_ln(ln: &Ln, shape: &[usize], begin: usize, rng: &mut ChaCha8Rng) -> Feed {
    ad::feed! {
        ln.x => random(rng, shape, -2.0, 2.0),
        ln.gamma => random(rng, &shape[begin..], 0.5, 1.5),
        ln.beta => random(rng, &shape[begin..], -1.0, 1.0),
    }
    .unwrap()
}

/// The same layer norm from simple ops: the plain mean, the biased variance.
fn composed(x: &Node, gamma: &Node, beta: &Node, begin: usize, eps: f32) -> Node {
    let axes: Vec<usize> = (begin..x.shape().rank()).collect();
    let mean = ad::reduce_mean(x, axes.clone(), true).unwrap();
    let xc = ad::subtract(x, &mean).unwrap();
    let var = ad::reduce_mean(&ad::square(&xc).unwrap(), axes, true).unwrap();
    let eps = x.graph().constant(eps).unwrap();
    let inv = ad::rsqrt(&ad::add(&var, &eps).unwrap()).unwrap();
    let xhat = ad::multiply(&xc, &inv).unwrap();
    ad::add(&ad::multiply(&xhat, gamma).unwrap(), beta).unwrap()
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

const SHAPES: &[(&[usize], usize)] = &[
    (&[5], 0),
    (&[4, 5], 1),
    (&[4, 5], 0),
    (&[2, 3, 4], 1),
    (&[2, 3, 4], 2),
    (&[2, 2, 3, 4], 3),
    (&[3, 1, 17], 1),
];

/// Values and first derivatives (of a nonlinear loss, so the upstream
/// gradient varies) against the composition, sequential and parallel
/// (large) arrays alike.
#[test]
fn layer_norm_matches_the_composition_of_simple_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let large: &[(&[usize], usize)] = &[(&[512, 160], 1), (&[16, 8, 1024], 2), (&[3, 70000], 1)];
    for &(shape, begin) in SHAPES.iter().chain(large) {
        for eps in [1e-3f32, 1e-5] {
            let ln = build_ln(shape, begin, eps);
            let c = composed(&ln.x, &ln.gamma, &ln.beta, begin, eps);
            assert_eq!(ln.y.shape(), TensorShape::known(shape));
            let loss_of = |y: &Node| {
                let t = ad::tanh(y).unwrap();
                ad::reduce_sum(&ad::multiply(&t, y).unwrap(), ad::Axes::All, false).unwrap()
            };
            let (lf, lc) = (loss_of(&ln.y), loss_of(&c));
            let wrt = [&ln.x, &ln.gamma, &ln.beta];
            let gf = ad::gradients(&[&lf], &wrt, None).unwrap();
            let gc = ad::gradients(&[&lc], &wrt, None).unwrap();
            assert_eq!(gf[0].as_ref().unwrap().op_type(), "LayerNormGrad");
            let feed = feed_ln(&ln, shape, begin, &mut rng);
            let mut nodes = vec![&ln.y, &c];
            for k in 0..3 {
                nodes.push(gf[k].as_ref().unwrap());
                nodes.push(gc[k].as_ref().unwrap());
            }
            let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
            let what = format!("{shape:?} begin {begin} eps {eps}");
            assert_close(&format!("{what} y"), &got[0], &got[1], 1e-5);
            for (k, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
                let tol = if shape.iter().product::<usize>() > 1000 {
                    2e-4
                } else {
                    1e-5
                };
                assert_close(
                    &format!("{what} {name}"),
                    &got[2 + 2 * k],
                    &got[3 + 2 * k],
                    tol,
                );
            }
        }
    }
}

#[test]
fn layer_norm_first_and_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(shape, begin) in SHAPES {
        let ln = build_ln(shape, begin, 1e-3);
        let feed = feed_ln(&ln, shape, begin, &mut rng);
        let what = format!("{shape:?} begin {begin}");
        let all = [&ln.x, &ln.gamma, &ln.beta];
        check_gradients(&ln.y, &all, &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
        let report = SECOND_ORDER
            .check_second_order(&ln.y, &all, &feed)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let n: usize = shape.iter().product();
        let p: usize = shape[begin..].iter().product();
        assert_eq!(report.elements, n + 2 * p);
        // Each input alone (the gradient nodes then share nothing).
        for wrt in [&ln.x, &ln.gamma, &ln.beta] {
            SECOND_ORDER
                .check_second_order(&ln.y, &[wrt], &feed)
                .unwrap_or_else(|e| panic!("{what}, w.r.t. {}: {e}", wrt.name()));
        }
    }
}

/// A nonlinear loss after the layer norm: the upstream gradient depends on
/// x, gamma and beta, so the gradient nodes' gradients w.r.t. their
/// upstream input count; and the gradient graph itself checked at the
/// second order (third derivatives of the layer norm).
#[test]
fn layer_norm_second_derivatives_through_the_upstream_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &(shape, begin) in &[(&[3usize, 4][..], 1usize), (&[2, 3, 4], 1), (&[2, 3, 4], 2)] {
        let ln = build_ln(shape, begin, 1e-3);
        let feed = feed_ln(&ln, shape, begin, &mut rng);
        let loss = ad::reduce_sum(&ad::tanh(&ln.y).unwrap(), ad::Axes::All, false).unwrap();
        let all = [&ln.x, &ln.gamma, &ln.beta];
        SECOND_ORDER
            .check_second_order(&loss, &all, &feed)
            .unwrap_or_else(|e| panic!("{shape:?} begin {begin}: {e}"));
        let grads = ad::gradients(&[&loss], &all, None).unwrap();
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
            .check_second_order(&s, &all, &feed)
            .unwrap_or_else(|e| panic!("{shape:?} begin {begin}, third order: {e}"));
    }
}

/// dx computes the column sums and keeps them when gamma or beta take a
/// gradient too; the other gradient nodes read them. Each alone gives the
/// same values.
#[test]
fn layer_norm_gradient_nodes_share_the_column_sums() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let shape = [6usize, 5];
    let ln = build_ln(&shape, 1, 1e-3);
    let up = ln.g.placeholder(shape);
    let all = ad::gradients(&[&ln.y], &[&ln.x, &ln.gamma, &ln.beta], Some(&[&up])).unwrap();
    let all: Vec<Node> = all.into_iter().map(Option::unwrap).collect();
    let types: Vec<&str> = all.iter().map(Node::op_type).collect();
    assert_eq!(
        types,
        ["LayerNormGrad", "LayerNormGradGamma", "LayerNormGradBeta"]
    );
    // dgamma and dbeta read dx's sums: dx is one of their inputs.
    for n in &all[1..] {
        assert!(n.inputs().iter().any(|i| i == &all[0]), "{}", n.name());
    }
    let alone: Vec<Node> = [&ln.x, &ln.gamma, &ln.beta]
        .iter()
        .map(|w| {
            ad::gradients(&[&ln.y], &[w], Some(&[&up])).unwrap()[0]
                .clone()
                .unwrap()
        })
        .collect();
    // Without dx, dgamma computes the sums and dbeta reads them.
    let params = ad::gradients(&[&ln.y], &[&ln.gamma, &ln.beta], Some(&[&up])).unwrap();
    let params: Vec<Node> = params.into_iter().map(Option::unwrap).collect();
    assert!(params[1].inputs().iter().any(|i| i == &params[0]));
    let mut feed = feed_ln(&ln, &shape, 1, &mut rng);
    feed.insert(&up, random(&mut rng, &shape, -1.0, 1.0))
        .unwrap();
    let mut nodes: Vec<&Node> = all.iter().collect();
    nodes.extend(alone.iter());
    nodes.extend(params.iter());
    let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
    for k in 0..3 {
        assert_eq!(got[k], got[3 + k], "{} shared and alone", types[k]);
    }
    assert_eq!(got[1], got[6]);
    assert_eq!(got[2], got[7]);
    // An inference pass keeps the statistics too; the same values.
    let inferred = RunTime::new().infer(&nodes, &feed).unwrap();
    assert_eq!(got, inferred);
}

/// A gradient node whose forward input is not a layer norm (or whose sums
/// node kept nothing) recomputes the statistics and the sums: the same values.
#[test]
fn layer_norm_gradient_recomputes_what_is_not_held() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for shape in [[4usize, 3, 5], [40, 30, 64]] {
        let ln = build_ln(&shape, 1, 1e-3);
        let up = ln.g.placeholder(shape);
        let kept: Vec<Node> = ad::gradients(&[&ln.y], &[&ln.x, &ln.gamma, &ln.beta], Some(&[&up]))
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let not_the_forward = ln.g.placeholder(shape);
        let lone = |of, sums, extra: Option<&Node>| {
            let op = LayerNormGrad {
                begin_norm_axis: 1,
                epsilon: 1e-3,
                of,
                sums,
            };
            let mut args = vec![&up, &ln.x, &ln.gamma, &not_the_forward];
            args.extend(extra);
            ln.g.add_op(op, &args).unwrap()
        };
        let dx = lone(LayerNormGradOf::X, ParamSums::Skip, None);
        let dgamma = lone(LayerNormGradOf::Gamma, ParamSums::Reuse, Some(&up));
        let dbeta = lone(LayerNormGradOf::Beta, ParamSums::Keep, None);
        let mut feed = feed_ln(&ln, &shape, 1, &mut rng);
        let u = random(&mut rng, &shape, -1.0, 1.0);
        feed.insert(&up, u.clone()).unwrap();
        feed.insert(&not_the_forward, u).unwrap();
        let nodes = [&kept[0], &kept[1], &kept[2], &dx, &dgamma, &dbeta];
        let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
        for k in 0..3 {
            assert_eq!(got[k], got[3 + k], "{shape:?}: {}", kept[k].op_type());
        }
    }
    // Wrong arity through add_op.
    let ln = build_ln(&[2, 3], 1, 1e-3);
    let op = LayerNormGrad {
        begin_norm_axis: 1,
        epsilon: 1e-3,
        of: LayerNormGradOf::Gamma,
        sums: ParamSums::Reuse,
    };
    assert!(ln.g.add_op(op, &[&ln.x, &ln.x, &ln.gamma, &ln.y]).is_err());
}

#[test]
fn layer_norm_rejects_bad_attributes_and_shapes() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 3, 4]);
    let p4 = g.placeholder([4]);
    let p34 = g.placeholder([3, 4]);
    assert!(ad::layer_norm(&x, &p4, &p4, 2, 1e-3).is_ok());
    assert!(ad::layer_norm(&x, &p34, &p34, 1, 0.0).is_ok());
    let e = ad::layer_norm(&x, &p4, &p4, 3, 1e-3).unwrap_err();
    assert!(e.to_string().contains("begin_norm_axis 3"), "{e}");
    assert!(ad::layer_norm(&x, &p4, &p4, 2, -1.0).is_err());
    assert!(ad::layer_norm(&x, &p4, &p4, 2, f32::NAN).is_err());
    let e = ad::layer_norm(&x, &p34, &p4, 2, 1e-3).unwrap_err();
    assert!(e.to_string().contains("gamma"), "{e}");
    let e = ad::layer_norm(&x, &p4, &p34, 2, 1e-3).unwrap_err();
    assert!(e.to_string().contains("beta"), "{e}");
    let scalar = g.placeholder(ad::shape![]);
    assert!(ad::layer_norm(&scalar, &scalar, &scalar, 0, 1e-3).is_err());
    // Static dims come from gamma where x's are unknown.
    let open = g.placeholder(ad::shape![2, None]);
    let y = ad::layer_norm(&open, &p4, &p4, 1, 1e-3).unwrap();
    assert_eq!(y.shape(), ad::shape![2, 4]);
    // Run time: parameters fed with another shape than x's normalised axes.
    let free = g.placeholder(ad::shape![None]);
    let y = ad::layer_norm(&x, &free, &free, 2, 1e-3).unwrap();
    let feed = ad::feed! { x => Tensor::zeros(vec![1, 3, 4]), free => [1.0, 2.0, 3.0] }.unwrap();
    let e = RunTime::new().forward(&y, &feed).unwrap_err();
    assert!(
        matches!(e.root_cause(), ad::Error::ShapeMismatch { .. }),
        "{e}"
    );
}

/// No rows: empty output and dx, zero dgamma and dbeta; a constant row
/// with epsilon > 0: y = beta.
#[test]
fn layer_norm_edge_values() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 3]);
    let gamma = g.placeholder([3]);
    let beta = g.placeholder([3]);
    let y = ad::layer_norm(&x, &gamma, &beta, 1, 1e-3).unwrap();
    let grads = ad::gradients(&[&y], &[&x, &gamma, &beta], None).unwrap();
    let mut nodes = vec![&y];
    nodes.extend(grads.iter().map(|g| g.as_ref().unwrap()));
    let feed = ad::feed! {
        x => Tensor::zeros(vec![0, 3]),
        gamma => [1.0, 2.0, 3.0],
        beta => [0.5, 0.5, 0.5],
    }
    .unwrap();
    let got = RunTime::new().evaluate(&nodes, &feed).unwrap();
    assert_eq!(got[0].shape(), &[0, 3]);
    assert_eq!(got[1].shape(), &[0, 3]);
    assert_eq!(got[2], ad::tensor([0.0, 0.0, 0.0]));
    assert_eq!(got[3], ad::tensor([0.0, 0.0, 0.0]));
    let feed = ad::feed! {
        x => [[7.0, 7.0, 7.0]],
        gamma => [1.0, 2.0, 3.0],
        beta => [0.5, -0.5, 0.25],
    }
    .unwrap();
    let got = RunTime::new().forward(&y, &feed).unwrap().clone();
    assert_eq!(got, ad::tensor([[0.5, -0.5, 0.25]]));
}
