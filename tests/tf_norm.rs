//! fused_batch_norm and dropout against the TensorFlow reference vectors
//! (`$ADGRAPH_REFERENCE_DIR`, default `/work/shared/reference`).

use ad::init::FromTensor;
use ad::{BatchNormConfig, Graph, RunTime, Tensor};
use adgraph as ad;
use serde_json::Value;

fn load(op: &str) -> Vec<Value> {
    let dir = std::env::var("ADGRAPH_REFERENCE_DIR")
        .unwrap_or_else(|_| "/work/shared/reference".to_string());
    let path = format!("{dir}/{op}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_shape_vec(shape, data).unwrap()
}

fn compare(case: &str, what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{case} {what}: shape");
    for (k, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "{case} {what}[{k}]: got {g}, want {w}"
        );
    }
}

#[test]
fn fused_batch_norm_matches_tensorflow() {
    let cases = load("fused_batch_norm");
    assert_eq!(cases.len(), 6);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let attrs = &case["attrs"];
        let config = BatchNormConfig {
            epsilon: attrs["epsilon"].as_f64().unwrap() as f32,
            decay: attrs["decay"].as_f64().unwrap() as f32,
            is_training: attrs["is_training"].as_bool().unwrap(),
        };
        let inputs = &case["inputs"];
        let g = Graph::new();
        let x = g.placeholder(tensor(&inputs["x"]).shape());
        let scale = g.placeholder(tensor(&inputs["scale"]).shape());
        let offset = g.placeholder(tensor(&inputs["offset"]).shape());
        let stat = |key: &str| {
            let t = tensor(&inputs[key]);
            g.variable(t.shape(), FromTensor(t.clone()), false).unwrap()
        };
        let (mm, mv) = (stat("moving_mean"), stat("moving_variance"));
        let y = ad::fused_batch_norm(&x, &scale, &offset, &mm, &mv, config).unwrap();
        let feed = ad::feed! {
            x => tensor(&inputs["x"]),
            scale => tensor(&inputs["scale"]),
            offset => tensor(&inputs["offset"]),
        }
        .unwrap();
        let mut rt = RunTime::new();
        rt.backward(&y, &feed, Some(tensor(&case["upstream"])))
            .unwrap();
        compare(
            name,
            "output",
            rt.value(&y).unwrap(),
            &tensor(&case["output"]),
        );
        let extra = &case["extra"];
        let grads = if config.is_training {
            &case["grads"]
        } else {
            &extra["tf_grads_inference"]
        };
        for (key, node) in [("x", &x), ("scale", &scale), ("offset", &offset)] {
            compare(name, key, rt.grad(node).unwrap(), &tensor(&grads[key]));
        }
        let (mm_want, mv_want) = if config.is_training {
            (
                tensor(&extra["moving_mean_updated"]),
                tensor(&extra["moving_variance_updated"]),
            )
        } else {
            (
                tensor(&inputs["moving_mean"]),
                tensor(&inputs["moving_variance"]),
            )
        };
        compare(
            name,
            "moving_mean'",
            &g.variable_value(&mm).unwrap(),
            &mm_want,
        );
        compare(
            name,
            "moving_variance'",
            &g.variable_value(&mv).unwrap(),
            &mv_want,
        );
    }
}

#[test]
fn dropout_matches_tensorflow() {
    let cases = load("dropout");
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let attrs = &case["attrs"];
        let g = Graph::new();
        let xv = tensor(&case["inputs"]["x"]);
        let x = g.placeholder(xv.shape());
        let y = ad::dropout(
            &x,
            attrs["rate"].as_f64().unwrap() as f32,
            attrs["is_training"].as_bool().unwrap(),
        )
        .unwrap();
        let mut rt = RunTime::new();
        rt.backward(
            &y,
            &ad::feed! { x => xv }.unwrap(),
            Some(tensor(&case["upstream"])),
        )
        .unwrap();
        compare(
            name,
            "output",
            rt.value(&y).unwrap(),
            &tensor(&case["output"]),
        );
        compare(
            name,
            "x",
            rt.grad(&x).unwrap(),
            &tensor(&case["grads"]["x"]),
        );
    }
}
