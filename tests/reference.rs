//! Checks every op against TensorFlow's forward values and gradients in
//! `../shared/reference/` (format and tolerance: that folder's README), and the
//! second derivatives of `second_order.json`: gradients built as graph nodes
//! ([`ad::gradients`]), Hessian-vector products
//! ([`ad::hessian_vector_product`]) and WGAN-GP gradient penalties
//! differentiated through the critic's gradient.
//!
//! The folder comes from `ADGRAPH_REFERENCE_DIR` (default `../shared/reference`
//! beside the crate). When the variable is set, a missing folder or file fails the
//! test. Ops this crate does not have are reported as skipped, by name. Integer
//! inputs (`int_inputs`: labels, conditions) are fed as the whole-number floats
//! they are stored as, and are checked to take no gradient, as is every input
//! of a forward-only op (the comparisons). The last line is
//! `reference: N passed, M failed, K skipped`, counting cases.

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
    "divide",
    "log",
    "sqrt",
    "square",
    "pow",
    "transpose",
    "softmax",
    "log_softmax",
    "maximum",
    "minimum",
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
    "sparse_softmax_cross_entropy_loss",
    "layer_norm",
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
    "cumsum",
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

fn usize_attr(attrs: &Value, key: &str) -> Result<usize, String> {
    attrs[key]
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| format!("attribute {key} missing or not a non-negative integer"))
}

fn padding(attrs: &Value) -> Result<Padding, String> {
    match attrs["padding"].as_str() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") => Ok(Padding::Valid),
        other => Err(format!("bad padding {other:?}")),
    }
}

fn bool_attr(attrs: &Value, key: &str) -> Result<bool, String> {
    attrs[key]
        .as_bool()
        .ok_or_else(|| format!("attribute {key} missing"))
}

/// The `axis` attribute of a reduction: none (all axes), one, or a list.
fn axes(attrs: &Value) -> Result<Axes, String> {
    Ok(match &attrs["axis"] {
        Value::Null => Axes::All,
        Value::Number(n) => Axes::from(n.as_u64().ok_or("bad axis")? as usize),
        list => Axes::from(usizes(list)?),
    })
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
        "divide" => ad::divide(a(0)?, a(1)?),
        "log" => ad::log(a(0)?),
        "sqrt" => ad::sqrt(a(0)?),
        "square" => ad::square(a(0)?),
        "pow" => ad::pow(a(0)?, f32_attr(attrs, "exponent")?),
        "transpose" => ad::transpose(a(0)?, &usizes(&attrs["perm"])?),
        "softmax" => ad::softmax_axis(a(0)?, usize_attr(attrs, "axis")?),
        "log_softmax" => ad::log_softmax(a(0)?, usize_attr(attrs, "axis")?),
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
        "sparse_softmax_cross_entropy_loss" => ad::sparse_softmax_cross_entropy_loss(a(0)?, a(1)?),
        "layer_norm" => ad::layer_norm(
            a(0)?,
            a(1)?,
            a(2)?,
            usize_attr(attrs, "begin_norm_axis")?,
            f32_attr(attrs, "epsilon")?,
        ),
        "batch_matmul" => ad::matmul_transposed(
            a(0)?,
            a(1)?,
            attrs["adj_x"].as_bool().ok_or("adj_x")?,
            attrs["adj_y"].as_bool().ok_or("adj_y")?,
        ),
        "reshape" => ad::reshape(a(0)?, &isizes(&attrs["shape"])?),
        // `keepdims` is absent (false) in the first batch's files.
        "reduce_sum" => ad::reduce_sum(a(0)?, axes(attrs)?, attrs["keepdims"] == true),
        "reduce_mean" => ad::reduce_mean(a(0)?, axes(attrs)?, attrs["keepdims"] == true),
        "reduce_max" => ad::reduce_max(a(0)?, axes(attrs)?, bool_attr(attrs, "keepdims")?),
        "reduce_min" => ad::reduce_min(a(0)?, axes(attrs)?, bool_attr(attrs, "keepdims")?),
        "argmax" => ad::argmax(a(0)?, usize_attr(attrs, "axis")?),
        "gather" => ad::gather(a(0)?, a(1)?, usize_attr(attrs, "axis")?),
        "one_hot" => ad::one_hot(
            a(0)?,
            usize_attr(attrs, "depth")?,
            f32_attr(attrs, "on_value")?,
            f32_attr(attrs, "off_value")?,
        ),
        "stack" => {
            let refs: Vec<&Node> = args.iter().collect();
            ad::stack(&refs, usize_attr(attrs, "axis")?)
        }
        "tile" => ad::tile(a(0)?, &usizes(&attrs["multiples"])?),
        "expand_dims" => ad::expand_dims(a(0)?, usize_attr(attrs, "axis")?),
        "squeeze" => ad::squeeze(a(0)?, &usizes(&attrs["axis"])?),
        "broadcast_to" => ad::broadcast_to(a(0)?, &usizes(&attrs["shape"])?),
        "cumsum" => ad::cumsum(
            a(0)?,
            usize_attr(attrs, "axis")?,
            bool_attr(attrs, "exclusive")?,
            bool_attr(attrs, "reverse")?,
        ),
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

/// The names a case lists in `int_inputs` (labels, indices, conditions:
/// whole-number floats, fed as they are; never differentiable).
fn int_inputs(case: &Value) -> Result<Vec<String>, String> {
    match &case["int_inputs"] {
        Value::Null => Ok(Vec::new()),
        list => list
            .as_array()
            .ok_or("int_inputs is not a list")?
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("bad name {n}"))
            })
            .collect(),
    }
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
    // Argument order: the file's key order (x, y / labels, logits), numbered
    // for concat and stack (x0, x1, ..., x10).
    let mut names: Vec<&String> = inputs.keys().collect();
    if op == "concat" || op == "stack" {
        names.sort_by_key(|n| n[1..].parse::<usize>().unwrap_or(usize::MAX));
    }
    let args: Vec<Node> = names.iter().map(|n| built.nodes[*n].clone()).collect();
    let out = build(op, &args, &case["attrs"])?;
    let mut rt = RunTime::new();
    let value = rt.forward(&out, &built.feed).map_err(|e| e.to_string())?;
    compare("output", value, &tensor(&case["output"])?)?;
    // Integer inputs (labels, conditions) take no gradient; neither does any
    // input of a forward-only op (comparisons: no `upstream`, no `grads`).
    let forward_only = case["upstream"].is_null();
    let no_grad: Vec<String> = if forward_only {
        names.iter().map(|n| n.to_string()).collect()
    } else {
        int_inputs(case)?
    };
    for name in &no_grad {
        let node = built
            .nodes
            .get(name)
            .ok_or_else(|| format!("no input {name}"))?;
        let found = ad::gradients(&[&out], &[node], None).map_err(|e| e.to_string())?;
        if found[0].is_some() {
            return Err(format!("{op} gives {name} a gradient; TF gives none"));
        }
    }
    if forward_only {
        return Ok(());
    }
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
    let mut missing: Vec<String> = Vec::new();
    for op in case["attrs"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["op"].as_str())
    {
        if !SUPPORTED_OPS.contains(&op) && !missing.iter().any(|m| m == op) {
            missing.push(op.to_string());
        }
    }
    missing
}

/// Applies the `steps` of a composite graph to `built`, naming each result
/// after its step's `out`.
fn build_steps(built: &mut Built, attrs: &Value) -> Result<(), String> {
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
    Ok(())
}

/// Runs one composite graph of `graphs.json`.
fn run_graph_case(case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let mut built = make_inputs(inputs)?;
    let attrs = &case["attrs"];
    build_steps(&mut built, attrs)?;
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

/// The names listed in `attrs[key]`.
fn names(attrs: &Value, key: &str) -> Result<Vec<String>, String> {
    attrs[key]
        .as_array()
        .ok_or_else(|| format!("attrs.{key} missing"))?
        .iter()
        .map(|n| {
            n.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("bad name in {key}"))
        })
        .collect()
}

/// The node called `name` among a case's inputs and steps.
fn named<'a>(built: &'a Built, name: &str) -> Result<&'a Node, String> {
    built
        .nodes
        .get(name)
        .ok_or_else(|| format!("no input or step named {name}"))
}

/// The value of a gradient node, or zeros shaped like `like` where
/// [`ad::gradients`] found no differentiable path (`None`): the derivative is 0.
fn value_or_zeros(
    rt: &mut RunTime,
    grad: &Option<Node>,
    like: &Node,
    feed: &Feed,
) -> Result<Tensor, String> {
    match grad {
        Some(g) => rt.forward(g, feed).cloned().map_err(|e| e.to_string()),
        None => {
            let shape = rt
                .forward(like, feed)
                .map_err(|e| e.to_string())?
                .shape()
                .to_vec();
            Ok(Tensor::zeros(shape))
        }
    }
}

/// Runs one case of `second_order.json`: a loss with its gradients and
/// Hessian-vector products, or (cases named `gp_*`) a gradient penalty.
fn run_second_order_case(case: &Value) -> Result<(), String> {
    let inputs = case["inputs"].as_object().ok_or("inputs")?;
    let mut built = make_inputs(inputs)?;
    let attrs = &case["attrs"];
    build_steps(&mut built, attrs)?;
    if case["name"].as_str().unwrap_or("").starts_with("gp_") {
        run_gradient_penalty_case(case, built)
    } else {
        run_hvp_case(case, built)
    }
}

/// The loss L, its gradients dL/dθ_k as graph nodes, and the Hessian-vector
/// products `sum_j d²L/dθ_k dθ_j · v_j` with the case's directions v fed as
/// placeholders.
fn run_hvp_case(case: &Value, built: Built) -> Result<(), String> {
    let attrs = &case["attrs"];
    let loss = named(&built, attrs["loss"].as_str().ok_or("attrs.loss missing")?)?;
    let wrt = names(attrs, "differentiable")?;
    let xs: Vec<&Node> = wrt
        .iter()
        .map(|n| named(&built, n))
        .collect::<Result<_, _>>()?;
    let mut feed = built.feed.clone();
    let mut directions = Vec::new();
    for name in &wrt {
        let v = tensor(&case["directions"][name.as_str()])
            .map_err(|e| format!("directions.{name}: {e}"))?;
        let node = built.graph.placeholder(v.shape());
        feed.insert(&node, v).map_err(|e| e.to_string())?;
        directions.push(node);
    }
    let vs: Vec<&Node> = directions.iter().collect();
    let grads = ad::gradients(&[loss], &xs, None).map_err(|e| format!("gradients: {e}"))?;
    let hvps = ad::hessian_vector_product(loss, &xs, &vs)
        .map_err(|e| format!("hessian_vector_product: {e}"))?;

    let mut rt = RunTime::new();
    let value = rt.forward(loss, &feed).map_err(|e| e.to_string())?;
    compare("loss", value, &tensor(&case["output"])?)?;
    for (k, name) in wrt.iter().enumerate() {
        let got = value_or_zeros(&mut rt, &grads[k], xs[k], &feed)
            .map_err(|e| format!("grad {name}: {e}"))?;
        compare(
            &format!("grad {name}"),
            &got,
            &tensor(&case["grads"][name.as_str()])?,
        )?;
    }
    for (k, name) in wrt.iter().enumerate() {
        let got = value_or_zeros(&mut rt, &hvps[k], xs[k], &feed)
            .map_err(|e| format!("hvp {name}: {e}"))?;
        compare(
            &format!("hvp {name}"),
            &got,
            &tensor(&case["hvp"][name.as_str()])?,
        )?;
    }
    Ok(())
}

/// The WGAN-GP penalty, built as the README says: S = reduce_sum(D),
/// G = dS/dx as graph nodes, n_i = sqrt(sum of G[i]^2 over all dims but the
/// first), P = lambda * mean_i (n_i - 1)^2; then P and dP/dθ for every weight
/// and x, with D, G and n checked first to locate an error.
fn run_gradient_penalty_case(case: &Value, built: Built) -> Result<(), String> {
    let attrs = &case["attrs"];
    let critic = named(
        &built,
        attrs["critic_output"].as_str().ok_or("critic_output")?,
    )?;
    let x = named(&built, attrs["penalty_wrt"].as_str().ok_or("penalty_wrt")?)?;
    let lambda = f32_attr(attrs, "lambda")?;
    let wrt = names(attrs, "differentiable")?;
    let xs: Vec<&Node> = wrt
        .iter()
        .map(|n| named(&built, n))
        .collect::<Result<_, _>>()?;
    let rank = x.shape().rank();

    let build_penalty = || -> ad::Result<(Node, Node, Node)> {
        let s = ad::reduce_sum(critic, Axes::All, false)?;
        let g = ad::gradients(&[&s], &[x], None)?[0]
            .clone()
            .ok_or_else(|| {
                ad::Error::invalid(format!(
                    "the critic {} does not depend on {}",
                    critic.name(),
                    x.name()
                ))
            })?;
        let squares = ad::reduce_sum(&ad::square(&g)?, (1..rank).collect::<Vec<_>>(), false)?;
        let norms = ad::sqrt(&squares)?;
        let one = built.graph.constant(1.0)?;
        let deviation = ad::square(&ad::subtract(&norms, &one)?)?;
        let mean = ad::reduce_mean(&deviation, Axes::All, false)?;
        let p = ad::multiply(&built.graph.constant(lambda)?, &mean)?;
        Ok((g, norms, p))
    };
    let (g, norms, p) = build_penalty().map_err(|e| format!("building the penalty: {e}"))?;
    let grads = ad::gradients(&[&p], &xs, None).map_err(|e| format!("gradients of P: {e}"))?;

    let mut rt = RunTime::new();
    let feed = &built.feed;
    let extra = &case["extra"];
    for (what, node, key) in [
        ("critic scores D", critic, "critic_scores"),
        ("critic gradient G", &g, "critic_grad_x"),
        ("per-example gradient norm", &norms, "per_example_grad_norm"),
    ] {
        let got = rt.forward(node, feed).map_err(|e| format!("{what}: {e}"))?;
        compare(what, got, &tensor(&extra[key])?)?;
    }
    let value = rt.forward(&p, feed).map_err(|e| e.to_string())?;
    compare("penalty P", value, &tensor(&case["output"])?)?;
    for (k, name) in wrt.iter().enumerate() {
        let got = value_or_zeros(&mut rt, &grads[k], xs[k], feed)
            .map_err(|e| format!("dP/d{name}: {e}"))?;
        compare(
            &format!("dP/d{name}"),
            &got,
            &tensor(&case["grads"][name.as_str()])?,
        )?;
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
                println!("{family:<34} cannot read {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let cases = doc["cases"].as_array().cloned().unwrap_or_default();
        let known = family == "graphs"
            || family == "second_order"
            || family == "optimizers"
            || SUPPORTED_OPS.contains(&family.as_str());
        if !known {
            println!(
                "{family:<34} {} skipped (adgraph has no op {family})",
                cases.len()
            );
            skipped += cases.len();
            continue;
        }
        let (mut ok, mut bad, mut skip) = (0, 0, 0);
        for case in &cases {
            let name = case["name"].as_str().unwrap_or("?");
            let result = match family.as_str() {
                "graphs" | "second_order" => {
                    let missing = unsupported_steps(case);
                    if !missing.is_empty() {
                        println!("  SKIP {family}/{name}: no op {}", missing.join(", "));
                        skip += 1;
                        continue;
                    }
                    if family == "graphs" {
                        run_graph_case(case)
                    } else {
                        run_second_order_case(case)
                    }
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
        println!("{family:<34} {ok} passed, {bad} failed, {skip} skipped");
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
