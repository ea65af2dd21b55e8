//! Layers in the spirit of `tf.layers` and Keras: a layer is a small builder
//! that, when applied to a node, creates its named variables (with sensible
//! initializers) under a name scope and returns the output node.
//!
//! | layer | variables (in scope `<name>/`) | default initializers |
//! |---|---|---|
//! | [`Dense`] | `kernel [in, units]`, `bias [units]` | Glorot uniform, zeros |
//! | [`Conv2D`] | `kernel [kh, kw, in, filters]`, `bias [filters]` | Glorot uniform, zeros |
//! | [`Conv2DTranspose`] | `kernel [kh, kw, filters, in]`, `bias [filters]` | Glorot uniform, zeros |
//! | [`BatchNorm`] | `gamma`, `beta`, `moving_mean`, `moving_variance` `[C]` (the last two not trainable) | ones, zeros, zeros, ones |
//! | [`LayerNorm`] | `gamma`, `beta` (the normalised dims) | ones, zeros |
//! | [`Embedding`] | `embeddings [vocab, dim]` | normal `N(0, 1)` |
//! | [`Dropout`] | — | — |
//! | [`Lstm`] | `kernel [in, 4 units]`, `recurrent_kernel [units, 4 units]`, `bias [4 units]` (gates i, f, g, o) | uniform ±1/√units (torch's), uniform ±1/√units, zeros |
//! | [`MultiHeadAttention`] | `qkv/kernel [d, 3d]`, `qkv/bias`, `output/kernel [d, d]`, `output/bias` | Glorot uniform, zeros |
//!
//! # The convention every layer follows
//!
//! - **A builder per layer.** `Dense::new(units)` takes the required sizes;
//!   chainable options (`.activation(..)`, `.use_bias(..)`,
//!   `.kernel_initializer(..)`, `.name(..)`, ...) consume and return it.
//! - **`apply(&x) -> Result<Node>`** adds the layer's computation on `x` to
//!   `x`'s graph and returns the output node. Layers whose computation differs
//!   between training and inference ([`BatchNorm`], [`Dropout`]) take the mode
//!   as a second argument, `apply(&x, training: bool)`, as the ops they wrap
//!   (`fused_batch_norm`'s `is_training`, `dropout`'s `is_training`) fix it
//!   when the node is built.
//! - **Variables are created on the first `apply`** (their shapes follow from
//!   the input's static shape, whose needed dims must be known) and **shared by
//!   every later `apply`** of the same layer value, as calling a Keras layer
//!   twice shares its weights. That is how a training network and an inference
//!   network share one set of weights: build both from the same layers.
//!   A later `apply` with an input that does not fit the variables is an error.
//! - **Names.** The first `apply` picks the layer's scope: its `.name(..)`, or
//!   its kind in snake case (`dense`, `conv2d`, `batch_norm`, ...), made unique
//!   in the graph by a suffix (`dense`, `dense_1`, `dense_2`, ...: Keras's
//!   numbering; see [`Graph::unique_scope_name`]). Variables are named like
//!   Keras's (`dense/kernel`, `dense/bias`, `batch_norm/moving_mean`) with
//!   [`Graph::variable_named`], so checkpoints read well; the layer's op nodes
//!   live in the same scope (`dense/MatMul`, `dense/Add`). Nested layers
//!   ([`MultiHeadAttention`]'s projections) nest their scopes.
//! - **Accessors.** After the first `apply`: [`Layer::variables`] (trainable
//!   and not, in creation order), [`Layer::scope_name`], and per-layer getters
//!   (`Dense::kernel`, `BatchNorm::moving_mean`, ...); `None` before.
//! - **Errors name the layer.** Bad input (wrong rank, an unknown dim the
//!   variables need, a size that does not fit) is an [`Error::InvalidArgument`]
//!   or [`Error::Rank`] naming the layer (its scope name), its kind, the input
//!   node and its shape; errors of the ops inside carry the op node's scoped
//!   name (`dense/MatMul`).
//!
//! Shared pieces for writing a layer: [`Activation`], [`LayerScope`] (the
//! built-once scope and graph), [`input_dim`] and [`Initializer`]s kept as
//! `Rc<dyn Initializer>` ([`InitRef`]).
//!
//! # Example
//!
//! A two-layer perceptron with dropout, trained and evaluated through two
//! networks sharing the same weights:
//!
//! ```
//! use adgraph::{self as ad, layers::{Activation, Dense, Dropout, Layer}};
//!
//! let g = ad::Graph::with_seed(0);
//! let x = g.placeholder(ad::shape![None, 4]);
//! let hidden = Dense::new(8).activation(Activation::Relu);
//! let drop = Dropout::new(0.5);
//! let out = Dense::new(3).name("logits");
//!
//! let train = out.apply(&drop.apply(&hidden.apply(&x)?, true)?)?;
//! let infer = out.apply(&drop.apply(&hidden.apply(&x)?, false)?)?;
//! assert_eq!(train.shape(), ad::shape![None, 3]);
//!
//! let names: Vec<String> = g.variables(true).iter().map(|v| v.name()).collect();
//! assert_eq!(names, ["dense/kernel", "dense/bias", "logits/kernel", "logits/bias"]);
//! assert_eq!(hidden.variables().len(), 2);
//! assert_eq!(hidden.kernel().unwrap().shape(), ad::shape![4, 8]);
//!
//! let feed = ad::feed! { x => [[1.0, 2.0, 3.0, 4.0]] }.unwrap();
//! let y = ad::RunTime::new().forward(&infer, &feed)?.clone();
//! assert_eq!(y.shape(), &[1, 3]);
//!
//! // The same layer applied to an input of another width is an error naming it.
//! let wide = g.placeholder(ad::shape![None, 5]);
//! let err = hidden.apply(&wide).unwrap_err().to_string();
//! assert!(err.contains("dense (Dense)") && err.contains("(None, 5)"), "{err}");
//! # Ok::<(), ad::Error>(())
//! ```

use std::cell::OnceCell;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::init::Initializer;
use crate::ops::activation::{
    elu, gelu, leaky_relu, relu, sigmoid, silu, softmax_axis, softplus, tanh,
};

pub mod attention;
pub mod batch_norm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod layer_norm;
pub mod lstm;

pub use attention::{Attention, MultiHeadAttention};
pub use batch_norm::BatchNorm;
pub use conv::{Conv2D, Conv2DTranspose};
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use lstm::{Lstm, LstmOutput};

/// An initializer kept by a layer until its variables are made.
pub type InitRef = Rc<dyn Initializer>;

/// What every layer tells about itself once applied.
pub trait Layer {
    /// The layer's kind (`Dense`, `BatchNorm`, ...), as error messages say it.
    fn kind(&self) -> &'static str;

    /// The layer's scope name (`dense`, `dense_1`, or its `.name(..)`), once applied.
    fn scope_name(&self) -> Option<String>;

    /// Its variables (trainable or not) in creation order; empty before the first `apply`.
    fn variables(&self) -> Vec<Node>;

    /// Its trainable variables; empty before the first `apply`.
    fn trainable_variables(&self) -> Vec<Node> {
        self.variables()
            .into_iter()
            .filter(Node::is_trainable)
            .collect()
    }
}

/// An activation applied to a layer's output (Keras's `activation=`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Activation {
    /// None: the output as it is.
    #[default]
    Linear,
    /// [`relu`].
    Relu,
    /// [`leaky_relu`] with this slope for negative inputs.
    LeakyRelu(f32),
    /// [`sigmoid`].
    Sigmoid,
    /// [`tanh`].
    Tanh,
    /// [`gelu`], the exact (erf) form.
    Gelu,
    /// [`gelu`], the tanh approximation (GPT-2's, torch's `approximate="tanh"`).
    GeluTanh,
    /// [`silu`] (swish).
    Silu,
    /// [`elu`] with this `alpha`.
    Elu(f32),
    /// [`softplus`].
    Softplus,
    /// [`softmax_axis`] over the last axis.
    Softmax,
}

impl Activation {
    /// The activation of `x` (`x` itself for [`Activation::Linear`]).
    ///
    /// ```
    /// use adgraph::{self as ad, layers::Activation};
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([3]);
    /// assert_eq!(Activation::GeluTanh.apply(&x).unwrap().op_type(), "Gelu");
    /// assert_eq!(Activation::Linear.apply(&x).unwrap(), x);
    /// ```
    ///
    /// # Errors
    /// As the activation's op (a scalar has no last axis for the softmax).
    pub fn apply(self, x: &Node) -> Result<Node> {
        match self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => relu(x),
            Activation::LeakyRelu(alpha) => leaky_relu(x, alpha),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::Gelu => gelu(x, false),
            Activation::GeluTanh => gelu(x, true),
            Activation::Silu => silu(x),
            Activation::Elu(alpha) => elu(x, alpha),
            Activation::Softplus => softplus(x),
            Activation::Softmax => {
                let rank = x.shape().rank();
                if rank == 0 {
                    return Err(Error::Rank {
                        what: format!("softmax activation of {}", x.name()),
                        expected: "1 or more".into(),
                        got: x.shape(),
                    });
                }
                softmax_axis(x, rank - 1)
            }
        }
    }
}

/// Where a layer lives once applied: its graph and its unique scope name.
/// A layer keeps one in a [`OnceCell`] with its variables
/// ([`LayerScope::get_or_build`]).
#[derive(Debug, Clone)]
pub struct LayerScope {
    graph: Graph,
    name: String,
    kind: &'static str,
}

impl LayerScope {
    /// A fresh scope on `graph` for a layer of `kind` (e.g. `Dense`):
    /// `name` if given, else `default_name` (e.g. `dense`), made unique by
    /// [`Graph::unique_scope_name`].
    pub fn new(graph: &Graph, name: Option<&str>, default_name: &str, kind: &'static str) -> Self {
        LayerScope {
            graph: graph.clone(),
            name: graph.unique_scope_name(name.unwrap_or(default_name)),
            kind,
        }
    }

    /// The scope name (`dense_1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The graph the layer's variables belong to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The layer's kind (`Dense`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Runs `f` inside the layer's name scope (opened inside the scopes open now).
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        self.graph.name_scope(&self.name, f)
    }

    /// `Ok` when `x` belongs to the layer's graph.
    ///
    /// # Errors
    /// [`Error::GraphMismatch`] naming the layer and `x`.
    pub fn check_graph(&self, x: &Node) -> Result<()> {
        if x.graph() != &self.graph {
            return Err(Error::GraphMismatch {
                context: format!(
                    "applying layer {} ({}), built on another graph",
                    self.name, self.kind
                ),
                a: format!("the layer's variables ({}/...)", self.name),
                b: x.name(),
            });
        }
        Ok(())
    }

    /// The built state in `cell`: made by `build` (given a fresh scope on
    /// `x`'s graph, entered) on the first call; on later calls, checked to be
    /// on `x`'s graph. `name` and `default_name` as for [`LayerScope::new`].
    ///
    /// # Errors
    /// What `build` returns (the cell stays empty, so a later call may
    /// build again); [`Error::GraphMismatch`] when the layer was built on
    /// another graph than `x`'s.
    pub fn get_or_build<'a, V>(
        cell: &'a OnceCell<(LayerScope, V)>,
        x: &Node,
        name: Option<&str>,
        default_name: &str,
        kind: &'static str,
        build: impl FnOnce(&LayerScope) -> Result<V>,
    ) -> Result<&'a (LayerScope, V)> {
        let built = Self::get_or_build_on(cell, x.graph(), name, default_name, kind, build)?;
        built.0.check_graph(x)?;
        Ok(built)
    }

    /// As [`get_or_build`](LayerScope::get_or_build) on `graph`, for a
    /// layer's `build` without an input node (Keras's `layer.build(shape)`).
    ///
    /// # Errors
    /// What `build` returns; [`Error::GraphMismatch`] when the layer was
    /// built on another graph.
    pub fn get_or_build_on<'a, V>(
        cell: &'a OnceCell<(LayerScope, V)>,
        graph: &Graph,
        name: Option<&str>,
        default_name: &str,
        kind: &'static str,
        build: impl FnOnce(&LayerScope) -> Result<V>,
    ) -> Result<&'a (LayerScope, V)> {
        if let Some(built) = cell.get() {
            if built.0.graph() != graph {
                return Err(Error::GraphMismatch {
                    context: format!("building layer {} ({})", built.0.name, built.0.kind),
                    a: format!("the layer's variables ({}/...)", built.0.name),
                    b: format!("{graph:?}"),
                });
            }
            return Ok(built);
        }
        let scope = LayerScope::new(graph, name, default_name, kind);
        let vars = scope.enter(|| build(&scope))?;
        Ok(cell.get_or_init(|| (scope, vars)))
    }
}

/// What the layer is called in an error before it has a scope: its `.name(..)`
/// or its default name.
pub(crate) fn display_name(name: Option<&str>, default_name: &str, kind: &str) -> String {
    format!("{} ({kind})", name.unwrap_or(default_name))
}

/// The static size of `x`'s dim `axis` (negative counts from the end), which
/// a layer's variables need: an error naming the layer when `x` has too low a
/// rank (below `min_rank`) or the dim is unknown.
///
/// # Errors
/// [`Error::Rank`] when `x`'s rank is below `min_rank`;
/// [`Error::InvalidArgument`] when the dim is not known statically. Both name
/// `layer` (e.g. `dense (Dense)`), `x` and its shape.
pub fn input_dim(x: &Node, axis: isize, min_rank: usize, layer: &str) -> Result<usize> {
    let shape = x.shape();
    let rank = shape.rank();
    if rank < min_rank || rank == 0 {
        return Err(Error::Rank {
            what: format!("input {} of layer {layer}", x.name()),
            expected: format!("{} or more", min_rank.max(1)),
            got: shape,
        });
    }
    let i = if axis < 0 { rank as isize + axis } else { axis };
    let dim = usize::try_from(i)
        .ok()
        .filter(|&i| i < rank)
        .and_then(|i| shape.dims()[i]);
    dim.ok_or_else(|| {
        Error::invalid(format!(
            "layer {layer}: input {} has shape {shape}, whose dim {axis} must be known \
             when the graph is built (it sizes the layer's variables)",
            x.name()
        ))
    })
}

/// The error of a later `apply` whose input does not fit the variables the
/// first one made.
pub(crate) fn refit_error(
    scope: &LayerScope,
    x: &Node,
    what: &str,
    built: usize,
    got: usize,
) -> Error {
    Error::invalid(format!(
        "layer {} ({}): input {} has shape {}, with {what} {got}, but the layer's variables \
         were made for {what} {built}",
        scope.name(),
        scope.kind(),
        x.name(),
        x.shape()
    ))
}
