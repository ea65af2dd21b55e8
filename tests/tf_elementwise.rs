//! The element-wise ops, activations and losses against TensorFlow's vectors in
//! `$ADGRAPH_REFERENCE_DIR` (default `/work/shared/reference`; skipped with a
//! message when the directory does not exist).

use std::path::PathBuf;

use adgraph as ad;
use adgraph::{Feed, Graph, Node, RunTime, Tensor};
use ndarray::IxDyn;
use serde_json::Value;

fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var("ADGRAPH_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/shared/reference"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("reference directory {} not found: skipped", dir.display());
        None
    }
}

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_shape_vec(IxDyn(&shape), data).unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Runs every case of `<op>.json`: `build(graph inputs by name, attrs)` makes the
/// node; forward and each gradient are compared with TF's.
fn run(op: &str, build: impl Fn(&[(String, Node)], &Value) -> Node) -> usize {
    let Some(dir) = reference_dir() else {
        return 0;
    };
    let text = std::fs::read_to_string(dir.join(format!("{op}.json"))).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{op}: no cases");
    for case in cases {
        let name = format!("{op}/{}", case["name"].as_str().unwrap());
        let g = Graph::new();
        let mut feed = Feed::new();
        let mut inputs = Vec::new();
        for (key, value) in case["inputs"].as_object().unwrap() {
            let value = tensor(value);
            let node = g.placeholder(value.shape());
            feed.insert(&node, value).unwrap();
            inputs.push((key.clone(), node));
        }
        let out = build(&inputs, &case["attrs"]);
        let mut rt = RunTime::new();
        let got = rt.forward(&out, &feed).unwrap().clone();
        assert_close(&format!("{name} output"), &got, &tensor(&case["output"]));
        rt.backward(&out, &feed, Some(tensor(&case["upstream"])))
            .unwrap();
        for (key, want) in case["grads"].as_object().unwrap() {
            let node = &inputs.iter().find(|(k, _)| k == key).unwrap().1;
            assert_close(
                &format!("{name} grad {key}"),
                rt.grad(node).unwrap(),
                &tensor(want),
            );
        }
    }
    cases.len()
}

fn input<'a>(inputs: &'a [(String, Node)], name: &str) -> &'a Node {
    &inputs.iter().find(|(k, _)| k == name).unwrap().1
}

fn attr(attrs: &Value, name: &str) -> f32 {
    attrs[name].as_f64().unwrap() as f32
}

#[test]
fn tf_exp() {
    run("exp", |i, _| ad::exp(input(i, "x")).unwrap());
}

#[test]
fn tf_sigmoid() {
    run("sigmoid", |i, _| ad::sigmoid(input(i, "x")).unwrap());
}

#[test]
fn tf_tanh() {
    run("tanh", |i, _| ad::tanh(input(i, "x")).unwrap());
}

#[test]
fn tf_relu() {
    run("relu", |i, _| ad::relu(input(i, "x")).unwrap());
}

#[test]
fn tf_leaky_relu() {
    run("leaky_relu", |i, a| {
        ad::leaky_relu(input(i, "x"), attr(a, "alpha")).unwrap()
    });
}

#[test]
fn tf_l2norm() {
    run("l2norm", |i, a| {
        ad::l2norm(input(i, "x"), attr(a, "scalar")).unwrap()
    });
}

#[test]
fn tf_softmax_cross_entropy_loss() {
    run("softmax_cross_entropy_loss", |i, _| {
        ad::softmax_cross_entropy_loss(input(i, "labels"), input(i, "logits")).unwrap()
    });
}

#[test]
fn tf_sigmoid_cross_entropy_loss() {
    run("sigmoid_cross_entropy_loss", |i, _| {
        ad::sigmoid_cross_entropy_loss(input(i, "labels"), input(i, "logits")).unwrap()
    });
}
