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
use crate::ops::activation::softmax_axis;
use crate::ops::arithmetic::{add, multiply};
use crate::ops::array::{reshape, transpose, unstack};
use crate::ops::linalg::{matmul, matmul_transposed};
use crate::tensor::Tensor;

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
/// known when the graph is built (`B` may be `None`). The mask is a
/// constant: −1e9 added before the softmax gives exactly 0 after it in
/// `f32`, as −∞ would, without infinities in the gradient.
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
    ///
    /// # Errors
    /// [`Error::Rank`] when `x` is not rank 3; [`Error::InvalidArgument`]
    /// when `T` or `d` is unknown, `d` is not a multiple of the number of
    /// heads (or that is 0), or `d` differs from the variables' (each naming
    /// the layer, `x` and its shape); [`Error::GraphMismatch`].
    pub fn apply_with_weights(&self, x: &Node) -> Result<Attention> {
        let label = display_name(
            self.name.as_deref(),
            "multi_head_attention",
            "MultiHeadAttention",
        );
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
        let d = input_dim(x, -1, 3, &label)?;
        let t = input_dim(x, 1, 3, &label)?;
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
        scope.enter(|| self.attend(x, v, t, d))
    }

    /// The attention itself, in the layer's scope.
    fn attend(&self, x: &Node, v: &MhaVars, t: usize, d: usize) -> Result<Attention> {
        let heads = self.num_heads;
        let dh = d / heads;
        let (ti, di, hi, dhi) = (t as isize, d as isize, heads as isize, dh as isize);
        // [B*T, d] rows -> [B*T, 3d] -> [B, T, 3, heads, dh] -> [3, B, heads, T, dh]
        let rows = reshape(x, &[-1, di])?;
        let qkv = v.qkv.apply(&rows)?;
        let qkv = reshape(&qkv, &[-1, ti, 3, hi, dhi])?;
        let qkv = transpose(&qkv, &[2, 0, 3, 1, 4])?;
        let parts = unstack(&qkv, 0)?;
        let [q, k, val] = <[Node; 3]>::try_from(parts)
            .map_err(|_| Error::invalid("internal: q/k/v unstack did not give 3 parts"))?;
        // softmax(q kᵀ / sqrt(dh) + mask): the scale folded into q.
        let g = x.graph();
        let scale = g.constant(Tensor::from_elem(vec![], 1.0 / (dh as f32).sqrt()))?;
        let q = multiply(&q, &scale)?;
        let mut scores = matmul_transposed(&q, &k, false, true)?;
        if self.causal {
            scores = add(&scores, &g.constant(causal_mask(t))?)?;
        }
        let weights = softmax_axis(&scores, 3)?;
        // [B, heads, T, dh] -> [B, T, heads, dh] -> [B*T, d] -> projection -> [B, T, d]
        let y = matmul(&weights, &val)?;
        let y = transpose(&y, &[0, 2, 1, 3])?;
        let y = reshape(&y, &[-1, di])?;
        let y = v.output.apply(&y)?;
        let output = reshape(&y, &[-1, ti, di])?;
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

/// The additive causal mask `[t, t]`: 0 where `s <= t`, −1e9 where `s > t`.
pub fn causal_mask(t: usize) -> Tensor {
    Tensor::from_shape_fn(vec![t, t], |i| if i[1] > i[0] { -1e9 } else { 0.0 })
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
