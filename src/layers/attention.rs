//! [`MultiHeadAttention`]: multi-head scaled dot-product self-attention with
//! an optional causal mask, a fused query/key/value projection and an output
//! projection.

use std::cell::OnceCell;
use std::rc::Rc;

use super::dense::Dense;
use super::{display_name, input_dim, refit_error, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::init::{GlorotUniform, Initializer, Zeros};
use crate::ops::array::reshape;
use crate::ops::attention::{self_attention, self_attention_weights};

/// What [`MultiHeadAttention::apply_with_weights`] returns.
#[derive(Debug, Clone)]
pub struct Attention {
    /// The layer's output `[B, T, d]`.
    pub output: Node,
    /// The attention weights `[B, heads, T, T]`: row `t` of head `h` is the
    /// softmax over the positions `s` that position `t` attends to (zero for
    /// `s > t` with the causal mask), e.g. for a heat map.
    pub weights: Node,
}

/// Multi-head self-attention (Keras `MultiHeadAttention` with query = key =
/// value; GPT's `CausalSelfAttention`) on `x [B, T, d]`, `heads` heads of
/// `dh = d / heads` dims:
///
/// ```text
/// [q | k | v] = x · Wqkv + bqkv                      Wqkv [d, 3d]: columns 0..d q, d..2d k, 2d..3d v;
///                                                    head j uses columns j·dh .. (j+1)·dh of each
/// att_j = softmax(q_j · k_jᵀ / √dh + M)             [B, heads, T, T]; M[t, s] = −1e9 for s > t
///                                                    with the causal mask, else 0
/// out = (att_j · v_j, heads side by side) · Wo + bo  Wo [d, d]
/// ```
///
/// Variables: `<scope>/qkv/kernel [d, 3d]`, `<scope>/qkv/bias [3d]`,
/// `<scope>/output/kernel [d, d]`, `<scope>/output/bias [d]` (Glorot uniform
/// kernels, zero biases; GPT-2's initialisation is
/// `.qkv_initializer(RandomNormal::new(0.0, 0.02))` and a smaller normal for
/// the output). Default scope `multi_head_attention`. `T` and `d` must be
/// known when the graph is built (`B` may be `None`). The attention itself
/// is the fused [`self_attention`] op on the
/// projected rows (one pass per sequence, no copies of q, k and v); the
/// weights node is the same math written with simple ops
/// ([`self_attention_weights`]), run only
/// when asked for.
///
/// ```
/// use adgraph::{self as ad, layers::{Layer, MultiHeadAttention}};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 16, 64]);
/// let mha = MultiHeadAttention::new(4).causal(true);
/// let att = mha.apply_with_weights(&x).unwrap();
/// assert_eq!(att.output.shape(), ad::shape![None, 16, 64]);
/// assert_eq!(att.weights.shape(), ad::shape![None, 4, 16, 16]);
/// let names: Vec<String> = mha.variables().iter().map(|v| v.name()).collect();
/// assert_eq!(names, ["multi_head_attention/qkv/kernel", "multi_head_attention/qkv/bias",
///                    "multi_head_attention/output/kernel", "multi_head_attention/output/bias"]);
/// let err = MultiHeadAttention::new(5).apply(&x).unwrap_err().to_string();
/// assert!(err.contains("multi_head_attention (MultiHeadAttention)") && err.contains("5 heads"), "{err}");
/// ```
pub struct MultiHeadAttention {
    num_heads: usize,
    causal: bool,
    sequence_length: Option<usize>,
    use_bias: bool,
    qkv_initializer: InitRef,
    output_initializer: InitRef,
    bias_initializer: InitRef,
    name: Option<String>,
    built: OnceCell<(LayerScope, MhaVars)>,
}

struct MhaVars {
    dim: usize,
    qkv: Dense,
    output: Dense,
}

impl MultiHeadAttention {
    /// Self-attention with `num_heads` heads, no mask, biases, Glorot-uniform kernels.
    pub fn new(num_heads: usize) -> Self {
        MultiHeadAttention {
            num_heads,
            causal: false,
            sequence_length: None,
            use_bias: true,
            qkv_initializer: Rc::new(GlorotUniform::new()),
            output_initializer: Rc::new(GlorotUniform::new()),
            bias_initializer: Rc::new(Zeros),
            name: None,
            built: OnceCell::new(),
        }
    }

    /// With `true`, position `t` attends only to positions `s <= t` (a
    /// decoder's mask; default `false`).
    #[must_use]
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// The sequences' length `t`. With it, `apply` also takes rows
    /// `[B * t, d]` (B sequences of `t` steps, one after the other, as a
    /// model that keeps its residual stream as rows has them) and then
    /// returns rows; a `[B, T, d]` input must then have `T == t`.
    #[must_use]
    pub fn sequence_length(mut self, t: usize) -> Self {
        self.sequence_length = Some(t);
        self
    }

    /// Whether the projections add biases (default `true`).
    #[must_use]
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// The initializer of the fused query/key/value kernel `[d, 3d]` (default Glorot uniform).
    #[must_use]
    pub fn qkv_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.qkv_initializer = Rc::new(init);
        self
    }

    /// The initializer of the output kernel `[d, d]` (default Glorot uniform).
    #[must_use]
    pub fn output_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.output_initializer = Rc::new(init);
        self
    }

    /// The initializer of both biases (default zeros).
    #[must_use]
    pub fn bias_initializer(mut self, init: impl Initializer + 'static) -> Self {
        self.bias_initializer = Rc::new(init);
        self
    }

    /// The layer's scope name (default `multi_head_attention`, made unique in the graph).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// The attention's output `[B, T, d]` for `x [B, T, d]`.
    ///
    /// # Errors
    /// As [`apply_with_weights`](MultiHeadAttention::apply_with_weights).
    pub fn apply(&self, x: &Node) -> Result<Node> {
        Ok(self.apply_with_weights(x)?.output)
    }

    /// The attention's output and its weights `[B, heads, T, T]`. The first
    /// call makes the variables from the static `d` of `x`, later calls share them.
    /// `x` is `[B, T, d]`, or rows `[B * t, d]` with
    /// [`sequence_length`](MultiHeadAttention::sequence_length) `t` (the
    /// output has the input's shape).
    ///
    /// # Errors
    /// [`Error::Rank`] when `x` is not rank 3 (or 2 with a sequence length);
    /// [`Error::InvalidArgument`] when `T` or `d` is unknown, `T` differs from
    /// the sequence length, `d` is not a multiple of the number of
    /// heads (or that is 0), or `d` differs from the variables' (each naming
    /// the layer, `x` and its shape); [`Error::GraphMismatch`].
    pub fn apply_with_weights(&self, x: &Node) -> Result<Attention> {
        let label = display_name(
            self.name.as_deref(),
            "multi_head_attention",
            "MultiHeadAttention",
        );
        let shape = x.shape();
        let rows = shape.rank() == 2 && self.sequence_length.is_some();
        if shape.rank() != 3 && !rows {
            return Err(Error::Rank {
                what: format!(
                    "input {} of layer {label} ([batch, time, features], or rows \
                     [batch * time, features] with .sequence_length(time))",
                    x.name()
                ),
                expected: if self.sequence_length.is_some() {
                    "2 or 3".into()
                } else {
                    "3".into()
                },
                got: shape,
            });
        }
        let d = input_dim(x, -1, 2, &label)?;
        let t = match self.sequence_length {
            Some(t) if rows => t,
            _ => input_dim(x, 1, 3, &label)?,
        };
        if t == 0 {
            return Err(Error::invalid(format!(
                "layer {label}: input {} has shape {shape}: sequences of 0 steps",
                x.name()
            )));
        }
        if let Some(s) = self.sequence_length.filter(|&s| s != t) {
            return Err(Error::invalid(format!(
                "layer {label}: input {} has shape {shape}, sequences of {t} steps, but the \
                 layer's sequence_length is {s}",
                x.name()
            )));
        }
        let heads = self.num_heads;
        if heads == 0 || d % heads != 0 {
            return Err(Error::invalid(format!(
                "layer {label}: input {} has shape {shape}: its {d} features cannot be split \
                 into {heads} heads of equal size (the number of heads must divide them)",
                x.name()
            )));
        }
        let (scope, v) = LayerScope::get_or_build(
            &self.built,
            x,
            self.name.as_deref(),
            "multi_head_attention",
            "MultiHeadAttention",
            |_| {
                let qkv = Dense::new(3 * d)
                    .name("qkv")
                    .use_bias(self.use_bias)
                    .kernel_initializer(self.qkv_initializer.clone())
                    .bias_initializer(self.bias_initializer.clone());
                let output = Dense::new(d)
                    .name("output")
                    .use_bias(self.use_bias)
                    .kernel_initializer(self.output_initializer.clone())
                    .bias_initializer(self.bias_initializer.clone());
                // The variables now, q/k/v first.
                qkv.build(x.graph(), d)?;
                output.build(x.graph(), d)?;
                Ok(MhaVars {
                    dim: d,
                    qkv,
                    output,
                })
            },
        )?;
        if v.dim != d {
            return Err(refit_error(scope, x, "features", v.dim, d));
        }
        scope.enter(|| self.attend(x, v, t, d, rows))
    }

    /// The attention itself, in the layer's scope: the fused
    /// [`self_attention`] on the projected rows for the output, and the
    /// weights from simple ops ([`self_attention_weights`], computed only when asked for).
    fn attend(&self, x: &Node, v: &MhaVars, t: usize, d: usize, rows: bool) -> Result<Attention> {
        let x_rows = if rows {
            x.clone()
        } else {
            reshape(x, &[-1, d as isize])?
        };
        let qkv = v.qkv.apply(&x_rows)?; // [B*T, 3d]
        let heads = self.num_heads;
        let y = self_attention(&qkv, heads, t, self.causal)?; // [B*T, d]
        let weights = self_attention_weights(&qkv, heads, t, self.causal)?;
        let y = v.output.apply(&y)?;
        let output = if rows {
            y
        } else {
            reshape(&y, &[-1, t as isize, d as isize])?
        };
        Ok(Attention { output, weights })
    }

    /// The fused query/key/value projection (`qkv/kernel [d, 3d]`, `qkv/bias`), once applied.
    pub fn qkv(&self) -> Option<&Dense> {
        self.built.get().map(|(_, v)| &v.qkv)
    }

    /// The output projection (`output/kernel [d, d]`, `output/bias`), once applied.
    pub fn output_projection(&self) -> Option<&Dense> {
        self.built.get().map(|(_, v)| &v.output)
    }
}

impl Layer for MultiHeadAttention {
    fn kind(&self) -> &'static str {
        "MultiHeadAttention"
    }
    fn scope_name(&self) -> Option<String> {
        self.built.get().map(|(s, _)| s.name().to_string())
    }
    fn variables(&self) -> Vec<Node> {
        self.built
            .get()
            .map(|(_, v)| {
                let mut vars = v.qkv.variables();
                vars.extend(v.output.variables());
                vars
            })
            .unwrap_or_default()
    }
}
