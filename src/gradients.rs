//! Gradients as graph nodes: [`gradients()`] (TensorFlow 1's `tf.gradients`),
//! [`hessian_vector_product`] and [`jacobian`].
//!
//! Reverse-mode differentiation here *builds* nodes instead of computing
//! numbers: walking the graph from the targets back in reverse topological
//! order (node ids ascend topologically, so a descending loop, no recursion),
//! each op that lies between the targets and the nodes asked about adds its
//! input gradients as nodes through [`Op::gradient`], and
//! the contributions reaching a node from several consumers are summed by one
//! `AddN` node. The result is ordinary nodes of the same graph: they run in a
//! [`RunTime`](crate::RunTime) like any other, feed other ops, and can be
//! differentiated again, to any order.
//!
//! [`RunTime::backward`](crate::RunTime::backward) (the original framework's
//! `node.backward`) and the optimizers run on the same gradient graphs: one per
//! target and set of stopped nodes, built on first use and kept by the graph
//! (a `BackwardPlan`); its upstream gradient is a placeholder fed on each call.
//!
//! ```
//! use adgraph as ad;
//! let g = ad::Graph::new();
//! let x = g.placeholder(ad::shape![]);
//! let y = ad::multiply(&x, &ad::multiply(&x, &x).unwrap()).unwrap(); // x^3
//! let dy = ad::gradients(&[&y], &[&x], None).unwrap()[0].clone().unwrap(); // 3x^2
//! let d2y = ad::gradients(&[&dy], &[&x], None).unwrap()[0].clone().unwrap(); // 6x
//! let feed = ad::feed! { x => 2.0 }.unwrap();
//! let mut rt = ad::RunTime::new();
//! assert_eq!(rt.infer(&[&dy, &d2y], &feed).unwrap(), [ad::tensor(12.0), ad::tensor(12.0)]);
//! ```

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::error::{Error, InputDesc, Phase, Result};
use crate::graph::{Graph, GraphInner, Node, NodeId, NodeKind};
use crate::op::{BackwardContext, ForwardContext, GradientContext, Op};
use crate::ops::arithmetic::add_n;
use crate::ops::fill::ones_like;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The name scope gradient nodes are built in (`gradients/MatMul_3`, ...).
pub const GRADIENT_SCOPE: &str = "gradients";

/// The symbolic gradients of `sum_i sum(grad_ys[i] * ys[i])` with respect to
/// each of `xs`, as nodes of the graph: TensorFlow 1's `tf.gradients`.
///
/// `grad_ys` weighs each target (default: all ones, i.e. the gradient of the
/// sum of each target's elements); each must have its target's shape. The
/// gradient of each `x` has `x`'s shape. It is `None` when no target depends on
/// `x` through a differentiable path (as in TensorFlow): `x` is not an
/// ancestor of any target, or every path passes through
/// [`stop_gradient`](crate::stop_gradient), a constant, or an op that gives no
/// gradient to that input (integer indices, comparisons). Use
/// [`zeros_like`](crate::zeros_like) where a zero is wanted instead.
///
/// The nodes are named in the `gradients/` scope and marked
/// ([`Node::is_gradient`]); every call builds new ones.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// let w = g.placeholder([3]);
/// let y = ad::reduce_sum(&ad::multiply(&ad::exp(&x).unwrap(), &w).unwrap(), ad::Axes::All, false).unwrap();
/// let grads = ad::gradients(&[&y], &[&x, &w], None).unwrap();
/// let feed = ad::feed! { x => [0.0, 0.0, 0.0], w => [1.0, 2.0, 3.0] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// let dx = rt.forward(grads[0].as_ref().unwrap(), &feed).unwrap();
/// assert_eq!(dx, &ad::tensor([1.0, 2.0, 3.0])); // w * e^x
/// let unrelated = g.placeholder([2]);
/// assert!(ad::gradients(&[&y], &[&unrelated], None).unwrap()[0].is_none());
/// ```
///
/// # Errors
/// [`Error::GraphMismatch`] when the nodes are not all of one graph;
/// [`Error::InvalidArgument`] for an empty `ys` or a `grad_ys` of the wrong
/// length; [`Error::ShapeMismatch`] for a `grad_ys[i]` whose static shape does
/// not fit `ys[i]`; [`Error::Node`] when an op's gradient cannot be built.
pub fn gradients(
    ys: &[&Node],
    xs: &[&Node],
    grad_ys: Option<&[&Node]>,
) -> Result<Vec<Option<Node>>> {
    let first = ys
        .first()
        .ok_or_else(|| Error::invalid("gradients: ys is empty"))?;
    let graph = first.graph().clone();
    for n in ys.iter().chain(xs).chain(grad_ys.unwrap_or(&[])) {
        graph.check_same(n, "gradients")?;
        (*n).clone().check()?;
    }
    let seeds: Vec<(NodeId, Node)> = match grad_ys {
        Some(gys) => {
            if gys.len() != ys.len() {
                return Err(Error::invalid(format!(
                    "gradients: {} grad_ys for {} ys",
                    gys.len(),
                    ys.len()
                )));
            }
            ys.iter()
                .zip(gys)
                .map(|(y, gy)| {
                    if !y.shape().is_compatible(&gy.shape()) {
                        return Err(Error::ShapeMismatch {
                            what: format!("gradients: grad_ys for {} ({})", y.name(), gy.name()),
                            expected: y.shape(),
                            got: gy.shape(),
                        });
                    }
                    Ok((y.id(), (*gy).clone()))
                })
                .collect::<Result<_>>()?
        }
        None => ys
            .iter()
            .map(|y| {
                let ones = graph.name_scope(GRADIENT_SCOPE, || {
                    graph.building_gradient_of(y.id(), || ones_like(y))
                })?;
                Ok((y.id(), ones))
            })
            .collect::<Result<_>>()?,
    };
    let wanted: Vec<NodeId> = xs.iter().map(|x| x.id()).collect();
    let found = build(&graph, &seeds, Some(&wanted), &HashSet::new())?;
    Ok(xs.iter().map(|x| found.get(&x.id()).cloned()).collect())
}

/// The Hessian of `loss` (a scalar, or the sum of its elements) with respect to
/// `xs` jointly, times the vectors `vs` (one per `x`, each of its `x`'s shape):
/// block `k` is `sum_j (d²loss / dx_k dx_j) · v_j`, as nodes. Computed by
/// differentiating twice ("double backward"): `g = d loss/dx`, then
/// `d (sum_k <g_k, v_k>) / dx`. `None` for an `x` that the gradient does not
/// depend on (a loss linear in `x`, for instance).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let v = g.placeholder([2]);
/// // loss = sum(x^3): Hessian diag(6x)
/// let loss = ad::reduce_sum(&ad::pow(&x, 3.0).unwrap(), ad::Axes::All, false).unwrap();
/// let hv = ad::hessian_vector_product(&loss, &[&x], &[&v]).unwrap()[0].clone().unwrap();
/// let feed = ad::feed! { x => [1.0, 2.0], v => [1.0, 1.0] }.unwrap();
/// let out = ad::RunTime::new().forward(&hv, &feed).unwrap().clone();
/// assert!((out[0] - 6.0).abs() < 1e-5 && (out[1] - 12.0).abs() < 1e-5);
/// ```
///
/// # Errors
/// As [`gradients()`]; [`Error::InvalidArgument`] when `vs` and `xs` differ in
/// length; [`Error::Node`] when a `v` does not fit its `x`.
pub fn hessian_vector_product(
    loss: &Node,
    xs: &[&Node],
    vs: &[&Node],
) -> Result<Vec<Option<Node>>> {
    if xs.len() != vs.len() {
        return Err(Error::invalid(format!(
            "hessian_vector_product: {} vectors for {} nodes",
            vs.len(),
            xs.len()
        )));
    }
    let grads = gradients(&[loss], xs, None)?;
    let graph = loss.graph().clone();
    let mut terms = Vec::new();
    graph.name_scope(GRADIENT_SCOPE, || -> Result<()> {
        for (g, v) in grads.iter().zip(vs) {
            if let Some(g) = g {
                let product = crate::multiply(g, v)?;
                terms.push(crate::reduce_sum(&product, crate::Axes::All, false)?);
            }
        }
        Ok(())
    })?;
    if terms.is_empty() {
        return Ok(vec![None; xs.len()]);
    }
    let refs: Vec<&Node> = terms.iter().collect();
    let total = graph.name_scope(GRADIENT_SCOPE, || add_n(&refs))?;
    gradients(&[&total], xs, None)
}

/// The Jacobian of `y` with respect to `x`, as one node of shape
/// `y.shape + x.shape`: element `[i.., j..]` is `d y[i..] / d x[j..]`. Built
/// from one gradient per element of `y` (so meant for a small `y`); both
/// static shapes must be fully known. Where `y` does not depend on `x` the
/// Jacobian is zeros.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let w = g.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).unwrap();
/// let y = ad::reshape(&ad::matmul(&w, &ad::reshape(&x, &[2, 1]).unwrap()).unwrap(), &[3]).unwrap();
/// let j = ad::jacobian(&y, &x).unwrap(); // = w
/// assert_eq!(j.shape(), ad::shape![3, 2]);
/// let feed = ad::feed! { x => [0.5, -1.0] }.unwrap();
/// let out = ad::RunTime::new().forward(&j, &feed).unwrap().clone();
/// assert_eq!(out, ad::tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]));
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when a static shape is not fully known; as
/// [`gradients()`].
pub fn jacobian(y: &Node, x: &Node) -> Result<Node> {
    let known = |n: &Node| {
        n.shape().to_vec().ok_or_else(|| {
            Error::invalid(format!(
                "jacobian needs fully known static shapes, but {} has shape {}",
                n.name(),
                n.shape()
            ))
        })
    };
    let (y_shape, x_shape) = (known(y)?, known(x)?);
    let m: usize = y_shape.iter().product();
    let x_len: usize = x_shape.iter().product();
    let graph = y.graph().clone();
    let mut rows = Vec::with_capacity(m);
    for i in 0..m {
        let mut onehot = vec![0.0f32; m];
        onehot[i] = 1.0;
        let seed =
            graph.name_scope(GRADIENT_SCOPE, || graph.constant((onehot, y_shape.clone())))?;
        let grad = gradients(&[y], &[x], Some(&[&seed]))?.remove(0);
        let row = graph.name_scope(GRADIENT_SCOPE, || match grad {
            Some(g) => crate::reshape(&g, &[1, x_len as isize]),
            None => graph.constant((vec![0.0f32; x_len], [1, x_len])),
        })?;
        rows.push(row);
    }
    let mut shape: Vec<isize> = y_shape.iter().map(|&d| d as isize).collect();
    shape.extend(x_shape.iter().map(|&d| d as isize));
    graph.name_scope(GRADIENT_SCOPE, || {
        let stacked = if rows.is_empty() {
            graph.constant((Vec::<f32>::new(), [0, x_len]))?
        } else {
            let refs: Vec<&Node> = rows.iter().collect();
            crate::concat(&refs, 0)?
        };
        crate::reshape(&stacked, &shape)
    })
}

/// The gradient graph of one target, as [`RunTime::backward`](crate::RunTime::backward)
/// runs it: built once per target and set of stopped nodes, kept by the graph.
pub(crate) struct BackwardPlan {
    /// The placeholder fed with the upstream gradient (dL/d target).
    pub(crate) upstream: Node,
    /// Every node that takes a gradient, with the node holding it.
    pub(crate) grads: Vec<(NodeId, NodeId)>,
}

/// What a backward plan is keyed by: the target, the stopped nodes (sorted,
/// only those at or below the target), and the nodes whose gradients are
/// wanted (sorted; `None`: every node that takes one).
pub(crate) type PlanKey = (NodeId, Vec<NodeId>, Option<Vec<NodeId>>);

/// The backward plan of `target` with gradients stopped at `stopped`, giving
/// the gradients of `wanted` (of every node that takes one when `None`), from
/// the graph's cache or built now.
pub(crate) fn backward_plan(
    target: &Node,
    stopped: &HashSet<NodeId>,
    wanted: Option<&[NodeId]>,
) -> Result<Rc<BackwardPlan>> {
    let graph = target.graph().clone();
    let mut key_stopped: Vec<NodeId> = stopped
        .iter()
        .copied()
        .filter(|s| s.index() <= target.id().index())
        .collect();
    key_stopped.sort_unstable();
    let key_wanted = wanted.map(|w| {
        let mut w = w.to_vec();
        w.sort_unstable();
        w.dedup();
        w
    });
    let key = (target.id(), key_stopped, key_wanted);
    if let Some(plan) = graph.borrow().backward_plans.get(&key) {
        return Ok(plan.clone());
    }
    let upstream = graph.name_scope(GRADIENT_SCOPE, || {
        graph.building_gradient_of(target.id(), || graph.placeholder(target.shape()))
    });
    let found = build(
        &graph,
        &[(target.id(), upstream.clone())],
        key.2.as_deref(),
        stopped,
    )?;
    let mut grads: Vec<(NodeId, NodeId)> = found.into_iter().map(|(i, n)| (i, n.id())).collect();
    grads.sort_unstable();
    let plan = Rc::new(BackwardPlan { upstream, grads });
    graph
        .inner
        .borrow_mut()
        .backward_plans
        .insert(key, plan.clone());
    Ok(plan)
}

/// Builds the gradient nodes of the targets `seeds` (each with the node
/// holding its upstream gradient), with respect to `xs` (or to every
/// placeholder and variable when `None`), skipping `stopped` nodes. Returns
/// the gradient node of every node that takes one (`xs` only, when given).
fn build(
    graph: &Graph,
    seeds: &[(NodeId, Node)],
    xs: Option<&[NodeId]>,
    stopped: &HashSet<NodeId>,
) -> Result<HashMap<NodeId, Node>> {
    let n = seeds.iter().map(|(y, _)| y.index() + 1).max().unwrap_or(0);
    let differentiable = differentiable_nodes(&graph.borrow(), seeds, xs, stopped, n);
    let is_x = |i: usize| xs.is_none_or(|xs| xs.iter().any(|x| x.index() == i));

    // Contributions waiting for each node, indexed by node id.
    let mut pending: Vec<Vec<Node>> = vec![Vec::new(); n];
    for (y, gy) in seeds {
        if differentiable[y.index()] {
            pending[y.index()].push(gy.clone());
        }
    }
    let mut found = HashMap::new();
    graph.name_scope(GRADIENT_SCOPE, || -> Result<()> {
        for i in (0..n).rev() {
            if !differentiable[i] {
                continue;
            }
            let contributions = std::mem::take(&mut pending[i]);
            if contributions.is_empty() {
                continue;
            }
            let id = NodeId(i as u32);
            let total = graph.building_gradient_of(id, || sum_of(contributions))?;
            if is_x(i) {
                found.insert(id, total.clone());
            }
            let (op, inputs) = {
                let g = graph.borrow();
                let data = &g.nodes[i];
                match &data.kind {
                    NodeKind::Op(op) => (op.clone(), data.inputs.clone()),
                    _ => continue,
                }
            };
            let needs: Vec<bool> = inputs.iter().map(|j| differentiable[j.index()]).collect();
            if !needs.iter().any(|&b| b) {
                continue;
            }
            let node = graph.handle(id);
            let ctx = GradientContext {
                op: &op,
                node: &node,
                inputs: inputs.iter().map(|&j| graph.handle(j)).collect(),
                grad: total,
                needs_grad: needs.clone(),
            };
            let input_grads = graph
                .building_gradient_of(id, || op.gradient(&ctx))
                .map_err(|e| gradient_error(graph, id, e))?;
            if input_grads.len() != inputs.len() {
                return Err(gradient_error(
                    graph,
                    id,
                    Error::invalid(format!(
                        "gradient returned {} gradients for {} inputs",
                        input_grads.len(),
                        inputs.len()
                    )),
                ));
            }
            for (k, grad) in input_grads.into_iter().enumerate() {
                let Some(grad) = grad else { continue };
                if !needs[k] {
                    continue;
                }
                let input = &ctx.inputs[k];
                if grad.graph() != graph || !grad.shape().is_compatible(&input.shape()) {
                    return Err(gradient_error(
                        graph,
                        id,
                        Error::ShapeMismatch {
                            what: format!(
                                "gradient {} for input {k} ({})",
                                grad.name(),
                                input.name()
                            ),
                            expected: input.shape(),
                            got: grad.shape(),
                        },
                    ));
                }
                pending[inputs[k].index()].push(grad);
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// Which nodes below `n` take a gradient: ancestors of a seed, not stopped,
/// and (when `xs` is given) one of `xs` or an op with such an input; otherwise
/// placeholders, variables, and ops with such an input.
fn differentiable_nodes(
    g: &GraphInner,
    seeds: &[(NodeId, Node)],
    xs: Option<&[NodeId]>,
    stopped: &HashSet<NodeId>,
    n: usize,
) -> Vec<bool> {
    let mut reached = vec![false; n];
    let mut stack: Vec<NodeId> = Vec::new();
    for (y, _) in seeds {
        if !reached[y.index()] {
            reached[y.index()] = true;
            stack.push(*y);
        }
    }
    while let Some(id) = stack.pop() {
        for &input in &g.nodes[id.index()].inputs {
            if !reached[input.index()] {
                reached[input.index()] = true;
                stack.push(input);
            }
        }
    }
    let mut wanted = vec![false; n];
    if let Some(xs) = xs {
        for x in xs.iter().filter(|x| x.index() < n) {
            wanted[x.index()] = true;
        }
    }
    let mut differentiable = vec![false; n];
    for i in 0..n {
        if !reached[i] || stopped.contains(&NodeId(i as u32)) {
            continue;
        }
        let data = &g.nodes[i];
        differentiable[i] = wanted[i]
            || match data.kind {
                NodeKind::Placeholder | NodeKind::Variable(_) => xs.is_none(),
                NodeKind::Constant(_) | NodeKind::Failed(_) => false,
                NodeKind::Op(_) => data.inputs.iter().any(|j| differentiable[j.index()]),
            };
    }
    differentiable
}

/// One node for the sum of a node's gradient contributions.
fn sum_of(mut contributions: Vec<Node>) -> Result<Node> {
    if contributions.len() == 1 {
        return Ok(contributions.remove(0));
    }
    let refs: Vec<&Node> = contributions.iter().collect();
    add_n(&refs)
}

fn gradient_error(graph: &Graph, id: NodeId, e: Error) -> Error {
    let g = graph.borrow();
    let data = &g.nodes[id.index()];
    Error::Node {
        node: data.name.clone(),
        op: data.type_name.to_string(),
        phase: Phase::Backward,
        inputs: data
            .inputs
            .iter()
            .map(|j| InputDesc {
                name: g.nodes[j.index()].name.clone(),
                shape: g.nodes[j.index()].shape.clone(),
            })
            .collect(),
        source: Box::new(e),
    }
}

/// The gradient node of an op that gives only a numeric [`Op::backward`]:
/// inputs are the forward node's inputs, the forward node, and the upstream
/// gradient; the value is the gradient of forward input `input`.
pub(crate) struct NumericGradient {
    pub(crate) op: Rc<dyn Op>,
    pub(crate) input: usize,
    pub(crate) shape: TensorShape,
}

impl Op for NumericGradient {
    fn type_name(&self) -> &'static str {
        "NumericGradient"
    }
    fn infer_shape(&self, _inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(self.shape.clone())
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let n = inputs.len() - 2;
        let bctx = BackwardContext {
            inputs: inputs[..n].to_vec(),
            output: inputs[n],
            saved: ctx.input_saved_any(n),
            needs_grad: (0..n).map(|k| k == self.input).collect(),
        };
        let mut grads = self.op.backward(inputs[n + 1], &bctx)?;
        if grads.len() != n {
            return Err(Error::invalid(format!(
                "{}'s backward returned {} gradients for {n} inputs",
                self.op.type_name(),
                grads.len()
            )));
        }
        // No gradient from backward: the input does not affect the output.
        let grad = grads
            .swap_remove(self.input)
            .unwrap_or_else(|| Tensor::zeros(inputs[self.input].shape()));
        if grad.shape() != inputs[self.input].shape() {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "{}'s gradient for input {}",
                    self.op.type_name(),
                    self.input
                ),
                expected: TensorShape::known(inputs[self.input].shape()),
                got: TensorShape::known(grad.shape()),
            });
        }
        Ok(grad)
    }
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Err(Error::invalid(format!(
            "op {} gives only a numeric backward (Op::backward), so its gradient cannot be \
             differentiated again: implement Op::gradient to build it from ops for second derivatives",
            self.op.type_name()
        )))
    }
}

/// The identity, as the stand-in for an input in
/// [`GradientContext::gradient_of_composition`]: differentiating w.r.t. it
/// gives the partial derivative along that input alone.
pub(crate) struct StandIn;

impl Op for StandIn {
    fn type_name(&self) -> &'static str {
        "StandIn"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(inputs[0].clone())
    }
    // d x/dx = 1
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(ctx.grad().clone())])
    }
}
