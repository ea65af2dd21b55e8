//! Scaled dot-product self-attention, fused: [`self_attention`] takes the
//! packed query/key/value rows of a multi-head attention layer and gives the
//! heads' outputs side by side, in one pass per sequence.
//!
//! Written with simple ops ([`self_attention_weights`] and the composition
//! below), the same attention costs a reshape, a 5-D transpose, three
//! unstacked copies, a scale, two batched matmuls of `B·heads` tiny matrices
//! each, a mask, a softmax, a transpose and a reshape back, and about twice
//! that in its gradient: on W7 (`B·heads = 256` products of 16 × 16) the copies
//! and the per-product calls cost more than the arithmetic. The fused op reads
//! q, k and v where they lie in the rows, keeps the weights for its gradient
//! ([`SelfAttentionGrad`], one more pass), and writes each output row once;
//! work is split over the sequences. Its gradient's own gradient (second
//! derivatives) is that of the simple-op composition.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::exp::exp;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::activation::softmax_axis;
use crate::ops::arithmetic::{add, multiply, subtract};
use crate::ops::array::{reshape, stack, transpose, unstack};
use crate::ops::build;
use crate::ops::linalg::matmul_transposed;
use crate::ops::reduce::reduce_sum;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Sequences' work (multiply-adds) from which the sequences are split over threads.
const PAR_MIN_WORK: usize = 1 << 15;

/// Self-attention of packed rows `qkv [B·T, 3d]` (row `b·T + t` is step `t`
/// of sequence `b`; columns `0..d` q, `d..2d` k, `2d..3d` v; head `j` uses
/// columns `j·dh..(j+1)·dh` of each) into rows `[B·T, d]`: for each sequence
/// and head, `softmax(q kᵀ / √dh + mask) v`, the heads side by side.
pub struct SelfAttention {
    /// Number of heads (divides `d`).
    pub heads: usize,
    /// Steps per sequence `T` (divides the row count).
    pub seq_len: usize,
    /// Position `t` attends only to `s <= t`.
    pub causal: bool,
}

/// The gradient of [`SelfAttention`] w.r.t. its rows: inputs `qkv`, the
/// upstream gradient `[B·T, d]` and the forward node (whose weights it reads
/// when they were kept); output `[B·T, 3d]`.
pub struct SelfAttentionGrad {
    /// As the forward's.
    pub heads: usize,
    /// As the forward's.
    pub seq_len: usize,
    /// As the forward's.
    pub causal: bool,
}

/// The attention weights of a forward pass, `[B, heads, T, T]` row-major.
struct Weights(Vec<f32>);

/// The sizes of one attention.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    heads: usize,
    dh: usize,
    d: usize,
    causal: bool,
}

impl Dims {
    fn scale(&self) -> f32 {
        1.0 / (self.dh as f32).sqrt()
    }
    /// Positions step `t` attends to: `0..end`.
    fn end(&self, t: usize) -> usize {
        if self.causal {
            t + 1
        } else {
            self.t
        }
    }
    fn par(&self) -> bool {
        self.b > 1 && self.b * self.heads * self.t * self.t * self.dh >= PAR_MIN_WORK
    }
}

/// Checks the attributes and the (static or concrete) shape of `qkv`; returns
/// the output shape `[rows, d]`.
fn rule(
    name: &str,
    heads: usize,
    seq_len: usize,
    qkv: &TensorShape,
) -> Result<(Option<usize>, Option<usize>)> {
    if heads == 0 || seq_len == 0 {
        return Err(Error::invalid(format!(
            "{name}: heads ({heads}) and seq_len ({seq_len}) must be at least 1"
        )));
    }
    if qkv.rank() != 2 {
        return Err(Error::Rank {
            what: format!("{name} qkv (rows [batch * time, 3 * features])"),
            expected: "2".into(),
            got: qkv.clone(),
        });
    }
    let (rows, width) = (qkv.dims()[0], qkv.dims()[1]);
    if let Some(w) = width {
        if w % (3 * heads) != 0 || w == 0 {
            return Err(Error::invalid(format!(
                "{name}: qkv has shape {qkv}; its {w} columns are not q, k and v of \
                 {heads} heads of equal size (a positive multiple of 3 * {heads})"
            )));
        }
    }
    if let Some(n) = rows {
        if n % seq_len != 0 {
            return Err(Error::invalid(format!(
                "{name}: qkv has shape {qkv}; its {n} rows are not whole sequences of \
                 {seq_len} steps"
            )));
        }
    }
    Ok((rows, width.map(|w| w / 3)))
}

fn dims_of(name: &str, heads: usize, seq_len: usize, causal: bool, qkv: &Tensor) -> Result<Dims> {
    let (rows, d) = rule(name, heads, seq_len, &TensorShape::known(qkv.shape()))?;
    let (rows, d) = (rows.unwrap_or(0), d.unwrap_or(0));
    Ok(Dims {
        b: rows / seq_len,
        t: seq_len,
        heads,
        dh: d / heads,
        d,
        causal,
    })
}

/// `a · b`, in eight running sums (so the loop vectorises; the order of
/// the sums is fixed, whatever the number of threads).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((acc, x), y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha * x`.
#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// One sequence's attention: `rows` its `[T, 3d]` qkv rows, `out` its
/// `[T, d]` output rows, `w` its `[heads, T, T]` weights (entries past a
/// causal row's end stay 0).
fn forward_sequence(n: &Dims, rows: &[f32], out: &mut [f32], w: &mut [f32]) {
    let (t_len, d, dh, w3) = (n.t, n.d, n.dh, 3 * n.d);
    let scale = n.scale();
    for h in 0..n.heads {
        let wh = &mut w[h * t_len * t_len..(h + 1) * t_len * t_len];
        for t in 0..t_len {
            let q = &rows[t * w3 + h * dh..][..dh];
            let end = n.end(t);
            let row = &mut wh[t * t_len..(t + 1) * t_len];
            let mut max = f32::NEG_INFINITY;
            for (s, slot) in row[..end].iter_mut().enumerate() {
                let k = &rows[s * w3 + d + h * dh..][..dh];
                *slot = dot(q, k) * scale;
                max = max.max(*slot);
            }
            let mut sum = 0.0;
            for slot in &mut row[..end] {
                *slot = exp(*slot - max);
                sum += *slot;
            }
            let inv = 1.0 / sum;
            row[..end].iter_mut().for_each(|a| *a *= inv);
            let o = &mut out[t * d + h * dh..][..dh];
            o.fill(0.0);
            for (s, &a) in row[..end].iter().enumerate() {
                axpy(a, &rows[s * w3 + 2 * d + h * dh..][..dh], o);
            }
        }
    }
}

/// One sequence's gradient: `dout` its `[T, d]` upstream rows, `w` its
/// weights, `dqkv` its `[T, 3d]` gradient rows (written whole).
///
/// With `A` the weights, `dO` the upstream gradient of a head:
/// `dV = Aᵀ dO`, `dA = dO Vᵀ`, `dS = A ⊙ (dA − rowsum(A ⊙ dA))`,
/// `dQ = dS K / √dh`, `dK = dSᵀ Q / √dh`.
fn backward_sequence(n: &Dims, rows: &[f32], dout: &[f32], w: &[f32], dqkv: &mut [f32]) {
    let (t_len, d, dh, w3) = (n.t, n.d, n.dh, 3 * n.d);
    let scale = n.scale();
    dqkv.fill(0.0);
    let mut ds = vec![0.0f32; t_len];
    let mut dq = vec![0.0f32; dh];
    for h in 0..n.heads {
        let wh = &w[h * t_len * t_len..(h + 1) * t_len * t_len];
        for t in 0..t_len {
            let end = n.end(t);
            let a = &wh[t * t_len..t * t_len + end];
            let go = &dout[t * d + h * dh..][..dh];
            let q_off = t * w3 + h * dh;
            let q = &rows[q_off..q_off + dh];
            // dA[t, s] = dO[t] · V[s], and rowsum(A ⊙ dA)
            let mut row_dot = 0.0;
            for (s, slot) in ds[..end].iter_mut().enumerate() {
                *slot = dot(go, &rows[s * w3 + 2 * d + h * dh..][..dh]);
                row_dot += a[s] * *slot;
            }
            dq.fill(0.0);
            for s in 0..end {
                let k_off = s * w3 + d + h * dh;
                let dsv = a[s] * (ds[s] - row_dot) * scale;
                // dQ[t] += dS[t, s] K[s] / √dh; dK[s] += dS[t, s] Q[t] / √dh
                axpy(dsv, &rows[k_off..k_off + dh], &mut dq);
                axpy(dsv, q, &mut dqkv[k_off..k_off + dh]);
                // dV[s] += A[t, s] dO[t]
                axpy(a[s], go, &mut dqkv[k_off + d..k_off + d + dh]);
            }
            axpy(1.0, &dq, &mut dqkv[q_off..q_off + dh]);
        }
    }
}

/// The rows of `x` in row-major order (copied only when `x` is not so laid out).
fn row_major(x: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// The forward kernel: `(out [B·T·d], weights [B·heads·T·T])`.
fn attend(n: &Dims, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0f32; n.b * n.t * n.d];
    let mut w = vec![0.0f32; n.b * n.heads * n.t * n.t];
    if n.b == 0 || n.d == 0 {
        return (out, w);
    }
    let (seq_rows, seq_out, seq_w) = (n.t * 3 * n.d, n.t * n.d, n.heads * n.t * n.t);
    let one = |(b, (o, wb)): (usize, (&mut [f32], &mut [f32]))| {
        forward_sequence(n, &qkv[b * seq_rows..(b + 1) * seq_rows], o, wb);
    };
    if n.par() {
        out.par_chunks_mut(seq_out)
            .zip(w.par_chunks_mut(seq_w))
            .enumerate()
            .for_each(one);
    } else {
        out.chunks_mut(seq_out)
            .zip(w.chunks_mut(seq_w))
            .enumerate()
            .for_each(one);
    }
    (out, w)
}

impl Op for SelfAttention {
    fn type_name(&self) -> &'static str {
        "SelfAttention"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [qkv] = inputs else {
            return Err(Error::invalid("SelfAttention takes 1 input (qkv)"));
        };
        let (rows, d) = rule(self.type_name(), self.heads, self.seq_len, qkv)?;
        Ok(TensorShape::new(vec![rows, d]))
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let [qkv] = inputs else {
            return Err(Error::invalid("SelfAttention takes 1 input (qkv)"));
        };
        let n = dims_of(self.type_name(), self.heads, self.seq_len, self.causal, qkv)?;
        let (out, w) = attend(&n, &row_major(qkv));
        if !ctx.is_inference() {
            ctx.save(Weights(w));
        }
        Ok(Tensor::from_shape_vec(vec![n.b * n.t, n.d], out)?)
    }
    // dqkv = SelfAttentionGrad(qkv, g, this node): see backward_sequence.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = SelfAttentionGrad {
            heads: self.heads,
            seq_len: self.seq_len,
            causal: self.causal,
        };
        let dqkv = ctx.add_op(op, &[ctx.input(0), ctx.grad(), ctx.output()])?;
        Ok(vec![Some(dqkv)])
    }
}

impl Op for SelfAttentionGrad {
    fn type_name(&self) -> &'static str {
        "SelfAttentionGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [qkv, dout, _forward] = inputs else {
            return Err(Error::invalid(
                "SelfAttentionGrad takes 3 inputs (qkv, upstream gradient, forward node)",
            ));
        };
        let (rows, d) = rule(self.type_name(), self.heads, self.seq_len, qkv)?;
        let expected = TensorShape::new(vec![rows, d]);
        if !dout.is_compatible(&expected) {
            return Err(Error::ShapeMismatch {
                what: "SelfAttentionGrad upstream gradient (the forward's output)".into(),
                expected,
                got: (*dout).clone(),
            });
        }
        Ok((*qkv).clone())
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let [qkv, dout, _forward] = inputs else {
            return Err(Error::invalid("SelfAttentionGrad takes 3 inputs"));
        };
        let n = dims_of(self.type_name(), self.heads, self.seq_len, self.causal, qkv)?;
        if dout.shape() != [n.b * n.t, n.d] {
            return Err(Error::ShapeMismatch {
                what: "SelfAttentionGrad upstream gradient (the forward's output)".into(),
                expected: TensorShape::known(&[n.b * n.t, n.d]),
                got: TensorShape::known(dout.shape()),
            });
        }
        let rows = row_major(qkv);
        let recomputed;
        let w: &[f32] = match ctx.input_saved::<Weights>(2) {
            Some(Weights(w)) if w.len() == n.b * n.heads * n.t * n.t => w,
            _ => {
                recomputed = attend(&n, &rows).1;
                &recomputed
            }
        };
        let dout = row_major(dout);
        let mut dqkv = vec![0.0f32; rows.len()];
        let (seq_rows, seq_out, seq_w) = (n.t * 3 * n.d, n.t * n.d, n.heads * n.t * n.t);
        if n.b > 0 && n.d > 0 {
            let one = |(b, dq): (usize, &mut [f32])| {
                backward_sequence(
                    &n,
                    &rows[b * seq_rows..(b + 1) * seq_rows],
                    &dout[b * seq_out..(b + 1) * seq_out],
                    &w[b * seq_w..(b + 1) * seq_w],
                    dq,
                );
            };
            if n.par() {
                dqkv.par_chunks_mut(seq_rows).enumerate().for_each(one);
            } else {
                dqkv.chunks_mut(seq_rows).enumerate().for_each(one);
            }
        }
        Ok(Tensor::from_shape_vec(qkv.shape().to_vec(), dqkv)?)
    }
    // The gradient of the same math written with simple ops.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (heads, seq_len, causal) = (self.heads, self.seq_len, self.causal);
        ctx.gradient_of_composition(|v| composed_gradient(&v[0], &v[1], heads, seq_len, causal))
    }
}

// ------------------------------------------------------------ simple-op forms

/// q, k, v `[B, heads, T, dh]` of `qkv` rows, with simple ops.
fn split_heads(qkv: &Node, heads: usize, seq_len: usize) -> Result<(Node, Node, Node, usize)> {
    let (_, d) = rule("self_attention", heads, seq_len, &qkv.shape())?;
    let d = d.ok_or_else(|| {
        Error::invalid(format!(
            "self_attention: the width of {} ({}) must be known",
            qkv.name(),
            qkv.shape()
        ))
    })?;
    let dh = d / heads;
    let five = reshape(qkv, &[-1, seq_len as isize, 3, heads as isize, dh as isize])?;
    let parts = unstack(&transpose(&five, &[2, 0, 3, 1, 4])?, 0)?;
    let [q, k, v] = <[Node; 3]>::try_from(parts)
        .map_err(|_| Error::invalid("internal: q/k/v unstack did not give 3 parts"))?;
    Ok((q, k, v, d))
}

/// The additive causal mask `[t, t]`: 0 where `s <= t`, −1e9 where `s > t`
/// (exactly 0 after a softmax in `f32`, as −∞ would be, without infinities).
fn causal_mask(t: usize) -> Tensor {
    Tensor::from_shape_fn(vec![t, t], |i| if i[1] > i[0] { -1e9 } else { 0.0 })
}

/// The weights `softmax(q kᵀ / √dh + mask)` `[B, heads, T, T]` from q, k.
fn weights_of(q: &Node, k: &Node, dh: usize, seq_len: usize, causal: bool) -> Result<Node> {
    let g = q.graph();
    let scale = g.constant(Tensor::from_elem(vec![], 1.0 / (dh as f32).sqrt()))?;
    let mut scores = matmul_transposed(&multiply(q, &scale)?, k, false, true)?;
    if causal {
        scores = add(&scores, &g.constant(causal_mask(seq_len))?)?;
    }
    softmax_axis(&scores, 3)
}

/// `[B, heads, T, dh]` back to rows `[B·T, d]`.
fn merge_heads(x: &Node, d: usize) -> Result<Node> {
    reshape(&transpose(x, &[0, 2, 1, 3])?, &[-1, d as isize])
}

/// The attention weights `[B, heads, T, T]` of [`self_attention`] on the
/// same rows, built from simple ops (reshape, transpose, unstack, batched
/// matmul, the mask, softmax): for looking at (a heat map), or for checking
/// the fused op. It is not computed unless asked for.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let qkv = g.placeholder(ad::shape![None, 24]);
/// let w = ad::self_attention_weights(&qkv, 2, 4, true).unwrap();
/// assert_eq!(w.shape(), ad::shape![None, 2, 4, 4]);
/// ```
///
/// # Errors
/// As [`self_attention`]; [`Error::InvalidArgument`] when the width of
/// `qkv` is not known statically.
pub fn self_attention_weights(
    qkv: &Node,
    heads: usize,
    seq_len: usize,
    causal: bool,
) -> Result<Node> {
    let (q, k, _, d) = split_heads(qkv, heads, seq_len)?;
    weights_of(&q, &k, d / heads, seq_len, causal)
}

/// [`self_attention`] written with simple ops (the composition the fused op
/// stands for; tests compare the two).
///
/// # Errors
/// As [`self_attention_weights`].
pub fn self_attention_composed(
    qkv: &Node,
    heads: usize,
    seq_len: usize,
    causal: bool,
) -> Result<Node> {
    let (q, k, v, d) = split_heads(qkv, heads, seq_len)?;
    let w = weights_of(&q, &k, d / heads, seq_len, causal)?;
    merge_heads(&matmul_transposed(&w, &v, false, false)?, d)
}

/// The gradient of the attention w.r.t. `qkv` for upstream rows `dout`,
/// written with simple ops (the composition [`SelfAttentionGrad`] stands for).
fn composed_gradient(
    qkv: &Node,
    dout: &Node,
    heads: usize,
    seq_len: usize,
    causal: bool,
) -> Result<Node> {
    let (q, k, v, d) = split_heads(qkv, heads, seq_len)?;
    let dh = d / heads;
    let a = weights_of(&q, &k, dh, seq_len, causal)?;
    // dO as [B, heads, T, dh]
    let go = transpose(
        &reshape(dout, &[-1, seq_len as isize, heads as isize, dh as isize])?,
        &[0, 2, 1, 3],
    )?;
    let dv = matmul_transposed(&a, &go, true, false)?;
    let da = matmul_transposed(&go, &v, false, true)?;
    let row = reduce_sum(&multiply(&a, &da)?, [3], true)?;
    let scale = q
        .graph()
        .constant(Tensor::from_elem(vec![], 1.0 / (dh as f32).sqrt()))?;
    let ds = multiply(&multiply(&a, &subtract(&da, &row)?)?, &scale)?;
    let dq = matmul_transposed(&ds, &k, false, false)?;
    let dk = matmul_transposed(&ds, &q, true, false)?;
    // [3, B, heads, T, dh] -> [B, T, 3, heads, dh] -> rows [B·T, 3d]
    let packed = transpose(&stack(&[&dq, &dk, &dv], 0)?, &[1, 3, 0, 2, 4])?;
    reshape(&packed, &[-1, 3 * d as isize])
}

/// Multi-head scaled dot-product self-attention on packed rows, fused
/// ([`SelfAttention`]): `qkv [B·T, 3d]` holds, for each of `B` sequences of
/// `seq_len` = `T` steps (one after the other), the queries (columns
/// `0..d`), keys (`d..2d`) and values (`2d..3d`), head `j` in columns
/// `j·dh..(j+1)·dh` of each (`dh = d / heads`); the result `[B·T, d]` is, for
/// each sequence and head, `softmax(q kᵀ / √dh + mask) v` (mask −∞ above the
/// diagonal when `causal`, else none), the heads side by side. Its gradient
/// is a [`SelfAttentionGrad`] node, differentiable again.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let qkv = g.placeholder(ad::shape![None, 6]); // d = 2, one head
/// let y = ad::self_attention(&qkv, 1, 2, true).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 2]);
/// // One sequence of 2 steps: step 0 sees only itself, so it gets v[0].
/// let feed = ad::feed! { qkv => [[1.0, 0.0, 1.0, 0.0, 5.0, 6.0],
///                                 [0.0, 1.0, 0.0, 1.0, 7.0, 8.0]] }.unwrap();
/// let out = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!((out[[0, 0]], out[[0, 1]]), (5.0, 6.0));
/// assert!(ad::self_attention(&qkv, 4, 2, true).is_err()); // 6 columns, 4 heads
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `qkv` is not rank 2, or
/// [`Error::InvalidArgument`] when `heads` or `seq_len` is 0, the width is
/// not a positive multiple of `3 * heads`, or the row count is not a
/// multiple of `seq_len` (at build time when known, else in forward).
pub fn self_attention(qkv: &Node, heads: usize, seq_len: usize, causal: bool) -> Result<Node> {
    build(
        SelfAttention {
            heads,
            seq_len,
            causal,
        },
        &[qkv],
    )
}
