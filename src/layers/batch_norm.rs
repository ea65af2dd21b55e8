//! [`BatchNorm`]: batch normalisation over the last (channel) dim, on the
//! fused [`fused_batch_norm`] op.

use std::cell::OnceCell;
use std::rc::Rc;

use super::{display_name, input_dim, refit_error, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::init::{Initializer, Ones, Zeros};
use crate::ops::norm::{fused_batch_norm, BatchNormActivation, BatchNormConfig};

/// Batch normalisation (`tf.layers.batch_normalization`, Keras
/// `BatchNormalization`) of `[N, C]` or `[N, H, W, C]` inputs per channel
/// (the last dim): `gamma * (x - mean) / sqrt(var + epsilon) + beta`.
///
/// `apply(&x, training)`: with `training`, `mean` and `var` are the batch's
/// and every forward updates the moving statistics
/// (`moving = momentum * moving + (1 - momentum) * batch`, the variance
/// Bessel-corrected); without, the moving statistics are used and nothing is
/// updated. Build the training network with `true` and the inference one with
/// `false` from the same layer: they share the variables.
///
/// Variables: `gamma` (ones) and `beta` (zeros), trainable; `moving_mean`
/// (zeros) and `moving_variance` (ones), not trainable; all `[C]`. Default
/// scope `batch_norm`, momentum 0.99, epsilon 1e-3 (Keras's defaults).
///
/// ```
/// use adgraph::{self as ad, layers::{BatchNorm, Layer}};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2]);
/// let bn = BatchNorm::new().momentum(0.5);
/// let train = bn.apply(&x, true).unwrap();
/// let infer = bn.apply(&x, false).unwrap();
/// let names: Vec<String> = bn.variables().iter().map(|v| v.name()).collect();
/// assert_eq!(names, ["batch_norm/gamma", "batch_norm/beta",
///                    "batch_norm/moving_mean", "batch_norm/moving_variance"]);
/// assert_eq!(bn.trainable_variables().len(), 2);
///
/// let feed = ad::feed! { x => [[1.0, 10.0], [3.0, 30.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// let y = rt.forward(&train, &feed).unwrap().clone();
/// assert!((y[[0, 0]] + 1.0).abs() < 1e-2); // (1 - 2) / 1
/// // moving_mean = 0.5 * 0 + 0.5 * [2, 20]
/// assert_eq!(g.variable_value(&bn.moving_mean().unwrap()).unwrap(), ad::tensor([1.0f32, 10.0]));
/// ```
pub struct BatchNorm {
    momentum: f32,
    epsilon: f32,
    activation: BatchNormActivation,
    gamma_initializer: InitRef,
    beta_initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, BnVars)>,
}

struct BnVars {
    channels: usize,
    gamma: Node,
    beta: Node,
    moving_mean: Node,
    moving_variance: Node,
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm::new()
    }
}

impl BatchNorm {
    /// Batch normalisation with momentum 0.99 and epsilon 1e-3.
    pub fn new() -> Self {
        BatchNorm {
            momentum: 0.99,
            epsilon: 1e-3,
            activation: BatchNormActivation::Identity,
            gamma_initializer: Rc::new(Ones),
            beta_initializer: Rc::new(Zeros),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The decay of the moving statistics, in `[0, 1]` (default 0.99).
    #[must_use]
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added to the variance before the square root (default 1e-3).
    #[must_use]
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// An activation fused into the normalisation node (default none):
    /// `Relu` gives `relu(batch_norm(x))` in one pass
    /// ([`BatchNormActivation`]).
    #[must_use]
    pub fn fused_activation(mut self, activation: BatchNormActivation) -> Self {
        self.activation = activation;
        self
    }

    /// The initializer of `gamma` (default ones).
    #[must_use]
    pub fn gamma_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.gamma_initializer = Rc::new(init);
        self
    }

    /// The initializer of `beta` (default zeros).
    #[must_use]
    pub fn beta_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.beta_initializer = Rc::new(init);
        self
    }

    /// The layer's scope name (default `batch_norm`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The normalised `x`, with the batch's statistics (updating the moving
    /// ones at each forward) when `training`, else with the moving statistics.
    ///
    /// # Errors
    /// [`Error::Rank`] when `x` is not rank 2 or 4; [`Error::InvalidArgument`]
    /// when its channel dim is unknown or differs from the variables', or
    /// momentum or epsilon is out of range (each naming the layer);
    /// [`Error::GraphMismatch`].
    pub fn apply(&self, x: &Node, training: bool) -> Result<Node> {
        let label = display_name(self.name.as_deref(), "batch_norm", "BatchNorm");
        let rank = x.shape().rank();
        if rank != 2 && rank != 4 {
            return Err(Error::Rank {
                what: format!(
                    "input {} of layer {label} ([N, C] or [N, H, W, C])",
                    x.name()
                ),
                expected: "2 or 4".into(),
                got: x.shape(),
            });
        }
        let valid =
            (0.0..=1.0).contains(&self.momentum) && self.epsilon.is_finite() && self.epsilon >= 0.0;
        if !valid {
            return Err(Error::invalid(format!(
                "layer {label}: momentum must be in [0, 1] and epsilon finite and >= 0, got \
                 momentum {} and epsilon {}",
                self.momentum, self.epsilon
            )));
        }
        let channels = input_dim(x, -1, 2, &label)?;
        let (scope, v) = LayerScope::get_or_build(
            &self.built,
            x,
            self.name.as_deref(),
            "batch_norm",
            "BatchNorm",
            |_| {
                let g = x.graph();
                let c = [channels];
                Ok(BnVars {
                    channels,
                    gamma: g.variable_named("gamma", &c, self.gamma_initializer.clone(), true)?,
                    beta: g.variable_named("beta", &c, self.beta_initializer.clone(), true)?,
                    moving_mean: g.variable_named("moving_mean", &c, Zeros, false)?,
                    moving_variance: g.variable_named("moving_variance", &c, Ones, false)?,
                })
            },
        )?;
        if v.channels != channels {
            return Err(refit_error(scope, x, "channels", v.channels, channels));
        }
        let config = BatchNormConfig {
            epsilon: self.epsilon,
            decay: self.momentum,
            is_training: training,
            activation: self.activation,
        };
        scope.enter(|| {
            fused_batch_norm(
                x,
                &v.gamma,
                &v.beta,
                &v.moving_mean,
                &v.moving_variance,
                config,
            )
        })
    }

    /// `gamma`, once applied.
    pub fn gamma(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.gamma.clone())
    }

    /// `beta`, once applied.
    pub fn beta(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.beta.clone())
    }

    /// The moving mean (not trainable), once applied.
    pub fn moving_mean(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.moving_mean.clone())
    }

    /// The moving variance (not trainable), once applied.
    pub fn moving_variance(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.moving_variance.clone())
    }
}

impl Layer for BatchNorm {
    fn kind(&self) -> &'static str {
        "BatchNorm"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.built
            .get()
            .map(|(_, v)| {
                vec![
                    v.gamma.clone(),
                    v.beta.clone(),
                    v.moving_mean.clone(),
                    v.moving_variance.clone(),
                ]
            })
            .unwrap_or_default()
    }
}
