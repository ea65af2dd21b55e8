//! The element-wise ops of issue 15 (maximum, minimum, abs, clip_by_value,
//! where_, comparisons, sin, cos, rsqrt, log1p, erf, softplus, elu, gelu,
//! silu, softmax and log_softmax along an axis): first and second
//! derivatives against finite differences, third derivatives against closed
//! forms, TensorFlow's choices at ties and kinks, stability, the gradient
//! graphs' fused ops, and bad input.

use adgraph as ad;
use adgraph::gradcheck::{check_gradients, GradCheck};
use adgraph::{Error, Feed, Graph, Node, Result, RunTime, Tensor, TensorShape};
use ndarray::{Axis, IxDyn, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Unary = Box<dyn Fn(&Node) -> Result<Node>>;
type Binary = fn(&Node, &Node) -> Result<Node>;
/// Makes an input of the given shape in a well-conditioned range.
type Input = fn(&mut ChaCha8Rng, &[usize]) -> Tensor;
/// A scalar f64 formula.
type Formula = Box<dyn Fn(f64) -> f64>;
/// A scalar f64 formula and its derivative.
type WithSlope = Box<dyn Fn(f64) -> (f64, f64)>;

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

/// Values with `lo <= |v| < hi` and a random sign.
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

/// A random shape of rank 0..=4 and one that broadcasts with it.
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

fn forward(y: &Node, feed: &Feed) -> Result<Tensor> {
    RunTime::new().forward(y, feed).cloned()
}

/// The gradient of `y` w.r.t. `x` for an upstream of ones.
fn grad_of(y: &Node, x: &Node, feed: &Feed) -> Tensor {
    let mut rt = RunTime::new();
    rt.backward(y, feed, None).unwrap();
    rt.grad(x).unwrap().clone()
}

/// First-order settings for inputs kept at least 0.05 from a kink.
const FIRST: GradCheck = GradCheck {
    eps: 5e-3,
    atol: 1e-2,
    rtol: 1e-2,
    seed: 0,
};

/// Second-order settings (as tests/grad_elementwise.rs).
const SECOND: GradCheck = GradCheck {
    eps: 1e-2,
    atol: 5e-3,
    rtol: 5e-3,
    seed: 3,
};

/// The smooth (or kinked, inputs kept away) one-input ops, each with an
/// input range where finite differences are well conditioned.
fn unary_ops() -> Vec<(&'static str, Unary, Input)> {
    vec![
        ("abs", Box::new(ad::abs), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        ("sin", Box::new(ad::sin), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("cos", Box::new(ad::cos), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("rsqrt", Box::new(ad::rsqrt), |r, s| {
            random_tensor(r, s, 0.6, 3.0)
        }),
        ("log1p", Box::new(ad::log1p), |r, s| {
            random_tensor(r, s, -0.5, 3.0)
        }),
        ("erf", Box::new(ad::erf), |r, s| {
            random_tensor(r, s, -2.5, 2.5)
        }),
        ("softplus", Box::new(ad::softplus), |r, s| {
            random_tensor(r, s, -4.0, 4.0)
        }),
        ("elu 1", Box::new(|x| ad::elu(x, 1.0)), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        ("elu 0.3", Box::new(|x| ad::elu(x, 0.3)), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        ("elu -0.5", Box::new(|x| ad::elu(x, -0.5)), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        ("gelu exact", Box::new(|x| ad::gelu(x, false)), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("gelu tanh", Box::new(|x| ad::gelu(x, true)), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("silu", Box::new(ad::silu), |r, s| {
            random_tensor(r, s, -4.0, 4.0)
        }),
        (
            "clip (-0.5, 0.7)",
            Box::new(|x| ad::clip_by_value(x, -0.5, 0.7)),
            |r, s| {
                // Away from both bounds: in (-2, -0.55), (-0.45, 0.65), (0.75, 2).
                Tensor::from_shape_fn(IxDyn(s), |_| {
                    let bands = [(-2.0f32, -0.55f32), (-0.45, 0.65), (0.75, 2.0)];
                    let (lo, hi) = bands[r.gen_range(0..3)];
                    r.gen_range(lo..hi)
                })
            },
        ),
        (
            "clip (-inf, 0)",
            Box::new(|x| ad::clip_by_value(x, f32::NEG_INFINITY, 0.0)),
            |r, s| away_from_zero(r, s, 0.05, 2.0),
        ),
    ]
}

// ---------------------------------------------------------------- first derivatives

#[test]
fn unary_ops_first_derivatives() {
    for (i, (name, make, input)) in unary_ops().into_iter().enumerate() {
        let mut r = rng(100 + i as u64);
        for rank in 0..=4 {
            let shape = random_shape(&mut r, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = make(&x).unwrap();
            assert_eq!(y.shape(), TensorShape::known(&shape), "{name}");
            let feed = Feed::new().with(&x, input(&mut r, &shape)).unwrap();
            let report = FIRST
                .check(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("{name}, shape {shape:?}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>());
        }
    }
}

/// Random `x`, `y` of broadcasting shapes with `|x - y| >= 0.05` wherever
/// they meet (no ties, so finite differences do not cross a kink).
fn untied_pair(r: &mut ChaCha8Rng, sa: &[usize], sb: &[usize]) -> (Tensor, Tensor) {
    let out = IxDyn(&broadcast(sa, sb));
    loop {
        let a = random_tensor(r, sa, -1.0, 1.0);
        let b = random_tensor(r, sb, -1.0, 1.0);
        let gap = Zip::from(&a.broadcast(out.clone()).unwrap())
            .and(&b.broadcast(out.clone()).unwrap())
            .fold(f32::INFINITY, |m, &p, &q| m.min((p - q).abs()));
        if gap >= 0.05 {
            return (a, b);
        }
    }
}

fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    ad::shape::broadcast_shapes(a, b).unwrap()
}

const MINMAX: [(&str, Binary); 2] = [("maximum", ad::maximum), ("minimum", ad::minimum)];

#[test]
fn maximum_minimum_first_and_second_derivatives_with_broadcasting() {
    let mut r = rng(7);
    for round in 0..25 {
        let (sa, sb) = broadcast_pair(&mut r);
        for (name, op) in MINMAX {
            let g = Graph::new();
            let a = g.placeholder(sa.as_slice());
            let b = g.placeholder(sb.as_slice());
            let out = op(&a, &b).unwrap();
            let (va, vb) = untied_pair(&mut r, &sa, &sb);
            let feed = Feed::new().with(&a, va).unwrap().with(&b, vb).unwrap();
            let what = format!("round {round} {name} {sa:?} {sb:?}");
            FIRST
                .check(&out, &[&a, &b], &feed)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // Alone (zero), and times a function of both, so that the
            // selections are differentiated with upstreams that depend on
            // the inputs.
            SECOND
                .check_second_order(&out, &[&a, &b], &feed)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let mixed = ad::multiply(&out, &ad::tanh(&ad::add(&a, &b).unwrap()).unwrap()).unwrap();
            let squared = ad::multiply(&mixed, &out).unwrap();
            SECOND
                .check_second_order(&squared, &[&a, &b], &feed)
                .unwrap_or_else(|e| panic!("{what}, composed: {e}"));
        }
    }
}

#[test]
fn where_first_and_second_derivatives_with_broadcasting() {
    let mut r = rng(8);
    for round in 0..30 {
        let (sa, sb) = broadcast_pair(&mut r);
        let sc = if r.gen_bool(0.5) {
            broadcast_pair_of(&mut r, &broadcast(&sa, &sb))
        } else {
            broadcast(&sa, &sb)
        };
        let g = Graph::new();
        let c = g.placeholder(sc.as_slice());
        let a = g.placeholder(sa.as_slice());
        let b = g.placeholder(sb.as_slice());
        let out = ad::where_(&c, &a, &b).unwrap();
        let cond = Tensor::from_shape_fn(IxDyn(&sc), |_| if r.gen_bool(0.5) { 1.0 } else { 0.0 });
        let feed = Feed::new()
            .with(&c, cond)
            .unwrap()
            .with(&a, random_tensor(&mut r, &sa, -1.0, 1.0))
            .unwrap()
            .with(&b, random_tensor(&mut r, &sb, -1.0, 1.0))
            .unwrap();
        let what = format!("round {round} where {sc:?} {sa:?} {sb:?}");
        FIRST
            .check(&out, &[&a, &b], &feed)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let composed = ad::multiply(
            &ad::where_(&c, &ad::sin(&a).unwrap(), &ad::multiply(&b, &b).unwrap()).unwrap(),
            &ad::add(&a, &b).unwrap(),
        )
        .unwrap();
        SECOND
            .check_second_order(&composed, &[&a, &b], &feed)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // The condition takes no gradient.
        assert!(ad::gradients(&[&out], &[&c], None).unwrap()[0].is_none());
    }
}

/// A shape that broadcasts to `full`: leading dims dropped, some set to 1.
fn broadcast_pair_of(r: &mut ChaCha8Rng, full: &[usize]) -> Vec<usize> {
    let drop = r.gen_range(0..=full.len());
    full[drop..]
        .iter()
        .map(|&d| if r.gen_bool(0.4) { 1 } else { d })
        .collect()
}

// ---------------------------------------------------------------- second derivatives

/// Second derivatives of a one-input op: of `f(x)` and of `f(x) * x`.
#[test]
fn unary_ops_second_derivatives() {
    for (i, (name, make, input)) in unary_ops().into_iter().enumerate() {
        let mut r = rng(200 + i as u64);
        for rank in 0..=3 {
            let shape = random_shape(&mut r, rank);
            let g = Graph::new();
            let x = g.placeholder(shape.as_slice());
            let y = make(&x).unwrap();
            let feed = Feed::new().with(&x, input(&mut r, &shape)).unwrap();
            SECOND
                .check_second_order(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("{name}, shape {shape:?}: {e}"));
            let times_x = ad::multiply(&y, &x).unwrap();
            let report = SECOND
                .check_second_order(&times_x, &[&x], &feed)
                .unwrap_or_else(|e| panic!("{name}(x) * x, shape {shape:?}: {e}"));
            assert_eq!(report.elements, shape.iter().product::<usize>(), "{name}");
        }
    }
}

#[test]
fn softmax_and_log_softmax_along_every_axis() {
    let settings = GradCheck {
        eps: 5e-3,
        ..SECOND
    };
    let mut r = rng(300);
    for rank in 1..=4 {
        for _ in 0..2 {
            let shape = random_shape(&mut r, rank);
            for axis in 0..rank {
                let g = Graph::new();
                let x = g.placeholder(shape.as_slice());
                let value = random_tensor(&mut r, &shape, -3.0, 3.0);
                let feed = Feed::new().with(&x, value).unwrap();
                for (name, y) in [
                    ("softmax", ad::softmax_axis(&x, axis).unwrap()),
                    ("log_softmax", ad::log_softmax(&x, axis).unwrap()),
                ] {
                    let what = format!("{name} {shape:?} axis {axis}");
                    assert_eq!(y.shape(), TensorShape::known(&shape), "{what}");
                    check_gradients(&y, &[&x], &feed).unwrap_or_else(|e| panic!("{what}: {e}"));
                    settings
                        .check_second_order(&y, &[&x], &feed)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let times_x = ad::multiply(&y, &x).unwrap();
                    settings
                        .check_second_order(&times_x, &[&x], &feed)
                        .unwrap_or_else(|e| panic!("{what}, times x: {e}"));
                }
            }
        }
    }
    // A nonlinear loss of each, so both inputs of the grad ops vary.
    let g = Graph::new();
    let x = g.placeholder([3, 4, 2]);
    let feed = Feed::new()
        .with(&x, random_tensor(&mut r, &[3, 4, 2], -2.0, 2.0))
        .unwrap();
    let y = ad::log(&ad::softmax_axis(&x, 1).unwrap()).unwrap();
    settings.check_second_order(&y, &[&x], &feed).unwrap();
    let y = ad::exp(&ad::log_softmax(&x, 0).unwrap()).unwrap();
    let y = ad::multiply(&y, &y).unwrap();
    settings.check_second_order(&y, &[&x], &feed).unwrap();
}

/// The gradient ops' own gradients, differentiated through each input on
/// its own: `GradOp(x, u)` with `u` a free placeholder (not the upstream of
/// a forward op), composed nonlinearly.
#[test]
fn grad_ops_second_derivatives_in_each_input() {
    let mut r = rng(400);
    let shape = [2, 3];
    let cases: Vec<(&str, Unary, Input)> = vec![
        ("erf", Box::new(ad::erf), |r, s| {
            random_tensor(r, s, -2.0, 2.0)
        }),
        ("rsqrt", Box::new(ad::rsqrt), |r, s| {
            random_tensor(r, s, 0.6, 2.0)
        }),
        ("softplus", Box::new(ad::softplus), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("elu", Box::new(|x| ad::elu(x, 0.7)), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        ("gelu exact", Box::new(|x| ad::gelu(x, false)), |r, s| {
            random_tensor(r, s, -2.0, 2.0)
        }),
        ("gelu tanh", Box::new(|x| ad::gelu(x, true)), |r, s| {
            random_tensor(r, s, -2.0, 2.0)
        }),
        ("silu", Box::new(ad::silu), |r, s| {
            random_tensor(r, s, -3.0, 3.0)
        }),
        ("abs", Box::new(ad::abs), |r, s| {
            away_from_zero(r, s, 0.05, 2.0)
        }),
        (
            "softmax axis 0",
            Box::new(|x| ad::softmax_axis(x, 0)),
            |r, s| random_tensor(r, s, -2.0, 2.0),
        ),
        (
            "log_softmax axis 0",
            Box::new(|x| ad::log_softmax(x, 0)),
            |r, s| random_tensor(r, s, -2.0, 2.0),
        ),
        (
            "log_softmax axis 1",
            Box::new(|x| ad::log_softmax(x, 1)),
            |r, s| random_tensor(r, s, -2.0, 2.0),
        ),
    ];
    for (name, make, input) in cases {
        let g = Graph::new();
        let x = g.placeholder(shape);
        let u = g.placeholder(shape);
        let y = make(&x).unwrap();
        let dx = ad::gradients(&[&y], &[&x], Some(&[&u])).unwrap()[0]
            .clone()
            .unwrap();
        // sum(dx^2 * sin(u)): nonlinear in both inputs of the grad op.
        let out = ad::multiply(&ad::square(&dx).unwrap(), &ad::sin(&u).unwrap()).unwrap();
        let feed = Feed::new()
            .with(&x, input(&mut r, &shape))
            .unwrap()
            .with(&u, random_tensor(&mut r, &shape, -1.0, 1.0))
            .unwrap();
        FIRST
            .check(&out, &[&x, &u], &feed)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        SECOND
            .check_second_order(&out, &[&x, &u], &feed)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Derivatives 1 to 3 of `make` at `at` (0 once a derivative no longer
/// depends on x).
fn derivatives(make: &dyn Fn(&Node) -> Result<Node>, at: f32) -> [f64; 3] {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![]);
    let mut d = make(&x).unwrap();
    let mut rt = RunTime::new();
    let feed = ad::feed! { x => at }.unwrap();
    [0, 1, 2].map(
        |_| match ad::gradients(&[&d], &[&x], None).unwrap()[0].clone() {
            Some(next) => {
                d = next;
                f64::from(rt.forward(&d, &feed).unwrap().sum())
            }
            None => {
                d = g.constant(0.0).unwrap();
                0.0
            }
        },
    )
}

/// Derivatives 1 to 3 of the f64 function `f` at `x` by central differences.
fn f64_derivatives(f: &dyn Fn(f64) -> f64, x: f64) -> [f64; 3] {
    let h = 1e-3;
    [
        (f(x + h) - f(x - h)) / (2.0 * h),
        (f(x + h) - 2.0 * f(x) + f(x - h)) / (h * h),
        (f(x + 2.0 * h) - 2.0 * f(x + h) + 2.0 * f(x - h) - f(x - 2.0 * h)) / (2.0 * h * h * h),
    ]
}

/// Third derivatives: every grad op's gradient differentiated once more,
/// against differences of the f64 formula (closed forms for erf).
#[test]
fn third_derivatives_against_the_formulas() {
    use ad::kernels::elementwise::erf_f64;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let cases: Vec<(&str, Unary, Formula, f32)> = vec![
        ("sin", Box::new(ad::sin), Box::new(f64::sin), 0.7),
        ("cos", Box::new(ad::cos), Box::new(f64::cos), 0.7),
        (
            "rsqrt",
            Box::new(ad::rsqrt),
            Box::new(|x: f64| 1.0 / x.sqrt()),
            0.7,
        ),
        ("log1p", Box::new(ad::log1p), Box::new(f64::ln_1p), 0.7),
        ("erf", Box::new(ad::erf), Box::new(erf_f64), 0.7),
        (
            "softplus",
            Box::new(ad::softplus),
            Box::new(|x: f64| x.exp().ln_1p()),
            -0.7,
        ),
        (
            "elu below 0",
            Box::new(|x| ad::elu(x, 1.3)),
            Box::new(|x: f64| 1.3 * x.exp_m1()),
            -0.7,
        ),
        (
            "elu above 0",
            Box::new(|x| ad::elu(x, 1.3)),
            Box::new(|x: f64| x),
            0.7,
        ),
        (
            "gelu exact",
            Box::new(|x| ad::gelu(x, false)),
            Box::new(|x: f64| 0.5 * x * (1.0 + erf_f64(x / 2f64.sqrt()))),
            0.7,
        ),
        (
            "gelu tanh",
            Box::new(|x| ad::gelu(x, true)),
            Box::new(|x: f64| {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }),
            -0.7,
        ),
        (
            "silu",
            Box::new(ad::silu),
            Box::new(move |x: f64| x * sig(x)),
            0.7,
        ),
        ("abs", Box::new(ad::abs), Box::new(f64::abs), -0.7),
    ];
    for (name, make, f, at) in cases {
        let got = derivatives(&*make, at);
        let want = f64_derivatives(&*f, f64::from(at));
        for k in 0..3 {
            assert!(
                (got[k] - want[k]).abs() <= 2e-4 * want[k].abs().max(1.0),
                "{name}: derivative {} at {at} is {}, want {}",
                k + 1,
                got[k],
                want[k]
            );
        }
    }
    // erf in closed form: c e^(-x^2), -2x c e^(-x^2), (4x^2 - 2) c e^(-x^2).
    let x = 0.7f64;
    let c = 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp();
    let got = derivatives(&ad::erf, 0.7);
    for (k, want) in [c, -2.0 * x * c, (4.0 * x * x - 2.0) * c]
        .into_iter()
        .enumerate()
    {
        assert!((got[k] - want).abs() <= 1e-5, "erf derivative {}", k + 1);
    }
}

// ---------------------------------------------------------------- TF's choices

#[test]
fn ties_and_kinks_follow_tensorflow() {
    let g = Graph::new();
    let x = g.placeholder([4]);
    let y = g.placeholder([4]);
    let feed = ad::feed! { x => [1.0, 2.0, 3.0, 0.0], y => [1.0, 3.0, 2.0, 0.0] }.unwrap();
    // maximum/minimum: the whole gradient goes to x at a tie.
    for (op, want_x, want_y) in [
        (
            ad::maximum as Binary,
            [1.0, 0.0, 1.0, 1.0],
            [0.0, 1.0, 0.0, 0.0],
        ),
        (
            ad::minimum as Binary,
            [1.0, 1.0, 0.0, 1.0],
            [0.0, 0.0, 1.0, 0.0],
        ),
    ] {
        let z = op(&x, &y).unwrap();
        let mut rt = RunTime::new();
        rt.backward(&z, &feed, None).unwrap();
        assert_eq!(rt.grad(&x).unwrap(), &ad::tensor(want_x), "{}", z.name());
        assert_eq!(rt.grad(&y).unwrap(), &ad::tensor(want_y), "{}", z.name());
    }
    // clip_by_value: gradient 1 at the bounds, 0 outside.
    let c = ad::clip_by_value(&x, 1.0, 2.0).unwrap();
    let feed_c = ad::feed! { x => [0.5, 1.0, 2.0, 2.5], y => [0.0; 4] }.unwrap();
    assert_eq!(
        forward(&c, &feed_c).unwrap(),
        ad::tensor([1.0, 1.0, 2.0, 2.0])
    );
    assert_eq!(grad_of(&c, &x, &feed_c), ad::tensor([0.0, 1.0, 1.0, 0.0]));
    // abs'(0) = 0, elu'(0) = 1.
    let feed0 = ad::feed! { x => [-1.0, 0.0, -0.0, 2.0], y => [0.0; 4] }.unwrap();
    let a = ad::abs(&x).unwrap();
    assert_eq!(grad_of(&a, &x, &feed0), ad::tensor([-1.0, 0.0, 0.0, 1.0]));
    let e = ad::elu(&x, 0.5).unwrap();
    let de = grad_of(&e, &x, &feed0);
    assert!((de[0] - 0.5 * (-1f32).exp()).abs() < 1e-7);
    assert_eq!(&de.as_slice().unwrap()[1..], &[1.0, 1.0, 1.0]);
    // Comparisons: 1.0 / 0.0, ties included as each comparison says.
    for (op, want) in [
        (ad::greater as Binary, [0.0, 0.0, 1.0, 0.0]),
        (ad::less as Binary, [0.0, 1.0, 0.0, 0.0]),
        (ad::equal as Binary, [1.0, 0.0, 0.0, 1.0]),
        (ad::greater_equal as Binary, [1.0, 0.0, 1.0, 1.0]),
        (ad::less_equal as Binary, [1.0, 1.0, 0.0, 1.0]),
    ] {
        let z = op(&x, &y).unwrap();
        assert_eq!(
            forward(&z, &feed).unwrap(),
            ad::tensor(want),
            "{}",
            z.name()
        );
        assert!(ad::gradients(&[&z], &[&x, &y], None)
            .unwrap()
            .iter()
            .all(Option::is_none));
    }
}

#[test]
fn nan_handling() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = g.placeholder([3]);
    let feed = ad::feed! { x => [f32::NAN, 1.0, 2.0], y => [0.0, f32::NAN, 1.0] }.unwrap();
    // maximum and minimum propagate NaN from either side.
    for z in [ad::maximum(&x, &y).unwrap(), ad::minimum(&x, &y).unwrap()] {
        let v = forward(&z, &feed).unwrap();
        assert!(v[0].is_nan() && v[1].is_nan(), "{}: {v}", z.name());
    }
    // Comparisons with NaN are false (not equal, not greater, not less).
    for z in [
        ad::greater(&x, &y).unwrap(),
        ad::less(&x, &y).unwrap(),
        ad::equal(&x, &y).unwrap(),
    ] {
        let v = forward(&z, &feed).unwrap();
        assert_eq!((v[0], v[1]), (0.0, 0.0), "{}", z.name());
    }
    // A NaN condition is true (nonzero); clip keeps NaN.
    let w = ad::where_(&x, &y, &x).unwrap();
    let v = forward(&w, &feed).unwrap();
    assert_eq!(v[0], 0.0);
    assert!(forward(&ad::clip_by_value(&x, -1.0, 1.0).unwrap(), &feed).unwrap()[0].is_nan());
}

#[test]
fn stable_for_large_inputs() {
    let g = Graph::new();
    let x = g.placeholder([5]);
    let feed = ad::feed! { x => [-1e4, -50.0, 0.0, 50.0, 1e4] }.unwrap();
    let check = |y: &Node, want: [f32; 5], want_grad: [f32; 5]| {
        let v = forward(y, &feed).unwrap();
        let d = grad_of(y, &x, &feed);
        for i in 0..5 {
            assert!(
                (v[i] - want[i]).abs() <= 1e-6 * want[i].abs().max(1.0),
                "{}: value {i} is {}, want {}",
                y.name(),
                v[i],
                want[i]
            );
            assert!(
                (d[i] - want_grad[i]).abs() <= 1e-6,
                "{}: gradient {i} is {}, want {}",
                y.name(),
                d[i],
                want_grad[i]
            );
        }
    };
    let ln2 = 2f32.ln();
    check(
        &ad::softplus(&x).unwrap(),
        [0.0, (-50f32).exp(), ln2, 50.0, 1e4],
        [0.0, 0.0, 0.5, 1.0, 1.0],
    );
    check(
        &ad::silu(&x).unwrap(),
        [0.0, 0.0, 0.0, 50.0, 1e4],
        [0.0, 0.0, 0.5, 1.0, 1.0],
    );
    for approximate in [false, true] {
        check(
            &ad::gelu(&x, approximate).unwrap(),
            [0.0, 0.0, 0.0, 50.0, 1e4],
            [0.0, 0.0, 0.5, 1.0, 1.0],
        );
    }
    check(
        &ad::elu(&x, 1.0).unwrap(),
        [-1.0, -1.0, 0.0, 50.0, 1e4],
        [0.0, 0.0, 1.0, 1.0, 1.0],
    );
    check(
        &ad::erf(&x).unwrap(),
        [-1.0, -1.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, std::f32::consts::FRAC_2_SQRT_PI, 0.0, 0.0],
    );
    // log_softmax of huge logits stays finite; its gradient too.
    let m = g.placeholder([2, 3]);
    let feed = ad::feed! { m => [[1e4, 0.0, -1e4], [1e38, 1e38, -1e38]] }.unwrap();
    for axis in [0, 1] {
        let y = ad::log_softmax(&m, axis).unwrap();
        let v = forward(&y, &feed).unwrap();
        assert!(v.iter().all(|v| v.is_finite()), "axis {axis}: {v}");
        let d = grad_of(&y, &m, &feed);
        assert!(d.iter().all(|v| v.is_finite()), "axis {axis}: {d}");
        let s = ad::softmax_axis(&m, axis).unwrap();
        let v = forward(&s, &feed).unwrap();
        assert!(v.iter().all(|v| v.is_finite()), "axis {axis}: {v}");
    }
    assert_eq!(
        forward(&ad::log_softmax(&m, 1).unwrap(), &feed)
            .unwrap()
            .index_axis(Axis(0), 0)
            .iter()
            .copied()
            .collect::<Vec<f32>>(),
        vec![0.0, -1e4, -2e4]
    );
}

#[test]
fn softmax_axis_reuses_the_last_axis_op_and_matches_a_transpose() {
    let g = Graph::new();
    let x = g.placeholder([2, 3, 4]);
    assert_eq!(ad::softmax_axis(&x, 2).unwrap().op_type(), "Softmax");
    assert_eq!(ad::softmax_axis(&x, 1).unwrap().op_type(), "SoftmaxAxis");
    let mut r = rng(9);
    let value = random_tensor(&mut r, &[2, 3, 4], -3.0, 3.0);
    let feed = Feed::new().with(&x, value.clone()).unwrap();
    for axis in 0..3 {
        let y = forward(&ad::softmax_axis(&x, axis).unwrap(), &feed).unwrap();
        let l = forward(&ad::log_softmax(&x, axis).unwrap(), &feed).unwrap();
        let e = value.mapv(|v| f64::from(v).exp());
        let sums = e.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        let want = &e / &sums;
        for ((&got, &lg), &w) in y.iter().zip(l.iter()).zip(want.iter()) {
            assert!((f64::from(got) - w).abs() < 1e-6, "axis {axis}");
            assert!((f64::from(lg) - w.ln()).abs() < 1e-5, "axis {axis}");
        }
    }
    // A transposed (column-major) input.
    let t = ad::transpose(&x, &[2, 1, 0]).unwrap();
    let y = forward(&ad::softmax_axis(&t, 0).unwrap(), &feed).unwrap();
    let direct = forward(&ad::softmax_axis(&x, 2).unwrap(), &feed).unwrap();
    let direct_t = direct.permuted_axes(IxDyn(&[2, 1, 0]));
    for (a, b) in y.iter().zip(direct_t.iter()) {
        assert!((a - b).abs() < 1e-6);
    }
    // An axis of size 1 gives ones (and zeros for log_softmax), gradient 0.
    let one = g.placeholder([3, 1, 2]);
    let feed = Feed::new()
        .with(&one, random_tensor(&mut r, &[3, 1, 2], -1.0, 1.0))
        .unwrap();
    let y = ad::softmax_axis(&one, 1).unwrap();
    assert!(forward(&y, &feed).unwrap().iter().all(|&v| v == 1.0));
    assert!(grad_of(&y, &one, &feed).iter().all(|&v| v == 0.0));
    let y = ad::log_softmax(&one, 1).unwrap();
    assert!(forward(&y, &feed).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn unknown_dims_and_run_time_shapes() {
    let g = Graph::new();
    let c = g.placeholder(ad::shape![None, 1]);
    let x = g.placeholder(ad::shape![None, 3]);
    let y = g.placeholder(ad::shape![3]);
    let w = ad::where_(&c, &x, &y).unwrap();
    assert_eq!(w.shape(), ad::shape![None, 3]);
    let m = ad::maximum(&x, &y).unwrap();
    assert_eq!(m.shape(), ad::shape![None, 3]);
    let s = ad::softmax_axis(&x, 0).unwrap();
    assert_eq!(s.shape(), ad::shape![None, 3]);
    let feed = ad::feed! {
        c => [[1.0], [0.0]],
        x => [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        y => [-1.0, -2.0, -3.0],
    }
    .unwrap();
    assert_eq!(
        forward(&w, &feed).unwrap(),
        ad::tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    );
    let loss = ad::multiply(&w, &w).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&loss, &feed, None).unwrap();
    assert!(rt.grad(&c).is_err());
    assert_eq!(
        rt.grad(&x).unwrap(),
        &ad::tensor([[2.0, 4.0, 6.0], [0.0, 0.0, 0.0]])
    );
    assert_eq!(rt.grad(&y).unwrap(), &ad::tensor([-2.0, -4.0, -6.0]));
    // A condition of 3 rows against x of 2: an error at run time naming the node.
    let bad = ad::feed! {
        c => [[1.0], [0.0], [1.0]],
        x => [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        y => [-1.0, -2.0, -3.0],
    }
    .unwrap();
    let e = forward(&w, &bad).unwrap_err();
    assert!(matches!(e, Error::Node { .. }), "{e}");
    assert!(e.to_string().contains(&w.name()), "{e}");
    assert!(matches!(e.root_cause(), Error::Broadcast { .. }), "{e}");
}

// ---------------------------------------------------------------- structure and bad input

/// Each gradient is the fused op of its family, reading the forward value it
/// needs and the upstream gradient; the piecewise-linear ones have no second
/// derivative of their own.
#[test]
fn gradients_are_one_fused_op() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 5]);
    let u = g.placeholder(ad::shape![None, 5]);
    let cases: Vec<(Node, &str, bool)> = vec![
        (ad::abs(&x).unwrap(), "AbsGrad", false),
        (ad::rsqrt(&x).unwrap(), "RsqrtGrad", true),
        (ad::erf(&x).unwrap(), "ErfGrad", false),
        (ad::softplus(&x).unwrap(), "SoftplusGrad", false),
        (ad::elu(&x, 1.0).unwrap(), "EluGrad", true),
        (ad::gelu(&x, false).unwrap(), "GeluGrad", false),
        (ad::gelu(&x, true).unwrap(), "GeluGrad", false),
        (ad::silu(&x).unwrap(), "SiluGrad", false),
        (
            ad::clip_by_value(&x, -1.0, 1.0).unwrap(),
            "ClipByValueGrad",
            false,
        ),
        (ad::softmax_axis(&x, 0).unwrap(), "SoftmaxAxisGrad", true),
        (ad::softmax_axis(&x, 1).unwrap(), "SoftmaxGrad", true),
        (ad::log_softmax(&x, 0).unwrap(), "LogSoftmaxGrad", true),
        (ad::log_softmax(&x, 1).unwrap(), "LogSoftmaxGrad", true),
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
    for y in [
        ad::abs(&x).unwrap(),
        ad::clip_by_value(&x, -1.0, 1.0).unwrap(),
        ad::maximum(&x, &u).unwrap(),
    ] {
        let dx = ad::gradients(&[&y], &[&x], Some(&[&u])).unwrap()[0]
            .clone()
            .unwrap();
        assert!(
            ad::gradients(&[&dx], &[&x], None).unwrap()[0].is_none(),
            "{}",
            y.name()
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    let s = g.placeholder(ad::shape![]);
    let expect = |e: Error, root: fn(&Error) -> bool, words: &[&str]| {
        assert!(matches!(e, Error::Node { .. }), "{e}");
        assert!(root(e.root_cause()), "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "{e} lacks {w}");
        }
    };
    let invalid = |e: &Error| matches!(e, Error::InvalidArgument(_));
    let broadcast = |e: &Error| matches!(e, Error::Broadcast { .. });
    let rank = |e: &Error| matches!(e, Error::Rank { .. });
    expect(
        ad::clip_by_value(&x, 1.0, -1.0).unwrap_err(),
        invalid,
        &["ClipByValue", "(2, 3)", "1", "-1"],
    );
    expect(
        ad::clip_by_value(&x, f32::NAN, 1.0).unwrap_err(),
        invalid,
        &["NaN"],
    );
    expect(
        ad::where_(&g.placeholder([4]), &x, &x).unwrap_err(),
        broadcast,
        &["Select", "(4,)", "(2, 3)"],
    );
    expect(
        ad::where_(&x, &x, &g.placeholder([2])).unwrap_err(),
        broadcast,
        &["(2,)"],
    );
    expect(
        ad::maximum(&x, &g.placeholder([2])).unwrap_err(),
        broadcast,
        &["Maximum"],
    );
    expect(
        ad::greater(&x, &g.placeholder([4, 1, 2])).unwrap_err(),
        broadcast,
        &["Greater"],
    );
    expect(ad::softmax_axis(&x, 2).unwrap_err(), rank, &["axis 2"]);
    expect(ad::log_softmax(&s, 0).unwrap_err(), rank, &["LogSoftmax"]);
    expect(ad::elu(&x, f32::INFINITY).unwrap_err(), invalid, &["alpha"]);
    // Wrong arity or shapes through add_op: errors, never panics.
    use ad::ops::activation::{
        EluGrad, GeluGrad, LogSoftmaxGrad, SiluGrad, SoftmaxAxisGrad, SoftplusGrad,
    };
    use ad::ops::compare::{ClipByValueGrad, Compare, Comparison, Maximum, Select};
    use ad::ops::math::{AbsGrad, Erf, ErfGrad, RsqrtGrad};
    let b = g.placeholder([3, 2]);
    for e in [
        g.add_op(Select, &[&x, &x]).unwrap_err(),
        g.add_op(Maximum, &[&x]).unwrap_err(),
        g.add_op(
            Compare {
                kind: Comparison::Equal,
            },
            &[&x, &x, &x],
        )
        .unwrap_err(),
        g.add_op(ad::ops::arithmetic::Add, &[&x]).unwrap_err(),
        g.add_op(Erf, &[&x, &x]).unwrap_err(),
        g.add_op(ErfGrad, &[&x, &b]).unwrap_err(),
        g.add_op(AbsGrad, &[&x]).unwrap_err(),
        g.add_op(RsqrtGrad, &[&x, &x, &x]).unwrap_err(),
        g.add_op(SoftplusGrad, &[&x, &b]).unwrap_err(),
        g.add_op(SiluGrad, &[&x]).unwrap_err(),
        g.add_op(GeluGrad { approximate: true }, &[&x, &b])
            .unwrap_err(),
        g.add_op(EluGrad { alpha: 1.0 }, &[&x, &x]).unwrap_err(),
        g.add_op(EluGrad { alpha: f32::NAN }, &[&x, &x, &x])
            .unwrap_err(),
        g.add_op(ClipByValueGrad { lo: 2.0, hi: 1.0 }, &[&x, &x])
            .unwrap_err(),
        g.add_op(SoftmaxAxisGrad { axis: 0 }, &[&x, &b])
            .unwrap_err(),
        g.add_op(LogSoftmaxGrad { axis: 2 }, &[&x, &x]).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Node { .. }), "{e}");
    }
    // Run-time shapes that differ from what the static shapes allowed.
    let u = g.placeholder(ad::shape![None, 3]);
    let dx = g.add_op(ErfGrad, &[&u, &x]).unwrap();
    let feed = ad::feed! { u => [[1.0, 2.0, 3.0]], x => [[0.0; 3]; 2] }.unwrap();
    let e = RunTime::new().forward(&dx, &feed).unwrap_err();
    assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
    let dx = g.add_op(SoftmaxAxisGrad { axis: 0 }, &[&u, &x]).unwrap();
    let e = RunTime::new().forward(&dx, &feed).unwrap_err();
    assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
}

// ---------------------------------------------------------------- large arrays (parallel paths)

#[test]
fn large_arrays_match_the_scalar_formulas() {
    let (rows, n) = (300, 256); // 76,800 elements: above the parallel threshold
    let mut r = rng(70);
    let g = Graph::new();
    let x = g.placeholder([rows, n]);
    let c = g.placeholder([rows, 1]);
    let b = g.placeholder([n]);
    let xv = random_tensor(&mut r, &[rows, n], -4.0, 4.0);
    let cv = Tensor::from_shape_fn(
        IxDyn(&[rows, 1]),
        |_| if r.gen_bool(0.5) { 1.0 } else { 0.0 },
    );
    let bv = random_tensor(&mut r, &[n], -4.0, 4.0);
    let feed = ad::feed! { x => xv.clone(), c => cv.clone(), b => bv.clone() }.unwrap();

    let w = forward(&ad::where_(&c, &x, &b).unwrap(), &feed).unwrap();
    let m = forward(&ad::maximum(&x, &b).unwrap(), &feed).unwrap();
    for i in (0..rows).step_by(7) {
        for j in 0..n {
            let want = if cv[[i, 0]] != 0.0 { xv[[i, j]] } else { bv[j] };
            assert_eq!(w[[i, j]], want);
            assert_eq!(m[[i, j]], xv[[i, j]].max(bv[j]));
        }
    }
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let checks: Vec<(Node, WithSlope)> = vec![
        (
            ad::softplus(&x).unwrap(),
            Box::new(move |v| (v.exp().ln_1p(), sig(v))),
        ),
        (
            ad::silu(&x).unwrap(),
            Box::new(move |v| (v * sig(v), sig(v) * (1.0 + v * (1.0 - sig(v))))),
        ),
        (
            ad::erf(&x).unwrap(),
            Box::new(|v| {
                let e = ad::kernels::elementwise::erf_f64(v);
                (e, 2.0 / std::f64::consts::PI.sqrt() * (-v * v).exp())
            }),
        ),
    ];
    for (y, f) in checks {
        let mut rt = RunTime::new();
        let v = rt.forward(&y, &feed).unwrap().clone();
        rt.backward(&y, &feed, None).unwrap();
        let d = rt.grad(&x).unwrap();
        for ((&got, &dg), &xi) in v.iter().zip(d.iter()).zip(xv.iter()) {
            let (want, slope) = f(f64::from(xi));
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * want.abs().max(1.0),
                "{}",
                y.name()
            );
            assert!((f64::from(dg) - slope).abs() < 1e-5, "{}", y.name());
        }
    }
    // softmax over the long axis 0 (lanes of 256), against f64.
    let y = ad::softmax_axis(&x, 0).unwrap();
    let v = forward(&y, &feed).unwrap();
    let e = xv.mapv(|v| f64::from(v).exp());
    let sums = e.sum_axis(Axis(0));
    for i in (0..rows).step_by(11) {
        for j in 0..n {
            assert!((f64::from(v[[i, j]]) - e[[i, j]] / sums[j]).abs() < 1e-6);
        }
    }
}
