//! [`Dense`]: `activation(x · kernel + bias)` over the last dim of `x`.

use std::cell::OnceCell;
use std::rc::Rc;

use super::{display_name, input_dim, refit_error, Activation, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::init::{GlorotUniform, Initializer, Zeros};
use crate::ops::arithmetic::add;
use crate::ops::array::reshape;
use crate::ops::linalg::matmul;

/// A densely connected layer (`tf.layers.dense`, Keras `Dense`):
/// `activation(x · kernel + bias)` with `kernel [in, units]` and `bias [units]`,
/// on the last dim of an input of rank 2 or more (`[..., in] -> [..., units]`;
/// the leading dims are flattened into one matrix product).
///
/// Variables: `<scope>/kernel` (Glorot uniform) and `<scope>/bias` (zeros);
/// default scope `dense` (see [the convention](crate::layers)).
///
/// ```
/// use adgraph::{self as ad, layers::{Activation, Dense, Layer}};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 16, 64]);
/// let fc = Dense::new(256).activation(Activation::GeluTanh);
/// let y = fc.apply(&x).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 16, 256]);
/// assert_eq!(fc.kernel().unwrap().name(), "dense/kernel");
/// assert_eq!(fc.scope_name().unwrap(), "dense");
/// ```
pub struct Dense {
    units: usize,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: InitRef,
    bias_initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, DenseVars)>,
}

struct DenseVars {
    in_dim: usize,
    kernel: Node,
    bias: Option<Node>,
}

impl Dense {
    /// A dense layer with `units` outputs, no activation, a bias, Glorot-uniform kernel.
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Rc::new(GlorotUniform::new()),
            bias_initializer: Rc::new(Zeros),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The activation applied to `x · kernel + bias` (default none).
    #[must_use]
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias (default `true`).
    #[must_use]
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// The kernel's initializer (default [`GlorotUniform`]).
    #[must_use]
    pub fn kernel_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.kernel_initializer = Rc::new(init);
        self
    }

    /// The bias's initializer (default [`Zeros`]).
    #[must_use]
    pub fn bias_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.bias_initializer = Rc::new(init);
        self
    }

    /// The layer's scope name (default `dense`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The number of outputs.
    pub fn units(&self) -> usize {
        self.units
    }

    /// `activation(x · kernel + bias)`; the first call makes the variables
    /// from the static last dim of `x`, later calls share them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `units` is 0, when the last dim of `x`
    /// is unknown, or when it differs from the one the variables were made
    /// for; [`Error::Rank`] when `x` has rank below 2 (each naming the layer,
    /// `x` and its shape); [`Error::GraphMismatch`] when the layer was built
    /// on another graph; an initializer's error.
    pub fn apply(&self, x: &Node) -> Result<Node> {
        let label = display_name(self.name.as_deref(), "dense", "Dense");
        if self.units == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: units must be at least 1"
            )));
        }
        let in_dim = input_dim(x, -1, 2, &label)?;
        let (scope, vars) = self.built_on(x.graph(), in_dim)?;
        scope.check_graph(x)?;
        if vars.in_dim != in_dim {
            return Err(refit_error(scope, x, "last dim", vars.in_dim, in_dim));
        }
        scope.enter(|| {
            let y = project(x, &vars.kernel)?;
            let y = match &vars.bias {
                Some(b) => add(&y, b)?,
                None => y,
            };
            self.activation.apply(&y)
        })
    }

    /// Makes the variables for inputs of `in_dim` features on `graph` now
    /// (Keras's `layer.build`), in the scopes open on `graph`; nothing if
    /// they exist. A later [`apply`](Dense::apply) uses them.
    ///
    /// ```
    /// use adgraph::layers::{Dense, Layer};
    /// let g = adgraph::Graph::new();
    /// let fc = Dense::new(3).use_bias(false);
    /// fc.build(&g, 5).unwrap();
    /// assert_eq!(fc.kernel().unwrap().shape(), adgraph::shape![5, 3]);
    /// assert_eq!(g.len(), 1); // just the kernel
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `units` or `in_dim` is 0 or the
    /// variables exist for another `in_dim`; [`Error::GraphMismatch`] when
    /// they exist on another graph; an initializer's error.
    pub fn build(&self, graph: &Graph, in_dim: usize) -> Result<()> {
        let label = display_name(self.name.as_deref(), "dense", "Dense");
        if self.units == 0 || in_dim == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: units ({}) and input features ({in_dim}) must be at least 1",
                self.units
            )));
        }
        let (scope, vars) = self.built_on(graph, in_dim)?;
        if vars.in_dim != in_dim {
            return Err(Error::invalid(format!(
                "layer {} (Dense): cannot build for {in_dim} input features, its variables \
                 were made for {}",
                scope.name(),
                vars.in_dim
            )));
        }
        Ok(())
    }

    fn built_on(&self, graph: &Graph, in_dim: usize) -> Result<&(LayerScope, DenseVars)> {
        LayerScope::get_or_build_on(
            &self.built,
            graph,
            self.name.as_deref(),
            "dense",
            "Dense",
            |_| {
                let kernel = graph.variable_named(
                    "kernel",
                    &[in_dim, self.units],
                    self.kernel_initializer.clone(),
                    true,
                )?;
                let bias = if self.use_bias {
                    Some(graph.variable_named(
                        "bias",
                        &[self.units],
                        self.bias_initializer.clone(),
                        true,
                    )?)
                } else {
                    None
                };
                Ok(DenseVars {
                    in_dim,
                    kernel,
                    bias,
                })
            },
        )
    }

    /// The kernel `[in, units]`, once applied.
    pub fn kernel(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.kernel.clone())
    }

    /// The bias `[units]`, once applied with a bias.
    pub fn bias(&self) -> Option<Node> {
        self.built.get().and_then(|(_, v)| v.bias.clone())
    }
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "Dense"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.built
            .get()
            .map(|(_, v)| {
                std::iter::once(v.kernel.clone())
                    .chain(v.bias.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `x · w` over the last dim of `x` (`[..., in] · [in, out] -> [..., out]`):
/// one matrix product `[n, in] · [in, out]` on `x` flattened to rows when at
/// most one leading dim is unknown (one gemm, and a weight gradient without a
/// sum over a batch of products), else a broadcast batched matmul.
pub(crate) fn project(x: &Node, w: &Node) -> Result<Node> {
    let shape = x.shape();
    let rank = shape.rank();
    if rank <= 2 {
        return matmul(x, w);
    }
    let leading = &shape.dims()[..rank - 1];
    let out = w.shape().dims()[1];
    let unknown = leading.iter().filter(|d| d.is_none()).count();
    match (unknown, out, shape.dims()[rank - 1]) {
        (0 | 1, Some(out), Some(in_dim)) => {
            let rows = reshape(x, &[-1, in_dim as isize])?;
            let y = matmul(&rows, w)?;
            let mut back: Vec<isize> = leading
                .iter()
                .map(|d| d.map_or(-1, |d| d as isize))
                .collect();
            back.push(out as isize);
            reshape(&y, &back)
        }
        _ => matmul(x, w),
    }
}
