//! Initializers: fans, seeds, the statistics of large draws, truncation bounds,
//! and errors for invalid parameters.

use adgraph::init::{
    compute_fans, ConstantInit, GlorotNormal, GlorotUniform, HeNormal, HeUniform, Initializer,
    RandomUniform, TruncatedNormal, Zeros, TRUNCATED_STDDEV_CORRECTION,
};
use adgraph::{Error, Graph, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn draw(init: &dyn Initializer, shape: &[usize], graph_seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(graph_seed);
    init.initialize(shape, &mut rng).unwrap()
}

fn mean_std(t: &Tensor) -> (f64, f64) {
    let n = t.len() as f64;
    let mean = t.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = t
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn fans_follow_tensorflow() {
    assert_eq!(compute_fans(&[]), (1.0, 1.0));
    assert_eq!(compute_fans(&[5]), (5.0, 5.0));
    assert_eq!(compute_fans(&[20, 30]), (20.0, 30.0));
    // Conv kernel [kh, kw, in, out].
    assert_eq!(
        compute_fans(&[5, 3, 8, 16]),
        (5.0 * 3.0 * 8.0, 5.0 * 3.0 * 16.0)
    );
    // 1-D conv kernel [k, in, out].
    assert_eq!(compute_fans(&[3, 4, 7]), (12.0, 21.0));
}

/// Makes an initializer, with its own seed or without.
type Maker = Box<dyn Fn(Option<u64>) -> Box<dyn Initializer>>;

fn all_random() -> Vec<(&'static str, Maker)> {
    fn seeded<T: Initializer + 'static>(
        f: impl Fn() -> T + 'static,
        with: impl Fn(T, u64) -> T + 'static,
    ) -> Maker {
        Box::new(move |s| match s {
            Some(s) => Box::new(with(f(), s)),
            None => Box::new(f()),
        })
    }
    vec![
        (
            "TruncatedNormal",
            seeded(
                || TruncatedNormal::new(0.5, 0.1),
                TruncatedNormal::with_seed,
            ),
        ),
        (
            "RandomUniform",
            seeded(|| RandomUniform::new(-1.0, 2.0), RandomUniform::with_seed),
        ),
        (
            "GlorotUniform",
            seeded(GlorotUniform::new, GlorotUniform::with_seed),
        ),
        (
            "GlorotNormal",
            seeded(GlorotNormal::new, GlorotNormal::with_seed),
        ),
        ("HeUniform", seeded(HeUniform::new, HeUniform::with_seed)),
        ("HeNormal", seeded(HeNormal::new, HeNormal::with_seed)),
    ]
}

#[test]
fn same_seed_same_values_other_seed_other_values() {
    let shape = [6, 5];
    for (name, make) in all_random() {
        // An own seed ignores the graph's generator.
        let a = draw(&*make(Some(7)), &shape, 1);
        let b = draw(&*make(Some(7)), &shape, 2);
        assert_eq!(a, b, "{name}: same seed");
        let c = draw(&*make(Some(8)), &shape, 1);
        assert_ne!(a, c, "{name}: other seed");
        // Without a seed: the graph's generator decides.
        let d = draw(&*make(None), &shape, 1);
        let e = draw(&*make(None), &shape, 1);
        let f = draw(&*make(None), &shape, 2);
        assert_eq!(d, e, "{name}: same graph seed");
        assert_ne!(d, f, "{name}: other graph seed");
        assert_eq!(a.shape(), &shape);
    }
}

#[test]
fn graphs_with_the_same_seed_get_the_same_variables() {
    let build = |seed| {
        let g = Graph::with_seed(seed);
        let a = g.variable(&[4, 3], GlorotUniform::new(), true).unwrap();
        let b = g.variable(&[3], HeNormal::new(), true).unwrap();
        let c = g
            .variable(&[2, 2], TruncatedNormal::new(0.0, 1.0).with_seed(5), true)
            .unwrap();
        (
            g.variable_value(&a).unwrap(),
            g.variable_value(&b).unwrap(),
            g.variable_value(&c).unwrap(),
            g,
            c,
        )
    };
    let (a1, b1, c1, _, _) = build(11);
    let (a2, b2, c2, _, _) = build(11);
    let (a3, b3, c3, g3, c3node) = build(12);
    assert_eq!((&a1, &b1, &c1), (&a2, &b2, &c2));
    assert_ne!(a1, a3);
    assert_ne!(b1, b3);
    // The seeded one is the same in any graph, and again on re-initialisation.
    assert_eq!(c1, c3);
    g3.initialize_variables(false).unwrap();
    assert_eq!(g3.variable_value(&c3node).unwrap(), c1);
}

#[test]
fn truncated_normal_statistics_and_bound() {
    let (mean, stddev) = (3.0f32, 0.5f32);
    let t = draw(
        &TruncatedNormal::new(mean, stddev).with_seed(1),
        &[400, 250],
        0,
    );
    let (m, s) = mean_std(&t);
    assert_close("mean", m, f64::from(mean), 0.01);
    // A normal truncated at ±2σ has standard deviation 0.8796σ.
    assert_close(
        "std",
        s,
        TRUNCATED_STDDEV_CORRECTION * f64::from(stddev),
        0.005,
    );
    let bound = 2.0 * stddev + 1e-6;
    assert!(t.iter().all(|&x| (x - mean).abs() <= bound));
    // Values do come near the bound (it is a truncation, not a clamp to a smaller range).
    let max_dev = t.iter().map(|&x| (x - mean).abs()).fold(0.0f32, f32::max);
    assert!(max_dev > 1.9 * stddev, "max deviation {max_dev}");
}

#[test]
fn random_uniform_statistics_and_range() {
    let (lo, hi) = (-1.0f32, 3.0f32);
    let t = draw(&RandomUniform::new(lo, hi), &[100_000], 4);
    let (m, s) = mean_std(&t);
    assert_close("mean", m, 1.0, 0.02);
    assert_close("std", s, 4.0 / 12f64.sqrt(), 0.01);
    assert!(t.iter().all(|&x| (lo..hi).contains(&x)));
    assert!(t.iter().any(|&x| x < lo + 0.01) && t.iter().any(|&x| x > hi - 0.01));
}

/// Checks a variance-scaling initializer's draws: standard deviation `want_std`,
/// mean 0, every value within `bound`.
fn check_scaling(init: &dyn Initializer, shape: &[usize], want_std: f64, bound: f64) {
    let t = draw(init, shape, 9);
    assert_eq!(t.shape(), shape);
    let (m, s) = mean_std(&t);
    assert_close("mean", m, 0.0, 0.02 * want_std);
    assert_close("std", s, want_std, 0.02 * want_std);
    let max = t.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
    assert!(max <= bound * (1.0 + 1e-6), "max |x| {max} > bound {bound}");
    assert!(max > 0.95 * bound, "max |x| {max} far below bound {bound}");
}

#[test]
fn glorot_uniform_dense_and_conv() {
    // Dense [fan_in, fan_out]: limit sqrt(6 / (fan_in + fan_out)), std limit / sqrt(3).
    let limit = (6.0f64 / (200.0 + 300.0)).sqrt();
    check_scaling(
        &GlorotUniform::new(),
        &[200, 300],
        limit / 3f64.sqrt(),
        limit,
    );
    // Conv [kh, kw, in, out]: fans multiplied by kh * kw.
    let (fi, fo) = (3.0 * 3.0 * 32.0, 3.0 * 3.0 * 64.0);
    let limit = (6.0f64 / (fi + fo)).sqrt();
    check_scaling(
        &GlorotUniform::new(),
        &[3, 3, 32, 64],
        limit / 3f64.sqrt(),
        limit,
    );
}

#[test]
fn he_uniform_dense_and_conv() {
    let limit = (6.0f64 / 150.0).sqrt();
    check_scaling(&HeUniform::new(), &[150, 400], limit / 3f64.sqrt(), limit);
    let limit = (6.0f64 / (5.0 * 5.0 * 16.0)).sqrt();
    check_scaling(
        &HeUniform::new(),
        &[5, 5, 16, 128],
        limit / 3f64.sqrt(),
        limit,
    );
}

#[test]
fn glorot_normal_truncated_std_is_exact() {
    // The truncated draws have std sqrt(2 / (fan_in + fan_out)); the bound is 2σ of
    // the underlying normal, σ = that / 0.8796.
    let want = (2.0f64 / (250.0 + 350.0)).sqrt();
    check_scaling(
        &GlorotNormal::new(),
        &[250, 350],
        want,
        2.0 * want / TRUNCATED_STDDEV_CORRECTION,
    );
    let want = (2.0f64 / (9.0 * 32.0 + 9.0 * 64.0)).sqrt();
    check_scaling(
        &GlorotNormal::new(),
        &[3, 3, 32, 64],
        want,
        2.0 * want / TRUNCATED_STDDEV_CORRECTION,
    );
}

#[test]
fn he_normal_truncated_std_is_exact() {
    let want = (2.0f64 / 300.0).sqrt();
    check_scaling(
        &HeNormal::new(),
        &[300, 300],
        want,
        2.0 * want / TRUNCATED_STDDEV_CORRECTION,
    );
    let want = (2.0f64 / (3.0 * 3.0 * 64.0)).sqrt();
    check_scaling(
        &HeNormal::new(),
        &[3, 3, 64, 128],
        want,
        2.0 * want / TRUNCATED_STDDEV_CORRECTION,
    );
}

#[test]
fn other_ranks_and_empty_shapes() {
    for (name, make) in all_random() {
        let init = make(Some(1));
        for shape in [
            &[][..],
            &[7][..],
            &[2, 3, 4][..],
            &[0, 5][..],
            &[3, 0, 2, 2][..],
        ] {
            let t = draw(&*init, shape, 0);
            assert_eq!(t.shape(), shape, "{name} {shape:?}");
            assert!(t.iter().all(|x| x.is_finite()), "{name} {shape:?}");
        }
    }
}

fn is_invalid(r: adgraph::Result<adgraph::Node>) -> bool {
    matches!(
        r.map(|_| ()).unwrap_err().root_cause(),
        Error::InvalidArgument(_)
    )
}

#[test]
fn invalid_parameters_are_errors() {
    let g = Graph::new();
    let bad_normals = [
        TruncatedNormal::new(0.0, 0.0),
        TruncatedNormal::new(0.0, -1.0),
        TruncatedNormal::new(f32::NAN, 1.0),
        TruncatedNormal::new(0.0, f32::INFINITY),
        TruncatedNormal::new(0.0, f32::NAN),
    ];
    for init in bad_normals {
        assert!(is_invalid(g.variable(&[3], init, true)), "{init:?}");
    }
    let bad_uniforms = [
        RandomUniform::new(1.0, 1.0),
        RandomUniform::new(2.0, 1.0),
        RandomUniform::new(f32::NEG_INFINITY, 1.0),
        RandomUniform::new(0.0, f32::NAN),
        // Finite bounds whose range overflows f32.
        RandomUniform::new(-f32::MAX, f32::MAX),
    ];
    for init in bad_uniforms {
        assert!(is_invalid(g.variable(&[3], init, true)), "{init:?}");
    }
    // Valid ones still work on the same graph; no node was added for the failures.
    assert_eq!(g.len(), 0);
    assert!(g
        .variable(&[3], RandomUniform::new(0.0, 1e-30), true)
        .is_ok());
    assert!(g.variable(&[3], ConstantInit(2.0), true).is_ok());
    assert!(g.variable(&[3], Zeros, true).is_ok());
}

#[test]
fn overflowing_shape_is_an_error_not_a_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for huge in [&[usize::MAX, 2][..], &[1 << 50][..]] {
        for (name, make) in all_random() {
            let r = make(None).initialize(huge, &mut rng);
            assert!(r.is_err(), "{name} {huge:?}");
        }
    }
}
