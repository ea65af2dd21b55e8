//! Finite-difference gradient checks and bad-input tests for the element-wise
//! math ops, the activations and the losses.

use adgraph as ad;
use adgraph::gradcheck::{check_gradients, GradCheck};
use adgraph::{Error, Feed, Graph, Node, Result, RunTime, Tensor, TensorShape};
use ndarray::{Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A scalar formula an op is compared with.
type Reference = fn(f32) -> f32;
/// A scalar formula that captures attributes.
type BoxedReference = Box<dyn Fn(f32) -> f32>;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A random shape of the given rank, small enough for element-wise finite differences.
fn random_shape(rng: &mut ChaCha8Rng, rank: usize) -> Vec<usize> {
    let max = if rank >= 3 { 3 } else { 5 };
    (0..rank).map(|_| rng.gen_range(1..=max)).collect()
}

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(lo..hi))
}

/// Values with `lo <= |v| < hi` and a random sign (kept away from 0).
fn away_from_zero(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| {
        let v = rng.gen_range(lo..hi);
        if rng.gen_bool(0.5) {
            v
        } else {
            -v
        }
    })
}

/// Gradient-checks a one-input op on random shapes of every rank 0..=4.
fn check_unary(
    name: &str,
    seed: u64,
    make: impl Fn(&Node) -> Result<Node>,
    input: impl Fn(&mut ChaCha8Rng, &[usize]) -> Tensor,
) {
    let mut rng = rng(seed);
    for rank in 0..=4 {
        for _ in 0..2 {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = make(&x).unwrap();
            assert_eq!(y.shape(), TensorShape::known(&shape), "{name}");
            let value = input(&mut rng, &shape);
            let feed = Feed::new().with(&x, value).unwrap();
            let report = check_gradients(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("{name}, shape {shape:?}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>());
        }
    }
}

fn forward(y: &Node, feed: &Feed) -> Result<Tensor> {
    RunTime::new().forward(y, feed).cloned()
}

// ---------------------------------------------------------------- math

#[test]
fn grad_exp() {
    check_unary("exp", 1, ad::exp, |r, s| random_tensor(r, s, -2.0, 2.0));
}

#[test]
fn grad_log() {
    check_unary("log", 2, ad::log, |r, s| random_tensor(r, s, 0.5, 3.0));
}

#[test]
fn grad_sqrt() {
    check_unary("sqrt", 3, ad::sqrt, |r, s| random_tensor(r, s, 0.5, 3.0));
}

#[test]
fn grad_square() {
    check_unary("square", 4, ad::square, |r, s| {
        random_tensor(r, s, -2.0, 2.0)
    });
}

#[test]
fn grad_pow_integer_exponents_any_sign() {
    for (i, p) in [2.0f32, 3.0, -1.0, -2.0, 1.0, 0.0].into_iter().enumerate() {
        check_unary(
            "pow",
            10 + i as u64,
            |x| ad::pow(x, p),
            |r, s| away_from_zero(r, s, 0.5, 1.5),
        );
    }
}

#[test]
fn grad_pow_fractional_exponents_positive_base() {
    for (i, p) in [0.5f32, 1.5, -0.5, 2.7, 20.5].into_iter().enumerate() {
        check_unary(
            "pow",
            20 + i as u64,
            |x| ad::pow(x, p),
            |r, s| random_tensor(r, s, 0.6, 1.1),
        );
    }
}

#[test]
fn math_forward_values() {
    let g = Graph::new();
    let x = g.placeholder([5]);
    let feed = Feed::new().with(&x, [0.25, 1.0, 2.0, 4.0, 9.0]).unwrap();
    let xs = [0.25f32, 1.0, 2.0, 4.0, 9.0];
    let cases: Vec<(Node, Reference)> = vec![
        (ad::log(&x).unwrap(), f32::ln),
        (ad::sqrt(&x).unwrap(), f32::sqrt),
        (ad::square(&x).unwrap(), |v| v * v),
        (ad::pow(&x, 1.5).unwrap(), |v| v.powf(1.5)),
        (ad::pow(&x, -2.0).unwrap(), |v| 1.0 / (v * v)),
    ];
    for (y, f) in cases {
        let v = forward(&y, &feed).unwrap();
        for (got, &x) in v.iter().zip(&xs) {
            let want = f(x);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }
}

#[test]
fn math_domain_edges_do_not_panic() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let feed = Feed::new().with(&x, [0.0, -1.0, 4.0]).unwrap();

    let log = ad::log(&x).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&log, &feed).unwrap().clone();
    assert_eq!(v[0], f32::NEG_INFINITY);
    assert!(v[1].is_nan());
    assert_eq!(v[2], 4f32.ln());
    rt.backward(&log, &feed, None).unwrap();
    let d = rt.grad(&x).unwrap();
    assert_eq!(d[0], f32::INFINITY);
    assert_eq!(d[2], 0.25);

    let sqrt = ad::sqrt(&x).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&sqrt, &feed).unwrap().clone();
    assert_eq!(v[0], 0.0);
    assert!(v[1].is_nan());
    assert_eq!(v[2], 2.0);
    rt.backward(&sqrt, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap()[0], f32::INFINITY);
    assert_eq!(rt.grad(&x).unwrap()[2], 0.25);

    // pow: 0^0 = 1 with zero gradient; 0^2 has gradient 0; (-1)^0.5 is NaN.
    for (p, want_grad0) in [(0.0f32, 0.0f32), (2.0, 0.0), (3.0, 0.0)] {
        let y = ad::pow(&x, p).unwrap();
        let mut rt = RunTime::new();
        rt.backward(&y, &feed, None).unwrap();
        assert_eq!(rt.grad(&x).unwrap()[0], want_grad0, "p = {p}");
        assert!(
            rt.grad(&x).unwrap().iter().all(|v| v.is_finite()),
            "p = {p}"
        );
    }
    let y = ad::pow(&x, 0.5).unwrap();
    let v = forward(&y, &feed).unwrap();
    assert!(v[1].is_nan());
    assert_eq!(v[2], 2.0);
    let y = ad::pow(&x, -1.0).unwrap();
    assert_eq!(forward(&y, &feed).unwrap()[0], f32::INFINITY);
}

#[test]
fn pow_rejects_non_finite_exponent() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    for p in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let e = ad::pow(&x, p).unwrap_err();
        assert!(matches!(e, Error::Node { .. }), "{e}");
        assert!(matches!(e.root_cause(), Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("exponent"), "{e}");
    }
}

#[test]
fn unary_ops_keep_unknown_dims() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 3]);
    let ops: Vec<Node> = vec![
        ad::exp(&x).unwrap(),
        ad::log(&x).unwrap(),
        ad::sqrt(&x).unwrap(),
        ad::square(&x).unwrap(),
        ad::pow(&x, 2.5).unwrap(),
        ad::sigmoid(&x).unwrap(),
        ad::tanh(&x).unwrap(),
        ad::relu(&x).unwrap(),
        ad::leaky_relu(&x, 0.1).unwrap(),
        ad::softmax(&x).unwrap(),
    ];
    for y in &ops {
        assert_eq!(y.shape(), ad::shape![None, 3], "{}", y.name());
    }
    let feed = Feed::new()
        .with(&x, random_tensor(&mut rng(5), &[7, 3], 0.1, 1.0))
        .unwrap();
    for y in &ops {
        assert_eq!(forward(y, &feed).unwrap().shape(), &[7, 3], "{}", y.name());
    }
}

#[test]
fn wrong_arity_through_add_op_is_an_error() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    assert!(g.add_op(ad::ops::math::Log, &[&x, &x]).is_err());
    assert!(g.add_op(ad::ops::activation::Softmax, &[]).is_err());
    assert!(g
        .add_op(ad::ops::loss::SoftmaxCrossEntropyLoss, &[&x])
        .is_err());
    assert!(g
        .add_op(ad::ops::loss::SigmoidCrossEntropyLoss, &[&x, &x, &x])
        .is_err());
    assert!(g.add_op(ad::ops::loss::L2Norm { scale: 1.0 }, &[]).is_err());
}

// ---------------------------------------------------------------- activations

#[test]
fn grad_sigmoid() {
    check_unary("sigmoid", 30, ad::sigmoid, |r, s| {
        random_tensor(r, s, -4.0, 4.0)
    });
}

#[test]
fn grad_tanh() {
    check_unary("tanh", 31, ad::tanh, |r, s| random_tensor(r, s, -2.0, 2.0));
}

#[test]
fn grad_relu() {
    check_unary("relu", 32, ad::relu, |r, s| away_from_zero(r, s, 0.05, 2.0));
}

#[test]
fn grad_leaky_relu() {
    for (i, alpha) in [0.0f32, 0.01, 0.2, 1.0, -0.5, 3.0].into_iter().enumerate() {
        check_unary(
            "leaky_relu",
            40 + i as u64,
            |x| ad::leaky_relu(x, alpha),
            |r, s| away_from_zero(r, s, 0.05, 2.0),
        );
    }
}

#[test]
fn grad_softmax() {
    let mut rng = rng(50);
    for rank in 1..=4 {
        for _ in 0..3 {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = ad::softmax(&x).unwrap();
            let feed = Feed::new()
                .with(&x, random_tensor(&mut rng, &shape, -3.0, 3.0))
                .unwrap();
            let check = GradCheck {
                eps: 2e-3,
                atol: 2e-3,
                ..GradCheck::default()
            };
            check
                .check(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("softmax {shape:?}: {e}"));
        }
    }
}

#[test]
fn activation_forward_values() {
    let g = Graph::new();
    let x = g.placeholder([6]);
    let xs = [-3.0f32, -0.5, -0.1, 0.2, 1.0, 4.0];
    let feed = Feed::new().with(&x, xs).unwrap();
    let cases: Vec<(Node, BoxedReference)> = vec![
        (
            ad::sigmoid(&x).unwrap(),
            Box::new(|v: f32| (1.0 / (1.0 + (-f64::from(v)).exp())) as f32),
        ),
        (ad::tanh(&x).unwrap(), Box::new(|v: f32| v.tanh())),
        (ad::relu(&x).unwrap(), Box::new(|v: f32| v.max(0.0))),
        (
            ad::leaky_relu(&x, 0.3).unwrap(),
            Box::new(|v: f32| if v > 0.0 { v } else { 0.3 * v }),
        ),
    ];
    for (y, f) in cases {
        let v = forward(&y, &feed).unwrap();
        for (got, &x) in v.iter().zip(&xs) {
            assert!(
                (got - f(x)).abs() <= 1e-6,
                "{}: {got} vs {}",
                y.name(),
                f(x)
            );
        }
    }
}

#[test]
fn relu_gradient_is_zero_at_zero_and_nan_propagates() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = ad::relu(&x).unwrap();
    let feed = Feed::new().with(&x, [0.0, f32::NAN, -2.0]).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&y, &feed).unwrap().clone();
    assert_eq!(v[0], 0.0);
    assert!(v[1].is_nan());
    assert_eq!(v[2], 0.0);
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap()[0], 0.0);
    assert_eq!(rt.grad(&x).unwrap()[2], 0.0);

    let y = ad::leaky_relu(&x, 0.25).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap()[0], 0.25);
    assert_eq!(rt.grad(&x).unwrap()[2], 0.25);
}

#[test]
fn sigmoid_and_tanh_are_stable_for_large_inputs() {
    let g = Graph::new();
    let x = g.placeholder([4]);
    let feed = Feed::new().with(&x, [-1e4, -100.0, 100.0, 1e4]).unwrap();
    for (y, want) in [
        (ad::sigmoid(&x).unwrap(), [0.0, 0.0, 1.0, 1.0]),
        (ad::tanh(&x).unwrap(), [-1.0, -1.0, 1.0, 1.0]),
    ] {
        let mut rt = RunTime::new();
        let v = rt.forward(&y, &feed).unwrap().clone();
        for (got, want) in v.iter().zip(want) {
            assert!(got.is_finite() && (got - want).abs() < 1e-6, "{got}");
        }
        rt.backward(&y, &feed, None).unwrap();
        assert!(rt
            .grad(&x)
            .unwrap()
            .iter()
            .all(|d| d.is_finite() && d.abs() < 1e-6));
    }
}

#[test]
fn softmax_is_stable_and_rows_sum_to_one() {
    let g = Graph::new();
    let x = g.placeholder([3, 3]);
    let y = ad::softmax(&x).unwrap();
    let feed = Feed::new()
        .with(&x, [[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [3.0, 1.0, 0.5]])
        .unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&y, &feed).unwrap().clone();
    assert!(v.iter().all(|p| p.is_finite()));
    assert_eq!(
        v.index_axis(Axis(0), 0)
            .iter()
            .copied()
            .collect::<Vec<f32>>(),
        vec![1.0, 0.0, 0.0]
    );
    for row in v.axis_iter(Axis(0)) {
        assert!((row.sum() - 1.0).abs() < 1e-6);
    }
    let e: Vec<f64> = [3.0f64, 1.0, 0.5].iter().map(|v| v.exp()).collect();
    let s: f64 = e.iter().sum();
    for (j, e) in e.iter().enumerate() {
        assert!((f64::from(v[[2, j]]) - e / s).abs() < 1e-6);
        assert!((f64::from(v[[1, j]]) - 1.0 / 3.0).abs() < 1e-6);
    }
    rt.backward(&y, &feed, Some(ad::tensor([[1.0, -2.0, 3.0]; 3])))
        .unwrap();
    assert!(rt.grad(&x).unwrap().iter().all(|d| d.is_finite()));
}

#[test]
fn softmax_handles_column_major_input() {
    // A value that is not in row-major layout must give the same result.
    let mut r = rng(60);
    let c = random_tensor(&mut r, &[5, 4], -2.0, 2.0);
    let f = c.t().as_standard_layout().into_owned().reversed_axes();
    assert_eq!(c, f);
    assert!(f.as_slice().is_none());
    let g = Graph::new();
    let x = g.placeholder([5, 4]);
    let y = ad::softmax(&x).unwrap();
    let a = forward(&y, &Feed::new().with(&x, c.clone()).unwrap()).unwrap();
    let b = forward(&y, &Feed::new().with(&x, f.into_dyn()).unwrap()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn softmax_rejects_scalars() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![]);
    let e = ad::softmax(&x).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Rank { .. }), "{e}");
}

#[test]
fn leaky_relu_rejects_non_finite_alpha() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let e = ad::leaky_relu(&x, f32::NAN).unwrap_err();
    assert!(matches!(e.root_cause(), Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("alpha"), "{e}");
}

// ---------------------------------------------------------------- second derivatives

/// Second-order check settings: a larger step than first order (the gradient
/// graph is evaluated in f32 on both sides of it).
const SECOND: GradCheck = GradCheck {
    eps: 1e-2,
    atol: 5e-3,
    rtol: 5e-3,
    seed: 3,
};

/// Second derivatives of a one-input op on random shapes of rank `ranks`:
/// of `f(x)` alone (its gradient op differentiated through the forward value
/// it reads) and of `f(x) * x` (differentiated through its upstream gradient
/// too, which then depends on `x`).
fn check_unary_second(
    name: &str,
    seed: u64,
    ranks: std::ops::RangeInclusive<usize>,
    settings: GradCheck,
    make: impl Fn(&Node) -> Result<Node>,
    input: impl Fn(&mut ChaCha8Rng, &[usize]) -> Tensor,
) {
    let mut rng = rng(seed);
    for rank in ranks {
        let shape = random_shape(&mut rng, rank);
        let g = Graph::new();
        let x = g.placeholder(shape.as_slice());
        let y = make(&x).unwrap();
        let feed = Feed::new().with(&x, input(&mut rng, &shape)).unwrap();
        settings
            .check_second_order(&y, &[&x], &feed)
            .unwrap_or_else(|e| panic!("{name}, shape {shape:?}: {e}"));
        let times_x = ad::multiply(&y, &x).unwrap();
        let report = settings
            .check_second_order(&times_x, &[&x], &feed)
            .unwrap_or_else(|e| panic!("{name}(x) * x, shape {shape:?}: {e}"));
        assert_eq!(report.elements, shape.iter().product::<usize>(), "{name}");
    }
}

#[test]
fn second_derivatives_of_exp_log_sqrt_square() {
    check_unary_second("exp", 110, 0..=4, SECOND, ad::exp, |r, s| {
        random_tensor(r, s, -1.5, 1.5)
    });
    check_unary_second("log", 111, 0..=4, SECOND, ad::log, |r, s| {
        random_tensor(r, s, 0.7, 3.0)
    });
    check_unary_second("sqrt", 112, 0..=4, SECOND, ad::sqrt, |r, s| {
        random_tensor(r, s, 0.7, 3.0)
    });
    check_unary_second("square", 113, 0..=4, SECOND, ad::square, |r, s| {
        random_tensor(r, s, -2.0, 2.0)
    });
}

#[test]
fn second_derivatives_of_pow() {
    for (i, p) in [2.0f32, 3.0, -1.0, -2.0, 1.0, 0.0, 4.0]
        .into_iter()
        .enumerate()
    {
        check_unary_second(
            &format!("pow {p}"),
            120 + i as u64,
            0..=3,
            SECOND,
            |x| ad::pow(x, p),
            |r, s| away_from_zero(r, s, 0.6, 1.4),
        );
    }
    for (i, p) in [0.5f32, 1.5, -0.5, 2.7, 20.5].into_iter().enumerate() {
        // x^20.5 bends fast: a smaller step keeps the truncation error small.
        let eps = if p > 10.0 { 2e-3 } else { SECOND.eps };
        check_unary_second(
            &format!("pow {p}"),
            130 + i as u64,
            0..=3,
            GradCheck { eps, ..SECOND },
            |x| ad::pow(x, p),
            |r, s| random_tensor(r, s, 0.6, 1.1),
        );
    }
}

#[test]
fn second_derivatives_of_sigmoid_tanh() {
    check_unary_second("sigmoid", 140, 0..=4, SECOND, ad::sigmoid, |r, s| {
        random_tensor(r, s, -4.0, 4.0)
    });
    check_unary_second("tanh", 141, 0..=4, SECOND, ad::tanh, |r, s| {
        random_tensor(r, s, -2.0, 2.0)
    });
}

#[test]
fn second_derivatives_of_relu_and_leaky_relu_away_from_zero() {
    let input = |r: &mut ChaCha8Rng, s: &[usize]| away_from_zero(r, s, 0.05, 2.0);
    check_unary_second("relu", 150, 0..=4, SECOND, ad::relu, input);
    for (i, alpha) in [0.0f32, 0.01, 0.2, 1.0, -0.5, 3.0].into_iter().enumerate() {
        check_unary_second(
            &format!("leaky_relu {alpha}"),
            160 + i as u64,
            0..=3,
            SECOND,
            |x| ad::leaky_relu(x, alpha),
            input,
        );
    }
}

#[test]
fn second_derivatives_of_softmax() {
    let settings = GradCheck {
        eps: 5e-3,
        ..SECOND
    };
    for seed in 170..173 {
        check_unary_second("softmax", seed, 1..=4, settings, ad::softmax, |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        });
    }
    // Softmax feeding a nonlinear loss: the second derivative mixes both of
    // SoftmaxGrad's inputs.
    let mut r = rng(174);
    let g = Graph::new();
    let x = g.placeholder([3, 4]);
    let y = ad::log(&ad::softmax(&x).unwrap()).unwrap();
    let feed = Feed::new()
        .with(&x, random_tensor(&mut r, &[3, 4], -2.0, 2.0))
        .unwrap();
    settings.check_second_order(&y, &[&x], &feed).unwrap();
}

/// Third derivatives, against closed forms at one point: the gradient ops'
/// own gradients differentiated once more.
#[test]
fn third_derivatives_by_hand() {
    fn derivatives(make: impl Fn(&Node) -> Result<Node>, at: f32) -> [f64; 3] {
        let g = Graph::new();
        let x = g.placeholder(ad::shape![]);
        let mut d = make(&x).unwrap();
        let mut rt = RunTime::new();
        let feed = ad::feed! { x => at }.unwrap();
        [0, 1, 2].map(|_| {
            // None: a derivative that no longer depends on x (zero).
            match ad::gradients(&[&d], &[&x], None).unwrap()[0].clone() {
                Some(next) => {
                    d = next;
                    f64::from(rt.forward(&d, &feed).unwrap().sum())
                }
                None => {
                    d = g.constant(0.0).unwrap();
                    0.0
                }
            }
        })
    }
    let close = |name: &str, got: [f64; 3], want: [f64; 3]| {
        for k in 0..3 {
            assert!(
                (got[k] - want[k]).abs() <= 1e-5 * want[k].abs().max(1.0),
                "{name}: derivative {} is {}, want {}",
                k + 1,
                got[k],
                want[k]
            );
        }
    };
    let x = 0.7f64;
    let s = 1.0 / (1.0 + (-x).exp());
    close(
        "sigmoid",
        derivatives(ad::sigmoid, 0.7),
        [
            s * (1.0 - s),
            s * (1.0 - s) * (1.0 - 2.0 * s),
            s * (1.0 - s) * (1.0 - 6.0 * s + 6.0 * s * s),
        ],
    );
    let t = x.tanh();
    close(
        "tanh",
        derivatives(ad::tanh, 0.7),
        [
            1.0 - t * t,
            -2.0 * t * (1.0 - t * t),
            -2.0 * (1.0 - t * t) * (1.0 - 3.0 * t * t),
        ],
    );
    close(
        "sqrt",
        derivatives(ad::sqrt, 0.7),
        [
            0.5 * x.powf(-0.5),
            -0.25 * x.powf(-1.5),
            0.375 * x.powf(-2.5),
        ],
    );
    close(
        "pow 2.5",
        derivatives(|v| ad::pow(v, 2.5), 0.7),
        [2.5 * x.powf(1.5), 3.75 * x.powf(0.5), 1.875 * x.powf(-0.5)],
    );
    close("square", derivatives(ad::square, 0.7), [1.4, 2.0, 0.0]);
    close(
        "exp",
        derivatives(ad::exp, 0.7),
        [x.exp(), x.exp(), x.exp()],
    );
    close(
        "log",
        derivatives(ad::log, 0.7),
        [1.0 / x, -1.0 / (x * x), 2.0 / (x * x * x)],
    );
}

/// Each activation's gradient is one fused op reading the forward value (the
/// output, or the input for leaky relu) and the upstream gradient; a relu's
/// gradient does not depend on its input (away from 0), so its second
/// derivative is absent, as in TensorFlow.
#[test]
fn activation_gradients_are_one_fused_op() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 5]);
    let u = g.placeholder(ad::shape![None, 5]);
    let cases: Vec<(Node, &str, bool)> = vec![
        (ad::sigmoid(&x).unwrap(), "SigmoidGrad", true),
        (ad::tanh(&x).unwrap(), "TanhGrad", true),
        (ad::relu(&x).unwrap(), "ReluGrad", true),
        (ad::leaky_relu(&x, 0.2).unwrap(), "LeakyReluGrad", false),
        (ad::softmax(&x).unwrap(), "SoftmaxGrad", true),
        (ad::sqrt(&x).unwrap(), "SqrtGrad", true),
        (ad::pow(&x, 1.5).unwrap(), "PowGrad", false),
        (ad::square(&x).unwrap(), "PowGrad", false),
        (ad::exp(&x).unwrap(), "Multiply", true),
        (ad::log(&x).unwrap(), "Divide", false),
    ];
    for (y, op, reads_output) in cases {
        let dx = ad::gradients(&[&y], &[&x], Some(&[&u])).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(dx.op_type(), op, "{}", y.name());
        let forward_value = if reads_output { &y } else { &x };
        assert!(dx.inputs().contains(forward_value), "{}", y.name());
        assert!(dx.inputs().contains(&u), "{}", y.name());
    }
    for y in [ad::relu(&x).unwrap(), ad::leaky_relu(&x, 0.2).unwrap()] {
        let dx = ad::gradients(&[&y], &[&x], Some(&[&u])).unwrap()[0]
            .clone()
            .unwrap();
        assert!(ad::gradients(&[&dx], &[&x], None).unwrap()[0].is_none());
    }
}

#[test]
fn grad_ops_reject_bad_inputs() {
    use ad::ops::activation::{LeakyReluGrad, ReluGrad, SoftmaxGrad};
    use ad::ops::math::{PowGrad, SqrtGrad};
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([3, 2]);
    let s = g.placeholder(ad::shape![]);
    for e in [
        g.add_op(ReluGrad, &[&a, &b]).unwrap_err(),
        g.add_op(ReluGrad, &[&a]).unwrap_err(),
        g.add_op(SqrtGrad, &[&a, &a, &a]).unwrap_err(),
        g.add_op(PowGrad { exponent: 2.0 }, &[&a, &a]).unwrap_err(),
        g.add_op(PowGrad { exponent: f32::NAN }, &[&a, &a, &a])
            .unwrap_err(),
        g.add_op(
            LeakyReluGrad {
                alpha: f32::INFINITY,
            },
            &[&a, &a],
        )
        .unwrap_err(),
    ] {
        assert!(matches!(e, Error::Node { .. }), "{e}");
        assert!(matches!(e.root_cause(), Error::InvalidArgument(_)), "{e}");
    }
    let e = g.add_op(SoftmaxGrad, &[&s, &s]).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Rank { .. }), "{e}");
    // Unknown dims merge; values that differ at run time are an error, not a panic.
    let u = g.placeholder(ad::shape![None, 3]);
    let dx = g.add_op(ReluGrad, &[&u, &a]).unwrap();
    assert_eq!(dx.shape(), ad::shape![2, 3]);
    let feed = ad::feed! { u => [[1.0, 2.0, 3.0]], a => [[0.0; 3]; 2] }.unwrap();
    let e = RunTime::new().forward(&dx, &feed).unwrap_err();
    assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
}

// ---------------------------------------------------------------- large arrays (parallel paths)

#[test]
fn large_arrays_match_the_scalar_formulas() {
    let rows = 300;
    let n = 256; // 76800 elements: above the parallel threshold
    let mut r = rng(70);
    let g = Graph::new();
    let x = g.placeholder([rows, n]);
    let labels = g.placeholder([rows, n]);
    let xv = random_tensor(&mut r, &[rows, n], -5.0, 5.0);
    let lv = random_tensor(&mut r, &[rows, n], 0.0, 1.0);
    let lv = &lv / &lv.sum_axis(Axis(1)).insert_axis(Axis(1));
    let up = random_tensor(&mut r, &[rows, n], -1.0, 1.0);
    let feed = ad::feed! { x => xv.clone(), labels => lv.clone() }.unwrap();

    let mut rt = RunTime::new();
    let y = ad::sigmoid(&x).unwrap();
    let v = rt.forward(&y, &feed).unwrap().clone();
    rt.backward(&y, &feed, Some(up.clone())).unwrap();
    let d = rt.grad(&x).unwrap();
    for ((&got, &dx), (&xi, &u)) in v.iter().zip(d.iter()).zip(xv.iter().zip(up.iter())) {
        let want = 1.0 / (1.0 + (-f64::from(xi)).exp());
        assert!((f64::from(got) - want).abs() < 1e-6);
        assert!((f64::from(dx) - f64::from(u) * want * (1.0 - want)).abs() < 1e-6);
    }

    let y = ad::softmax(&x).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&y, &feed).unwrap().clone();
    rt.backward(&y, &feed, Some(up.clone())).unwrap();
    let d = rt.grad(&x).unwrap().clone();
    let l = ad::softmax_cross_entropy_loss(&labels, &x).unwrap();
    let mut rt = RunTime::new();
    let lval = rt.forward(&l, &feed).unwrap().clone();
    let gl = random_tensor(&mut r, &[rows], -1.0, 1.0);
    rt.backward(&l, &feed, Some(gl.clone())).unwrap();
    let dl = rt.grad(&x).unwrap();
    for i in (0..rows).step_by(7) {
        let z: Vec<f64> = xv
            .index_axis(Axis(0), i)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let p: Vec<f64> = z.iter().map(|v| (v - m).exp() / s).collect();
        let dot: f64 = (0..n).map(|j| p[j] * f64::from(up[[i, j]])).sum();
        let mut loss = 0.0;
        for j in 0..n {
            assert!((f64::from(v[[i, j]]) - p[j]).abs() < 1e-6);
            let want = p[j] * (f64::from(up[[i, j]]) - dot);
            assert!((f64::from(d[[i, j]]) - want).abs() < 1e-6);
            let y = f64::from(lv[[i, j]]);
            loss -= y * (p[j].ln());
            let want = f64::from(gl[i]) * (p[j] - y);
            assert!((f64::from(dl[[i, j]]) - want).abs() < 1e-6);
        }
        assert!((f64::from(lval[i]) - loss).abs() < 1e-4 * loss.abs().max(1.0));
    }

    let y = ad::l2norm(&x, 0.5).unwrap();
    let v = forward(&y, &feed).unwrap();
    let want: f64 = 0.25 * xv.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
    assert!((f64::from(v.sum()) - want).abs() < 1e-6 * want);
}

// ---------------------------------------------------------------- losses

#[test]
fn grad_l2norm() {
    for (i, scale) in [1.0f32, 0.5, 2.0, -0.3].into_iter().enumerate() {
        let mut rng = rng(80 + i as u64);
        for rank in 0..=4 {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = ad::l2norm(&x, scale).unwrap();
            assert_eq!(y.shape(), ad::shape![]);
            let xv = random_tensor(&mut rng, &shape, -2.0, 2.0);
            let feed = Feed::new().with(&x, xv.clone()).unwrap();
            let v = forward(&y, &feed).unwrap();
            let want = scale * 0.5 * xv.iter().map(|v| v * v).sum::<f32>();
            assert!((v.sum() - want).abs() <= 1e-5 * want.abs().max(1.0));
            check_gradients(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("l2norm {shape:?} scale {scale}: {e}"));
        }
    }
}

#[test]
fn l2norm_of_unknown_shape_and_bad_scale() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, None]);
    assert_eq!(ad::l2norm(&x, 1.0).unwrap().shape(), ad::shape![]);
    let e = ad::l2norm(&x, f32::INFINITY).unwrap_err();
    assert!(matches!(e.root_cause(), Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("scale"), "{e}");
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

#[test]
fn grad_softmax_cross_entropy() {
    let mut rng = rng(90);
    for rank in 1..=4 {
        for soft in [false, true] {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let labels = g.placeholder(shape.as_slice());
            let logits = g.placeholder(shape.as_slice());
            let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
            assert_eq!(
                loss.shape(),
                TensorShape::known(&shape[..rank - 1]),
                "{shape:?}"
            );
            let feed = ad::feed! {
                labels => random_labels(&mut rng, &shape, soft),
                logits => random_tensor(&mut rng, &shape, -3.0, 3.0),
            }
            .unwrap();
            check_gradients(&loss, &[&logits], &feed)
                .unwrap_or_else(|e| panic!("softmax CE {shape:?} soft {soft}: {e}"));
            // The labels take no gradient.
            let mut rt = RunTime::new();
            rt.backward(&loss, &feed, None).unwrap();
            assert!(matches!(rt.grad(&labels), Err(Error::NoGradient(_))));
        }
    }
}

#[test]
fn softmax_cross_entropy_values() {
    let g = Graph::new();
    let labels = g.placeholder(ad::shape![None, 3]);
    let logits = g.placeholder(ad::shape![None, 3]);
    let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
    assert_eq!(loss.shape(), ad::shape![None]);
    let z = [[1.0f32, 2.0, 0.5], [-1.0, 0.0, 3.0]];
    let y = [[0.0f32, 1.0, 0.0], [0.2, 0.3, 0.5]];
    let feed = ad::feed! { labels => y, logits => z }.unwrap();
    let v = forward(&loss, &feed).unwrap();
    assert_eq!(v.shape(), &[2]);
    for i in 0..2 {
        let zi: Vec<f64> = z[i].iter().map(|&v| f64::from(v)).collect();
        let lse = zi.iter().map(|v| v.exp()).sum::<f64>().ln();
        let want: f64 = (0..3).map(|j| f64::from(y[i][j]) * (lse - zi[j])).sum();
        assert!((f64::from(v[i]) - want).abs() < 1e-6, "{} vs {want}", v[i]);
    }
}

#[test]
fn cross_entropies_are_stable_for_logits_of_magnitude_1e4() {
    let g = Graph::new();
    let labels = g.placeholder([3, 3]);
    let logits = g.placeholder([3, 3]);
    let feed = ad::feed! {
        labels => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]],
        logits => [[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]],
    }
    .unwrap();

    let sce = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&sce, &feed).unwrap().clone();
    assert_eq!(v, ad::tensor([0.0, 2e4, 2e4]));
    rt.backward(&sce, &feed, None).unwrap();
    let d = rt.grad(&logits).unwrap();
    assert!(d.iter().all(|v| v.is_finite()));
    assert_eq!(
        d,
        &ad::tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]])
    );

    let bce = ad::sigmoid_cross_entropy_loss(&labels, &logits).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&bce, &feed).unwrap().clone();
    assert!(v.iter().all(|v| v.is_finite()));
    // y = 1, z = 1e4: 0; y = 0, z = -1e4: 0; y = 0, z = 1e4: 1e4; y = 1, z = -1e4: 1e4.
    assert_eq!(v[[0, 0]], 0.0);
    assert_eq!(v[[0, 1]], 0.0);
    assert_eq!(v[[1, 0]], 1e4);
    assert_eq!(v[[1, 1]], 1e4);
    assert!((v[[0, 2]] - 2f32.ln()).abs() < 1e-6);
    assert_eq!(v[[2, 0]], 5e3);
    rt.backward(&bce, &feed, None).unwrap();
    let d = rt.grad(&logits).unwrap();
    assert!(d.iter().all(|v| v.is_finite()));
    assert_eq!(d[[0, 0]], 0.0);
    assert_eq!(d[[1, 0]], 1.0);
    assert_eq!(d[[1, 1]], -1.0);
    assert_eq!(d[[2, 0]], -0.5);
}

#[test]
fn grad_sigmoid_cross_entropy() {
    let mut rng = rng(100);
    for rank in 0..=4 {
        for soft in [false, true] {
            let shape = random_shape(&mut rng, rank);
            let g = Graph::new();
            let labels = g.placeholder(shape.as_slice());
            let logits = g.placeholder(shape.as_slice());
            let loss = ad::sigmoid_cross_entropy_loss(&labels, &logits).unwrap();
            assert_eq!(loss.shape(), TensorShape::known(&shape));
            let yv = Tensor::from_shape_fn(IxDyn(&shape), |_| {
                if soft {
                    rng.gen_range(0.0..1.0)
                } else if rng.gen_bool(0.5) {
                    1.0
                } else {
                    0.0
                }
            });
            let zv = random_tensor(&mut rng, &shape, -4.0, 4.0);
            let feed = ad::feed! { labels => yv.clone(), logits => zv.clone() }.unwrap();
            let v = forward(&loss, &feed).unwrap();
            for ((&got, &y), &z) in v.iter().zip(&yv).zip(&zv) {
                let p = 1.0 / (1.0 + (-f64::from(z)).exp());
                let want = -(f64::from(y) * p.ln() + (1.0 - f64::from(y)) * (1.0 - p).ln());
                assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
            }
            // The labels take TensorFlow's gradient, -z * upstream.
            check_gradients(&loss, &[&labels, &logits], &feed)
                .unwrap_or_else(|e| panic!("sigmoid CE {shape:?}: {e}"));
        }
    }
}

#[test]
fn cross_entropies_reject_incompatible_shapes() {
    let g = Graph::new();
    let a = g.placeholder([4, 3]);
    let b = g.placeholder([4, 2]);
    let c = g.placeholder([3]);
    let s = g.placeholder(ad::shape![]);
    for e in [
        ad::softmax_cross_entropy_loss(&a, &b).unwrap_err(),
        ad::softmax_cross_entropy_loss(&a, &c).unwrap_err(),
        ad::sigmoid_cross_entropy_loss(&a, &b).unwrap_err(),
        ad::sigmoid_cross_entropy_loss(&c, &a).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Node { .. }), "{e}");
        assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("labels"), "{e}");
    }
    let e = ad::softmax_cross_entropy_loss(&s, &s).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Rank { .. }), "{e}");
    // Scalars are fine for the element-wise sigmoid loss.
    assert_eq!(
        ad::sigmoid_cross_entropy_loss(&s, &s).unwrap().shape(),
        ad::shape![]
    );
    // Unknown dims merge with known ones.
    let u = g.placeholder(ad::shape![None, 3]);
    assert_eq!(
        ad::softmax_cross_entropy_loss(&u, &a).unwrap().shape(),
        ad::shape![4]
    );
    assert_eq!(
        ad::sigmoid_cross_entropy_loss(&a, &u).unwrap().shape(),
        ad::shape![4, 3]
    );
}

#[test]
fn cross_entropies_reject_mismatched_values_at_run_time() {
    let g = Graph::new();
    let labels = g.placeholder(ad::shape![None, 3]);
    let logits = g.placeholder(ad::shape![None, 3]);
    let feed = ad::feed! {
        labels => [[1.0, 0.0, 0.0]],
        logits => [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
    }
    .unwrap();
    for loss in [
        ad::softmax_cross_entropy_loss(&labels, &logits).unwrap(),
        ad::sigmoid_cross_entropy_loss(&labels, &logits).unwrap(),
    ] {
        let e = RunTime::new().forward(&loss, &feed).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Node {
                    phase: ad::Phase::Forward,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
    }
}

#[test]
fn softmax_cross_entropy_with_empty_class_axis_or_batch() {
    let g = Graph::new();
    let labels = g.placeholder(ad::shape![None, None]);
    let logits = g.placeholder(ad::shape![None, None]);
    let loss = ad::softmax_cross_entropy_loss(&labels, &logits).unwrap();
    for shape in [[2usize, 0], [0, 3]] {
        let z = Tensor::zeros(IxDyn(&shape));
        let feed = ad::feed! { labels => z.clone(), logits => z }.unwrap();
        let mut rt = RunTime::new();
        let v = rt.forward(&loss, &feed).unwrap().clone();
        assert_eq!(v.shape(), &shape[..1]);
        assert!(v.iter().all(|&v| v == 0.0));
        rt.backward(&loss, &feed, None).unwrap();
        assert_eq!(rt.grad(&logits).unwrap().shape(), &shape);
    }
}
