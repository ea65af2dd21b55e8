//! 2-D max and average pooling over NHWC inputs with TensorFlow's semantics:
//! padding never wins a max, and SAME padding is left out of an average's
//! divisor. The loops are in `crate::kernels::pool`; output size and padding
//! come from the same helper as the convolutions ([`Padding`]).
//!
//! Their gradients are ops of their own, as in TensorFlow: [`MaxPoolGrad`]
//! (the upstream gradient scattered to the arg-max cells, which the forward
//! pool keeps and an inference pass does not: then they are found again) and
//! [`AvgPoolGrad`]. Both are linear in the upstream gradient, so their own
//! gradients are its adjoints: [`MaxPoolGradGrad`] (a gather at the arg-max
//! cells, whose gradient is `MaxPoolGrad` again) and the average pool itself.

use std::borrow::Cow;

use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise::row_major;
use crate::kernels::im2col::Window2d;
use crate::kernels::pool::{
    avg_pool, avg_pool_backward, max_pool, max_pool_backward, max_pool_gather,
};
use crate::op::{ForwardContext, GradientContext, Op};
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

/// The arg-max indices max pooling's forward keeps for [`MaxPoolGrad`].
struct ArgMax(Vec<usize>);

/// The output of `max_pool` over `x` and its arg-max indices.
fn max_pool_with_argmax(x: &Tensor, g: &Window2d) -> (Vec<f32>, Vec<usize>) {
    let len = g.output_cells() * g.channels;
    let (mut out, mut argmax) = (vec![0.0; len], vec![0usize; len]);
    max_pool(&row_major(x), g, &mut out, &mut argmax);
    (out, argmax)
}

/// The arg-max indices the forward max pool node (input `i`) kept, or, when
/// it kept none (an inference pass), computed again from `x`; checked
/// against the geometry.
fn argmax_of<'a>(ctx: &ForwardContext<'a>, i: usize, x: &Tensor, g: &Window2d) -> Cow<'a, [usize]> {
    let len = g.output_cells() * g.channels;
    match ctx.input_saved::<ArgMax>(i) {
        Some(ArgMax(a)) if a.len() == len => Cow::Borrowed(&a[..]),
        _ => Cow::Owned(max_pool_with_argmax(x, g).1),
    }
}

/// Checks that `t` (a gradient) has the pool's output shape.
fn check_pool_output(op: &str, what: &str, t: &Tensor, g: &Window2d) -> Result<()> {
    let want = [g.batch, g.out_h, g.out_w, g.channels];
    if t.shape() == want {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: format!("{op}: {what} (shaped like the pool's output)"),
            expected: TensorShape::known(&want),
            got: TensorShape::known(t.shape()),
        })
    }
}

/// Checks that the static shape of `t` fits the pool's output shape.
fn check_static_pool_output(
    op: &str,
    what: &str,
    t: &TensorShape,
    out: &TensorShape,
) -> Result<()> {
    if t.is_compatible(out) {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: format!("{op}: {what} (shaped like the pool's output)"),
            expected: out.clone(),
            got: t.clone(),
        })
    }
}

/// Splits the inputs of a pool gradient op: `x`, a gradient, and optionally
/// the forward pool node.
fn two_or_three<'a>(
    op: &str,
    inputs: &[&'a TensorShape],
) -> Result<(&'a TensorShape, &'a TensorShape)> {
    match inputs {
        [x, t] | [x, t, _] => Ok((x, t)),
        _ => Err(Error::invalid(format!(
            "{op} takes x, a gradient and an optional forward node, got {} inputs",
            inputs.len()
        ))),
    }
}

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

impl MaxPool2D {
    fn window(&self, op: &str, x: &Tensor) -> Result<Window2d> {
        pool_window(op, x, self.kernel_size, self.strides, self.padding)
    }
    fn shape(&self, op: &str, x: &TensorShape) -> Result<TensorShape> {
        pool_shape(op, x, self.kernel_size, self.strides, self.padding)
    }
}

impl Op for MaxPool2D {
    fn type_name(&self) -> &'static str {
        "MaxPool2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.shape("maxpool2d", inputs[0])
    }
    // Keeps the arg-max of each window for MaxPoolGrad (not in an inference pass).
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let g = self.window("maxpool2d", inputs[0])?;
        let (out, argmax) = max_pool_with_argmax(inputs[0], &g);
        if !ctx.is_inference() {
            ctx.save(ArgMax(argmax));
        }
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, g.channels]),
            out,
        )?)
    }
    // dx[argmax(window)] += dy: each output's gradient goes to the cell that
    // won (MaxPoolGrad, reading the arg-max this node kept)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if !ctx.needs_grad(0) {
            return Ok(vec![None]);
        }
        let op = MaxPoolGrad {
            kernel_size: self.kernel_size,
            strides: self.strides,
            padding: self.padding,
        };
        let dx = ctx.add_op(op, &[ctx.input(0), ctx.grad(), ctx.output()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of [`maxpool2d`] w.r.t. its input (TensorFlow's
/// `MaxPoolGrad`): inputs `x`, `dy` (the gradient of the pool's output) and,
/// optionally, the forward pool node, whose kept arg-max indices it reads
/// (computing them again from `x` when it kept none). Each `dy` goes to the
/// cell of `x` that won its window.
#[derive(Debug, Clone)]
pub struct MaxPoolGrad {
    /// Window size `[kh, kw]` of the pool.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]` of the pool.
    pub strides: [usize; 2],
    /// SAME or VALID, of the pool.
    pub padding: Padding,
}

impl MaxPoolGrad {
    fn pool(&self) -> MaxPool2D {
        MaxPool2D {
            kernel_size: self.kernel_size,
            strides: self.strides,
            padding: self.padding,
        }
    }
}

impl Op for MaxPoolGrad {
    fn type_name(&self) -> &'static str {
        "MaxPoolGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let op = "maxpool2d_grad";
        let (x, dy) = two_or_three(op, inputs)?;
        let out = self.pool().shape(op, x)?;
        check_static_pool_output(op, "dy", dy, &out)?;
        Ok(x.clone())
    }
    // dx[argmax(window)] += dy
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let op = "maxpool2d_grad";
        let (x, dy) = (inputs[0], inputs[1]);
        let g = self.pool().window(op, x)?;
        check_pool_output(op, "dy", dy, &g)?;
        let argmax = argmax_of(ctx, 2, x, &g);
        let mut dx = vec![0.0; g.input_len()];
        max_pool_backward(&row_major(dy), &argmax, &g, &mut dx);
        Ok(Tensor::from_shape_vec(IxDyn(x.shape()), dx)?)
    }
    // Linear in dy (a scatter to the arg-max cells), whose adjoint is the
    // gather d dy = G[argmax]; piecewise constant in x: no gradient
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let mut grads = vec![None; ctx.inputs().len()];
        if ctx.needs_grad(1) {
            let op = MaxPoolGradGrad {
                kernel_size: self.kernel_size,
                strides: self.strides,
                padding: self.padding,
            };
            let mut args = vec![ctx.input(0), ctx.grad()];
            args.extend(ctx.inputs().get(2));
            grads[1] = Some(ctx.add_op(op, &args)?);
        }
        Ok(grads)
    }
}

/// The gradient of [`MaxPoolGrad`] w.r.t. its `dy`: inputs `x`, `g` (shaped
/// like `x`) and, optionally, the forward pool node; result `g` at the
/// arg-max cell of each window, shaped like the pool's output.
#[derive(Debug, Clone)]
pub struct MaxPoolGradGrad {
    /// Window size `[kh, kw]` of the pool.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]` of the pool.
    pub strides: [usize; 2],
    /// SAME or VALID, of the pool.
    pub padding: Padding,
}

impl MaxPoolGradGrad {
    fn pool(&self) -> MaxPool2D {
        MaxPool2D {
            kernel_size: self.kernel_size,
            strides: self.strides,
            padding: self.padding,
        }
    }
}

impl Op for MaxPoolGradGrad {
    fn type_name(&self) -> &'static str {
        "MaxPoolGradGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let op = "maxpool2d_grad_grad";
        let (x, g) = two_or_three(op, inputs)?;
        if !g.is_compatible(x) {
            return Err(Error::ShapeMismatch {
                what: format!("{op}: g (shaped like the pool's input)"),
                expected: x.clone(),
                got: g.clone(),
            });
        }
        self.pool().shape(op, x)
    }
    // y[i] = g[argmax[i]]
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let op = "maxpool2d_grad_grad";
        let (x, g_in) = (inputs[0], inputs[1]);
        let g = self.pool().window(op, x)?;
        if g_in.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what: format!("{op}: g (shaped like the pool's input)"),
                expected: TensorShape::known(x.shape()),
                got: TensorShape::known(g_in.shape()),
            });
        }
        let argmax = argmax_of(ctx, 2, x, &g);
        let mut out = vec![0.0; g.output_cells() * g.channels];
        max_pool_gather(&row_major(g_in), &argmax, &g, &mut out);
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, g.channels]),
            out,
        )?)
    }
    // Linear in g (a gather at the arg-max cells), whose adjoint is the
    // scatter MaxPoolGrad; piecewise constant in x: no gradient
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let mut grads = vec![None; ctx.inputs().len()];
        if ctx.needs_grad(1) {
            let op = MaxPoolGrad {
                kernel_size: self.kernel_size,
                strides: self.strides,
                padding: self.padding,
            };
            let mut args = vec![ctx.input(0), ctx.grad()];
            args.extend(ctx.inputs().get(2));
            grads[1] = Some(ctx.add_op(op, &args)?);
        }
        Ok(grads)
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

impl AvgPool2D {
    fn window(&self, op: &str, x: &Tensor) -> Result<Window2d> {
        pool_window(op, x, self.kernel_size, self.strides, self.padding)
    }
    fn shape(&self, op: &str, x: &TensorShape) -> Result<TensorShape> {
        pool_shape(op, x, self.kernel_size, self.strides, self.padding)
    }
}

impl Op for AvgPool2D {
    fn type_name(&self) -> &'static str {
        "AvgPool2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.shape("avgpool2d", inputs[0])
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let x = inputs[0];
        let g = self.window("avgpool2d", x)?;
        let mut out = vec![0.0; g.output_cells() * g.channels];
        avg_pool(&row_major(x), &g, &mut out);
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, g.channels]),
            out,
        )?)
    }
    // dx[cell] = sum over windows w holding cell of dy[w] / count(w) (AvgPoolGrad)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if !ctx.needs_grad(0) {
            return Ok(vec![None]);
        }
        let op = AvgPoolGrad {
            kernel_size: self.kernel_size,
            strides: self.strides,
            padding: self.padding,
        };
        Ok(vec![Some(ctx.add_op(op, &[ctx.input(0), ctx.grad()])?)])
    }
}

/// The gradient of [`avgpool2d`] w.r.t. its input (TensorFlow's
/// `AvgPoolGrad`): inputs `x_like` (whose value has the pool input's shape;
/// only the shape is read) and `dy` (the gradient of the pool's output).
#[derive(Debug, Clone)]
pub struct AvgPoolGrad {
    /// Window size `[kh, kw]` of the pool.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]` of the pool.
    pub strides: [usize; 2],
    /// SAME or VALID, of the pool.
    pub padding: Padding,
}

impl AvgPoolGrad {
    fn pool(&self) -> AvgPool2D {
        AvgPool2D {
            kernel_size: self.kernel_size,
            strides: self.strides,
            padding: self.padding,
        }
    }
}

impl Op for AvgPoolGrad {
    fn type_name(&self) -> &'static str {
        "AvgPoolGrad"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let op = "avgpool2d_grad";
        let [x, dy] = inputs else {
            return Err(Error::invalid(format!(
                "{op} takes x_like and dy, got {} inputs",
                inputs.len()
            )));
        };
        let out = self.pool().shape(op, x)?;
        check_static_pool_output(op, "dy", dy, &out)?;
        Ok((*x).clone())
    }
    // dx[cell] = sum over windows w holding cell of dy[w] / count(w)
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let op = "avgpool2d_grad";
        let (x, dy) = (inputs[0], inputs[1]);
        let g = self.pool().window(op, x)?;
        check_pool_output(op, "dy", dy, &g)?;
        let mut dx = vec![0.0; g.input_len()];
        avg_pool_backward(&row_major(dy), &g, &mut dx);
        Ok(Tensor::from_shape_vec(IxDyn(x.shape()), dx)?)
    }
    // Linear in dy, the adjoint of the average pool: d dy = avgpool2d(G);
    // x only gives the shape
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let ddy = ctx
            .needs_grad(1)
            .then(|| avgpool2d(ctx.grad(), self.kernel_size, self.strides, self.padding))
            .transpose()?;
        Ok(vec![None, ddy])
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
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` is not rank 4, or
/// [`Error::InvalidArgument`] when a window size or stride is 0 or the window
/// is larger than the input with VALID padding.
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
