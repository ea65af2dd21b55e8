//! The new element-wise ops (issue 15) against TensorFlow's vectors in
//! `../shared/reference/` (format and tolerance: that folder's README):
//! forward values and gradients of each single-op case, and the
//! Hessian-vector products of the `second_order.json` graphs made only of
//! element-wise ops.
//!
//! The folder comes from `ADGRAPH_REFERENCE_DIR` (default `../shared/reference`
//! beside the crate); without it the tests pass with a note, as
//! `tests/reference.rs` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adgraph as ad;
use adgraph::{
    Feed, ForwardContext, GradientContext, Graph, Node, Op, RunTime, Tensor, TensorShape,
};
use serde_json::Value;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// The single-op files this test covers.
const FAMILIES: &[&str] = &[
    "maximum",
    "minimum",
    "divide",
    "abs",
    "clip_by_value",
    "where",
    "greater",
    "less",
    "equal",
    "sin",
    "cos",
    "rsqrt",
    "log1p",
    "softplus",
    "elu",
    "gelu",
    "silu",
    "erf",
    "softmax",
    "log_softmax",
];

/// The `second_order.json` graphs built only of ops this test can build.
const SECOND_ORDER_CASES: &[&str] = &[
    "trig_exp_tanh",
    "log_sqrt_rsqrt_pow_square",
    "softplus_gelu_silu_erf_sigmoid",
    "elu_log1p_cos_abs",
    "broadcast_add_mul_sub_div",
    "softmax_log_softmax",
];

fn reference_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("ADGRAPH_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"),
    };
    if dir.join("maximum.json").is_file() {
        Some(dir)
    } else {
        assert!(
            std::env::var_os("ADGRAPH_REFERENCE_DIR").is_none(),
            "ADGRAPH_REFERENCE_DIR={} holds no maximum.json",
            dir.display()
        );
        println!("no reference vectors at {}: skipped", dir.display());
        None
    }
}

fn load(dir: &Path, family: &str) -> Value {
    let path = dir.join(format!("{family}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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

fn f32_attr(attrs: &Value, key: &str) -> Result<f32, String> {
    attrs[key]
        .as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| format!("attribute {key} missing"))
}

fn axis_attr(attrs: &Value) -> Result<usize, String> {
    attrs["axis"]
        .as_u64()
        .map(|a| a as usize)
        .ok_or_else(|| format!("bad axis {}", attrs["axis"]))
}

/// `scale * sum(x)` over every element: the loss of the `second_order`
/// graphs (`reduce_sum`/`reduce_mean` with axis null), with its gradient
/// written as nodes (`broadcast_like(scale * g, x)`), so that these graphs
/// are differentiated twice through the element-wise ops alone.
struct SumAll {
    scale: f32,
}

impl Op for SumAll {
    fn type_name(&self) -> &'static str {
        "SumAll"
    }
    fn infer_shape(&self, _inputs: &[&TensorShape]) -> ad::Result<TensorShape> {
        Ok(TensorShape::scalar())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> ad::Result<Tensor> {
        Ok(ad::tensor(inputs[0].sum() * self.scale))
    }
    fn gradient(&self, ctx: &GradientContext) -> ad::Result<Vec<Option<Node>>> {
        let g = (ctx.grad() * self.scale).check()?;
        Ok(vec![Some(ad::broadcast_like(&g, ctx.input(0))?)])
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
        "divide" => ad::divide(a(0)?, a(1)?),
        "exp" => ad::exp(a(0)?),
        "log" => ad::log(a(0)?),
        "sqrt" => ad::sqrt(a(0)?),
        "square" => ad::square(a(0)?),
        "pow" => ad::pow(a(0)?, f32_attr(attrs, "exponent")?),
        "sigmoid" => ad::sigmoid(a(0)?),
        "tanh" => ad::tanh(a(0)?),
        "maximum" => ad::maximum(a(0)?, a(1)?),
        "minimum" => ad::minimum(a(0)?, a(1)?),
        "abs" => ad::abs(a(0)?),
        "clip_by_value" => ad::clip_by_value(
            a(0)?,
            f32_attr(attrs, "clip_value_min")?,
            f32_attr(attrs, "clip_value_max")?,
        ),
        "where" => ad::where_(a(0)?, a(1)?, a(2)?),
        "greater" => ad::greater(a(0)?, a(1)?),
        "less" => ad::less(a(0)?, a(1)?),
        "equal" => ad::equal(a(0)?, a(1)?),
        "sin" => ad::sin(a(0)?),
        "cos" => ad::cos(a(0)?),
        "rsqrt" => ad::rsqrt(a(0)?),
        "log1p" => ad::log1p(a(0)?),
        "softplus" => ad::softplus(a(0)?),
        "elu" => ad::elu(a(0)?, f32_attr(attrs, "alpha")?),
        "gelu" => ad::gelu(a(0)?, attrs["approximate"].as_bool().ok_or("approximate")?),
        "silu" => ad::silu(a(0)?),
        "erf" => ad::erf(a(0)?),
        "softmax" => ad::softmax_axis(a(0)?, axis_attr(attrs)?),
        "log_softmax" => ad::log_softmax(a(0)?, axis_attr(attrs)?),
        "reduce_sum" | "reduce_mean" if attrs["axis"].is_null() => {
            let x = a(0)?;
            let n = x.shape().num_elements().ok_or("unknown size")?;
            let scale = if op == "reduce_sum" {
                1.0
            } else {
                1.0 / n as f32
            };
            x.graph().add_op(SumAll { scale }, &[x])
        }
        other => return Err(format!("no op {other} in this test")),
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

struct Built {
    graph: Graph,
    nodes: BTreeMap<String, Node>,
    feed: Feed,
}

/// A placeholder per input (conditions too: they are float tensors here).
fn make_inputs(inputs: &serde_json::Map<String, Value>) -> Result<Built, String> {
    let graph = Graph::new();
    let mut nodes = BTreeMap::new();
    let mut feed = Feed::new();
    for (name, v) in inputs {
        let t = tensor(v)?;
        let node = graph.placeholder(t.shape());
        feed.insert(&node, t).map_err(|e| e.to_string())?;
        nodes.insert(name.clone(), node);
    }
    Ok(Built { graph, nodes, feed })
}

/// One single-op case: forward, then (where the file has them) the
/// gradients for the case's upstream.
fn run_op_case(op: &str, case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let built = make_inputs(inputs)?;
    // Argument order: the file's key order (x, y / condition, x, y).
    let args: Vec<Node> = inputs.keys().map(|n| built.nodes[n].clone()).collect();
    let out = build(op, &args, &case["attrs"])?;
    let mut rt = RunTime::new();
    let value = rt.forward(&out, &built.feed).map_err(|e| e.to_string())?;
    compare("output", value, &tensor(&case["output"])?)?;
    let Some(grads) = case["grads"].as_object() else {
        // Forward-only ops (comparisons): no gradient reaches any input.
        let xs: Vec<&Node> = args.iter().collect();
        let found = ad::gradients(&[&out], &xs, None).map_err(|e| e.to_string())?;
        if found.iter().any(Option::is_some) {
            return Err(format!("{op} gives a gradient; TF gives none"));
        }
        return Ok(());
    };
    rt.backward(&out, &built.feed, Some(tensor(&case["upstream"])?))
        .map_err(|e| e.to_string())?;
    for (name, want) in grads {
        let got = rt
            .grad(&built.nodes[name])
            .map_err(|e| format!("grad {name}: {e}"))?;
        compare(&format!("grad {name}"), got, &tensor(want)?)?;
    }
    // The condition of `where` takes no gradient.
    if op == "where" {
        let c = &built.nodes["condition"];
        let found = ad::gradients(&[&out], &[c], None).map_err(|e| e.to_string())?;
        if found[0].is_some() {
            return Err("where gives the condition a gradient".into());
        }
    }
    Ok(())
}

/// One `second_order.json` graph: the loss, its gradients, and the
/// Hessian-vector products by double backward.
fn run_second_order_case(case: &Value) -> Result<(), String> {
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
    let loss = built.nodes[attrs["loss"].as_str().ok_or("loss")?].clone();
    let names: Vec<&str> = attrs["differentiable"]
        .as_array()
        .ok_or("differentiable")?
        .iter()
        .map(|v| v.as_str().ok_or("name"))
        .collect::<Result<_, _>>()?;
    let xs: Vec<&Node> = names.iter().map(|n| &built.nodes[*n]).collect();
    let grads = ad::gradients(&[&loss], &xs, None).map_err(|e| e.to_string())?;
    let mut terms = Vec::new();
    for (name, g) in names.iter().zip(&grads) {
        let g = g
            .as_ref()
            .ok_or_else(|| format!("no gradient for {name}"))?;
        let v = built
            .graph
            .constant(tensor(&case["directions"][*name])?)
            .map_err(|e| e.to_string())?;
        let product = ad::multiply(g, &v).map_err(|e| e.to_string())?;
        let sum = built
            .graph
            .add_op(SumAll { scale: 1.0 }, &[&product])
            .map_err(|e| e.to_string())?;
        terms.push(sum);
    }
    let refs: Vec<&Node> = terms.iter().collect();
    let s = ad::add_n(&refs).map_err(|e| e.to_string())?;
    let hvp = ad::gradients(&[&s], &xs, None).map_err(|e| e.to_string())?;
    let mut rt = RunTime::new();
    let value = rt.forward(&loss, &built.feed).map_err(|e| e.to_string())?;
    compare("loss", value, &tensor(&case["output"])?)?;
    for ((name, g), h) in names.iter().zip(&grads).zip(&hvp) {
        let g = g.as_ref().ok_or("gradient")?;
        let got = rt.forward(g, &built.feed).map_err(|e| e.to_string())?;
        compare(
            &format!("grad {name}"),
            got,
            &tensor(&case["grads"][*name])?,
        )?;
        let want = tensor(&case["hvp"][*name])?;
        let got = match h {
            Some(h) => rt
                .forward(h, &built.feed)
                .map_err(|e| e.to_string())?
                .clone(),
            None => Tensor::zeros(want.shape()),
        };
        compare(&format!("hvp {name}"), &got, &want)?;
    }
    Ok(())
}

#[test]
fn single_op_cases_match_tensorflow() {
    let Some(dir) = reference_dir() else { return };
    let mut failures = Vec::new();
    let mut passed = 0;
    for family in FAMILIES {
        let doc = load(&dir, family);
        let cases = doc["cases"].as_array().expect("cases");
        assert!(!cases.is_empty(), "{family}: no cases");
        for case in cases {
            let name = case["name"].as_str().unwrap_or("?");
            match run_op_case(family, case) {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{family}/{name}: {e}")),
            }
        }
    }
    println!("{passed} single-op cases passed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn second_order_graphs_of_elementwise_ops_match_tensorflow() {
    let Some(dir) = reference_dir() else { return };
    let doc = load(&dir, "second_order");
    let cases = doc["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for want in SECOND_ORDER_CASES {
        let case = cases
            .iter()
            .find(|c| c["name"].as_str() == Some(want))
            .unwrap_or_else(|| panic!("second_order.json has no case {want}"));
        if let Err(e) = run_second_order_case(case) {
            failures.push(format!("second_order/{want}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
