//! Reductions over a set of axes: reduce_sum, reduce_mean, and their
//! gradient op [`ReduceGrad`] (a broadcast back to the input's run-time
//! shape, whose own gradient is the reduction again); reduce_max and
//! reduce_min, with their gradient op [`ReduceMinMaxGrad`] (the upstream sent
//! to the extremal elements, split equally among ties); and argmax / argmin
//! along one axis (no gradient).
//!
//! The reductions take the axes as anything that converts into [`Axes`] (`0`, `[0, 2]`,
//! `&[1][..]`, `vec![1, 2]`, or [`Axes::All`]) and a `keep_dims` flag: when it is
//! set the reduced dims stay as size 1, otherwise they are removed.

use ndarray::{Axis, IxDyn, Zip};

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::{broadcast_to_shape, sum_to_shape};
use crate::kernels::elementwise::row_major;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{axis_error, expect_inputs};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The axes a reduction runs over.
///
/// ```
/// use adgraph::Axes;
/// assert_eq!(Axes::from(1), Axes::List(vec![1]));
/// assert_eq!(Axes::from([2, 0]).resolve(3).unwrap(), vec![0, 2]);
/// assert_eq!(Axes::All.resolve(2).unwrap(), vec![0, 1]);
/// assert!(Axes::from([1, 1]).resolve(3).is_err());
/// assert!(Axes::from(3).resolve(3).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axes {
    /// Every axis (the result of a reduction without `keep_dims` is a scalar).
    All,
    /// These axes, in any order, each at most once. An empty list reduces nothing.
    List(Vec<usize>),
}

impl Axes {
    /// The axes for a tensor of rank `rank`, sorted ascending.
    ///
    /// # Errors
    /// [`Error::Axis`] for an axis `>= rank`; [`Error::InvalidArgument`] for an
    /// axis given twice.
    pub fn resolve(&self, rank: usize) -> Result<Vec<usize>> {
        match self {
            Axes::All => Ok((0..rank).collect()),
            Axes::List(list) => {
                let mut seen = vec![false; rank];
                for &a in list {
                    let slot = seen.get_mut(a).ok_or_else(|| axis_error(a, rank))?;
                    if *slot {
                        return Err(Error::invalid(format!(
                            "reduction axes {list:?} name axis {a} twice"
                        )));
                    }
                    *slot = true;
                }
                Ok((0..rank).filter(|&a| seen[a]).collect())
            }
        }
    }
}

impl From<usize> for Axes {
    fn from(axis: usize) -> Self {
        Axes::List(vec![axis])
    }
}

impl<const N: usize> From<[usize; N]> for Axes {
    fn from(axes: [usize; N]) -> Self {
        Axes::List(axes.to_vec())
    }
}

impl<const N: usize> From<&[usize; N]> for Axes {
    fn from(axes: &[usize; N]) -> Self {
        Axes::List(axes.to_vec())
    }
}

impl From<&[usize]> for Axes {
    fn from(axes: &[usize]) -> Self {
        Axes::List(axes.to_vec())
    }
}

impl From<Vec<usize>> for Axes {
    fn from(axes: Vec<usize>) -> Self {
        Axes::List(axes)
    }
}

/// The static shape of a reduction of `input` over `axes` (sorted, valid).
fn reduced_shape(input: &TensorShape, axes: &[usize], keep_dims: bool) -> TensorShape {
    TensorShape::new(
        input
            .dims()
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep_dims) {
                (false, _) => Some(d),
                (true, true) => Some(Some(1)),
                (true, false) => None,
            })
            .collect(),
    )
}

/// The sum of `x` over `axes` (sorted, valid).
fn sum_axes(x: &Tensor, axes: &[usize], keep_dims: bool) -> Result<Tensor> {
    if axes.len() == x.ndim() {
        let shape = if keep_dims { vec![1; x.ndim()] } else { vec![] };
        return Ok(Tensor::from_elem(IxDyn(&shape), x.sum()));
    }
    if axes.is_empty() {
        return Ok(x.clone());
    }
    // One pass over contiguous blocks (ndarray's per-axis sum_axis walks a
    // dynamic-rank index per element), then the reduced dims dropped.
    let summed = sum_to_shape(x, &kept_dims(x.shape(), axes));
    if keep_dims {
        return Ok(summed);
    }
    let dropped: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    // Standard layout first: a reduction over size-1 axes hands `x` back as it is laid out.
    Ok(summed
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&dropped))?)
}

/// The number of elements each output element of a reduction sums.
fn reduced_count(x_shape: &[usize], axes: &[usize]) -> usize {
    axes.iter().map(|&a| x_shape[a]).product()
}

/// `grad` (shaped like the reduction's output) broadcast back to `x_shape`,
/// times `scale`: the reduced axes are reinserted with size 1 and repeated.
fn broadcast_back(grad: &Tensor, x_shape: &[usize], axes: &[usize], scale: f32) -> Result<Tensor> {
    let kept = kept_dims(x_shape, axes);
    broadcast_to_shape(&grad.to_shape(kept)?.into_owned(), x_shape, scale)
}

/// `x_shape` with the reduced `axes` set to 1: a reduction's output with its dims kept.
fn kept_dims(x_shape: &[usize], axes: &[usize]) -> Vec<usize> {
    x_shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

/// Sum over some axes.
pub struct ReduceSum {
    axes: Axes,
    keep_dims: bool,
}

impl Op for ReduceSum {
    fn type_name(&self) -> &'static str {
        "ReduceSum"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ReduceSum")?;
        let axes = self.axes.resolve(inputs[0].rank())?;
        Ok(reduced_shape(inputs[0], &axes, self.keep_dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ReduceSum")?;
        let axes = self.axes.resolve(inputs[0].ndim())?;
        sum_axes(inputs[0], &axes, self.keep_dims)
    }
    // dx[i] = g[i with the reduced axes dropped (or set to 0 with keep_dims)]
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = reduce_grad(
            ctx.grad(),
            ctx.input(0),
            self.axes.clone(),
            self.keep_dims,
            false,
        )?;
        Ok(vec![Some(dx)])
    }
}

/// Mean over some axes.
pub struct ReduceMean {
    axes: Axes,
    keep_dims: bool,
}

impl Op for ReduceMean {
    fn type_name(&self) -> &'static str {
        "ReduceMean"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ReduceMean")?;
        let axes = self.axes.resolve(inputs[0].rank())?;
        Ok(reduced_shape(inputs[0], &axes, self.keep_dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ReduceMean")?;
        let x = inputs[0];
        let axes = self.axes.resolve(x.ndim())?;
        // An empty reduction gives 0/0 = NaN, as in NumPy and TensorFlow.
        let count = reduced_count(x.shape(), &axes) as f32;
        let mut out = sum_axes(x, &axes, self.keep_dims)?;
        out.mapv_inplace(|v| v / count);
        Ok(out)
    }
    // dx[i] = g[i with the reduced axes dropped] / n, n = number of elements
    // reduced per output (read from x's run-time shape)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = reduce_grad(
            ctx.grad(),
            ctx.input(0),
            self.axes.clone(),
            self.keep_dims,
            true,
        )?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a reduction ([`ReduceSum`], or [`ReduceMean`] with
/// `mean`): inputs `(g, x)`, where `g` is shaped like the reduction's output;
/// the output is `g` broadcast back to the run-time shape of `x` (the reduced
/// axes reinserted and repeated), divided by the number of elements each
/// output element reduced when `mean`. Only the shape of `x` is read.
pub struct ReduceGrad {
    /// The reduced axes of the forward reduction.
    pub axes: Axes,
    /// Whether the forward reduction kept the reduced dims (with size 1).
    pub keep_dims: bool,
    /// Whether the forward reduction was a mean (the gradient is then scaled by `1/n`).
    pub mean: bool,
}

impl Op for ReduceGrad {
    fn type_name(&self) -> &'static str {
        "ReduceGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "ReduceGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let axes = self.axes.resolve(x.rank())?;
        let reduced = reduced_shape(x, &axes, self.keep_dims);
        if !reduced.is_compatible(g) {
            return Err(Error::ShapeMismatch {
                what: format!("ReduceGrad: gradient of a reduction of {x} over {axes:?}"),
                expected: reduced,
                got: g.clone(),
            });
        }
        Ok(x.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "ReduceGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let axes = self.axes.resolve(x.ndim())?;
        let reduced = reduced_shape(&TensorShape::known(x.shape()), &axes, self.keep_dims);
        if reduced != TensorShape::known(g.shape()) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "ReduceGrad: gradient of a reduction of {} over {axes:?}",
                    TensorShape::known(x.shape())
                ),
                expected: reduced,
                got: TensorShape::known(g.shape()),
            });
        }
        let scale = if self.mean {
            1.0 / reduced_count(x.shape(), &axes) as f32
        } else {
            1.0
        };
        broadcast_back(g, x.shape(), &axes, scale)
    }
    // Linear in g: its adjoint is the same reduction (sum, or mean) of the upstream.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dg = if self.mean {
            reduce_mean(ctx.grad(), self.axes.clone(), self.keep_dims)?
        } else {
            reduce_sum(ctx.grad(), self.axes.clone(), self.keep_dims)?
        };
        Ok(vec![Some(dg), None])
    }
}

/// `g` (the gradient of a reduction of `x` over `axes`) broadcast back to
/// `x`'s shape, over the count reduced when `mean`.
fn reduce_grad(g: &Node, x: &Node, axes: Axes, keep_dims: bool, mean: bool) -> Result<Node> {
    build(
        ReduceGrad {
            axes,
            keep_dims,
            mean,
        },
        &[g, x],
    )
}

/// The sum of `x` over `axes` (`tf.reduce_sum`). Reduced dims are removed,
/// or kept with size 1 if `keep_dims`. [`Axes::All`] sums everything; over a
/// scalar it is the identity.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3, 4]);
/// assert_eq!(ad::reduce_sum(&x, [2, 0], false).unwrap().shape(), ad::shape![3]);
/// assert_eq!(ad::reduce_sum(&x, 1, true).unwrap().shape(), ad::shape![None, 1, 4]);
/// assert_eq!(ad::reduce_sum(&x, ad::Axes::All, false).unwrap().shape(), ad::shape![]);
/// assert!(ad::reduce_sum(&x, 3, false).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Axis`] for an axis out of range or
/// [`Error::InvalidArgument`] for an axis given twice.
pub fn reduce_sum(x: &Node, axes: impl Into<Axes>, keep_dims: bool) -> Result<Node> {
    build(
        ReduceSum {
            axes: axes.into(),
            keep_dims,
        },
        &[x],
    )
}

/// The mean of `x` over `axes` (`tf.reduce_mean`); see [`reduce_sum`] for the
/// axes and `keep_dims`. The mean of no elements is NaN.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2, 2]);
/// let m = ad::reduce_mean(&x, 1, false).unwrap();
/// let mut rt = ad::RunTime::new();
/// let feed = ad::feed! { x => [[1.0, 3.0], [5.0, 9.0]] }.unwrap();
/// assert_eq!(rt.forward(&m, &feed).unwrap(), &ad::tensor([2.0, 7.0]));
/// ```
///
/// # Errors
/// As [`reduce_sum`].
pub fn reduce_mean(x: &Node, axes: impl Into<Axes>, keep_dims: bool) -> Result<Node> {
    build(
        ReduceMean {
            axes: axes.into(),
            keep_dims,
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// reduce_max, reduce_min
// ---------------------------------------------------------------------------

/// The larger of a running maximum `m` and `v`; a NaN wins (and stays).
#[inline]
fn pick_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// The smaller of a running minimum `m` and `v`; a NaN wins (and stays).
#[inline]
fn pick_min(m: f32, v: f32) -> f32 {
    if v < m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Whether `axes` (sorted, valid, non-empty) are the last dims of a rank-`rank`
/// tensor: the reduction then runs over contiguous rows.
fn trailing(axes: &[usize], rank: usize) -> bool {
    !axes.is_empty()
        && axes
            .iter()
            .enumerate()
            .all(|(k, &a)| a == rank - axes.len() + k)
}

/// The fold of `x` over `axes` (sorted, valid) with `pick` from `init`
/// (`-inf` for a maximum, so that an empty reduction gives it, as in TF).
fn extremum_axes(
    x: &Tensor,
    axes: &[usize],
    keep_dims: bool,
    init: f32,
    pick: impl Fn(f32, f32) -> f32 + Copy,
) -> Result<Tensor> {
    if axes.is_empty() {
        return Ok(x.clone());
    }
    let kept = kept_dims(x.shape(), axes);
    let folded = if trailing(axes, x.ndim()) {
        // One pass over contiguous rows (reductions over the last dims, the usual case).
        let row = reduced_count(x.shape(), axes);
        let out_len: usize = kept.iter().product();
        let data: Vec<f32> = if row == 0 {
            vec![init; out_len]
        } else {
            row_major(x)
                .chunks_exact(row)
                .map(|r| r.iter().copied().fold(init, pick))
                .collect()
        };
        Tensor::from_shape_vec(IxDyn(&kept), data)?
    } else {
        // One axis at a time, the last first, each keeping its dim.
        let mut acc: Option<Tensor> = None;
        for &a in axes.iter().rev() {
            let src = acc.as_ref().unwrap_or(x);
            let next = src
                .fold_axis(Axis(a), init, |&m, &v| pick(m, v))
                .insert_axis(Axis(a));
            acc = Some(next);
        }
        acc.unwrap_or_else(|| x.clone())
    };
    if keep_dims {
        return Ok(folded);
    }
    let dropped = reduced_shape(&TensorShape::known(x.shape()), axes, false)
        .to_vec()
        .unwrap_or_default();
    Ok(folded
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&dropped))?)
}

/// Maximum over some axes.
pub struct ReduceMax {
    axes: Axes,
    keep_dims: bool,
}

impl Op for ReduceMax {
    fn type_name(&self) -> &'static str {
        "ReduceMax"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ReduceMax")?;
        let axes = self.axes.resolve(inputs[0].rank())?;
        Ok(reduced_shape(inputs[0], &axes, self.keep_dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ReduceMax")?;
        let axes = self.axes.resolve(inputs[0].ndim())?;
        extremum_axes(
            inputs[0],
            &axes,
            self.keep_dims,
            f32::NEG_INFINITY,
            pick_max,
        )
    }
    // dx = g (broadcast back) where x equals its maximum y, divided by the
    // number of such elements (TF splits the gradient equally among ties), else 0
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = min_max_grad(ctx, self.axes.clone(), self.keep_dims)?;
        Ok(vec![Some(dx)])
    }
}

/// Minimum over some axes.
pub struct ReduceMin {
    axes: Axes,
    keep_dims: bool,
}

impl Op for ReduceMin {
    fn type_name(&self) -> &'static str {
        "ReduceMin"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ReduceMin")?;
        let axes = self.axes.resolve(inputs[0].rank())?;
        Ok(reduced_shape(inputs[0], &axes, self.keep_dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ReduceMin")?;
        let axes = self.axes.resolve(inputs[0].ndim())?;
        extremum_axes(inputs[0], &axes, self.keep_dims, f32::INFINITY, pick_min)
    }
    // dx = g (broadcast back) where x equals its minimum y, divided by the
    // number of such elements (split equally among ties), else 0
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = min_max_grad(ctx, self.axes.clone(), self.keep_dims)?;
        Ok(vec![Some(dx)])
    }
}

/// The [`ReduceMinMaxGrad`] of the reduction whose gradient `ctx` builds.
fn min_max_grad(ctx: &GradientContext, axes: Axes, keep_dims: bool) -> Result<Node> {
    build(
        ReduceMinMaxGrad { axes, keep_dims },
        &[ctx.grad(), ctx.input(0), ctx.output()],
    )
}

/// The gradient of a [`reduce_max`] or [`reduce_min`]: inputs `(g, x, y)`,
/// where `y` is the reduction of `x` and `g` is shaped like `y`; the output,
/// shaped like `x`, is `g / n` (broadcast back over the reduced axes) where
/// `x == y` and 0 elsewhere, `n` being the number of elements equal to the
/// extremum in each reduced group (TensorFlow's split among ties).
pub struct ReduceMinMaxGrad {
    /// The reduced axes of the forward reduction.
    pub axes: Axes,
    /// Whether the forward reduction kept the reduced dims (with size 1).
    pub keep_dims: bool,
}

impl ReduceMinMaxGrad {
    fn check(&self, g: &TensorShape, x: &TensorShape, y: &TensorShape) -> Result<Vec<usize>> {
        let axes = self.axes.resolve(x.rank())?;
        let reduced = reduced_shape(x, &axes, self.keep_dims);
        for (name, s) in [("the reduction", y), ("its gradient", g)] {
            if !reduced.is_compatible(s) {
                return Err(Error::ShapeMismatch {
                    what: format!("ReduceMinMaxGrad: {name} (a reduction of {x} over {axes:?})"),
                    expected: reduced,
                    got: s.clone(),
                });
            }
        }
        Ok(axes)
    }
}

impl Op for ReduceMinMaxGrad {
    fn type_name(&self) -> &'static str {
        "ReduceMinMaxGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 3, "ReduceMinMaxGrad")?;
        self.check(inputs[0], inputs[1], inputs[2])?;
        Ok(inputs[1].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 3, "ReduceMinMaxGrad")?;
        let (g, x, y) = (inputs[0], inputs[1], inputs[2]);
        let known = |t: &Tensor| TensorShape::known(t.shape());
        let axes = self.check(&known(g), &known(x), &known(y))?;
        if axes.is_empty() {
            // Nothing reduced: y = x, and every element is its own extremum.
            return Ok(g.clone());
        }
        let kept = kept_dims(x.shape(), &axes);
        let (ys, gs) = (row_major(y), row_major(g));
        if trailing(&axes, x.ndim()) {
            let row = reduced_count(x.shape(), &axes);
            let mut dx = vec![0.0f32; x.len()];
            if row > 0 {
                let xs = row_major(x);
                for (r, (xr, dr)) in xs
                    .chunks_exact(row)
                    .zip(dx.chunks_exact_mut(row))
                    .enumerate()
                {
                    let m = ys[r];
                    let ties = xr.iter().filter(|&&v| v == m).count();
                    if ties > 0 {
                        let share = gs[r] / ties as f32;
                        for (d, &v) in dr.iter_mut().zip(xr) {
                            if v == m {
                                *d = share;
                            }
                        }
                    }
                }
            }
            return Ok(Tensor::from_shape_vec(x.shape(), dx)?);
        }
        // Any other axes: count the ties per group, then share.
        let yk = Tensor::from_shape_vec(IxDyn(&kept), ys.into_owned())?;
        let gk = Tensor::from_shape_vec(IxDyn(&kept), gs.into_owned())?;
        let refused = || Error::Broadcast {
            lhs: TensorShape::known(&kept),
            rhs: TensorShape::known(x.shape()),
        };
        let yb = yk.broadcast(x.shape()).ok_or_else(refused)?;
        let hits = Zip::from(x)
            .and(&yb)
            .map_collect(|&v, &m| if v == m { 1.0f32 } else { 0.0 });
        let ties = sum_to_shape(&hits.into_dyn(), &kept);
        let share = Zip::from(&gk)
            .and(&ties)
            .map_collect(|&g, &n| if n > 0.0 { g / n } else { 0.0 });
        let sb = share.broadcast(x.shape()).ok_or_else(refused)?;
        Ok(Zip::from(x)
            .and(&yb)
            .and(&sb)
            .map_collect(|&v, &m, &s| if v == m { s } else { 0.0 }))
    }
    // Linear in g with weights w = [x == y] / n (w is this op with g = 1):
    // dg = reduce(u * w) over the axes; x and y: the weights are piecewise
    // constant, no gradient
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (g, x, y) = (ctx.input(0), ctx.input(1), ctx.input(2));
        let ones = crate::ones_like(g)?;
        let weights = build(
            ReduceMinMaxGrad {
                axes: self.axes.clone(),
                keep_dims: self.keep_dims,
            },
            &[&ones, x, y],
        )?;
        let weighted = crate::multiply(ctx.grad(), &weights)?;
        let dg = reduce_sum(&weighted, self.axes.clone(), self.keep_dims)?;
        Ok(vec![Some(dg), None, None])
    }
}

/// The maximum of `x` over `axes` (`tf.reduce_max`); see [`reduce_sum`] for
/// the axes and `keep_dims`. The maximum of no elements is `-inf`; a NaN
/// gives NaN. The gradient goes to the maximal element, split equally among
/// ties (as in TensorFlow).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2, 3]);
/// let m = ad::reduce_max(&x, 1, false).unwrap();
/// let feed = ad::feed! { x => [[1.0, 5.0, 2.0], [4.0, 4.0, 0.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&m, &feed).unwrap(), &ad::tensor([5.0, 4.0]));
/// rt.backward(&m, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]));
/// ```
///
/// # Errors
/// As [`reduce_sum`].
pub fn reduce_max(x: &Node, axes: impl Into<Axes>, keep_dims: bool) -> Result<Node> {
    build(
        ReduceMax {
            axes: axes.into(),
            keep_dims,
        },
        &[x],
    )
}

/// The minimum of `x` over `axes` (`tf.reduce_min`); see [`reduce_max`].
/// The minimum of no elements is `+inf`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3, 4]);
/// assert_eq!(ad::reduce_min(&x, [0, 2], true).unwrap().shape(), ad::shape![1, 3, 1]);
/// assert!(ad::reduce_min(&x, 3, false).is_err());
/// ```
///
/// # Errors
/// As [`reduce_sum`].
pub fn reduce_min(x: &Node, axes: impl Into<Axes>, keep_dims: bool) -> Result<Node> {
    build(
        ReduceMin {
            axes: axes.into(),
            keep_dims,
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// argmax, argmin
// ---------------------------------------------------------------------------

/// The shape of an arg-reduction of `x` along `axis` (removed).
fn arg_rule(x: &TensorShape, axis: usize, op: &str) -> Result<TensorShape> {
    if axis >= x.rank() {
        return Err(axis_error(axis, x.rank()));
    }
    if x.dim(axis) == Some(0) {
        return Err(Error::invalid(format!(
            "{op}: axis {axis} of {x} is empty: there is no element to pick"
        )));
    }
    Ok(reduced_shape(x, &[axis], false))
}

/// The index along `axis` of the element `better` prefers to all before it
/// (the first at ties), as `f32`; a NaN is picked first.
fn arg_extremum(
    x: &Tensor,
    axis: usize,
    op: &str,
    better: impl Fn(f32, f32) -> bool,
) -> Result<Tensor> {
    arg_rule(&TensorShape::known(x.shape()), axis, op)?;
    Ok(x.map_axis(Axis(axis), |lane| {
        let mut best = 0;
        let mut value = lane[0];
        for (i, &v) in lane.iter().enumerate().skip(1) {
            if !value.is_nan() && (v.is_nan() || better(v, value)) {
                best = i;
                value = v;
            }
        }
        best as f32
    }))
}

/// The index of the largest element along one axis.
pub struct ArgMax {
    axis: usize,
}

impl Op for ArgMax {
    fn type_name(&self) -> &'static str {
        "ArgMax"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ArgMax")?;
        arg_rule(inputs[0], self.axis, "argmax")
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ArgMax")?;
        arg_extremum(inputs[0], self.axis, "argmax", |v, best| v > best)
    }
    // An integer output, piecewise constant in x: no gradient.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// The index of the smallest element along one axis.
pub struct ArgMin {
    axis: usize,
}

impl Op for ArgMin {
    fn type_name(&self) -> &'static str {
        "ArgMin"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ArgMin")?;
        arg_rule(inputs[0], self.axis, "argmin")
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ArgMin")?;
        arg_extremum(inputs[0], self.axis, "argmin", |v, best| v < best)
    }
    // An integer output, piecewise constant in x: no gradient.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// The index of the largest element of `x` along `axis` (`tf.argmax`), as a
/// whole-number `f32`; the axis is removed. At ties the first index wins; a
/// NaN counts as the largest. It takes no gradient.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3]);
/// let i = ad::argmax(&x, 1).unwrap();
/// assert_eq!(i.shape(), ad::shape![None]);
/// let feed = ad::feed! { x => [[1.0, 5.0, 2.0], [4.0, 4.0, 0.0]] }.unwrap();
/// assert_eq!(ad::RunTime::new().forward(&i, &feed).unwrap(), &ad::tensor([1.0, 0.0]));
/// assert!(ad::gradients(&[&i], &[&x], None).unwrap()[0].is_none());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Axis`] when `axis` is not a dim of `x`,
/// or [`Error::InvalidArgument`] when that dim is empty (at build time when
/// known, else in forward).
pub fn argmax(x: &Node, axis: usize) -> Result<Node> {
    build(ArgMax { axis }, &[x])
}

/// The index of the smallest element of `x` along `axis` (`tf.argmin`); see
/// [`argmax`].
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.constant([[1.0, 5.0], [0.0, 5.0], [0.0, 7.0]]).unwrap();
/// let i = ad::argmin(&x, 0).unwrap();
/// assert_eq!(ad::RunTime::new().forward(&i, &ad::Feed::new()).unwrap(), &ad::tensor([1.0, 0.0]));
/// ```
///
/// # Errors
/// As [`argmax`].
pub fn argmin(x: &Node, axis: usize) -> Result<Node> {
    build(ArgMin { axis }, &[x])
}
