//! 2-D max and average pooling over NHWC inputs with TensorFlow's semantics:
//! padding never wins a max, and SAME padding is left out of an average's
//! divisor. The loops are in `crate::kernels::pool`; output size and padding
//! come from the same helper as the convolutions ([`Padding`]).

use ndarray::IxDyn;

use crate::error::Result;
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::kernels::im2col::Window2d;
use crate::kernels::pool::{avg_pool, avg_pool_backward, max_pool, max_pool_backward};
use crate::op::{BackwardContext, ForwardContext, Op};
use crate::ops::build;
use crate::ops::conv::{about, check_pair, check_rank4, dims4, static_spatial, window, Padding};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The static shape rule of both pools.
fn pool_shape(
    op: &str,
    x: &TensorShape,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<TensorShape> {
    check_pair(&format!("{op} kernel_size"), kernel_size)?;
    check_pair(&format!("{op} strides"), strides)?;
    check_rank4(x, &format!("{op} input x (NHWC)"))?;
    let [oh, ow] =
        static_spatial(x, kernel_size.map(Some), strides, padding).map_err(|e| about(op, e))?;
    Ok(TensorShape::new(vec![x.dim(0), oh, ow, x.dim(3)]))
}

/// The run-time geometry of both pools.
fn pool_window(
    op: &str,
    x: &Tensor,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<Window2d> {
    check_pair(&format!("{op} kernel_size"), kernel_size)?;
    check_pair(&format!("{op} strides"), strides)?;
    let xd = dims4(x, &format!("{op} input x (NHWC)"))?;
    window(xd, kernel_size, strides, padding).map_err(|e| about(op, e))
}

/// The arg-max indices max pooling's forward keeps for its backward.
struct ArgMax(Vec<usize>);

/// 2-D max pooling of an NHWC input.
#[derive(Debug, Clone)]
pub struct MaxPool2D {
    /// Window size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
}

impl Op for MaxPool2D {
    fn type_name(&self) -> &'static str {
        "MaxPool2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        pool_shape(
            "maxpool2d",
            inputs[0],
            self.kernel_size,
            self.strides,
            self.padding,
        )
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let x = inputs[0];
        let g = pool_window("maxpool2d", x, self.kernel_size, self.strides, self.padding)?;
        let len = g.output_cells() * g.channels;
        let (mut out, mut argmax) = (vec![0.0; len], vec![0usize; len]);
        max_pool(&row_major(x), &g, &mut out, &mut argmax);
        ctx.save(ArgMax(argmax));
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, g.channels]),
            out,
        )?)
    }
    // dx[argmax(window)] += dy: each output's gradient goes to the cell that won
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let x = ctx.input(0);
        let g = pool_window("maxpool2d", x, self.kernel_size, self.strides, self.padding)?;
        let ArgMax(argmax) = ctx.saved::<ArgMax>()?;
        let dy = row_major(grad);
        if argmax.len() != dy.len() || dy.len() != g.output_cells() * g.channels {
            return Err(crate::Error::invalid(
                "maxpool2d: saved arg-max indices do not fit the gradient",
            ));
        }
        let mut dx = vec![0.0; g.input_len()];
        max_pool_backward(&dy, argmax, &g, &mut dx);
        Ok(vec![Some(Tensor::from_shape_vec(IxDyn(x.shape()), dx)?)])
    }
}

/// 2-D average pooling of an NHWC input.
#[derive(Debug, Clone)]
pub struct AvgPool2D {
    /// Window size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
}

impl Op for AvgPool2D {
    fn type_name(&self) -> &'static str {
        "AvgPool2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        pool_shape(
            "avgpool2d",
            inputs[0],
            self.kernel_size,
            self.strides,
            self.padding,
        )
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let x = inputs[0];
        let g = pool_window("avgpool2d", x, self.kernel_size, self.strides, self.padding)?;
        let mut out = vec![0.0; g.output_cells() * g.channels];
        avg_pool(&row_major(x), &g, &mut out);
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, g.channels]),
            out,
        )?)
    }
    // dx[cell] = sum over windows w holding cell of dy[w] / count(w)
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let x = ctx.input(0);
        let g = pool_window("avgpool2d", x, self.kernel_size, self.strides, self.padding)?;
        let dy = row_major(grad);
        if dy.len() != g.output_cells() * g.channels {
            return Err(crate::Error::invalid(
                "avgpool2d: the gradient does not fit the output",
            ));
        }
        let mut dx = vec![0.0; g.input_len()];
        avg_pool_backward(&dy, &g, &mut dx);
        Ok(vec![Some(Tensor::from_shape_vec(IxDyn(x.shape()), dx)?)])
    }
}

/// 2-D max pooling of `x` (`[N, H, W, C]`) over `kernel_size` windows, as
/// TensorFlow's `max_pool2d`: output `[N, OH, OW, C]` (see [`Padding`]);
/// padding never wins the max. The gradient goes to the arg-max cell of each
/// window (the first in row-major window order on a tie).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.constant((vec![1.0f32, 5.0, 2.0, 3.0, 4.0, 0.0], [1, 2, 3, 1])).unwrap();
/// let y = ad::maxpool2d(&x, [2, 2], [2, 2], ad::Padding::Same).unwrap();
/// assert_eq!(y.shape(), ad::shape![1, 1, 2, 1]);
/// let v = ad::RunTime::new().forward(&y, &ad::Feed::new()).unwrap().clone();
/// assert_eq!(v.into_raw_vec_and_offset().0, vec![5.0, 2.0]);
/// ```
///
/// # Errors
/// [`Error::Node`](crate::Error::Node) wrapping [`Error::Rank`](crate::Error::Rank)
/// when `x` is not rank 4, or [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// when a window size or stride is 0 or the window is larger than the input
/// with VALID padding.
pub fn maxpool2d(
    x: &Node,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<Node> {
    build(
        MaxPool2D {
            kernel_size,
            strides,
            padding,
        },
        &[x],
    )
}

/// 2-D average pooling of `x` (`[N, H, W, C]`) over `kernel_size` windows, as
/// TensorFlow's `avg_pool2d`: output `[N, OH, OW, C]` (see [`Padding`]); each
/// window divides by its number of real input cells, SAME padding excluded.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.constant((vec![1.0f32, 5.0, 2.0, 3.0, 4.0, 0.0], [1, 2, 3, 1])).unwrap();
/// let y = ad::avgpool2d(&x, [2, 2], [2, 2], ad::Padding::Same).unwrap();
/// let v = ad::RunTime::new().forward(&y, &ad::Feed::new()).unwrap().clone();
/// assert_eq!(v.into_raw_vec_and_offset().0, vec![13.0 / 4.0, 1.0]);
/// ```
///
/// # Errors
/// As [`maxpool2d`].
pub fn avgpool2d(
    x: &Node,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<Node> {
    build(
        AvgPool2D {
            kernel_size,
            strides,
            padding,
        },
        &[x],
    )
}
