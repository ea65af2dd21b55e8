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
//! that node (as [`split`] returns its pieces), so the cell
//! runs once for both; the gradients reaching the two pieces are joined into
//! one `[2, B, H]` node (see [`add_n`](crate::add_n)), which is the one
//! upstream gradient of the cell's fused gradient.
//!
//! **Gate inputs.** `z` may be given as a sum of parts ([`lstm_cell_from_parts`]):
//! `[B, 4H]` tensors, one step's block of rows of a `[T·B, 4H]` tensor (all
//! steps' input projections, computed by one product) and a `[4H]` bias. The
//! cell adds them in its own pass, so an LSTM layer needs no bias add over all
//! steps, no copy of each step's block and no sum per step; the gradient of
//! each part is the cell's `dz` taken back to that part's shape (as is, a
//! [`SplitGrad`] piece, a column sum).
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
use crate::kernels::buffer_pool::{self, PooledBuffer};
use crate::kernels::elementwise::row_major;
use crate::kernels::rnn::{
    lstm_cell_backward, lstm_cell_forward, CellGradInputs, CellInputs, CellOutputs,
};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{concat, split, unstack, SplitGrad, SplitSizes};
use crate::ops::build;
use crate::ops::reduce::reduce_sum;
use crate::shape::TensorShape;
use crate::tensor::Tensor;
use std::borrow::Cow;

/// The fused LSTM cell: inputs the parts of `z` (`[B, 4H]` summed, as
/// `gate_inputs` says) and, optionally, `c_prev` (`[B, H]`; absent: zeros);
/// output the state `[2, B, H]` (`h_t`, `c_t`). Build it with [`lstm_cell`]
/// or [`lstm_cell_from_parts`].
pub struct LstmCell {
    /// Added to the forget gate's pre-activation (a constant, finite).
    pub forget_bias: f32,
    /// How each of the first inputs adds to `z` (at least one not a bias).
    pub gate_inputs: Vec<GateInput>,
}

/// How one input of an [`LstmCell`] adds to the gate pre-activations `z`
/// (`[B, 4H]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateInput {
    /// A `[B, 4H]` tensor, added as is.
    Full,
    /// Row block `index` of a `[count·B, 4H]` tensor cut into `count` equal
    /// blocks (one step of all steps' input projections, time-major), read
    /// in place.
    RowBlock {
        /// Which block.
        index: usize,
        /// How many blocks.
        count: usize,
    },
    /// A `[4H]` vector added to every row (the bias).
    Bias,
}

/// One part of an LSTM cell's gate pre-activations, for
/// [`lstm_cell_from_parts`].
#[derive(Clone, Copy)]
pub enum GatePart<'a> {
    /// A `[B, 4H]` node, e.g. `h_prev·Wh`.
    Full(&'a Node),
    /// Row block `index` of `of`, a `[count·B, 4H]` node cut into `count`
    /// equal blocks: one step's rows of `x·Wx` computed for all steps at
    /// once (time-major rows).
    RowBlock {
        /// The `[count·B, 4H]` node.
        of: &'a Node,
        /// Which block.
        index: usize,
        /// How many blocks.
        count: usize,
    },
    /// A `[4H]` node added to every row (the bias).
    Bias(&'a Node),
}

impl GatePart<'_> {
    fn split(self) -> (GateInput, Node) {
        match self {
            GatePart::Full(n) => (GateInput::Full, n.clone()),
            GatePart::RowBlock { of, index, count } => {
                (GateInput::RowBlock { index, count }, of.clone())
            }
            GatePart::Bias(n) => (GateInput::Bias, n.clone()),
        }
    }
}

/// The static shape of `z` (`[B, 4H]`) from its parts' shapes.
fn gate_shape(op: &str, parts: &[GateInput], shapes: &[&TensorShape]) -> Result<TensorShape> {
    if parts.len() != shapes.len() || !parts.iter().any(|p| *p != GateInput::Bias) {
        return Err(Error::invalid(format!(
            "{op}: the gate pre-activations need at least one [batch, 4 * units] part besides \
             a bias ({} parts, {} inputs for them)",
            parts.len(),
            shapes.len()
        )));
    }
    let mut z = TensorShape::new(vec![None, None]);
    for (k, (part, s)) in parts.iter().zip(shapes).enumerate() {
        let (what, want) = match part {
            GateInput::Full => ("z (the gate pre-activations [batch, 4 * units])", 2),
            GateInput::RowBlock { .. } => ("z's row blocks [steps * batch, 4 * units]", 2),
            GateInput::Bias => ("gate bias [4 * units]", 1),
        };
        if s.rank() != want {
            return Err(Error::Rank {
                what: format!("{op} input {k}, {what}"),
                expected: want.to_string(),
                got: (*s).clone(),
            });
        }
        let candidate = match *part {
            GateInput::Full => (*s).clone(),
            GateInput::RowBlock { index, count } => {
                if index >= count {
                    return Err(Error::invalid(format!(
                        "{op} input {k}: row block {index} of {count}"
                    )));
                }
                if let Some(rows) = s.dim(0) {
                    if !rows.is_multiple_of(count) {
                        return Err(Error::invalid(format!(
                            "{op} input {k} has shape {s}, whose {rows} rows do not cut into \
                             {count} equal blocks"
                        )));
                    }
                }
                TensorShape::new(vec![s.dim(0).map(|r| r / count), s.dim(1)])
            }
            GateInput::Bias => TensorShape::new(vec![None, s.dim(0)]),
        };
        z = z.merge(&candidate).ok_or_else(|| Error::ShapeMismatch {
            what: format!("{op} input {k} (a part of the gate pre-activations)"),
            expected: z.clone(),
            got: (*s).clone(),
        })?;
    }
    Ok(z)
}

/// The run-time `(rows, 4h)` of `z` from its parts, checked.
fn gate_dims(parts: &[GateInput], values: &[&Tensor]) -> Result<(usize, usize)> {
    let shapes: Vec<TensorShape> = values
        .iter()
        .map(|t| TensorShape::known(t.shape()))
        .collect();
    let refs: Vec<&TensorShape> = shapes.iter().collect();
    let z = gate_shape("lstm cell", parts, &refs)?;
    match (z.dim(0), z.dim(1)) {
        (Some(rows), Some(n)) => Ok((rows, n)),
        _ => Err(Error::invalid(
            "lstm cell: the gate pre-activations' shape is unknown at run time",
        )),
    }
}

/// `z` (`rows x n`, row-major) as the sum of its parts, in the kernel's
/// order (the first non-bias part, the bias, the other parts; so a
/// recomputation gives the forward's bits): borrowed when it is one
/// `[B, 4H]` tensor laid out by rows.
fn gate_sum<'a>(
    parts: &[GateInput],
    values: &[&'a Tensor],
    (rows, n): (usize, usize),
) -> Cow<'a, [f32]> {
    if let ([GateInput::Full], [z]) = (parts, values) {
        return row_major(z);
    }
    let terms = GateTerms::new(parts, values, (rows, n));
    let mut z = terms.first().to_vec();
    if let Some(b) = &terms.bias {
        z.chunks_mut(n).for_each(|row| {
            row.iter_mut().zip(b.iter()).for_each(|(a, v)| *a += v);
        });
    }
    for t in &terms.add {
        z.iter_mut().zip(t.iter()).for_each(|(a, v)| *a += v);
    }
    Cow::Owned(z)
}

/// `z`'s parts as the kernel takes them: the first non-bias part's rows,
/// the other non-bias parts' rows, and the bias (several biases summed).
struct GateTerms<'a> {
    first: Cow<'a, [f32]>,
    /// Where the first part's rows start in `first` (a row block's offset).
    offset: usize,
    len: usize,
    add: Vec<Cow<'a, [f32]>>,
    bias: Option<Cow<'a, [f32]>>,
}

impl<'a> GateTerms<'a> {
    fn new(parts: &[GateInput], values: &[&'a Tensor], (rows, n): (usize, usize)) -> Self {
        let mut terms = GateTerms {
            first: Cow::Borrowed(&[]),
            offset: 0,
            len: rows * n,
            add: Vec::new(),
            bias: None,
        };
        let mut have_first = false;
        for (part, v) in parts.iter().zip(values) {
            let data = row_major(v);
            let offset = match *part {
                GateInput::Bias => {
                    terms.bias = Some(match terms.bias.take() {
                        None => data,
                        Some(b) => {
                            Cow::Owned(b.iter().zip(data.iter()).map(|(x, y)| x + y).collect())
                        }
                    });
                    continue;
                }
                GateInput::Full => 0,
                GateInput::RowBlock { index, .. } => index * rows * n,
            };
            if have_first {
                terms.add.push(match data {
                    Cow::Borrowed(d) => Cow::Borrowed(&d[offset..offset + rows * n]),
                    Cow::Owned(d) => Cow::Owned(d[offset..offset + rows * n].to_vec()),
                });
            } else {
                (terms.first, terms.offset, have_first) = (data, offset, true);
            }
        }
        terms
    }

    fn first(&self) -> &[f32] {
        &self.first[self.offset..self.offset + self.len]
    }
}

/// `z` as a node: the sum of its parts written with simple ops (second
/// derivatives).
fn gate_sum_node(parts: &[GateInput], inputs: &[Node]) -> Result<Node> {
    let mut z: Option<Node> = None;
    // Bias parts last: a broadcast needs a [B, 4H] node to add to.
    let order = parts
        .iter()
        .zip(inputs)
        .filter(|(p, _)| **p != GateInput::Bias)
        .chain(
            parts
                .iter()
                .zip(inputs)
                .filter(|(p, _)| **p == GateInput::Bias),
        );
    for (part, x) in order {
        let term = match *part {
            GateInput::RowBlock { index, count } => split(x, count, 0)?.swap_remove(index),
            GateInput::Full | GateInput::Bias => x.clone(),
        };
        z = Some(match z {
            None => term,
            Some(z) => (&z + &term).check()?,
        });
    }
    z.ok_or_else(|| Error::invalid("lstm cell: no gate pre-activation parts"))
}

/// What the forward keeps for the gradient: the gates' activations `[B, 4H]`
/// (`i, f, g, o`) and `tanh(c_t)` `[B, H]`, in buffers from the thread's pool
/// (every element is written, so no zero fill; the next step reuses them).
struct CellKept {
    gates: PooledBuffer,
    tanh_c: PooledBuffer,
}

impl CellKept {
    fn new(rows: usize, h: usize) -> Self {
        CellKept {
            gates: buffer_pool::take(rows * 4 * h),
            tanh_c: buffer_pool::take(rows * h),
        }
    }
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

/// Checks the run-time shapes of `z` (`rows x n`, from its parts) and
/// `c_prev`; returns `(rows, units)`.
fn runtime_dims((rows, n): (usize, usize), c_prev: Option<&Tensor>) -> Result<(usize, usize)> {
    let zs = TensorShape::known(&[rows, n]);
    if !n.is_multiple_of(4) || n == 0 {
        return Err(Error::invalid(format!(
            "lstm cell: z has shape {zs}; it must be [batch, 4 * units] with units > 0"
        )));
    }
    let h = n / 4;
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
    let mut kept = CellKept::new(rows, h);
    let (mut ho, mut co) = (vec![0.0; rows * h], vec![0.0; rows * h]);
    lstm_cell_forward(
        CellInputs {
            z,
            z_add: &[],
            bias: None,
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

impl LstmCell {
    /// The inputs split as `(z's parts, c_prev)`.
    fn inputs<'a, T>(&self, inputs: &'a [T]) -> Result<(&'a [T], Option<&'a T>)> {
        let p = self.gate_inputs.len();
        match inputs.len() {
            n if n == p => Ok((inputs, None)),
            n if n == p + 1 => Ok((&inputs[..p], inputs.last())),
            n => Err(Error::invalid(format!(
                "LstmCell takes {p} gate input(s) and optionally c_prev, got {n} inputs"
            ))),
        }
    }
}

impl Op for LstmCell {
    fn type_name(&self) -> &'static str {
        "LstmCell"
    }

    // z's parts: [B, 4H] (or a row block of [T·B, 4H], or a [4H] bias);
    // c_prev (optional): [B, H]. Output: [2, B, H] (h_t, c_t).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (parts, c_prev) = self.inputs(inputs)?;
        let z = gate_shape(self.type_name(), &self.gate_inputs, parts)?;
        let s = cell_shape(self.type_name(), self.forget_bias, &z, c_prev.copied())?;
        Ok(TensorShape::new(vec![Some(2), s.dim(0), s.dim(1)]))
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (parts, c_prev) = self.inputs(inputs)?;
        let dims = gate_dims(&self.gate_inputs, parts)?;
        let (rows, h) = runtime_dims(dims, c_prev.copied())?;
        let terms = GateTerms::new(&self.gate_inputs, parts, dims);
        let z_add: Vec<&[f32]> = terms.add.iter().map(|t| &t[..]).collect();
        let cs = c_prev.map(|c| row_major(c));
        let mut out = vec![0.0f32; 2 * rows * h];
        let (ho, co) = out.split_at_mut(rows * h);
        let keep = !ctx.is_inference();
        let mut kept = CellKept::new(if keep { rows } else { 0 }, h);
        lstm_cell_forward(
            CellInputs {
                z: terms.first(),
                z_add: &z_add,
                bias: terms.bias.as_deref(),
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
    // dc_prev = dcs ⊙ f. Each part of z takes dz back to its shape: as is
    // ([B, 4H]), as its row block (a SplitGrad piece), summed over rows (bias).
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let p = self.gate_inputs.len();
        let has_c_prev = ctx.inputs().len() == p + 1;
        let wants_z = (0..p).any(|k| ctx.needs_grad(k));
        let wants_c = has_c_prev && ctx.needs_grad(p);
        let mut args: Vec<&Node> = vec![ctx.grad()];
        args.extend(ctx.inputs());
        args.push(ctx.output());
        let op = |of, dc_prev: DcPrev| LstmCellGrad {
            forget_bias: self.forget_bias,
            gate_inputs: self.gate_inputs.clone(),
            has_c_prev,
            of,
            dc_prev,
        };
        let dz = if wants_z {
            let keep = if wants_c { DcPrev::Keep } else { DcPrev::Skip };
            Some(ctx.add_op(op(LstmCellGradOf::Z, keep), &args)?)
        } else {
            None
        };
        let dc_prev = if wants_c {
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
        let mut grads = Vec::with_capacity(p + 1);
        for (k, part) in self.gate_inputs.iter().enumerate() {
            let dz = match (&dz, ctx.needs_grad(k)) {
                (Some(dz), true) => dz,
                _ => {
                    grads.push(None);
                    continue;
                }
            };
            grads.push(Some(match *part {
                GateInput::Full => dz.clone(),
                GateInput::RowBlock { index, count } => build(
                    SplitGrad {
                        axis: 0,
                        sizes: SplitSizes::Num(count),
                        index,
                    },
                    &[dz, ctx.input(k)],
                )?,
                GateInput::Bias => reduce_sum(dz, 0, false)?,
            }));
        }
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
/// `z`'s parts (as the cell's, `gate_inputs`), `c_prev` (when the cell has
/// it), the forward node (whose kept gates and `tanh(c_t)` are read;
/// recomputed from `z` and `c_prev` when not held), then, with
/// [`DcPrev::Reuse`], the `dz` gradient node of the same cell. `dz` is
/// `[B, 4H]`, the gradient of `z` (the cell's gradient takes it to each part).
///
/// The math is in [`LstmCell`]'s gradient; this node's own gradient (second
/// derivatives) is that of the same math written with simple ops.
pub struct LstmCellGrad {
    /// The forward cell's forget bias.
    pub forget_bias: f32,
    /// How the forward cell's first inputs add up to `z`.
    pub gate_inputs: Vec<GateInput>,
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
    /// Input positions: `(c_prev, forward node)`; `z`'s parts are at
    /// `1..1 + gate_inputs.len()`.
    fn positions(&self) -> (Option<usize>, usize) {
        let p = 1 + self.gate_inputs.len();
        if self.has_c_prev {
            (Some(p), p + 1)
        } else {
            (None, p)
        }
    }

    /// The inputs holding `z`'s parts.
    fn parts<'a, T>(&self, inputs: &'a [T]) -> &'a [T] {
        &inputs[1..1 + self.gate_inputs.len()]
    }

    fn check_inputs(&self, n: usize) -> Result<()> {
        let want = 2
            + self.gate_inputs.len()
            + usize::from(self.has_c_prev)
            + usize::from(self.dc_prev == DcPrev::Reuse);
        if n != want {
            return Err(Error::invalid(format!(
                "{} takes {want} inputs (d_state, z's {} part(s){}, the forward node{}), got {n}",
                self.type_name(),
                self.gate_inputs.len(),
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
        let d_state = &inputs[0];
        let z = gate_sum_node(&self.gate_inputs, self.parts(inputs))?;
        let c_prev = self.positions().0.map(|k| &inputs[k]);
        let gates = split(&z, 4, 1)?;
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
        let d_state = inputs[0];
        let z = &gate_shape(self.type_name(), &self.gate_inputs, self.parts(inputs))?;
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
        let (d_state, parts) = (inputs[0], self.parts(inputs));
        let c_prev = cp_at.map(|k| inputs[k]);
        let dims = gate_dims(&self.gate_inputs, parts)?;
        let (rows, h) = runtime_dims(dims, c_prev)?;
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
        let cs = c_prev.map(row_major);
        let recomputed;
        let kept = match ctx.input_saved::<CellKept>(fwd_at) {
            Some(k) if k.tanh_c.len() == rows * h && k.gates.len() == rows * 4 * h => k,
            _ => {
                let zs = gate_sum(&self.gate_inputs, parts, dims);
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
    lstm_cell_from_parts(&[GatePart::Full(z)], c_prev, forget_bias)
}

/// [`lstm_cell`] with the gate pre-activations given as the sum of their
/// parts, added inside the cell's pass: `[B, 4H]` nodes, one step's row
/// block of all steps' input projections (a `[T·B, 4H]` node, time-major),
/// and `[4H]` biases. An LSTM layer's step is
/// `lstm_cell_from_parts(&[RowBlock { of: &xw, index: t, count: T }, Full(&h_prev_wh), Bias(&b)], ..)`:
/// no copy of the step's rows, no sum node, no bias add over all steps. The
/// gradient of each part is the cell's `dz` taken to its shape (as is, a
/// [`SplitGrad`] piece that [`add_n`](crate::add_n) joins with the other
/// steps' into one concatenation, a column sum).
///
/// ```
/// use adgraph as ad;
/// use ad::ops::rnn::GatePart;
/// let g = ad::Graph::new();
/// let xw = g.placeholder([6, 8]); // 3 steps of batch 2, 2 units
/// let b = g.constant(ad::Tensor::from_elem(vec![8], 0.5)).unwrap();
/// let (h, _) = ad::lstm_cell_from_parts(
///     &[GatePart::RowBlock { of: &xw, index: 1, count: 3 }, GatePart::Bias(&b)],
///     None,
///     1.0,
/// )
/// .unwrap();
/// assert_eq!(h.shape(), ad::shape![2, 2]);
/// // The same as the cell of the sum written out.
/// let z = ad::add(&ad::split(&xw, 3, 0).unwrap()[1], &b).unwrap();
/// let (h2, _) = ad::lstm_cell(&z, None, 1.0).unwrap();
/// let x: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
/// let feed = ad::feed! { xw => ad::Tensor::from_shape_vec(vec![6, 8], x).unwrap() }.unwrap();
/// let out = ad::RunTime::new().infer(&[&h, &h2], &feed).unwrap();
/// assert_eq!(out[0], out[1]);
/// // A block count that does not divide the rows is an error.
/// assert!(ad::lstm_cell_from_parts(&[GatePart::RowBlock { of: &xw, index: 0, count: 4 }], None, 1.0).is_err());
/// ```
///
/// # Errors
/// As [`lstm_cell`]; also [`Error::InvalidArgument`] when no part is a
/// `[B, 4H]` node or a row block, a row block's index is not below its count
/// or its node's rows do not cut into `count` blocks, and
/// [`Error::ShapeMismatch`] when the parts' shapes disagree.
pub fn lstm_cell_from_parts(
    z: &[GatePart],
    c_prev: Option<&Node>,
    forget_bias: f32,
) -> Result<(Node, Node)> {
    let (gate_inputs, mut inputs): (Vec<GateInput>, Vec<Node>) =
        z.iter().map(|p| p.split()).unzip();
    inputs.extend(c_prev.cloned());
    let refs: Vec<&Node> = inputs.iter().collect();
    let state = build(
        LstmCell {
            forget_bias,
            gate_inputs,
        },
        &refs,
    )?;
    let mut pieces = unstack(&state, 0)?.into_iter();
    match (pieces.next(), pieces.next()) {
        (Some(h), Some(c)) => Ok((h, c)),
        _ => Err(Error::invalid(
            "lstm_cell: the state did not unstack in two",
        )),
    }
}
