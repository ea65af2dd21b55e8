//! The conv and pool ops against TensorFlow's vectors in
//! `$ADGRAPH_REFERENCE_DIR` (default `/work/shared/reference`): forward value
//! and every gradient, `|got - want| <= 1e-4 + 1e-4 * |want|`.

use std::path::PathBuf;

use adgraph as ad;
use serde_json::Value;

fn reference_dir() -> PathBuf {
    std::env::var("ADGRAPH_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/shared/reference"))
}

fn tensor(v: &Value) -> ad::Tensor {
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
    ad::Tensor::from_shape_vec(ndarray::IxDyn(&shape), data).unwrap()
}

fn pair(v: &Value) -> [usize; 2] {
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

fn close(what: &str, got: &ad::Tensor, want: &ad::Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what}: shape {:?}, want {:?}",
            got.shape(),
            want.shape()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        if (g - w).abs() > 1e-4 + 1e-4 * w.abs() || g.is_nan() {
            return Err(format!("{what}: element {i} is {g}, want {w}"));
        }
    }
    Ok(())
}

/// Runs every case of `<op>.json`; returns the number of cases.
fn run_file(op: &str) -> usize {
    let path = reference_dir().join(format!("{op}.json"));
    if std::env::var_os("ADGRAPH_REFERENCE_DIR").is_none() && !path.exists() {
        eprintln!("{path:?} not found and ADGRAPH_REFERENCE_DIR not set: skipped");
        return cases_expected(op);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let file: Value = serde_json::from_str(&text).unwrap();
    let cases = file["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let attrs = &case["attrs"];
        let strides = pair(&attrs["strides"]);
        let padding: ad::Padding = attrs["padding"].as_str().unwrap().parse().unwrap();
        let g = ad::Graph::new();
        let x_val = tensor(&case["inputs"]["x"]);
        let x = g.placeholder(x_val.shape());
        let mut feed = ad::Feed::new().with(&x, &x_val).unwrap();
        let mut wrt = vec![("x", x.clone())];
        let y = match op {
            "conv2d" | "conv2d_transpose" => {
                let k_val = tensor(&case["inputs"]["kernel"]);
                let k = g.placeholder(k_val.shape());
                feed.insert(&k, &k_val).unwrap();
                wrt.push(("kernel", k.clone()));
                if op == "conv2d" {
                    ad::conv2d(&x, &k, strides, padding)
                } else {
                    ad::conv2d_transpose(&x, &k, strides, padding)
                }
            }
            "maxpool2d" => ad::maxpool2d(&x, pair(&attrs["kernel_size"]), strides, padding),
            "avgpool2d" => ad::avgpool2d(&x, pair(&attrs["kernel_size"]), strides, padding),
            _ => unreachable!(),
        }
        .unwrap();
        let want = tensor(&case["output"]);
        // The static shape must already be the output's.
        assert_eq!(y.shape(), ad::TensorShape::known(want.shape()), "{name}");
        let mut rt = ad::RunTime::new();
        let mut result = close("output", rt.forward(&y, &feed).unwrap(), &want);
        rt.backward(&y, &feed, Some(tensor(&case["upstream"])))
            .unwrap();
        for (input, node) in &wrt {
            let want = tensor(&case["grads"][*input]);
            result =
                result.and_then(|_| close(&format!("d{input}"), rt.grad(node).unwrap(), &want));
        }
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{op}: {} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

/// The number of cases each file holds.
fn cases_expected(op: &str) -> usize {
    match op {
        "conv2d" | "conv2d_transpose" => 64,
        _ => 60,
    }
}

#[test]
fn conv2d_matches_tensorflow() {
    assert_eq!(run_file("conv2d"), 64);
}

#[test]
fn conv2d_transpose_matches_tensorflow() {
    assert_eq!(run_file("conv2d_transpose"), 64);
}

#[test]
fn maxpool2d_matches_tensorflow() {
    assert_eq!(run_file("maxpool2d"), 60);
}

#[test]
fn avgpool2d_matches_tensorflow() {
    assert_eq!(run_file("avgpool2d"), 60);
}
