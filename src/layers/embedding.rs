//! [`Embedding`]: a trainable table of vectors looked up by integer ids.

use std::cell::OnceCell;
use std::rc::Rc;

use super::{InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::init::{Initializer, RandomNormal};
use crate::ops::index::embedding_lookup;

/// An embedding (Keras `Embedding`, `tf.nn.embedding_lookup` on a table
/// variable): ids of any shape (whole numbers in `[0, vocab)`, as `f32`, like
/// every integer input of adgraph) → `ids.shape + [dim]`, row `id` of the table.
///
/// Variable: `<scope>/embeddings [vocab, dim]`, normal `N(0, 1)` by default
/// (torch's `nn.Embedding`; `.initializer(..)` changes it). Default scope
/// `embedding`. The gradient is dense (the table's shape) with each row the
/// sum of the gradients of its lookups. A non-integer, negative or
/// out-of-range id is an error at run time naming the `<scope>/Gather` node,
/// the position and the value.
///
/// ```
/// use adgraph::{self as ad, layers::{Embedding, Layer}, init::RandomNormal};
/// let g = ad::Graph::new();
/// let ids = g.placeholder(ad::shape![None, 16]);
/// let emb = Embedding::new(27, 64).initializer(RandomNormal::new(0.0, 0.02));
/// let h = emb.apply(&ids).unwrap();
/// assert_eq!(h.shape(), ad::shape![None, 16, 64]);
/// assert_eq!(emb.embeddings().unwrap().name(), "embedding/embeddings");
///
/// let feed = ad::feed! { ids => [[30.0; 16]] }.unwrap();
/// let err = ad::RunTime::new().forward(&h, &feed).unwrap_err().to_string();
/// assert!(err.contains("embedding/Gather") && err.contains("30"), "{err}");
/// ```
pub struct Embedding {
    vocab: usize,
    dim: usize,
    initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, Node)>,
}

impl Embedding {
    /// A table of `vocab` vectors of `dim` values.
    pub fn new(vocab: usize, dim: usize) -> Self {
        Embedding {
            vocab,
            dim,
            initializer: Rc::new(RandomNormal::new(0.0, 1.0)),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// The table's initializer (default [`RandomNormal`] `N(0, 1)`).
    #[must_use]
    pub fn initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.initializer = Rc::new(init);
        self
    }

    /// The layer's scope name (default `embedding`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The vectors of `ids`: `ids.shape + [dim]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer when `vocab` or `dim` is 0;
    /// [`Error::GraphMismatch`]; an initializer's error; at run time, the
    /// lookup's errors for bad ids.
    pub fn apply(&self, ids: &Node) -> Result<Node> {
        if self.vocab == 0 || self.dim == 0 {
            return Err(Error::invalid(format!(
                "layer {}: vocab ({}) and dim ({}) must be at least 1",
                super::display_name(self.name.as_deref(), "embedding", "Embedding"),
                self.vocab,
                self.dim
            )));
        }
        let (scope, table) = LayerScope::get_or_build(
            &self.built,
            ids,
            self.name.as_deref(),
            "embedding",
            "Embedding",
            |_| {
                ids.graph().variable_named(
                    "embeddings",
                    &[self.vocab, self.dim],
                    self.initializer.clone(),
                    true,
                )
            },
        )?;
        scope.enter(|| embedding_lookup(table, ids))
    }

    /// The table `[vocab, dim]`, once applied.
    pub fn embeddings(&self) -> Option<Node> {
        self.built.get().map(|(_, t)| t.clone())
    }
}

impl Layer for Embedding {
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.embeddings().into_iter().collect()
    }
}
