//! Ops that read integer indices: gather (and embedding_lookup, its axis-0
//! case) with its gradient op [`GatherGrad`] (a scatter-add, whose own
//! gradient is a gather again), and one_hot.
//!
//! Indices are `f32` tensors holding whole numbers (as the reference vectors
//! store them). Each forward validates them with `index_of` /
//! `indices_of`: a NaN, a fraction, a negative or an out-of-range index is
//! an [`Error`] saying which value, at which position, and what the valid
//! range is (the run time adds the node's name), never a panic or a wrong
//! read. Indices take no gradient.

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{axis_error, checked_num_elements, expect_inputs};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

// ---------------------------------------------------------------------------
// index validation
// ---------------------------------------------------------------------------

/// `value` as an index into something of `limit` elements: a whole number in
/// `[0, limit)`. `what` names the value in the error (`"gather: indices[1, 0]"`).
///
/// # Errors
/// [`Error::InvalidArgument`] for NaN, an infinity or a fraction;
/// [`Error::OutOfBounds`] for a whole number outside `[0, limit)`. The message
/// holds `what`, the value and the valid range.
pub(crate) fn index_of(value: f32, limit: usize, what: &str) -> Result<usize> {
    if !is_whole(value) {
        return Err(Error::invalid(format!(
            "{what} = {value} is not an index: indices are f32 tensors holding whole numbers, \
             here in [0, {limit})"
        )));
    }
    // `as` saturates: a huge value becomes usize::MAX, out of range too.
    let i = value as usize;
    if value >= 0.0 && i < limit {
        return Ok(i);
    }
    Err(Error::OutOfBounds(format!(
        "{what} = {value} is outside the valid range [0, {limit}){}",
        if limit == 0 { " (which is empty)" } else { "" }
    )))
}

/// Whether `value` is a whole number (false for NaN and the infinities).
fn is_whole(value: f32) -> bool {
    value.fract() == 0.0
}

/// Every element of `indices` (in row-major order) as an index below `limit`
/// (see [`index_of`]); the error names the first bad element by its position,
/// `what[i, j]`.
///
/// # Errors
/// As [`index_of`].
pub(crate) fn indices_of(indices: &Tensor, limit: usize, what: &str) -> Result<Vec<usize>> {
    let values = row_major(indices);
    let mut out = Vec::with_capacity(values.len());
    for (k, &v) in values.iter().enumerate() {
        // The fast test first; the message is only built for a bad value.
        let i = v as usize;
        if is_whole(v) && v >= 0.0 && i < limit {
            out.push(i);
        } else {
            return Err(
                index_of(v, limit, &format!("{what}{}", position(k, indices.shape())))
                    .err()
                    .unwrap_or_else(|| Error::invalid(format!("{what}: bad index {v}"))),
            );
        }
    }
    Ok(out)
}

/// The multi-index of flat (row-major) position `flat` in `shape`:
/// `"[1, 0]"`, or `""` for a scalar.
pub(crate) fn position(flat: usize, shape: &[usize]) -> String {
    if shape.is_empty() {
        return String::new();
    }
    let mut digits = vec![0; shape.len()];
    let mut rest = flat;
    for (d, &n) in digits.iter_mut().zip(shape).rev() {
        if n > 0 {
            *d = rest % n;
            rest /= n;
        }
    }
    let digits: Vec<String> = digits.iter().map(usize::to_string).collect();
    format!("[{}]", digits.join(", "))
}

// ---------------------------------------------------------------------------
// gather
// ---------------------------------------------------------------------------

/// The shape of `gather(params, indices, axis)`:
/// `params[:axis] + indices + params[axis + 1:]`.
fn gather_rule(params: &TensorShape, indices: &TensorShape, axis: usize) -> Result<TensorShape> {
    if axis >= params.rank() {
        return Err(axis_error(axis, params.rank()));
    }
    let p = params.dims();
    let mut dims = p[..axis].to_vec();
    dims.extend_from_slice(indices.dims());
    dims.extend_from_slice(&p[axis + 1..]);
    Ok(TensorShape::new(dims))
}

/// `params` seen as `[outer, n, inner]` around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// The indices of a gather into `params` along `axis`, validated.
fn gather_indices(indices: &Tensor, params: &Tensor, axis: usize, op: &str) -> Result<Vec<usize>> {
    let limit = params.shape()[axis];
    indices_of(indices, limit, &format!("{op}: indices")).map_err(|e| {
        with_context(
            e,
            &format!(
                " (the length of axis {axis} of params, shape {})",
                TensorShape::known(params.shape())
            ),
        )
    })
}

/// `e` with `context` added to its message (for the two kinds of index errors).
fn with_context(e: Error, context: &str) -> Error {
    match e {
        Error::OutOfBounds(m) => Error::OutOfBounds(m + context),
        Error::InvalidArgument(m) => Error::InvalidArgument(m + context),
        other => other,
    }
}

/// Slices of `params` along one axis, picked by integer indices (`tf.gather`).
pub struct Gather {
    axis: usize,
}

impl Op for Gather {
    fn type_name(&self) -> &'static str {
        "Gather"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "Gather")?;
        gather_rule(inputs[0], inputs[1], self.axis)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "Gather")?;
        let (params, indices) = (inputs[0], inputs[1]);
        let dims = gather_rule(
            &TensorShape::known(params.shape()),
            &TensorShape::known(indices.shape()),
            self.axis,
        )?
        .to_vec()
        .unwrap_or_default();
        let total = checked_num_elements(&dims)?;
        let idx = gather_indices(indices, params, self.axis, "gather")?;
        let (outer, n, inner) = around(params.shape(), self.axis);
        let p = row_major(params);
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            let block = &p[o * n * inner..(o + 1) * n * inner];
            for &i in &idx {
                out.extend_from_slice(&block[i * inner..(i + 1) * inner]);
            }
        }
        Ok(Tensor::from_shape_vec(dims, out)?)
    }
    // dparams = zeros(shape(params)) with g's slices added at the gathered
    // places (a repeated index accumulates): a GatherGrad; indices: none
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dparams = if ctx.needs_grad(0) {
            Some(build(
                GatherGrad { axis: self.axis },
                &[ctx.grad(), ctx.input(1), ctx.input(0)],
            )?)
        } else {
            None
        };
        Ok(vec![dparams, None])
    }
}

/// The gradient of a [`gather`]: inputs `(g, indices, params)`, where `g` is
/// shaped like the gather's output; the output has `params`' run-time shape
/// (its values are not read), zeros except where the gather read, which
/// receive the matching slices of `g`, summed where an index repeats (a
/// scatter-add).
pub struct GatherGrad {
    /// The axis of the forward gather.
    pub axis: usize,
}

impl Op for GatherGrad {
    fn type_name(&self) -> &'static str {
        "GatherGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 3, "GatherGrad")?;
        let (g, indices, params) = (inputs[0], inputs[1], inputs[2]);
        let gathered = gather_rule(params, indices, self.axis)?;
        if !gathered.is_compatible(g) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "GatherGrad: the gradient of a gather from {params} by indices {indices} \
                     on axis {}",
                    self.axis
                ),
                expected: gathered,
                got: g.clone(),
            });
        }
        Ok(params.clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 3, "GatherGrad")?;
        let (g, indices, params) = (inputs[0], inputs[1], inputs[2]);
        let gathered = gather_rule(
            &TensorShape::known(params.shape()),
            &TensorShape::known(indices.shape()),
            self.axis,
        )?;
        if gathered != TensorShape::known(g.shape()) {
            return Err(Error::ShapeMismatch {
                what: "GatherGrad: the gradient of the gather".into(),
                expected: gathered,
                got: TensorShape::known(g.shape()),
            });
        }
        let idx = gather_indices(indices, params, self.axis, "gather gradient")?;
        let (outer, n, inner) = around(params.shape(), self.axis);
        let m = idx.len();
        let gs = row_major(g);
        let mut dx = vec![0.0f32; outer * n * inner];
        for o in 0..outer {
            let src = &gs[o * m * inner..(o + 1) * m * inner];
            let dst = &mut dx[o * n * inner..(o + 1) * n * inner];
            for (j, &i) in idx.iter().enumerate() {
                let s = &src[j * inner..(j + 1) * inner];
                for (d, &v) in dst[i * inner..(i + 1) * inner].iter_mut().zip(s) {
                    *d += v;
                }
            }
        }
        Ok(Tensor::from_shape_vec(params.shape(), dx)?)
    }
    // Linear in g: the adjoint of a scatter-add is the gather: dg = gather(u, indices, axis)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![
            Some(gather(ctx.grad(), ctx.input(1), self.axis)?),
            None,
            None,
        ])
    }
}

/// Slices of `params` along `axis` picked by `indices` (`tf.gather`): the
/// output has shape `params.shape[..axis] + indices.shape +
/// params.shape[axis + 1..]`, with `out[a.., i.., b..] = params[a..,
/// indices[i..], b..]`. Scalar indices remove the axis.
///
/// `indices` holds whole numbers in `[0, params.shape[axis])` (as `f32`); it
/// takes no gradient. The gradient of `params` adds the upstream slices back
/// where they were read, so a repeated index accumulates.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let params = g.placeholder(ad::shape![None, 3]);
/// let idx = g.placeholder([2, 2]);
/// let y = ad::gather(&params, &idx, 1).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 2, 2]);
///
/// let feed = ad::feed! { params => [[1.0, 2.0, 3.0]], idx => [[2.0, 0.0], [2.0, 2.0]] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([[[3.0, 1.0], [3.0, 3.0]]]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&params).unwrap(), &ad::tensor([[1.0, 0.0, 3.0]])); // index 2 read 3 times
///
/// let bad = ad::feed! { params => [[1.0, 2.0, 3.0]], idx => [[2.0, 0.0], [3.0, 2.5]] }.unwrap();
/// let err = ad::RunTime::new().forward(&y, &bad).unwrap_err().to_string();
/// assert!(err.contains("Gather") && err.contains("[1, 0] = 3") && err.contains("[0, 3)"), "{err}");
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Axis`] when `axis` is not a dim of
/// `params`; in forward, [`Error::Node`] wrapping [`Error::InvalidArgument`]
/// for a NaN, infinite or fractional index, or [`Error::OutOfBounds`] for one
/// outside `[0, params.shape[axis])`, naming its position and the range.
pub fn gather(params: &Node, indices: &Node, axis: usize) -> Result<Node> {
    build(Gather { axis }, &[params, indices])
}

/// The rows of `params` picked by `ids`: [`gather`] on axis 0
/// (`tf.nn.embedding_lookup` with one table). The output has shape
/// `ids.shape + params.shape[1..]`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let table = g.placeholder([10, 4]);
/// let ids = g.placeholder(ad::shape![None, 7]);
/// assert_eq!(ad::embedding_lookup(&table, &ids).unwrap().shape(), ad::shape![None, 7, 4]);
/// ```
///
/// # Errors
/// As [`gather`] (a scalar `params` has no axis 0).
pub fn embedding_lookup(params: &Node, ids: &Node) -> Result<Node> {
    gather(params, ids, 0)
}

// ---------------------------------------------------------------------------
// one_hot
// ---------------------------------------------------------------------------

/// One-hot encoding of whole-number indices along a new last axis.
pub struct OneHot {
    depth: usize,
    on_value: f32,
    off_value: f32,
}

impl Op for OneHot {
    fn type_name(&self) -> &'static str {
        "OneHot"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "OneHot")?;
        let mut dims = inputs[0].dims().to_vec();
        dims.push(Some(self.depth));
        Ok(TensorShape::new(dims))
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "OneHot")?;
        let indices = inputs[0];
        let mut dims = indices.shape().to_vec();
        dims.push(self.depth);
        let total = checked_num_elements(&dims)?;
        let mut out = vec![self.off_value; total];
        for (k, &v) in row_major(indices).iter().enumerate() {
            // A whole number outside [0, depth) gives an all-off row, as in TF.
            if !is_whole(v) {
                return Err(Error::invalid(format!(
                    "one_hot: indices{} = {v} is not an index: indices are f32 tensors holding \
                     whole numbers (in [0, {}) for a hot entry; others give an all-off row)",
                    position(k, indices.shape()),
                    self.depth
                )));
            }
            let i = v as usize;
            if v >= 0.0 && i < self.depth {
                out[k * self.depth + i] = self.on_value;
            }
        }
        Ok(Tensor::from_shape_vec(dims, out)?)
    }
    // Integer input, piecewise constant output: no gradient.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// The one-hot encoding of `indices` (`tf.one_hot`): shape `indices.shape +
/// [depth]`, `on_value` at `[.., indices[..]]` and `off_value` elsewhere. A
/// whole number outside `[0, depth)` (for example `-1`) gives a row of
/// `off_value` only, as in TensorFlow. No gradient flows to `indices`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let labels = g.placeholder(ad::shape![None]);
/// let y = ad::one_hot(&labels, 3, 1.0, 0.0).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 3]);
/// let feed = ad::feed! { labels => [2.0, 0.0, -1.0] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// assert_eq!(
///     rt.forward(&y, &feed).unwrap(),
///     &ad::tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
/// );
/// let bad = ad::feed! { labels => [2.0, 0.5, 1.0] }.unwrap();
/// let err = ad::RunTime::new().forward(&y, &bad).unwrap_err().to_string();
/// assert!(err.contains("OneHot") && err.contains("indices[1] = 0.5"), "{err}");
/// ```
///
/// # Errors
/// In forward, [`Error::Node`] wrapping [`Error::InvalidArgument`] for an
/// index that is NaN, infinite or not a whole number, naming its position.
pub fn one_hot(indices: &Node, depth: usize, on_value: f32, off_value: f32) -> Result<Node> {
    build(
        OneHot {
            depth,
            on_value,
            off_value,
        },
        &[indices],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_accepts_whole_numbers_in_range() {
        assert_eq!(index_of(0.0, 3, "i").unwrap(), 0);
        assert_eq!(index_of(2.0, 3, "i").unwrap(), 2);
        assert_eq!(index_of(-0.0, 3, "i").unwrap(), 0);
    }

    #[test]
    fn index_of_rejects_bad_values_with_a_clear_message() {
        for (v, kind) in [
            (2.5, "invalid"),
            (f32::NAN, "invalid"),
            (f32::INFINITY, "invalid"),
            (f32::NEG_INFINITY, "invalid"),
            (-1.0, "bounds"),
            (3.0, "bounds"),
            (1e30, "bounds"),
        ] {
            let e = index_of(v, 3, "labels[4]").unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("labels[4]") && msg.contains("[0, 3)"), "{msg}");
            assert!(msg.contains(&v.to_string()), "{msg}");
            match kind {
                "invalid" => assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}"),
                _ => assert!(matches!(e, Error::OutOfBounds(_)), "{e:?}"),
            }
        }
        assert!(index_of(0.0, 0, "i")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn indices_of_names_the_position() {
        let t = Tensor::from_shape_vec(vec![2, 2], vec![0.0, 1.0, 1.0, 7.0]).unwrap();
        assert_eq!(indices_of(&t, 8, "ids").unwrap(), vec![0, 1, 1, 7]);
        let msg = indices_of(&t, 5, "ids").unwrap_err().to_string();
        assert!(
            msg.contains("ids[1, 1] = 7") && msg.contains("[0, 5)"),
            "{msg}"
        );
        let s = Tensor::from_elem(vec![], -2.0);
        let msg = indices_of(&s, 5, "ids").unwrap_err().to_string();
        assert!(msg.contains("ids = -2"), "{msg}");
        assert_eq!(position(5, &[2, 3]), "[1, 2]");
        assert_eq!(position(0, &[]), "");
    }
}
