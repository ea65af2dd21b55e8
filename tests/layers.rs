//! `adgraph::layers`: variable names, shapes and initial statistics; outputs
//! against the same math computed by hand (or built from plain ops);
//! training and inference modes; the causal mask; errors naming the layer.

use adgraph::gradcheck::{check_gradients, check_second_derivatives};
use adgraph::init::{RandomNormal, RandomUniform};
use adgraph::layers::{
    Activation, BatchNorm, Conv2D, Conv2DTranspose, Dense, Dropout, Embedding, Layer, LayerNorm,
    MultiHeadAttention,
};
use adgraph::{self as ad, shape, Feed, Graph, Node, Padding, RunTime, Tensor};
use ndarray::{Array2, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn run(node: &Node, feed: &Feed) -> Tensor {
    RunTime::with_seed(0).forward(node, feed).unwrap().clone()
}

fn value(v: &Node) -> Tensor {
    v.graph().variable_value(v).unwrap()
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(-1.0f32..1.0))
}

fn names(vars: &[Node]) -> Vec<String> {
    vars.iter().map(Node::name).collect()
}

fn mean_std(t: &Tensor) -> (f64, f64) {
    let n = t.len() as f64;
    let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = t
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs difference {worst} > {tol}");
}

fn err_text(r: ad::Result<Node>) -> String {
    r.expect_err("expected an error").to_string()
}

// ------------------------------------------------------------------ Dense

#[test]
fn dense_variables_names_and_glorot_statistics() {
    let g = Graph::with_seed(3);
    let x = g.placeholder(shape![None, 64]);
    let fc = Dense::new(192);
    assert!(fc.kernel().is_none() && fc.variables().is_empty() && fc.scope_name().is_none());
    let y = fc.apply(&x).unwrap();
    assert_eq!(y.shape(), shape![None, 192]);
    assert_eq!(names(&fc.variables()), ["dense/kernel", "dense/bias"]);
    assert_eq!(fc.scope_name().unwrap(), "dense");
    let kernel = value(&fc.kernel().unwrap());
    assert_eq!(kernel.shape(), &[64, 192]);
    // Glorot uniform: U(-l, l), l = sqrt(6 / (64 + 192)), standard deviation l / sqrt(3)
    let limit = (6.0f64 / 256.0).sqrt();
    assert!(kernel.iter().all(|&v| f64::from(v).abs() <= limit));
    let (mean, std) = mean_std(&kernel);
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!(
        (std / (limit / 3f64.sqrt()) - 1.0).abs() < 0.05,
        "std {std}"
    );
    assert!(value(&fc.bias().unwrap()).iter().all(|&v| v == 0.0));
    assert!(fc.variables().iter().all(Node::is_trainable));
}

#[test]
fn dense_output_is_x_w_plus_b_with_activation() {
    let g = Graph::with_seed(0);
    let x = g.placeholder(shape![None, 3]);
    let fc = Dense::new(2)
        .activation(Activation::Tanh)
        .bias_initializer(RandomUniform::new(-1.0, 1.0));
    let y = fc.apply(&x).unwrap();
    let xv = random(&[4, 3], 1);
    let w = value(&fc.kernel().unwrap());
    let b = value(&fc.bias().unwrap());
    // y = tanh(x · W + b), by hand
    let x2 = xv.view().into_dimensionality::<Ix2>().unwrap();
    let w2 = w.view().into_dimensionality::<Ix2>().unwrap();
    let expected = Array2::from_shape_fn((4, 2), |(i, j)| {
        let s: f32 = (0..3).map(|k| x2[[i, k]] * w2[[k, j]]).sum();
        (s + b[j]).tanh()
    })
    .into_dyn();
    let feed = Feed::new().with(&x, xv).unwrap();
    assert_close(&run(&y, &feed), &expected, 1e-6, "dense");
}

#[test]
fn dense_on_rank_3_is_the_row_wise_product_and_shares_variables() {
    let g = Graph::with_seed(0);
    let x3 = g.placeholder(shape![None, 5, 3]);
    let x2 = g.placeholder(shape![None, 3]);
    let fc = Dense::new(4).use_bias(false);
    let y3 = fc.apply(&x3).unwrap();
    let before = g.variables(false).len();
    let y2 = fc.apply(&x2).unwrap();
    assert_eq!(
        g.variables(false).len(),
        before,
        "a second apply makes no variables"
    );
    assert_eq!(fc.variables().len(), 1);
    assert_eq!(y3.shape(), shape![None, 5, 4]);
    let xv = random(&[2, 5, 3], 2);
    let rows = xv.clone().into_shape_with_order(vec![10, 3]).unwrap();
    let a = run(&y3, &Feed::new().with(&x3, xv).unwrap());
    let b = run(&y2, &Feed::new().with(&x2, rows).unwrap());
    assert_close(
        &a.into_shape_with_order(vec![10, 4]).unwrap(),
        &b,
        1e-6,
        "rows",
    );
    // The ops of both applies live in the layer's scope.
    assert!(y2.name().starts_with("dense/"), "{}", y2.name());
}

#[test]
fn layer_names_are_unique_per_graph_and_nest_in_scopes() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 2]);
    let a = Dense::new(2);
    let b = Dense::new(2);
    let c = Dense::new(2).name("dense");
    let d = Dense::new(2).name("head");
    for layer in [&a, &b, &c, &d] {
        layer.apply(&x).unwrap();
    }
    assert_eq!(a.scope_name().unwrap(), "dense");
    assert_eq!(b.scope_name().unwrap(), "dense_1");
    assert_eq!(c.scope_name().unwrap(), "dense_2");
    assert_eq!(d.kernel().unwrap().name(), "head/kernel");
    let e = Dense::new(2);
    g.name_scope("block_0", || e.apply(&x)).unwrap();
    assert_eq!(e.kernel().unwrap().name(), "block_0/dense/kernel");
    // Another graph starts its own numbering.
    let g2 = Graph::new();
    let f = Dense::new(2);
    f.apply(&g2.placeholder(shape![None, 2])).unwrap();
    assert_eq!(f.scope_name().unwrap(), "dense");
    // ... and a layer built on one graph refuses another's input.
    let err = err_text(f.apply(&x));
    assert!(
        err.contains("different graphs") && err.contains("dense"),
        "{err}"
    );
}

#[test]
fn dense_errors_name_the_layer_and_the_shapes() {
    let g = Graph::new();
    let err = err_text(Dense::new(3).apply(&g.placeholder([4])));
    assert!(
        err.contains("dense (Dense)") && err.contains("(4,)") && err.contains("rank"),
        "{err}"
    );
    let err = err_text(
        Dense::new(3)
            .name("fc")
            .apply(&g.placeholder(shape![2, None])),
    );
    assert!(
        err.contains("fc (Dense)") && err.contains("(2, None)") && err.contains("known"),
        "{err}"
    );
    let err = err_text(Dense::new(0).apply(&g.placeholder([2, 2])));
    assert!(err.contains("units"), "{err}");
    let fc = Dense::new(3);
    fc.apply(&g.placeholder([2, 4])).unwrap();
    let err = err_text(fc.apply(&g.placeholder([2, 5])));
    assert!(
        err.contains("dense (Dense)") && err.contains("(2, 5)") && err.contains("last dim 4"),
        "{err}"
    );
}

// ------------------------------------------------------------------ Conv2D

#[test]
fn conv2d_matches_the_op_with_its_variables() {
    let g = Graph::with_seed(1);
    let x = g.placeholder(shape![None, 6, 6, 2]);
    let conv = Conv2D::new(3, [3, 3])
        .strides([2, 2])
        .padding(Padding::Same)
        .activation(Activation::Relu)
        .bias_initializer(RandomUniform::new(-0.5, 0.5));
    let y = conv.apply(&x).unwrap();
    assert_eq!(y.shape(), shape![None, 3, 3, 3]);
    assert_eq!(names(&conv.variables()), ["conv2d/kernel", "conv2d/bias"]);
    assert_eq!(conv.kernel().unwrap().shape(), shape![3, 3, 2, 3]);
    let (k, b) = (conv.kernel().unwrap(), conv.bias().unwrap());
    let plain =
        ad::relu(&ad::add(&ad::conv2d(&x, &k, [2, 2], Padding::Same).unwrap(), &b).unwrap())
            .unwrap();
    let feed = Feed::new().with(&x, random(&[2, 6, 6, 2], 3)).unwrap();
    let out = run(&y, &feed);
    assert_close(&out, &run(&plain, &feed), 0.0, "conv2d");
    assert!(out.iter().any(|&v| v > 0.0));
    // Glorot uniform with fans 3*3*2 and 3*3*3.
    let limit = (6.0f32 / (18.0 + 27.0)).sqrt();
    assert!(value(&k).iter().all(|&v| v.abs() <= limit));
}

#[test]
fn conv2d_transpose_matches_the_op_and_default_valid_padding() {
    let g = Graph::with_seed(1);
    let x = g.placeholder(shape![None, 4, 4, 3]);
    let up = Conv2DTranspose::new(2, [3, 3])
        .strides([2, 2])
        .bias_initializer(RandomUniform::new(-0.5, 0.5));
    let y = up.apply(&x).unwrap();
    // VALID: 4 * 2 + (3 - 2)
    assert_eq!(y.shape(), shape![None, 9, 9, 2]);
    assert_eq!(up.kernel().unwrap().shape(), shape![3, 3, 2, 3]);
    assert_eq!(up.scope_name().unwrap(), "conv2d_transpose");
    let (k, b) = (up.kernel().unwrap(), up.bias().unwrap());
    let plain = ad::add(
        &ad::conv2d_transpose(&x, &k, [2, 2], Padding::Valid).unwrap(),
        &b,
    )
    .unwrap();
    let feed = Feed::new().with(&x, random(&[1, 4, 4, 3], 4)).unwrap();
    assert_close(
        &run(&y, &feed),
        &run(&plain, &feed),
        0.0,
        "conv2d_transpose",
    );
}

#[test]
fn conv_errors_name_the_layer() {
    let g = Graph::new();
    let err = err_text(Conv2D::new(4, [3, 3]).apply(&g.placeholder(shape![None, 28, 28])));
    assert!(
        err.contains("conv2d (Conv2D)") && err.contains("(None, 28, 28)"),
        "{err}"
    );
    let err = err_text(Conv2D::new(4, [0, 3]).apply(&g.placeholder(shape![None, 8, 8, 1])));
    assert!(err.contains("kernel size [0, 3]"), "{err}");
    let conv = Conv2DTranspose::new(4, [3, 3]);
    conv.apply(&g.placeholder(shape![None, 8, 8, 2])).unwrap();
    let err = err_text(conv.apply(&g.placeholder(shape![None, 8, 8, 3])));
    assert!(
        err.contains("conv2d_transpose (Conv2DTranspose)") && err.contains("channels 2"),
        "{err}"
    );
    // A window larger than a VALID input: the op's error, named by the layer's scope.
    let err = err_text(
        Conv2D::new(1, [5, 5])
            .name("small")
            .apply(&g.placeholder([1, 3, 3, 1])),
    );
    assert!(err.contains("small/Conv2D"), "{err}");
}

// ------------------------------------------------------------------ BatchNorm

#[test]
fn batch_norm_training_uses_batch_statistics_and_updates_the_moving_ones() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 2]);
    let (momentum, eps) = (0.9f32, 1e-3f32);
    let bn = BatchNorm::new().momentum(momentum).epsilon(eps);
    let train = bn.apply(&x, true).unwrap();
    let infer = bn.apply(&x, false).unwrap();
    assert_eq!(
        names(&bn.variables()),
        [
            "batch_norm/gamma",
            "batch_norm/beta",
            "batch_norm/moving_mean",
            "batch_norm/moving_variance"
        ]
    );
    assert_eq!(
        names(&bn.trainable_variables()),
        ["batch_norm/gamma", "batch_norm/beta"]
    );
    assert_eq!(value(&bn.gamma().unwrap()), ad::tensor([1.0f32, 1.0]));
    assert_eq!(
        value(&bn.moving_variance().unwrap()),
        ad::tensor([1.0f32, 1.0])
    );

    let xv = ad::tensor([[1.0f32, -2.0], [2.0, 0.0], [4.0, 1.0], [5.0, 5.0]]);
    let feed = Feed::new().with(&x, xv.clone()).unwrap();
    let mut rt = RunTime::new();
    let y = rt.forward(&train, &feed).unwrap().clone();
    // Column 0: mean 3, biased variance (4 + 1 + 1 + 4) / 4 = 2.5
    let expected0: Vec<f32> = [1.0f32, 2.0, 4.0, 5.0]
        .iter()
        .map(|v| (v - 3.0) / (2.5 + eps).sqrt())
        .collect();
    for (i, e) in expected0.iter().enumerate() {
        assert!(
            (y[[i, 0]] - e).abs() < 1e-5,
            "row {i}: {} vs {e}",
            y[[i, 0]]
        );
    }
    // Moving statistics after one training forward (variance Bessel-corrected: 2.5 * 4/3).
    let mm = value(&bn.moving_mean().unwrap());
    let mv = value(&bn.moving_variance().unwrap());
    assert!((mm[0] - (1.0 - momentum) * 3.0).abs() < 1e-6, "{mm}");
    assert!(
        (mv[0] - (momentum + (1.0 - momentum) * 2.5 * 4.0 / 3.0)).abs() < 1e-5,
        "{mv}"
    );

    // Inference: the moving statistics, and no update.
    let mut rt = RunTime::new();
    let yi = rt.forward(&infer, &feed).unwrap().clone();
    for i in 0..4 {
        let e = (xv[[i, 1]] - mm[1]) / (mv[1] + eps).sqrt();
        assert!(
            (yi[[i, 1]] - e).abs() < 1e-5,
            "row {i}: {} vs {e}",
            yi[[i, 1]]
        );
    }
    assert_eq!(
        value(&bn.moving_mean().unwrap()),
        mm,
        "inference updates nothing"
    );
}

#[test]
fn batch_norm_on_images_and_its_errors() {
    let g = Graph::new();
    let bn = BatchNorm::new();
    let y = bn
        .apply(&g.placeholder(shape![None, 4, 4, 8]), true)
        .unwrap();
    assert_eq!(y.shape(), shape![None, 4, 4, 8]);
    assert_eq!(bn.gamma().unwrap().shape(), shape![8]);
    let err = err_text(BatchNorm::new().apply(&g.placeholder(shape![None, 4, 8]), true));
    assert!(
        err.contains("batch_norm (BatchNorm)") && err.contains("(None, 4, 8)"),
        "{err}"
    );
    let err = err_text(bn.apply(&g.placeholder(shape![None, 3]), false));
    assert!(err.contains("channels 8"), "{err}");
    let err = err_text(
        BatchNorm::new()
            .momentum(1.5)
            .apply(&g.placeholder([2, 2]), true),
    );
    assert!(err.contains("momentum"), "{err}");
}

// ------------------------------------------------------------------ LayerNorm

#[test]
fn layer_norm_normalises_each_row_by_hand() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 2, 4]);
    let ln = LayerNorm::new()
        .epsilon(1e-5)
        .gamma_initializer(RandomUniform::new(0.5, 1.5))
        .beta_initializer(RandomUniform::new(-1.0, 1.0));
    let y = ln.apply(&x).unwrap();
    assert_eq!(
        names(&ln.variables()),
        ["layer_norm/gamma", "layer_norm/beta"]
    );
    let (gamma, beta) = (value(&ln.gamma().unwrap()), value(&ln.beta().unwrap()));
    let xv = random(&[3, 2, 4], 5);
    let out = run(&y, &Feed::new().with(&x, xv.clone()).unwrap());
    for b in 0..3 {
        for t in 0..2 {
            let row: Vec<f32> = (0..4).map(|i| xv[[b, t, i]]).collect();
            let mean = row.iter().sum::<f32>() / 4.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            for (i, v) in row.iter().enumerate() {
                let e = (v - mean) / (var + 1e-5).sqrt() * gamma[i] + beta[i];
                assert!((out[[b, t, i]] - e).abs() < 1e-5);
            }
        }
    }
    let err = err_text(LayerNorm::new().begin_norm_axis(3).apply(&x));
    assert!(
        err.contains("layer_norm (LayerNorm)") && err.contains("(None, 2, 4)"),
        "{err}"
    );
    let err = err_text(ln.apply(&g.placeholder(shape![None, 5])));
    assert!(err.contains("[5]") && err.contains("[4]"), "{err}");
}

// ------------------------------------------------------------------ Embedding

#[test]
fn embedding_rows_statistics_and_bad_ids() {
    let g = Graph::with_seed(7);
    let ids = g.placeholder(shape![None, 3]);
    let emb = Embedding::new(27, 64);
    let h = emb.apply(&ids).unwrap();
    assert_eq!(h.shape(), shape![None, 3, 64]);
    assert_eq!(names(&emb.variables()), ["embedding/embeddings"]);
    let table = value(&emb.embeddings().unwrap());
    // N(0, 1) over 1,728 draws: the mean within 4 standard errors, the std within 5%.
    let (mean, std) = mean_std(&table);
    assert!(mean.abs() < 4.0 / 1728f64.sqrt(), "mean {mean}");
    assert!((std - 1.0).abs() < 0.05, "std {std}");
    let out = run(&h, &ad::feed! { ids => [[0.0, 26.0, 3.0]] }.unwrap());
    for (j, id) in [0usize, 26, 3].into_iter().enumerate() {
        for k in 0..64 {
            assert_eq!(out[[0, j, k]], table[[id, k]]);
        }
    }
    let small = Embedding::new(5, 2).initializer(RandomNormal::new(0.0, 0.02));
    small.apply(&ids).unwrap();
    assert_eq!(small.scope_name().unwrap(), "embedding_1");
    assert!(value(&small.embeddings().unwrap())
        .iter()
        .all(|v| v.abs() < 0.2));
    let err = RunTime::new()
        .forward(&h, &ad::feed! { ids => [[0.0, 27.0, 1.0]] }.unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("embedding/Gather") && err.contains("27"),
        "{err}"
    );
}

// ------------------------------------------------------------------ Dropout

#[test]
fn dropout_masks_in_training_and_is_the_identity_in_inference() {
    let g = Graph::new();
    let x = g.placeholder([4000]);
    let drop = Dropout::new(0.25);
    let train = drop.apply(&x, true).unwrap();
    let infer = drop.apply(&x, false).unwrap();
    assert_eq!(drop.scope_name().unwrap(), "dropout");
    assert!(train.name().starts_with("dropout/") && infer.name().starts_with("dropout/"));
    let feed = Feed::new()
        .with(&x, ad::tensor::full(&[4000], 1.0))
        .unwrap();
    let out = run(&train, &feed);
    let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / 4000.0;
    assert!((kept - 0.75).abs() < 0.03, "kept {kept}");
    assert!(out
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert!(run(&infer, &feed).iter().all(|&v| v == 1.0));
    let err = err_text(Dropout::new(-0.1).name("drop").apply(&x, true));
    assert!(
        err.contains("drop (Dropout)") && err.contains("-0.1"),
        "{err}"
    );
}

// ------------------------------------------------------------------ attention

/// Self-attention computed by hand in f64: `x [B, T, d]`, weights `[d, 3d]`,
/// `[3d]`, `[d, d]`, `[d]`. Returns the output `[B, T, d]` and the weights
/// `[B, heads, T, T]`.
fn attention_by_hand(
    x: &Tensor,
    wqkv: &Tensor,
    bqkv: &Tensor,
    wo: &Tensor,
    bo: &Tensor,
    heads: usize,
    causal: bool,
) -> (Tensor, Tensor) {
    let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let dh = d / heads;
    let qkv = |bb: usize, tt: usize, c: usize| -> f64 {
        (0..d)
            .map(|k| f64::from(x[[bb, tt, k]]) * f64::from(wqkv[[k, c]]))
            .sum::<f64>()
            + f64::from(bqkv[c])
    };
    let mut att = vec![0.0f64; b * heads * t * t];
    let mut merged = vec![0.0f64; b * t * d];
    for bb in 0..b {
        for h in 0..heads {
            for i in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|s| {
                        if causal && s > i {
                            return f64::NEG_INFINITY;
                        }
                        (0..dh)
                            .map(|c| qkv(bb, i, h * dh + c) * qkv(bb, s, d + h * dh + c))
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for s in 0..t {
                    let a = exps[s] / total;
                    att[((bb * heads + h) * t + i) * t + s] = a;
                    for c in 0..dh {
                        merged[(bb * t + i) * d + h * dh + c] += a * qkv(bb, s, 2 * d + h * dh + c);
                    }
                }
            }
        }
    }
    let out = Tensor::from_shape_fn(vec![b, t, d], |ix| {
        let (bb, i, j) = (ix[0], ix[1], ix[2]);
        ((0..d)
            .map(|k| merged[(bb * t + i) * d + k] * f64::from(wo[[k, j]]))
            .sum::<f64>()
            + f64::from(bo[j])) as f32
    });
    let weights = Tensor::from_shape_vec(
        vec![b, heads, t, t],
        att.into_iter().map(|a| a as f32).collect(),
    )
    .unwrap();
    (out, weights)
}

fn attention_case(causal: bool) {
    let g = Graph::with_seed(11);
    let (b, t, d, heads) = (2, 5, 8, 2);
    let x = g.placeholder(shape![None, t, d]);
    let mha = MultiHeadAttention::new(heads)
        .causal(causal)
        .bias_initializer(RandomUniform::new(-0.3, 0.3));
    let att = mha.apply_with_weights(&x).unwrap();
    let qkv = mha.qkv().unwrap();
    let out = mha.output_projection().unwrap();
    let xv = random(&[b, t, d], 12);
    let (expected, expected_w) = attention_by_hand(
        &xv,
        &value(&qkv.kernel().unwrap()),
        &value(&qkv.bias().unwrap()),
        &value(&out.kernel().unwrap()),
        &value(&out.bias().unwrap()),
        heads,
        causal,
    );
    let feed = Feed::new().with(&x, xv).unwrap();
    let mut rt = RunTime::new();
    let got = rt.evaluate(&[&att.output, &att.weights], &feed).unwrap();
    assert_close(&got[0], &expected, 1e-5, "attention output");
    assert_close(&got[1], &expected_w, 1e-6, "attention weights");
    for bb in 0..b {
        for h in 0..heads {
            for i in 0..t {
                let row: f32 = (0..t).map(|s| got[1][[bb, h, i, s]]).sum();
                assert!((row - 1.0).abs() < 1e-6);
                if causal {
                    assert!((i + 1..t).all(|s| got[1][[bb, h, i, s]] == 0.0));
                }
            }
        }
    }
}

#[test]
fn attention_matches_the_math_by_hand() {
    attention_case(false);
}

#[test]
fn causal_attention_matches_the_math_by_hand() {
    attention_case(true);
}

#[test]
fn causal_attention_output_at_t_ignores_later_positions() {
    let g = Graph::with_seed(2);
    let (t, d) = (6, 8);
    let x = g.placeholder(shape![None, t, d]);
    let causal = MultiHeadAttention::new(4).causal(true);
    let y = causal.apply(&x).unwrap();
    let open = MultiHeadAttention::new(4);
    let y_open = open.apply(&x).unwrap();
    let a = random(&[3, t, d], 20);
    for cut in 0..t - 1 {
        // b: a with every position after `cut` changed.
        let mut b = a.clone();
        let noise = random(&[3, t, d], 21 + cut as u64);
        for ((ix, v), n) in b.indexed_iter_mut().zip(noise.iter()) {
            if ix[1] > cut {
                *v += n;
            }
        }
        let ya = run(&y, &Feed::new().with(&x, a.clone()).unwrap());
        let yb = run(&y, &Feed::new().with(&x, b.clone()).unwrap());
        for bb in 0..3 {
            for tt in 0..t {
                let diff: f32 = (0..d)
                    .map(|k| (ya[[bb, tt, k]] - yb[[bb, tt, k]]).abs())
                    .sum();
                if tt <= cut {
                    assert!(diff < 1e-6, "position {tt} changed by {diff} (cut {cut})");
                } else {
                    assert!(diff > 1e-4, "position {tt} unchanged (cut {cut})");
                }
            }
        }
        // Without the mask, the early positions do see the change.
        let oa = run(&y_open, &Feed::new().with(&x, a.clone()).unwrap());
        let ob = run(&y_open, &Feed::new().with(&x, b).unwrap());
        let diff: f32 = (0..d).map(|k| (oa[[0, 0, k]] - ob[[0, 0, k]]).abs()).sum();
        assert!(diff > 1e-4, "unmasked position 0 unchanged (cut {cut})");
    }
}

#[test]
fn attention_variables_initializers_and_sharing() {
    let g = Graph::with_seed(5);
    let x = g.placeholder(shape![None, 16, 64]);
    let mha = MultiHeadAttention::new(4)
        .causal(true)
        .qkv_initializer(RandomNormal::new(0.0, 0.02))
        .output_initializer(RandomNormal::new(0.0, 0.01))
        .name("attn");
    mha.apply(&x).unwrap();
    assert_eq!(
        names(&mha.variables()),
        [
            "attn/qkv/kernel",
            "attn/qkv/bias",
            "attn/output/kernel",
            "attn/output/bias"
        ]
    );
    let shapes: Vec<_> = mha.variables().iter().map(Node::shape).collect();
    assert_eq!(
        shapes,
        [shape![64, 192], shape![192], shape![64, 64], shape![64]]
    );
    let (m, s) = mean_std(&value(&mha.qkv().unwrap().kernel().unwrap()));
    assert!(
        m.abs() < 0.002 && (s / 0.02 - 1.0).abs() < 0.05,
        "qkv mean {m} std {s}"
    );
    let (m, s) = mean_std(&value(&mha.output_projection().unwrap().kernel().unwrap()));
    assert!(
        m.abs() < 0.002 && (s / 0.01 - 1.0).abs() < 0.05,
        "output mean {m} std {s}"
    );
    // A second apply shares the four variables.
    let n = g.variables(false).len();
    let y2 = mha.apply(&x).unwrap();
    assert_eq!(g.variables(false).len(), n);
    assert!(y2.name().starts_with("attn/"), "{}", y2.name());
}

#[test]
fn attention_errors_name_the_layer_and_the_shapes() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 16, 64]);
    let err = err_text(MultiHeadAttention::new(5).apply(&x));
    assert!(
        err.contains("multi_head_attention (MultiHeadAttention)")
            && err.contains("(None, 16, 64)")
            && err.contains("5 heads"),
        "{err}"
    );
    let err = err_text(MultiHeadAttention::new(0).apply(&x));
    assert!(err.contains("0 heads"), "{err}");
    let err = err_text(MultiHeadAttention::new(4).apply(&g.placeholder(shape![None, 64])));
    assert!(
        err.contains("rank 3") && err.contains("(None, 64)"),
        "{err}"
    );
    let err = err_text(MultiHeadAttention::new(4).apply(&g.placeholder(shape![None, None, 64])));
    assert!(
        err.contains("(None, None, 64)") && err.contains("known"),
        "{err}"
    );
    let mha = MultiHeadAttention::new(2).name("att");
    mha.apply(&x).unwrap();
    let err = err_text(mha.apply(&g.placeholder(shape![None, 16, 32])));
    assert!(
        err.contains("att (MultiHeadAttention)") && err.contains("features 64"),
        "{err}"
    );
}

#[test]
fn attention_gradients_first_and_second_order() {
    let g = Graph::with_seed(4);
    let x = g.placeholder(shape![None, 3, 4]);
    let mha = MultiHeadAttention::new(2)
        .causal(true)
        .bias_initializer(RandomUniform::new(-0.3, 0.3));
    let y = mha.apply(&x).unwrap();
    let feed = Feed::new().with(&x, random(&[2, 3, 4], 9)).unwrap();
    let mut wrt: Vec<Node> = vec![x.clone()];
    wrt.extend(mha.variables());
    let wrt: Vec<&Node> = wrt.iter().collect();
    let report = check_gradients(&y, &wrt, &feed).unwrap();
    assert!(report.elements > 24, "{report}");
    check_second_derivatives(&y, &[&x], &feed).unwrap();
}

#[test]
fn a_small_transformer_block_trains() {
    // x + attention(layer_norm(x)), then a dense head, fitted to a fixed target.
    let g = Graph::with_seed(8);
    let x = g.placeholder(shape![None, 4, 8]);
    let target = g.placeholder(shape![None, 4, 2]);
    let ln = LayerNorm::new();
    let mha = MultiHeadAttention::new(2).causal(true);
    let head = Dense::new(2);
    let h = ad::add(&x, &mha.apply(&ln.apply(&x).unwrap()).unwrap()).unwrap();
    let out = head.apply(&h).unwrap();
    let diff = ad::subtract(&out, &target).unwrap();
    let loss = ad::reduce_mean(&ad::square(&diff).unwrap(), ad::Axes::All, false).unwrap();
    let feed = Feed::new()
        .with(&x, random(&[4, 4, 8], 30))
        .unwrap()
        .with(&target, random(&[4, 4, 2], 31))
        .unwrap();
    let mut opt = ad::optim::Adam::new(1e-2);
    let mut rt = RunTime::new();
    rt.stop_gradients_at(&[&x, &target]);
    let first = rt.forward(&loss, &feed).unwrap().sum();
    let mut last = first;
    for _ in 0..200 {
        rt.forward_backward_cycle(|rt| {
            use ad::optim::Optimizer;
            opt.optimize(rt, &loss, &feed, None).unwrap();
            last = rt.value(&loss).unwrap().sum();
        });
    }
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn attention_on_rows_equals_attention_on_sequences() {
    let g = Graph::with_seed(6);
    let (t, d) = (4, 8);
    let x3 = g.placeholder(shape![None, t, d]);
    let x2 = g.placeholder(shape![None, d]);
    let mha = MultiHeadAttention::new(2).causal(true).sequence_length(t);
    let a3 = mha.apply_with_weights(&x3).unwrap();
    let a2 = mha.apply_with_weights(&x2).unwrap();
    assert_eq!(a2.output.shape(), shape![None, d]);
    assert_eq!(a2.weights.shape(), shape![None, 2, t, t]);
    let xv = random(&[3, t, d], 40);
    let rows = xv.clone().into_shape_with_order(vec![3 * t, d]).unwrap();
    let y3 = run(&a3.output, &Feed::new().with(&x3, xv).unwrap());
    let y2 = run(&a2.output, &Feed::new().with(&x2, rows).unwrap());
    assert_close(
        &y3.into_shape_with_order(vec![3 * t, d]).unwrap(),
        &y2,
        0.0,
        "rows",
    );
    // Rows need the sequence length; a sequence of another length is refused.
    let err = err_text(MultiHeadAttention::new(2).apply(&x2));
    assert!(
        err.contains("sequence_length") && err.contains("(None, 8)"),
        "{err}"
    );
    let err = err_text(mha.apply(&g.placeholder(shape![None, 5, d])));
    assert!(
        err.contains("(None, 5, 8)") && err.contains("sequence_length is 4"),
        "{err}"
    );
}
