//! The op functions: each takes engine node handles and attributes, builds one
//! node (in its inputs' graph) and returns its handle. The Python package
//! checks argument types and the original's rules before calling them; the
//! engine checks shapes and reports them.

use adgraph::ops::activation::{LeakyRelu, Relu};
use adgraph::BackwardContext;
use adgraph::{Axes, BatchNormActivation, BatchNormConfig, Padding, SplitSizes};
use adgraph::{ForwardContext, GradientContext, Node, Op, Result, Tensor, TensorShape};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::graph::{nodes_of, NativeNode};
use crate::local::{check_not_running, guarded};

/// Builds a node with `build` after checking that the inputs' graph may grow now.
fn build(
    inputs: &[&NativeNode],
    build: impl FnOnce(&[&Node]) -> Result<Node>,
) -> PyResult<NativeNode> {
    for n in inputs {
        check_not_running(n.graph_id, "add a node")?;
    }
    let nodes: Vec<&Node> = inputs.iter().map(|n| n.get()).collect::<PyResult<_>>()?;
    guarded(|| build(&nodes)).map(NativeNode::new)
}

/// As [`build`], for ops on a list of nodes.
fn build_list(
    inputs: &[Bound<'_, NativeNode>],
    build: impl FnOnce(&[&Node]) -> Result<Node>,
) -> PyResult<NativeNode> {
    for n in inputs {
        check_not_running(n.get().graph_id, "add a node")?;
    }
    let nodes = nodes_of(inputs)?;
    let refs: Vec<&Node> = nodes.iter().collect();
    guarded(|| build(&refs)).map(NativeNode::new)
}

fn padding(p: &str) -> PyResult<Padding> {
    match p {
        "SAME" => Ok(Padding::Same),
        "VALID" => Ok(Padding::Valid),
        _ => Err(PyValueError::new_err(format!(
            "padding must be 'SAME' or 'VALID', got {p:?}"
        ))),
    }
}

/// An engine op under another type name (the original's `ReLU` and
/// `LeakyReLU` where the engine says `Relu` and `LeakyRelu`), so that node
/// names follow the original's: `ReLU`, `ReLU_0`, ...
struct Named<T: Op> {
    name: &'static str,
    op: T,
}

impl<T: Op> Op for Named<T> {
    fn type_name(&self) -> &'static str {
        self.name
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.op.infer_shape(inputs)
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.op.forward(inputs, ctx)
    }
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        self.op.gradient(ctx)
    }
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        self.op.backward(grad, ctx)
    }
}

/// A one-input op by name.
#[pyfunction]
pub fn unary(op: &str, x: &NativeNode) -> PyResult<NativeNode> {
    let f: fn(&Node) -> Result<Node> = match op {
        "relu" => |x| {
            x.graph().add_op(
                Named {
                    name: "ReLU",
                    op: Relu,
                },
                &[x],
            )
        },
        "sigmoid" => adgraph::sigmoid,
        "tanh" => adgraph::tanh,
        "exp" => adgraph::exp,
        "log" => adgraph::log,
        "sqrt" => adgraph::sqrt,
        "square" => adgraph::square,
        "abs" => adgraph::abs,
        "sin" => adgraph::sin,
        "cos" => adgraph::cos,
        "erf" => adgraph::erf,
        "log1p" => adgraph::log1p,
        "rsqrt" => adgraph::rsqrt,
        "softplus" => adgraph::softplus,
        "silu" => adgraph::silu,
        "negate" => adgraph::negate,
        "stop_gradient" => adgraph::stop_gradient,
        "softmax" => adgraph::softmax,
        "ones_like" => adgraph::ones_like,
        "zeros_like" => adgraph::zeros_like,
        _ => return Err(PyValueError::new_err(format!("unknown unary op {op:?}"))),
    };
    build(&[x], |n| f(n[0]))
}

/// A two-input op by name.
#[pyfunction]
pub fn binary(op: &str, x: &NativeNode, y: &NativeNode) -> PyResult<NativeNode> {
    let f: fn(&Node, &Node) -> Result<Node> = match op {
        "add" => adgraph::add,
        "subtract" => adgraph::subtract,
        "multiply" => adgraph::multiply,
        "divide" => adgraph::divide,
        "maximum" => adgraph::maximum,
        "minimum" => adgraph::minimum,
        "greater" => adgraph::greater,
        "less" => adgraph::less,
        "equal" => adgraph::equal,
        "greater_equal" => adgraph::greater_equal,
        "less_equal" => adgraph::less_equal,
        "softmax_cross_entropy_loss" => adgraph::softmax_cross_entropy_loss,
        "sigmoid_cross_entropy_loss" => adgraph::sigmoid_cross_entropy_loss,
        "sparse_softmax_cross_entropy_loss" => adgraph::sparse_softmax_cross_entropy_loss,
        "embedding_lookup" => adgraph::embedding_lookup,
        _ => return Err(PyValueError::new_err(format!("unknown binary op {op:?}"))),
    };
    build(&[x, y], |n| f(n[0], n[1]))
}

/// A one-input op with one float attribute, by name.
#[pyfunction]
pub fn unary_attr(op: &str, x: &NativeNode, a: f32) -> PyResult<NativeNode> {
    match op {
        "leaky_relu" => build(&[x], |n| {
            n[0].graph().add_op(
                Named {
                    name: "LeakyReLU",
                    op: LeakyRelu { alpha: a },
                },
                &[n[0]],
            )
        }),
        "elu" => build(&[x], |n| adgraph::elu(n[0], a)),
        "pow" => build(&[x], |n| adgraph::pow(n[0], a)),
        "l2norm" => build(&[x], |n| adgraph::l2norm(n[0], a)),
        _ => Err(PyValueError::new_err(format!("unknown op {op:?}"))),
    }
}

#[pyfunction]
pub fn gelu(x: &NativeNode, approximate: bool) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::gelu(n[0], approximate))
}

#[pyfunction]
pub fn clip_by_value(x: &NativeNode, lo: f32, hi: f32) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::clip_by_value(n[0], lo, hi))
}

#[pyfunction]
pub fn where_(c: &NativeNode, x: &NativeNode, y: &NativeNode) -> PyResult<NativeNode> {
    build(&[c, x, y], |n| adgraph::where_(n[0], n[1], n[2]))
}

#[pyfunction]
pub fn matmul(
    x: &NativeNode,
    y: &NativeNode,
    transpose_a: bool,
    transpose_b: bool,
) -> PyResult<NativeNode> {
    build(&[x, y], |n| {
        adgraph::matmul_transposed(n[0], n[1], transpose_a, transpose_b)
    })
}

#[pyfunction]
pub fn reshape(x: &NativeNode, shape: Vec<isize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::reshape(n[0], &shape))
}

#[pyfunction]
pub fn transpose(x: &NativeNode, perm: Vec<usize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::transpose(n[0], &perm))
}

/// `reduce_sum`, `reduce_mean`, `reduce_max`, `reduce_min` over `axes`
/// (`None`: all).
#[pyfunction]
pub fn reduce(
    op: &str,
    x: &NativeNode,
    axes: Option<Vec<usize>>,
    keep_dims: bool,
) -> PyResult<NativeNode> {
    let axes = match axes {
        None => Axes::All,
        Some(a) => Axes::List(a),
    };
    let f: fn(&Node, Axes, bool) -> Result<Node> = match op {
        "sum" => |x, a, k| adgraph::reduce_sum(x, a, k),
        "mean" => |x, a, k| adgraph::reduce_mean(x, a, k),
        "max" => |x, a, k| adgraph::reduce_max(x, a, k),
        "min" => |x, a, k| adgraph::reduce_min(x, a, k),
        _ => return Err(PyValueError::new_err(format!("unknown reduction {op:?}"))),
    };
    build(&[x], |n| f(n[0], axes, keep_dims))
}

#[pyfunction]
pub fn arg_reduce(op: &str, x: &NativeNode, axis: usize) -> PyResult<NativeNode> {
    match op {
        "argmax" => build(&[x], |n| adgraph::argmax(n[0], axis)),
        "argmin" => build(&[x], |n| adgraph::argmin(n[0], axis)),
        _ => Err(PyValueError::new_err(format!("unknown op {op:?}"))),
    }
}

#[pyfunction]
pub fn pad(x: &NativeNode, paddings: Vec<[usize; 2]>, constant_value: f32) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::pad(n[0], &paddings, constant_value))
}

#[pyfunction]
pub fn concat(xs: Vec<Bound<'_, NativeNode>>, axis: usize) -> PyResult<NativeNode> {
    build_list(&xs, |n| adgraph::concat(n, axis))
}

#[pyfunction]
pub fn stack(xs: Vec<Bound<'_, NativeNode>>, axis: usize) -> PyResult<NativeNode> {
    build_list(&xs, |n| adgraph::stack(n, axis))
}

#[pyfunction]
pub fn add_n(xs: Vec<Bound<'_, NativeNode>>) -> PyResult<NativeNode> {
    build_list(&xs, adgraph::add_n)
}

#[pyfunction]
pub fn slice(x: &NativeNode, begin: Vec<usize>, sizes: Vec<isize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::slice(n[0], &begin, &sizes))
}

/// Ops with several outputs: `unstack` and `split` (`sizes` or `num`).
#[pyfunction]
#[pyo3(signature = (op, x, axis, sizes = None, num = None))]
pub fn multi(
    op: &str,
    x: &NativeNode,
    axis: usize,
    sizes: Option<Vec<isize>>,
    num: Option<usize>,
) -> PyResult<Vec<NativeNode>> {
    check_not_running(x.graph_id, "add a node")?;
    let node = x.get()?;
    let out = match (op, sizes, num) {
        ("unstack", _, _) => guarded(|| adgraph::unstack(node, axis))?,
        ("split", Some(s), _) => guarded(|| adgraph::split(node, SplitSizes::Sizes(s), axis))?,
        ("split", None, Some(k)) => guarded(|| adgraph::split(node, SplitSizes::Num(k), axis))?,
        _ => return Err(PyValueError::new_err(format!("bad multi-output op {op:?}"))),
    };
    Ok(out.into_iter().map(NativeNode::new).collect())
}

#[pyfunction]
pub fn tile(x: &NativeNode, multiples: Vec<usize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::tile(n[0], &multiples))
}

#[pyfunction]
pub fn expand_dims(x: &NativeNode, axis: usize) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::expand_dims(n[0], axis))
}

#[pyfunction]
pub fn squeeze(x: &NativeNode, axes: Vec<usize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::squeeze(n[0], &axes))
}

#[pyfunction]
pub fn broadcast_to(x: &NativeNode, shape: Vec<usize>) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::broadcast_to(n[0], &shape))
}

#[pyfunction]
pub fn cumsum(x: &NativeNode, axis: usize, exclusive: bool, reverse: bool) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::cumsum(n[0], axis, exclusive, reverse))
}

#[pyfunction]
pub fn softmax_axis(op: &str, x: &NativeNode, axis: usize) -> PyResult<NativeNode> {
    match op {
        "softmax" => build(&[x], |n| adgraph::softmax_axis(n[0], axis)),
        "log_softmax" => build(&[x], |n| adgraph::log_softmax(n[0], axis)),
        _ => Err(PyValueError::new_err(format!("unknown op {op:?}"))),
    }
}

#[pyfunction]
pub fn gather(params: &NativeNode, indices: &NativeNode, axis: usize) -> PyResult<NativeNode> {
    build(&[params, indices], |n| adgraph::gather(n[0], n[1], axis))
}

#[pyfunction]
pub fn one_hot(
    indices: &NativeNode,
    depth: usize,
    on_value: f32,
    off_value: f32,
) -> PyResult<NativeNode> {
    build(&[indices], |n| {
        adgraph::one_hot(n[0], depth, on_value, off_value)
    })
}

#[pyfunction]
pub fn dropout(x: &NativeNode, rate: f32, is_training: bool) -> PyResult<NativeNode> {
    build(&[x], |n| adgraph::dropout(n[0], rate, is_training))
}

/// `fused_batch_norm`; `activation` is `"none"`, `"relu"` or `"leaky_relu"`
/// (with `alpha`): the activation applied in the same node.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn fused_batch_norm(
    x: &NativeNode,
    scale: &NativeNode,
    offset: &NativeNode,
    moving_mean: &NativeNode,
    moving_variance: &NativeNode,
    epsilon: f32,
    decay: f32,
    is_training: bool,
    activation: &str,
    alpha: f32,
) -> PyResult<NativeNode> {
    let activation = match activation {
        "none" => BatchNormActivation::Identity,
        "relu" => BatchNormActivation::Relu,
        "leaky_relu" => BatchNormActivation::LeakyRelu(alpha),
        other => {
            return Err(PyValueError::new_err(format!(
                "activation must be None, 'relu' or 'leaky_relu', got {other:?}"
            )))
        }
    };
    let config = BatchNormConfig {
        epsilon,
        decay,
        is_training,
        activation,
    };
    build(&[x, scale, offset, moving_mean, moving_variance], |n| {
        adgraph::fused_batch_norm(n[0], n[1], n[2], n[3], n[4], config)
    })
}

#[pyfunction]
pub fn layer_norm(
    x: &NativeNode,
    gamma: &NativeNode,
    beta: &NativeNode,
    begin_norm_axis: usize,
    epsilon: f32,
) -> PyResult<NativeNode> {
    build(&[x, gamma, beta], |n| {
        adgraph::layer_norm(n[0], n[1], n[2], begin_norm_axis, epsilon)
    })
}

/// `conv2d` and `conv2d_transpose`.
#[pyfunction]
pub fn conv(
    op: &str,
    x: &NativeNode,
    kernel: &NativeNode,
    strides: [usize; 2],
    pad: &str,
) -> PyResult<NativeNode> {
    let p = padding(pad)?;
    match op {
        "conv2d" => build(&[x, kernel], |n| adgraph::conv2d(n[0], n[1], strides, p)),
        "conv2d_transpose" => build(&[x, kernel], |n| {
            adgraph::conv2d_transpose(n[0], n[1], strides, p)
        }),
        _ => Err(PyValueError::new_err(format!("unknown op {op:?}"))),
    }
}

/// `maxpool2d` and `avgpool2d`.
#[pyfunction]
pub fn pool(
    op: &str,
    x: &NativeNode,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    pad: &str,
) -> PyResult<NativeNode> {
    let p = padding(pad)?;
    match op {
        "max" => build(&[x], |n| adgraph::maxpool2d(n[0], kernel_size, strides, p)),
        "avg" => build(&[x], |n| adgraph::avgpool2d(n[0], kernel_size, strides, p)),
        _ => Err(PyValueError::new_err(format!("unknown pooling {op:?}"))),
    }
}

/// The gradients of the sum of `ys` (weighted by `grad_ys`) w.r.t. `xs`, as
/// nodes; `None` where `xs[i]` does not affect `ys`.
#[pyfunction]
#[pyo3(signature = (ys, xs, grad_ys = None))]
pub fn gradients(
    ys: Vec<Bound<'_, NativeNode>>,
    xs: Vec<Bound<'_, NativeNode>>,
    grad_ys: Option<Vec<Bound<'_, NativeNode>>>,
) -> PyResult<Vec<Option<NativeNode>>> {
    for n in ys.iter().chain(&xs) {
        check_not_running(n.get().graph_id, "build gradients")?;
    }
    let ys = nodes_of(&ys)?;
    let xs = nodes_of(&xs)?;
    let grad_ys = grad_ys.as_deref().map(nodes_of).transpose()?;
    let y_refs: Vec<&Node> = ys.iter().collect();
    let x_refs: Vec<&Node> = xs.iter().collect();
    let g_refs: Option<Vec<&Node>> = grad_ys.as_ref().map(|g| g.iter().collect());
    let out = guarded(|| adgraph::gradients(&y_refs, &x_refs, g_refs.as_deref()))?;
    Ok(out.into_iter().map(|o| o.map(NativeNode::new)).collect())
}

/// Hessian-vector products: for each `xs[i]`, `d(sum_j grad_j . vs[j]) / d xs[i]`.
#[pyfunction]
pub fn hessian_vector_product(
    loss: &NativeNode,
    xs: Vec<Bound<'_, NativeNode>>,
    vs: Vec<Bound<'_, NativeNode>>,
) -> PyResult<Vec<Option<NativeNode>>> {
    check_not_running(loss.graph_id, "build gradients")?;
    let loss = loss.get()?;
    let xs = nodes_of(&xs)?;
    let vs = nodes_of(&vs)?;
    let x_refs: Vec<&Node> = xs.iter().collect();
    let v_refs: Vec<&Node> = vs.iter().collect();
    let out = guarded(|| adgraph::hessian_vector_product(loss, &x_refs, &v_refs))?;
    Ok(out.into_iter().map(|o| o.map(NativeNode::new)).collect())
}

/// The Jacobian of `y` w.r.t. `x`: shape `y.shape + x.shape`.
#[pyfunction]
pub fn jacobian(y: &NativeNode, x: &NativeNode) -> PyResult<NativeNode> {
    build(&[y, x], |n| adgraph::jacobian(n[0], n[1]))
}

/// Builds rayon's pool with the calling thread as one of its workers.
#[pyfunction]
#[pyo3(signature = (num_threads = None))]
pub fn init_thread_pool(num_threads: Option<usize>) -> PyResult<usize> {
    guarded(|| adgraph::init_thread_pool(num_threads))
}

/// Keeps freed memory in the process for the next step (glibc only).
#[pyfunction]
pub fn retain_freed_memory() -> bool {
    adgraph::retain_freed_memory()
}
