//! Linear algebra: matmul (2-D and batched, with NumPy broadcasting of the
//! batch dims). Every matrix product goes through [`crate::kernels::gemm`].

use ndarray::{Array3, Axis};

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::gemm::{matmul_vec, sgemm};
use crate::op::{BackwardContext, ForwardContext, Op};
use crate::ops::array::{checked_num_elements, expect_inputs};
use crate::ops::build;
use crate::shape::{broadcast_shapes, TensorShape};
use crate::tensor::Tensor;

/// Matrix product over the last two dims: `[..., p, q] x [..., q, r] -> [..., p, r]`.
pub struct MatMul;

/// The static (or, with concrete shapes, the run-time) shape rule of matmul.
fn matmul_rule(x: &TensorShape, y: &TensorShape) -> Result<TensorShape> {
    for (name, s) in [("x", x), ("y", y)] {
        if s.rank() < 2 {
            return Err(Error::Rank {
                what: format!("matmul {name} (a matrix or a batch of matrices)"),
                expected: "2 or more".into(),
                got: s.clone(),
            });
        }
    }
    let (xb, xm) = x.dims().split_at(x.rank() - 2);
    let (yb, ym) = y.dims().split_at(y.rank() - 2);
    if let (Some(q1), Some(q2)) = (xm[1], ym[0]) {
        if q1 != q2 {
            return Err(Error::invalid(format!(
                "matmul: inner dims differ: x has shape {x} (its last dim is {q1}) but y has \
                 shape {y} (its second-to-last dim is {q2})"
            )));
        }
    }
    let batch = TensorShape::new(xb.to_vec())
        .broadcast(&TensorShape::new(yb.to_vec()))
        .map_err(|_| {
            Error::invalid(format!(
                "matmul: the batch dims of x {x} and y {y} (all but the last two) do not broadcast"
            ))
        })?;
    let mut dims = batch.dims().to_vec();
    dims.extend([xm[0], ym[1]]);
    Ok(TensorShape::new(dims))
}

/// The index into a batch of shape `sub` (right-aligned and broadcast to `full`)
/// of each of the `prod(full)` batch positions, in row-major order.
fn batch_indices(full: &[usize], sub: &[usize]) -> Vec<usize> {
    let total: usize = full.iter().product();
    if full == sub {
        return (0..total).collect();
    }
    let offset = full.len() - sub.len();
    (0..total)
        .map(|mut k| {
            // Row-major digits of k in `full`, least significant first.
            let mut index = 0;
            let mut stride = 1;
            for (t, &f) in full.iter().enumerate().rev() {
                let digit = k % f;
                k /= f;
                if t >= offset {
                    let s = sub[t - offset];
                    if s != 1 {
                        index += digit * stride;
                    }
                    stride *= s;
                }
            }
            index
        })
        .collect()
}

/// Views `a` (`[..., m, n]`) as a stack of matrices `[prod(...), m, n]`,
/// copying only when `a` is not in standard layout.
fn as_stack(a: &Tensor) -> Result<ndarray::CowArray<'_, f32, ndarray::Ix3>> {
    let r = a.ndim();
    let (m, n) = (a.shape()[r - 2], a.shape()[r - 1]);
    let b: usize = a.shape()[..r - 2].iter().product();
    Ok(a.to_shape((b, m, n))?)
}

/// Everything forward and backward need about one product's shapes.
struct Plan {
    out_shape: Vec<usize>,
    /// For each output batch position, the batch index into x and into y.
    xi: Vec<usize>,
    yi: Vec<usize>,
}

fn plan(x: &Tensor, y: &Tensor) -> Result<Plan> {
    let out = matmul_rule(
        &TensorShape::known(x.shape()),
        &TensorShape::known(y.shape()),
    )?;
    let out_shape = out
        .to_vec()
        .ok_or_else(|| Error::invalid("internal: matmul shape rule left a dim unknown"))?;
    checked_num_elements(&out_shape)?;
    let (xb, yb) = (&x.shape()[..x.ndim() - 2], &y.shape()[..y.ndim() - 2]);
    let batch = broadcast_shapes(xb, yb)?;
    Ok(Plan {
        xi: batch_indices(&batch, xb),
        yi: batch_indices(&batch, yb),
        out_shape,
    })
}

impl Op for MatMul {
    fn type_name(&self) -> &'static str {
        "MatMul"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "MatMul")?;
        matmul_rule(inputs[0], inputs[1])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "MatMul")?;
        let (x, y) = (inputs[0], inputs[1]);
        let plan = plan(x, y)?;
        let (x3, y3) = (as_stack(x)?, as_stack(y)?);
        let (p, r) = (x3.shape()[1], y3.shape()[2]);
        if plan.xi.len() == 1 {
            // One product (every 2-D matmul): written once, no zero fill first.
            let c = matmul_vec(x3.index_axis(Axis(0), 0), y3.index_axis(Axis(0), 0));
            return Ok(Tensor::from_shape_vec(plan.out_shape, c)?);
        }
        let mut out = Array3::<f32>::zeros((plan.xi.len(), p, r));
        for (k, mut c) in out.outer_iter_mut().enumerate() {
            let a = x3.index_axis(Axis(0), plan.xi[k]);
            let b = y3.index_axis(Axis(0), plan.yi[k]);
            sgemm(1.0, a, b, 0.0, &mut c);
        }
        Ok(out.into_shape_with_order(plan.out_shape)?)
    }
    // dx = g · yᵀ, dy = xᵀ · g per batch position (transposed views, no copies),
    // summed over the positions where x (or y) was broadcast
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let (x, y) = (ctx.input(0), ctx.input(1));
        let plan = plan(x, y)?;
        let (x3, y3) = (as_stack(x)?, as_stack(y)?);
        let (p, q, r) = (x3.shape()[1], x3.shape()[2], y3.shape()[2]);
        let g3 = grad.to_shape((plan.xi.len(), p, r))?;
        if g3.shape()[0] == 1 {
            // One product: each gradient is written once, no zero fill first.
            let g = g3.index_axis(Axis(0), 0);
            let (a, b) = (x3.index_axis(Axis(0), 0), y3.index_axis(Axis(0), 0));
            let dx = ctx
                .needs_grad(0)
                .then(|| Tensor::from_shape_vec(x.shape(), matmul_vec(g, b.t())))
                .transpose()?;
            let dy = ctx
                .needs_grad(1)
                .then(|| Tensor::from_shape_vec(y.shape(), matmul_vec(a.t(), g)))
                .transpose()?;
            return Ok(vec![dx, dy]);
        }

        let dx = ctx
            .needs_grad(0)
            .then(|| -> Result<Tensor> {
                let mut dx = Array3::<f32>::zeros((x3.shape()[0], p, q));
                for (k, g) in g3.outer_iter().enumerate() {
                    let b = y3.index_axis(Axis(0), plan.yi[k]);
                    let mut c = dx.index_axis_mut(Axis(0), plan.xi[k]);
                    sgemm(1.0, g, b.t(), 1.0, &mut c);
                }
                Ok(dx.into_shape_with_order(x.shape())?)
            })
            .transpose()?;
        let dy = ctx
            .needs_grad(1)
            .then(|| -> Result<Tensor> {
                let mut dy = Array3::<f32>::zeros((y3.shape()[0], q, r));
                for (k, g) in g3.outer_iter().enumerate() {
                    let a = x3.index_axis(Axis(0), plan.xi[k]);
                    let mut c = dy.index_axis_mut(Axis(0), plan.yi[k]);
                    sgemm(1.0, a.t(), g, 1.0, &mut c);
                }
                Ok(dy.into_shape_with_order(y.shape())?)
            })
            .transpose()?;
        Ok(vec![dx, dy])
    }
}

/// The matrix product of `x` and `y` over their last two dims:
/// `[p, q] x [q, r] -> [p, r]`, and for batches `[..., p, q] x [..., q, r] ->
/// [..., p, r]`, where the batch dims (all but the last two) broadcast as in
/// NumPy (`[b, p, q] x [q, r]` multiplies every matrix of the batch by `y`).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 784]);
/// let w = g.placeholder([784, 10]);
/// assert_eq!(ad::matmul(&x, &w).unwrap().shape(), ad::shape![None, 10]);
/// let a = g.placeholder([8, 2, 3]);
/// let b = g.placeholder([8, 3, 5]);
/// assert_eq!(ad::matmul(&a, &b).unwrap().shape(), ad::shape![8, 2, 5]);
/// assert!(ad::matmul(&x, &b).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when an input has rank below 2, or
/// [`Error::InvalidArgument`] (naming both shapes) when the inner dims differ or
/// the batch dims do not broadcast, at build time when the dims are known,
/// otherwise in forward.
pub fn matmul(x: &Node, y: &Node) -> Result<Node> {
    build(MatMul, &[x, y])
}
