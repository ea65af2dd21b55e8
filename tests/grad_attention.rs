//! self_attention (the fused op): values and gradients against the same math
//! written with simple ops, finite-difference checks of first and second
//! derivatives (the `SelfAttentionGrad` node's own gradient), the weights it
//! keeps versus recomputed ones, and errors.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::ops::attention::self_attention_composed;
use ad::{Feed, Graph, RunTime, Tensor};
use adgraph as ad;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(-1.0f32..1.0))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Fused and composed attention agree in value and in gradient (for a random
/// upstream gradient), causal or not, one head or several.
#[test]
fn fused_matches_the_composition() {
    for (heads, seq, d, causal) in [
        (1, 3, 2, true),
        (2, 4, 8, true),
        (4, 5, 8, false),
        (4, 16, 64, true),
    ] {
        let g = Graph::new();
        let qkv = g.placeholder(ad::shape![None, 3 * d]);
        let fused = ad::self_attention(&qkv, heads, seq, causal).unwrap();
        let plain = self_attention_composed(&qkv, heads, seq, causal).unwrap();
        let b = 3;
        let feed = Feed::new()
            .with(&qkv, random(&[b * seq, 3 * d], 1))
            .unwrap();
        let mut rt = RunTime::new();
        let values = rt.evaluate(&[&fused, &plain], &feed).unwrap();
        let diff = max_diff(&values[0], &values[1]);
        assert!(
            diff < 1e-5,
            "heads {heads} seq {seq}: values differ by {diff}"
        );

        let up = random(&[b * seq, d], 2);
        let mut grads = Vec::new();
        for out in [&fused, &plain] {
            let mut rt = RunTime::new();
            rt.backward(out, &feed, Some(up.clone())).unwrap();
            grads.push(rt.grad(&qkv).unwrap().clone());
        }
        let diff = max_diff(&grads[0], &grads[1]);
        assert!(
            diff < 1e-5,
            "heads {heads} seq {seq}: gradients differ by {diff}"
        );
    }
}

#[test]
fn first_derivatives_by_finite_differences() {
    let g = Graph::new();
    let qkv = g.placeholder([8, 12]); // 2 sequences of 4 steps, d = 4, 2 heads
    let feed = Feed::new().with(&qkv, random(&[8, 12], 3)).unwrap();
    for causal in [true, false] {
        let y = ad::self_attention(&qkv, 2, 4, causal).unwrap();
        let report = check_gradients(&y, &[&qkv], &feed).unwrap();
        assert_eq!(report.elements, 96);
    }
}

#[test]
fn second_derivatives_by_finite_differences() {
    let g = Graph::new();
    let qkv = g.placeholder([6, 12]); // 2 sequences of 3 steps, d = 4, 2 heads
    let feed = Feed::new().with(&qkv, random(&[6, 12], 4)).unwrap();
    let check = GradCheck {
        eps: 1e-2,
        atol: 1e-2,
        rtol: 1e-2,
        seed: 5,
    };
    for causal in [true, false] {
        let y = ad::self_attention(&qkv, 2, 3, causal).unwrap();
        let report = check.check_second_order(&y, &[&qkv], &feed).unwrap();
        assert_eq!(report.elements, 72);
    }
}

/// The gradient node reads the weights its forward kept; with another node
/// in the forward's place (nothing kept), it recomputes them: same result.
#[test]
fn kept_and_recomputed_weights_agree() {
    let g = Graph::new();
    let qkv = g.placeholder([8, 12]);
    let dout = g.placeholder([8, 4]);
    let stand_in = g.placeholder([8, 4]);
    let y = ad::self_attention(&qkv, 2, 4, true).unwrap();
    let op = || ad::ops::attention::SelfAttentionGrad {
        heads: 2,
        seq_len: 4,
        causal: true,
    };
    let kept = g.add_op(op(), &[&qkv, &dout, &y]).unwrap();
    let recomputed = g.add_op(op(), &[&qkv, &dout, &stand_in]).unwrap();
    let feed = Feed::new()
        .with(&qkv, random(&[8, 12], 6))
        .unwrap()
        .with(&dout, random(&[8, 4], 7))
        .unwrap()
        .with(&stand_in, Tensor::zeros(vec![8, 4]))
        .unwrap();
    let values = RunTime::new()
        .evaluate(&[&kept, &recomputed], &feed)
        .unwrap();
    assert_eq!(values[0], values[1]);
    assert!(values[0].iter().any(|&v| v != 0.0));
}

/// Causal: the output of step t does not depend on the rows after t.
#[test]
fn causal_outputs_ignore_later_steps() {
    let g = Graph::new();
    let qkv = g.placeholder([5, 12]);
    let y = ad::self_attention(&qkv, 2, 5, true).unwrap();
    let a = random(&[5, 12], 8);
    let mut b = a.clone();
    for j in 0..12 {
        b[[3, j]] += 1.0;
        b[[4, j]] -= 0.5;
    }
    let ya = RunTime::new()
        .forward(&y, &Feed::new().with(&qkv, a).unwrap())
        .unwrap()
        .clone();
    let yb = RunTime::new()
        .forward(&y, &Feed::new().with(&qkv, b).unwrap())
        .unwrap()
        .clone();
    for t in 0..5 {
        let diff: f32 = (0..4).map(|j| (ya[[t, j]] - yb[[t, j]]).abs()).sum();
        if t < 3 {
            assert_eq!(diff, 0.0, "step {t}");
        } else {
            assert!(diff > 1e-4, "step {t}");
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_node() {
    let g = Graph::new();
    let err = ad::self_attention(&g.placeholder([8, 10]), 2, 4, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SelfAttention") && err.contains("(8, 10)") && err.contains("3 * 2"),
        "{err}"
    );
    let err = ad::self_attention(&g.placeholder([10, 12]), 2, 4, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 rows") && err.contains("4 steps"), "{err}");
    let err = ad::self_attention(&g.placeholder([4, 3, 12]), 2, 4, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 2"), "{err}");
    assert!(ad::self_attention(&g.placeholder([8, 12]), 0, 4, true).is_err());
    // Rows known only at run time: checked in forward.
    let qkv = g.placeholder(ad::shape![None, 12]);
    let y = ad::self_attention(&qkv, 2, 4, true).unwrap();
    let err = RunTime::new()
        .forward(&y, &Feed::new().with(&qkv, random(&[6, 12], 9)).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SelfAttention") && err.contains("6 rows"),
        "{err}"
    );
}
