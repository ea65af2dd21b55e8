//! Checks every op against TensorFlow's forward values and gradients in
//! `../shared/reference/` (format and tolerance: that folder's README).
//!
//! The folder comes from `ADGRAPH_REFERENCE_DIR` (default `../shared/reference`
//! beside the crate). When the variable is set, a missing folder or file fails the
//! test. Ops this crate does not have are reported as skipped, by name. The last
//! line is `reference: N passed, M failed, K skipped`, counting cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adgraph as ad;
use adgraph::ops::conv::Padding;
use adgraph::ops::norm::BatchNormConfig;
use adgraph::ops::reduce::Axes;
use adgraph::optim::{Adam, GradientDescent, Optimizer, RmsProp};
use adgraph::{Feed, Graph, Node, RunTime, Tensor};
use serde_json::Value;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// The ops adgraph builds from a reference case (see [`build`]); any other
/// reference file, or composite graph using another op, is skipped by name.
const SUPPORTED_OPS: &[&str] = &[
    "add",
    "subtract",
    "multiply",
    "exp",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "matmul",
    "batch_matmul",
    "reshape",
    "reduce_sum",
    "reduce_mean",
    "pad",
    "concat",
    "slice",
    "l2norm",
    "softmax_cross_entropy_loss",
    "sigmoid_cross_entropy_loss",
    "conv2d",
    "conv2d_transpose",
    "maxpool2d",
    "avgpool2d",
    "fused_batch_norm",
    "dropout",
];

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

fn isizes(v: &Value) -> Result<Vec<isize>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected a list, got {v}"))?
        .iter()
        .map(|x| {
            x.as_i64()
                .map(|x| x as isize)
                .ok_or_else(|| format!("bad int {x}"))
        })
        .collect()
}

fn pair(v: &Value) -> Result<[usize; 2], String> {
    let p = usizes(v)?;
    p.try_into()
        .map_err(|_| format!("expected two ints, got {v}"))
}

fn f32_attr(attrs: &Value, key: &str) -> Result<f32, String> {
    attrs[key]
        .as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| format!("attribute {key} missing"))
}

fn padding(attrs: &Value) -> Result<Padding, String> {
    match attrs["padding"].as_str() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") => Ok(Padding::Valid),
        other => Err(format!("bad padding {other:?}")),
    }
}

/// Builds op `op` on `args` with `attrs`.
fn build(op: &str, args: &[Node], attrs: &Value) -> Result<Node, String> {
    let a = |i: usize| {
        args.get(i)
            .ok_or_else(|| format!("{op}: missing argument {i}"))
    };
    let r = match op {
        "add" => ad::add(a(0)?, a(1)?),
        "subtract" => ad::subtract(a(0)?, a(1)?),
        "multiply" => ad::multiply(a(0)?, a(1)?),
        "exp" => ad::exp(a(0)?),
        "sigmoid" => ad::sigmoid(a(0)?),
        "tanh" => ad::tanh(a(0)?),
        "relu" => ad::relu(a(0)?),
        "leaky_relu" => ad::leaky_relu(a(0)?, f32_attr(attrs, "alpha")?),
        "matmul" => ad::matmul(a(0)?, a(1)?),
        "batch_matmul" => ad::matmul_transposed(
            a(0)?,
            a(1)?,
            attrs["adj_x"].as_bool().ok_or("adj_x")?,
            attrs["adj_y"].as_bool().ok_or("adj_y")?,
        ),
        "reshape" => ad::reshape(a(0)?, &isizes(&attrs["shape"])?),
        "reduce_sum" | "reduce_mean" => {
            let axes = match &attrs["axis"] {
                Value::Null => Axes::All,
                Value::Number(n) => Axes::from(n.as_u64().ok_or("bad axis")? as usize),
                list => Axes::from(usizes(list)?),
            };
            if op == "reduce_sum" {
                ad::reduce_sum(a(0)?, axes, false)
            } else {
                ad::reduce_mean(a(0)?, axes, false)
            }
        }
        "pad" => {
            let paddings: Vec<[usize; 2]> = attrs["paddings"]
                .as_array()
                .ok_or("paddings")?
                .iter()
                .map(pair)
                .collect::<Result<_, _>>()?;
            ad::pad(a(0)?, &paddings, f32_attr(attrs, "constant_value")?)
        }
        "concat" => {
            let refs: Vec<&Node> = args.iter().collect();
            ad::concat(&refs, attrs["axis"].as_u64().ok_or("axis")? as usize)
        }
        "slice" => ad::slice(a(0)?, &usizes(&attrs["begin"])?, &isizes(&attrs["sizes"])?),
        "l2norm" => ad::l2norm(a(0)?, f32_attr(attrs, "scalar")?),
        "softmax_cross_entropy_loss" => ad::softmax_cross_entropy_loss(a(0)?, a(1)?),
        "sigmoid_cross_entropy_loss" => ad::sigmoid_cross_entropy_loss(a(0)?, a(1)?),
        "conv2d" => ad::conv2d(a(0)?, a(1)?, pair(&attrs["strides"])?, padding(attrs)?),
        "conv2d_transpose" => {
            ad::conv2d_transpose(a(0)?, a(1)?, pair(&attrs["strides"])?, padding(attrs)?)
        }
        "maxpool2d" => ad::maxpool2d(
            a(0)?,
            pair(&attrs["kernel_size"])?,
            pair(&attrs["strides"])?,
            padding(attrs)?,
        ),
        "avgpool2d" => ad::avgpool2d(
            a(0)?,
            pair(&attrs["kernel_size"])?,
            pair(&attrs["strides"])?,
            padding(attrs)?,
        ),
        "fused_batch_norm" => ad::fused_batch_norm(
            a(0)?,
            a(1)?,
            a(2)?,
            a(3)?,
            a(4)?,
            BatchNormConfig {
                epsilon: f32_attr(attrs, "epsilon")?,
                decay: f32_attr(attrs, "decay")?,
                is_training: attrs["is_training"].as_bool().ok_or("is_training")?,
                ..Default::default()
            },
        ),
        "dropout" => ad::dropout(
            a(0)?,
            f32_attr(attrs, "rate")?,
            attrs["is_training"].as_bool().ok_or("is_training")?,
        ),
        other => return Err(format!("unknown op {other}")),
    };
    r.map_err(|e| e.to_string())
}

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

/// Inputs that are batch-norm moving statistics become non-trainable variables;
/// every other input is a placeholder.
fn is_moving_stat(name: &str) -> bool {
    name == "moving_mean" || name == "moving_variance"
}

struct Built {
    graph: Graph,
    nodes: BTreeMap<String, Node>,
    feed: Feed,
}

fn make_inputs(inputs: &serde_json::Map<String, Value>) -> Result<Built, String> {
    let graph = Graph::new();
    let mut nodes = BTreeMap::new();
    let mut feed = Feed::new();
    for (name, v) in inputs {
        let t = tensor(v)?;
        let node = if is_moving_stat(name) {
            graph.variable_from(t, false).map_err(|e| e.to_string())?
        } else {
            let node = graph.placeholder(t.shape());
            feed.insert(&node, t).map_err(|e| e.to_string())?;
            node
        };
        nodes.insert(name.clone(), node);
    }
    Ok(Built { graph, nodes, feed })
}

/// Runs one single-op case: forward, backward with the case's upstream, and the
/// batch-norm moving statistics where present.
fn run_op_case(op: &str, case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let built = make_inputs(inputs)?;
    // Argument order: the file's key order (x, y / labels, logits / x0, x1, ...).
    let mut names: Vec<&String> = inputs.keys().collect();
    if op == "concat" {
        names.sort_by_key(|n| n[1..].parse::<usize>().unwrap_or(usize::MAX));
    }
    let args: Vec<Node> = names.iter().map(|n| built.nodes[*n].clone()).collect();
    let out = build(op, &args, &case["attrs"])?;
    let mut rt = RunTime::new();
    let value = rt.forward(&out, &built.feed).map_err(|e| e.to_string())?;
    compare("output", value, &tensor(&case["output"])?)?;
    rt.backward(&out, &built.feed, Some(tensor(&case["upstream"])?))
        .map_err(|e| e.to_string())?;
    // Batch norm in inference mode: the contract is forward only, but TF's
    // gradients (through the moving statistics) are given, and we match them.
    let grads = case["grads"]
        .as_object()
        .or_else(|| case["extra"]["tf_grads_inference"].as_object())
        .ok_or("grads")?;
    for (name, want) in grads {
        let got = rt
            .grad(&built.nodes[name])
            .map_err(|e| format!("grad {name}: {e}"))?;
        compare(&format!("grad {name}"), got, &tensor(want)?)?;
    }
    if op == "fused_batch_norm" && case["attrs"]["is_training"].as_bool() == Some(true) {
        for (var, key) in [
            ("moving_mean", "moving_mean_updated"),
            ("moving_variance", "moving_variance_updated"),
        ] {
            let got = built
                .graph
                .variable_value(&built.nodes[var])
                .map_err(|e| e.to_string())?;
            compare(key, &got, &tensor(&case["extra"][key])?)?;
        }
    }
    Ok(())
}

/// The ops of a composite graph that adgraph does not have.
fn unsupported_steps(case: &Value) -> Vec<String> {
    case["attrs"]["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["op"].as_str())
                .filter(|op| !SUPPORTED_OPS.contains(op))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one composite graph of `graphs.json`.
fn run_graph_case(case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let mut built = make_inputs(inputs)?;
    let attrs = &case["attrs"];
    for step in attrs["steps"].as_array().ok_or("steps")? {
        let op = step["op"].as_str().ok_or("op")?;
        let args: Vec<Node> = step["args"]
            .as_array()
            .ok_or("args")?
            .iter()
            .map(|a| {
                let name = a.as_str().ok_or("arg name")?;
                built
                    .nodes
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("unknown value {name}"))
            })
            .collect::<Result<_, String>>()?;
        let node = build(op, &args, &step["attrs"])?;
        built
            .nodes
            .insert(step["out"].as_str().ok_or("out")?.to_string(), node);
    }
    let loss = &built.nodes[attrs["loss"].as_str().ok_or("loss")?];
    let mut rt = RunTime::new();
    let value = rt.forward(loss, &built.feed).map_err(|e| e.to_string())?;
    compare("loss", value, &tensor(&case["output"])?)?;
    rt.backward(loss, &built.feed, None)
        .map_err(|e| e.to_string())?;
    for (name, want) in case["grads"].as_object().ok_or("grads")? {
        let got = rt
            .grad(&built.nodes[name])
            .map_err(|e| format!("grad {name}: {e}"))?;
        compare(&format!("grad {name}"), got, &tensor(want)?)?;
    }
    Ok(())
}

/// Runs one optimizer case: three steps on two variables with given gradients.
fn run_optimizer_case(case: &Value) -> Result<(), String> {
    let attrs = &case["attrs"];
    let inputs = &case["inputs"];
    let graph = Graph::new();
    let vars: Vec<Node> = ["var0", "var1"]
        .iter()
        .map(|v| {
            let t = tensor(&inputs[*v])?;
            graph.variable_from(t, true).map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    let alpha = f32_attr(attrs, "alpha")?;
    let mut optimizer: Box<dyn Optimizer> = match attrs["optimizer"].as_str() {
        Some("gradient_descent") => Box::new(GradientDescent::new(alpha)),
        Some("adam") => Box::new(
            Adam::new(alpha)
                .beta1(f32_attr(attrs, "beta1")?)
                .beta2(f32_attr(attrs, "beta2")?)
                .epsilon(f32_attr(attrs, "epsilon")?),
        ),
        Some("rmsprop") => Box::new(
            RmsProp::new(alpha)
                .rho(f32_attr(attrs, "rho")?)
                .momentum(f32_attr(attrs, "momentum")?)
                .epsilon(f32_attr(attrs, "epsilon")?),
        ),
        other => return Err(format!("unknown optimizer {other:?}")),
    };
    let steps = attrs["steps"].as_u64().ok_or("steps")?;
    for k in 1..=steps {
        let grads: Vec<(Node, Tensor)> = ["var0", "var1"]
            .iter()
            .zip(&vars)
            .map(|(name, var)| {
                Ok((
                    var.clone(),
                    tensor(&inputs[format!("grad_{name}_step{k}")])?,
                ))
            })
            .collect::<Result<_, String>>()?;
        optimizer
            .apply_gradients(&grads)
            .map_err(|e| e.to_string())?;
        for (name, var) in ["var0", "var1"].iter().zip(&vars) {
            let got = graph.variable_value(var).map_err(|e| e.to_string())?;
            let want = tensor(&case["outputs"][format!("{name}_step{k}")])?;
            compare(&format!("{name} after step {k}"), &got, &want)?;
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

/// The reference files in `dir`, sorted by name (op family = file stem).
fn families(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn main() -> ExitCode {
    let (dir, required) = reference_dir();
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let families = match families(&dir) {
        Ok(f) if !f.is_empty() => f,
        result => {
            let why = match result {
                Ok(_) => "holds no .json file".to_string(),
                Err(e) => e.to_string(),
            };
            if required {
                println!("reference: {}: {why}", dir.display());
                println!("reference: 0 passed, 1 failed, 0 skipped");
                return ExitCode::FAILURE;
            }
            println!(
                "reference: no vectors at {} ({why}); set ADGRAPH_REFERENCE_DIR to run them",
                dir.display()
            );
            println!("reference: 0 passed, 0 failed, 0 skipped");
            return ExitCode::SUCCESS;
        }
    };
    for family in &families {
        let path = dir.join(format!("{family}.json"));
        let doc: Value = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => {
                println!("{family:<28} cannot read {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let cases = doc["cases"].as_array().cloned().unwrap_or_default();
        let known = family == "graphs"
            || family == "optimizers"
            || SUPPORTED_OPS.contains(&family.as_str());
        if !known {
            println!(
                "{family:<28} {} skipped (adgraph has no op {family})",
                cases.len()
            );
            skipped += cases.len();
            continue;
        }
        let (mut ok, mut bad, mut skip) = (0, 0, 0);
        for case in &cases {
            let name = case["name"].as_str().unwrap_or("?");
            let result = match family.as_str() {
                "graphs" => {
                    let missing = unsupported_steps(case);
                    if !missing.is_empty() {
                        println!("  SKIP graphs/{name}: no op {}", missing.join(", "));
                        skip += 1;
                        continue;
                    }
                    run_graph_case(case)
                }
                "optimizers" => run_optimizer_case(case),
                op => run_op_case(op, case),
            };
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    bad += 1;
                    println!("  FAIL {family}/{name}: {e}");
                }
            }
        }
        println!("{family:<28} {ok} passed, {bad} failed, {skip} skipped");
        passed += ok;
        failed += bad;
        skipped += skip;
    }
    println!("reference: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
