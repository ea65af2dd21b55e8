//! The [`Op`] trait: what every node type that computes something implements.
//!
//! An op is a small struct holding its attributes (strides, axes, ...). It gives
//! three things, side by side: the static **shape rule**, the **forward**
//! computation, and the **gradient** rule (the vector-Jacobian product: given the
//! gradient of the loss w.r.t. the op's output, the gradient w.r.t. each input).
//! Built-in ops and users' ops are the same kind of thing; a user's op is added to
//! a graph with [`Graph::add_op`](crate::Graph::add_op) and behaves like a built-in.
//!
//! The gradient comes in one of two forms:
//!
//! - **Symbolic** ([`Op::gradient`]): the op builds its input gradients as nodes
//!   of the graph, from ops (`dy * y * (1 - y)` for a sigmoid). Every built-in op
//!   does this, so gradients are ordinary nodes that can be run, fed into other
//!   ops and differentiated again, to any order
//!   ([`gradients`](crate::gradients())).
//! - **Numeric** ([`Op::backward`]): the op computes its input gradients as
//!   tensors from the upstream gradient's value. Enough for training (first
//!   derivatives); the gradient node that wraps it has no gradient of its own,
//!   so asking for a second derivative through such an op is an error naming it.
//!
//! # Writing your own node type
//!
//! `softplus(x) = ln(1 + e^x)`, whose derivative is `sigmoid(x)`; here with a
//! numeric backward (see [`Op::gradient`] for the symbolic form):
//!
//! ```
//! use adgraph::{BackwardContext, Feed, ForwardContext, Op, Result, RunTime, Tensor, TensorShape};
//!
//! struct Softplus;
//!
//! impl Op for Softplus {
//!     fn type_name(&self) -> &'static str {
//!         "Softplus"
//!     }
//!     // Element-wise: the output has the input's shape.
//!     fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
//!         Ok(inputs[0].clone())
//!     }
//!     fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
//!         // max(x, 0) + ln(1 + e^-|x|) does not overflow for large x.
//!         Ok(inputs[0].mapv(|x| x.max(0.0) + (-x.abs()).exp().ln_1p()))
//!     }
//!     // d/dx softplus(x) = sigmoid(x)
//!     fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
//!         let sig = ctx.input(0).mapv(|x| 1.0 / (1.0 + (-x).exp()));
//!         Ok(vec![Some(grad * &sig)])
//!     }
//! }
//!
//! let graph = adgraph::Graph::new();
//! let x = graph.placeholder([3]);
//! let y = graph.add_op(Softplus, &[&x]).unwrap();
//! assert_eq!(y.name(), "Softplus");
//!
//! let mut rt = RunTime::new();
//! let feed = Feed::new().with(&x, [0.0f32, 1.0, -1.0]).unwrap();
//! let value = rt.forward(&y, &feed).unwrap();
//! assert!((value[0] - 2f32.ln()).abs() < 1e-6);
//! rt.backward(&y, &feed, None).unwrap();
//! assert!((rt.grad(&x).unwrap()[0] - 0.5).abs() < 1e-6);
//! ```

use std::any::Any;
use std::rc::Rc;

use rand::RngCore;

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// A node type: shape rule, forward and gradient.
///
/// Ops must be deterministic given their inputs and the context's random
/// generator, and must not touch the graph they belong to in `forward`.
///
/// `Any` (true of every `'static` type) lets the crate recognise its own
/// gradient ops in a graph (see [`add_n`](crate::add_n)).
pub trait Op: Any {
    /// The type name, used for node names (`Add`, `Add_0`, ...) and in errors.
    fn type_name(&self) -> &'static str;

    /// The static shape of the output, from the inputs' static shapes.
    ///
    /// Reject impossible inputs here: the graph turns the error into an
    /// [`Error::Node`] naming the node and its inputs.
    ///
    /// # Errors
    /// Any error describing why the inputs are not acceptable.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape>;

    /// Computes the output from the input values.
    ///
    /// Data needed again by [`backward`](Op::backward) (masks, arg-max indices,
    /// statistics) can be kept with [`ForwardContext::save`].
    ///
    /// # Errors
    /// Any error about the input values (e.g. run-time shapes that do not fit).
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor>;

    /// The symbolic gradient: builds, as nodes of the graph, dL/d input for each
    /// input in order from [`GradientContext::grad`] (the node holding dL/d
    /// output), `None` for an input that takes no gradient. Each returned node
    /// must have its input's shape.
    ///
    /// Build with the ordinary op functions ([`multiply`](crate::multiply),
    /// [`matmul`](crate::matmul), ...) on [`GradientContext::input`],
    /// [`GradientContext::output`] and [`GradientContext::grad`]; a gradient
    /// that needs a kernel of its own is an op of its own (with its own
    /// gradient, for higher orders). Inputs for which
    /// [`GradientContext::needs_grad`] is false may be skipped (`None`).
    ///
    /// The default wraps [`backward`](Op::backward): one node per input that
    /// calls it with the upstream gradient's value. Such a node has no gradient
    /// itself, so a second derivative through the op is an error naming it.
    ///
    /// ```
    /// use adgraph::{ForwardContext, GradientContext, Node, Op, Result, Tensor, TensorShape};
    ///
    /// /// `x^3`, with `d/dx = 3 x^2` written as nodes: differentiable again.
    /// struct Cube;
    ///
    /// impl Op for Cube {
    ///     fn type_name(&self) -> &'static str {
    ///         "Cube"
    ///     }
    ///     fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
    ///         Ok(inputs[0].clone())
    ///     }
    ///     fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
    ///         Ok(inputs[0].mapv(|x| x * x * x))
    ///     }
    ///     fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
    ///         let x = ctx.input(0);
    ///         let dx = adgraph::multiply(ctx.grad(), &(3.0 * &(x * x)))?;
    ///         Ok(vec![Some(dx)])
    ///     }
    /// }
    ///
    /// let g = adgraph::Graph::new();
    /// let x = g.placeholder(adgraph::shape![]);
    /// let y = g.add_op(Cube, &[&x]).unwrap();
    /// let dy = adgraph::gradients(&[&y], &[&x], None).unwrap()[0].clone().unwrap();
    /// let d2y = adgraph::gradients(&[&dy], &[&x], None).unwrap()[0].clone().unwrap();
    /// let feed = adgraph::feed! { x => 2.0 }.unwrap();
    /// let mut rt = adgraph::RunTime::new();
    /// assert_eq!(rt.forward(&dy, &feed).unwrap().sum(), 12.0); // 3 x^2
    /// assert_eq!(rt.forward(&d2y, &feed).unwrap().sum(), 12.0); // 6 x
    /// ```
    ///
    /// # Errors
    /// Any error met while building the gradient nodes.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.numeric_backward()
    }

    /// The numeric gradient, for ops that do not build theirs as nodes: given
    /// `grad` (the value of dL/d output, shaped like the output), returns dL/d
    /// input for each input in order, `None` for an input that takes no gradient.
    ///
    /// Only called through the default [`gradient`](Op::gradient). Inputs for
    /// which [`BackwardContext::needs_grad`] is false may be skipped (returning
    /// `None`) to save work. A returned gradient must have its input's shape.
    ///
    /// The default reports that the op has no gradient.
    ///
    /// # Errors
    /// Any error met while computing the gradients.
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let _ = (grad, ctx);
        Err(Error::invalid(format!(
            "op {} defines no gradient (neither Op::gradient nor Op::backward)",
            self.type_name()
        )))
    }
}

/// What an op's forward may use besides its inputs.
pub struct ForwardContext<'a> {
    pub(crate) saved: Option<Box<dyn Any>>,
    pub(crate) rng: &'a mut dyn RngCore,
    pub(crate) assignments: Vec<(usize, Tensor)>,
    pub(crate) inference: bool,
    /// What each node saved this cycle, by node id, and this node's inputs:
    /// read through [`input_saved`](ForwardContext::input_saved) (no per-node copy).
    pub(crate) saved_by_node: &'a [Option<Box<dyn Any>>],
    pub(crate) input_ids: &'a [NodeId],
}

impl<'a> ForwardContext<'a> {
    pub(crate) fn new(
        rng: &'a mut dyn RngCore,
        inference: bool,
        saved_by_node: &'a [Option<Box<dyn Any>>],
        input_ids: &'a [NodeId],
    ) -> Self {
        ForwardContext {
            saved: None,
            rng,
            assignments: Vec::new(),
            inference,
            saved_by_node,
            input_ids,
        }
    }

    /// The data that the node which is input `i` kept with
    /// [`save`](ForwardContext::save) when it ran in this cycle, if it is of
    /// type `T` and still held.
    ///
    /// This is how a gradient op reads what its forward op left for it, as
    /// TensorFlow's gradient kernels read a forward op's extra outputs: the
    /// kept patch matrix of a convolution, the mask of a dropout, the
    /// statistics of a batch norm. The forward node is then one of the
    /// gradient op's inputs (which also orders the two). Optional caches may be
    /// missing (an inference pass keeps none): recompute them then.
    pub fn input_saved<T: Any>(&self, i: usize) -> Option<&'a T> {
        self.input_saved_any(i).and_then(|s| s.downcast_ref::<T>())
    }

    /// What input `i`'s node saved, of whatever type.
    pub(crate) fn input_saved_any(&self, i: usize) -> Option<&'a dyn Any> {
        let id = self.input_ids.get(i)?;
        self.saved_by_node.get(id.index())?.as_deref()
    }

    /// Whether this is an inference pass ([`RunTime::infer`](crate::RunTime::infer)),
    /// which drops whatever is saved: an op may then skip keeping data that
    /// only its backward would read.
    pub fn is_inference(&self) -> bool {
        self.inference
    }

    /// Keeps `data` for this node's backward in the same cycle
    /// ([`BackwardContext::saved`]).
    pub fn save<T: Any>(&mut self, data: T) {
        self.saved = Some(Box::new(data));
    }

    /// The run time's seedable random generator (dropout masks and the like).
    pub fn rng(&mut self) -> &mut dyn RngCore {
        self.rng
    }

    /// Gives the variable that is input `input` of this node a new value once
    /// this forward succeeds (batch norm's moving statistics).
    ///
    /// The run time checks that the input is a variable and that the shape fits.
    pub fn assign_input_variable(&mut self, input: usize, value: Tensor) {
        self.assignments.push((input, value));
    }
}

/// What an op's backward may use: input and output values, saved data, and
/// which inputs need a gradient.
pub struct BackwardContext<'a> {
    pub(crate) inputs: Vec<&'a Tensor>,
    pub(crate) output: &'a Tensor,
    pub(crate) saved: Option<&'a dyn Any>,
    pub(crate) needs_grad: Vec<bool>,
}

impl<'a> BackwardContext<'a> {
    /// The value of input `i`.
    ///
    /// **Panics** if `i` is not an input index of this node (a bug in the op).
    pub fn input(&self, i: usize) -> &'a Tensor {
        self.inputs[i]
    }

    /// All input values, in order.
    pub fn inputs(&self) -> &[&'a Tensor] {
        &self.inputs
    }

    /// The output value computed by forward.
    pub fn output(&self) -> &'a Tensor {
        self.output
    }

    /// Whether input `i` needs a gradient (false for constants, stopped paths,
    /// and indices past the inputs).
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs_grad.get(i).copied().unwrap_or(false)
    }

    /// The data this node's forward kept with [`ForwardContext::save`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when nothing of type `T` was saved.
    pub fn saved<T: Any>(&self) -> Result<&'a T> {
        self.saved
            .and_then(|s| s.downcast_ref::<T>())
            .ok_or_else(|| Error::invalid("forward saved no data of the type backward expects"))
    }
}

/// What an op's [`gradient`](Op::gradient) builds from: the forward node, its
/// inputs, the node holding the upstream gradient, and which inputs need a
/// gradient.
pub struct GradientContext<'a> {
    pub(crate) op: &'a Rc<dyn Op>,
    pub(crate) node: &'a Node,
    pub(crate) inputs: Vec<Node>,
    pub(crate) grad: Node,
    pub(crate) needs_grad: Vec<bool>,
}

impl<'a> GradientContext<'a> {
    /// The forward node whose gradient is being built (its value is the op's output).
    pub fn output(&self) -> &Node {
        self.node
    }

    /// Input `i` of the forward node.
    ///
    /// **Panics** if `i` is not an input index of this node (a bug in the op).
    pub fn input(&self, i: usize) -> &Node {
        &self.inputs[i]
    }

    /// All inputs of the forward node, in order.
    pub fn inputs(&self) -> &[Node] {
        &self.inputs
    }

    /// The node holding dL/d output (shaped like the output).
    pub fn grad(&self) -> &Node {
        &self.grad
    }

    /// The graph the gradient nodes go into.
    pub fn graph(&self) -> &Graph {
        self.node.graph()
    }

    /// Whether input `i` needs a gradient (false for constants, stopped paths,
    /// inputs the differentiated targets do not reach through, and indices past
    /// the inputs).
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs_grad.get(i).copied().unwrap_or(false)
    }

    /// Adds `op` on `inputs` to the graph (for gradient ops of one's own).
    ///
    /// # Errors
    /// As [`Graph::add_op`].
    pub fn add_op(&self, op: impl Op, inputs: &[&Node]) -> Result<Node> {
        self.graph().add_op(op, inputs)
    }

    /// The gradient of this op's output rebuilt from simpler ops: `compose`
    /// builds, from nodes standing for the inputs, a node equal to the op's
    /// output, and the input gradients are those of that composition (through
    /// [`gradients`](crate::gradients())), weighted by [`grad`](Self::grad).
    ///
    /// Partial derivatives: the composition sees each input through a stand-in
    /// node, so an input that depends on another is not counted twice.
    ///
    /// This is how a fused gradient op (one kernel for speed) gets its own
    /// gradient, for second derivatives: its gradient is the gradient of the
    /// same math written as a few ops. The composition is only built when a
    /// derivative of that order is asked for.
    ///
    /// # Errors
    /// Whatever `compose` or the gradients of its ops report.
    pub fn gradient_of_composition(
        &self,
        compose: impl FnOnce(&[Node]) -> Result<Node>,
    ) -> Result<Vec<Option<Node>>> {
        // The composition is built on stand-ins (identities of the inputs), and
        // differentiated w.r.t. them: partial derivatives, so that an input
        // which depends on another (the upstream gradient of a grad op usually
        // depends on the forward input) is not counted through both.
        let stand_ins: Vec<Node> = self
            .inputs
            .iter()
            .map(|n| self.add_op(crate::gradients::StandIn, &[n]))
            .collect::<Result<_>>()?;
        let out = compose(&stand_ins)?;
        let wanted: Vec<&Node> = (0..self.inputs.len())
            .filter(|&k| self.needs_grad(k))
            .map(|k| &stand_ins[k])
            .collect();
        let found = crate::gradients(&[&out], &wanted, Some(&[&self.grad]))?;
        let mut found = found.into_iter();
        Ok((0..self.inputs.len())
            .map(|k| {
                if self.needs_grad(k) {
                    found.next().flatten()
                } else {
                    None
                }
            })
            .collect())
    }

    /// The gradient form of an op with a numeric [`Op::backward`]: for each
    /// input that needs a gradient, a node that runs the op's backward on the
    /// upstream gradient's value (reading what its forward saved) and yields
    /// that input's gradient. These nodes have no gradient themselves.
    ///
    /// # Errors
    /// As [`Graph::add_op`].
    pub fn numeric_backward(&self) -> Result<Vec<Option<Node>>> {
        (0..self.inputs.len())
            .map(|k| {
                if !self.needs_grad(k) {
                    return Ok(None);
                }
                let mut args: Vec<&Node> = self.inputs.iter().collect();
                args.push(self.node);
                args.push(&self.grad);
                let op = crate::gradients::NumericGradient {
                    op: self.op.clone(),
                    input: k,
                    shape: self.inputs[k].shape(),
                };
                self.graph().add_op(op, &args).map(Some)
            })
            .collect()
    }
}
