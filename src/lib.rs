//! # adgraph
//!
//! A TensorFlow-1-style static-graph, reverse-mode automatic differentiation
//! framework for training neural networks, computing on [`ndarray`]: a Rust
//! re-creation of *np-auto-diff*.
//!
//! Build a [`Graph`] of [`Node`]s (on the thread's default graph with the free
//! functions, or on an explicit graph), feed its placeholders, and run forward
//! and backward in a [`RunTime`]:
//!
//! ```
//! use adgraph as ad;
//!
//! let a = ad::placeholder([2, 3]);
//! let b = ad::placeholder([2, 3]);
//! let c = ad::add(&a, &b).unwrap();
//! assert_eq!(a.graph(), &ad::get_default_graph());
//!
//! let mut rt = ad::RunTime::new();
//! let feed = ad::feed! {
//!     a => [[0., 1., 2.], [3., 4., 5.]],
//!     b => [[1., 1., 1.], [0., 0., 0.]],
//! }.unwrap();
//! let c_val = rt.forward(&c, &feed).unwrap();
//! assert_eq!(c_val, &ad::tensor([[1., 2., 3.], [3., 4., 5.]]));
//! rt.backward(&c, &feed, Some(ad::tensor([[1., 1., 1.], [1., 1., 1.]]))).unwrap();
//! assert_eq!(rt.get_bwval(&a.name()).unwrap(), &ad::tensor([[1., 1., 1.], [1., 1., 1.]]));
//! ```
//!
//! Every node has a static [`TensorShape`] inferred when it is made; impossible
//! inputs are rejected right then with an [`Error`] naming the op, its inputs and
//! their shapes. New node types implement [`Op`] (see its module docs).

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod dot;
pub mod error;
pub mod gradcheck;
pub mod gradients;
pub mod graph;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod memory;
pub mod op;
pub mod operators;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod rng_state;
pub mod runtime;
pub mod shape;
pub mod tensor;
pub mod threads;
pub mod train;

pub use checkpoint::{Checkpoint, RestoreMode, RestoreReport};
pub use error::{Error, Phase, Result};
pub use gradients::{gradients, hessian_vector_product, jacobian};
pub use graph::{get_default_graph, reset_default_graph, DefaultGraphGuard, Graph, Node, NodeId};
pub use init::Initializer;
pub use memory::retain_freed_memory;
pub use op::{BackwardContext, ForwardContext, GradientContext, Op};
pub use operators::Operand;
pub use ops::activation::{elu, gelu, log_softmax, silu, softmax_axis, softplus};
pub use ops::activation::{leaky_relu, relu, sigmoid, softmax, tanh};
pub use ops::arithmetic::{add, add_n, divide, multiply, negate, subtract};
pub use ops::array::{broadcast_to, expand_dims, split, squeeze, stack, tile, unstack, SplitSizes};
pub use ops::array::{concat, pad, reshape, slice, stop_gradient, transpose};
pub use ops::attention::{self_attention, self_attention_weights};
pub use ops::broadcast::{broadcast_like, sum_to};
pub use ops::compare::{clip_by_value, maximum, minimum, where_};
pub use ops::compare::{equal, greater, greater_equal, less, less_equal};
pub use ops::conv::{conv2d, conv2d_transpose, Padding};
pub use ops::conv::{conv2d_backprop_filter, conv2d_backprop_input};
pub use ops::dropout::dropout;
pub use ops::fill::{ones_like, zeros_like};
pub use ops::index::{embedding_lookup, gather, one_hot};
pub use ops::layer_norm::layer_norm;
pub use ops::linalg::matmul;
pub use ops::linalg::matmul_transposed;
pub use ops::loss::sparse_softmax_cross_entropy_loss;
pub use ops::loss::{l2norm, sigmoid_cross_entropy_loss, softmax_cross_entropy_loss};
pub use ops::math::{abs, cos, erf, log1p, rsqrt, sin};
pub use ops::math::{exp, log, pow, sqrt, square};
pub use ops::norm::{fused_batch_norm, BatchNormActivation, BatchNormConfig};
pub use ops::pool::{avgpool2d, maxpool2d};
pub use ops::reduce::{argmax, argmin, reduce_max, reduce_min};
pub use ops::reduce::{reduce_mean, reduce_sum, Axes};
pub use ops::rnn::{lstm_cell, lstm_cell_from_parts};
pub use ops::rnn_sequence::lstm_sequence;
pub use ops::scan::cumsum;
pub use rng_state::RngState;
pub use runtime::{Feed, RunTime};
pub use shape::TensorShape;
pub use tensor::{tensor, IntoTensor, Tensor};
pub use threads::init_thread_pool;

/// A placeholder on the default graph: a node fed at run time. `None` dims match any size.
///
/// ```
/// let x = adgraph::placeholder(adgraph::shape![None, 1, 2, 3]);
/// assert_eq!(x.shape().to_string(), "(None, 1, 2, 3)");
/// ```
pub fn placeholder(shape: impl Into<TensorShape>) -> Node {
    get_default_graph().placeholder(shape)
}

/// A constant on the default graph.
///
/// # Errors
/// When `value` cannot be made into a tensor.
pub fn constant(value: impl IntoTensor) -> Result<Node> {
    get_default_graph().constant(value)
}

/// A variable on the default graph (see [`Graph::variable`]).
///
/// # Errors
/// Whatever the initializer reports for this shape.
pub fn variable(
    shape: &[usize],
    initializer: impl Initializer + 'static,
    trainable: bool,
) -> Result<Node> {
    get_default_graph().variable(shape, initializer, trainable)
}
