//! Gradient checks and behaviour tests for fused_batch_norm and dropout.

use ad::gradcheck::GradCheck;
use ad::init::FromTensor;
use ad::ops::norm::FusedBatchNorm;
use ad::{shape, BatchNormActivation, BatchNormConfig, Feed, Graph, Node, RunTime, Tensor};
use adgraph as ad;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], lo: f32, hi: f32, rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(lo..hi))
}

/// A batch-norm graph: x placeholder (batch dim unknown), scale/offset
/// placeholders, moving stats non-trainable variables (or placeholders when
/// `stats_as_placeholders`).
struct Bn {
    g: Graph,
    x: Node,
    scale: Node,
    offset: Node,
    mm: Node,
    mv: Node,
    y: Node,
}

fn build_bn(x_shape: &[usize], config: BatchNormConfig, rng: &mut ChaCha8Rng) -> (Bn, Feed) {
    let g = Graph::new();
    let c = *x_shape.last().unwrap();
    let mut dims: Vec<Option<usize>> = x_shape.iter().map(|&d| Some(d)).collect();
    dims[0] = None;
    let x = g.placeholder(ad::TensorShape::new(dims));
    let scale = g.placeholder([c]);
    let offset = g.placeholder([c]);
    let mm = g
        .variable(&[c], FromTensor(random(&[c], -1.0, 1.0, rng)), false)
        .unwrap();
    let mv = g
        .variable(&[c], FromTensor(random(&[c], 0.5, 2.0, rng)), false)
        .unwrap();
    let y = ad::fused_batch_norm(&x, &scale, &offset, &mm, &mv, config).unwrap();
    let feed = ad::feed! {
        x => random(x_shape, -2.0, 2.0, rng),
        scale => random(&[c], 0.5, 2.0, rng),
        offset => random(&[c], -1.0, 1.0, rng),
    }
    .unwrap();
    (
        Bn {
            g,
            x,
            scale,
            offset,
            mm,
            mv,
            y,
        },
        feed,
    )
}

fn check(bn: &Bn, feed: &Feed) {
    let report = GradCheck {
        eps: 1e-2,
        atol: 5e-3,
        rtol: 5e-3,
        seed: 3,
    }
    .check(&bn.y, &[&bn.x, &bn.scale, &bn.offset], feed)
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.elements > 0);
}

#[test]
fn batch_norm_gradcheck_training_and_inference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let shapes: [&[usize]; 6] = [
        &[6, 3],
        &[5, 1],
        &[2, 7],
        &[2, 3, 3, 4],
        &[3, 2, 1, 2],
        &[1, 2, 3, 5],
    ];
    for shape in shapes {
        for is_training in [true, false] {
            for (epsilon, decay) in [(1e-3, 0.9), (0.1, 0.5)] {
                let config = BatchNormConfig {
                    epsilon,
                    decay,
                    is_training,
                    ..Default::default()
                };
                let (bn, feed) = build_bn(shape, config, &mut rng);
                assert_eq!(bn.y.shape().dims()[1..], bn.x.shape().dims()[1..]);
                check(&bn, &feed);
            }
        }
    }
}

/// Naive f64 batch norm forward and backward on `[n, c]` data, for comparison.
#[allow(clippy::type_complexity)]
fn naive_bn(
    x: &[f32],
    g: &[f32],
    scale: &[f32],
    offset: &[f32],
    stats: Option<(&[f32], &[f32])>,
    eps: f64,
    c: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = x.len() / c;
    let nf = n as f64;
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    let mut ds = vec![0.0; c];
    let mut db = vec![0.0; c];
    for j in 0..c {
        let col = |a: &[f32], i: usize| f64::from(a[i * c + j]);
        let (mean, var) = match stats {
            Some((m, v)) => (f64::from(m[j]), f64::from(v[j])),
            None => {
                let mean = (0..n).map(|i| col(x, i)).sum::<f64>() / nf;
                let var = (0..n).map(|i| (col(x, i) - mean).powi(2)).sum::<f64>() / nf;
                (mean, var)
            }
        };
        let inv = 1.0 / (var + eps).sqrt();
        let s = f64::from(scale[j]);
        let xhat = |i: usize| (col(x, i) - mean) * inv;
        let sum_g: f64 = (0..n).map(|i| col(g, i)).sum();
        let sum_gx: f64 = (0..n).map(|i| col(g, i) * xhat(i)).sum();
        ds[j] = sum_gx;
        db[j] = sum_g;
        for i in 0..n {
            y[i * c + j] = s * xhat(i) + f64::from(offset[j]);
            dx[i * c + j] = if stats.is_some() {
                s * inv * col(g, i)
            } else {
                s * inv / nf * (nf * col(g, i) - sum_g - xhat(i) * sum_gx)
            };
        }
    }
    (y, dx, ds, db)
}

fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}[{k}]: got {g}, want {w}"
        );
    }
}

/// Large arrays take the parallel path; compare with a naive f64 implementation,
/// also with a large mean (precision of the one-pass statistics).
#[test]
fn batch_norm_large_matches_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (shape, shift) in [
        (&[64usize, 8, 8, 32][..], 0.0f32),
        (&[300, 7, 5, 3][..], 1000.0),
        (&[70_000, 2][..], -50.0),
    ] {
        for is_training in [true, false] {
            let c = *shape.last().unwrap();
            let config = BatchNormConfig {
                is_training,
                ..Default::default()
            };
            let (bn, _) = build_bn(shape, config, &mut rng);
            let x = random(shape, -2.0, 2.0, &mut rng) + shift;
            let scale = random(&[c], 0.5, 2.0, &mut rng);
            let offset = random(&[c], -1.0, 1.0, &mut rng);
            let up = random(shape, -1.0, 1.0, &mut rng);
            let mm = bn.g.variable_value(&bn.mm).unwrap();
            let mv = bn.g.variable_value(&bn.mv).unwrap();
            let feed = ad::feed! { bn.x => x.clone(), bn.scale => scale.clone(),
            bn.offset => offset.clone() }
            .unwrap();
            let mut rt = RunTime::new();
            rt.backward(&bn.y, &feed, Some(up.clone())).unwrap();
            let stats = (!is_training).then(|| (mm.as_slice().unwrap(), mv.as_slice().unwrap()));
            let (y, dx, ds, db) = naive_bn(
                x.as_slice().unwrap(),
                up.as_slice().unwrap(),
                scale.as_slice().unwrap(),
                offset.as_slice().unwrap(),
                stats,
                1e-3,
                c,
            );
            let tol = 2e-4;
            assert_close("y", rt.value(&bn.y).unwrap(), &y, tol);
            assert_close("dx", rt.grad(&bn.x).unwrap(), &dx, tol);
            // Sums over many elements: relative to their magnitude.
            let n = (x.len() / c) as f64;
            assert_close("dscale", rt.grad(&bn.scale).unwrap(), &ds, tol * n.sqrt());
            assert_close("doffset", rt.grad(&bn.offset).unwrap(), &db, tol * n.sqrt());
        }
    }
}

#[test]
fn batch_norm_moving_statistics_recurrence() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (shape, decay) in [
        (&[6usize, 3][..], 0.9f32),
        (&[2, 3, 4, 2][..], 0.99),
        (&[1, 4][..], 0.7),
    ] {
        let c = *shape.last().unwrap();
        let config = BatchNormConfig {
            epsilon: 1e-3,
            decay,
            is_training: true,
            ..Default::default()
        };
        let (bn, _) = build_bn(shape, config, &mut rng);
        let to64 = |t: Tensor| t.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let mut mean_want = to64(bn.g.variable_value(&bn.mm).unwrap());
        let mut var_want = to64(bn.g.variable_value(&bn.mv).unwrap());
        let mut rt = RunTime::new();
        for step in 0..5 {
            let x = random(shape, -3.0, 3.0, &mut rng) + step as f32;
            let feed = ad::feed! { bn.x => x.clone(), bn.scale => random(&[c], 0.5, 2.0, &mut rng),
            bn.offset => random(&[c], -1.0, 1.0, &mut rng) }
            .unwrap();
            rt.forward_backward_cycle(|rt| -> ad::Result<()> {
                rt.forward(&bn.y, &feed)?;
                // A second request in the same cycle must not update again.
                rt.forward(&bn.y, &feed)?;
                rt.backward(&bn.y, &feed, None)?;
                // The moving statistics receive no gradient.
                assert!(rt.grad(&bn.mm).is_err() && rt.grad(&bn.mv).is_err());
                Ok(())
            })
            .unwrap();
            let n = x.len() / c;
            let xs = x.as_slice().unwrap();
            let d = f64::from(decay);
            for j in 0..c {
                let col: Vec<f64> = (0..n).map(|i| f64::from(xs[i * c + j])).collect();
                let mean = col.iter().sum::<f64>() / n as f64;
                let ss: f64 = col.iter().map(|v| (v - mean).powi(2)).sum();
                let unbiased = if n > 1 { ss / (n - 1) as f64 } else { 0.0 };
                mean_want[j] = d * mean_want[j] + (1.0 - d) * mean;
                var_want[j] = d * var_want[j] + (1.0 - d) * unbiased;
            }
            assert_close(
                "moving_mean",
                &bn.g.variable_value(&bn.mm).unwrap(),
                &mean_want,
                1e-5,
            );
            assert_close(
                "moving_variance",
                &bn.g.variable_value(&bn.mv).unwrap(),
                &var_want,
                1e-5,
            );
        }
    }
}

#[test]
fn batch_norm_inference_leaves_moving_statistics() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let config = BatchNormConfig {
        is_training: false,
        ..Default::default()
    };
    let (bn, feed) = build_bn(&[4, 3], config, &mut rng);
    let before = (
        bn.g.variable_value(&bn.mm).unwrap(),
        bn.g.variable_value(&bn.mv).unwrap(),
    );
    let mut rt = RunTime::new();
    rt.backward(&bn.y, &feed, None).unwrap();
    assert_eq!(bn.g.variable_value(&bn.mm).unwrap(), before.0);
    assert_eq!(bn.g.variable_value(&bn.mv).unwrap(), before.1);

    // Inference also accepts non-variable statistics.
    let g = Graph::new();
    let x = g.placeholder([4, 2]);
    let p = |v: [f32; 2]| g.constant(v).unwrap();
    let y = ad::fused_batch_norm(
        &x,
        &p([1.0, 2.0]),
        &p([0.0, 1.0]),
        &p([0.5, -0.5]),
        &p([4.0, 0.25]),
        BatchNormConfig {
            epsilon: 0.0,
            decay: 0.9,
            is_training: false,
            ..Default::default()
        },
    )
    .unwrap();
    let xv = ad::tensor([[0.5f32, -0.5], [2.5, 0.0], [-1.5, 1.0], [0.0, 0.0]]);
    let out = RunTime::new()
        .forward(&y, &ad::feed! { x => xv.clone() }.unwrap())
        .unwrap()
        .clone();
    for i in 0..4 {
        assert!((out[[i, 0]] - (xv[[i, 0]] - 0.5) / 2.0).abs() < 1e-6);
        assert!((out[[i, 1]] - (2.0 * (xv[[i, 1]] + 0.5) / 0.5 + 1.0)).abs() < 1e-5);
    }
}

#[test]
fn batch_norm_bad_input_is_an_error() {
    let g = Graph::new();
    let var = |c: usize| g.variable(&[c], ad::init::Ones, false).unwrap();
    let ok = BatchNormConfig::default();
    let (s3, o3, m3, v3) = (g.placeholder([3]), g.placeholder([3]), var(3), var(3));
    let bn = |x: &Node, s: &Node, o: &Node, m: &Node, v: &Node, c: BatchNormConfig| {
        ad::fused_batch_norm(x, s, o, m, v, c)
    };

    // Rank 3 (and 1, 5) x.
    for x_shape in [shape![2, 4, 3], shape![3], shape![1, 2, 2, 2, 3]] {
        let x = g.placeholder(x_shape);
        let e = bn(&x, &s3, &o3, &m3, &v3, ok).unwrap_err();
        assert!(e.to_string().contains("rank"), "{e}");
    }
    let x = g.placeholder(shape![None, 5, 5, 3]);
    assert!(bn(&x, &s3, &o3, &m3, &v3, ok).is_ok());
    // Channel mismatch in each [C] input.
    let (s4, m4) = (g.placeholder([4]), var(4));
    assert!(bn(&x, &s4, &o3, &m3, &v3, ok).is_err());
    assert!(bn(&x, &s3, &s4, &m3, &v3, ok).is_err());
    assert!(bn(&x, &s3, &o3, &m4, &v3, ok).is_err());
    assert!(bn(&x, &s3, &o3, &m3, &m4, ok).is_err());
    // [C] input of rank 2.
    let s2d = g.placeholder([1, 3]);
    assert!(bn(&x, &s2d, &o3, &m3, &v3, ok).is_err());
    // Moving statistics that are not variables, in training mode.
    let pm = g.placeholder([3]);
    let cm = g.constant([0.0f32, 0.0, 0.0]).unwrap();
    for stat in [&pm, &cm] {
        let e = bn(&x, &s3, &o3, stat, &v3, ok).unwrap_err();
        assert!(e.to_string().contains("must be a"), "{e}");
        assert!(bn(&x, &s3, &o3, &m3, stat, ok).is_err());
    }
    // Bad attributes.
    for (epsilon, decay) in [
        (-1.0, 0.9),
        (f32::NAN, 0.9),
        (1e-3, 1.5),
        (1e-3, -0.1),
        (1e-3, f32::NAN),
    ] {
        let c = BatchNormConfig {
            epsilon,
            decay,
            is_training: true,
            ..Default::default()
        };
        assert!(bn(&x, &s3, &o3, &m3, &v3, c).is_err());
    }

    // Unknown static dims, wrong run-time values: an error, not a panic.
    let xu = g.placeholder(shape![None, None]);
    let su = g.placeholder(shape![None]);
    let y = bn(&xu, &su, &o3, &m3, &v3, ok).unwrap();
    let feed = ad::feed! { xu => [[1.0f32, 2.0, 3.0, 4.0]], su => [1.0f32, 1.0, 1.0, 1.0],
    o3 => [0.0f32, 0.0, 0.0] }
    .unwrap();
    let e = RunTime::new().forward(&y, &feed).unwrap_err();
    assert!(e.to_string().contains("FusedBatchNorm"), "{e}");

    // Built directly (bypassing the builder's check): the run time refuses to
    // assign to a placeholder, naming the node.
    let y = g
        .add_op(FusedBatchNorm { config: ok }, &[&x, &s3, &o3, &pm, &v3])
        .unwrap();
    let feed = ad::feed! { x => Tensor::zeros(vec![2, 5, 5, 3]), s3 => [1.0f32; 3],
    o3 => [0.0f32; 3], pm => [0.0f32; 3] }
    .unwrap();
    let e = RunTime::new().forward(&y, &feed).unwrap_err();
    assert!(
        e.to_string().contains(&y.name()) && e.to_string().contains("Variable"),
        "{e}"
    );
    // Wrong number of inputs through add_op.
    assert!(g.add_op(FusedBatchNorm { config: ok }, &[&x, &s3]).is_err());
}

#[test]
fn batch_norm_empty_batch() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (bn, _) = build_bn(&[0, 3], BatchNormConfig::default(), &mut rng);
    let before = bn.g.variable_value(&bn.mm).unwrap();
    let feed = ad::feed! { bn.x => Tensor::zeros(vec![0, 3]), bn.scale => [1.0f32; 3],
    bn.offset => [0.0f32; 3] }
    .unwrap();
    let mut rt = RunTime::new();
    rt.backward(&bn.y, &feed, None).unwrap();
    assert_eq!(rt.value(&bn.y).unwrap().shape(), &[0, 3]);
    assert_eq!(rt.grad(&bn.scale).unwrap(), &Tensor::zeros(vec![3]));
    assert_eq!(bn.g.variable_value(&bn.mm).unwrap(), before);
}

// ---------------------------------------------------------------- dropout

fn dropout_graph(shape: &[usize], rate: f32, is_training: bool) -> (Graph, Node, Node) {
    let g = Graph::new();
    let x = g.placeholder(shape.to_vec().as_slice());
    let y = ad::dropout(&x, rate, is_training).unwrap();
    (g, x, y)
}

#[test]
fn dropout_gradcheck() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for shape in [&[7usize][..], &[3, 4], &[2, 3, 2, 2]] {
        for rate in [0.0f32, 0.3, 0.8] {
            for is_training in [true, false] {
                let (_g, x, y) = dropout_graph(shape, rate, is_training);
                let feed = ad::feed! { x => random(shape, -2.0, 2.0, &mut rng) }.unwrap();
                for seed in [0, 1, 42] {
                    let gc = GradCheck {
                        seed,
                        ..Default::default()
                    };
                    gc.check(&y, &[&x], &feed).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

/// Forward value and gradient (upstream ones) of dropout on ones of `n` elements.
fn dropout_run(n: usize, rate: f32, seed: u64) -> (Tensor, Tensor) {
    let (_g, x, y) = dropout_graph(&[n], rate, true);
    let feed = ad::feed! { x => ad::tensor::full(&[n], 1.0) }.unwrap();
    let mut rt = RunTime::with_seed(seed);
    rt.backward(&y, &feed, None).unwrap();
    (rt.value(&y).unwrap().clone(), rt.grad(&x).unwrap().clone())
}

#[test]
fn dropout_kept_fraction_and_scaling() {
    let n = 200_000;
    for (rate, seed) in [(0.1f32, 1u64), (0.5, 2), (0.9, 3), (0.0, 4), (0.999, 5)] {
        let (out, grad) = dropout_run(n, rate, seed);
        let scale = 1.0 / (1.0 - rate);
        assert!(out.iter().all(|&v| v == 0.0 || v == scale));
        // Backward uses the forward's mask.
        assert_eq!(out, grad);
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64;
        let p = 1.0 - f64::from(rate);
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        let frac = kept / n as f64;
        assert!(
            (frac - p).abs() <= 5.0 * sigma + 1e-12,
            "rate {rate}: kept {frac}, expected {p} +- {}",
            5.0 * sigma
        );
    }
}

#[test]
fn dropout_masks_are_seeded() {
    for n in [1000usize, 100_000] {
        let (a, _) = dropout_run(n, 0.5, 17);
        let (b, _) = dropout_run(n, 0.5, 17);
        let (c, _) = dropout_run(n, 0.5, 18);
        assert_eq!(a, b, "same seed, same mask");
        assert_ne!(a, c, "different seeds, different masks");
    }
    // Element k uses word k of the mask stream, so a short array's mask is the
    // start of a long one's (the long one is drawn in parallel blocks).
    let (short, _) = dropout_run(50_000, 0.4, 23);
    let (long, _) = dropout_run(300_000, 0.4, 23);
    let long = long.as_slice().unwrap();
    assert_eq!(short.as_slice().unwrap(), &long[..50_000]);
    // No part of the mask repeats another (e.g. parallel blocks drawing the same words).
    for shift in (8..18).map(|p| 1usize << p) {
        assert_ne!(
            &long[..1000],
            &long[shift..shift + 1000],
            "mask repeats after {shift}"
        );
    }

    // Successive forwards (cycles) of one run time draw new masks.
    let (_g, x, y) = dropout_graph(&[1000], 0.5, true);
    let feed = ad::feed! { x => ad::tensor::full(&[1000], 1.0) }.unwrap();
    let mut rt = RunTime::with_seed(3);
    let first = rt
        .forward_backward_cycle(|rt| rt.forward(&y, &feed).cloned())
        .unwrap();
    let second = rt
        .forward_backward_cycle(|rt| rt.forward(&y, &feed).cloned())
        .unwrap();
    assert_ne!(first, second);
}

#[test]
fn dropout_inference_is_identity() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (_g, x, y) = dropout_graph(&[3, 5], 0.7, false);
    let xv = random(&[3, 5], -1.0, 1.0, &mut rng);
    let up = random(&[3, 5], -1.0, 1.0, &mut rng);
    let mut rt = RunTime::new();
    rt.backward(
        &y,
        &ad::feed! { x => xv.clone() }.unwrap(),
        Some(up.clone()),
    )
    .unwrap();
    assert_eq!(rt.value(&y).unwrap(), &xv);
    assert_eq!(rt.grad(&x).unwrap(), &up);
}

#[test]
fn dropout_bad_rate_is_an_error() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    for rate in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        for is_training in [true, false] {
            let e = ad::dropout(&x, rate, is_training).unwrap_err();
            assert!(e.to_string().contains("rate"), "{e}");
        }
    }
    assert!(ad::dropout(&x, 0.0, true).is_ok());
    // Wrong number of inputs through add_op.
    let op = ad::ops::dropout::Dropout {
        rate: 0.5,
        is_training: true,
    };
    assert!(g.add_op(op, &[&x, &x]).is_err());
}

/// `fused_batch_norm` with a fused activation against the activation op
/// applied to its output: the values and every gradient must be bitwise the
/// same, in both modes, for arrays small (one thread) and large (parallel
/// row blocks), with an upstream gradient that is not all ones.
#[test]
fn fused_activation_is_bitwise_the_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let shapes: [&[usize]; 4] = [&[7, 3], &[2, 3, 3, 4], &[40, 12, 12, 16], &[300, 260]];
    for shape in shapes {
        for is_training in [true, false] {
            for activation in [
                BatchNormActivation::Relu,
                BatchNormActivation::LeakyRelu(0.3),
            ] {
                let base = BatchNormConfig {
                    is_training,
                    ..Default::default()
                };
                let fused = BatchNormConfig { activation, ..base };
                let (plain, feed) = build_bn(shape, base, &mut rng);
                let composed = match activation {
                    BatchNormActivation::LeakyRelu(alpha) => ad::leaky_relu(&plain.y, alpha),
                    _ => ad::relu(&plain.y),
                }
                .unwrap();
                // The same graph's inputs and moving statistics feed the fused node.
                let one = ad::fused_batch_norm(
                    &plain.x,
                    &plain.scale,
                    &plain.offset,
                    &plain.mm,
                    &plain.mv,
                    fused,
                )
                .unwrap();
                let up = random(shape, -1.0, 1.0, &mut rng);
                let run = |y: &Node| {
                    let mut rt = RunTime::new();
                    let value = rt.forward(y, &feed).unwrap().clone();
                    rt.backward(y, &feed, Some(up.clone())).unwrap();
                    let grads: Vec<Tensor> = [&plain.x, &plain.scale, &plain.offset]
                        .iter()
                        .map(|n| rt.grad(n).unwrap().clone())
                        .collect();
                    (value, grads)
                };
                let (v1, g1) = run(&composed);
                let (v2, g2) = run(&one);
                let what = format!("{shape:?} training={is_training} {activation:?}");
                assert!(v1.iter().any(|&v| v <= 0.0), "{what}: no negative side");
                assert_eq!(v1, v2, "{what}: values");
                for (name, (a, b)) in ["x", "scale", "offset"].iter().zip(g1.iter().zip(&g2)) {
                    assert_eq!(a, b, "{what}: gradient of {name}");
                }
            }
        }
    }
}

#[test]
fn fused_leaky_relu_gradcheck_and_bad_alpha() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for is_training in [true, false] {
        let config = BatchNormConfig {
            is_training,
            activation: BatchNormActivation::LeakyRelu(0.2),
            ..Default::default()
        };
        let (bn, feed) = build_bn(&[4, 2, 2, 3], config, &mut rng);
        check(&bn, &feed);
    }
    let config = BatchNormConfig {
        activation: BatchNormActivation::LeakyRelu(f32::NAN),
        ..Default::default()
    };
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    let v = |init: f32| {
        g.variable(&[3], ad::init::ConstantInit(init), false)
            .unwrap()
    };
    let err = ad::fused_batch_norm(&x, &v(1.0), &v(0.0), &v(0.0), &v(1.0), config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("alpha must be finite") && err.contains("FusedBatchNorm"),
        "{err}"
    );
}

/// Timing of batch norm forward+backward (release build):
/// `cargo test --release --test grad_norm -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_batch_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for shape in [[50usize, 28, 28, 16], [50, 14, 14, 64], [50, 4, 4, 256]] {
        for act in [BatchNormActivation::Identity, BatchNormActivation::Relu] {
            let (bn, feed) = build_bn(
                &shape,
                BatchNormConfig {
                    activation: act,
                    ..Default::default()
                },
                &mut rng,
            );
            let up = random(&shape, -1.0, 1.0, &mut rng);
            let mut rt = RunTime::new();
            let mut run = || {
                rt.forward_backward_cycle(|rt| rt.backward(&bn.y, &feed, Some(up.clone())))
                    .unwrap()
            };
            for _ in 0..3 {
                run();
            }
            let reps = 30;
            let mut times = Vec::new();
            for _ in 0..reps {
                let t = std::time::Instant::now();
                run();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "batch norm fwd+bwd {shape:?} {act:?}: median {:.3} ms, min {:.3} ms ({} threads)",
                times[reps / 2],
                times[0],
                rayon::current_num_threads()
            );
        }
    }
}

// ------------------------------------------------- gradient nodes, second order

/// Settings of the second-derivative checks: steps of 1e-2 on inputs of
/// magnitude ~1 (f32 sums), tolerances to match.
const SECOND_ORDER: GradCheck = GradCheck {
    eps: 1e-2,
    atol: 1e-2,
    rtol: 1e-2,
    seed: 7,
};

/// A batch norm with `config` whose normalised values (before the fused
/// activation) are all at least `margin` away from 0, so that finite
/// differences do not cross the activation's kink.
fn bn_away_from_kink(
    shape: &[usize],
    config: BatchNormConfig,
    margin: f32,
    rng: &mut ChaCha8Rng,
) -> (Bn, Feed) {
    let plain = BatchNormConfig {
        activation: BatchNormActivation::Identity,
        ..config
    };
    loop {
        let (mut bn, feed) = build_bn(shape, plain, rng);
        let pre = RunTime::new().forward(&bn.y, &feed).unwrap().clone();
        if pre.iter().all(|v| v.abs() >= margin) {
            bn.y =
                ad::fused_batch_norm(&bn.x, &bn.scale, &bn.offset, &bn.mm, &bn.mv, config).unwrap();
            return (bn, feed);
        }
    }
}

const ACTIVATIONS: [BatchNormActivation; 3] = [
    BatchNormActivation::Identity,
    BatchNormActivation::Relu,
    BatchNormActivation::LeakyRelu(0.2),
];

/// Second derivatives of batch norm w.r.t. x, scale and offset, in both modes
/// and with each fused activation: the gradient nodes' own gradients (the
/// composition with the plain batch mean and variance in training mode).
#[test]
fn batch_norm_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for shape in [&[6usize, 3][..], &[2, 2, 2, 3], &[5, 1]] {
        for is_training in [true, false] {
            for activation in ACTIVATIONS {
                let config = BatchNormConfig {
                    epsilon: 1e-3,
                    is_training,
                    activation,
                    ..Default::default()
                };
                let (bn, feed) = bn_away_from_kink(shape, config, 0.1, &mut rng);
                let report = SECOND_ORDER
                    .check_second_order(&bn.y, &[&bn.x, &bn.scale, &bn.offset], &feed)
                    .unwrap_or_else(|e| {
                        panic!("{shape:?} training={is_training} {activation:?}: {e}")
                    });
                assert!(report.elements > 0);
            }
        }
    }
}

/// Second derivatives through the upstream gradient too: the loss is a
/// softmax cross-entropy of the batch norm's output, so `dy` depends on `x`
/// (the gradient nodes' gradients w.r.t. `dy`).
#[test]
fn batch_norm_second_derivatives_through_the_upstream_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for shape in [&[5usize, 3][..], &[2, 2, 2, 3]] {
        for is_training in [true, false] {
            for activation in ACTIVATIONS {
                let config = BatchNormConfig {
                    is_training,
                    activation,
                    ..Default::default()
                };
                let (bn, mut feed) = bn_away_from_kink(shape, config, 0.1, &mut rng);
                let labels = bn.g.placeholder(shape);
                let lv = random(shape, 0.0, 1.0, &mut rng);
                feed.insert(&labels, lv).unwrap();
                let loss = ad::softmax_cross_entropy_loss(&labels, &bn.y).unwrap();
                SECOND_ORDER
                    .check_second_order(&loss, &[&bn.x, &bn.scale, &bn.offset], &feed)
                    .unwrap_or_else(|e| {
                        panic!("{shape:?} training={is_training} {activation:?}: {e}")
                    });
            }
        }
    }
}

/// One pass for the per-channel sums: the scale and offset gradient nodes
/// read what the x gradient node kept (training), or what the scale node
/// kept (inference, where dx needs no sums); the values are those of nodes
/// that compute everything themselves, and of nodes that find nothing kept.
#[test]
fn batch_norm_gradient_nodes_share_the_sums() {
    use ad::ops::norm::{BatchNormGradOf, FusedBatchNormGrad};
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    for is_training in [true, false] {
        for activation in ACTIVATIONS {
            let config = BatchNormConfig {
                is_training,
                activation,
                ..Default::default()
            };
            let (bn, feed) = build_bn(&[7, 2, 2, 3], config, &mut rng);
            let wrt = [&bn.x, &bn.scale, &bn.offset];
            let grads: Vec<Node> = ad::gradients(&[&bn.y], &wrt, None)
                .unwrap()
                .into_iter()
                .map(Option::unwrap)
                .collect();
            let types: Vec<&str> = grads.iter().map(|n| n.op_type()).collect();
            assert_eq!(
                types,
                [
                    "FusedBatchNormGrad",
                    "FusedBatchNormGradScale",
                    "FusedBatchNormGradOffset"
                ]
            );
            let provider = if is_training { &grads[0] } else { &grads[1] };
            assert!(grads[2].inputs().contains(provider));
            assert_eq!(grads[1].inputs().contains(&grads[0]), is_training);

            // Each gradient alone (its own sums).
            let alone: Vec<Node> = wrt
                .iter()
                .map(|w| {
                    ad::gradients(&[&bn.y], &[w], None).unwrap()[0]
                        .clone()
                        .unwrap()
                })
                .collect();
            // Nothing kept to read: a placeholder in place of the forward
            // node (training) and of the node with the sums.
            let dummy_y = bn.g.placeholder(bn.x.shape());
            let dummy_sums = bn.g.placeholder(bn.x.shape());
            let ones = ad::ones_like(&bn.y).unwrap();
            let mut base: Vec<&Node> = vec![&ones, &bn.x, &bn.scale, &bn.offset];
            if is_training {
                base.push(&dummy_y);
            } else {
                base.extend([&bn.mm, &bn.mv]);
            }
            let recomputed: Vec<Node> = [
                BatchNormGradOf::X,
                BatchNormGradOf::Scale,
                BatchNormGradOf::Offset,
            ]
            .into_iter()
            .map(|of| {
                let reuses_sums = of != BatchNormGradOf::X;
                let mut args = base.clone();
                if reuses_sums {
                    args.push(&dummy_sums);
                }
                let op = FusedBatchNormGrad {
                    config,
                    of,
                    reuses_sums,
                };
                bn.g.add_op(op, &args).unwrap()
            })
            .collect();
            let xv = feed.get(&bn.x).unwrap().clone();
            let mut feed = feed.clone();
            feed.insert(&dummy_y, xv.clone()).unwrap();
            feed.insert(&dummy_sums, xv).unwrap();
            let mut rt = RunTime::new();
            let all: Vec<&Node> = grads.iter().chain(&alone).chain(&recomputed).collect();
            let values = rt.evaluate(&all, &feed).unwrap();
            for k in 0..3 {
                let what = format!("training={is_training} {activation:?} input {k}");
                assert_eq!(values[k], values[3 + k], "{what}: alone");
                assert_eq!(values[k], values[6 + k], "{what}: recomputed");
            }
        }
    }
}

/// The moving statistics take no gradient, at any order.
#[test]
fn batch_norm_moving_statistics_take_no_second_derivative() {
    let mut rng = ChaCha8Rng::seed_from_u64(34);
    let config = BatchNormConfig {
        is_training: false,
        ..Default::default()
    };
    let (bn, _) = build_bn(&[4, 3], config, &mut rng);
    let dx = ad::gradients(&[&bn.y], &[&bn.x], None).unwrap()[0]
        .clone()
        .unwrap();
    let s = ad::reduce_sum(&dx, ad::Axes::All, false).unwrap();
    let second = ad::gradients(&[&s], &[&bn.mm, &bn.mv, &bn.scale], None).unwrap();
    assert!(second[0].is_none() && second[1].is_none());
    assert!(second[2].is_some());
}

/// Second derivatives through dropout (its gradient node's gradient: the
/// same mask), in both modes, under a loss that is not linear.
#[test]
fn dropout_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(35);
    for shape in [&[7usize][..], &[3, 4], &[2, 3, 2, 2]] {
        for rate in [0.0f32, 0.3, 0.8] {
            for is_training in [true, false] {
                let (g, x, y) = dropout_graph(shape, rate, is_training);
                let labels = g.placeholder(shape);
                let loss = ad::sigmoid_cross_entropy_loss(&labels, &y).unwrap();
                let feed = ad::feed! {
                    x => random(shape, -2.0, 2.0, &mut rng),
                    labels => random(shape, 0.0, 1.0, &mut rng),
                }
                .unwrap();
                for seed in [0, 5] {
                    GradCheck {
                        seed,
                        ..SECOND_ORDER
                    }
                    .check_second_order(&loss, &[&x], &feed)
                    .unwrap_or_else(|e| {
                        panic!("{shape:?} rate {rate} training={is_training}: {e}")
                    });
                }
            }
        }
    }
}

/// The mask seed is kept in an inference pass too (it cannot be
/// recomputed): the gradient run in the same pass uses the same mask.
#[test]
fn dropout_gradient_in_an_inference_pass() {
    let n = 100_000;
    let (_g, x, y) = dropout_graph(&[n], 0.4, true);
    let dx = ad::gradients(&[&y], &[&x], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dx.op_type(), "DropoutGrad");
    let feed = ad::feed! { x => ad::tensor::full(&[n], 1.0) }.unwrap();
    let out = RunTime::with_seed(9).infer(&[&y, &dx], &feed).unwrap();
    assert_eq!(out[0], out[1]);
    // Without the dropout node's kept seed: an error naming the op.
    let g = y.graph();
    let other = g.placeholder([n]);
    let op = ad::ops::dropout::DropoutGrad { rate: 0.4 };
    let bad = g.add_op(op, &[&x, &other]).unwrap();
    let feed = ad::feed! { x => ad::tensor::full(&[n], 1.0), other => ad::tensor::full(&[n], 1.0) }
        .unwrap();
    let e = RunTime::new().forward(&bad, &feed).unwrap_err();
    assert!(e.to_string().contains("mask seed"), "{e}");
    // Inference-mode dropout passes the gradient node through unchanged.
    let (_g, x, y) = dropout_graph(&[5], 0.4, false);
    let dx = ad::gradients(&[&y], &[&x], None).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(dx.op_type(), "OnesLike");
}
