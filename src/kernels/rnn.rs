//! The LSTM cell's element-wise passes (TensorFlow's `LSTMBlockCell` and its
//! gradient), on row-major slices, and a branch-free `tanh` that vectorises.
//!
//! A batch row of the gate pre-activations `z` holds four blocks of `h`
//! values, in the order `i, f, g, o`. The forward reads each row once and
//! writes `h_t` and `c_t` (and, for the gradient, the gates' activations and
//! `tanh(c_t)`); the backward reads them back in one pass to give `dz` and
//! `dc_prev`. Each row's blocks are separate slices of length `h` indexed
//! together, so the inner loops are plain lane-wise arithmetic that the
//! compiler turns into SIMD code (with [`exp`] and [`tanh`] inlined, no
//! library calls).
//!
//! Rows are split over rayon's threads when the batch holds at least
//! [`PARALLEL_MIN_LEN`] gate values; each row is computed the same way
//! whatever the split, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::kernels::elementwise::{sigmoid, PARALLEL_MIN_LEN};
use crate::kernels::exp::{exp, mul_add};

/// Below this magnitude [`tanh`] uses its Taylor polynomial: there
/// `1 - e^-2|x|` would lose bits to cancellation.
const TANH_SERIES_BELOW: f32 = 0.25;

/// `tanh(x)` within a few ulp, without branches or library calls (so loops
/// over it vectorise): `(1 - e) / (1 + e)` with `e = e^-2|x|` and the sign
/// of `x`, or, for `|x| < 0.25`, the Taylor polynomial up to `x^9` (whose
/// truncation error there is below 1e-8 relative). NaN gives NaN; `±inf`
/// gives `±1`.
///
/// ```
/// use adgraph::kernels::rnn::tanh;
/// assert_eq!(tanh(0.0), 0.0);
/// assert!((tanh(0.5) - 0.5f32.tanh()).abs() <= 4.0 * f32::EPSILON);
/// assert_eq!(tanh(-30.0), -1.0);
/// assert!(tanh(f32::NAN).is_nan());
/// ```
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let e = exp(-2.0 * a);
    let far = (1.0 - e) / (1.0 + e);
    let s = a * a;
    // x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835
    let mut q = mul_add(s, 62.0 / 2835.0, -17.0 / 315.0);
    q = mul_add(s, q, 2.0 / 15.0);
    q = mul_add(s, q, -1.0 / 3.0);
    let near = mul_add(a * s, q, a);
    let t = if a < TANH_SERIES_BELOW { near } else { far };
    t.copysign(x)
}

/// The cell's inputs: `z` is `[rows, 4h]` (plus `z_add` and `bias`),
/// `c_prev` `[rows, h]` (`None`: zeros); the forget gate's pre-activation
/// gets `forget_bias` added.
#[derive(Clone, Copy)]
pub struct CellInputs<'a> {
    /// Gate pre-activations, `[rows, 4h]`, blocks `i, f, g, o`.
    pub z: &'a [f32],
    /// More `[rows, 4h]` terms of the pre-activations, added row by row
    /// before the gates (e.g. `h_prev·Wh`); usually empty.
    pub z_add: &'a [&'a [f32]],
    /// A `[4h]` term added to every row of the pre-activations.
    pub bias: Option<&'a [f32]>,
    /// The previous cell state `[rows, h]`, or `None` for zeros.
    pub c_prev: Option<&'a [f32]>,
    /// Cell size (`> 0`).
    pub h: usize,
    /// Added to the forget gate's pre-activation.
    pub forget_bias: f32,
}

/// What the forward writes (row-major).
pub struct CellOutputs<'a> {
    /// `h_t = o * tanh(c_t)`, `[rows, h]`.
    pub h: &'a mut [f32],
    /// `c_t = f * c_prev + i * g`, `[rows, h]`.
    pub c: &'a mut [f32],
    /// The gates' activations `[rows, 4h]` (`i, f, g, o`) and `tanh(c_t)`
    /// `[rows, h]`, when kept for the gradient.
    pub kept: Option<(&'a mut [f32], &'a mut [f32])>,
}

/// Gate values from which a cell's rows are split over threads. Lower than
/// the plain element-wise kernels' [`PARALLEL_MIN_LEN`]: each value costs
/// several `exp`s and a division, so a `[64, 4 * 128]` step (32,768 values,
/// about 90 us on one core) gains from a second core.
const CELL_PARALLEL_MIN_LEN: usize = PARALLEL_MIN_LEN / 8;

/// Rows per parallel task (all rows in one task for small batches).
fn rows_per_task(rows: usize, h: usize) -> usize {
    if rows * 4 * h >= CELL_PARALLEL_MIN_LEN {
        (CELL_PARALLEL_MIN_LEN / (4 * h)).max(1)
    } else {
        rows.max(1)
    }
}

/// `x` cut into `n` chunks of `len` (the last shorter), or `n` `None`s.
fn chunks_of(x: Option<&mut [f32]>, len: usize, n: usize) -> Vec<Option<&mut [f32]>> {
    match x {
        Some(x) => x.chunks_mut(len).map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    }
}

/// `f` of each element of `x` into `out` (same lengths): a loop the
/// compiler vectorises.
#[inline(always)]
fn map_into(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// One row of the forward: `z` and `gates` of `4h` values, the rest of `h`.
/// `PREV`: whether `c_prev` is read (otherwise zeros). Two passes over the
/// row, each a simple loop that vectorises (one loop doing everything was
/// slower: a `[64, 512]` step 182 -> 122 us on the loaded 2-core machine):
/// the gates' activations into `gates`, then `c_t`, `tanh(c_t)` and `h_t`.
#[inline(always)]
fn forward_row<const PREV: bool>(
    z: &[f32],
    c_prev: &[f32],
    forget_bias: f32,
    (h_out, c_out): (&mut [f32], &mut [f32]),
    gates: &mut [f32],
    tanh_c: &mut [f32],
) {
    let h = h_out.len();
    let (gi, rest) = gates[..4 * h].split_at_mut(h);
    let (gf, rest) = rest.split_at_mut(h);
    let (gg, go) = rest.split_at_mut(h);
    map_into(gi, &z[..h], sigmoid);
    map_into(gf, &z[h..2 * h], |v| sigmoid(v + forget_bias));
    map_into(gg, &z[2 * h..3 * h], tanh);
    map_into(go, &z[3 * h..4 * h], sigmoid);
    let (c_out, tc) = (&mut c_out[..h], &mut tanh_c[..h]);
    let cp: &[f32] = if PREV { &c_prev[..h] } else { &[] };
    for j in 0..h {
        let ig = gi[j] * gg[j];
        let c = if PREV { gf[j] * cp[j] + ig } else { ig };
        c_out[j] = c;
        tc[j] = tanh(c);
    }
    for j in 0..h {
        h_out[j] = go[j] * tc[j];
    }
}

/// Row `rz` (a range of `4h` elements) of `z + z_add... + bias` into `out`,
/// in the order written (the order in which a graph of adds would sum them).
#[inline(always)]
fn sum_row(out: &mut [f32], input: &CellInputs, rz: std::ops::Range<usize>) {
    out.copy_from_slice(&input.z[rz.clone()]);
    if let Some(b) = input.bias {
        out.iter_mut().zip(b).for_each(|(o, v)| *o += v);
    }
    for t in input.z_add {
        out.iter_mut()
            .zip(&t[rz.clone()])
            .for_each(|(o, v)| *o += v);
    }
}

/// The LSTM cell's forward: for each row, with `z_i, z_f, z_g, z_o` the four
/// blocks of `z`, `i = σ(z_i)`, `f = σ(z_f + forget_bias)`, `g = tanh(z_g)`,
/// `o = σ(z_o)`, `c_t = f ⊙ c_prev + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`.
///
/// The caller gives slices of matching lengths (`z`: `4 h rows`, the gates
/// `4 h rows`, the others `h rows`), with `h > 0`.
pub fn lstm_cell_forward(input: CellInputs, out: CellOutputs) {
    cell_forward(input, out, true);
}

/// [`lstm_cell_forward`] on the calling thread only (for a caller that
/// already splits its work over threads).
pub fn lstm_cell_forward_serial(input: CellInputs, out: CellOutputs) {
    cell_forward(input, out, false);
}

fn cell_forward(input: CellInputs, out: CellOutputs, parallel: bool) {
    let h = input.h;
    let rows = input.z.len() / (4 * h);
    let per_task = if parallel {
        rows_per_task(rows, h)
    } else {
        rows.max(1)
    };
    let (gates, tanh_c) = match out.kept {
        Some((g, t)) => (Some(g), Some(t)),
        None => (None, None),
    };
    let run = |start: usize,
               h_out: &mut [f32],
               c_out: &mut [f32],
               gates: Option<&mut [f32]>,
               tanh_c: Option<&mut [f32]>| {
        // Without kept gates, one row's scratch for them and tanh(c_t).
        let mut scratch: Vec<f32>;
        let (gates, tanh_c) = match (gates, tanh_c) {
            (Some(g), Some(t)) => (g, t),
            _ => {
                scratch = vec![0.0f32; 5 * h];
                let (g, t) = scratch.split_at_mut(4 * h);
                (g, t)
            }
        };
        let per_row = gates.len() > 4 * h;
        // One row of z summed from its terms (in L1), when there are several.
        let summed = !input.z_add.is_empty() || input.bias.is_some();
        let mut z_row = vec![0.0f32; if summed { 4 * h } else { 0 }];
        for k in 0..h_out.len() / h {
            let r = start + k;
            let rz = r * 4 * h..(r + 1) * 4 * h;
            let z: &[f32] = if summed {
                sum_row(&mut z_row, &input, rz);
                &z_row
            } else {
                &input.z[rz]
            };
            let out = (
                &mut h_out[k * h..(k + 1) * h],
                &mut c_out[k * h..(k + 1) * h],
            );
            let kk = if per_row { k } else { 0 };
            let g = &mut gates[kk * 4 * h..(kk + 1) * 4 * h];
            let t = &mut tanh_c[kk * h..(kk + 1) * h];
            let fb = input.forget_bias;
            match input.c_prev {
                Some(cp) => forward_row::<true>(z, &cp[r * h..(r + 1) * h], fb, out, g, t),
                None => forward_row::<false>(z, &[], fb, out, g, t),
            }
        }
    };
    if per_task >= rows {
        run(0, out.h, out.c, gates, tanh_c);
        return;
    }
    let tasks = rows.div_ceil(per_task);
    out.h
        .par_chunks_mut(h * per_task)
        .zip(out.c.par_chunks_mut(h * per_task))
        .zip(chunks_of(gates, 4 * h * per_task, tasks))
        .zip(chunks_of(tanh_c, h * per_task, tasks))
        .enumerate()
        .for_each(|(t, (((ho, co), g), tc))| run(t * per_task, ho, co, g, tc));
}

/// What the backward reads: the upstream gradients of `h_t` and `c_t`, what
/// the forward kept, and `c_prev` (`None`: zeros), all row-major.
#[derive(Clone, Copy)]
pub struct CellGradInputs<'a> {
    /// dL/dh_t, `[rows, h]`.
    pub dh: &'a [f32],
    /// dL/dc_t (from the later steps), `[rows, h]`.
    pub dc: &'a [f32],
    /// The gates' activations `[rows, 4h]`.
    pub gates: &'a [f32],
    /// `tanh(c_t)`, `[rows, h]`.
    pub tanh_c: &'a [f32],
    /// The previous cell state, `[rows, h]`, or `None` for zeros.
    pub c_prev: Option<&'a [f32]>,
    /// Cell size (`> 0`).
    pub h: usize,
}

/// One row of the backward (`dz`, `gates`: `4h` values; the rest `h`).
/// `PREV`: whether `c_prev` is read; `DZ`, `DC`: which outputs are written.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_row<const PREV: bool, const DZ: bool, const DC: bool>(
    dh: &[f32],
    dc: &[f32],
    gates: &[f32],
    tanh_c: &[f32],
    c_prev: &[f32],
    dz: &mut [f32],
    dc_prev: &mut [f32],
) {
    let h = dh.len();
    let (dc, tc) = (&dc[..h], &tanh_c[..h]);
    let (gi, gf, gg, go) = (
        &gates[..h],
        &gates[h..2 * h],
        &gates[2 * h..3 * h],
        &gates[3 * h..4 * h],
    );
    let cp: &[f32] = if PREV { &c_prev[..h] } else { &[] };
    let n = if DZ { h } else { 0 };
    let (dzi, rest) = dz.split_at_mut(n);
    let (dzf, rest) = rest.split_at_mut(n);
    let (dzg, dzo) = rest.split_at_mut(n);
    let dzo = &mut dzo[..n];
    let dcp = &mut dc_prev[..if DC { h } else { 0 }];
    for j in 0..h {
        let (i, f, g, o, t) = (gi[j], gf[j], gg[j], go[j], tc[j]);
        // The gradient reaching c_t: from later steps and through h_t.
        let dcs = dc[j] + dh[j] * o * (1.0 - t * t);
        if DZ {
            dzi[j] = dcs * g * i * (1.0 - i);
            dzf[j] = if PREV {
                dcs * cp[j] * f * (1.0 - f)
            } else {
                0.0
            };
            dzg[j] = dcs * i * (1.0 - g * g);
            dzo[j] = dh[j] * t * o * (1.0 - o);
        }
        if DC {
            dcp[j] = dcs * f;
        }
    }
}

/// The LSTM cell's backward, from the upstream gradients of `h_t` and `c_t`:
/// with `dcs = dc + dh ⊙ o ⊙ (1 - tanh²(c_t))`,
/// `dz = [dcs ⊙ g ⊙ i(1-i), dcs ⊙ c_prev ⊙ f(1-f), dcs ⊙ i ⊙ (1-g²), dh ⊙ tanh(c_t) ⊙ o(1-o)]`
/// into `dz` (`[rows, 4h]`) and `dc_prev = dcs ⊙ f` into `dc_prev`
/// (`[rows, h]`), each when given.
pub fn lstm_cell_backward(
    input: CellGradInputs,
    dz: Option<&mut [f32]>,
    dc_prev: Option<&mut [f32]>,
) {
    cell_backward(input, dz, dc_prev, true);
}

/// [`lstm_cell_backward`] on the calling thread only.
pub fn lstm_cell_backward_serial(
    input: CellGradInputs,
    dz: Option<&mut [f32]>,
    dc_prev: Option<&mut [f32]>,
) {
    cell_backward(input, dz, dc_prev, false);
}

fn cell_backward(
    input: CellGradInputs,
    dz: Option<&mut [f32]>,
    dc_prev: Option<&mut [f32]>,
    parallel: bool,
) {
    let h = input.h;
    let rows = input.dh.len() / h;
    let per_task = if parallel {
        rows_per_task(rows, h)
    } else {
        rows.max(1)
    };
    let run = |start: usize, dz: Option<&mut [f32]>, dc_prev: Option<&mut [f32]>| {
        let n = match (&dz, &dc_prev) {
            (Some(d), _) => d.len() / (4 * h),
            (None, Some(d)) => d.len() / h,
            (None, None) => 0,
        };
        let (want_dz, want_dc) = (dz.is_some(), dc_prev.is_some());
        let (dz, dc_prev) = (dz.unwrap_or_default(), dc_prev.unwrap_or_default());
        for k in 0..n {
            let r = start + k;
            let rh = r * h..(r + 1) * h;
            let (dh, dc, tc) = (
                &input.dh[rh.clone()],
                &input.dc[rh.clone()],
                &input.tanh_c[rh.clone()],
            );
            let gates = &input.gates[r * 4 * h..(r + 1) * 4 * h];
            let cp: &[f32] = input.c_prev.map_or(&[], |c| &c[rh]);
            let dzk: &mut [f32] = if want_dz {
                &mut dz[k * 4 * h..(k + 1) * 4 * h]
            } else {
                &mut []
            };
            let dck: &mut [f32] = if want_dc {
                &mut dc_prev[k * h..(k + 1) * h]
            } else {
                &mut []
            };
            macro_rules! row {
                ($p:literal, $z:literal, $c:literal) => {
                    backward_row::<$p, $z, $c>(dh, dc, gates, tc, cp, dzk, dck)
                };
            }
            match (input.c_prev.is_some(), want_dz, want_dc) {
                (true, true, true) => row!(true, true, true),
                (true, true, false) => row!(true, true, false),
                (true, false, true) => row!(true, false, true),
                (false, true, true) => row!(false, true, true),
                (false, true, false) => row!(false, true, false),
                (false, false, true) => row!(false, false, true),
                (_, false, false) => {}
            }
        }
    };
    if per_task >= rows {
        run(0, dz, dc_prev);
        return;
    }
    let tasks = rows.div_ceil(per_task);
    chunks_of(dz, 4 * h * per_task, tasks)
        .into_par_iter()
        .zip(chunks_of(dc_prev, h * per_task, tasks))
        .enumerate()
        .for_each(|(t, (dz, dc))| run(t * per_task, dz, dc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_is_within_a_few_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        let mut x = -20.0f32;
        while x <= 20.0 {
            let exact = f64::from(x).tanh();
            let got = f64::from(tanh(x));
            let ulp = f64::from(f32::EPSILON) * exact.abs().max(f64::from(f32::MIN_POSITIVE));
            worst = worst.max((got - exact).abs() / ulp);
            x += 1.0e-3;
        }
        assert!(worst <= 8.0, "worst error {worst} ulp");
        for x in [1e-30f32, -1e-30, 1e-8, 0.2499, 0.25, 100.0, f32::INFINITY] {
            let exact = f64::from(x).tanh();
            let err = (f64::from(tanh(x)) - exact).abs();
            assert!(
                err <= 8.0 * f64::from(f32::EPSILON) * exact.abs(),
                "tanh({x})"
            );
        }
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn parallel_split_gives_the_same_bits_as_one_pass() {
        // 40 rows of h = 512: 81,920 gate values, over the parallel threshold.
        let (rows, h) = (40, 512);
        let z: Vec<f32> = (0..rows * 4 * h)
            .map(|k| ((k * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let cp: Vec<f32> = (0..rows * h)
            .map(|k| ((k * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let input = CellInputs {
            z: &z,
            z_add: &[],
            bias: None,
            c_prev: Some(&cp),
            h,
            forget_bias: 1.0,
        };
        let mut full = (vec![0.0; rows * h], vec![0.0; rows * h]);
        let mut kept = (vec![0.0; rows * 4 * h], vec![0.0; rows * h]);
        lstm_cell_forward(
            input,
            CellOutputs {
                h: &mut full.0,
                c: &mut full.1,
                kept: Some((&mut kept.0, &mut kept.1)),
            },
        );
        for r in 0..rows {
            let mut one = (vec![0.0; h], vec![0.0; h]);
            let row_input = CellInputs {
                z: &z[r * 4 * h..(r + 1) * 4 * h],
                z_add: &[],
                bias: None,
                c_prev: Some(&cp[r * h..(r + 1) * h]),
                h,
                forget_bias: 1.0,
            };
            lstm_cell_forward(
                row_input,
                CellOutputs {
                    h: &mut one.0,
                    c: &mut one.1,
                    kept: None,
                },
            );
            assert_eq!(one.0, full.0[r * h..(r + 1) * h]);
            assert_eq!(one.1, full.1[r * h..(r + 1) * h]);
        }
        let grads = CellGradInputs {
            dh: &cp,
            dc: &full.1,
            gates: &kept.0,
            tanh_c: &kept.1,
            c_prev: Some(&cp),
            h,
        };
        let (mut dz, mut dcp) = (vec![0.0; rows * 4 * h], vec![0.0; rows * h]);
        lstm_cell_backward(grads, Some(&mut dz), Some(&mut dcp));
        let mut dcp_alone = vec![0.0; rows * h];
        lstm_cell_backward(grads, None, Some(&mut dcp_alone));
        assert_eq!(dcp, dcp_alone);
        let mut dz_alone = vec![0.0; rows * 4 * h];
        lstm_cell_backward(grads, Some(&mut dz_alone), None);
        assert_eq!(dz, dz_alone);
    }
}
