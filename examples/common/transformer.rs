//! The W7 character transformer (`../shared/bench/README.md`), built from
//! `adgraph::layers`: shared by `examples/char_transformer.rs` and the
//! benchmark's W7, so the demo trains exactly the graph the benchmark times.
//!
//! ```text
//! h0 = E[x] + P                              E [27, 64], P [16, 64]
//! per block (2):  h = h + Wo·attention(LN1(h))          4 causal heads of 16
//!                 h = h + W2·gelu_tanh(W1·LN2(h))       64 → 256 → 64
//! logits = LNf(h)·Wout + bout                Wout [64, 27], untied
//! loss = mean softmax cross-entropy over the B·T positions
//! ```
//!
//! Initialisation as the README's: embeddings, the q/k/v, MLP-in and output
//! matrices `N(0, 0.02)`; the matrices that end a residual branch (the
//! attention's output projection, MLP-out) `N(0, 0.02/√(2·layers))`; biases 0,
//! layer-norm gains 1 and shifts 0 (epsilon 1e-5).

use adgraph::init::RandomNormal;
use adgraph::layers::{Activation, Dense, Embedding, LayerNorm, MultiHeadAttention};
use adgraph::{self as ad, shape, Graph, Node};

/// The model's sizes (the README's W7 by default).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Tokens: `.` and `a`..`z`.
    pub vocab: usize,
    /// Context length.
    pub context: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the MLP's hidden layer.
    pub hidden: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vocab: 27,
            context: 16,
            dim: 64,
            heads: 4,
            layers: 2,
            hidden: 256,
        }
    }
}

/// The graph's handles.
pub struct Transformer {
    /// Input tokens `[B, T]` (whole numbers as `f32`).
    pub x: Node,
    /// Target tokens `[B, T]`.
    pub y: Node,
    /// `[B, T, vocab]`.
    pub logits: Node,
    /// Mean cross-entropy over all positions (nats per token).
    pub loss: Node,
    /// Each block's attention weights `[B, heads, T, T]`.
    pub attention: Vec<Node>,
}

/// Builds the model on `g` (its seed fixes the initial weights).
///
/// # Errors
/// Any error of the layers or ops (none for a valid config).
pub fn build(g: &Graph, c: Config) -> ad::Result<Transformer> {
    let normal = |std: f32| RandomNormal::new(0.0, std);
    let residual_std = 0.02 / (2.0 * c.layers as f32).sqrt();
    let x = g.placeholder(shape![None, c.context]);
    let y = g.placeholder(shape![None, c.context]);

    let tokens = Embedding::new(c.vocab, c.dim)
        .initializer(normal(0.02))
        .name("token_embedding");
    let positions = g.variable_named(
        "position_embedding",
        &[c.context, c.dim],
        normal(0.02),
        true,
    )?;
    // The residual stream is kept as rows [B*T, d]: the dense layers and
    // layer norms work on rows as they are, and the attention takes rows of
    // sequences of `context` steps, so no reshape copies it back and forth.
    let h0 = ad::add(&tokens.apply(&x)?, &positions)?; // [B, T, d]
    let mut h = ad::reshape(&h0, &[-1, c.dim as isize])?;

    let mut attention = Vec::with_capacity(c.layers);
    for block in 0..c.layers {
        g.name_scope(&format!("block_{block}"), || -> ad::Result<()> {
            let ln1 = LayerNorm::new().epsilon(1e-5).name("ln1");
            let att = MultiHeadAttention::new(c.heads)
                .causal(true)
                .sequence_length(c.context)
                .qkv_initializer(normal(0.02))
                .output_initializer(normal(residual_std))
                .apply_with_weights(&ln1.apply(&h)?)?;
            h = ad::add(&h, &att.output)?;
            attention.push(att.weights);

            let ln2 = LayerNorm::new().epsilon(1e-5).name("ln2");
            let mlp_in = Dense::new(c.hidden)
                .activation(Activation::GeluTanh)
                .kernel_initializer(normal(0.02))
                .name("mlp_in");
            let mlp_out = Dense::new(c.dim)
                .kernel_initializer(normal(residual_std))
                .name("mlp_out");
            h = ad::add(&h, &mlp_out.apply(&mlp_in.apply(&ln2.apply(&h)?)?)?)?;
            Ok(())
        })?;
    }
    let ln_f = LayerNorm::new().epsilon(1e-5).name("ln_f");
    let head = Dense::new(c.vocab)
        .kernel_initializer(normal(0.02))
        .name("head");
    let logit_rows = head.apply(&ln_f.apply(&h)?)?; // [B*T, vocab]
    let targets = ad::reshape(&y, &[-1])?;
    let loss = ad::reduce_mean(
        &ad::sparse_softmax_cross_entropy_loss(&targets, &logit_rows)?,
        ad::Axes::All,
        false,
    )?;
    let logits = ad::reshape(&logit_rows, &[-1, c.context as isize, c.vocab as isize])?;
    Ok(Transformer {
        x,
        y,
        logits,
        loss,
        attention,
    })
}
