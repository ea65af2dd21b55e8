//! 2-D convolution and transposed convolution with TensorFlow's semantics: NHWC
//! inputs, HWIO kernels, SAME/VALID [`Padding`].
//!
//! Both are lowered to one gemm over patches (`crate::kernels::im2col`):
//!
//! * `conv2d`: `Y = im2col(X) · K`, with `K` viewed as `[kh*kw*Cin, Cout]`; the
//!   `[N*OH*OW, Cout]` product already is the NHWC output.
//! * its backward: `dK = im2col(X)ᵀ · dY` and `dX = col2im(dY · Kᵀ)`.
//! * `conv2d_transpose` is conv2d's input gradient, so the same kernels serve
//!   with roles swapped: `Y = col2im(X · Kᵀ)`, `dX = im2col(dY) · K`,
//!   `dK = im2col(dY)ᵀ · X`.
//!
//! A 1x1, stride-1 convolution skips im2col and col2im: its input already is
//! the patch matrix.
//!
//! A batch large enough (`conv_blocks::images_per_block`) is lowered a block
//! of whole images at a time (`crate::kernels::conv_blocks`): each block's
//! patches are still in cache when its gemm reads them, and the backward
//! rebuilds them block by block for `dK`, so such a forward keeps nothing
//! (unless its patches are short: see `keeps_patches`).
//! A smaller batch goes whole, and its training forward **keeps** the patch
//! matrix `im2col(X)` for the backward's `dK = im2col(X)ᵀ · dY` (an
//! inference pass, [`RunTime::infer`](crate::RunTime::infer), keeps nothing),
//! in a buffer from a per-thread pool (`crate::kernels::buffer_pool`) that the
//! next step takes again, so a training loop allocates no patch memory after
//! its first step. gemm results are written into fresh, unfilled vectors: no
//! zero fill of memory that is about to be overwritten.

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
use crate::op::{BackwardContext, ForwardContext, Op};
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

/// A convolution's gradients, as computed (row-major, `None` where not
/// wanted), as tensors of the shapes of its input `x` and its kernel.
fn input_and_kernel_grads(
    dx: Option<Vec<f32>>,
    dk: Option<Vec<f32>>,
    x: &Tensor,
    kernel: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let as_tensor = |v: Option<Vec<f32>>, like: &Tensor| {
        v.map(|v| Tensor::from_shape_vec(IxDyn(like.shape()), v))
            .transpose()
    };
    Ok(vec![as_tensor(dx, x)?, as_tensor(dk, kernel)?])
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

/// Patch length up to which a training forward keeps its patch matrix even
/// for a batch in blocks: rebuilding short patches block by block costs more
/// than keeping them. W4's first layer (3x3 over one channel, 9-element
/// patches, a 1.4 MB matrix): its backward 0.38-0.51 -> 0.19-0.23 ms kept
/// (profiles of 3 alternating runs).
const KEEP_PATCHES_UP_TO: usize = 32;

/// Whether conv2d's training forward keeps its patch matrix for the backward
/// (a batch that goes whole, or short patches), rather than the backward
/// rebuilding it block by block.
fn keeps_patches(g: &Window2d) -> bool {
    images_per_block(g).is_none() || g.patch_len() <= KEEP_PATCHES_UP_TO
}

/// conv2d's patch matrix `im2col(X)`, kept by a training forward for the
/// backward's `dK = im2col(X)ᵀ · dY`.
struct Patches(PooledBuffer);

// ---------------------------------------------------------------------------

/// 2-D convolution (cross-correlation, as TensorFlow's `conv2d`) of an NHWC
/// input with an HWIO kernel.
#[derive(Debug, Clone)]
pub struct Conv2D {
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
}

impl Conv2D {
    /// Checks the run-time shapes and returns the geometry and `Cout`.
    fn geometry(&self, x: &Tensor, kernel: &Tensor) -> Result<(Window2d, usize)> {
        check_pair("conv2d strides", self.strides)?;
        let xd = dims4(x, "conv2d input x (NHWC)")?;
        let kd = dims4(kernel, "conv2d kernel (HWIO)")?;
        check_channels("conv2d", Some(xd[3]), Some(kd[2]), 2)?;
        let g = window(xd, [kd[0], kd[1]], self.strides, self.padding)
            .map_err(|e| about("conv2d", e))?;
        Ok((g, kd[3]))
    }
}

impl Op for Conv2D {
    fn type_name(&self) -> &'static str {
        "Conv2D"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let (x, k) = (inputs[0], inputs[1]);
        check_conv_static("conv2d", x, k, self.strides)?;
        check_channels("conv2d", x.dim(3), k.dim(2), 2)?;
        let [oh, ow] = static_spatial(x, [k.dim(0), k.dim(1)], self.strides, self.padding)
            .map_err(|e| about("conv2d", e))?;
        Ok(TensorShape::new(vec![x.dim(0), oh, ow, k.dim(3)]))
    }
    // Y = im2col(X) · K, K viewed as [kh*kw*Cin, Cout]
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (x, kernel) = (inputs[0], inputs[1]);
        let (g, cout) = self.geometry(x, kernel)?;
        let (xs, ks) = (row_major(x), row_major(kernel));
        let kmat = ArrayView2::from_shape((g.patch_len(), cout), &ks[..])?;
        let out = if g.is_pointwise() {
            let xmat = ArrayView2::from_shape((g.output_cells(), g.channels), &xs[..])?;
            gemm_new(xmat, kmat)?
        } else if ctx.is_inference() || !keeps_patches(&g) {
            // (A batch in blocks rebuilds each block's patches for dK.)
            patches_times(&xs, &g, kmat, None)
        } else {
            // Kept for backward's dK (see the module doc).
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
    // dK = im2col(X)ᵀ · dY, dX = col2im(dY · Kᵀ)
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let (x, kernel) = (ctx.input(0), ctx.input(1));
        let (g, cout) = self.geometry(x, kernel)?;
        let (rows, plen) = (g.output_cells(), g.patch_len());
        let (xs, ks, dys) = (row_major(x), row_major(kernel), row_major(grad));
        let kmat = ArrayView2::from_shape((plen, cout), &ks[..])?;
        let dy = ArrayView2::from_shape((rows, cout), &dys[..])?;
        let (want_dx, want_dk) = (ctx.needs_grad(0), ctx.needs_grad(1));
        let (dx, dk) = if g.is_pointwise() {
            let xmat = ArrayView2::from_shape((rows, g.channels), &xs[..])?;
            let dk = want_dk
                .then(|| kernel_grad_gemm(xmat.t(), dy))
                .transpose()?;
            let dx = want_dx.then(|| gemm_new(dy, kmat.t())).transpose()?;
            (dx, dk)
        } else {
            let dk = if !want_dk {
                None
            } else if !keeps_patches(&g) {
                Some(patches_t_times(&xs, &g, dy, None).0)
            } else {
                let Patches(cols) = ctx.saved::<Patches>()?;
                let cmat = ArrayView2::from_shape((rows, plen), &cols[..])?;
                Some(kernel_grad_gemm(cmat.t(), dy)?)
            };
            let dx = want_dx.then(|| col2im_of_product(dy, kmat.t(), &g));
            (dx, dk)
        };
        input_and_kernel_grads(dx, dk, x, kernel)
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
        let (x, k) = (inputs[0], inputs[1]);
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
    // dX = im2col(dY) · K (a conv2d of dY), dK = im2col(dY)ᵀ · X
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let (x, kernel) = (ctx.input(0), ctx.input(1));
        let (g, _) = self.geometry(x, kernel)?;
        let Some(g) = g else {
            return Ok(vec![
                ctx.needs_grad(0).then(|| Tensor::zeros(x.raw_dim())),
                ctx.needs_grad(1).then(|| Tensor::zeros(kernel.raw_dim())),
            ]);
        };
        let (rows, plen, cx) = (g.output_cells(), g.patch_len(), x.shape()[3]);
        let (xs, ks, dys) = (row_major(x), row_major(kernel), row_major(grad));
        let kmat = ArrayView2::from_shape((plen, cx), &ks[..])?;
        let (want_dx, want_dk) = (ctx.needs_grad(0), ctx.needs_grad(1));
        let xmat = ArrayView2::from_shape((rows, cx), &xs[..])?;
        let (dx, dk) = if g.is_pointwise() {
            let dymat = ArrayView2::from_shape((rows, plen), &dys[..])?;
            let dx = want_dx.then(|| gemm_new(dymat, kmat)).transpose()?;
            let dk = want_dk
                .then(|| kernel_grad_gemm(dymat.t(), xmat))
                .transpose()?;
            (dx, dk)
        } else if want_dk {
            let (dk, dx) = patches_t_times(&dys, &g, xmat, want_dx.then_some(kmat));
            (dx, Some(dk))
        } else if want_dx {
            (Some(patches_times(&dys, &g, kmat, None)), None)
        } else {
            (None, None)
        };
        input_and_kernel_grads(dx, dk, x, kernel)
    }
}

/// 2-D convolution of `x` (`[N, H, W, Cin]`) with `kernel` (`[kh, kw, Cin, Cout]`),
/// as TensorFlow's `conv2d`: cross-correlation (the kernel is not flipped),
/// output `[N, OH, OW, Cout]` with OH, OW from `strides` and `padding`
/// (see [`Padding`]). Differentiable w.r.t. both inputs.
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
