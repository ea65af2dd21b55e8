//! [`Lstm`]: a long short-term memory layer unrolled over a static number of
//! time steps, on the whole-sequence op ([`lstm_sequence`]).

use std::cell::OnceCell;
use std::rc::Rc;

use super::{display_name, input_dim, refit_error, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::init::{Initializer, RandomUniform, Zeros};
use crate::ops::array::{reshape, transpose, unstack};
use crate::ops::linalg::matmul;
use crate::ops::rnn_sequence::lstm_sequence;

/// What an [`Lstm`] gives: the outputs of every step and the final state.
#[derive(Debug, Clone)]
pub struct LstmOutput {
    /// `h_t` of every step, `[batch, time, units]`.
    pub outputs: Node,
    /// The last step's `h`, `[batch, units]`.
    pub h: Node,
    /// The last step's cell state `c`, `[batch, units]`.
    pub c: Node,
}

/// An LSTM layer (Keras `LSTM`, `tf.nn.static_rnn` over an `LSTMBlockCell`)
/// over inputs `[batch, time, features]` with a static number of steps:
/// for `t = 1..time`,
///
/// ```text
/// z_t = x_t · kernel + h_{t-1} · recurrent_kernel + bias       [batch, 4 units]
/// i, f, g, o = σ(z_i), σ(z_f + forget_bias), tanh(z_g), σ(z_o)  (blocks of z_t in that order)
/// c_t = f ⊙ c_{t-1} + i ⊙ g        h_t = o ⊙ tanh(c_t)
/// ```
///
/// from `h_0 = c_0 = 0` or a given initial state. The input projections of
/// all steps are one matrix product (`[time · batch, features] · kernel`,
/// rows in time-major order); the recurrence is one
/// [`lstm_sequence`] node (every step's
/// `h_{t-1} · recurrent_kernel`, bias and cell; the batch's row groups run
/// their steps side by side), whose `h` half is the output. The forget bias is
/// a constant, not a variable (TensorFlow's `forget_bias`, default 1.0).
///
/// Variables (Keras's names and gate order `i, f, g, o`):
/// `<scope>/kernel [features, 4 units]`, `<scope>/recurrent_kernel
/// [units, 4 units]` and `<scope>/bias [4 units]`; by default the two
/// kernels ~ `U(-1/√units, 1/√units)` (PyTorch's `nn.LSTM`) and the bias
/// zeros. Default scope `lstm`.
///
/// ```
/// use adgraph::{self as ad, layers::{Layer, Lstm}};
/// let g = ad::Graph::with_seed(0);
/// let x = g.placeholder(ad::shape![None, 16, 32]);
/// let lstm = Lstm::new(128);
/// let out = lstm.apply_with_state(&x, None).unwrap();
/// assert_eq!(out.outputs.shape(), ad::shape![None, 16, 128]);
/// assert_eq!(out.c.shape(), ad::shape![None, 128]);
/// let names: Vec<String> = lstm.variables().iter().map(|v| v.name()).collect();
/// assert_eq!(names, ["lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"]);
/// // The number of steps must be known when the graph is built.
/// assert!(Lstm::new(8).apply(&g.placeholder(ad::shape![None, None, 32])).is_err());
/// ```
pub struct Lstm {
    units: usize,
    forget_bias: f32,
    kernel_initializer: Option<InitRef>,
    recurrent_initializer: Option<InitRef>,
    bias_initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, LstmVars)>,
}

struct LstmVars {
    in_dim: usize,
    kernel: Node,
    recurrent_kernel: Node,
    bias: Node,
}

impl Lstm {
    /// An LSTM of `units` cells, forget bias 1.0, the default initializers.
    pub fn new(units: usize) -> Self {
        Lstm {
            units,
            forget_bias: 1.0,
            kernel_initializer: None,
            recurrent_initializer: None,
            bias_initializer: Rc::new(Zeros),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The constant added to the forget gate's pre-activation (default 1.0;
    /// must be finite).
    #[must_use]
    pub fn forget_bias(mut self, forget_bias: f32) -> Self {
        self.forget_bias = forget_bias;
        self
    }

    /// The input kernel's initializer (default `U(-1/√units, 1/√units)`).
    #[must_use]
    pub fn kernel_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.kernel_initializer = Some(Rc::new(init));
        self
    }

    /// The recurrent kernel's initializer (default `U(-1/√units, 1/√units)`).
    #[must_use]
    pub fn recurrent_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.recurrent_initializer = Some(Rc::new(init));
        self
    }

    /// The bias's initializer (default [`Zeros`]).
    #[must_use]
    pub fn bias_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.bias_initializer = Rc::new(init);
        self
    }

    /// The layer's scope name (default `lstm`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The number of cells.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The outputs `h_t` of every step, `[batch, time, units]`, from a zero
    /// state ([`apply_with_state`](Lstm::apply_with_state) gives the final
    /// state too, and takes an initial one).
    ///
    /// # Errors
    /// As [`apply_with_state`](Lstm::apply_with_state).
    pub fn apply(&self, x: &Node) -> Result<Node> {
        Ok(self.apply_with_state(x, None)?.outputs)
    }

    /// Runs the layer over `x` (`[batch, time, features]`, `time` and
    /// `features` known statically) from `initial = Some((h_0, c_0))` (each
    /// `[batch, units]`) or from zeros; returns every step's `h` and the
    /// final `h` and `c`. The first call makes the variables, later calls
    /// share them.
    ///
    /// # Errors
    /// [`Error::Rank`] when `x` is not of rank 3; [`Error::InvalidArgument`]
    /// when `units` is 0, when `time` or `features` is unknown or 0, when
    /// `features` differs from the one the variables were made for, or when
    /// the forget bias is not finite (each naming the layer, `x` and its
    /// shape); [`Error::Node`] from the ops when `h_0` or `c_0` does not fit
    /// `[batch, units]`; [`Error::GraphMismatch`]; an initializer's error.
    pub fn apply_with_state(
        &self,
        x: &Node,
        initial: Option<(&Node, &Node)>,
    ) -> Result<LstmOutput> {
        let label = display_name(self.name.as_deref(), "lstm", "Lstm");
        if self.units == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: units must be at least 1"
            )));
        }
        if !self.forget_bias.is_finite() {
            return Err(Error::invalid(format!(
                "layer {label}: forget_bias must be finite, got {}",
                self.forget_bias
            )));
        }
        let shape = x.shape();
        if shape.rank() != 3 {
            return Err(Error::Rank {
                what: format!(
                    "input {} of layer {label} ([batch, time, features])",
                    x.name()
                ),
                expected: "3".into(),
                got: shape,
            });
        }
        let in_dim = input_dim(x, 2, 3, &label)?;
        let steps = input_dim(x, 1, 3, &label)?;
        if steps == 0 || in_dim == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: input {} has shape {shape}, with no time steps or no features",
                x.name()
            )));
        }
        let (scope, vars) = self.built_on(x.graph(), in_dim)?;
        scope.check_graph(x)?;
        if vars.in_dim != in_dim {
            return Err(refit_error(scope, x, "features", vars.in_dim, in_dim));
        }
        scope.enter(|| {
            // The input projections of all steps: one product on the rows of
            // x in time-major order (step, batch); then the whole recurrence
            // as one LstmSequence node, whose row groups run their steps side
            // by side ([2, T, B, H]: every step's h and c).
            let rows = reshape(&transpose(x, &[1, 0, 2])?, &[-1, in_dim as isize])?;
            let xw = matmul(&rows, &vars.kernel)?;
            let state = lstm_sequence(
                &xw,
                &vars.recurrent_kernel,
                &vars.bias,
                initial,
                steps,
                self.forget_bias,
            )?;
            let mut hc = unstack(&state, 0)?.into_iter();
            let (h_all, c_all) = match (hc.next(), hc.next()) {
                (Some(h), Some(c)) => (h, c),
                _ => {
                    return Err(Error::invalid(
                        "Lstm: the state did not unstack in two (a bug)",
                    ))
                }
            };
            let outputs = transpose(&h_all, &[1, 0, 2])?;
            let last = |all: &Node| -> Result<Node> {
                unstack(all, 0)?
                    .pop()
                    .ok_or_else(|| Error::invalid("Lstm: no step was built (a bug)"))
            };
            Ok(LstmOutput {
                outputs,
                h: last(&h_all)?,
                c: last(&c_all)?,
            })
        })
    }

    /// Makes the variables for inputs of `in_dim` features on `graph` now
    /// (Keras's `layer.build`); nothing if they exist.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `units` or `in_dim` is 0 or the
    /// variables exist for another `in_dim`; [`Error::GraphMismatch`] when
    /// they exist on another graph; an initializer's error.
    pub fn build(&self, graph: &Graph, in_dim: usize) -> Result<()> {
        let label = display_name(self.name.as_deref(), "lstm", "Lstm");
        if self.units == 0 || in_dim == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: units ({}) and input features ({in_dim}) must be at least 1",
                self.units
            )));
        }
        let (scope, vars) = self.built_on(graph, in_dim)?;
        if vars.in_dim != in_dim {
            return Err(Error::invalid(format!(
                "layer {} (Lstm): cannot build for {in_dim} input features, its variables \
                 were made for {}",
                scope.name(),
                vars.in_dim
            )));
        }
        Ok(())
    }

    fn built_on(&self, graph: &Graph, in_dim: usize) -> Result<&(LayerScope, LstmVars)> {
        let bound = 1.0 / (self.units as f32).sqrt();
        let uniform = || -> InitRef { Rc::new(RandomUniform::new(-bound, bound)) };
        LayerScope::get_or_build_on(
            &self.built,
            graph,
            self.name.as_deref(),
            "lstm",
            "Lstm",
            |_| {
                let gates = 4 * self.units;
                let kernel = graph.variable_named(
                    "kernel",
                    &[in_dim, gates],
                    self.kernel_initializer.clone().unwrap_or_else(uniform),
                    true,
                )?;
                let recurrent_kernel = graph.variable_named(
                    "recurrent_kernel",
                    &[self.units, gates],
                    self.recurrent_initializer.clone().unwrap_or_else(uniform),
                    true,
                )?;
                let bias =
                    graph.variable_named("bias", &[gates], self.bias_initializer.clone(), true)?;
                Ok(LstmVars {
                    in_dim,
                    kernel,
                    recurrent_kernel,
                    bias,
                })
            },
        )
    }

    /// The input kernel `[features, 4 units]`, once applied.
    pub fn kernel(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.kernel.clone())
    }

    /// The recurrent kernel `[units, 4 units]`, once applied.
    pub fn recurrent_kernel(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.recurrent_kernel.clone())
    }

    /// The bias `[4 units]`, once applied.
    pub fn bias(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.bias.clone())
    }
}

impl Layer for Lstm {
    fn kind(&self) -> &'static str {
        "Lstm"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.built
            .get()
            .map(|(_, v)| vec![v.kernel.clone(), v.recurrent_kernel.clone(), v.bias.clone()])
            .unwrap_or_default()
    }
}
