//! A whole LSTM sequence in one pass (TensorFlow's `BlockLSTM`): the steps'
//! recurrent products and cells, forward and backward, for the fused
//! [`LstmSequence`](crate::ops::rnn_sequence::LstmSequence) op.
//!
//! The rows of a batch are independent through the whole recurrence, so the
//! batch is cut into row groups (by its size only, never by the number of
//! threads, so the bits do not depend on it) and each group runs all its
//! steps on one thread: its own `[rows, H] · [H, 4H]` products and cells, with
//! no hand-off between threads inside the sequence. Per-step nodes would split
//! each small product over the threads and meet at every step.
//!
//! Layouts (row-major): `xw` `[T·B, 4H]` with time-major rows (step `t`'s
//! batch in rows `t·B .. (t+1)·B`), the output `[2, T, B, H]` (`h_t` then
//! `c_t` for every step), the gradient of `xw` in `xw`'s layout.

use std::ops::Range;

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::kernels::buffer_pool::{self, PooledBuffer};
use crate::kernels::gemm::{matmul_serial_add, matmul_vec, sgemm};
use crate::kernels::rnn::{
    lstm_cell_backward_serial, lstm_cell_forward_serial, CellGradInputs, CellInputs, CellOutputs,
};

/// Rows below which a batch is not cut further: a group's `[rows, H] · [H, 4H]`
/// products stay large enough to run the product kernel near its peak.
const MIN_GROUP_ROWS: usize = 32;
/// At most this many row groups.
const MAX_GROUPS: usize = 16;

/// The sizes of a sequence: `steps` (T), `batch` (B), `units` (H).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqDims {
    /// Time steps, `T >= 1`.
    pub steps: usize,
    /// Batch rows, `B >= 1`.
    pub batch: usize,
    /// Cell size, `H >= 1`.
    pub units: usize,
}

/// The row groups of a batch of `batch` rows: `(batch / 32)` groups (1 to 16)
/// of nearly equal size.
pub fn row_groups(batch: usize) -> Vec<Range<usize>> {
    let groups = (batch / MIN_GROUP_ROWS).clamp(1, MAX_GROUPS);
    (0..groups)
        .map(|g| g * batch / groups..(g + 1) * batch / groups)
        .collect()
}

/// A sequence's inputs (row-major slices; see the module's layouts).
#[derive(Clone, Copy)]
pub struct SeqInputs<'a> {
    /// The sizes.
    pub dims: SeqDims,
    /// `x_t · Wx` of every step, `[T·B, 4H]`, time-major rows.
    pub xw: &'a [f32],
    /// The recurrent kernel `[H, 4H]`.
    pub wh: ArrayView2<'a, f32>,
    /// The bias `[4H]`.
    pub bias: &'a [f32],
    /// The initial `(h_0, c_0)`, each `[B, H]`; `None`: zeros.
    pub initial: Option<(&'a [f32], &'a [f32])>,
    /// Added to the forget gate's pre-activation.
    pub forget_bias: f32,
}

/// What one row group's forward computed and keeps for the backward, each
/// `[T, rows, ·]`: `h_t`, `c_t`, the gates' activations and `tanh(c_t)`.
///
/// The buffers come from the calling thread's pool
/// ([`buffer_pool`]) and go back to it when the
/// record is dropped, so a training loop reuses the same memory every step
/// instead of faulting in fresh pages (which took as long as the steps).
pub struct GroupState {
    rows: Range<usize>,
    h: PooledBuffer,
    c: PooledBuffer,
    gates: PooledBuffer,
    tanh_c: PooledBuffer,
}

impl GroupState {
    /// Buffers for `rows` of a `dims` sequence, contents unspecified.
    fn take(rows: Range<usize>, dims: SeqDims) -> Self {
        let n = rows.len() * dims.steps * dims.units;
        GroupState {
            rows,
            h: buffer_pool::take(n),
            c: buffer_pool::take(n),
            gates: buffer_pool::take(4 * n),
            tanh_c: buffer_pool::take(n),
        }
    }
}

/// The forward's record of a sequence (every row group's [`GroupState`]).
pub struct SeqKept {
    groups: Vec<GroupState>,
}

/// Runs the sequence forward: returns the output `[2, T, B, H]` and what the
/// backward needs.
///
/// **Panics** if the slices' lengths do not fit `inp.dims` (the
/// [`LstmSequence`](crate::ops::rnn_sequence::LstmSequence) op checks them
/// first and reports errors).
pub fn lstm_sequence_forward(inp: &SeqInputs) -> (Vec<f32>, SeqKept) {
    let SeqDims {
        steps,
        batch,
        units: h,
    } = inp.dims;
    // Taken here, on the calling thread, so they return to its pool.
    let mut groups: Vec<GroupState> = row_groups(batch)
        .into_iter()
        .map(|rows| GroupState::take(rows, inp.dims))
        .collect();
    groups.par_iter_mut().for_each(|st| forward_group(inp, st));
    // [2, T, B, H] in order: h then c, step by step, group by group.
    let mut out = Vec::with_capacity(2 * steps * batch * h);
    for half in [0, 1] {
        for t in 0..steps {
            for g in &groups {
                let n = g.rows.len() * h;
                let src = if half == 0 { &g.h } else { &g.c };
                out.extend_from_slice(&src[t * n..(t + 1) * n]);
            }
        }
    }
    (out, SeqKept { groups })
}

/// One row group's steps, on the calling thread, into `st` (every element
/// written).
fn forward_group(inp: &SeqInputs, st: &mut GroupState) {
    let SeqDims {
        steps,
        batch,
        units: h,
    } = inp.dims;
    let rows = st.rows.clone();
    let n = rows.len();
    let initial = inp.initial.map(|(h0, c0)| {
        (
            &h0[rows.start * h..rows.end * h],
            &c0[rows.start * h..rows.end * h],
        )
    });
    let mut rec = vec![0.0f32; n * 4 * h];
    for t in 0..steps {
        let xw = &inp.xw[(t * batch + rows.start) * 4 * h..(t * batch + rows.end) * 4 * h];
        // This step's outputs, and the previous step's (or the initial) state.
        let (h_done, h_rest) = st.h.split_at_mut(t * n * h);
        let (c_done, c_rest) = st.c.split_at_mut(t * n * h);
        let prev = match t {
            0 => initial,
            _ => Some((&h_done[(t - 1) * n * h..], &c_done[(t - 1) * n * h..])),
        };
        if let Some((hp, _)) = prev {
            rec.fill(0.0);
            let hp = ArrayView2::from_shape((n, h), hp).expect("h_prev is [rows, H]");
            matmul_serial_add(hp, inp.wh, &mut rec);
        }
        let rec_terms: [&[f32]; 1] = [&rec];
        lstm_cell_forward_serial(
            CellInputs {
                z: xw,
                z_add: if prev.is_some() { &rec_terms } else { &[] },
                bias: Some(inp.bias),
                c_prev: prev.map(|(_, c)| c),
                h,
                forget_bias: inp.forget_bias,
            },
            CellOutputs {
                h: &mut h_rest[..n * h],
                c: &mut c_rest[..n * h],
                kept: Some((
                    &mut st.gates[t * n * 4 * h..(t + 1) * n * 4 * h],
                    &mut st.tanh_c[t * n * h..(t + 1) * n * h],
                )),
            },
        );
    }
}

/// The gradients a sequence's backward gives: of `xw` (`[T·B, 4H]`, which is
/// also each step's `dz`), and of the initial state when there is one.
pub struct SeqGrads {
    /// `dL/dxw`, `[T·B, 4H]`.
    pub dz: Vec<f32>,
    /// `dL/dh_0` and `dL/dc_0`, `[B, H]` each, when the sequence has them.
    pub initial: Option<(Vec<f32>, Vec<f32>)>,
}

/// Back through the sequence from the upstream gradient of its output
/// (`d_out`, `[2, T, B, H]`): per step `dh = d_out_h + dz_{t+1}·Whᵀ`,
/// `dc = d_out_c + dc_prev_{t+1}`, and the cell's backward.
///
/// **Panics** if the slices' lengths do not fit `inp.dims` or `kept` is
/// another sequence's (the op checks them first).
pub fn lstm_sequence_backward(inp: &SeqInputs, kept: &SeqKept, d_out: &[f32]) -> SeqGrads {
    let SeqDims {
        steps,
        batch,
        units: h,
    } = inp.dims;
    // Each group's dz in a buffer of the calling thread's pool.
    let mut parts: Vec<(PooledBuffer, Vec<f32>, Vec<f32>)> = kept
        .groups
        .iter()
        .map(|g| {
            let dz = buffer_pool::take(steps * g.rows.len() * 4 * h);
            (dz, Vec::new(), Vec::new())
        })
        .collect();
    parts
        .par_iter_mut()
        .zip(&kept.groups)
        .for_each(|((dz, dh0, dc0), g)| {
            (*dh0, *dc0) = backward_group(inp, g, d_out, dz);
        });
    // [T·B, 4H] in order: step by step, group by group.
    let mut dz = Vec::with_capacity(steps * batch * 4 * h);
    for t in 0..steps {
        for (g, (gdz, _, _)) in kept.groups.iter().zip(&parts) {
            let n = g.rows.len() * 4 * h;
            dz.extend_from_slice(&gdz[t * n..(t + 1) * n]);
        }
    }
    let initial = inp.initial.map(|_| {
        let dh0 = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
        let dc0 = parts.iter().flat_map(|p| p.2.iter().copied()).collect();
        (dh0, dc0)
    });
    SeqGrads { dz, initial }
}

/// One row group's backward: its `dz` `[T, rows, 4H]` into `dz` (every
/// element written), and `dh_0`, `dc_0` (`[rows, H]`; meaningful with an
/// initial state).
fn backward_group(
    inp: &SeqInputs,
    g: &GroupState,
    d_out: &[f32],
    dz: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let SeqDims {
        steps,
        batch,
        units: h,
    } = inp.dims;
    let n = g.rows.len();
    let (nh, nz) = (n * h, n * 4 * h);
    let (mut dh, mut dc) = (vec![0.0f32; nh], vec![0.0f32; nh]);
    let (mut dh_next, mut dc_next) = (vec![0.0f32; nh], vec![0.0f32; nh]);
    let c0 = inp
        .initial
        .map(|(_, c0)| &c0[g.rows.start * h..g.rows.end * h]);
    for t in (0..steps).rev() {
        let at = (t * batch + g.rows.start) * h;
        let (dho, dco) = (
            &d_out[at..at + nh],
            &d_out[steps * batch * h + at..steps * batch * h + at + nh],
        );
        for k in 0..nh {
            dh[k] = dho[k] + dh_next[k];
            dc[k] = dco[k] + dc_next[k];
        }
        let c_prev = match t {
            0 => c0,
            _ => Some(&g.c[(t - 1) * nh..t * nh]),
        };
        let dz_t = &mut dz[t * nz..(t + 1) * nz];
        lstm_cell_backward_serial(
            CellGradInputs {
                dh: &dh,
                dc: &dc,
                gates: &g.gates[t * nz..(t + 1) * nz],
                tanh_c: &g.tanh_c[t * nh..(t + 1) * nh],
                c_prev,
                h,
            },
            Some(dz_t),
            Some(&mut dc_next),
        );
        if t > 0 || inp.initial.is_some() {
            dh_next.fill(0.0);
            let dz_t = ArrayView2::from_shape((n, 4 * h), &*dz_t).expect("dz_t is [rows, 4H]");
            matmul_serial_add(dz_t, inp.wh.t(), &mut dh_next);
        }
    }
    (dh_next, dc_next)
}

/// The recurrent kernel's gradient `Σ_t h_{t-1}ᵀ · dz_t` (`[H, 4H]`) as one
/// product over all steps: `h` is the output's `[T, B, H]` half, `dz` the
/// gradient of `xw`; `h_0` adds its term at step 0 (no term without it).
///
/// **Panics** if the slices' lengths do not fit `dims` (the op checks them
/// first).
pub fn recurrent_kernel_grad(dims: SeqDims, h: &[f32], dz: &[f32], h0: Option<&[f32]>) -> Vec<f32> {
    let SeqDims {
        steps,
        batch,
        units,
    } = dims;
    let rows = (steps - 1) * batch;
    let mut out = if rows > 0 {
        let hs = ArrayView2::from_shape((rows, units), &h[..rows * units]).expect("h rows");
        let dzs = ArrayView2::from_shape((rows, 4 * units), &dz[batch * 4 * units..])
            .expect("dz rows of steps 1..T");
        matmul_vec(hs.t(), dzs)
    } else {
        vec![0.0f32; units * 4 * units]
    };
    if let Some(h0) = h0 {
        let h0 = ArrayView2::from_shape((batch, units), h0).expect("h0 is [B, H]");
        let dz0 = ArrayView2::from_shape((batch, 4 * units), &dz[..batch * 4 * units])
            .expect("dz rows of step 0");
        let mut c = ArrayViewMut2::from_shape((units, 4 * units), &mut out[..]).expect("[H, 4H]");
        sgemm(1.0, h0.t(), dz0, 1.0, &mut c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_cover_the_batch_in_order() {
        assert_eq!(row_groups(1), vec![0..1]);
        assert_eq!(row_groups(63), vec![0..63]);
        assert_eq!(row_groups(64), vec![0..32, 32..64]);
        assert_eq!(row_groups(100), vec![0..33, 33..66, 66..100]);
        let g = row_groups(10_000);
        assert_eq!(g.len(), MAX_GROUPS);
        assert_eq!(g.last().map(|r| r.end), Some(10_000));
        assert!(g.windows(2).all(|w| w[0].end == w[1].start));
    }
}
