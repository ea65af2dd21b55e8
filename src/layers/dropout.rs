//! [`Dropout`]: inverted dropout while training, the identity in inference.

use std::cell::OnceCell;

use super::{Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::ops::dropout::dropout;

/// Inverted dropout (`tf.layers.dropout`, Keras `Dropout`), the
/// [`dropout`] op in a scope: with `training`, each element
/// is zeroed with probability `rate` and the others scaled by
/// `1 / (1 - rate)`, a new mask every forward (drawn from the run time's
/// generator); without, the identity. No variables; default scope `dropout`.
///
/// ```
/// use adgraph::{self as ad, layers::Dropout};
/// let g = ad::Graph::new();
/// let x = g.placeholder([1000]);
/// let drop = Dropout::new(0.5);
/// let train = drop.apply(&x, true).unwrap();
/// let infer = drop.apply(&x, false).unwrap();
/// assert_eq!(train.name(), "dropout/Dropout");
/// let feed = ad::feed! { x => ad::tensor::full(&[1000], 1.0) }.unwrap();
/// let mut rt = ad::RunTime::with_seed(1);
/// assert!(rt.forward(&train, &feed).unwrap().iter().all(|&v| v == 0.0 || v == 2.0));
/// assert!(rt.forward(&infer, &feed).unwrap().iter().all(|&v| v == 1.0));
/// assert!(Dropout::new(1.0).apply(&x, true).is_err());
/// ```
pub struct Dropout {
    rate: f32,
    name: Option<String>,
    built: OnceCell<(LayerScope, ())>,
}

impl Dropout {
    /// Dropout of probability `rate` (in `[0, 1)`).
    pub fn new(rate: f32) -> Self {
        Dropout {
            rate,
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The layer's scope name (default `dropout`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The dropout probability.
    pub fn rate(&self) -> f32 {
        self.rate
    }

    /// `x` with dropout when `training`, else `x` (through an identity
    /// [`dropout`] node, so the graph reads the same).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer when `rate` is not in
    /// `[0, 1)`; [`Error::GraphMismatch`] when the layer was applied on another graph.
    pub fn apply(&self, x: &Node, training: bool) -> Result<Node> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid(format!(
                "layer {}: rate must be in [0, 1), got {}",
                super::display_name(self.name.as_deref(), "dropout", "Dropout"),
                self.rate
            )));
        }
        let (scope, ()) = LayerScope::get_or_build(
            &self.built,
            x,
            self.name.as_deref(),
            "dropout",
            "Dropout",
            |_| Ok(()),
        )?;
        scope.enter(|| dropout(x, self.rate, training))
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        Vec::new()
    }
}
