//! Layer normalization with TensorFlow's semantics
//! (`tf.contrib.layers.layer_norm`, Keras' `LayerNormalization`).
//!
//! `x` is normalised over its axes `begin_norm_axis..rank`: the kernels view
//! it as a row-major `[rows, c]` matrix (`c` = the product of the normalised
//! dims) and work row by row. The forward reads each row once from memory
//! (mean, biased variance and output are passes over the row in the cache)
//! and keeps the per-row mean and `1/sqrt(var + epsilon)` for the gradient.
//!
//! The gradient is built as nodes, one [`LayerNormGrad`] per input that takes
//! one (`x`, `gamma`, `beta`), all on one fused kernel, as
//! [`FusedBatchNormGrad`](crate::ops::norm::FusedBatchNormGrad) does for
//! batch norm: `dx` needs per-row sums, `dgamma` and `dbeta` per-column sums
//! over the rows. The first node makes one pass over the upstream gradient
//! and `x` that computes what it gives and, when the others are wanted too,
//! the column sums, which it keeps; the others take it as an extra input and
//! read them ([`ForwardContext::input_saved`]). The statistics come from what
//! the forward node kept (recomputed when not held). Each gradient node's own
//! gradient (second derivatives) is that of the same math written with
//! simple ops, with the plain mean (not `tf.nn.moments`' `stop_gradient`
//! mean, whose second derivatives miss the mean's dependence on `x`).

use std::mem::MaybeUninit;
use std::ops::Range;

use ndarray::IxDyn;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::{row_major, PARALLEL_MIN_LEN};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// About this many elements (whole rows) make one parallel task of a
/// backward pass.
const TASK_ELEMENTS: usize = 1 << 14;
/// At most this many tasks (each with `2c` partial column sums) per backward.
const MAX_TASKS: usize = 32;
/// Rows whose column sums are added in f32 before they go into the f64
/// totals.
const F32_ROWS: usize = 32;
/// Independent accumulators of the row sums of `dx`, so that they vectorise
/// (a single float accumulator stays scalar: float sums are not reordered)
/// and the vector adds do not wait on each other (four AVX2 or two AVX-512
/// registers per sum).
const LANES: usize = 32;

/// Layer normalization over the axes `begin_norm_axis..rank` of `x`; inputs
/// `x`, `gamma`, `beta` (both shaped `x.shape[begin_norm_axis:]`). Build it
/// with [`layer_norm`].
pub struct LayerNorm {
    /// The first normalised axis (below the rank of `x`).
    pub begin_norm_axis: usize,
    /// Added to the variance before the square root (finite, `>= 0`).
    pub epsilon: f32,
}

/// Per-row statistics of the forward, kept for the gradient nodes:
/// `xhat = (x - mean) * inv_std`.
#[derive(Clone)]
struct LnStats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Checks the attributes.
fn check_attrs(op: &str, begin: usize, epsilon: f32, rank: usize, x: &TensorShape) -> Result<()> {
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(Error::invalid(format!(
            "{op} epsilon must be finite and >= 0, got {epsilon}"
        )));
    }
    if begin >= rank {
        return Err(Error::invalid(format!(
            "{op} begin_norm_axis {begin} is out of range for x of shape {x} (rank {rank}): \
             it must be below the rank, so that at least one axis is normalised"
        )));
    }
    Ok(())
}

/// The static output shape: `x`'s, with `gamma`'s and `beta`'s dims merged
/// into the normalised ones.
fn static_rule(
    op: &str,
    begin: usize,
    epsilon: f32,
    shapes: [&TensorShape; 3],
) -> Result<TensorShape> {
    let [x, gamma, beta] = shapes;
    check_attrs(op, begin, epsilon, x.rank(), x)?;
    let mut norm = TensorShape::new(x.dims()[begin..].to_vec());
    for (name, s) in [("gamma", gamma), ("beta", beta)] {
        norm = norm.merge(s).ok_or_else(|| Error::ShapeMismatch {
            what: format!("{op} {name} (the shape of the normalised axes of x, x.shape[{begin}:])"),
            expected: norm.clone(),
            got: s.clone(),
        })?;
    }
    let mut dims = x.dims()[..begin].to_vec();
    dims.extend_from_slice(norm.dims());
    Ok(TensorShape::new(dims))
}

/// Checks the run-time shapes of `x` and the `[c]`-shaped parameters;
/// returns `(rows, c)`.
fn runtime_dims(begin: usize, x: &Tensor, params: &[(&str, &Tensor)]) -> Result<(usize, usize)> {
    if begin >= x.ndim() {
        return Err(Error::invalid(format!(
            "layer_norm begin_norm_axis {begin} is out of range for x of shape {} (rank {})",
            TensorShape::known(x.shape()),
            x.ndim()
        )));
    }
    let (lead, norm) = x.shape().split_at(begin);
    for (name, p) in params {
        if p.shape() != norm {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "layer_norm {name} (the shape of the normalised axes of x, x.shape[{begin}:])"
                ),
                expected: TensorShape::known(norm),
                got: TensorShape::known(p.shape()),
            });
        }
    }
    Ok((lead.iter().product(), norm.iter().product()))
}

/// The sum of `L` accumulators (`L` a power of two) as a tree of halves: a
/// few vector adds rather than `L` adds in a row.
#[inline(always)]
fn tree_sum<const L: usize>(mut acc: [f32; L]) -> f32 {
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0]
}

/// `sum(v - m)` (`SQUARE` false) or `sum((v - m)^2)` of a row, in eight
/// accumulators (one vector register: wider ones measured no faster here
/// on rows of 64 to 256 elements, where the horizontal sum and the
/// statistics' square root weigh as much as the pass), then one for the
/// last few elements.
#[inline]
fn row_sum<const SQUARE: bool>(v: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            let d = x - m;
            *a += if SQUARE { d * d } else { d };
        }
    }
    rest.iter().fold(tree_sum(acc), |s, &x| {
        let d = x - m;
        s + if SQUARE { d * d } else { d }
    })
}

/// [`row_sums_dx`] over the first `L`-multiple elements, in `L`
/// accumulators per sum, and the elements left over.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn dx_stage<'a, const L: usize>(
    g: &'a [f32],
    x: &'a [f32],
    gamma: &'a [f32],
    m: f32,
    is: f32,
) -> ((f32, f32), (&'a [f32], &'a [f32], &'a [f32])) {
    let mut a1 = [0.0f32; L];
    let mut a2 = [0.0f32; L];
    let ((gc, gr), (xc, xr), (wc, wr)) = (
        g.as_chunks::<L>(),
        x.as_chunks::<L>(),
        gamma.as_chunks::<L>(),
    );
    let rest = (gr, xr, wr);
    for ((g, x), w) in gc.iter().zip(xc).zip(wc) {
        for l in 0..L {
            let gy = g[l] * w[l];
            a1[l] += gy;
            a2[l] += gy * ((x[l] - m) * is);
        }
    }
    ((tree_sum(a1), tree_sum(a2)), rest)
}

/// `(sum(g * gamma), sum(g * gamma * (x - m) * is))` of a row: [`LANES`]
/// accumulators per sum, then 8, then one for the last few elements.
#[inline]
fn row_sums_dx(g: &[f32], x: &[f32], gamma: &[f32], m: f32, is: f32) -> (f32, f32) {
    let ((a1, a2), (g, x, gamma)) = dx_stage::<LANES>(g, x, gamma, m, is);
    let ((b1, b2), (g, x, gamma)) = dx_stage::<8>(g, x, gamma, m, is);
    let (mut s1, mut s2) = (a1 + b1, a2 + b2);
    for ((&g, &x), &w) in g.iter().zip(x).zip(gamma) {
        let gy = g * w;
        s1 += gy;
        s2 += gy * ((x - m) * is);
    }
    (s1, s2)
}

/// The mean and `1/sqrt(var + epsilon)` (biased variance) of a non-empty row.
#[inline]
fn row_stats(x: &[f32], epsilon: f32) -> (f32, f32) {
    let c = x.len() as f32;
    let m = row_sum::<false>(x, 0.0) / c;
    let var = row_sum::<true>(x, m) / c;
    let is = (1.0 / (f64::from(var) + f64::from(epsilon)).sqrt()) as f32;
    (m, is)
}

/// The forward: `y = (x - mean) * inv_std * gamma + beta` per row of the
/// `[rows, c]` matrix `x` (`c > 0`), and the per-row statistics.
fn forward_kernel(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    c: usize,
    epsilon: f32,
) -> (Vec<f32>, LnStats) {
    let rows = x.len() / c;
    let mut mean = vec![0.0f32; rows];
    let mut inv_std = vec![0.0f32; rows];
    let mut out: Vec<f32> = Vec::with_capacity(x.len());
    let spare = &mut out.spare_capacity_mut()[..x.len()];
    let row = |o: &mut [MaybeUninit<f32>], x: &[f32], m: &mut f32, i: &mut f32| {
        let (mv, is) = row_stats(x, epsilon);
        (*m, *i) = (mv, is);
        for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
            o.write((x - mv) * is * w + b);
        }
    };
    if x.len() >= PARALLEL_MIN_LEN {
        spare
            .par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(mean.par_iter_mut().zip(inv_std.par_iter_mut()))
            .for_each(|((o, x), (m, i))| row(o, x, m, i));
    } else {
        spare
            .chunks_mut(c)
            .zip(x.chunks(c))
            .zip(mean.iter_mut().zip(inv_std.iter_mut()))
            .for_each(|((o, x), (m, i))| row(o, x, m, i));
    }
    // SAFETY: `x.len()` is `rows * c`, the rows of `c` cover it, and `row`
    // writes every element of each (`gamma` and `beta` have `c` elements).
    unsafe { out.set_len(x.len()) };
    (out, LnStats { mean, inv_std })
}

/// Statistics recomputed from `x` (`[rows, c]`, `c > 0`) when the forward's
/// are not held.
fn recompute_stats(x: &[f32], c: usize, epsilon: f32) -> LnStats {
    let (mean, inv_std) = x.chunks(c).map(|r| row_stats(r, epsilon)).unzip();
    LnStats { mean, inv_std }
}

/// The backward pass over `[rows, c]` arrays (`c > 0`).
struct Backward<'a> {
    g: &'a [f32],
    x: &'a [f32],
    gamma: &'a [f32],
    stats: &'a LnStats,
    c: usize,
}

/// The column sums `(sum(g), sum(g * xhat))` over the rows, in f64.
type ColumnSums = (Vec<f64>, Vec<f64>);

impl Backward<'_> {
    /// Rows `rows` of the pass: `dx` into `out` (those rows) when given, and
    /// the column sums of these rows when `sums` (`2c` values: `sum(g)`,
    /// then `sum(g * xhat)`; empty otherwise).
    fn task(
        &self,
        rows: Range<usize>,
        mut out: Option<&mut [MaybeUninit<f32>]>,
        sums: bool,
    ) -> Vec<f64> {
        let c = self.c;
        let cf = c as f32;
        let mut acc = vec![0.0f64; if sums { 2 * c } else { 0 }];
        let mut part = vec![0.0f32; if sums { 2 * c } else { 0 }];
        let start = rows.start;
        for r in rows {
            let (g, x) = (&self.g[r * c..(r + 1) * c], &self.x[r * c..(r + 1) * c]);
            let (m, is) = (self.stats.mean[r], self.stats.inv_std[r]);
            if sums {
                let (pb, pg) = part.split_at_mut(c);
                for (((pb, pg), &g), &x) in pb.iter_mut().zip(pg).zip(g).zip(x) {
                    *pb += g;
                    *pg += g * ((x - m) * is);
                }
                if (r - start + 1).is_multiple_of(F32_ROWS) {
                    flush(&mut acc, &mut part);
                }
            }
            if let Some(out) = out.as_deref_mut() {
                // dx = is * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = g * gamma
                let (s1, s2) = row_sums_dx(g, x, self.gamma, m, is);
                let (a, b) = (s1 / cf, s2 / cf);
                let o = &mut out[(r - start) * c..(r - start + 1) * c];
                for (((o, &g), &x), &w) in o.iter_mut().zip(g).zip(x).zip(self.gamma) {
                    let xh = (x - m) * is;
                    o.write(is * ((g * w - a) - xh * b));
                }
            }
        }
        if sums {
            flush(&mut acc, &mut part);
        }
        acc
    }

    /// `dx` when `want_dx`, the column sums when `want_sums`: one pass over
    /// `g` and `x`, in parallel tasks of whole rows for large arrays (the
    /// split depends on the shape only, and the partial sums are added in
    /// task order, so the results do not depend on the thread count).
    fn run(&self, want_dx: bool, want_sums: bool) -> (Option<Vec<f32>>, Option<ColumnSums>) {
        let (len, c) = (self.x.len(), self.c);
        let rows = len / c;
        let mut dx: Option<Vec<f32>> = want_dx.then(|| Vec::with_capacity(len));
        let out = dx.as_mut().map(|v| &mut v.spare_capacity_mut()[..len]);
        let partials: Vec<Vec<f64>> = if len < PARALLEL_MIN_LEN {
            vec![self.task(0..rows, out, want_sums)]
        } else {
            let per_task = (TASK_ELEMENTS / c).max(1).max(rows.div_ceil(MAX_TASKS));
            let range = |t: usize| t * per_task..((t + 1) * per_task).min(rows);
            match out {
                Some(out) => out
                    .par_chunks_mut(per_task * c)
                    .enumerate()
                    .map(|(t, o)| self.task(range(t), Some(o), want_sums))
                    .collect(),
                None => (0..rows.div_ceil(per_task))
                    .into_par_iter()
                    .map(|t| self.task(range(t), None, want_sums))
                    .collect(),
            }
        };
        if let Some(v) = dx.as_mut() {
            // SAFETY: the tasks' rows cover all `rows * c = len` elements and
            // each task wrote every element of its rows.
            unsafe { v.set_len(len) };
        }
        let sums = want_sums.then(|| {
            let mut acc = vec![0.0f64; 2 * c];
            for p in &partials {
                acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            let sg = acc.split_off(c);
            (acc, sg)
        });
        (dx, sums)
    }
}

/// Adds the f32 partial sums into the f64 totals and clears them.
fn flush(acc: &mut [f64], part: &mut [f32]) {
    for (a, p) in acc.iter_mut().zip(part.iter_mut()) {
        *a += f64::from(*p);
        *p = 0.0;
    }
}

impl Op for LayerNorm {
    fn type_name(&self) -> &'static str {
        "LayerNorm"
    }

    // x: rank > begin_norm_axis; gamma, beta: x.shape[begin_norm_axis:].
    // Output: x's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [x, gamma, beta] = inputs else {
            return Err(Error::invalid(format!(
                "LayerNorm takes 3 inputs (x, gamma, beta), got {}",
                inputs.len()
            )));
        };
        static_rule(
            self.type_name(),
            self.begin_norm_axis,
            self.epsilon,
            [x, gamma, beta],
        )
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let [x, gamma, beta] = inputs else {
            return Err(Error::invalid("LayerNorm takes 3 inputs (x, gamma, beta)"));
        };
        let (rows, c) = runtime_dims(self.begin_norm_axis, x, &[("gamma", gamma), ("beta", beta)])?;
        if rows == 0 || c == 0 {
            ctx.save(LnStats {
                mean: vec![0.0; rows],
                inv_std: vec![0.0; rows],
            });
            return Ok(Tensor::zeros(IxDyn(x.shape())));
        }
        let (xs, gs, bs) = (row_major(x), row_major(gamma), row_major(beta));
        let (out, stats) = forward_kernel(&xs, &gs, &bs, c, self.epsilon);
        // Small ([rows] twice): kept in inference passes too, where a
        // gradient node run in the same pass reads them.
        ctx.save(stats);
        Ok(Tensor::from_shape_vec(IxDyn(x.shape()), out)?)
    }

    // xhat = (x - mean) * inv_std (per row, over the normalised axes), gy = g * gamma:
    // dx = inv_std * (gy - mean(gy) - xhat * mean(gy * xhat)) (mean and variance
    // depend on x), dgamma = sum over the rows of g * xhat, dbeta = sum over the rows of g.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let base = [ctx.grad(), ctx.input(0), ctx.input(1), ctx.output()];
        let params_wanted = ctx.needs_grad(1) || ctx.needs_grad(2);
        let mut grads = vec![None; 3];
        // The first node keeps the column sums for the others.
        let mut sums_from: Option<Node> = None;
        for (k, of) in [
            (0, LayerNormGradOf::X),
            (1, LayerNormGradOf::Gamma),
            (2, LayerNormGradOf::Beta),
        ] {
            if !ctx.needs_grad(k) {
                continue;
            }
            let sums = match (&sums_from, of) {
                (Some(_), _) => ParamSums::Reuse,
                (None, LayerNormGradOf::X) if !params_wanted => ParamSums::Skip,
                (None, _) => ParamSums::Keep,
            };
            let op = LayerNormGrad {
                begin_norm_axis: self.begin_norm_axis,
                epsilon: self.epsilon,
                of,
                sums,
            };
            let mut args = base.to_vec();
            args.extend(sums_from.as_ref());
            let node = ctx.add_op(op, &args)?;
            if sums == ParamSums::Keep {
                sums_from = Some(node.clone());
            }
            grads[k] = Some(node);
        }
        Ok(grads)
    }
}

/// Which input of a [`LayerNorm`] a [`LayerNormGrad`] node is the gradient of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerNormGradOf {
    /// `dx`, shaped like `x`.
    X,
    /// `dgamma`, shaped like `gamma`.
    Gamma,
    /// `dbeta`, shaped like `beta`.
    Beta,
}

/// What a [`LayerNormGrad`] node does about the column sums that give
/// `dgamma` and `dbeta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSums {
    /// Nothing (a `dx` node whose forward's `gamma` and `beta` take no gradient).
    Skip,
    /// Computes them in its pass and keeps them for the other gradient
    /// nodes of the same forward.
    Keep,
    /// Reads them from its last input, the node that kept them (recomputed
    /// when not held); a `dx` node still makes its own pass.
    Reuse,
}

/// The gradient of a [`LayerNorm`] node with respect to one of `x`, `gamma`
/// or `beta`, one output per node.
///
/// Inputs: `dy` (the upstream gradient), `x`, `gamma`, the forward node
/// (whose kept per-row mean and `1/sqrt(var + epsilon)` are read;
/// recomputed from `x` when not held), then, with [`ParamSums::Reuse`], the
/// gradient node of the same forward that kept the column sums.
///
/// The math is that of [`LayerNorm`]'s gradient (see [`layer_norm`]); the
/// node's own gradient, for second derivatives, is that of the same math
/// written with simple ops (the plain mean and biased variance, so the
/// curvature of the statistics is included).
pub struct LayerNormGrad {
    /// The forward node's first normalised axis.
    pub begin_norm_axis: usize,
    /// The forward node's epsilon.
    pub epsilon: f32,
    /// The input whose gradient this node gives.
    pub of: LayerNormGradOf,
    /// Whether this node computes, keeps or reads the column sums.
    pub sums: ParamSums,
}

/// `dgamma` and `dbeta` of one backward, kept by the gradient node that
/// computed the column sums for the others.
struct ParamGrads {
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

impl LayerNormGrad {
    fn check_inputs(&self, n: usize) -> Result<()> {
        let reuse = self.sums == ParamSums::Reuse;
        let want = 4 + usize::from(reuse);
        if n != want {
            return Err(Error::invalid(format!(
                "{} takes {want} inputs (dy, x, gamma, the forward node{}), got {n}",
                self.type_name(),
                if reuse {
                    ", the gradient node with the sums"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// The same math as this node's forward, with simple ops, from nodes
    /// standing for its inputs (second derivatives).
    fn composition(&self, inputs: &[Node]) -> Result<Node> {
        let (dy, x, gamma) = (&inputs[0], &inputs[1], &inputs[2]);
        let rank = x.shape().rank();
        let begin = self.begin_norm_axis;
        let norm_axes: Vec<usize> = (begin..rank).collect();
        let lead_axes: Vec<usize> = (0..begin).collect();
        // The plain mean (no stop_gradient as in tf.nn.moments): the
        // variance's dependence on x through the mean counts at second order.
        let mean = crate::reduce_mean(x, norm_axes.clone(), true)?;
        let xc = crate::subtract(x, &mean)?;
        let var = crate::reduce_mean(&crate::multiply(&xc, &xc)?, norm_axes.clone(), true)?;
        let eps = x.graph().constant(self.epsilon)?;
        let inv_std = crate::rsqrt(&crate::add(&var, &eps)?)?;
        let xhat = crate::multiply(&xc, &inv_std)?;
        match self.of {
            LayerNormGradOf::Beta => crate::reduce_sum(dy, lead_axes, false),
            LayerNormGradOf::Gamma => {
                crate::reduce_sum(&crate::multiply(dy, &xhat)?, lead_axes, false)
            }
            LayerNormGradOf::X => {
                let gy = crate::multiply(dy, gamma)?;
                let a = crate::reduce_mean(&gy, norm_axes.clone(), true)?;
                let b = crate::reduce_mean(&crate::multiply(&gy, &xhat)?, norm_axes, true)?;
                let inner =
                    crate::subtract(&crate::subtract(&gy, &a)?, &crate::multiply(&xhat, &b)?)?;
                crate::multiply(&inner, &inv_std)
            }
        }
    }
}

impl Op for LayerNormGrad {
    fn type_name(&self) -> &'static str {
        match self.of {
            LayerNormGradOf::X => "LayerNormGrad",
            LayerNormGradOf::Gamma => "LayerNormGradGamma",
            LayerNormGradOf::Beta => "LayerNormGradBeta",
        }
    }

    // dx: x's shape (and dy's); dgamma, dbeta: gamma's (x.shape[begin_norm_axis:]).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.check_inputs(inputs.len())?;
        let (dy, x, gamma) = (inputs[0], inputs[1], inputs[2]);
        let y = static_rule(
            self.type_name(),
            self.begin_norm_axis,
            self.epsilon,
            [x, gamma, gamma],
        )?;
        match self.of {
            LayerNormGradOf::X => y.merge(dy).ok_or_else(|| Error::ShapeMismatch {
                what: "layer_norm upstream gradient (the shape of x)".into(),
                expected: y.clone(),
                got: dy.clone(),
            }),
            _ => Ok(TensorShape::new(y.dims()[self.begin_norm_axis..].to_vec())),
        }
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.check_inputs(inputs.len())?;
        let (dy, x, gamma) = (inputs[0], inputs[1], inputs[2]);
        let (rows, c) = runtime_dims(self.begin_norm_axis, x, &[("gamma", gamma)])?;
        if dy.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what: "layer_norm upstream gradient (the shape of x)".into(),
                expected: TensorShape::known(x.shape()),
                got: TensorShape::known(dy.shape()),
            });
        }
        let param_shape = gamma.raw_dim();
        let pick = |kept: &ParamGrads| match self.of {
            LayerNormGradOf::Gamma => kept.dgamma.clone(),
            _ => kept.dbeta.clone(),
        };
        if self.of != LayerNormGradOf::X && self.sums == ParamSums::Reuse {
            if let Some(kept) = ctx.input_saved::<ParamGrads>(4) {
                if kept.dgamma.len() == c {
                    return Ok(Tensor::from_shape_vec(param_shape, pick(kept))?);
                }
            }
        }
        let want_dx = self.of == LayerNormGradOf::X;
        let want_sums = match self.of {
            LayerNormGradOf::X => self.sums == ParamSums::Keep,
            _ => true,
        };
        let (dx, sums) = if rows == 0 || c == 0 {
            let zeros = vec![0.0f64; c];
            (
                want_dx.then(|| vec![0.0; x.len()]),
                want_sums.then(|| (zeros.clone(), zeros)),
            )
        } else {
            let (xs, gs, ws) = (row_major(x), row_major(dy), row_major(gamma));
            let recomputed;
            let stats = match ctx.input_saved::<LnStats>(3) {
                Some(s) if s.mean.len() == rows => s,
                _ => {
                    recomputed = recompute_stats(&xs, c, self.epsilon);
                    &recomputed
                }
            };
            let pass = Backward {
                g: &gs,
                x: &xs,
                gamma: &ws,
                stats,
                c,
            };
            pass.run(want_dx, want_sums)
        };
        let mut param = None;
        if let Some((sum_g, sum_gx)) = sums {
            let kept = ParamGrads {
                dgamma: sum_gx.iter().map(|&s| s as f32).collect(),
                dbeta: sum_g.iter().map(|&s| s as f32).collect(),
            };
            if self.of != LayerNormGradOf::X {
                param = Some(pick(&kept));
            }
            // For the other gradient nodes of the same forward.
            ctx.save(kept);
        }
        match (dx, param) {
            (Some(dx), _) => Ok(Tensor::from_shape_vec(IxDyn(x.shape()), dx)?),
            (None, Some(v)) => Ok(Tensor::from_shape_vec(param_shape, v)?),
            (None, None) => Err(Error::invalid(format!(
                "{}: nothing computed (a bug)",
                self.type_name()
            ))),
        }
    }

    // The gradient of the same math written with simple ops.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| self.composition(inputs))
    }
}

/// Layer normalization (TensorFlow's `layer_norm`): over the axes
/// `begin_norm_axis..rank` of `x`, with `m` the mean and `v` the biased
/// variance (divided by the element count) of each slice,
/// `y = (x - m) / sqrt(v + epsilon) * gamma + beta`.
///
/// `gamma` and `beta` have shape `x.shape[begin_norm_axis:]` (broadcast over
/// the leading axes); `begin_norm_axis` must be below the rank of `x`
/// (`rank - 1` normalises over the last axis only, as a transformer's layer
/// norm). The gradients w.r.t. `x` (including the dependence of `m` and `v`
/// on `x`), `gamma` (the sum of `upstream * xhat` over the leading axes) and
/// `beta` (the sum of `upstream`) are [`LayerNormGrad`] nodes sharing one
/// pass, differentiable again (second derivatives include the curvature of
/// the statistics).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 4]);
/// let gamma = g.constant([1.0f32, 1.0, 2.0, 2.0]).unwrap();
/// let beta = g.constant([0.0f32, 0.0, 0.0, 1.0]).unwrap();
/// let y = ad::layer_norm(&x, &gamma, &beta, 1, 0.0).unwrap();
/// let feed = ad::feed! { x => [[1.0, 3.0, 1.0, 3.0]] }.unwrap();
/// // mean 2, variance 1
/// let out = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert_eq!(out, ad::tensor([[-1.0, 1.0, -2.0, 3.0]]));
/// assert!(ad::layer_norm(&x, &gamma, &beta, 2, 1e-3).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when `begin_norm_axis`
/// is not below the rank of `x` or `epsilon` is negative or not finite,
/// [`Error::ShapeMismatch`] when the static shape of `gamma` or `beta` is not
/// `x.shape[begin_norm_axis:]`; at run time, the same for the fed values'
/// shapes; [`Error::GraphMismatch`].
pub fn layer_norm(
    x: &Node,
    gamma: &Node,
    beta: &Node,
    begin_norm_axis: usize,
    epsilon: f32,
) -> Result<Node> {
    build(
        LayerNorm {
            begin_norm_axis,
            epsilon,
        },
        &[x, gamma, beta],
    )
}
