//! The array and index ops of the second reference batch (gather, one_hot,
//! reduce_max, reduce_min, argmax, stack, tile, expand_dims, squeeze,
//! broadcast_to, transpose, cumsum) against TensorFlow's forward values and
//! gradients in `../shared/reference/` (format and tolerance: that folder's
//! README). The JSON helpers are those of `tests/reference.rs`.
//!
//! The folder comes from `ADGRAPH_REFERENCE_DIR` (default `../shared/reference`
//! beside the crate); when it is absent and the variable is unset, the tests
//! pass without checking anything (and say so).

use std::path::{Path, PathBuf};

use adgraph as ad;
use adgraph::ops::reduce::Axes;
use adgraph::{Feed, Graph, Node, RunTime, Tensor};
use serde_json::Value;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn tensor(v: &Value) -> Result<Tensor, String> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .ok_or("tensor without shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad dim"))
        .collect::<Result<_, _>>()?;
    let data: Vec<f32> = v["data"]
        .as_array()
        .ok_or("tensor without data")?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32).ok_or("bad value"))
        .collect::<Result<_, _>>()?;
    Tensor::from_shape_vec(shape, data).map_err(|e| e.to_string())
}

fn usizes(v: &Value) -> Result<Vec<usize>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected a list, got {v}"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| format!("bad int {x}"))
        })
        .collect()
}

fn usize_attr(attrs: &Value, key: &str) -> Result<usize, String> {
    attrs[key]
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| format!("attribute {key} missing"))
}

fn f32_attr(attrs: &Value, key: &str) -> Result<f32, String> {
    attrs[key]
        .as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| format!("attribute {key} missing"))
}

fn bool_attr(attrs: &Value, key: &str) -> Result<bool, String> {
    attrs[key]
        .as_bool()
        .ok_or_else(|| format!("attribute {key} missing"))
}

fn axes(attrs: &Value) -> Result<Axes, String> {
    Ok(match &attrs["axis"] {
        Value::Null => Axes::All,
        Value::Number(n) => Axes::from(n.as_u64().ok_or("bad axis")? as usize),
        list => Axes::from(usizes(list)?),
    })
}

/// Builds op `op` on `args` with `attrs` (the names and attrs of the README).
fn build(op: &str, args: &[Node], attrs: &Value) -> Result<Node, String> {
    let a = |i: usize| {
        args.get(i)
            .ok_or_else(|| format!("{op}: missing argument {i}"))
    };
    let r = match op {
        "gather" => ad::gather(a(0)?, a(1)?, usize_attr(attrs, "axis")?),
        "one_hot" => ad::one_hot(
            a(0)?,
            usize_attr(attrs, "depth")?,
            f32_attr(attrs, "on_value")?,
            f32_attr(attrs, "off_value")?,
        ),
        "reduce_max" => ad::reduce_max(a(0)?, axes(attrs)?, bool_attr(attrs, "keepdims")?),
        "reduce_min" => ad::reduce_min(a(0)?, axes(attrs)?, bool_attr(attrs, "keepdims")?),
        "argmax" => ad::argmax(a(0)?, usize_attr(attrs, "axis")?),
        "stack" => {
            let refs: Vec<&Node> = args.iter().collect();
            ad::stack(&refs, usize_attr(attrs, "axis")?)
        }
        "tile" => ad::tile(a(0)?, &usizes(&attrs["multiples"])?),
        "expand_dims" => ad::expand_dims(a(0)?, usize_attr(attrs, "axis")?),
        "squeeze" => ad::squeeze(a(0)?, &usizes(&attrs["axis"])?),
        "broadcast_to" => ad::broadcast_to(a(0)?, &usizes(&attrs["shape"])?),
        "transpose" => ad::transpose(a(0)?, &usizes(&attrs["perm"])?),
        "cumsum" => ad::cumsum(
            a(0)?,
            usize_attr(attrs, "axis")?,
            bool_attr(attrs, "exclusive")?,
            bool_attr(attrs, "reverse")?,
        ),
        // Ops of other families, for the composite graphs of second_order.json.
        "add" => ad::add(a(0)?, a(1)?),
        "subtract" => ad::subtract(a(0)?, a(1)?),
        "multiply" => ad::multiply(a(0)?, a(1)?),
        "exp" => ad::exp(a(0)?),
        "log" => ad::log(a(0)?),
        "square" => ad::square(a(0)?),
        "tanh" => ad::tanh(a(0)?),
        "matmul" => ad::matmul(a(0)?, a(1)?),
        "reduce_sum" => ad::reduce_sum(a(0)?, axes(attrs)?, attrs["keepdims"] == true),
        "reduce_mean" => ad::reduce_mean(a(0)?, axes(attrs)?, attrs["keepdims"] == true),
        "reshape" => {
            let shape: Vec<isize> = attrs["shape"]
                .as_array()
                .ok_or("shape")?
                .iter()
                .map(|d| d.as_i64().map(|d| d as isize).ok_or("bad dim"))
                .collect::<Result<_, _>>()?;
            ad::reshape(a(0)?, &shape)
        }
        "concat" => {
            let refs: Vec<&Node> = args.iter().collect();
            ad::concat(&refs, usize_attr(attrs, "axis")?)
        }
        "slice" => {
            let sizes: Vec<isize> = attrs["sizes"]
                .as_array()
                .ok_or("sizes")?
                .iter()
                .map(|d| d.as_i64().map(|d| d as isize).ok_or("bad size"))
                .collect::<Result<_, _>>()?;
            ad::slice(a(0)?, &usizes(&attrs["begin"])?, &sizes)
        }
        "pad" => {
            let paddings: Vec<[usize; 2]> = attrs["paddings"]
                .as_array()
                .ok_or("paddings")?
                .iter()
                .map(|p| {
                    let p = usizes(p)?;
                    p.try_into().map_err(|_| "bad padding".to_string())
                })
                .collect::<Result<_, String>>()?;
            ad::pad(a(0)?, &paddings, f32_attr(attrs, "constant_value")?)
        }
        other => return Err(format!("unknown op {other}")),
    };
    r.map_err(|e| e.to_string())
}

/// The ops [`build`] knows, for skipping composite graphs that use others.
const BUILT: &[&str] = &[
    "gather",
    "one_hot",
    "reduce_max",
    "reduce_min",
    "argmax",
    "stack",
    "tile",
    "expand_dims",
    "squeeze",
    "broadcast_to",
    "transpose",
    "cumsum",
    "add",
    "subtract",
    "multiply",
    "exp",
    "log",
    "square",
    "tanh",
    "matmul",
    "reduce_sum",
    "reduce_mean",
    "reshape",
    "concat",
    "slice",
    "pad",
];

/// Compares `got` with `want` element-wise within the README's tolerance.
fn compare(what: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what}: shape {:?}, want {:?}",
            got.shape(),
            want.shape()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let within = (g - w).abs() <= ATOL + RTOL * w.abs();
        if !within {
            return Err(format!("{what}: element {i} is {g}, want {w}"));
        }
    }
    Ok(())
}

/// Runs one case: forward, and backward with the case's upstream where the
/// op has gradients; integer inputs must get no gradient.
fn run_case(op: &str, case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let graph = Graph::new();
    let mut feed = Feed::new();
    let mut names: Vec<&String> = inputs.keys().collect();
    if op == "stack" {
        names.sort_by_key(|n| n[1..].parse::<usize>().unwrap_or(usize::MAX));
    }
    let mut nodes = Vec::new();
    for name in &names {
        let t = tensor(&inputs[name.as_str()])?;
        let node = graph.placeholder(t.shape());
        feed.insert(&node, t).map_err(|e| e.to_string())?;
        nodes.push(node);
    }
    let out = build(op, &nodes, &case["attrs"])?;
    let mut rt = RunTime::new();
    let value = rt.forward(&out, &feed).map_err(|e| e.to_string())?;
    compare("output", value, &tensor(&case["output"])?)?;
    let int_inputs: Vec<&str> = case["int_inputs"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(grads) = case["grads"].as_object() else {
        // Forward only: no gradient reaches any input.
        let refs: Vec<&Node> = nodes.iter().collect();
        let found = ad::gradients(&[&out], &refs, None).map_err(|e| e.to_string())?;
        if found.iter().any(Option::is_some) {
            return Err("a forward-only op gave a gradient".into());
        }
        return Ok(());
    };
    rt.backward(&out, &feed, Some(tensor(&case["upstream"])?))
        .map_err(|e| e.to_string())?;
    for (name, node) in names.iter().zip(&nodes) {
        match grads.get(name.as_str()) {
            Some(want) => {
                let got = rt.grad(node).map_err(|e| format!("grad {name}: {e}"))?;
                compare(&format!("grad {name}"), got, &tensor(want)?)?;
            }
            None if int_inputs.contains(&name.as_str()) => {
                if rt.grad(node).is_ok() {
                    return Err(format!("integer input {name} got a gradient"));
                }
            }
            None => return Err(format!("no reference gradient for {name}")),
        }
    }
    Ok(())
}

fn reference_dir() -> (PathBuf, bool) {
    match std::env::var_os("ADGRAPH_REFERENCE_DIR") {
        Some(dir) => (PathBuf::from(dir), true),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"),
            false,
        ),
    }
}

/// Runs every case of `<family>.json`; panics listing the failures.
fn run_family(family: &str) {
    let (dir, required) = reference_dir();
    let path = dir.join(format!("{family}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required => {
            println!("{family}: no vectors at {} ({e}); skipped", path.display());
            return;
        }
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "{family}: no cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let name = case["name"].as_str().unwrap_or("?");
            run_case(family, case)
                .err()
                .map(|e| format!("{family}/{name}: {e}"))
        })
        .collect();
    println!(
        "{family}: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gather() {
    run_family("gather");
}

#[test]
fn one_hot() {
    run_family("one_hot");
}

#[test]
fn reduce_max() {
    run_family("reduce_max");
}

#[test]
fn reduce_min() {
    run_family("reduce_min");
}

#[test]
fn argmax() {
    run_family("argmax");
}

#[test]
fn stack() {
    run_family("stack");
}

#[test]
fn tile() {
    run_family("tile");
}

#[test]
fn expand_dims() {
    run_family("expand_dims");
}

#[test]
fn squeeze() {
    run_family("squeeze");
}

#[test]
fn broadcast_to() {
    run_family("broadcast_to");
}

#[test]
fn transpose() {
    run_family("transpose");
}

#[test]
fn cumsum() {
    run_family("cumsum");
}

/// Runs one Hessian-vector-product case of `second_order.json`: the loss, its
/// gradients, and `hvp[k] = d/dθ_k sum_j <dL/dθ_j, v_j>` built by
/// differentiating the gradient nodes.
fn run_second_order_case(case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let attrs = &case["attrs"];
    let graph = Graph::new();
    let mut feed = Feed::new();
    let mut nodes = std::collections::BTreeMap::new();
    for (name, v) in inputs {
        let t = tensor(v)?;
        let node = graph.placeholder(t.shape());
        feed.insert(&node, t).map_err(|e| e.to_string())?;
        nodes.insert(name.clone(), node);
    }
    for step in attrs["steps"].as_array().ok_or("steps")? {
        let args: Vec<Node> = step["args"]
            .as_array()
            .ok_or("args")?
            .iter()
            .map(|a| {
                let name = a.as_str().ok_or("arg name")?;
                nodes
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("unknown value {name}"))
            })
            .collect::<Result<_, String>>()?;
        let op = step["op"].as_str().ok_or("op")?;
        let node = build(op, &args, &step["attrs"])?;
        nodes.insert(step["out"].as_str().ok_or("out")?.to_string(), node);
    }
    let loss = nodes[attrs["loss"].as_str().ok_or("loss")?].clone();
    let wrt_names: Vec<&str> = attrs["differentiable"]
        .as_array()
        .ok_or("differentiable")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let wrt: Vec<&Node> = wrt_names.iter().map(|n| &nodes[*n]).collect();
    let grads = ad::gradients(&[&loss], &wrt, None).map_err(|e| e.to_string())?;
    let mut terms = Vec::new();
    for (name, g) in wrt_names.iter().zip(&grads) {
        let g = g
            .as_ref()
            .ok_or_else(|| format!("no gradient for {name}"))?;
        let v = graph
            .constant(tensor(&case["directions"][*name])?)
            .map_err(|e| e.to_string())?;
        let gv = ad::multiply(g, &v).map_err(|e| e.to_string())?;
        terms.push(ad::reduce_sum(&gv, Axes::All, false).map_err(|e| e.to_string())?);
    }
    let refs: Vec<&Node> = terms.iter().collect();
    let s = ad::add_n(&refs).map_err(|e| e.to_string())?;
    let hvp = ad::gradients(&[&s], &wrt, None).map_err(|e| e.to_string())?;
    let mut targets: Vec<&Node> = vec![&loss];
    targets.extend(grads.iter().flatten());
    let hvp_nodes: Vec<&Node> = hvp
        .iter()
        .zip(&wrt_names)
        .map(|(h, n)| h.as_ref().ok_or_else(|| format!("no hvp for {n}")))
        .collect::<Result<_, String>>()?;
    targets.extend(hvp_nodes);
    let values = RunTime::new()
        .infer(&targets, &feed)
        .map_err(|e| e.to_string())?;
    compare("loss", &values[0], &tensor(&case["output"])?)?;
    let k = wrt_names.len();
    for (i, name) in wrt_names.iter().enumerate() {
        compare(
            &format!("grad {name}"),
            &values[1 + i],
            &tensor(&case["grads"][*name])?,
        )?;
        compare(
            &format!("hvp {name}"),
            &values[1 + k + i],
            &tensor(&case["hvp"][*name])?,
        )?;
    }
    Ok(())
}

/// The cases of `second_order.json` built only of ops [`build`] knows (the
/// others need ops of other families and are left to `tests/reference.rs`).
#[test]
fn second_order() {
    let (dir, required) = reference_dir();
    let path = dir.join("second_order.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required => {
            println!(
                "second_order: no vectors at {} ({e}); skipped",
                path.display()
            );
            return;
        }
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (mut passed, mut skipped, mut failures) = (0, 0, Vec::new());
    for case in doc["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let steps = case["attrs"]["steps"].as_array().expect("steps");
        let ours = steps
            .iter()
            .all(|s| BUILT.contains(&s["op"].as_str().unwrap_or("")));
        if !ours || case["hvp"].is_null() {
            skipped += 1;
            continue;
        }
        match run_second_order_case(case) {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!("second_order/{name}: {e}")),
        }
    }
    println!(
        "second_order: {passed} passed, {} failed, {skipped} skipped (other families' ops)",
        failures.len()
    );
    assert!(passed >= 4, "expected the 4 array/index cases to run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
