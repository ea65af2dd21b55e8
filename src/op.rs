//! The [`Op`] trait: what every node type that computes something implements.
//!
//! An op is a small struct holding its attributes (strides, axes, ...). It gives
//! three things, side by side: the static **shape rule**, the **forward**
//! computation, and the **backward** rule (the vector-Jacobian product: given the
//! gradient of the loss w.r.t. the op's output, the gradient w.r.t. each input).
//! Built-in ops and users' ops are the same kind of thing; a user's op is added to
//! a graph with [`Graph::add_op`](crate::Graph::add_op) and behaves like a built-in.
//!
//! # Writing your own node type
//!
//! `softplus(x) = ln(1 + e^x)`, whose derivative is `sigmoid(x)`:
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

use rand::RngCore;

use crate::error::{Error, Result};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// A node type: shape rule, forward and backward.
///
/// Ops must be deterministic given their inputs and the context's random
/// generator, and must not touch the graph they belong to.
pub trait Op: 'static {
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

    /// Given `grad` (dL/d output, shaped like the output), returns dL/d input for
    /// each input in order, `None` for an input that takes no gradient.
    ///
    /// Inputs for which [`BackwardContext::needs_grad`] is false may be skipped
    /// (returning `None`) to save work. A returned gradient must have its input's shape.
    ///
    /// # Errors
    /// Any error met while computing the gradients.
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>>;
}

/// What an op's forward may use besides its inputs.
pub struct ForwardContext<'a> {
    pub(crate) saved: Option<Box<dyn Any>>,
    pub(crate) rng: &'a mut dyn RngCore,
    pub(crate) assignments: Vec<(usize, Tensor)>,
    pub(crate) inference: bool,
}

impl<'a> ForwardContext<'a> {
    pub(crate) fn new(rng: &'a mut dyn RngCore, inference: bool) -> Self {
        ForwardContext {
            saved: None,
            rng,
            assignments: Vec::new(),
            inference,
        }
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
