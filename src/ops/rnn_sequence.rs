//! A whole LSTM sequence as one node ([`lstm_sequence`], TensorFlow's
//! `BlockLSTM`): every step's recurrent product and cell, from the input
//! projections of all steps.
//!
//! ```text
//! z_t = xw_t + h_{t-1}·Wh + b          xw: [T·B, 4H], time-major rows
//! (h_t, c_t) = the LSTM cell of z_t and c_{t-1}   (see crate::ops::rnn)
//! output [2, T, B, H]: h_t at [0, t], c_t at [1, t]
//! ```
//!
//! One node instead of a cell node, a product node and their gradients per
//! step: the batch's rows are independent through the recurrence, so the
//! kernel runs each row group's whole sequence on one thread
//! ([`crate::kernels::rnn_sequence`]), where per-step nodes split each small
//! product over the threads and meet at every step.
//!
//! **Gradient** (the heavy part is one op, the rest a few ops on its output):
//!
//! ```text
//! dxw = dz_all     LstmSequenceGrad: back through the steps (dh_t = d_out_h + dz_{t+1}·Whᵀ)
//! dWh = Σ_t h_{t-1}ᵀ·dz_t   LstmSequenceGradWh: one product over all steps
//! db  = Σ_rows dz_all       reduce_sum
//! dh_0, dc_0                 LstmSequenceGrad nodes reading what the dz node kept
//! ```
//!
//! The gradient ops' own gradients (second derivatives) are those of the
//! same math written as the unrolled sequence of [`lstm_cell_from_parts`]
//! nodes ([`GradientContext::gradient_of_composition`]).

use ndarray::{ArrayView2, IxDyn};

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::kernels::rnn_sequence::{
    lstm_sequence_backward, lstm_sequence_forward, recurrent_kernel_grad, SeqDims, SeqInputs,
    SeqKept,
};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{split, stack, unstack};
use crate::ops::build;
use crate::ops::reduce::reduce_sum;
use crate::ops::rnn::{lstm_cell_from_parts, GatePart};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The whole-sequence LSTM: inputs `xw` `[T·B, 4H]`, the recurrent kernel
/// `[H, 4H]`, the bias `[4H]`, then (with `has_initial`) `h_0`, `c_0`
/// `[B, H]`; output `[2, T, B, H]`. Build it with [`lstm_sequence`].
pub struct LstmSequence {
    /// Added to the forget gate's pre-activation (finite).
    pub forget_bias: f32,
    /// Time steps `T` (at least 1).
    pub steps: usize,
    /// Whether `h_0`, `c_0` are inputs (else zeros).
    pub has_initial: bool,
}

/// The static rule: checks every input and returns `(B, H)` as known.
fn sequence_shape(
    op: &str,
    seq: &LstmSequence,
    inputs: &[&TensorShape],
) -> Result<(Option<usize>, Option<usize>)> {
    let want = 3 + 2 * usize::from(seq.has_initial);
    if inputs.len() != want {
        return Err(Error::invalid(format!(
            "{op} takes {want} inputs (xw, recurrent kernel, bias{}), got {}",
            if seq.has_initial { ", h_0, c_0" } else { "" },
            inputs.len()
        )));
    }
    if seq.steps == 0 || !seq.forget_bias.is_finite() {
        return Err(Error::invalid(format!(
            "{op}: steps must be at least 1 and forget_bias finite, got {} and {}",
            seq.steps, seq.forget_bias
        )));
    }
    let rank = |k: usize, what: &str, r: usize| -> Result<()> {
        if inputs[k].rank() != r {
            return Err(Error::Rank {
                what: format!("{op} {what}"),
                expected: r.to_string(),
                got: inputs[k].clone(),
            });
        }
        Ok(())
    };
    rank(
        0,
        "xw (all steps' input projections [steps * batch, 4 * units])",
        2,
    )?;
    rank(1, "recurrent kernel [units, 4 * units]", 2)?;
    rank(2, "bias [4 * units]", 1)?;
    let (xw, wh, b) = (inputs[0], inputs[1], inputs[2]);
    let batch = match xw.dim(0) {
        Some(rows) if !rows.is_multiple_of(seq.steps) => {
            return Err(Error::invalid(format!(
                "{op}: xw has shape {xw}, whose {rows} rows are not {} steps of one batch",
                seq.steps
            )))
        }
        rows => rows.map(|r| r / seq.steps),
    };
    let mismatch = |what: &str, expected: TensorShape, got: &TensorShape| Error::ShapeMismatch {
        what: format!("{op} {what} (xw being {xw}, the recurrent kernel {wh})"),
        expected,
        got: got.clone(),
    };
    // 4H from xw, the kernel's columns and the bias; H from the kernel's rows.
    let four = [xw.dim(1), wh.dim(1), b.dim(0)]
        .into_iter()
        .flatten()
        .try_fold(None, |acc: Option<usize>, d| match acc {
            Some(a) if a != d => Err(()),
            _ => Ok(Some(d)),
        })
        .map_err(|()| mismatch("the gates' widths (4 * units)", xw.clone(), b))?;
    let units = match (four, wh.dim(0)) {
        (Some(f), _) if !f.is_multiple_of(4) || f == 0 => {
            return Err(Error::invalid(format!(
                "{op}: the gates' width {f} is not 4 * units for some units > 0"
            )))
        }
        (Some(f), Some(u)) if f != 4 * u => {
            return Err(mismatch(
                "recurrent kernel",
                TensorShape::known(&[f / 4, f]),
                wh,
            ))
        }
        (Some(f), _) => Some(f / 4),
        (None, u) => u,
    };
    if seq.has_initial {
        rank(3, "h_0 [batch, units]", 2)?;
        rank(4, "c_0 [batch, units]", 2)?;
        let state = TensorShape::new(vec![batch, units]);
        for (k, what) in [(3, "h_0"), (4, "c_0")] {
            if state.merge(inputs[k]).is_none() {
                return Err(mismatch(what, state.clone(), inputs[k]));
            }
        }
    }
    Ok((batch, units))
}

/// The run-time sizes and the kernel's view of the inputs.
fn seq_inputs<'a>(
    seq: &LstmSequence,
    inputs: &[&'a Tensor],
    data: &'a [std::borrow::Cow<'a, [f32]>],
) -> Result<SeqInputs<'a>> {
    let known: Vec<TensorShape> = inputs
        .iter()
        .map(|t| TensorShape::known(t.shape()))
        .collect();
    let refs: Vec<&TensorShape> = known.iter().collect();
    let (batch, units) = match sequence_shape("lstm sequence", seq, &refs)? {
        (Some(b), Some(u)) => (b, u),
        _ => return Err(Error::invalid("lstm sequence: unknown sizes at run time")),
    };
    if batch == 0 {
        return Err(Error::invalid("lstm sequence: an empty batch"));
    }
    let dims = SeqDims {
        steps: seq.steps,
        batch,
        units,
    };
    Ok(SeqInputs {
        dims,
        xw: &data[0],
        wh: ArrayView2::from_shape((units, 4 * units), &data[1][..])?,
        bias: &data[2],
        initial: seq.has_initial.then(|| (&data[3][..], &data[4][..])),
        forget_bias: seq.forget_bias,
    })
}

/// The inputs' values laid out by rows.
fn row_data<'a>(inputs: &[&'a Tensor]) -> Vec<std::borrow::Cow<'a, [f32]>> {
    inputs.iter().map(|t| row_major(t)).collect()
}

/// The same sequence written as unrolled cell nodes (second derivatives):
/// the output `[2, T, B, H]` from nodes standing for the op's inputs.
fn unrolled(seq: &LstmSequence, inputs: &[Node]) -> Result<Node> {
    let (xw, wh, b) = (&inputs[0], &inputs[1], &inputs[2]);
    let (mut h, mut c) = if seq.has_initial {
        (Some(inputs[3].clone()), Some(inputs[4].clone()))
    } else {
        (None, None)
    };
    let (mut hs, mut cs) = (Vec::new(), Vec::new());
    for t in 0..seq.steps {
        let rec = match &h {
            Some(h) => Some(crate::ops::linalg::matmul(h, wh)?),
            None => None,
        };
        let mut parts = vec![
            GatePart::RowBlock {
                of: xw,
                index: t,
                count: seq.steps,
            },
            GatePart::Bias(b),
        ];
        parts.extend(rec.as_ref().map(GatePart::Full));
        let (h_t, c_t) = lstm_cell_from_parts(&parts, c.as_ref(), seq.forget_bias)?;
        hs.push(h_t.clone());
        cs.push(c_t.clone());
        h = Some(h_t);
        c = Some(c_t);
    }
    let hs: Vec<&Node> = hs.iter().collect();
    let cs: Vec<&Node> = cs.iter().collect();
    stack(&[&stack(&hs, 0)?, &stack(&cs, 0)?], 0)
}

impl Op for LstmSequence {
    fn type_name(&self) -> &'static str {
        "LstmSequence"
    }

    // xw: [T·B, 4H], Wh: [H, 4H], b: [4H], (h_0, c_0: [B, H]) -> [2, T, B, H]
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (batch, units) = sequence_shape(self.type_name(), self, inputs)?;
        Ok(TensorShape::new(vec![
            Some(2),
            Some(self.steps),
            batch,
            units,
        ]))
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let data = row_data(inputs);
        let inp = seq_inputs(self, inputs, &data)?;
        let SeqDims {
            steps,
            batch,
            units,
        } = inp.dims;
        let (out, kept) = lstm_sequence_forward(&inp);
        if !ctx.is_inference() {
            ctx.save(kept);
        }
        Ok(Tensor::from_shape_vec(
            IxDyn(&[2, steps, batch, units]),
            out,
        )?)
    }

    // dxw = dz (every step's gate gradient, back through the steps),
    // dWh = Σ_t h_{t-1}ᵀ·dz_t, db = Σ_rows dz, and dh_0, dc_0 from the same pass.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let n = ctx.inputs().len();
        if !(0..n).any(|k| ctx.needs_grad(k)) {
            return Ok(vec![None; n]);
        }
        let mut args: Vec<&Node> = vec![ctx.grad()];
        args.extend(ctx.inputs());
        args.push(ctx.output());
        let op = |of| LstmSequenceGrad {
            forget_bias: self.forget_bias,
            steps: self.steps,
            has_initial: self.has_initial,
            of,
        };
        let dz = ctx.add_op(op(SeqGradOf::Xw), &args)?;
        let mut grads = vec![ctx.needs_grad(0).then(|| dz.clone()), None, None];
        if ctx.needs_grad(1) {
            let mut wh_args = vec![ctx.output(), &dz];
            if self.has_initial {
                wh_args.push(ctx.input(3));
            }
            grads[1] = Some(ctx.add_op(
                LstmSequenceGradWh {
                    steps: self.steps,
                    has_initial: self.has_initial,
                },
                &wh_args,
            )?);
        }
        if ctx.needs_grad(2) {
            grads[2] = Some(reduce_sum(&dz, 0, false)?);
        }
        if self.has_initial {
            let mut with_dz = args.clone();
            with_dz.push(&dz);
            for (k, of) in [(3, SeqGradOf::H0), (4, SeqGradOf::C0)] {
                grads.push(if ctx.needs_grad(k) {
                    Some(ctx.add_op(op(of), &with_dz)?)
                } else {
                    None
                });
            }
        }
        Ok(grads)
    }
}

/// Which input of an [`LstmSequence`] an [`LstmSequenceGrad`] node gives
/// the gradient of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqGradOf {
    /// `xw` (every step's `dz`), `[T·B, 4H]`.
    Xw,
    /// `h_0`, `[B, H]` (reads what the `Xw` node kept).
    H0,
    /// `c_0`, `[B, H]` (reads what the `Xw` node kept).
    C0,
}

/// The backward pass of an [`LstmSequence`]. Inputs: the upstream gradient
/// `[2, T, B, H]`, the sequence's inputs, the forward node (whose kept gates
/// are read; the forward is run again when they are not held) and, for
/// `H0`/`C0`, the `Xw` gradient node (whose kept `dh_0`, `dc_0` are read).
pub struct LstmSequenceGrad {
    /// The forward's forget bias.
    pub forget_bias: f32,
    /// The forward's steps.
    pub steps: usize,
    /// Whether the forward has `h_0`, `c_0`.
    pub has_initial: bool,
    /// The input whose gradient this node gives.
    pub of: SeqGradOf,
}

/// `dh_0`, `dc_0` as computed by the `Xw` node.
struct KeptInitialGrads(Vec<f32>, Vec<f32>);

impl LstmSequenceGrad {
    fn forward_op(&self) -> LstmSequence {
        LstmSequence {
            forget_bias: self.forget_bias,
            steps: self.steps,
            has_initial: self.has_initial,
        }
    }

    /// Inputs: `[d_out, seq inputs.., fwd, (dz)]`; returns the seq inputs' count.
    fn check(&self, n: usize) -> Result<usize> {
        let seq_n = 3 + 2 * usize::from(self.has_initial);
        let want = 2 + seq_n + usize::from(self.of != SeqGradOf::Xw);
        if n != want || (self.of != SeqGradOf::Xw && !self.has_initial) {
            return Err(Error::invalid(format!(
                "{} of {:?} takes {want} inputs (d_out, the sequence's {seq_n}, the forward node{}), \
                 got {n}{}",
                self.type_name(),
                self.of,
                if self.of == SeqGradOf::Xw { "" } else { ", the dz node" },
                if self.has_initial { "" } else { " (and the sequence has no initial state)" }
            )));
        }
        Ok(seq_n)
    }
}

impl Op for LstmSequenceGrad {
    fn type_name(&self) -> &'static str {
        "LstmSequenceGrad"
    }

    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let seq_n = self.check(inputs.len())?;
        let (batch, units) =
            sequence_shape(self.type_name(), &self.forward_op(), &inputs[1..=seq_n])?;
        let state = TensorShape::new(vec![Some(2), Some(self.steps), batch, units]);
        if state.merge(inputs[0]).is_none() {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "{} upstream gradient (the sequence's output)",
                    self.type_name()
                ),
                expected: state,
                got: inputs[0].clone(),
            });
        }
        Ok(match self.of {
            SeqGradOf::Xw => inputs[1].clone(),
            SeqGradOf::H0 => inputs[4].clone(),
            SeqGradOf::C0 => inputs[5].clone(),
        })
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let seq_n = self.check(inputs.len())?;
        let fwd_at = 1 + seq_n;
        if self.of != SeqGradOf::Xw {
            if let Some(KeptInitialGrads(dh0, dc0)) =
                ctx.input_saved::<KeptInitialGrads>(fwd_at + 1)
            {
                let v = if self.of == SeqGradOf::H0 { dh0 } else { dc0 };
                return Ok(Tensor::from_shape_vec(inputs[4].raw_dim(), v.clone())?);
            }
        }
        let seq = self.forward_op();
        let data = row_data(&inputs[1..=seq_n]);
        let inp = seq_inputs(&seq, &inputs[1..=seq_n], &data)?;
        let SeqDims {
            steps,
            batch,
            units,
        } = inp.dims;
        if inputs[0].shape() != [2, steps, batch, units] {
            return Err(Error::ShapeMismatch {
                what: "lstm sequence upstream gradient (its output [2, steps, batch, units])"
                    .into(),
                expected: TensorShape::known(&[2, steps, batch, units]),
                got: TensorShape::known(inputs[0].shape()),
            });
        }
        let recomputed;
        let kept = match ctx.input_saved::<SeqKept>(fwd_at) {
            Some(k) => k,
            None => {
                recomputed = lstm_sequence_forward(&inp).1;
                &recomputed
            }
        };
        let grads = lstm_sequence_backward(&inp, kept, &row_major(inputs[0]));
        match (self.of, grads.initial) {
            (SeqGradOf::Xw, initial) => {
                if let Some((dh0, dc0)) = initial {
                    ctx.save(KeptInitialGrads(dh0, dc0));
                }
                Ok(Tensor::from_shape_vec(
                    IxDyn(&[steps * batch, 4 * units]),
                    grads.dz,
                )?)
            }
            (SeqGradOf::H0, Some((dh0, _))) => {
                Ok(Tensor::from_shape_vec(IxDyn(&[batch, units]), dh0)?)
            }
            (SeqGradOf::C0, Some((_, dc0))) => {
                Ok(Tensor::from_shape_vec(IxDyn(&[batch, units]), dc0)?)
            }
            _ => Err(Error::invalid("lstm sequence gradient: no initial state")),
        }
    }

    // The gradient of the unrolled sequence's gradient.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let seq_n = 3 + 2 * usize::from(self.has_initial);
        let seq = self.forward_op();
        let of = self.of;
        ctx.gradient_of_composition(|inputs| {
            let out = unrolled(&seq, &inputs[1..=seq_n])?;
            let target = match of {
                SeqGradOf::Xw => &inputs[1],
                SeqGradOf::H0 => &inputs[4],
                SeqGradOf::C0 => &inputs[5],
            };
            crate::gradients(&[&out], &[target], Some(&[&inputs[0]]))?
                .pop()
                .flatten()
                .ok_or_else(|| {
                    Error::invalid("lstm sequence: the unrolled output does not reach the input")
                })
        })
    }
}

/// The recurrent kernel's gradient of an [`LstmSequence`]: inputs the
/// forward node (its `h_t`), the `dxw` node and (with an initial state)
/// `h_0`; `Σ_t h_{t-1}ᵀ·dz_t` as one product over all steps.
pub struct LstmSequenceGradWh {
    /// The forward's steps.
    pub steps: usize,
    /// Whether the forward has `h_0`.
    pub has_initial: bool,
}

impl Op for LstmSequenceGradWh {
    fn type_name(&self) -> &'static str {
        "LstmSequenceGradWh"
    }

    // out: [2, T, B, H], dz: [T·B, 4H], (h_0: [B, H]) -> [H, 4H]
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let want = 2 + usize::from(self.has_initial);
        if inputs.len() != want || inputs[0].rank() != 4 || inputs[1].rank() != 2 {
            return Err(Error::invalid(format!(
                "{} takes the sequence's output [2, T, B, H], dz [T * B, 4H]{}; got {:?}",
                self.type_name(),
                if self.has_initial { " and h_0" } else { "" },
                inputs
            )));
        }
        let units = inputs[0].dim(3);
        Ok(TensorShape::new(vec![units, units.map(|u| 4 * u)]))
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (out, dz) = (inputs[0].shape(), inputs[1].shape());
        let (steps, batch, units) = (out[1], out[2], out[3]);
        if out[0] != 2 || steps != self.steps || dz != [steps * batch, 4 * units] || batch == 0 {
            return Err(Error::invalid(format!(
                "lstm sequence kernel gradient: output {:?} and dz {:?} do not fit {} steps",
                out, dz, self.steps
            )));
        }
        let h0 = inputs.get(2).map(|t| row_major(t));
        if let Some(h0) = &h0 {
            if h0.len() != batch * units {
                return Err(Error::invalid(
                    "lstm sequence kernel gradient: h_0 is not [B, H]",
                ));
            }
        }
        let out_data = row_major(inputs[0]);
        let g = recurrent_kernel_grad(
            SeqDims {
                steps,
                batch,
                units,
            },
            &out_data[..steps * batch * units],
            &row_major(inputs[1]),
            h0.as_deref(),
        );
        Ok(Tensor::from_shape_vec(IxDyn(&[units, 4 * units]), g)?)
    }

    // dWh = Σ_{t≥1} h_{t-1}ᵀ·dz_t (+ h_0ᵀ·dz_0) written with unstack, split, matmul.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (steps, has_initial) = (self.steps, self.has_initial);
        ctx.gradient_of_composition(|inputs| {
            let hs = unstack(&unstack(&inputs[0], 0)?[0], 0)?;
            let dzs = split(&inputs[1], steps, 0)?;
            let mut terms = Vec::new();
            if has_initial {
                terms.push(crate::ops::linalg::matmul_transposed(
                    &inputs[2], &dzs[0], true, false,
                )?);
            }
            for t in 1..steps {
                terms.push(crate::ops::linalg::matmul_transposed(
                    &hs[t - 1],
                    &dzs[t],
                    true,
                    false,
                )?);
            }
            match terms.len() {
                0 => crate::ops::arithmetic::multiply(
                    &crate::ops::linalg::matmul_transposed(&hs[0], &dzs[0], true, false)?,
                    &inputs[0].graph().constant(0.0f32)?,
                ),
                _ => {
                    let refs: Vec<&Node> = terms.iter().collect();
                    crate::ops::arithmetic::add_n(&refs)
                }
            }
        })
    }
}

/// A whole LSTM sequence in one node (TensorFlow's `BlockLSTM`): from `xw`
/// (`[T·B, 4H]`, every step's `x_t·Wx` in time-major rows), the recurrent
/// kernel `[H, 4H]`, the bias `[4H]` and the initial `(h_0, c_0)` (`None`:
/// zeros), each step `z_t = xw_t + h_{t-1}·Wh + b` and the cell of
/// [`lstm_cell`](crate::lstm_cell); returns `[2, T, B, H]` (`h_t`, `c_t` of
/// every step). The same values as the unrolled cells (to rounding), faster:
/// the batch's row groups run their whole sequences side by side.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let (t, b, h) = (3, 2, 4);
/// let xw = g.placeholder([t * b, 4 * h]);
/// let wh = g.constant(ad::Tensor::from_elem(vec![h, 4 * h], 0.1)).unwrap();
/// let bias = g.constant(ad::Tensor::zeros(vec![4 * h])).unwrap();
/// let out = ad::lstm_sequence(&xw, &wh, &bias, None, t, 1.0).unwrap();
/// assert_eq!(out.shape(), ad::shape![2, 3, 2, 4]);
/// // xw's rows must be whole steps of one batch.
/// assert!(ad::lstm_sequence(&g.placeholder([5, 4 * h]), &wh, &bias, None, t, 1.0).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`], [`Error::ShapeMismatch`] or
/// [`Error::InvalidArgument`] when the shapes do not fit (`xw`'s rows not a
/// multiple of `steps`, widths not `4 * units`, the state not `[B, H]`),
/// `steps` is 0 or `forget_bias` not finite; the same at run time for fed
/// values; [`Error::GraphMismatch`].
pub fn lstm_sequence(
    xw: &Node,
    recurrent_kernel: &Node,
    bias: &Node,
    initial: Option<(&Node, &Node)>,
    steps: usize,
    forget_bias: f32,
) -> Result<Node> {
    let mut inputs = vec![xw, recurrent_kernel, bias];
    if let Some((h0, c0)) = initial {
        inputs.push(h0);
        inputs.push(c0);
    }
    build(
        LstmSequence {
            forget_bias,
            steps,
            has_initial: initial.is_some(),
        },
        &inputs,
    )
}
