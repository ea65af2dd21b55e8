//! 2-D convolution and transposed convolution with TensorFlow's semantics: NHWC
//! inputs, HWIO kernels, SAME/VALID [`Padding`].
//!
//! Both are lowered to one gemm over patches (`crate::kernels::im2col`):
//!
//! * `conv2d`: `Y = im2col(X) · K`, with `K` viewed as `[kh*kw*Cin, Cout]`; the
//!   `[N*OH*OW, Cout]` product already is the NHWC output.
//! * its gradients are ops of their own, as in TensorFlow:
//!   [`Conv2DBackpropInput`], `dX = col2im(dY · Kᵀ)`, and
//!   [`Conv2DBackpropFilter`], `dK = im2col(X)ᵀ · dY`. Both are linear in
//!   each input, so their own gradients are convolutions again (second
//!   derivatives to any order).
//! * `conv2d_transpose` is conv2d's input gradient, so the same kernels serve
//!   with roles swapped: `Y = col2im(X · Kᵀ)`, `dX = im2col(dY) · K` (a
//!   conv2d of `dY`), `dK = im2col(dY)ᵀ · X` (the filter gradient with `dY`
//!   as input); with both wanted, the conv2d of `dY` computes `dK` from the
//!   same patches and the filter-gradient node takes it from there.
//!
//! A 1x1, stride-1 convolution skips im2col and col2im: its input already is
//! the patch matrix.
//!
//! A batch large enough (`conv_blocks::images_per_block`) is lowered a block
//! of whole images at a time (`crate::kernels::conv_blocks`): each block's
//! patches are still in cache when its gemm reads them, and the filter
//! gradient rebuilds them block by block for `dK`, so such a forward keeps
//! nothing (unless its patches are short: see `keeps_patches`).
//! A smaller batch goes whole, and its training forward **keeps** the patch
//! matrix `im2col(X)` for the filter gradient `dK = im2col(X)ᵀ · dY` (which
//! takes the forward node as an input and reads it with
//! [`ForwardContext::input_saved`]; an inference pass,
//! [`RunTime::infer`](crate::RunTime::infer), keeps nothing and the filter
//! gradient then rebuilds the patches), in a buffer from a per-thread pool
//! (`crate::kernels::buffer_pool`) that the next step takes again, so a
//! training loop allocates no patch memory after its first step. gemm results
//! are written into fresh, unfilled vectors: no zero fill of memory that is
//! about to be overwritten.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use ndarray::{ArrayView2, IxDyn};

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::buffer_pool::{self, PooledBuffer};
use crate::kernels::conv_blocks::{
    col2im_of_product, images_per_block, patches_t_times, patches_times,
};
use crate::kernels::elementwise::row_major;
use crate::kernels::gemm::{matmul_vec, matmul_vec_split_inner};
use crate::kernels::im2col::Window2d;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// How a sliding window (convolution or pooling) treats the borders, as
/// TensorFlow's `padding` argument.
///
/// For one spatial dim with input size `n`, window `k` and stride `s`:
///
/// * `Same`: `out = ceil(n/s)`; `pad_total = max((out-1)*s + k - n, 0)`, of
///   which `pad_total / 2` goes before and the rest (the odd cell) after.
/// * `Valid`: no padding, `out = (n-k)/s + 1`; the window must fit (`k <= n`).
///
/// ```
/// use adgraph::Padding;
/// assert_eq!(Padding::Same.output_and_pad(5, 4, 2).unwrap(), (3, 1));
/// assert_eq!(Padding::Valid.output_and_pad(5, 4, 2).unwrap(), (1, 0));
/// assert!(Padding::Valid.output_and_pad(3, 4, 1).is_err());
/// assert_eq!("SAME".parse::<Padding>().unwrap(), Padding::Same);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Pad so that `out = ceil(n / stride)` (TensorFlow `"SAME"`).
    Same,
    /// No padding; windows lie inside the input (TensorFlow `"VALID"`).
    Valid,
}

impl Padding {
    /// The output size and the padding before the first cell, for one spatial
    /// dim of input size `n`, window size `k` and stride `s`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `k` or `s` is 0, or when `k > n` with `Valid`.
    pub fn output_and_pad(self, n: usize, k: usize, s: usize) -> Result<(usize, usize)> {
        if k == 0 {
            return Err(Error::invalid("window size must be positive, got 0"));
        }
        if s == 0 {
            return Err(Error::invalid("stride must be positive, got 0"));
        }
        match self {
            Padding::Same => {
                let out = n.div_ceil(s);
                let pad_total = match out {
                    0 => 0,
                    _ => ((out - 1) * s + k).saturating_sub(n),
                };
                Ok((out, pad_total / 2))
            }
            Padding::Valid if k > n => Err(Error::invalid(format!(
                "window size {k} exceeds the input size {n} with VALID padding"
            ))),
            Padding::Valid => Ok(((n - k) / s + 1, 0)),
        }
    }

    /// The output size along one dim from static sizes (`None` = unknown),
    /// checking what is known.
    fn static_output(self, n: Option<usize>, k: Option<usize>, s: usize) -> Result<Option<usize>> {
        match (n, k) {
            (Some(n), Some(k)) => Ok(Some(self.output_and_pad(n, k, s)?.0)),
            // Validate k and s against a size that fits any window.
            (None, Some(k)) => self.output_and_pad(usize::MAX / 2, k, s).map(|_| None),
            (Some(n), None) if self == Padding::Same => Ok(Some(self.output_and_pad(n, 1, s)?.0)),
            _ => Ok(None),
        }
    }

    /// The spatial size of `conv2d_transpose`'s result along one dim, for an
    /// input size `n`, kernel size `k` and stride `s`: `n*s` (`Same`) or
    /// `n*s + max(k-s, 0)` (`Valid`). A conv2d of that size with the same `k`,
    /// `s` and padding has output size `n`.
    ///
    /// ```
    /// use adgraph::Padding;
    /// assert_eq!(Padding::Same.transpose_output(4, 3, 2), 8);
    /// assert_eq!(Padding::Valid.transpose_output(4, 3, 2), 9);
    /// assert_eq!(Padding::Valid.transpose_output(4, 1, 2), 8);
    /// ```
    pub fn transpose_output(self, n: usize, k: usize, s: usize) -> usize {
        match self {
            Padding::Same => n * s,
            Padding::Valid => n * s + k.saturating_sub(s),
        }
    }
}

impl FromStr for Padding {
    type Err = Error;

    /// `"SAME"` or `"VALID"`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SAME" => Ok(Padding::Same),
            "VALID" => Ok(Padding::Valid),
            _ => Err(Error::invalid(format!(
                "padding must be \"SAME\" or \"VALID\", got {s:?}"
            ))),
        }
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Padding::Same => "SAME",
            Padding::Valid => "VALID",
        })
    }
}

// ---------------------------------------------------------------------------
// Shared helpers (also used by the pooling ops).

/// Prefixes an [`Error::InvalidArgument`] message with what it is about.
pub(crate) fn about(what: &str, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
        other => other,
    }
}

/// Checks a `[h, w]` attribute (strides, pool sizes): both positive.
pub(crate) fn check_pair(name: &str, v: [usize; 2]) -> Result<()> {
    if v.contains(&0) {
        return Err(Error::invalid(format!(
            "{name} must be positive, got [{}, {}]",
            v[0], v[1]
        )));
    }
    Ok(())
}

/// Checks that a static shape has rank 4.
pub(crate) fn check_rank4(s: &TensorShape, what: &str) -> Result<()> {
    if s.rank() != 4 {
        return Err(Error::Rank {
            what: what.into(),
            expected: "4".into(),
            got: s.clone(),
        });
    }
    Ok(())
}

/// The dims of a run-time value that must have rank 4.
pub(crate) fn dims4(t: &Tensor, what: &str) -> Result<[usize; 4]> {
    match *t.shape() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::Rank {
            what: what.into(),
            expected: "4".into(),
            got: TensorShape::known(t.shape()),
        }),
    }
}

/// Static output height and width of a window of size `k` over the spatial
/// dims of the NHWC shape `x` (the one place for both, SAME and VALID).
pub(crate) fn static_spatial(
    x: &TensorShape,
    k: [Option<usize>; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<[Option<usize>; 2]> {
    let oh = padding
        .static_output(x.dim(1), k[0], strides[0])
        .map_err(|e| about("height", e))?;
    let ow = padding
        .static_output(x.dim(2), k[1], strides[1])
        .map_err(|e| about("width", e))?;
    Ok([oh, ow])
}

/// The geometry of a `k` window over the NHWC run-time shape `x` (the one place
/// computing output size and padding for conv2d, conv2d_transpose and the pools).
pub(crate) fn window(
    x: [usize; 4],
    k: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<Window2d> {
    let (out_h, pad_top) = padding
        .output_and_pad(x[1], k[0], strides[0])
        .map_err(|e| about("height", e))?;
    let (out_w, pad_left) = padding
        .output_and_pad(x[2], k[1], strides[1])
        .map_err(|e| about("width", e))?;
    Ok(Window2d {
        batch: x[0],
        in_h: x[1],
        in_w: x[2],
        channels: x[3],
        k_h: k[0],
        k_w: k[1],
        stride_h: strides[0],
        stride_w: strides[1],
        pad_top,
        pad_left,
        out_h,
        out_w,
    })
}

/// Checks that `a · b` is defined, naming both shapes.
fn check_gemm(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Result<()> {
    if a.ncols() != b.nrows() {
        return Err(Error::invalid(format!(
            "internal gemm shapes [{}, {}] x [{}, {}] do not agree",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    Ok(())
}

/// `a · b` into a new row-major `Vec` (written once, no zero fill).
fn gemm_new(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<Vec<f32>> {
    check_gemm(&a, &b)?;
    Ok(matmul_vec(a, b))
}

/// `a · b` for a kernel gradient, whose inner dimension (the output cells)
/// is long: split in halves over threads where that pays (see
/// [`matmul_vec_split_inner`]).
fn kernel_grad_gemm(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<Vec<f32>> {
    check_gemm(&a, &b)?;
    Ok(matmul_vec_split_inner(a, b))
}

/// The shape checks common to both convolutions: strides, ranks, kernel size.
fn check_conv_static(
    op: &str,
    x: &TensorShape,
    kernel: &TensorShape,
    strides: [usize; 2],
) -> Result<()> {
    check_pair(&format!("{op} strides"), strides)?;
    check_rank4(x, &format!("{op} input x (NHWC)"))?;
    check_rank4(kernel, &format!("{op} kernel (HWIO)"))?;
    for (i, name) in [(0, "height"), (1, "width")] {
        if kernel.dim(i) == Some(0) {
            return Err(Error::invalid(format!(
                "{op} kernel {name} (dim {i}) must be positive, got 0"
            )));
        }
    }
    Ok(())
}

/// Checks that x's channel dim and the kernel's matching dim agree where known.
fn check_channels(op: &str, x: Option<usize>, k: Option<usize>, k_dim: usize) -> Result<()> {
    match (x, k) {
        (Some(a), Some(b)) if a != b => Err(Error::invalid(format!(
            "{op}: x has {a} channels (dim 3) but the kernel's dim {k_dim} is {b}"
        ))),
        _ => Ok(()),
    }
}

/// The static output shape of a conv2d of `x` with `kernel` (checking both).
fn conv_static_output(
    op: &str,
    x: &TensorShape,
    kernel: &TensorShape,
    strides: [usize; 2],
    padding: Padding,
) -> Result<TensorShape> {
    check_conv_static(op, x, kernel, strides)?;
    check_channels(op, x.dim(3), kernel.dim(2), 2)?;
    let [oh, ow] = static_spatial(x, [kernel.dim(0), kernel.dim(1)], strides, padding)
        .map_err(|e| about(op, e))?;
    Ok(TensorShape::new(vec![x.dim(0), oh, ow, kernel.dim(3)]))
}

/// Checks that the static shape of `what` (an output gradient) fits the
/// output shape `out` of the convolution behind.
fn check_static_like_output(
    op: &str,
    what: &str,
    got: &TensorShape,
    out: &TensorShape,
) -> Result<()> {
    if got.is_compatible(out) {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: format!("{op}: {what} (shaped like the conv2d output)"),
            expected: out.clone(),
            got: got.clone(),
        })
    }
}

/// The run-time geometry of a conv2d of `x` with `kernel`, and `Cout`.
fn conv_geometry(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    strides: [usize; 2],
    padding: Padding,
) -> Result<(Window2d, usize)> {
    check_pair(&format!("{op} strides"), strides)?;
    let xd = dims4(x, &format!("{op} input x (NHWC)"))?;
    let kd = dims4(kernel, &format!("{op} kernel (HWIO)"))?;
    check_channels(op, Some(xd[3]), Some(kd[2]), 2)?;
    let g = window(xd, [kd[0], kd[1]], strides, padding).map_err(|e| about(op, e))?;
    Ok((g, kd[3]))
}

/// Checks that the run-time value of `what` has the conv2d output shape of
/// `g` with `cout` channels.
fn check_like_output(op: &str, what: &str, t: &Tensor, g: &Window2d, cout: usize) -> Result<()> {
    let want = [g.batch, g.out_h, g.out_w, cout];
    if t.shape() == want {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: format!("{op}: {what} (shaped like the conv2d output)"),
            expected: TensorShape::known(&want),
            got: TensorShape::known(t.shape()),
        })
    }
}

/// Patch length up to which a training forward keeps its patch matrix even
/// for a batch in blocks: rebuilding short patches block by block costs more
/// than keeping them. W4's first layer (3x3 over one channel, 9-element
/// patches, a 1.4 MB matrix): its backward 0.38-0.51 -> 0.19-0.23 ms kept
/// (profiles of 3 alternating runs).
const KEEP_PATCHES_UP_TO: usize = 32;

/// Whether conv2d's training forward keeps its patch matrix for the filter
/// gradient (a batch that goes whole, or short patches), rather than the
/// filter gradient rebuilding it block by block.
fn keeps_patches(g: &Window2d) -> bool {
    images_per_block(g).is_none() || g.patch_len() <= KEEP_PATCHES_UP_TO
}

/// conv2d's patch matrix `im2col(X)`, kept by a training forward for
/// [`Conv2DBackpropFilter`]'s `dK = im2col(X)ᵀ · dY`.
struct Patches(PooledBuffer);

/// The filter gradient `im2col(X)ᵀ · V` that a conv2d given a third input `V`
/// computed from the same patches as its output, for the
/// [`Conv2DBackpropFilter`] node that takes it (once).
struct FilterGrad(Cell<Option<Vec<f32>>>);

// ---------------------------------------------------------------------------

/// 2-D convolution (cross-correlation, as TensorFlow's `conv2d`) of an NHWC
/// input with an HWIO kernel.
///
/// Inputs: `x`, `kernel`, and optionally `v`, shaped like the output: then
/// the forward also computes the filter gradient `im2col(x)ᵀ · v` from the
/// same patches and keeps it for a [`Conv2DBackpropFilter`] that takes this
/// node as its fourth input (a transposed convolution's gradient, whose
/// `dX = conv2d(dY, K)` and `dK = im2col(dY)ᵀ · X` share the patches of `dY`).
#[derive(Debug, Clone)]
pub struct Conv2D {
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
}

impl Op for Conv2D {
    fn type_name(&self) -> &'static str {
        "Conv2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (x, k, v) = match inputs {
            [x, k] => (x, k, None),
            [x, k, v] => (x, k, Some(v)),
            _ => {
                return Err(Error::invalid(format!(
                    "conv2d takes x, kernel and an optional v, got {} inputs",
                    inputs.len()
                )))
            }
        };
        let out = conv_static_output("conv2d", x, k, self.strides, self.padding)?;
        match v {
            Some(v) => {
                check_static_like_output("conv2d", "v", v, &out)?;
                Ok(out.merge(v).unwrap_or(out))
            }
            None => Ok(out),
        }
    }
    // Y = im2col(X) · K, K viewed as [kh*kw*Cin, Cout]; with V also
    // im2col(X)ᵀ · V, kept for the filter gradient that reads it
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (x, kernel) = (inputs[0], inputs[1]);
        let (g, cout) = conv_geometry("conv2d", x, kernel, self.strides, self.padding)?;
        let (xs, ks) = (row_major(x), row_major(kernel));
        let kmat = ArrayView2::from_shape((g.patch_len(), cout), &ks[..])?;
        let out = if let Some(v) = inputs.get(2) {
            check_like_output("conv2d", "v", v, &g, cout)?;
            let vs = row_major(v);
            let vmat = ArrayView2::from_shape((g.output_cells(), cout), &vs[..])?;
            let (out, dk) = if g.is_pointwise() {
                let xmat = ArrayView2::from_shape((g.output_cells(), g.channels), &xs[..])?;
                (gemm_new(xmat, kmat)?, kernel_grad_gemm(xmat.t(), vmat)?)
            } else {
                let (dk, out) = patches_t_times(&xs, &g, vmat, Some(kmat));
                let out = out.ok_or_else(|| Error::invalid("conv2d: internal, no output"))?;
                (out, dk)
            };
            ctx.save(FilterGrad(Cell::new(Some(dk))));
            out
        } else if g.is_pointwise() {
            let xmat = ArrayView2::from_shape((g.output_cells(), g.channels), &xs[..])?;
            gemm_new(xmat, kmat)?
        } else if ctx.is_inference() || !keeps_patches(&g) {
            // (A batch in blocks rebuilds each block's patches for dK.)
            patches_times(&xs, &g, kmat, None)
        } else {
            // Kept for the filter gradient (see the module doc).
            let mut cols = buffer_pool::take(g.output_cells() * g.patch_len());
            let out = patches_times(&xs, &g, kmat, Some(&mut cols));
            ctx.save(Patches(cols));
            out
        };
        Ok(Tensor::from_shape_vec(
            IxDyn(&[g.batch, g.out_h, g.out_w, cout]),
            out,
        )?)
    }
    // dX = col2im(dY · Kᵀ) (Conv2DBackpropInput), dK = im2col(X)ᵀ · dY
    // (Conv2DBackpropFilter, reading the patches this node kept); none for V
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, k, dy) = (ctx.input(0), ctx.input(1), ctx.grad());
        let (strides, padding) = (self.strides, self.padding);
        let dx = ctx
            .needs_grad(0)
            .then(|| ctx.add_op(Conv2DBackpropInput { strides, padding }, &[x, k, dy]))
            .transpose()?;
        let dk = if ctx.needs_grad(1) {
            let mut args = vec![x, k, dy];
            // With V, what this node keeps is im2col(X)ᵀ · V, not this dK.
            if ctx.inputs().len() == 2 {
                args.push(ctx.output());
            }
            Some(ctx.add_op(Conv2DBackpropFilter { strides, padding }, &args)?)
        } else {
            None
        };
        let mut grads = vec![dx, dk];
        grads.resize(ctx.inputs().len(), None);
        Ok(grads)
    }
}

/// The gradient of [`conv2d`] w.r.t. its input, as TensorFlow's
/// `Conv2DBackpropInput`: inputs `x_like` (whose value has the shape of the
/// conv2d's input; only its shape is read), `kernel` and `dy` (the gradient of
/// the conv2d's output); result `dX = col2im(dY · Kᵀ)`, shaped like `x_like`.
#[derive(Debug, Clone)]
pub struct Conv2DBackpropInput {
    /// `[stride_h, stride_w]` of the conv2d.
    pub strides: [usize; 2],
    /// SAME or VALID, of the conv2d.
    pub padding: Padding,
}

impl Op for Conv2DBackpropInput {
    fn type_name(&self) -> &'static str {
        "Conv2DBackpropInput"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let op = "conv2d_backprop_input";
        let [like, k, dy] = inputs else {
            return Err(Error::invalid(format!(
                "{op} takes x_like, kernel and dy, got {} inputs",
                inputs.len()
            )));
        };
        let out = conv_static_output(op, like, k, self.strides, self.padding)?;
        check_static_like_output(op, "dy", dy, &out)?;
        Ok(TensorShape::new(vec![
            like.dim(0).or(dy.dim(0)),
            like.dim(1),
            like.dim(2),
            like.dim(3).or(k.dim(2)),
        ]))
    }
    // dX = col2im(dY · Kᵀ), K viewed as [kh*kw*Cin, Cout]
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let op = "conv2d_backprop_input";
        let (like, kernel, dy) = (inputs[0], inputs[1], inputs[2]);
        let (g, cout) = conv_geometry(op, like, kernel, self.strides, self.padding)?;
        check_like_output(op, "dy", dy, &g, cout)?;
        let (ks, dys) = (row_major(kernel), row_major(dy));
        let kmat = ArrayView2::from_shape((g.patch_len(), cout), &ks[..])?;
        let dymat = ArrayView2::from_shape((g.output_cells(), cout), &dys[..])?;
        let dx = if g.is_pointwise() {
            gemm_new(dymat, kmat.t())?
        } else {
            col2im_of_product(dymat, kmat.t(), &g)
        };
        Ok(Tensor::from_shape_vec(IxDyn(like.shape()), dx)?)
    }
    // dX is linear in K and in dY, <G, dX> = <conv2d(G, K), dY>:
    // dK = im2col(G)ᵀ · dY, d dY = conv2d(G, K)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (k, dy, g) = (ctx.input(1), ctx.input(2), ctx.grad());
        let (strides, padding) = (self.strides, self.padding);
        let dk = ctx
            .needs_grad(1)
            .then(|| ctx.add_op(Conv2DBackpropFilter { strides, padding }, &[g, k, dy]))
            .transpose()?;
        let ddy = ctx
            .needs_grad(2)
            .then(|| conv2d(g, k, strides, padding))
            .transpose()?;
        Ok(vec![None, dk, ddy])
    }
}

/// The gradient of [`conv2d`] w.r.t. its kernel, as TensorFlow's
/// `Conv2DBackpropFilter`: inputs `x` (the conv2d's input), `kernel_like`
/// (whose value has the kernel's shape; only its shape is read) and `dy` (the
/// gradient of the conv2d's output); result `dK = im2col(X)ᵀ · dY`, shaped
/// like `kernel_like`.
///
/// An optional fourth input is the forward conv2d node: its training forward
/// may have kept the patch matrix `im2col(X)` (or, given a third input, the
/// whole product), read here instead of rebuilding it; absent (after an
/// inference pass, or for a batch in blocks), the patches are rebuilt block by
/// block (`crate::kernels::conv_blocks`).
#[derive(Debug, Clone)]
pub struct Conv2DBackpropFilter {
    /// `[stride_h, stride_w]` of the conv2d.
    pub strides: [usize; 2],
    /// SAME or VALID, of the conv2d.
    pub padding: Padding,
}

impl Op for Conv2DBackpropFilter {
    fn type_name(&self) -> &'static str {
        "Conv2DBackpropFilter"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let op = "conv2d_backprop_filter";
        let (x, k, dy) = match inputs {
            [x, k, dy] | [x, k, dy, _] => (x, k, dy),
            _ => {
                return Err(Error::invalid(format!(
                    "{op} takes x, kernel_like, dy and an optional forward node, got {} inputs",
                    inputs.len()
                )))
            }
        };
        let out = conv_static_output(op, x, k, self.strides, self.padding)?;
        check_static_like_output(op, "dy", dy, &out)?;
        Ok(TensorShape::new(vec![
            k.dim(0),
            k.dim(1),
            k.dim(2).or(x.dim(3)),
            k.dim(3).or(dy.dim(3)),
        ]))
    }
    // dK = im2col(X)ᵀ · dY
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let op = "conv2d_backprop_filter";
        let (x, like, dy) = (inputs[0], inputs[1], inputs[2]);
        let (g, cout) = conv_geometry(op, x, like, self.strides, self.padding)?;
        check_like_output(op, "dy", dy, &g, cout)?;
        let (rows, plen) = (g.output_cells(), g.patch_len());
        let dys = row_major(dy);
        let dymat = ArrayView2::from_shape((rows, cout), &dys[..])?;
        let computed = ctx
            .input_saved::<FilterGrad>(3)
            .and_then(|FilterGrad(dk)| dk.take())
            .filter(|dk| dk.len() == plen * cout);
        let dk = if let Some(dk) = computed {
            dk
        } else if g.is_pointwise() {
            let xs = row_major(x);
            let xmat = ArrayView2::from_shape((rows, g.channels), &xs[..])?;
            kernel_grad_gemm(xmat.t(), dymat)?
        } else if let Some(Patches(cols)) = ctx
            .input_saved::<Patches>(3)
            .filter(|Patches(cols)| cols.len() == rows * plen)
        {
            let cmat = ArrayView2::from_shape((rows, plen), &cols[..])?;
            kernel_grad_gemm(cmat.t(), dymat)?
        } else {
            patches_t_times(&row_major(x), &g, dymat, None).0
        };
        Ok(Tensor::from_shape_vec(IxDyn(like.shape()), dk)?)
    }
    // dK is linear in X and in dY, <G, dK> = <conv2d(X, G), dY> =
    // <X, col2im(dY · Gᵀ)>: dX = conv2d_backprop_input(dY, G), d dY = conv2d(X, G)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, dy, g) = (ctx.input(0), ctx.input(2), ctx.grad());
        let (strides, padding) = (self.strides, self.padding);
        let dx = ctx
            .needs_grad(0)
            .then(|| ctx.add_op(Conv2DBackpropInput { strides, padding }, &[x, g, dy]))
            .transpose()?;
        let ddy = ctx
            .needs_grad(2)
            .then(|| conv2d(x, g, strides, padding))
            .transpose()?;
        let mut grads = vec![dx, None, ddy];
        grads.resize(ctx.inputs().len(), None);
        Ok(grads)
    }
}

/// Transposed 2-D convolution (TensorFlow's `conv2d_transpose`): the gradient
/// of [`conv2d`] w.r.t. its input, as an op of its own.
#[derive(Debug, Clone)]
pub struct Conv2DTranspose {
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// SAME or VALID (of the conv2d this op is the input gradient of).
    pub padding: Padding,
}

impl Conv2DTranspose {
    /// Checks the run-time shapes and returns the geometry of the conv2d behind
    /// (its input is this op's result, its output this op's input), or `None`
    /// when `x` has no spatial cells (the result is then all zeros), plus the
    /// result's shape.
    fn geometry(&self, x: &Tensor, kernel: &Tensor) -> Result<(Option<Window2d>, [usize; 4])> {
        check_pair("conv2d_transpose strides", self.strides)?;
        let xd = dims4(x, "conv2d_transpose input x (NHWC)")?;
        let kd = dims4(kernel, "conv2d_transpose kernel (HWIO)")?;
        check_channels("conv2d_transpose", Some(xd[3]), Some(kd[3]), 3)?;
        if kd[0] == 0 || kd[1] == 0 {
            return Err(Error::invalid(format!(
                "conv2d_transpose kernel size must be positive, got [{}, {}]",
                kd[0], kd[1]
            )));
        }
        let [sh, sw] = self.strides;
        let res = [
            xd[0],
            self.padding.transpose_output(xd[1], kd[0], sh),
            self.padding.transpose_output(xd[2], kd[1], sw),
            kd[2],
        ];
        if xd[1] == 0 || xd[2] == 0 {
            return Ok((None, res));
        }
        let g = window(res, [kd[0], kd[1]], self.strides, self.padding)
            .map_err(|e| about("conv2d_transpose", e))?;
        if (g.out_h, g.out_w) != (xd[1], xd[2]) {
            return Err(Error::invalid(format!(
                "conv2d_transpose: internal size mismatch, forward conv of {res:?} gives {}x{}",
                g.out_h, g.out_w
            )));
        }
        Ok((Some(g), res))
    }
}

impl Op for Conv2DTranspose {
    fn type_name(&self) -> &'static str {
        "Conv2DTranspose"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [x, k] = inputs else {
            return Err(Error::invalid(format!(
                "conv2d_transpose takes x and kernel, got {} inputs",
                inputs.len()
            )));
        };
        check_conv_static("conv2d_transpose", x, k, self.strides)?;
        check_channels("conv2d_transpose", x.dim(3), k.dim(3), 3)?;
        let size = |n: Option<usize>, k: Option<usize>, s: usize| match (self.padding, n, k) {
            (Padding::Same, Some(n), _) => Some(n * s),
            (Padding::Valid, Some(n), Some(k)) => Some(self.padding.transpose_output(n, k, s)),
            _ => None,
        };
        Ok(TensorShape::new(vec![
            x.dim(0),
            size(x.dim(1), k.dim(0), self.strides[0]),
            size(x.dim(2), k.dim(1), self.strides[1]),
            k.dim(2),
        ]))
    }
    // Y = col2im(X · Kᵀ), K viewed as [kh*kw*Cres, Cx]
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (x, kernel) = (inputs[0], inputs[1]);
        let (g, res) = self.geometry(x, kernel)?;
        let Some(g) = g else {
            return Ok(Tensor::zeros(IxDyn(&res)));
        };
        let (rows, plen, cx) = (g.output_cells(), g.patch_len(), x.shape()[3]);
        let (xs, ks) = (row_major(x), row_major(kernel));
        let xmat = ArrayView2::from_shape((rows, cx), &xs[..])?;
        let kmat = ArrayView2::from_shape((plen, cx), &ks[..])?;
        let out = if g.is_pointwise() {
            gemm_new(xmat, kmat.t())?
        } else {
            col2im_of_product(xmat, kmat.t(), &g)
        };
        Ok(Tensor::from_shape_vec(IxDyn(&res), out)?)
    }
    // The adjoint of Y = col2im(X · Kᵀ): dX = im2col(dY) · K = conv2d(dY, K),
    // dK = im2col(dY)ᵀ · X (the filter gradient with dY as input, X as
    // output gradient). With both wanted, the conv2d of dY computes dK from
    // the same patches (X its third input) and the filter-gradient node
    // takes it from there.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (x, k, dy) = (ctx.input(0), ctx.input(1), ctx.grad());
        let (strides, padding) = (self.strides, self.padding);
        let conv = Conv2D { strides, padding };
        let filter = Conv2DBackpropFilter { strides, padding };
        Ok(match (ctx.needs_grad(0), ctx.needs_grad(1)) {
            (true, true) => {
                let dx = ctx.add_op(conv, &[dy, k, x])?;
                let dk = ctx.add_op(filter, &[dy, k, x, &dx])?;
                vec![Some(dx), Some(dk)]
            }
            (true, false) => vec![Some(ctx.add_op(conv, &[dy, k])?), None],
            (false, true) => vec![None, Some(ctx.add_op(filter, &[dy, k, x])?)],
            (false, false) => vec![None, None],
        })
    }
}

/// 2-D convolution of `x` (`[N, H, W, Cin]`) with `kernel` (`[kh, kw, Cin, Cout]`),
/// as TensorFlow's `conv2d`: cross-correlation (the kernel is not flipped),
/// output `[N, OH, OW, Cout]` with OH, OW from `strides` and `padding`
/// (see [`Padding`]). Differentiable w.r.t. both inputs, to any order
/// (its gradients are [`conv2d_backprop_input`] and [`conv2d_backprop_filter`]).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 28, 28, 1]);
/// let k = g.placeholder([3, 3, 1, 16]);
/// let y = ad::conv2d(&x, &k, [2, 2], ad::Padding::Same).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 14, 14, 16]);
///
/// // A 2x2 box filter over a 2x3 image, VALID: sums of 2x2 blocks.
/// let x = g.constant((vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 2, 3, 1])).unwrap();
/// let k = g.constant((vec![1.0f32; 4], [2, 2, 1, 1])).unwrap();
/// let y = ad::conv2d(&x, &k, [1, 1], ad::Padding::Valid).unwrap();
/// let v = ad::RunTime::new().forward(&y, &ad::Feed::new()).unwrap().clone();
/// assert_eq!(v.into_raw_vec_and_offset().0, vec![12.0, 16.0]);
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` or `kernel` is not rank 4,
/// or [`Error::InvalidArgument`] when a stride or kernel size is 0, `x`'s
/// channels differ from the kernel's dim 2, or the kernel is larger than the
/// input with VALID padding (at build time where the static dims are known,
/// otherwise when run).
pub fn conv2d(x: &Node, kernel: &Node, strides: [usize; 2], padding: Padding) -> Result<Node> {
    build(Conv2D { strides, padding }, &[x, kernel])
}

/// The gradient of [`conv2d`]`(x, kernel, strides, padding)` w.r.t. `x`, for
/// `dy` the gradient of its output, as TensorFlow's `conv2d_backprop_input`:
/// `x_like` is any node whose value has `x`'s shape (only the shape is read).
/// Shaped like `x`; differentiable w.r.t. `kernel` and `dy`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([1, 5, 5, 2]);
/// let k = g.placeholder([3, 3, 2, 4]);
/// let dy = g.placeholder([1, 3, 3, 4]);
/// let dx = ad::conv2d_backprop_input(&x, &k, &dy, [2, 2], ad::Padding::Same).unwrap();
/// assert_eq!(dx.shape(), ad::shape![1, 5, 5, 2]);
/// ```
///
/// # Errors
/// [`Error::Node`] as [`conv2d`] for `x_like` and `kernel`, or wrapping
/// [`Error::ShapeMismatch`] when `dy` does not have the conv2d's output shape.
pub fn conv2d_backprop_input(
    x_like: &Node,
    kernel: &Node,
    dy: &Node,
    strides: [usize; 2],
    padding: Padding,
) -> Result<Node> {
    build(
        Conv2DBackpropInput { strides, padding },
        &[x_like, kernel, dy],
    )
}

/// The gradient of [`conv2d`]`(x, kernel, strides, padding)` w.r.t. `kernel`,
/// for `dy` the gradient of its output, as TensorFlow's
/// `conv2d_backprop_filter`: `kernel_like` is any node whose value has the
/// kernel's shape (only the shape is read). Shaped like the kernel;
/// differentiable w.r.t. `x` and `dy`.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([1, 5, 5, 2]);
/// let k = g.placeholder([3, 3, 2, 4]);
/// let dy = g.placeholder([1, 3, 3, 4]);
/// let dk = ad::conv2d_backprop_filter(&x, &k, &dy, [2, 2], ad::Padding::Same).unwrap();
/// assert_eq!(dk.shape(), ad::shape![3, 3, 2, 4]);
/// ```
///
/// # Errors
/// As [`conv2d_backprop_input`].
pub fn conv2d_backprop_filter(
    x: &Node,
    kernel_like: &Node,
    dy: &Node,
    strides: [usize; 2],
    padding: Padding,
) -> Result<Node> {
    build(
        Conv2DBackpropFilter { strides, padding },
        &[x, kernel_like, dy],
    )
}

/// Transposed 2-D convolution, as TensorFlow's `conv2d_transpose`: `x` is
/// `[N, H, W, Cx]`, `kernel` is `[kh, kw, Cres, Cx]` (dim 2 = channels of the
/// **result**, dim 3 = channels of `x`), the result is `[N, OH, OW, Cres]` with
/// `OH = H*sh` (SAME) or `H*sh + max(kh - sh, 0)` (VALID), width likewise
/// ([`Padding::transpose_output`]).
///
/// It is the gradient of [`conv2d`] (same kernel, strides and padding) w.r.t.
/// its input, for an input of shape `[N, OH, OW, Cres]`. Differentiable w.r.t.
/// both inputs.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 7, 7, 64]);
/// let k = g.placeholder([3, 3, 32, 64]);
/// let y = ad::conv2d_transpose(&x, &k, [2, 2], ad::Padding::Same).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 14, 14, 32]);
/// let y = ad::conv2d_transpose(&x, &k, [2, 2], ad::Padding::Valid).unwrap();
/// assert_eq!(y.shape(), ad::shape![None, 15, 15, 32]);
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when `x` or `kernel` is not rank 4,
/// or [`Error::InvalidArgument`] when a stride or kernel size is 0 or `x`'s
/// channels differ from the kernel's dim 3.
pub fn conv2d_transpose(
    x: &Node,
    kernel: &Node,
    strides: [usize; 2],
    padding: Padding,
) -> Result<Node> {
    build(Conv2DTranspose { strides, padding }, &[x, kernel])
}
