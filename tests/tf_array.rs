//! The array, reduction and matmul ops against TensorFlow's vectors in
//! `$ADGRAPH_REFERENCE_DIR` (default `/work/shared/reference`; see its README).
//! Skipped, with a message, where that directory does not exist.

use std::path::PathBuf;

use ad::{Axes, Feed, Graph, Node, Result, RunTime, Tensor};
use adgraph as ad;
use serde_json::Value;

fn reference_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("ADGRAPH_REFERENCE_DIR").unwrap_or_else(|_| "/work/shared/reference".into()),
    );
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("reference directory {} not found: skipped", dir.display());
        None
    }
}

fn tensor_of(v: &Value) -> Tensor {
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
    Tensor::from_shape_vec(shape, data).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as usize)
        .collect()
}

fn isizes(v: &Value) -> Vec<isize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as isize)
        .collect()
}

fn axes_of(v: &Value) -> Axes {
    match v {
        Value::Null => Axes::All,
        Value::Array(_) => Axes::List(usizes(v)),
        n => Axes::from(n.as_f64().unwrap() as usize),
    }
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

/// Runs every case of `<op>.json`; `make` builds the op from the inputs (in the
/// order of `names`) and the attrs. Returns the number of cases run.
fn run_file(op: &str, make: impl Fn(&[Node], &Value) -> Result<Node>) -> usize {
    let Some(dir) = reference_dir() else {
        return 0;
    };
    let text = std::fs::read_to_string(dir.join(format!("{op}.json"))).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let cases = file["cases"].as_array().unwrap();
    for case in cases {
        let name = format!("{op}/{}", case["name"].as_str().unwrap());
        let inputs = case["inputs"].as_object().unwrap();
        let mut names: Vec<&String> = inputs.keys().collect();
        // x, y or x0, x1, ..., x10 in numeric order.
        names.sort_by_key(|n| (n.len(), (*n).clone()));
        let g = Graph::new();
        let mut feed = Feed::new();
        let mut nodes = Vec::new();
        for n in &names {
            let value = tensor_of(&inputs[n.as_str()]);
            let node = g.placeholder(value.shape());
            feed.insert(&node, value).unwrap();
            nodes.push(node);
        }
        let out = make(&nodes, &case["attrs"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut rt = RunTime::new();
        let value = rt
            .forward(&out, &feed)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .clone();
        assert_close(
            &format!("{name} output"),
            &value,
            &tensor_of(&case["output"]),
        );
        rt.backward(&out, &feed, Some(tensor_of(&case["upstream"])))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (n, node) in names.iter().zip(&nodes) {
            let want = tensor_of(&case["grads"][n.as_str()]);
            let got = match rt.grad(node) {
                Ok(g) => g.clone(),
                Err(e) => panic!("{name}: grad {n}: {e}"),
            };
            assert_close(&format!("{name} grad {n}"), &got, &want);
        }
    }
    cases.len()
}

#[test]
fn reshape_matches_tf() {
    let n = run_file("reshape", |x, a| ad::reshape(&x[0], &isizes(&a["shape"])));
    assert!(n == 0 || n == 33);
}

#[test]
fn pad_matches_tf() {
    let n = run_file("pad", |x, a| {
        let paddings: Vec<[usize; 2]> = a["paddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = usizes(p);
                [p[0], p[1]]
            })
            .collect();
        ad::pad(
            &x[0],
            &paddings,
            a["constant_value"].as_f64().unwrap() as f32,
        )
    });
    assert!(n == 0 || n == 24);
}

#[test]
fn concat_matches_tf() {
    let n = run_file("concat", |x, a| {
        assert_eq!(x.len(), a["num_inputs"].as_u64().unwrap() as usize);
        let refs: Vec<&Node> = x.iter().collect();
        ad::concat(&refs, a["axis"].as_u64().unwrap() as usize)
    });
    assert!(n == 0 || n == 13);
}

#[test]
fn slice_matches_tf() {
    let n = run_file("slice", |x, a| {
        ad::slice(&x[0], &usizes(&a["begin"]), &isizes(&a["sizes"]))
    });
    assert!(n == 0 || n == 11);
}

#[test]
fn reduce_sum_matches_tf() {
    let n = run_file("reduce_sum", |x, a| {
        ad::reduce_sum(&x[0], axes_of(&a["axis"]), false)
    });
    assert!(n == 0 || n == 34);
}

#[test]
fn reduce_mean_matches_tf() {
    let n = run_file("reduce_mean", |x, a| {
        ad::reduce_mean(&x[0], axes_of(&a["axis"]), false)
    });
    assert!(n == 0 || n == 34);
}

#[test]
fn matmul_matches_tf() {
    let n = run_file("matmul", |x, _| ad::matmul(&x[0], &x[1]));
    assert!(n == 0 || n == 27);
}
