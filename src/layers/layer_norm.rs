//! [`LayerNorm`]: layer normalisation over the trailing dims, on the fused
//! [`layer_norm`] op.

use std::cell::OnceCell;
use std::rc::Rc;

use super::{display_name, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::init::{Initializer, Ones, Zeros};
use crate::ops::layer_norm::layer_norm;

/// Layer normalisation (`tf.contrib.layers.layer_norm`, Keras
/// `LayerNormalization`): each example is normalised over the dims from
/// `begin_norm_axis` to the last, `(x - mean) / sqrt(var + epsilon) * gamma + beta`
/// with the biased variance, the same in training and inference.
///
/// Variables: `gamma` (ones) and `beta` (zeros), of the normalised dims'
/// shape. Default scope `layer_norm`, the last dim normalised
/// (`begin_norm_axis` −1), epsilon 1e-3 (Keras's; torch's `nn.LayerNorm`
/// uses 1e-5).
///
/// ```
/// use adgraph::{self as ad, layers::{LayerNorm, Layer}};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 16, 64]);
/// let ln = LayerNorm::new().epsilon(1e-5);
/// assert_eq!(ln.apply(&x).unwrap().shape(), ad::shape![None, 16, 64]);
/// assert_eq!(ln.gamma().unwrap().name(), "layer_norm/gamma");
/// assert_eq!(ln.gamma().unwrap().shape(), ad::shape![64]);
/// let both = LayerNorm::new().begin_norm_axis(-2);
/// assert_eq!(both.apply(&x).unwrap().shape(), ad::shape![None, 16, 64]);
/// assert_eq!(both.beta().unwrap().shape(), ad::shape![16, 64]);
/// ```
pub struct LayerNorm {
    begin_norm_axis: isize,
    epsilon: f32,
    gamma_initializer: InitRef,
    beta_initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, LnVars)>,
}

struct LnVars {
    normalized: Vec<usize>,
    gamma: Node,
    beta: Node,
}

impl Default for LayerNorm {
    fn default() -> Self {
        LayerNorm::new()
    }
}

impl LayerNorm {
    /// Layer normalisation over the last dim with epsilon 1e-3.
    pub fn new() -> Self {
        LayerNorm {
            begin_norm_axis: -1,
            epsilon: 1e-3,
            gamma_initializer: Rc::new(Ones),
            beta_initializer: Rc::new(Zeros),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The first normalised dim (negative counts from the end; default −1,
    /// the last dim only).
    #[must_use]
    pub fn begin_norm_axis(mut self, axis: isize) -> Self {
        self.begin_norm_axis = axis;
        self
    }

    /// Added to the variance before the square root (default 1e-3).
    #[must_use]
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
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

    /// The layer's scope name (default `layer_norm`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The normalised `x`; the first call makes the variables from the static
    /// normalised dims of `x`, later calls share them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer, `x` and its shape when
    /// `begin_norm_axis` is not a dim of `x`, a normalised dim is unknown, or
    /// the normalised dims differ from the variables'; the op's error for a
    /// bad epsilon; [`Error::GraphMismatch`].
    pub fn apply(&self, x: &Node) -> Result<Node> {
        let label = display_name(self.name.as_deref(), "layer_norm", "LayerNorm");
        let shape = x.shape();
        let rank = shape.rank() as isize;
        let axis = if self.begin_norm_axis < 0 {
            rank + self.begin_norm_axis
        } else {
            self.begin_norm_axis
        };
        let normalized: Option<Vec<usize>> = usize::try_from(axis)
            .ok()
            .filter(|&a| (a as isize) < rank)
            .and_then(|a| shape.dims()[a..].iter().copied().collect());
        let Some(normalized) = normalized else {
            return Err(Error::invalid(format!(
                "layer {label}: input {} has shape {shape}; begin_norm_axis {} must be one of \
                 its dims, and the dims from it on must be known when the graph is built",
                x.name(),
                self.begin_norm_axis
            )));
        };
        let (scope, v) = LayerScope::get_or_build(
            &self.built,
            x,
            self.name.as_deref(),
            "layer_norm",
            "LayerNorm",
            |_| {
                let g = x.graph();
                Ok(LnVars {
                    gamma: g.variable_named(
                        "gamma",
                        &normalized,
                        self.gamma_initializer.clone(),
                        true,
                    )?,
                    beta: g.variable_named(
                        "beta",
                        &normalized,
                        self.beta_initializer.clone(),
                        true,
                    )?,
                    normalized: normalized.clone(),
                })
            },
        )?;
        if v.normalized != normalized {
            return Err(Error::invalid(format!(
                "layer {} (LayerNorm): input {} has shape {shape}, normalised dims {normalized:?}, \
                 but the layer's variables were made for {:?}",
                scope.name(),
                x.name(),
                v.normalized
            )));
        }
        let begin = axis as usize;
        scope.enter(|| layer_norm(x, &v.gamma, &v.beta, begin, self.epsilon))
    }

    /// `gamma`, once applied.
    pub fn gamma(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.gamma.clone())
    }

    /// `beta`, once applied.
    pub fn beta(&self) -> Option<Node> {
        self.built.get().map(|(_, v)| v.beta.clone())
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        "LayerNorm"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.built
            .get()
            .map(|(_, v)| vec![v.gamma.clone(), v.beta.clone()])
            .unwrap_or_default()
    }
}
