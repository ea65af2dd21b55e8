//! Recurrent cells: the fused LSTM cell ([`lstm_cell`], TensorFlow's
//! `LSTMBlockCell` without peepholes or clipping) and its gradient.
//!
//! One [`LstmCell`] node computes, from the gate pre-activations `z`
//! (`[B, 4H]`, blocks `i, f, g, o`) and the previous cell state `c_prev`
//! (`[B, H]`, or zeros), both outputs of a step in one pass:
//!
//! ```text
//! i = σ(z_i)   f = σ(z_f + forget_bias)   g = tanh(z_g)   o = σ(z_o)
//! c_t = f ⊙ c_prev + i ⊙ g                h_t = o ⊙ tanh(c_t)
//! ```
//!
//! **Two outputs.** A node here has one value, so the cell's value is the
//! state `[2, B, H]`: `h_t` at index 0, `c_t` at index 1 of the first axis.
//! [`lstm_cell`] returns `h_t` and `c_t` as the two [`unstack`] pieces of
//! that node (as [`split`](crate::split) returns its pieces), so the cell
//! runs once for both; the gradients reaching the two pieces are joined into
//! one `[2, B, H]` node (see [`add_n`](crate::add_n)), which is the one
//! upstream gradient of the cell's fused gradient.
//!
//! **Gradient.** The forward keeps the gates' activations and `tanh(c_t)`;
//! one [`LstmCellGrad`] node per input that takes a gradient reads them back
//! (recomputing them when they are not held) and gives `dz` or `dc_prev` in
//! one pass. When both are wanted, the `dz` node keeps `dc_prev` for the
//! other (as [`LayerNormGrad`](crate::ops::layer_norm::LayerNormGrad) shares
//! its column sums). An `LstmCellGrad`'s own gradient, for second
//! derivatives, is that of the same math written with simple ops
//! ([`GradientContext::gradient_of_composition`]).

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::kernels::rnn::{
    lstm_cell_backward, lstm_cell_forward, CellGradInputs, CellInputs, CellOutputs,
};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{concat, split, unstack};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The fused LSTM cell: inputs `z` (`[B, 4H]`) and, optionally, `c_prev`
/// (`[B, H]`; absent: zeros); output the state `[2, B, H]` (`h_t`, `c_t`).
/// Build it with [`lstm_cell`].
pub struct LstmCell {
    /// Added to the forget gate's pre-activation (a constant, finite).
    pub forget_bias: f32,
}

/// What the forward keeps for the gradient: the gates' activations `[B, 4H]`
/// (`i, f, g, o`) and `tanh(c_t)` `[B, H]`.
struct CellKept {
    gates: Vec<f32>,
    tanh_c: Vec<f32>,
}

/// The input named `what` of an op: its rank must be 2.
fn rank2(op: &str, what: &str, s: &TensorShape) -> Result<()> {
    if s.rank() != 2 {
        return Err(Error::Rank {
            what: format!("{op} {what}"),
            expected: "2".into(),
            got: s.clone(),
        });
    }
    Ok(())
}

/// The static rule shared by the cell and its gradient: checks `z`
/// (`[B, 4H]`) and `c_prev` (`[B, H]`) and returns `[B, H]` as known.
fn cell_shape(
    op: &str,
    forget_bias: f32,
    z: &TensorShape,
    c_prev: Option<&TensorShape>,
) -> Result<TensorShape> {
    if !forget_bias.is_finite() {
        return Err(Error::invalid(format!(
            "{op} forget_bias must be finite, got {forget_bias}"
        )));
    }
    rank2(op, "z (the gate pre-activations [batch, 4 * units])", z)?;
    if let Some(n) = z.dim(1) {
        if !n.is_multiple_of(4) || n == 0 {
            return Err(Error::invalid(format!(
                "{op}: z has shape {z}, whose last dim {n} is not 4 * units (the gates i, f, g, o) \
                 for some units > 0"
            )));
        }
    }
    let state = TensorShape::new(vec![z.dim(0), z.dim(1).map(|n| n / 4)]);
    match c_prev {
        None => Ok(state),
        Some(c) => {
            rank2(op, "c_prev (the cell state [batch, units])", c)?;
            state.merge(c).ok_or_else(|| Error::ShapeMismatch {
                what: format!("{op} c_prev (the cell state [batch, units], z being {z})"),
                expected: state.clone(),
                got: c.clone(),
            })
        }
    }
}

/// Checks the run-time shapes; returns `(rows, units)`.
fn runtime_dims(z: &Tensor, c_prev: Option<&Tensor>) -> Result<(usize, usize)> {
    let zs = TensorShape::known(z.shape());
    if z.ndim() != 2 || !z.shape()[1].is_multiple_of(4) || z.shape()[1] == 0 {
        return Err(Error::invalid(format!(
            "lstm cell: z has shape {zs}; it must be [batch, 4 * units] with units > 0"
        )));
    }
    let (rows, h) = (z.shape()[0], z.shape()[1] / 4);
    if let Some(c) = c_prev {
        if c.shape() != [rows, h] {
            return Err(Error::ShapeMismatch {
                what: format!("lstm cell c_prev (the cell state, z being {zs})"),
                expected: TensorShape::known(&[rows, h]),
                got: TensorShape::known(c.shape()),
            });
        }
    }
    Ok((rows, h))
}

/// The gates and `tanh(c_t)` computed again (when the forward's are not held).
fn recompute(z: &[f32], c_prev: Option<&[f32]>, rows: usize, h: usize, fb: f32) -> CellKept {
    let mut kept = CellKept {
        gates: vec![0.0; rows * 4 * h],
        tanh_c: vec![0.0; rows * h],
    };
    let (mut ho, mut co) = (vec![0.0; rows * h], vec![0.0; rows * h]);
    lstm_cell_forward(
        CellInputs {
            z,
            c_prev,
            h,
            forget_bias: fb,
        },
        CellOutputs {
            h: &mut ho,
            c: &mut co,
            kept: Some((&mut kept.gates, &mut kept.tanh_c)),
        },
    );
    kept
}

impl Op for LstmCell {
    fn type_name(&self) -> &'static str {
        "LstmCell"
    }

    // z: [B, 4H]; c_prev (optional): [B, H]. Output: [2, B, H] (h_t, c_t).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (z, c_prev) = match inputs {
            [z] => (*z, None),
            [z, c] => (*z, Some(*c)),
            _ => {
                return Err(Error::invalid(format!(
                    "LstmCell takes 1 or 2 inputs (z, optionally c_prev), got {}",
                    inputs.len()
                )))
            }
        };
        let s = cell_shape(self.type_name(), self.forget_bias, z, c_prev)?;
        Ok(TensorShape::new(vec![Some(2), s.dim(0), s.dim(1)]))
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (z, c_prev) = match inputs {
            [z] => (*z, None),
            [z, c] => (*z, Some(*c)),
            _ => return Err(Error::invalid("LstmCell takes 1 or 2 inputs")),
        };
        let (rows, h) = runtime_dims(z, c_prev)?;
        let zs = row_major(z);
        let cs = c_prev.map(row_major);
        let mut out = vec![0.0f32; 2 * rows * h];
        let (ho, co) = out.split_at_mut(rows * h);
        let keep = !ctx.is_inference();
        let mut kept = CellKept {
            gates: vec![0.0; if keep { rows * 4 * h } else { 0 }],
            tanh_c: vec![0.0; if keep { rows * h } else { 0 }],
        };
        lstm_cell_forward(
            CellInputs {
                z: &zs,
                c_prev: cs.as_deref(),
                h,
                forget_bias: self.forget_bias,
            },
            CellOutputs {
                h: ho,
                c: co,
                kept: keep.then_some((&mut kept.gates[..], &mut kept.tanh_c[..])),
            },
        );
        if keep {
            ctx.save(kept);
        }
        Ok(Tensor::from_shape_vec(IxDyn(&[2, rows, h]), out)?)
    }

    // With dh, dc the two halves of the upstream gradient and
    // dcs = dc + dh ⊙ o ⊙ (1 - tanh²(c_t)):
    // dz = [dcs ⊙ g ⊙ i(1-i), dcs ⊙ c_prev ⊙ f(1-f), dcs ⊙ i ⊙ (1-g²), dh ⊙ tanh(c_t) ⊙ o(1-o)],
    // dc_prev = dcs ⊙ f.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let has_c_prev = ctx.inputs().len() == 2;
        let mut args: Vec<&Node> = vec![ctx.grad()];
        args.extend(ctx.inputs());
        args.push(ctx.output());
        let both = ctx.needs_grad(0) && ctx.needs_grad(1);
        let op = |of, dc_prev: DcPrev| LstmCellGrad {
            forget_bias: self.forget_bias,
            has_c_prev,
            of,
            dc_prev,
        };
        let dz = if ctx.needs_grad(0) {
            let keep = if both { DcPrev::Keep } else { DcPrev::Skip };
            Some(ctx.add_op(op(LstmCellGradOf::Z, keep), &args)?)
        } else {
            None
        };
        let dc_prev = if ctx.needs_grad(1) {
            match &dz {
                Some(dz) => {
                    let mut with_dz = args.clone();
                    with_dz.push(dz);
                    Some(ctx.add_op(op(LstmCellGradOf::CPrev, DcPrev::Reuse), &with_dz)?)
                }
                None => Some(ctx.add_op(op(LstmCellGradOf::CPrev, DcPrev::Skip), &args)?),
            }
        } else {
            None
        };
        let mut grads = vec![dz];
        if has_c_prev {
            grads.push(dc_prev);
        }
        Ok(grads)
    }
}

/// Which input of an [`LstmCell`] an [`LstmCellGrad`] node is the gradient of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LstmCellGradOf {
    /// `dz`, `[B, 4H]`.
    Z,
    /// `dc_prev`, `[B, H]`.
    CPrev,
}

/// How an [`LstmCellGrad`] node deals with `dc_prev` besides its own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcPrev {
    /// Nothing more: the node computes only its own output.
    Skip,
    /// A `dz` node that also computes `dc_prev` in its pass and keeps it for
    /// the `dc_prev` node of the same cell.
    Keep,
    /// A `dc_prev` node that reads it from its last input, the `dz` node that
    /// kept it (computed again when not held).
    Reuse,
}

/// The gradient of an [`LstmCell`] with respect to `z` or `c_prev`.
///
/// Inputs: the upstream gradient of the state (`[2, B, H]`: `dh`, `dc`),
/// `z`, `c_prev` (when the cell has it), the forward node (whose kept gates
/// and `tanh(c_t)` are read; recomputed from `z` and `c_prev` when not held),
/// then, with [`DcPrev::Reuse`], the `dz` gradient node of the same cell.
///
/// The math is in [`LstmCell`]'s gradient; this node's own gradient (second
/// derivatives) is that of the same math written with simple ops.
pub struct LstmCellGrad {
    /// The forward cell's forget bias.
    pub forget_bias: f32,
    /// Whether the forward cell has a `c_prev` input.
    pub has_c_prev: bool,
    /// The input whose gradient this node gives.
    pub of: LstmCellGradOf,
    /// Whether it computes, keeps or reads `dc_prev` besides.
    pub dc_prev: DcPrev,
}

/// `dc_prev` as computed by a `dz` node with [`DcPrev::Keep`].
struct KeptDcPrev(Vec<f32>);

impl LstmCellGrad {
    /// Input positions: `(c_prev, forward node)`.
    fn positions(&self) -> (Option<usize>, usize) {
        if self.has_c_prev {
            (Some(2), 3)
        } else {
            (None, 2)
        }
    }

    fn check_inputs(&self, n: usize) -> Result<()> {
        let want = 3 + usize::from(self.has_c_prev) + usize::from(self.dc_prev == DcPrev::Reuse);
        if n != want {
            return Err(Error::invalid(format!(
                "{} takes {want} inputs (d_state, z{}, the forward node{}), got {n}",
                self.type_name(),
                if self.has_c_prev { ", c_prev" } else { "" },
                if self.dc_prev == DcPrev::Reuse {
                    ", the dz node"
                } else {
                    ""
                }
            )));
        }
        if self.of == LstmCellGradOf::CPrev && !self.has_c_prev {
            return Err(Error::invalid(format!(
                "{}: the gradient of c_prev of a cell without c_prev",
                self.type_name()
            )));
        }
        Ok(())
    }

    /// The same math as this node's forward, with simple ops, from nodes
    /// standing for its inputs (second derivatives).
    fn composition(&self, inputs: &[Node]) -> Result<Node> {
        let (d_state, z) = (&inputs[0], &inputs[1]);
        let c_prev = self.positions().0.map(|k| &inputs[k]);
        let gates = split(z, 4, 1)?;
        let i = crate::sigmoid(&gates[0])?;
        let f = crate::sigmoid(&(&gates[1] + self.forget_bias).check()?)?;
        let g = crate::tanh(&gates[2])?;
        let o = crate::sigmoid(&gates[3])?;
        let ig = (&i * &g).check()?;
        let c = match c_prev {
            Some(cp) => (&(&f * cp) + &ig).check()?,
            None => ig,
        };
        let tc = crate::tanh(&c)?;
        let d = unstack(d_state, 0)?;
        let (dh, dc) = (&d[0], &d[1]);
        let one_minus_sq = |t: &Node| (1.0f32 - &(t * t)).check();
        let slope = |s: &Node| (s * &(1.0f32 - s)).check();
        let dcs = (dc + &(&(dh * &o) * &one_minus_sq(&tc)?)).check()?;
        match self.of {
            LstmCellGradOf::CPrev => (&dcs * &f).check(),
            LstmCellGradOf::Z => {
                let dzi = (&(&dcs * &g) * &slope(&i)?).check()?;
                let dzf = match c_prev {
                    Some(cp) => (&(&dcs * cp) * &slope(&f)?).check()?,
                    None => (&dcs * 0.0f32).check()?,
                };
                let dzg = (&(&dcs * &i) * &one_minus_sq(&g)?).check()?;
                let dzo = (&(dh * &tc) * &slope(&o)?).check()?;
                concat(&[&dzi, &dzf, &dzg, &dzo], 1)
            }
        }
    }
}

impl Op for LstmCellGrad {
    fn type_name(&self) -> &'static str {
        match self.of {
            LstmCellGradOf::Z => "LstmCellGrad",
            LstmCellGradOf::CPrev => "LstmCellGradCPrev",
        }
    }

    // d_state: [2, B, H]; z: [B, 4H]; c_prev: [B, H]. Output: z's shape (dz)
    // or c_prev's (dc_prev).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.check_inputs(inputs.len())?;
        let (cp, _) = self.positions();
        let (d_state, z) = (inputs[0], inputs[1]);
        let s = cell_shape(self.type_name(), self.forget_bias, z, cp.map(|k| inputs[k]))?;
        let state = TensorShape::new(vec![Some(2), s.dim(0), s.dim(1)]);
        let merged = state.merge(d_state).ok_or_else(|| Error::ShapeMismatch {
            what: format!(
                "{} upstream gradient (the cell's state [2, batch, units])",
                self.type_name()
            ),
            expected: state.clone(),
            got: d_state.clone(),
        })?;
        Ok(match self.of {
            LstmCellGradOf::Z => TensorShape::new(vec![merged.dim(1), z.dim(1)]),
            LstmCellGradOf::CPrev => TensorShape::new(vec![merged.dim(1), merged.dim(2)]),
        })
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.check_inputs(inputs.len())?;
        let (cp_at, fwd_at) = self.positions();
        let (d_state, z) = (inputs[0], inputs[1]);
        let c_prev = cp_at.map(|k| inputs[k]);
        let (rows, h) = runtime_dims(z, c_prev)?;
        if d_state.shape() != [2, rows, h] {
            return Err(Error::ShapeMismatch {
                what: "lstm cell upstream gradient (the state [2, batch, units])".into(),
                expected: TensorShape::known(&[2, rows, h]),
                got: TensorShape::known(d_state.shape()),
            });
        }
        let out_shape = match self.of {
            LstmCellGradOf::Z => IxDyn(&[rows, 4 * h]),
            LstmCellGradOf::CPrev => IxDyn(&[rows, h]),
        };
        if self.dc_prev == DcPrev::Reuse {
            if let Some(KeptDcPrev(v)) = ctx.input_saved::<KeptDcPrev>(fwd_at + 1) {
                if v.len() == rows * h {
                    return Ok(Tensor::from_shape_vec(out_shape, v.clone())?);
                }
            }
        }
        let zs = row_major(z);
        let cs = c_prev.map(row_major);
        let recomputed;
        let kept = match ctx.input_saved::<CellKept>(fwd_at) {
            Some(k) if k.tanh_c.len() == rows * h && k.gates.len() == rows * 4 * h => k,
            _ => {
                recomputed = recompute(&zs, cs.as_deref(), rows, h, self.forget_bias);
                &recomputed
            }
        };
        let ds = row_major(d_state);
        let (dh, dc) = ds.split_at(rows * h);
        let grads = CellGradInputs {
            dh,
            dc,
            gates: &kept.gates,
            tanh_c: &kept.tanh_c,
            c_prev: cs.as_deref(),
            h,
        };
        match self.of {
            LstmCellGradOf::Z => {
                let mut dz = vec![0.0f32; rows * 4 * h];
                if self.dc_prev == DcPrev::Keep {
                    let mut dcp = vec![0.0f32; rows * h];
                    lstm_cell_backward(grads, Some(&mut dz), Some(&mut dcp));
                    ctx.save(KeptDcPrev(dcp));
                } else {
                    lstm_cell_backward(grads, Some(&mut dz), None);
                }
                Ok(Tensor::from_shape_vec(out_shape, dz)?)
            }
            LstmCellGradOf::CPrev => {
                let mut dcp = vec![0.0f32; rows * h];
                lstm_cell_backward(grads, None, Some(&mut dcp));
                Ok(Tensor::from_shape_vec(out_shape, dcp)?)
            }
        }
    }

    // The gradient of the same math written with simple ops.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| self.composition(inputs))
    }
}

/// One step of an LSTM (TensorFlow's `LSTMBlockCell`, no peepholes, no
/// clipping) from the gate pre-activations `z` (`[B, 4H]`: the blocks
/// `i, f, g, o`, e.g. `x·Wx + h_prev·Wh + b`) and the previous cell state
/// `c_prev` (`[B, H]`; `None`: zeros, a sequence's first step):
/// `i = σ(z_i)`, `f = σ(z_f + forget_bias)`, `g = tanh(z_g)`, `o = σ(z_o)`,
/// `c_t = f ⊙ c_prev + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`. Returns `(h_t, c_t)`.
///
/// Both are pieces of one [`LstmCell`] node of shape `[2, B, H]` (their
/// common input), computed in one pass; its gradient is one fused
/// [`LstmCellGrad`] node per input, reusing the gate activations the forward
/// kept, and differentiable again.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let z = g.placeholder(ad::shape![None, 8]); // 2 units
/// let c_prev = g.placeholder(ad::shape![None, 2]);
/// let (h, c) = ad::lstm_cell(&z, Some(&c_prev), 1.0).unwrap();
/// assert_eq!(h.shape(), ad::shape![None, 2]);
/// // All pre-activations 0: i = o = 0.5, f = σ(1), g = 0.
/// let feed = ad::feed! { z => [[0.0; 8]], c_prev => [[1.0, -2.0]] }.unwrap();
/// let out = ad::RunTime::new().infer(&[&h, &c], &feed).unwrap();
/// let f = 1.0 / (1.0 + (-1.0f32).exp());
/// assert!((out[1][[0, 0]] - f).abs() < 1e-6 && (out[1][[0, 1]] + 2.0 * f).abs() < 1e-6);
/// assert!((out[0][[0, 0]] - 0.5 * f.tanh()).abs() < 1e-6);
/// // z's last dim must be 4 * units, and c_prev must be [batch, units].
/// assert!(ad::lstm_cell(&g.placeholder(ad::shape![None, 6]), None, 1.0).is_err());
/// assert!(ad::lstm_cell(&z, Some(&g.placeholder(ad::shape![None, 3])), 1.0).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `z` or `c_prev` is not a
/// matrix, [`Error::InvalidArgument`] when `z`'s last dim is not a positive
/// multiple of 4 or `forget_bias` is not finite, [`Error::ShapeMismatch`]
/// when `c_prev` is not `[batch, units]`; the same at run time for the fed
/// values; [`Error::GraphMismatch`].
pub fn lstm_cell(z: &Node, c_prev: Option<&Node>, forget_bias: f32) -> Result<(Node, Node)> {
    let mut inputs = vec![z];
    inputs.extend(c_prev);
    let state = build(LstmCell { forget_bias }, &inputs)?;
    let mut pieces = unstack(&state, 0)?.into_iter();
    match (pieces.next(), pieces.next()) {
        (Some(h), Some(c)) => Ok((h, c)),
        _ => Err(Error::invalid(
            "lstm_cell: the state did not unstack in two",
        )),
    }
}
