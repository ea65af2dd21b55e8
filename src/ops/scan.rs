//! Scans along one axis: cumsum (`tf.cumsum`), whose gradient is a cumsum of
//! the upstream in the opposite direction, so it is differentiable to any
//! order with no op of its own.

use crate::error::Result;
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{axis_error, expect_inputs};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Running sums along one axis.
pub struct Cumsum {
    axis: usize,
    exclusive: bool,
    reverse: bool,
}

impl Cumsum {
    fn rule(&self, x: &TensorShape) -> Result<TensorShape> {
        if self.axis >= x.rank() {
            return Err(axis_error(self.axis, x.rank()));
        }
        Ok(x.clone())
    }
}

impl Op for Cumsum {
    fn type_name(&self) -> &'static str {
        "Cumsum"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 1, "Cumsum")?;
        self.rule(inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 1, "Cumsum")?;
        let x = inputs[0];
        self.rule(&TensorShape::known(x.shape()))?;
        let shape = x.shape();
        let n = shape[self.axis];
        let inner: usize = shape[self.axis + 1..].iter().product();
        let src = row_major(x);
        let mut out = vec![0.0f32; src.len()];
        if n > 0 && inner > 0 {
            // x as [outer, n, inner]: rows of `inner` contiguous elements,
            // summed into a running row (in the order of the scan).
            let mut acc = vec![0.0f32; inner];
            for (xb, ob) in src
                .chunks_exact(n * inner)
                .zip(out.chunks_exact_mut(n * inner))
            {
                acc.fill(0.0);
                for step in 0..n {
                    let i = if self.reverse { n - 1 - step } else { step };
                    let xr = &xb[i * inner..(i + 1) * inner];
                    let or = &mut ob[i * inner..(i + 1) * inner];
                    if self.exclusive {
                        or.copy_from_slice(&acc);
                        acc.iter_mut().zip(xr).for_each(|(a, &v)| *a += v);
                    } else {
                        for ((a, o), &v) in acc.iter_mut().zip(or.iter_mut()).zip(xr) {
                            *a += v;
                            *o = *a;
                        }
                    }
                }
            }
        }
        Ok(Tensor::from_shape_vec(shape, out)?)
    }
    // out[i] = sum of x[j] over j <= i (j < i exclusive; >= and > reversed),
    // so dx[j] = sum of g[i] over the i that x[j] reaches: the same scan of g
    // in the opposite direction
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(cumsum(
            ctx.grad(),
            self.axis,
            self.exclusive,
            !self.reverse,
        )?)])
    }
}

/// The running sum of `x` along `axis` (`tf.cumsum`): `out[i] = x[0] + .. +
/// x[i]`; `exclusive` leaves out `x[i]` itself (the first output is 0);
/// `reverse` sums from the end (`x[i] + .. + x[n-1]`).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([4]);
/// let feed = ad::feed! { x => [1.0, 2.0, 3.0, 4.0] }.unwrap();
/// let mut rt = ad::RunTime::new();
/// let y = ad::cumsum(&x, 0, false, false).unwrap();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([1.0, 3.0, 6.0, 10.0]));
/// let y = ad::cumsum(&x, 0, true, true).unwrap();
/// assert_eq!(rt.forward(&y, &feed).unwrap(), &ad::tensor([9.0, 7.0, 4.0, 0.0]));
/// rt.backward(&y, &feed, None).unwrap();
/// assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 1.0, 2.0, 3.0]));
/// ```
///
/// # Errors
/// [`Error::Node`](crate::Error::Node) wrapping [`Error::Axis`](crate::Error::Axis)
/// when `axis` is not a dim of `x`.
pub fn cumsum(x: &Node, axis: usize, exclusive: bool, reverse: bool) -> Result<Node> {
    build(
        Cumsum {
            axis,
            exclusive,
            reverse,
        },
        &[x],
    )
}
