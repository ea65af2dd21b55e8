//! Reductions over a set of axes: reduce_sum, reduce_mean, and their
//! gradient op [`ReduceGrad`] (a broadcast back to the input's run-time
//! shape, whose own gradient is the reduction again).
//!
//! Both take the axes as anything that converts into [`Axes`] (`0`, `[0, 2]`,
//! `&[1][..]`, `vec![1, 2]`, or [`Axes::All`]) and a `keep_dims` flag: when it is
//! set the reduced dims stay as size 1, otherwise they are removed.

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::{broadcast_to_shape, sum_to_shape};
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
