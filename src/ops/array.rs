//! Array ops that move data without arithmetic: reshape, transpose, pad,
//! concat, slice, stop_gradient, stack, unstack, split, tile, expand_dims,
//! squeeze and broadcast_to, with the gradient ops of those whose gradient
//! needs a kernel or a run-time shape of its own ([`ReshapeLike`],
//! [`PadGrad`], [`ConcatGrad`], [`SliceGrad`], [`UnstackGrad`],
//! [`SplitGrad`], [`PieceGrads`], [`TileGrad`]). Every gradient is built of
//! these same ops, so each can be differentiated again.
//!
//! Each op has one shape function used twice: at build time on the static shape
//! (unknown `None` dims stay unknown where they must, and impossible attributes
//! are rejected as soon as the known dims prove it), and at run time on the
//! concrete shapes of the values, where every dim is known and every check
//! applies. So a run-time error says exactly what the build-time error would
//! have said had the dims been known.

use ndarray::{concatenate, ArrayViewD, Axis, IxDyn, Slice};

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::broadcast::broadcast_to_shape;
use crate::kernels::elementwise::row_major;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Checks that an op got `n` inputs (only a hand-made [`Graph::add_op`](crate::Graph::add_op)
/// call can give another number), so that indexing `inputs` cannot panic.
pub(crate) fn expect_inputs<T>(inputs: &[T], n: usize, op: &str) -> Result<()> {
    if inputs.len() != n {
        return Err(Error::invalid(format!(
            "{op} takes {n} input(s), got {}",
            inputs.len()
        )));
    }
    Ok(())
}

/// The number of elements of a concrete shape, checked to fit an allocation
/// (ndarray panics on shapes whose size overflows `isize`).
pub(crate) fn checked_num_elements(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "a tensor of shape {} would have too many elements",
                TensorShape::known(dims)
            ))
        })
}

/// [`Error::Axis`] for an axis given as `usize`.
pub(crate) fn axis_error(axis: usize, rank: usize) -> Error {
    Error::Axis {
        axis: isize::try_from(axis).unwrap_or(isize::MAX),
        rank,
    }
}

/// The concrete output shape from a shape rule applied to concrete input shapes.
fn concrete(shape: TensorShape) -> Result<Vec<usize>> {
    shape
        .to_vec()
        .ok_or_else(|| Error::invalid("internal: shape rule left a dim unknown for known inputs"))
}

// ---------------------------------------------------------------------------
// reshape
// ---------------------------------------------------------------------------

/// Row-major reshape to a target shape with at most one `-1` (inferred) dim.
pub struct Reshape {
    shape: Vec<isize>,
}

impl Reshape {
    /// The output shape for an input of (static or concrete) shape `input`.
    fn rule(&self, input: &TensorShape) -> Result<TensorShape> {
        let target = &self.shape;
        let mut wildcard = None;
        let mut known = 1usize;
        let mut dims = Vec::with_capacity(target.len());
        for (i, &d) in target.iter().enumerate() {
            if d == -1 {
                if wildcard.is_some() {
                    return Err(Error::invalid(format!(
                        "reshape: shape {target:?} has more than one -1"
                    )));
                }
                wildcard = Some(i);
                dims.push(None);
            } else {
                let d = usize::try_from(d).map_err(|_| {
                    Error::invalid(format!(
                        "reshape: shape[{i}] = {d} is negative (only -1, \"infer this dim\", is allowed)"
                    ))
                })?;
                known = known.checked_mul(d).ok_or_else(|| {
                    Error::invalid(format!("reshape: shape {target:?} has too many elements"))
                })?;
                dims.push(Some(d));
            }
        }
        // Input element count: known if every dim is, or if some known dim is 0.
        let known_in: Option<usize> = input
            .dims()
            .iter()
            .flatten()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let n_in = if input.dims().contains(&Some(0)) {
            Some(0)
        } else if input.is_fully_defined() {
            known_in
        } else {
            None
        };
        let mismatch = |n: usize| {
            Error::invalid(format!(
                "reshape: cannot reshape a tensor of {n} elements (shape {input}) into shape {target:?}"
            ))
        };
        match (wildcard, n_in) {
            (None, Some(n)) if n != known => return Err(mismatch(n)),
            (None, None) => {
                // The input has `known_in * u` elements for some unknown u.
                if let Some(k) = known_in.filter(|&k| k != 0) {
                    if !known.is_multiple_of(k) {
                        return Err(Error::invalid(format!(
                            "reshape: a tensor of shape {input} has a multiple of {k} elements, \
                             which can never be the {known} of shape {target:?}"
                        )));
                    }
                }
            }
            (Some(w), Some(n)) => {
                if known == 0 {
                    return Err(Error::invalid(format!(
                        "reshape: cannot infer the -1 of shape {target:?} when its other dims \
                         have 0 elements (input shape {input})"
                    )));
                }
                if n % known != 0 {
                    return Err(mismatch(n));
                }
                dims[w] = Some(n / known);
            }
            _ => {}
        }
        Ok(TensorShape::new(dims))
    }
}

impl Op for Reshape {
    fn type_name(&self) -> &'static str {
        "Reshape"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Reshape")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Reshape")?;
        let x = inputs[0];
        let dims = concrete(self.rule(&TensorShape::known(x.shape()))?)?;
        Ok(x.to_shape(dims)?.into_owned())
    }
    // dx = reshape(g, shape(x)): reshaping only renumbers the elements
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(reshape_like(ctx.grad(), ctx.input(0))?)])
    }
}

/// Reshapes its first input to the run-time shape of its second (whose
/// values are not read): the gradient of a reshape whose input shape is not
/// fully known when the graph is built.
pub struct ReshapeLike;

impl Op for ReshapeLike {
    fn type_name(&self) -> &'static str {
        "ReshapeLike"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "ReshapeLike")?;
        let (x, like) = (inputs[0], inputs[1]);
        let count = |s: &TensorShape| {
            s.to_vec()
                .and_then(|d| d.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n)))
        };
        if let (Some(a), Some(b)) = (count(x), count(like)) {
            if a != b {
                return Err(Error::invalid(format!(
                    "reshape: cannot reshape a tensor of {a} elements (shape {x}) into shape \
                     {like} ({b} elements)"
                )));
            }
        }
        Ok(like.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "ReshapeLike")?;
        let (x, like) = (inputs[0], inputs[1]);
        if x.len() != like.len() {
            return Err(Error::invalid(format!(
                "reshape: cannot reshape a tensor of {} elements (shape {}) into shape {}",
                x.len(),
                TensorShape::known(x.shape()),
                TensorShape::known(like.shape())
            )));
        }
        Ok(x.to_shape(like.shape())?.into_owned())
    }
    // d reshape(g)/dg: the upstream reshaped back to g's shape
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(reshape_like(ctx.grad(), ctx.input(0))?), None])
    }
}

/// `x` reshaped to the shape of `like`: a static [`reshape`] when `like`'s
/// static shape is fully known (`x` itself when it already has that shape),
/// otherwise a [`ReshapeLike`] reading `like`'s run-time shape.
pub(crate) fn reshape_like(x: &Node, like: &Node) -> Result<Node> {
    let target = like.shape();
    match target.to_vec() {
        Some(_) if x.shape() == target => Ok(x.clone()),
        Some(dims) => {
            let dims: Vec<isize> = dims
                .iter()
                .map(|&d| isize::try_from(d).unwrap_or(isize::MAX))
                .collect();
            reshape(x, &dims)
        }
        None => build(ReshapeLike, &[x, like]),
    }
}

/// Reshapes `x` to `shape` in row-major order. One entry may be `-1`: that dim
/// is inferred from the number of elements.
///
/// With unknown input dims the static output keeps the dims given and leaves
/// the `-1` dim unknown; the element count is then checked at run time.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2, 3]);
/// assert_eq!(ad::reshape(&x, &[-1, 6]).unwrap().shape(), ad::shape![None, 6]);
/// let y = g.placeholder([4, 3]);
/// assert_eq!(ad::reshape(&y, &[2, -1]).unwrap().shape(), ad::shape![2, 6]);
/// assert!(ad::reshape(&y, &[5, -1]).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when `shape` has two
/// `-1`s or another negative entry, or when the element counts cannot match
/// (at build time when the static dims prove it, otherwise in forward).
pub fn reshape(x: &Node, shape: &[isize]) -> Result<Node> {
    build(
        Reshape {
            shape: shape.to_vec(),
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// transpose
// ---------------------------------------------------------------------------

/// Permutes the axes: output axis `k` is input axis `perm[k]`.
pub struct Transpose {
    perm: Vec<usize>,
}

impl Transpose {
    fn rule(&self, input: &TensorShape) -> Result<TensorShape> {
        let rank = input.rank();
        if self.perm.len() != rank {
            return Err(Error::Rank {
                what: format!("transpose input (perm {:?})", self.perm),
                expected: self.perm.len().to_string(),
                got: input.clone(),
            });
        }
        let mut seen = vec![false; rank];
        for &p in &self.perm {
            let slot = seen.get_mut(p).ok_or_else(|| axis_error(p, rank))?;
            if *slot {
                return Err(Error::invalid(format!(
                    "transpose: perm {:?} repeats axis {p} (it must be a permutation of 0..{rank})",
                    self.perm
                )));
            }
            *slot = true;
        }
        Ok(TensorShape::new(
            self.perm.iter().map(|&p| input.dims()[p]).collect(),
        ))
    }
}

impl Op for Transpose {
    fn type_name(&self) -> &'static str {
        "Transpose"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Transpose")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Transpose")?;
        let x = inputs[0];
        let out_shape = concrete(self.rule(&TensorShape::known(x.shape()))?)?;
        // Whole contiguous runs when trailing axes stay in place.
        if let Some(src) = x.as_slice() {
            if let Some(out) = crate::kernels::permute::permute(src, x.shape(), &self.perm) {
                return Ok(Tensor::from_shape_vec(out_shape, out)?);
            }
        }
        Ok(x.view()
            .permuted_axes(self.perm.clone())
            .as_standard_layout()
            .into_owned())
    }
    // dx = transpose(g, inverse(perm)), where inverse(perm)[perm[k]] = k
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let mut inverse = vec![0; self.perm.len()];
        for (k, &p) in self.perm.iter().enumerate() {
            inverse[p] = k;
        }
        Ok(vec![Some(transpose(ctx.grad(), &inverse)?)])
    }
}

/// Permutes the axes of `x`: output axis `k` is input axis `perm[k]`
/// (`perm = [1, 0]` transposes a matrix). The result is in standard
/// (row-major, contiguous) layout.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3, 4]);
/// assert_eq!(ad::transpose(&x, &[2, 0, 1]).unwrap().shape(), ad::shape![4, None, 3]);
/// assert!(ad::transpose(&x, &[0, 0, 1]).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `perm` has not one entry per
/// dim, [`Error::Axis`] for an entry out of range, [`Error::InvalidArgument`]
/// for a repeated entry.
pub fn transpose(x: &Node, perm: &[usize]) -> Result<Node> {
    build(
        Transpose {
            perm: perm.to_vec(),
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// pad
// ---------------------------------------------------------------------------

/// Constant padding: `[before, after]` elements of `constant_value` per dim.
pub struct Pad {
    paddings: Vec<[usize; 2]>,
    constant_value: f32,
}

impl Pad {
    fn rule(&self, input: &TensorShape) -> Result<TensorShape> {
        if self.paddings.len() != input.rank() {
            return Err(Error::Rank {
                what: format!(
                    "pad input ({} [before, after] pairs given)",
                    self.paddings.len()
                ),
                expected: self.paddings.len().to_string(),
                got: input.clone(),
            });
        }
        let dims = input
            .dims()
            .iter()
            .zip(&self.paddings)
            .enumerate()
            .map(|(i, (d, &[b, a]))| match d {
                None => Ok(None),
                Some(d) => d
                    .checked_add(b)
                    .and_then(|s| s.checked_add(a))
                    .map(Some)
                    .ok_or_else(|| {
                        Error::invalid(format!("pad: paddings[{i}] = [{b}, {a}] is too large"))
                    }),
            })
            .collect::<Result<_>>()?;
        Ok(TensorShape::new(dims))
    }
}

impl Op for Pad {
    fn type_name(&self) -> &'static str {
        "Pad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Pad")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Pad")?;
        let x = inputs[0];
        let dims = concrete(self.rule(&TensorShape::known(x.shape()))?)?;
        checked_num_elements(&dims)?;
        let mut out = Tensor::from_elem(IxDyn(&dims), self.constant_value);
        out.slice_each_axis_mut(|ax| {
            let i = ax.axis.index();
            let before = self.paddings[i][0];
            Slice::from(before..before + x.shape()[i])
        })
        .assign(x);
        Ok(out)
    }
    // dx = g[before_0 .. before_0 + n_0, before_1 .. , ...]: padded cells do not depend on x
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = build(
            PadGrad {
                paddings: self.paddings.clone(),
            },
            &[ctx.grad()],
        )?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a [`Pad`]: its input with `[before, after]` elements cut
/// off each dim (the inverse of the padding, whatever the dims' sizes).
pub struct PadGrad {
    /// The `[before, after]` padding of each dim of the forward pad.
    pub paddings: Vec<[usize; 2]>,
}

impl PadGrad {
    fn rule(&self, input: &TensorShape) -> Result<TensorShape> {
        if self.paddings.len() != input.rank() {
            return Err(Error::Rank {
                what: format!(
                    "pad gradient input ({} [before, after] pairs given)",
                    self.paddings.len()
                ),
                expected: self.paddings.len().to_string(),
                got: input.clone(),
            });
        }
        let dims = input
            .dims()
            .iter()
            .zip(&self.paddings)
            .enumerate()
            .map(|(i, (d, &[b, a]))| match d {
                None => Ok(None),
                Some(d) => b
                    .checked_add(a)
                    .and_then(|cut| d.checked_sub(cut))
                    .map(Some)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "pad gradient: dim {i} of {input} is shorter than its padding [{b}, {a}]"
                        ))
                    }),
            })
            .collect::<Result<_>>()?;
        Ok(TensorShape::new(dims))
    }
}

impl Op for PadGrad {
    fn type_name(&self) -> &'static str {
        "PadGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "PadGrad")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "PadGrad")?;
        let g = inputs[0];
        let dims = concrete(self.rule(&TensorShape::known(g.shape()))?)?;
        Ok(g.slice_each_axis(|ax| {
            let i = ax.axis.index();
            let before = self.paddings[i][0];
            Slice::from(before..before + dims[i])
        })
        .as_standard_layout()
        .into_owned())
    }
    // Linear in g: the adjoint of cutting the borders off is padding them with zeros.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(pad(ctx.grad(), &self.paddings, 0.0)?)])
    }
}

/// Pads `x` with `constant_value`: `paddings[i] = [before, after]` elements
/// are added before and after the data along dim `i` (one pair per dim).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3]);
/// let y = ad::pad(&x, &[[0, 0], [1, 2]], 0.0).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 6]);
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `paddings` has not one pair
/// per dim of `x`.
pub fn pad(x: &Node, paddings: &[[usize; 2]], constant_value: f32) -> Result<Node> {
    build(
        Pad {
            paddings: paddings.to_vec(),
            constant_value,
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// concat
// ---------------------------------------------------------------------------

/// Concatenation of its inputs along one axis.
pub struct Concat {
    axis: usize,
}

impl Concat {
    fn rule(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("concat needs at least one input"))?;
        let rank = first.rank();
        let axis = self.axis;
        if axis >= rank {
            return Err(axis_error(axis, rank));
        }
        let mut dims = first.dims().to_vec();
        let mut axis_len = Some(0usize);
        for (i, s) in inputs.iter().enumerate() {
            if s.rank() != rank {
                return Err(Error::Rank {
                    what: format!("concat input {i} (input 0 has shape {first})"),
                    expected: rank.to_string(),
                    got: (*s).clone(),
                });
            }
            for (k, (d, &e)) in dims.iter_mut().zip(s.dims()).enumerate() {
                if k == axis {
                    axis_len = match (axis_len, e) {
                        (Some(a), Some(b)) => Some(a.checked_add(b).ok_or_else(|| {
                            Error::invalid("concat: the output is too large along the axis")
                        })?),
                        _ => None,
                    };
                    continue;
                }
                match (*d, e) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(Error::invalid(format!(
                            "concat: input {i} has shape {s}, which differs from the shapes \
                             before it ({}) on dim {k}; only dim {axis} (the axis) may differ",
                            TensorShape::new(dims.clone())
                        )))
                    }
                    _ => *d = d.or(e),
                }
            }
        }
        dims[axis] = axis_len;
        Ok(TensorShape::new(dims))
    }
}

impl Op for Concat {
    fn type_name(&self) -> &'static str {
        "Concat"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.rule(inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let shapes: Vec<TensorShape> = inputs
            .iter()
            .map(|x| TensorShape::known(x.shape()))
            .collect();
        let dims = concrete(self.rule(&shapes.iter().collect::<Vec<_>>())?)?;
        checked_num_elements(&dims)?;
        let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|x| x.view()).collect();
        Ok(concatenate(Axis(self.axis), &views)?)
    }
    // dx_i = g[.., o_i .. o_i + n_i, ..] along the axis, o_i = n_0 + ... + n_{i-1};
    // one gradient per input position, so a repeated input gets each of its parts
    // (summed by the gradient builder). A static slice where the offset and
    // length are known when building, otherwise a ConcatGrad reading the
    // inputs' run-time lengths.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (g, xs) = (ctx.grad(), ctx.inputs());
        if xs.len() == 1 {
            return Ok(vec![Some(g.clone())]);
        }
        let rank = g.shape().rank();
        let last = xs.len() - 1;
        let mut offset = Some(0usize);
        let mut grads = Vec::with_capacity(xs.len());
        for (i, x) in xs.iter().enumerate() {
            let len = x.shape().dims()[self.axis];
            if ctx.needs_grad(i) {
                // The last part runs to the end: its length need not be known.
                let size = match len {
                    Some(n) => isize::try_from(n).ok(),
                    None if i == last => Some(-1),
                    None => None,
                };
                let part = match (offset, size) {
                    (Some(o), Some(size)) => {
                        let mut begin = vec![0; rank];
                        begin[self.axis] = o;
                        let mut sizes = vec![-1; rank];
                        sizes[self.axis] = size;
                        slice(g, &begin, &sizes)?
                    }
                    _ => {
                        let mut args: Vec<&Node> = vec![g];
                        args.extend(xs.iter());
                        build(
                            ConcatGrad {
                                axis: self.axis,
                                index: i,
                            },
                            &args,
                        )?
                    }
                };
                grads.push(Some(part));
            } else {
                grads.push(None);
            }
            offset = offset.zip(len).and_then(|(o, n)| o.checked_add(n));
        }
        Ok(grads)
    }
}

/// The part of a concatenation's gradient that belongs to one input: inputs
/// `(g, x_0, .., x_{n-1})`, where `g` is the gradient of
/// `concat([x_0, .., x_{n-1}], axis)`; the output is the slice of `g` along
/// `axis` where `x_index` sits, found from the inputs' run-time lengths (their
/// values are not read). Used when those lengths are not known statically.
pub struct ConcatGrad {
    /// The axis of the concatenation.
    pub axis: usize,
    /// Which input's part is taken.
    pub index: usize,
}

impl ConcatGrad {
    fn rule(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        if inputs.len() < 2 || self.index + 1 >= inputs.len() {
            return Err(Error::invalid(format!(
                "ConcatGrad takes the gradient and the concatenated inputs, including input {}; \
                 got {} input(s)",
                self.index,
                inputs.len()
            )));
        }
        let whole = Concat { axis: self.axis }.rule(&inputs[1..])?;
        if !whole.is_compatible(inputs[0]) {
            return Err(Error::ShapeMismatch {
                what: "ConcatGrad: the gradient of the concatenation".into(),
                expected: whole,
                got: inputs[0].clone(),
            });
        }
        let mut dims = inputs[0].merge(&whole).unwrap_or(whole).dims().to_vec();
        dims[self.axis] = inputs[1 + self.index].dims()[self.axis];
        Ok(TensorShape::new(dims))
    }
}

impl Op for ConcatGrad {
    fn type_name(&self) -> &'static str {
        "ConcatGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.rule(inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let shapes: Vec<TensorShape> = inputs
            .iter()
            .map(|x| TensorShape::known(x.shape()))
            .collect();
        self.rule(&shapes.iter().collect::<Vec<_>>())?;
        let offset: usize = inputs[1..=self.index]
            .iter()
            .map(|x| x.shape()[self.axis])
            .sum();
        let len = inputs[1 + self.index].shape()[self.axis];
        Ok(inputs[0]
            .slice_axis(Axis(self.axis), Slice::from(offset..offset + len))
            .as_standard_layout()
            .into_owned())
    }
    // Linear in g: the adjoint puts the upstream back at input `index`'s place,
    // zeros elsewhere: concat([0 * x_0, .., upstream, .., 0 * x_{n-1}], axis)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let xs = &ctx.inputs()[1..];
        let parts: Vec<Node> = xs
            .iter()
            .enumerate()
            .map(|(j, x)| {
                if j == self.index {
                    Ok(ctx.grad().clone())
                } else {
                    crate::zeros_like(x)
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Node> = parts.iter().collect();
        let mut grads = vec![None; ctx.inputs().len()];
        grads[0] = Some(concat(&refs, self.axis)?);
        Ok(grads)
    }
}

/// Concatenates `xs` along `axis`. All inputs have the same rank and agree on
/// every dim but `axis`, where they may have any size, 0 included. One input
/// is allowed (a copy); the same node may appear several times.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let a = g.placeholder(ad::shape![None, 2]);
/// let b = g.placeholder(ad::shape![None, 3]);
/// assert_eq!(ad::concat(&[&a, &b, &a], 1).unwrap().shape(), ad::shape![None, 7]);
/// assert!(ad::concat(&[&a, &b], 0).is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `xs` is empty; [`Error::Node`] wrapping
/// [`Error::Axis`] when `axis` is not a dim of the inputs, [`Error::Rank`] when
/// the ranks differ, [`Error::InvalidArgument`] when another dim differs
/// (at build time when known, otherwise in forward);
/// [`Error::GraphMismatch`] when the inputs belong to different graphs.
pub fn concat(xs: &[&Node], axis: usize) -> Result<Node> {
    build(Concat { axis }, xs)
}

// ---------------------------------------------------------------------------
// slice
// ---------------------------------------------------------------------------

/// A box of `x`: `sizes[i]` elements from `begin[i]` along dim `i`
/// (`-1`: to the end of the dim).
pub struct SliceOp {
    begin: Vec<usize>,
    sizes: Vec<isize>,
}

impl SliceOp {
    fn rule(&self, input: &TensorShape) -> Result<TensorShape> {
        let rank = input.rank();
        if self.begin.len() != rank || self.sizes.len() != rank {
            return Err(Error::Rank {
                what: format!(
                    "slice input (begin {:?}, sizes {:?})",
                    self.begin, self.sizes
                ),
                expected: if self.begin.len() == self.sizes.len() {
                    self.begin.len().to_string()
                } else {
                    format!("{} = len(begin) = len(sizes)", rank)
                },
                got: input.clone(),
            });
        }
        let mut dims = Vec::with_capacity(rank);
        for (i, (&b, &s)) in self.begin.iter().zip(&self.sizes).enumerate() {
            let size = match s {
                -1 => None,
                s => Some(usize::try_from(s).map_err(|_| {
                    Error::invalid(format!(
                        "slice: sizes[{i}] = {s} is negative (only -1, \"to the end\", is allowed)"
                    ))
                })?),
            };
            let out = match (input.dims()[i], size) {
                (Some(d), _) if b > d => {
                    return Err(Error::OutOfBounds(format!(
                        "slice: begin[{i}] = {b} is past the end of dim {i} (size {d})"
                    )))
                }
                (Some(d), None) => Some(d - b),
                (Some(d), Some(s)) => {
                    if b.checked_add(s).is_none_or(|end| end > d) {
                        return Err(Error::OutOfBounds(format!(
                            "slice: begin[{i}] + sizes[{i}] = {b} + {s} exceeds dim {i} (size {d})"
                        )));
                    }
                    Some(s)
                }
                (None, size) => size,
            };
            dims.push(out);
        }
        Ok(TensorShape::new(dims))
    }

    /// The slice of each axis, for concrete output dims `dims`.
    fn ranges(&self, dims: &[usize]) -> impl Fn(ndarray::AxisDescription) -> Slice + '_ {
        let begin = self.begin.clone();
        let dims = dims.to_vec();
        move |ax| {
            let i = ax.axis.index();
            Slice::from(begin[i]..begin[i] + dims[i])
        }
    }
}

impl Op for SliceOp {
    fn type_name(&self) -> &'static str {
        "Slice"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Slice")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Slice")?;
        let x = inputs[0];
        let dims = concrete(self.rule(&TensorShape::known(x.shape()))?)?;
        Ok(x.slice_each_axis(self.ranges(&dims))
            .as_standard_layout()
            .into_owned())
    }
    // dx = zeros(shape(x)) with dx[begin .. begin + size] = g: a zero padding
    // of g when x's shape is known statically, else a SliceGrad reading it
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (g, x) = (ctx.grad(), ctx.input(0));
        let known = x.shape().to_vec().zip(self.rule(&x.shape())?.to_vec());
        let dx = match known {
            Some((x_dims, out_dims)) => {
                let paddings: Vec<[usize; 2]> = (0..x_dims.len())
                    .map(|i| {
                        let b = self.begin[i];
                        [b, x_dims[i] - b - out_dims[i]]
                    })
                    .collect();
                pad(g, &paddings, 0.0)?
            }
            None => build(
                SliceGrad {
                    begin: self.begin.clone(),
                    sizes: self.sizes.clone(),
                },
                &[g, x],
            )?,
        };
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a [`slice`](slice()) of `x`: inputs `(g, x)`; the output
/// has `x`'s run-time shape (its values are not read), zeros except the box
/// the slice took, which holds `g`.
pub struct SliceGrad {
    /// The forward slice's `begin`.
    pub begin: Vec<usize>,
    /// The forward slice's `sizes` (`-1`: to the end of the dim).
    pub sizes: Vec<isize>,
}

impl SliceGrad {
    fn forward_slice(&self) -> SliceOp {
        SliceOp {
            begin: self.begin.clone(),
            sizes: self.sizes.clone(),
        }
    }
}

impl Op for SliceGrad {
    fn type_name(&self) -> &'static str {
        "SliceGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "SliceGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let out = self.forward_slice().rule(x)?;
        if !out.is_compatible(g) {
            return Err(Error::ShapeMismatch {
                what: format!("SliceGrad: the gradient of a slice of {x}"),
                expected: out,
                got: g.clone(),
            });
        }
        Ok(x.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "SliceGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let op = self.forward_slice();
        let out = op.rule(&TensorShape::known(x.shape()))?;
        if out != TensorShape::known(g.shape()) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "SliceGrad: the gradient of a slice of {}",
                    TensorShape::known(x.shape())
                ),
                expected: out,
                got: TensorShape::known(g.shape()),
            });
        }
        let mut dx = Tensor::zeros(x.shape());
        dx.slice_each_axis_mut(op.ranges(g.shape())).assign(g);
        Ok(dx)
    }
    // Linear in g: the adjoint of placing g in a box of zeros is taking the box.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![
            Some(slice(ctx.grad(), &self.begin, &self.sizes)?),
            None,
        ])
    }
}

/// The part of `x` that starts at `begin` and has `sizes[i]` elements along
/// dim `i`; `sizes[i] == -1` means "to the end of dim `i`" (TensorFlow's
/// `tf.slice`). Sizes of 0 give an empty result.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 5]);
/// assert_eq!(ad::slice(&x, &[0, 1], &[-1, 3]).unwrap().shape(), ad::shape![None, 3]);
/// assert!(ad::slice(&x, &[0, 3], &[-1, 3]).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `begin` or `sizes` has not one
/// entry per dim, [`Error::InvalidArgument`] for a size below `-1`,
/// [`Error::OutOfBounds`] when the box leaves `x` (at build time when the dim is
/// known, otherwise in forward).
pub fn slice(x: &Node, begin: &[usize], sizes: &[isize]) -> Result<Node> {
    build(
        SliceOp {
            begin: begin.to_vec(),
            sizes: sizes.to_vec(),
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// stop_gradient
// ---------------------------------------------------------------------------

/// The identity, through which no gradient flows.
pub struct StopGradient;

impl Op for StopGradient {
    fn type_name(&self) -> &'static str {
        "StopGradient"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "StopGradient")?;
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "StopGradient")?;
        Ok(inputs[0].clone())
    }
    // treated as a constant: dx = 0, sent as no gradient at all
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// `x` itself, treated as a constant by backward: no gradient flows through it
/// (`tf.stop_gradient`).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([2]);
/// let y = ad::multiply(&x, &ad::stop_gradient(&x).unwrap()).unwrap(); // d/dx = x, not 2x
/// let mut rt = ad::RunTime::new();
/// let feed = ad::feed! { x => [3.0, -1.0] }.unwrap();
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([3.0, -1.0]));
/// ```
///
/// # Errors
/// Only when `x` is a failed operator node.
pub fn stop_gradient(x: &Node) -> Result<Node> {
    build(StopGradient, &[x])
}

// ---------------------------------------------------------------------------
// stack, unstack
// ---------------------------------------------------------------------------

/// Joins tensors of one shape along a new axis.
pub struct Stack {
    axis: usize,
}

impl Stack {
    fn rule(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("stack needs at least one input"))?;
        let mut merged = (*first).clone();
        for (i, s) in inputs.iter().enumerate().skip(1) {
            merged = merged.merge(s).ok_or_else(|| {
                Error::invalid(format!(
                    "stack: input {i} has shape {s}, but the inputs before it have shape \
                     {merged}; all inputs must have one shape"
                ))
            })?;
        }
        if self.axis > merged.rank() {
            return Err(axis_error(self.axis, merged.rank() + 1));
        }
        let mut dims = merged.dims().to_vec();
        dims.insert(self.axis, Some(inputs.len()));
        Ok(TensorShape::new(dims))
    }
}

impl Op for Stack {
    fn type_name(&self) -> &'static str {
        "Stack"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.rule(inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let shapes: Vec<TensorShape> = inputs
            .iter()
            .map(|x| TensorShape::known(x.shape()))
            .collect();
        let dims = concrete(self.rule(&shapes.iter().collect::<Vec<_>>())?)?;
        checked_num_elements(&dims)?;
        let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|x| x.view()).collect();
        let out = ndarray::stack(Axis(self.axis), &views)?;
        Ok(if out.is_standard_layout() {
            out
        } else {
            out.as_standard_layout().into_owned()
        })
    }
    // dx_i = g[.., i, ..] (index i along the new axis): one Unstack piece per
    // input position, so a repeated input gets each of its pieces (summed)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        (0..ctx.inputs().len())
            .map(|i| {
                if !ctx.needs_grad(i) {
                    return Ok(None);
                }
                let piece = Unstack {
                    axis: self.axis,
                    index: i,
                };
                build(piece, &[ctx.grad()]).map(Some)
            })
            .collect()
    }
}

/// Stacks `xs`, all of one shape, along a new axis `axis` (`0..=rank`):
/// the output has shape `shape[..axis] + [xs.len()] + shape[axis..]`
/// (`tf.stack`). The same node may appear several times.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let a = g.placeholder(ad::shape![None, 3]);
/// let b = g.placeholder(ad::shape![2, None]);
/// assert_eq!(ad::stack(&[&a, &b, &a], 1).unwrap().shape(), ad::shape![2, 3, 3]);
/// assert_eq!(ad::stack(&[&a], 2).unwrap().shape(), ad::shape![None, 3, 1]);
/// assert!(ad::stack(&[&a, &b], 3).is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `xs` is empty; [`Error::Node`] wrapping
/// [`Error::Axis`] for an axis past the rank, or [`Error::InvalidArgument`]
/// when the shapes differ (at build time when known, otherwise in forward).
pub fn stack(xs: &[&Node], axis: usize) -> Result<Node> {
    build(Stack { axis }, xs)
}

/// One piece of an [`unstack`]: `x[.., index, ..]`, index `index` along
/// `axis`, which is removed.
pub struct Unstack {
    /// The axis unstacked.
    pub axis: usize,
    /// Which piece.
    pub index: usize,
}

impl Unstack {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        if self.axis >= x.rank() {
            return Err(axis_error(self.axis, x.rank()));
        }
        if let Some(n) = x.dim(self.axis) {
            if self.index >= n {
                return Err(Error::OutOfBounds(format!(
                    "unstack: piece {} of axis {} of {x}, which has {n}",
                    self.index, self.axis
                )));
            }
        }
        let mut dims = x.dims().to_vec();
        dims.remove(self.axis);
        Ok(TensorShape::new(dims))
    }
}

impl Op for Unstack {
    fn type_name(&self) -> &'static str {
        "Unstack"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Unstack")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Unstack")?;
        let x = inputs[0];
        self.rule(&TensorShape::known(x.shape()))?;
        Ok(x.index_axis(Axis(self.axis), self.index)
            .as_standard_layout()
            .into_owned())
    }
    // dx = zeros(shape(x)) with dx[.., index, ..] = g: an UnstackGrad; the
    // pieces' gradients add up
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = build(
            UnstackGrad {
                axis: self.axis,
                index: self.index,
            },
            &[ctx.grad(), ctx.input(0)],
        )?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of an [`Unstack`] piece: inputs `(g, x)`; the output has
/// `x`'s run-time shape (its values are not read), zeros except
/// `[.., index, ..]` along `axis`, which holds `g`.
pub struct UnstackGrad {
    /// The axis unstacked.
    pub axis: usize,
    /// Which piece.
    pub index: usize,
}

/// The shape rule [`UnstackGrad`] and [`SplitGrad`] share: `g`, the gradient
/// of one piece of `x`, must fit that piece's shape `piece`; the result is
/// shaped like `x`.
fn piece_grad_shape(
    op: &str,
    piece: TensorShape,
    g: &TensorShape,
    x: &TensorShape,
) -> Result<TensorShape> {
    if !piece.is_compatible(g) {
        return Err(Error::ShapeMismatch {
            what: format!("{op}: the gradient of a piece of {x}"),
            expected: piece,
            got: g.clone(),
        });
    }
    Ok(x.clone())
}

impl UnstackGrad {
    fn piece(&self) -> Unstack {
        Unstack {
            axis: self.axis,
            index: self.index,
        }
    }
}

impl Op for UnstackGrad {
    fn type_name(&self) -> &'static str {
        "UnstackGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "UnstackGrad")?;
        piece_grad_shape(
            "UnstackGrad",
            self.piece().rule(inputs[1])?,
            inputs[0],
            inputs[1],
        )
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "UnstackGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let piece = self.piece().rule(&TensorShape::known(x.shape()))?;
        piece_grad_shape(
            "UnstackGrad",
            piece,
            &TensorShape::known(g.shape()),
            &TensorShape::known(x.shape()),
        )?;
        let mut dx = Tensor::zeros(x.shape());
        dx.index_axis_mut(Axis(self.axis), self.index).assign(g);
        Ok(dx)
    }
    // Linear in g: the adjoint of placing g at one index is taking that index.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(build(self.piece(), &[ctx.grad()])?), None])
    }
}

/// The pieces of `x` along `axis`, which is removed from each (`tf.unstack`):
/// piece `i` is `x[.., i, ..]`. The length of `axis` must be known when
/// building. Each piece is a node of its own; the gradient of `x` is the
/// pieces' gradients placed at their indices in one tensor of `x`'s shape
/// (zeros for pieces no gradient reaches): one [`PieceGrads`] node, as
/// [`add_n`](crate::add_n) joins the pieces' [`UnstackGrad`] nodes, so it
/// costs one pass over `x` however many pieces there are.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3]);
/// let rows = ad::unstack(&x, 1).unwrap();
/// assert_eq!(rows.len(), 3);
/// assert_eq!(rows[0].shape(), ad::shape![None]);
/// assert!(ad::unstack(&x, 0).is_err()); // unknown length
/// ```
///
/// # Errors
/// [`Error::Axis`] when `axis` is not a dim of `x`; [`Error::InvalidArgument`]
/// when its length is not known statically; the error of a failed operator
/// node `x`.
pub fn unstack(x: &Node, axis: usize) -> Result<Vec<Node>> {
    x.clone().check()?;
    let s = x.shape();
    if axis >= s.rank() {
        return Err(axis_error(axis, s.rank()));
    }
    let n = s.dim(axis).ok_or_else(|| {
        Error::invalid(format!(
            "unstack: axis {axis} of {} ({s}) has no static length, so the number of \
             pieces is unknown",
            x.name()
        ))
    })?;
    (0..n)
        .map(|index| build(Unstack { axis, index }, &[x]))
        .collect()
}

// ---------------------------------------------------------------------------
// split
// ---------------------------------------------------------------------------

/// How [`split`] cuts an axis: into `Num(n)` equal pieces, or into pieces of
/// the given sizes, of which one may be `-1` (the rest of the axis).
///
/// ```
/// use adgraph::ops::array::SplitSizes;
/// assert_eq!(SplitSizes::from(3), SplitSizes::Num(3));
/// assert_eq!(SplitSizes::from([2, -1]), SplitSizes::Sizes(vec![2, -1]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitSizes {
    /// This many pieces of equal length (which must divide the axis).
    Num(usize),
    /// Pieces of these lengths; one may be `-1`, the length left over.
    Sizes(Vec<isize>),
}

impl From<usize> for SplitSizes {
    fn from(n: usize) -> Self {
        SplitSizes::Num(n)
    }
}

impl<const N: usize> From<[isize; N]> for SplitSizes {
    fn from(sizes: [isize; N]) -> Self {
        SplitSizes::Sizes(sizes.to_vec())
    }
}

impl From<&[isize]> for SplitSizes {
    fn from(sizes: &[isize]) -> Self {
        SplitSizes::Sizes(sizes.to_vec())
    }
}

impl From<Vec<isize>> for SplitSizes {
    fn from(sizes: Vec<isize>) -> Self {
        SplitSizes::Sizes(sizes)
    }
}

impl SplitSizes {
    /// The number of pieces.
    fn count(&self) -> usize {
        match self {
            SplitSizes::Num(n) => *n,
            SplitSizes::Sizes(s) => s.len(),
        }
    }

    /// `(offset, length)` of each piece of an axis of length `len` (unknown
    /// where they depend on an unknown `len`).
    fn layout(&self, len: Option<usize>) -> Result<Vec<(Option<usize>, Option<usize>)>> {
        match self {
            SplitSizes::Num(0) => Err(Error::invalid("split: cannot split into 0 pieces")),
            SplitSizes::Num(n) => {
                let n = *n;
                if let Some(len) = len {
                    if len % n != 0 {
                        return Err(Error::invalid(format!(
                            "split: an axis of length {len} does not split into {n} equal pieces"
                        )));
                    }
                }
                let size = len.map(|l| l / n);
                Ok((0..n).map(|k| (size.map(|s| s * k), size)).collect())
            }
            SplitSizes::Sizes(sizes) => {
                let mut wildcard = None;
                let mut known = 0usize;
                for (k, &s) in sizes.iter().enumerate() {
                    if s == -1 {
                        if wildcard.replace(k).is_some() {
                            return Err(Error::invalid(format!(
                                "split: sizes {sizes:?} have more than one -1"
                            )));
                        }
                    } else {
                        let s = usize::try_from(s).map_err(|_| {
                            Error::invalid(format!(
                                "split: sizes[{k}] = {s} is negative (only -1, \"the rest\", \
                                 is allowed)"
                            ))
                        })?;
                        known = known.checked_add(s).ok_or_else(|| {
                            Error::invalid(format!("split: sizes {sizes:?} are too large"))
                        })?;
                    }
                }
                let rest = match len {
                    Some(len) if known > len || (wildcard.is_none() && known != len) => {
                        return Err(Error::invalid(format!(
                            "split: sizes {sizes:?} do not add up to the axis length {len}"
                        )))
                    }
                    Some(len) => Some(len - known),
                    None => None,
                };
                let mut offset = Some(0usize);
                let mut out = Vec::with_capacity(sizes.len());
                for &s in sizes {
                    let size = if s == -1 {
                        rest
                    } else {
                        Some(s.unsigned_abs())
                    };
                    out.push((offset, size));
                    offset = offset.zip(size).map(|(o, s)| o + s);
                }
                Ok(out)
            }
        }
    }
}

/// One piece of a [`split`]: piece `index` of `x` cut along `axis` by `sizes`.
pub struct Split {
    /// The axis cut.
    pub axis: usize,
    /// How it is cut.
    pub sizes: SplitSizes,
    /// Which piece.
    pub index: usize,
}

impl Split {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        if self.axis >= x.rank() {
            return Err(axis_error(self.axis, x.rank()));
        }
        let layout = self.sizes.layout(x.dim(self.axis))?;
        let (_, size) = layout.get(self.index).ok_or_else(|| {
            Error::OutOfBounds(format!(
                "split: piece {} of a split into {} pieces",
                self.index,
                layout.len()
            ))
        })?;
        let mut dims = x.dims().to_vec();
        dims[self.axis] = *size;
        Ok(TensorShape::new(dims))
    }

    /// The range of the piece along the axis, for a concrete `x`.
    fn range(&self, x: &[usize]) -> Result<Slice> {
        let layout = self.sizes.layout(Some(x[self.axis]))?;
        match layout.get(self.index) {
            Some(&(Some(o), Some(s))) => Ok(Slice::from(o..o + s)),
            _ => Err(Error::invalid(
                "internal: split layout left a piece unknown for a known length",
            )),
        }
    }
}

impl Op for Split {
    fn type_name(&self) -> &'static str {
        "Split"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Split")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Split")?;
        let x = inputs[0];
        self.rule(&TensorShape::known(x.shape()))?;
        let range = self.range(x.shape())?;
        Ok(x.slice_axis(Axis(self.axis), range)
            .as_standard_layout()
            .into_owned())
    }
    // dx = zeros(shape(x)) with the piece's range along the axis = g: a
    // SplitGrad; the pieces' gradients add up
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = build(
            SplitGrad {
                axis: self.axis,
                sizes: self.sizes.clone(),
                index: self.index,
            },
            &[ctx.grad(), ctx.input(0)],
        )?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a [`Split`] piece: inputs `(g, x)`; the output has `x`'s
/// run-time shape (its values are not read), zeros except the piece's range
/// along `axis`, which holds `g`.
pub struct SplitGrad {
    /// The axis cut.
    pub axis: usize,
    /// How it is cut.
    pub sizes: SplitSizes,
    /// Which piece.
    pub index: usize,
}

impl SplitGrad {
    fn piece(&self) -> Split {
        Split {
            axis: self.axis,
            sizes: self.sizes.clone(),
            index: self.index,
        }
    }
}

impl Op for SplitGrad {
    fn type_name(&self) -> &'static str {
        "SplitGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "SplitGrad")?;
        piece_grad_shape(
            "SplitGrad",
            self.piece().rule(inputs[1])?,
            inputs[0],
            inputs[1],
        )
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "SplitGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let op = self.piece();
        let piece = op.rule(&TensorShape::known(x.shape()))?;
        piece_grad_shape(
            "SplitGrad",
            piece,
            &TensorShape::known(g.shape()),
            &TensorShape::known(x.shape()),
        )?;
        let mut dx = Tensor::zeros(x.shape());
        dx.slice_axis_mut(Axis(self.axis), op.range(x.shape())?)
            .assign(g);
        Ok(dx)
    }
    // Linear in g: the adjoint of placing g in a range is taking the range.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(build(self.piece(), &[ctx.grad()])?), None])
    }
}

/// `x` cut along `axis` into pieces (`tf.split`): `num_or_sizes` is a number
/// of equal pieces (`3`), or the pieces' lengths (`[2, -1, 1]`, one `-1` for
/// the rest). Each piece is a node of its own; the gradient of `x` is the
/// pieces' gradients placed in their ranges in one tensor of `x`'s shape
/// (zeros where no gradient reaches): one [`PieceGrads`] node, as
/// [`add_n`](crate::add_n) joins the pieces' [`SplitGrad`] nodes.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 6]);
/// let parts = ad::split(&x, 3, 1).unwrap();
/// assert_eq!(parts.len(), 3);
/// assert_eq!(parts[2].shape(), ad::shape![None, 2]);
/// let parts = ad::split(&x, [1, -1, 2], 1).unwrap();
/// assert_eq!(parts[1].shape(), ad::shape![None, 3]);
/// assert!(ad::split(&x, 4, 1).is_err()); // 6 is not a multiple of 4
/// ```
///
/// # Errors
/// The error of a failed operator node `x`; [`Error::InvalidArgument`] for
/// no pieces; [`Error::Node`] wrapping
/// [`Error::Axis`] for an axis out of range, or [`Error::InvalidArgument`]
/// when the pieces do not fit the axis (at build time when its length is
/// known, otherwise in forward).
pub fn split(x: &Node, num_or_sizes: impl Into<SplitSizes>, axis: usize) -> Result<Vec<Node>> {
    x.clone().check()?;
    let sizes = num_or_sizes.into();
    let n = sizes.count();
    if n == 0 {
        return Err(Error::invalid(format!(
            "split of {}: no pieces asked for ({sizes:?})",
            x.name()
        )));
    }
    (0..n)
        .map(|index| {
            build(
                Split {
                    axis,
                    sizes: sizes.clone(),
                    index,
                },
                &[x],
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// the gradients of several pieces of one tensor, placed together
// ---------------------------------------------------------------------------

/// A piece of a tensor whose gradient a [`PieceGrads`] node places: what an
/// [`UnstackGrad`] or a [`SplitGrad`] node places alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Index `i` along the axis, which the piece does not have ([`unstack`]).
    Unstack(usize),
    /// Piece `index` of a [`split`] by `sizes` (the axis kept).
    Split {
        /// How the axis is cut.
        sizes: SplitSizes,
        /// Which piece.
        index: usize,
    },
}

impl Piece {
    /// The node taking this piece of `t` along `axis`.
    fn take(&self, axis: usize, t: &Node) -> Result<Node> {
        match self {
            Piece::Unstack(index) => build(
                Unstack {
                    axis,
                    index: *index,
                },
                &[t],
            ),
            Piece::Split { sizes, index } => build(
                Split {
                    axis,
                    sizes: sizes.clone(),
                    index: *index,
                },
                &[t],
            ),
        }
    }

    /// The piece's static shape, of `x` along `axis`.
    fn rule(&self, axis: usize, x: &TensorShape) -> Result<TensorShape> {
        match self {
            Piece::Unstack(index) => Unstack {
                axis,
                index: *index,
            }
            .rule(x),
            Piece::Split { sizes, index } => Split {
                axis,
                sizes: sizes.clone(),
                index: *index,
            }
            .rule(x),
        }
    }

    /// The piece's range along `axis` of a concrete `x`.
    fn range(&self, axis: usize, x: &[usize]) -> Result<(usize, usize)> {
        match self {
            Piece::Unstack(index) => Ok((*index, index + 1)),
            Piece::Split { sizes, index } => {
                let split = Split {
                    axis,
                    sizes: sizes.clone(),
                    index: *index,
                };
                let r = split.range(x)?;
                let start = usize::try_from(r.start).unwrap_or(0);
                let end = r.end.map_or(x[axis], |e| usize::try_from(e).unwrap_or(0));
                Ok((start, end))
            }
        }
    }
}

/// The gradients of several pieces of one tensor `x` (pieces of
/// [`unstack`] or [`split`] along one axis), placed at their pieces in one
/// tensor of `x`'s shape: inputs `(g_0, .., g_{k-1}, x)` (`x` only for its
/// run-time shape), zeros where no piece is given, and the sum where a piece
/// is given twice.
///
/// This is what the sum of the pieces' [`UnstackGrad`] or [`SplitGrad`]
/// nodes is: [`add_n`](crate::add_n) (which adds up the gradient
/// contributions reaching a node) builds one of these in their place, so
/// that the gradient of `x` costs one pass over `x` rather than one per
/// piece (an LSTM's 16 time steps, taken from one `[B, 16, 4H]` product,
/// would otherwise cost 16 tensors of the whole product's size). When the
/// pieces cover the axis once each, the output is their concatenation, with
/// no zero fill.
pub struct PieceGrads {
    /// The axis the pieces were taken along.
    pub axis: usize,
    /// Which piece each `g_j` is the gradient of.
    pub pieces: Vec<Piece>,
}

impl PieceGrads {
    fn rule(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, self.pieces.len() + 1, "PieceGrads")?;
        let x = inputs[self.pieces.len()];
        for (j, (piece, g)) in self.pieces.iter().zip(inputs).enumerate() {
            let want = piece.rule(self.axis, x)?;
            if !want.is_compatible(g) {
                return Err(Error::ShapeMismatch {
                    what: format!("PieceGrads: gradient {j}, of piece {piece:?} of {x}"),
                    expected: want,
                    got: (*g).clone(),
                });
            }
        }
        Ok(x.clone())
    }
}

impl Op for PieceGrads {
    fn type_name(&self) -> &'static str {
        "PieceGrads"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.rule(inputs)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let shapes: Vec<TensorShape> = inputs
            .iter()
            .map(|t| TensorShape::known(t.shape()))
            .collect();
        let x_shape = concrete(self.rule(&shapes.iter().collect::<Vec<_>>())?)?;
        let (axis, k) = (Axis(self.axis), self.pieces.len());
        // The pieces' ranges along the axis, and the inputs in range order.
        let mut order: Vec<(usize, usize, usize)> = Vec::with_capacity(k);
        for (j, piece) in self.pieces.iter().enumerate() {
            let (start, end) = piece.range(self.axis, &x_shape)?;
            order.push((start, end, j));
        }
        order.sort_unstable();
        let view = |j: usize| match self.pieces[j] {
            Piece::Unstack(_) => inputs[j].view().insert_axis(axis),
            Piece::Split { .. } => inputs[j].view(),
        };
        let tiles = order.first().is_some_and(|f| f.0 == 0)
            && order.windows(2).all(|w| w[0].1 == w[1].0)
            && order.last().is_some_and(|l| l.1 == x_shape[self.axis]);
        if tiles {
            let views: Vec<ArrayViewD<f32>> = order.iter().map(|&(_, _, j)| view(j)).collect();
            let out = concatenate(axis, &views)?;
            return Ok(if out.is_standard_layout() {
                out
            } else {
                out.as_standard_layout().into_owned()
            });
        }
        checked_num_elements(&x_shape)?;
        let mut dx = Tensor::zeros(IxDyn(&x_shape));
        for &(start, end, j) in &order {
            let mut part = dx.slice_axis_mut(axis, Slice::from(start..end));
            part += &view(j);
        }
        Ok(dx)
    }
    // Linear in each g_j: the adjoint of placing g_j at its piece is taking
    // that piece; x is read for its shape only.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let mut grads: Vec<Option<Node>> = self
            .pieces
            .iter()
            .enumerate()
            .map(|(j, piece)| {
                if !ctx.needs_grad(j) {
                    return Ok(None);
                }
                piece.take(self.axis, ctx.grad()).map(Some)
            })
            .collect::<Result<_>>()?;
        grads.push(None);
        Ok(grads)
    }
}

/// The piece an [`UnstackGrad`] or [`SplitGrad`] node places, with the
/// axis and the two inputs `(g, x)`; `None` for other nodes.
fn placed_piece(node: &Node) -> Option<(usize, Piece, Node, Node)> {
    let graph = node.graph().clone();
    let (axis, piece) = {
        let inner = graph.borrow();
        let crate::graph::NodeKind::Op(op) = &inner.nodes[node.id().index()].kind else {
            return None;
        };
        let any: &dyn std::any::Any = &**op;
        if let Some(u) = any.downcast_ref::<UnstackGrad>() {
            (u.axis, Piece::Unstack(u.index))
        } else if let Some(s) = any.downcast_ref::<SplitGrad>() {
            (
                s.axis,
                Piece::Split {
                    sizes: s.sizes.clone(),
                    index: s.index,
                },
            )
        } else {
            return None;
        }
    };
    let inputs = node.inputs();
    match inputs.as_slice() {
        [g, x] => Some((axis, piece, g.clone(), x.clone())),
        _ => None,
    }
}

/// `xs` (terms of a sum) with the [`UnstackGrad`] and [`SplitGrad`] nodes
/// that place pieces of one tensor along one axis replaced by one
/// [`PieceGrads`] node per such group of two or more; `None` when there is
/// no such group. The other terms keep their order, after the joined ones.
pub(crate) fn join_piece_gradients(xs: &[&Node]) -> Result<Option<Vec<Node>>> {
    /// Pieces of one tensor along one axis: the key `(x, axis, unstack?)`,
    /// each member's piece, gradient and placing node, and `x`.
    type Group = (
        (crate::graph::NodeId, usize, bool),
        Vec<(Piece, Node, Node)>,
        Node,
    );
    let mut groups: Vec<Group> = Vec::new();
    let mut rest: Vec<Node> = Vec::new();
    for &n in xs {
        match placed_piece(n) {
            Some((axis, piece, g, x)) => {
                let key = (x.id(), axis, matches!(piece, Piece::Unstack(_)));
                let member = (piece, g, n.clone());
                match groups.iter_mut().find(|(k, _, _)| *k == key) {
                    Some((_, members, _)) => members.push(member),
                    None => groups.push((key, vec![member], x)),
                }
            }
            None => rest.push(n.clone()),
        }
    }
    if groups.iter().all(|(_, members, _)| members.len() < 2) {
        return Ok(None);
    }
    let mut terms = Vec::with_capacity(groups.len() + rest.len());
    for ((_, axis, _), mut members, x) in groups {
        if members.len() == 1 {
            if let Some((_, _, placing)) = members.pop() {
                terms.push(placing);
            }
            continue;
        }
        let (pieces, mut args): (Vec<Piece>, Vec<Node>) =
            members.into_iter().map(|(p, g, _)| (p, g)).unzip();
        args.push(x);
        let refs: Vec<&Node> = args.iter().collect();
        terms.push(build(PieceGrads { axis, pieces }, &refs)?);
    }
    terms.extend(rest);
    Ok(Some(terms))
}

// ---------------------------------------------------------------------------
// tile
// ---------------------------------------------------------------------------

/// `x` repeated `multiples[i]` times along each dim `i`.
pub struct Tile {
    multiples: Vec<usize>,
}

/// The shape of `x` tiled by `multiples`.
fn tile_rule(x: &TensorShape, multiples: &[usize], what: &str) -> Result<TensorShape> {
    if multiples.len() != x.rank() {
        return Err(Error::Rank {
            what: format!("{what} input (multiples {multiples:?})"),
            expected: multiples.len().to_string(),
            got: x.clone(),
        });
    }
    let dims = x
        .dims()
        .iter()
        .zip(multiples)
        .enumerate()
        .map(|(i, (d, &m))| match (d, m) {
            (_, 0) => Ok(Some(0)),
            (None, _) => Ok(None),
            (Some(d), m) => d.checked_mul(m).map(Some).ok_or_else(|| {
                Error::invalid(format!("{what}: dim {i} ({d}) times {m} is too large"))
            }),
        })
        .collect::<Result<_>>()?;
    Ok(TensorShape::new(dims))
}

/// `shape` with each dim `d_i` preceded by `m_i`: `[m_0, d_0, m_1, d_1, ..]`
/// (`repeated`), or by 1 (`!repeated`), the tiled layout.
fn interleaved(shape: &[usize], multiples: &[usize], repeated: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(multiples)
        .flat_map(|(&d, &m)| [if repeated { m } else { 1 }, d])
        .collect()
}

impl Op for Tile {
    fn type_name(&self) -> &'static str {
        "Tile"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Tile")?;
        tile_rule(inputs[0], &self.multiples, "tile")
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Tile")?;
        let x = inputs[0];
        let dims = concrete(tile_rule(
            &TensorShape::known(x.shape()),
            &self.multiples,
            "tile",
        )?)?;
        checked_num_elements(&dims)?;
        // x as [1, d_0, 1, d_1, ..] repeated to [m_0, d_0, m_1, d_1, ..].
        let src = x.to_shape(interleaved(x.shape(), &self.multiples, false))?;
        let big = broadcast_to_shape(
            &src.into_owned(),
            &interleaved(x.shape(), &self.multiples, true),
            1.0,
        )?;
        Ok(big.into_shape_with_order(dims)?)
    }
    // dx = the sum of g's copies: g seen as [m_0, d_0, m_1, d_1, ..] summed
    // over the m axes (a TileGrad); nothing to do when every multiple is 1
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if self.multiples.iter().all(|&m| m == 1) {
            return Ok(vec![Some(ctx.grad().clone())]);
        }
        let dx = build(
            TileGrad {
                multiples: self.multiples.clone(),
            },
            &[ctx.grad(), ctx.input(0)],
        )?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a [`tile`]: inputs `(g, x)`; the output has `x`'s
/// run-time shape (its values are not read) and is the sum of the copies of
/// `x` in `g`.
pub struct TileGrad {
    /// The forward tile's multiples.
    pub multiples: Vec<usize>,
}

impl Op for TileGrad {
    fn type_name(&self) -> &'static str {
        "TileGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "TileGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let tiled = tile_rule(x, &self.multiples, "TileGrad")?;
        if !tiled.is_compatible(g) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "TileGrad: the gradient of {x} tiled by {:?}",
                    self.multiples
                ),
                expected: tiled,
                got: g.clone(),
            });
        }
        Ok(x.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "TileGrad")?;
        let (g, x) = (inputs[0], inputs[1]);
        let tiled = tile_rule(&TensorShape::known(x.shape()), &self.multiples, "TileGrad")?;
        if tiled != TensorShape::known(g.shape()) {
            return Err(Error::ShapeMismatch {
                what: "TileGrad: the gradient of the tile".into(),
                expected: tiled,
                got: TensorShape::known(g.shape()),
            });
        }
        let mut dx = vec![0.0f32; x.len()];
        if !g.is_empty() {
            sum_tiles(&row_major(g), g.shape(), x.shape(), &mut dx);
        }
        Ok(Tensor::from_shape_vec(x.shape(), dx)?)
    }
    // Linear in g: the adjoint of summing the copies is tiling again.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(tile(ctx.grad(), &self.multiples)?), None])
    }
}

/// Adds each copy in `g` (row-major, of shape `g_dims`, a tiling of
/// `x_dims`) into `dx` (row-major, of shape `x_dims`): element `i` along a
/// dim goes to `i % d`. Rows of the last dim are added as whole slices.
fn sum_tiles(g: &[f32], g_dims: &[usize], x_dims: &[usize], dx: &mut [f32]) {
    match (g_dims, x_dims) {
        ([], _) => dx[0] += g[0],
        ([_], [d]) => {
            for copy in g.chunks_exact(*d) {
                dx.iter_mut().zip(copy).for_each(|(o, &v)| *o += v);
            }
        }
        ([gd, g_rest @ ..], [d, x_rest @ ..]) => {
            let (g_block, x_block) = (g.len() / gd, dx.len() / d);
            for i in 0..*gd {
                let j = i % d;
                sum_tiles(
                    &g[i * g_block..(i + 1) * g_block],
                    g_rest,
                    x_rest,
                    &mut dx[j * x_block..(j + 1) * x_block],
                );
            }
        }
        _ => {}
    }
}

/// `x` repeated `multiples[i]` times along each dim `i` (`tf.tile`, NumPy's
/// `tile` with one multiple per dim): dim `i` of the output is
/// `x.shape[i] * multiples[i]`. The gradient sums the copies.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2]);
/// let y = ad::tile(&x, &[1, 3]).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 6]);
/// let feed = ad::feed! { x => [[1.0, 2.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([[1.0, 2.0, 1.0, 2.0, 1.0, 2.0]]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([[3.0, 3.0]]));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `multiples` has not one entry
/// per dim of `x`.
pub fn tile(x: &Node, multiples: &[usize]) -> Result<Node> {
    build(
        Tile {
            multiples: multiples.to_vec(),
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// expand_dims, squeeze
// ---------------------------------------------------------------------------

/// Inserts a dim of size 1.
pub struct ExpandDims {
    axis: usize,
}

impl ExpandDims {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        if self.axis > x.rank() {
            return Err(axis_error(self.axis, x.rank() + 1));
        }
        let mut dims = x.dims().to_vec();
        dims.insert(self.axis, Some(1));
        Ok(TensorShape::new(dims))
    }
}

impl Op for ExpandDims {
    fn type_name(&self) -> &'static str {
        "ExpandDims"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "ExpandDims")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "ExpandDims")?;
        let x = inputs[0];
        self.rule(&TensorShape::known(x.shape()))?;
        Ok(x.view()
            .insert_axis(Axis(self.axis))
            .as_standard_layout()
            .into_owned())
    }
    // dx = reshape(g, shape(x)): only the dims are renumbered
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(reshape_like(ctx.grad(), ctx.input(0))?)])
    }
}

/// `x` with a dim of size 1 inserted at `axis` (`0..=rank`; `tf.expand_dims`).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 3]);
/// assert_eq!(ad::expand_dims(&x, 1).unwrap().shape(), ad::shape![None, 1, 3]);
/// assert_eq!(ad::expand_dims(&x, 2).unwrap().shape(), ad::shape![None, 3, 1]);
/// assert!(ad::expand_dims(&x, 3).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Axis`] for an axis past the rank.
pub fn expand_dims(x: &Node, axis: usize) -> Result<Node> {
    build(ExpandDims { axis }, &[x])
}

/// Removes dims of size 1.
pub struct Squeeze {
    axes: Vec<usize>,
}

impl Squeeze {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        let rank = x.rank();
        let mut drop = vec![false; rank];
        if self.axes.is_empty() {
            if !x.is_fully_defined() {
                return Err(Error::invalid(format!(
                    "squeeze without axes drops every dim of size 1, which needs all dims of \
                     {x} known; name the axes"
                )));
            }
            for (i, d) in x.dims().iter().enumerate() {
                drop[i] = *d == Some(1);
            }
        }
        for &a in &self.axes {
            let slot = drop.get_mut(a).ok_or_else(|| axis_error(a, rank))?;
            if *slot {
                return Err(Error::invalid(format!(
                    "squeeze: axes {:?} name axis {a} twice",
                    self.axes
                )));
            }
            match x.dim(a) {
                Some(1) | None => *slot = true,
                Some(d) => {
                    return Err(Error::invalid(format!(
                        "squeeze: dim {a} of {x} has size {d}, not 1"
                    )))
                }
            }
        }
        Ok(TensorShape::new(
            x.dims()
                .iter()
                .zip(&drop)
                .filter(|(_, &dropped)| !dropped)
                .map(|(&d, _)| d)
                .collect(),
        ))
    }
}

impl Op for Squeeze {
    fn type_name(&self) -> &'static str {
        "Squeeze"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Squeeze")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Squeeze")?;
        let x = inputs[0];
        let dims = concrete(self.rule(&TensorShape::known(x.shape()))?)?;
        Ok(x.to_shape(dims)?.into_owned())
    }
    // dx = reshape(g, shape(x)): only the dims are renumbered
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(reshape_like(ctx.grad(), ctx.input(0))?)])
    }
}

/// `x` without the dims `axes` (any order), each of which must have size 1
/// (`tf.squeeze`). With no axes, every dim of size 1 is removed, which needs
/// `x`'s static shape fully known.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 1, 3, 1]);
/// assert_eq!(ad::squeeze(&x, &[3, 1]).unwrap().shape(), ad::shape![None, 3]);
/// assert!(ad::squeeze(&x, &[2]).is_err()); // size 3
/// assert!(ad::squeeze(&x, &[]).is_err()); // dim 0 unknown
/// let y = g.placeholder([1, 2, 1]);
/// assert_eq!(ad::squeeze(&y, &[]).unwrap().shape(), ad::shape![2]);
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Axis`] for an axis out of range, or
/// [`Error::InvalidArgument`] for an axis named twice, a dim that is not 1
/// (at build time when known, otherwise in forward), or no axes with unknown dims.
pub fn squeeze(x: &Node, axes: &[usize]) -> Result<Node> {
    build(
        Squeeze {
            axes: axes.to_vec(),
        },
        &[x],
    )
}

// ---------------------------------------------------------------------------
// broadcast_to
// ---------------------------------------------------------------------------

/// `x` repeated up to a fixed shape (NumPy broadcasting).
pub struct BroadcastTo {
    shape: Vec<usize>,
}

impl BroadcastTo {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        let target = TensorShape::known(&self.shape);
        let refused = || Error::Broadcast {
            lhs: x.clone(),
            rhs: target.clone(),
        };
        let lead = self.shape.len().checked_sub(x.rank()).ok_or_else(refused)?;
        let fits = x
            .dims()
            .iter()
            .zip(&self.shape[lead..])
            .all(|(d, &t)| matches!(d, None | Some(1)) || *d == Some(t));
        if !fits {
            return Err(refused());
        }
        Ok(target)
    }
}

impl Op for BroadcastTo {
    fn type_name(&self) -> &'static str {
        "BroadcastTo"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "BroadcastTo")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "BroadcastTo")?;
        let x = inputs[0];
        self.rule(&TensorShape::known(x.shape()))?;
        if x.shape() == self.shape.as_slice() {
            return Ok(x.clone());
        }
        checked_num_elements(&self.shape)?;
        broadcast_to_shape(x, &self.shape, 1.0)
    }
    // dx = g summed back to x's shape (over the new leading dims and the
    // dims where x has 1); the output's static shape tells sum_to which
    // unknown dims of x may have been broadcast
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dx = crate::sum_to(ctx.grad(), ctx.input(0), &[ctx.output()])?;
        Ok(vec![Some(dx)])
    }
}

/// `x` broadcast to `shape` (`tf.broadcast_to`, NumPy rules): new leading
/// dims are added and dims of size 1 repeated. The gradient sums back.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3, 1]);
/// let y = ad::broadcast_to(&x, &[2, 3, 4]).unwrap();
/// assert_eq!(y.shape(), ad::shape![2, 3, 4]);
/// assert!(ad::broadcast_to(&x, &[3, 2, 4]).is_err());
/// let feed = ad::feed! { x => [[1.0], [2.0], [3.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([[8.0], [8.0], [8.0]]));
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Broadcast`] when `x`'s shape does not
/// broadcast to `shape` (at build time when known, otherwise in forward).
pub fn broadcast_to(x: &Node, shape: &[usize]) -> Result<Node> {
    build(
        BroadcastTo {
            shape: shape.to_vec(),
        },
        &[x],
    )
}
