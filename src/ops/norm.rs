//! Fused batch normalization with TensorFlow's semantics (`FusedBatchNormV3`).
//!
//! `x` is `[N, C]` or `[N, H, W, C]`; it is normalised per channel (the last
//! dim) over every other dim. In training mode the batch statistics are used and
//! the moving statistics (variables) are updated; in inference mode the moving
//! statistics are used and nothing is updated.
//!
//! The kernels view `x` as a row-major `[n, C]` matrix (`n` = the reduction
//! count) and work on whole rows: per-channel sums are one pass over the data
//! (split into row blocks summed in parallel with rayon for large arrays), and
//! the output / input gradient is one more element-wise pass.
//!
//! The gradient is built as nodes (TensorFlow's `FusedBatchNormGrad`): one
//! [`FusedBatchNormGrad`] node per input that takes a gradient (`x`, `scale`,
//! `offset`), all on the same fused kernel. The first of them to need the
//! per-channel sums computes them (one pass over the upstream gradient and
//! `x`) and keeps `dscale` and `doffset`; the others take it as an extra input
//! and read them ([`ForwardContext::input_saved`]), so a training step still
//! makes two passes (sums, then `dx`) as one fused backward did. The batch
//! statistics come from what the forward node saved. Each gradient node's own
//! gradient (second derivatives) is that of the same math written with simple
//! ops, with the plain batch mean and variance (not `tf.nn.moments`'
//! `stop_gradient` mean, whose second derivatives miss the mean's dependence
//! on `x`).

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::elementwise;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Arrays with fewer elements than this are processed on the calling thread.
const PAR_MIN_ELEMENTS: usize = 1 << 16;
/// About this many elements (whole rows) make one parallel task.
const TASK_ELEMENTS: usize = 1 << 14;
/// At most this many partial sums per reduction. Each task of a reduction
/// carries `2c` accumulators, so with wide rows (a dense layer's batch norm:
/// 250 rows of 12,544 channels) one row per task meant 250 partials of 200 KB
/// to allocate and add up in order (W5: 17.6 ms of a 3.1M-element forward).
const MAX_REDUCE_TASKS: usize = 32;

/// Names of the five inputs, for error messages.
const INPUT_NAMES: [&str; 5] = ["x", "scale", "offset", "moving_mean", "moving_variance"];

/// Attributes of [`fused_batch_norm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root (must be finite and `>= 0`).
    pub epsilon: f32,
    /// Decay of the moving statistics, in `[0, 1]`:
    /// `moving' = decay * moving + (1 - decay) * batch`.
    pub decay: f32,
    /// Training mode (batch statistics, moving statistics updated) or
    /// inference mode (moving statistics used, nothing updated).
    pub is_training: bool,
    /// What is applied to the normalised output in the same pass:
    /// [`BatchNormActivation::Relu`] makes the node `relu(batch_norm(x))`.
    pub activation: BatchNormActivation,
}

/// The activation a [`FusedBatchNorm`] node applies to its output (TensorFlow's
/// `FusedBatchNormEx` `activation_mode`).
///
/// `Relu` gives exactly `relu(fused_batch_norm(x, ..))`, and `LeakyRelu(alpha)`
/// exactly `leaky_relu(fused_batch_norm(x, ..), alpha)`, values and gradients
/// bitwise, in one node: the output is written once instead of twice, and the
/// backward applies the activation's derivative while it reads the upstream
/// gradient, with no separate pass over the activations.
///
/// ```
/// use adgraph as ad;
/// use adgraph::init::{Ones, Zeros};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2]);
/// let scale = g.variable(&[2], Ones, true).unwrap();
/// let offset = g.variable(&[2], Zeros, true).unwrap();
/// let mean = g.variable(&[2], Zeros, false).unwrap();
/// let var = g.variable(&[2], Ones, false).unwrap();
/// let config = ad::BatchNormConfig {
///     activation: ad::BatchNormActivation::Relu,
///     ..Default::default()
/// };
/// let y = ad::fused_batch_norm(&x, &scale, &offset, &mean, &var, config).unwrap();
/// let feed = ad::feed! { x => [[1.0, 10.0], [3.0, 30.0]] }.unwrap();
/// let out = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// // normalised: [[-1, -1], [1, 1]] (about), then the relu
/// assert_eq!(out[[0, 0]], 0.0);
/// assert!((out[[1, 1]] - 1.0).abs() < 1e-3);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum BatchNormActivation {
    /// None: the node outputs the normalised values.
    #[default]
    Identity,
    /// `y` where `y > 0`, else 0 (NaN stays NaN); gradient 1 where `y > 0`,
    /// else 0, as [`relu`](crate::relu).
    Relu,
    /// `y` where `y > 0`, else `alpha * y`; gradient 1 where `y > 0`, else
    /// `alpha`, as [`leaky_relu`](crate::leaky_relu). `alpha` must be finite.
    LeakyRelu(f32),
}

impl Default for BatchNormConfig {
    /// `epsilon` 1e-3, `decay` 0.99, training mode, no activation.
    fn default() -> Self {
        BatchNormConfig {
            epsilon: 1e-3,
            decay: 0.99,
            is_training: true,
            activation: BatchNormActivation::Identity,
        }
    }
}

impl BatchNormConfig {
    fn validate(&self) -> Result<()> {
        if let BatchNormActivation::LeakyRelu(alpha) = self.activation {
            if !alpha.is_finite() {
                return Err(Error::invalid(format!(
                    "fused_batch_norm leaky relu alpha must be finite, got {alpha}"
                )));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::invalid(format!(
                "fused_batch_norm epsilon must be finite and >= 0, got {}",
                self.epsilon
            )));
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(Error::invalid(format!(
                "fused_batch_norm decay must be in [0, 1], got {}",
                self.decay
            )));
        }
        Ok(())
    }
}

/// Fused batch normalization; inputs `x, scale, offset, moving_mean, moving_variance`.
///
/// Build it with [`fused_batch_norm`], which also checks that the moving
/// statistics are variables in training mode.
pub struct FusedBatchNorm {
    /// The attributes.
    pub config: BatchNormConfig,
}

/// Per-channel statistics used by forward, kept for the gradient nodes:
/// `xhat = (x - mean) * inv_std`.
#[derive(Clone)]
struct BnSaved {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Op for FusedBatchNorm {
    fn type_name(&self) -> &'static str {
        "FusedBatchNorm"
    }

    // x: rank 2 or 4, [.., C]; the other four: [C]. Output: x's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.config.validate()?;
        check_input_count(inputs.len())?;
        let x = inputs[0];
        let rank = x.rank();
        if rank != 2 && rank != 4 {
            return Err(Error::Rank {
                what: "fused_batch_norm input x".into(),
                expected: "2 or 4".into(),
                got: x.clone(),
            });
        }
        let mut channels = x.dim(rank - 1);
        for (name, s) in INPUT_NAMES.iter().zip(inputs).skip(1) {
            if s.rank() != 1 {
                return Err(Error::Rank {
                    what: format!("fused_batch_norm input {name}"),
                    expected: "1".into(),
                    got: (*s).clone(),
                });
            }
            match (channels, s.dim(0)) {
                (Some(c), Some(d)) if c != d => {
                    return Err(Error::ShapeMismatch {
                        what: format!(
                            "fused_batch_norm input {name} (one value per channel, \
                             the last dim of x)"
                        ),
                        expected: TensorShape::known(&[c]),
                        got: (*s).clone(),
                    })
                }
                (None, d) => channels = d,
                _ => {}
            }
        }
        let mut dims = x.dims().to_vec();
        dims[rank - 1] = channels;
        Ok(TensorShape::new(dims))
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (c, n) = runtime_dims(inputs)?;
        let x = inputs[0];
        let xs = x.as_standard_layout();
        let xs = contiguous(xs.as_slice())?;
        let scale = inputs[1];
        let offset = inputs[2];
        let eps = f64::from(self.config.epsilon);

        let stats = if self.config.is_training {
            let (mean, var) = moments(xs, c, n);
            if n > 0 {
                // moving' = decay*moving + (1-decay)*batch, with the Bessel-corrected
                // variance (TF: n/(n-1), and 1 when n == 1).
                let decay = f64::from(self.config.decay);
                let bessel = if n > 1 {
                    n as f64 / (n - 1) as f64
                } else {
                    1.0
                };
                let update = |moving: &Tensor, batch: &[f64], factor: f64| -> Result<Tensor> {
                    let v: Vec<f32> = moving
                        .iter()
                        .zip(batch)
                        .map(|(&m, &b)| (decay * f64::from(m) + (1.0 - decay) * b * factor) as f32)
                        .collect();
                    Ok(Tensor::from_shape_vec(moving.raw_dim(), v)?)
                };
                ctx.assign_input_variable(3, update(inputs[3], &mean, 1.0)?);
                ctx.assign_input_variable(4, update(inputs[4], &var, bessel)?);
            }
            BnSaved {
                mean: mean.iter().map(|&m| m as f32).collect(),
                inv_std: inv_std(&var, eps),
            }
        } else {
            moving_statistics(inputs[3], inputs[4], eps)
        };

        // y = (x - mean) * (scale * inv_std) + offset
        let a: Vec<f32> = scale
            .iter()
            .zip(&stats.inv_std)
            .map(|(&s, &i)| s * i)
            .collect();
        let offset: Vec<f32> = offset.iter().copied().collect();
        let affine = Affine {
            mean: &stats.mean,
            inv_std: &stats.inv_std,
            a: &a,
            offset: &offset,
        };
        let out = affine.apply(xs, self.config.activation);
        if self.config.is_training {
            // Small ([C] twice): kept in inference passes too, where a
            // gradient node run in the same pass reads it. (Inference mode's
            // gradient reads the moving statistics themselves.)
            ctx.save(stats);
        }
        Ok(Tensor::from_shape_vec(x.shape().to_vec(), out)?)
    }

    // xhat = (x - mean) * inv_std; g' = dy through the fused activation (at the
    // normalised value). dscale = sum(g' * xhat), doffset = sum(g').
    // Training: dx = scale * inv_std * (g' - mean(g') - xhat * mean(g' * xhat))
    // (the batch mean and variance depend on x); inference: dx = scale * inv_std * g'
    // (TF: the moving statistics are constants). The moving statistics take no gradient.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let training = self.config.is_training;
        // dy, x, scale, offset, then where the statistics come from.
        let mut inputs: Vec<Node> = vec![
            ctx.grad().clone(),
            ctx.input(0).clone(),
            ctx.input(1).clone(),
            ctx.input(2).clone(),
        ];
        if training {
            inputs.push(ctx.output().clone());
        } else {
            inputs.push(ctx.input(3).clone());
            inputs.push(ctx.input(4).clone());
        }
        let mut grads = vec![None; 5];
        // The first node that computes the per-channel sums keeps dscale and
        // doffset; the later ones take it as an extra input and read them.
        let mut sums_from: Option<Node> = None;
        for (k, of) in [
            (0, BatchNormGradOf::X),
            (1, BatchNormGradOf::Scale),
            (2, BatchNormGradOf::Offset),
        ] {
            if !ctx.needs_grad(k) {
                continue;
            }
            let op = FusedBatchNormGrad {
                config: self.config,
                of,
                reuses_sums: sums_from.is_some(),
            };
            let mut args: Vec<&Node> = inputs.iter().collect();
            args.extend(sums_from.as_ref());
            let node = ctx.add_op(op, &args)?;
            // dx computes the sums only in training mode.
            if sums_from.is_none() && (of != BatchNormGradOf::X || training) {
                sums_from = Some(node.clone());
            }
            grads[k] = Some(node);
        }
        Ok(grads)
    }
}

/// Which input of a [`FusedBatchNorm`] a [`FusedBatchNormGrad`] node is the
/// gradient of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchNormGradOf {
    /// `dx`, shaped like `x`.
    X,
    /// `dscale`, `[C]`.
    Scale,
    /// `doffset`, `[C]`.
    Offset,
}

/// The gradient of a [`FusedBatchNorm`] node with respect to one of `x`,
/// `scale` or `offset` (TensorFlow's `FusedBatchNormGrad`, one output per node).
///
/// Inputs: `dy` (the upstream gradient), `x`, `scale`, `offset`, then the
/// statistics: in training mode the forward node itself (whose saved batch
/// mean and `1/sqrt(var + epsilon)` are read; recomputed from `x` when they
/// are not held), in inference mode `moving_mean` and `moving_variance`;
/// then, when `reuses_sums`, the [`FusedBatchNormGrad`] node of the same
/// forward that computed the per-channel sums, whose kept `dscale` and
/// `doffset` are read (recomputed when not held).
///
/// The math is that of [`FusedBatchNorm`]'s gradient (see
/// [`fused_batch_norm`]); the node's own gradient, for second derivatives, is
/// that of the same math written with simple ops (the plain batch mean and
/// variance, so the curvature of the statistics is included).
pub struct FusedBatchNormGrad {
    /// The forward node's attributes.
    pub config: BatchNormConfig,
    /// The input whose gradient this node gives.
    pub of: BatchNormGradOf,
    /// Whether the last input is the gradient node that computed the sums.
    pub reuses_sums: bool,
}

/// `dscale` and `doffset` of one backward, kept by the gradient node that
/// computed the per-channel sums for the others of the same forward.
struct ParamGrads {
    dscale: Vec<f32>,
    doffset: Vec<f32>,
}

impl FusedBatchNormGrad {
    /// Inputs before the optional sums node: dy, x, scale, offset and one
    /// (training: the forward node) or two (inference: the moving statistics).
    fn base_inputs(&self) -> usize {
        if self.config.is_training {
            5
        } else {
            6
        }
    }

    fn check_inputs(&self, n: usize) -> Result<()> {
        let want = self.base_inputs() + usize::from(self.reuses_sums);
        if n != want {
            return Err(Error::invalid(format!(
                "{} takes {want} inputs (dy, x, scale, offset, {}{}), got {n}",
                self.type_name(),
                if self.config.is_training {
                    "the forward node"
                } else {
                    "moving_mean, moving_variance"
                },
                if self.reuses_sums {
                    ", the gradient node with the sums"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// The statistics of the forward: what it saved, or recomputed.
    fn statistics(
        &self,
        inputs: &[&Tensor],
        ctx: &ForwardContext,
        xs: &[f32],
        (c, n): (usize, usize),
    ) -> BnSaved {
        let eps = f64::from(self.config.epsilon);
        if !self.config.is_training {
            return moving_statistics(inputs[4], inputs[5], eps);
        }
        match ctx.input_saved::<BnSaved>(4) {
            Some(saved) if saved.mean.len() == c => saved.clone(),
            _ => {
                let (mean, var) = moments(xs, c, n);
                BnSaved {
                    mean: mean.iter().map(|&m| m as f32).collect(),
                    inv_std: inv_std(&var, eps),
                }
            }
        }
    }

    /// The same math as this node's forward, with simple ops, from nodes
    /// standing for its inputs (second derivatives).
    fn composition(&self, inputs: &[Node]) -> Result<Node> {
        let (dy, x, scale, offset) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
        let graph = x.graph();
        let rank = x.shape().rank();
        let axes: Vec<usize> = (0..rank.saturating_sub(1)).collect();
        let eps = graph.constant(self.config.epsilon)?;
        let (mean, var) = if self.config.is_training {
            // The plain mean (no stop_gradient as in tf.nn.moments): the
            // variance's dependence on x through the mean counts at second order.
            let mean = crate::reduce_mean(x, axes.clone(), false)?;
            let xc = crate::subtract(x, &mean)?;
            let var = crate::reduce_mean(&crate::multiply(&xc, &xc)?, axes.clone(), false)?;
            (mean, var)
        } else {
            // The moving statistics are constants here, as in the first derivative.
            (
                crate::stop_gradient(&inputs[4])?,
                crate::stop_gradient(&inputs[5])?,
            )
        };
        let inv_std = crate::pow(&crate::add(&var, &eps)?, -0.5)?;
        let xhat = crate::multiply(&crate::subtract(x, &mean)?, &inv_std)?;
        let through = match self.config.activation {
            BatchNormActivation::Identity => dy.clone(),
            activation => {
                let pre = crate::add(&crate::multiply(&xhat, scale)?, offset)?;
                build(BatchNormActivationGrad { activation }, &[dy, &pre])?
            }
        };
        match self.of {
            BatchNormGradOf::Offset => crate::reduce_sum(&through, axes, false),
            BatchNormGradOf::Scale => {
                crate::reduce_sum(&crate::multiply(&through, &xhat)?, axes, false)
            }
            BatchNormGradOf::X => {
                let a = crate::multiply(scale, &inv_std)?;
                if !self.config.is_training {
                    return crate::multiply(&through, &a);
                }
                let mean_g = crate::reduce_mean(&through, axes.clone(), false)?;
                let gx = crate::multiply(&through, &xhat)?;
                let mean_gx = crate::reduce_mean(&gx, axes, false)?;
                let centred = crate::subtract(&through, &mean_g)?;
                let inner = crate::subtract(&centred, &crate::multiply(&xhat, &mean_gx)?)?;
                crate::multiply(&inner, &a)
            }
        }
    }
}

impl Op for FusedBatchNormGrad {
    fn type_name(&self) -> &'static str {
        match self.of {
            BatchNormGradOf::X => "FusedBatchNormGrad",
            BatchNormGradOf::Scale => "FusedBatchNormGradScale",
            BatchNormGradOf::Offset => "FusedBatchNormGradOffset",
        }
    }

    // dx: x's shape (and dy's); dscale, doffset: [C].
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.check_inputs(inputs.len())?;
        let stats = if self.config.is_training {
            [inputs[2], inputs[2]]
        } else {
            [inputs[4], inputs[5]]
        };
        let y = FusedBatchNorm {
            config: self.config,
        }
        .infer_shape(&[inputs[1], inputs[2], inputs[3], stats[0], stats[1]])?;
        match self.of {
            BatchNormGradOf::X => y.merge(inputs[0]).ok_or_else(|| Error::ShapeMismatch {
                what: "fused_batch_norm upstream gradient (the shape of x)".into(),
                expected: y.clone(),
                got: inputs[0].clone(),
            }),
            _ => Ok(TensorShape::new(vec![y.dim(y.rank() - 1)])),
        }
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.check_inputs(inputs.len())?;
        let (dy, x) = (inputs[0], inputs[1]);
        let stats = if self.config.is_training {
            [inputs[2], inputs[2]]
        } else {
            [inputs[4], inputs[5]]
        };
        let (c, n) = runtime_dims(&[x, inputs[2], inputs[3], stats[0], stats[1]])?;
        if dy.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what: "fused_batch_norm upstream gradient".into(),
                expected: TensorShape::known(x.shape()),
                got: TensorShape::known(dy.shape()),
            });
        }
        let channel_vec = |v: Vec<f32>| Tensor::from_shape_vec(vec![c], v);
        if self.reuses_sums && self.of != BatchNormGradOf::X {
            if let Some(kept) = ctx.input_saved::<ParamGrads>(self.base_inputs()) {
                let v = match self.of {
                    BatchNormGradOf::Scale => &kept.dscale,
                    _ => &kept.doffset,
                };
                if v.len() == c {
                    return Ok(channel_vec(v.clone())?);
                }
            }
        }
        let xs = x.as_standard_layout();
        let xs = contiguous(xs.as_slice())?;
        let gs = dy.as_standard_layout();
        let gs = contiguous(gs.as_slice())?;
        let stats = self.statistics(inputs, ctx, xs, (c, n));
        let a: Vec<f32> = inputs[2]
            .iter()
            .zip(&stats.inv_std)
            .map(|(&s, &i)| s * i)
            .collect();
        let offset: Vec<f32> = inputs[3].iter().copied().collect();
        let affine = Affine {
            mean: &stats.mean,
            inv_std: &stats.inv_std,
            a: &a,
            offset: &offset,
        };
        let training = self.config.is_training;
        let wants = match self.of {
            BatchNormGradOf::X => Wants {
                sums: training,
                dx: true,
                training,
            },
            _ => Wants {
                sums: true,
                dx: false,
                training,
            },
        };
        let (sums, dx) = affine.backward(gs, xs, (c, n), wants, self.config.activation);
        let mut param = None;
        if let Some((sum_g, sum_gxc)) = sums {
            let dscale: Vec<f32> = sum_gxc
                .iter()
                .zip(&stats.inv_std)
                .map(|(&s, &i)| (s * f64::from(i)) as f32)
                .collect();
            let doffset: Vec<f32> = sum_g.iter().map(|&s| s as f32).collect();
            param = match self.of {
                BatchNormGradOf::X => None,
                BatchNormGradOf::Scale => Some(dscale.clone()),
                BatchNormGradOf::Offset => Some(doffset.clone()),
            };
            // For the other gradient nodes of the same forward.
            ctx.save(ParamGrads { dscale, doffset });
        }
        match (dx, param) {
            (Some(dx), _) => Ok(Tensor::from_shape_vec(x.shape().to_vec(), dx)?),
            (None, Some(v)) => Ok(channel_vec(v)?),
            (None, None) => Err(Error::invalid(format!(
                "{}: nothing computed (a bug)",
                self.type_name()
            ))),
        }
    }

    // The gradient of the same math written with simple ops.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| self.composition(inputs))
    }
}

/// The upstream gradient `g` through a batch norm's fused activation at the
/// normalised (pre-activation) value `y`: `g` where `y > 0`, else 0 (`Relu`)
/// or `alpha * g` (`LeakyRelu`); `g` itself for `Identity`. Inputs `(g, y)`.
///
/// Used by [`FusedBatchNormGrad`]'s gradient (the fused kernel applies the
/// same factor inline). Its gradient w.r.t. `g` is the same mask; `y` takes
/// none (the mask is piecewise constant).
pub struct BatchNormActivationGrad {
    /// The activation whose derivative is applied.
    pub activation: BatchNormActivation,
}

impl Op for BatchNormActivationGrad {
    fn type_name(&self) -> &'static str {
        "BatchNormActivationGrad"
    }

    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [g, y] = inputs else {
            return Err(Error::invalid(format!(
                "BatchNormActivationGrad takes 2 inputs (g, y), got {}",
                inputs.len()
            )));
        };
        g.merge(y).ok_or_else(|| Error::ShapeMismatch {
            what: "BatchNormActivationGrad: g must have the shape of y".into(),
            expected: (*y).clone(),
            got: (*g).clone(),
        })
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let (g, y) = (inputs[0], inputs[1]);
        match self.activation {
            BatchNormActivation::Identity => Ok(g.clone()),
            BatchNormActivation::Relu => elementwise::map2(g, y, |g, y| Relu.grad(y, g)),
            BatchNormActivation::LeakyRelu(alpha) => {
                elementwise::map2(g, y, |g, y| LeakyRelu(alpha).grad(y, g))
            }
        }
    }

    // Linear in g with a mask that is piecewise constant in y:
    // d/dg = the same mask, d/dy = 0 (almost everywhere).
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let dg = ctx
            .needs_grad(0)
            .then(|| {
                ctx.add_op(
                    BatchNormActivationGrad {
                        activation: self.activation,
                    },
                    &[ctx.grad(), ctx.input(1)],
                )
            })
            .transpose()?;
        Ok(vec![dg, None])
    }
}

fn check_input_count(n: usize) -> Result<()> {
    if n != 5 {
        return Err(Error::invalid(format!(
            "fused_batch_norm takes 5 inputs (x, scale, offset, moving_mean, \
             moving_variance), got {n}"
        )));
    }
    Ok(())
}

fn contiguous(s: Option<&[f32]>) -> Result<&[f32]> {
    s.ok_or_else(|| Error::invalid("fused_batch_norm: array is not contiguous"))
}

/// Checks the run-time shapes; returns `(C, n)`: channels and reduction count.
fn runtime_dims(inputs: &[&Tensor]) -> Result<(usize, usize)> {
    check_input_count(inputs.len())?;
    let x = inputs[0].shape();
    let rank = x.len();
    if rank != 2 && rank != 4 {
        return Err(Error::Rank {
            what: "fused_batch_norm input x".into(),
            expected: "2 or 4".into(),
            got: TensorShape::known(x),
        });
    }
    let c = x[rank - 1];
    for (name, s) in INPUT_NAMES.iter().zip(inputs).skip(1) {
        if s.shape() != [c] {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "fused_batch_norm input {name} (one value per channel, the last dim of x)"
                ),
                expected: TensorShape::known(&[c]),
                got: TensorShape::known(s.shape()),
            });
        }
    }
    Ok((c, x[..rank - 1].iter().product()))
}

/// `1 / sqrt(var + eps)` per channel.
fn inv_std(var: &[f64], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
        .collect()
}

/// The statistics of inference mode: the moving mean, and the inverse
/// standard deviation of the moving variance.
fn moving_statistics(moving_mean: &Tensor, moving_variance: &Tensor, eps: f64) -> BnSaved {
    let var: Vec<f64> = moving_variance.iter().map(|&v| f64::from(v)).collect();
    BnSaved {
        mean: moving_mean.iter().copied().collect(),
        inv_std: inv_std(&var, eps),
    }
}

/// Whole rows per parallel task for rows of `c` elements.
fn task_len(c: usize) -> usize {
    (TASK_ELEMENTS / c).max(1) * c
}

/// Folds the row-aligned element ranges of a `[len / c, c]` matrix into
/// per-channel accumulators of `2c` f64s, in parallel for large arrays.
fn reduce_rows(
    len: usize,
    c: usize,
    fold: impl Fn(&mut [f64], Range<usize>) + Sync + Send,
) -> Vec<f64> {
    let mut acc = vec![0.0f64; 2 * c];
    if c == 0 || len == 0 {
        return acc;
    }
    if len < PAR_MIN_ELEMENTS {
        fold(&mut acc, 0..len);
        return acc;
    }
    // Whole rows per task; the split depends on the shape only, never on the
    // thread count.
    let rows_per_task = (len / c).div_ceil(MAX_REDUCE_TASKS);
    let task = task_len(c).max(rows_per_task * c);
    let partials: Vec<Vec<f64>> = (0..len.div_ceil(task))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![0.0f64; 2 * c];
            fold(&mut acc, t * task..((t + 1) * task).min(len));
            acc
        })
        .collect();
    // Added in block order, not in rayon's reduction tree (whose shape depends
    // on the thread count), so the sums do not depend on the number of threads.
    for part in &partials {
        acc.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    acc
}

/// A new `Vec` of `a.len()` elements, filled row by row by
/// `f(out_row, a_row, b_row)` (`b` optional; `b_row` is empty without it), in
/// parallel blocks for large arrays. `f` must write every element of
/// `out_row` (all `c` of them): the vector is not zero-filled first, since
/// every element is about to be overwritten.
fn map_rows(
    a: &[f32],
    b: Option<&[f32]>,
    c: usize,
    f: impl Fn(&mut [MaybeUninit<f32>], &[f32], &[f32]) + Sync + Send,
) -> Vec<f32> {
    let len = a.len();
    if c == 0 || len == 0 {
        return vec![0.0; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    // Row by row, so the channel index is the position in the row.
    let rows = |o: &mut [MaybeUninit<f32>], a: &[f32], b: Option<&[f32]>| match b {
        Some(b) => o
            .chunks_exact_mut(c)
            .zip(a.chunks_exact(c))
            .zip(b.chunks_exact(c))
            .for_each(|((o, a), b)| f(o, a, b)),
        None => o
            .chunks_exact_mut(c)
            .zip(a.chunks_exact(c))
            .for_each(|(o, a)| f(o, a, &[])),
    };
    if len < PAR_MIN_ELEMENTS {
        rows(spare, a, b);
    } else {
        let task = task_len(c);
        let blocks = spare.par_chunks_mut(task).zip(a.par_chunks(task));
        match b {
            Some(b) => blocks
                .zip(b.par_chunks(task))
                .for_each(|((o, a), b)| rows(o, a, Some(b))),
            None => blocks.for_each(|(o, a)| rows(o, a, None)),
        }
    }
    // SAFETY: `len` is a multiple of `c` (callers pass a `[len / c, c]`
    // matrix, `runtime_dims` checks it), so the rows cover all `len` elements,
    // and `f` writes every element of each row.
    unsafe { out.set_len(len) };
    out
}

/// Rows summed in f32 (vectorises twice as wide as f64) before the partial
/// sums are added into the f64 accumulators.
const F32_ROWS: usize = 32;

/// Sums rows of `a` (and `b`, same length, when given) into the `2c` f64
/// accumulators `acc`: `f(p1, p2, row_a, row_b)` adds one row into the f32
/// partial sums `p1`, `p2` (each `c` long), flushed every [`F32_ROWS`] rows.
fn fold_blocks(
    acc: &mut [f64],
    a: &[f32],
    b: Option<&[f32]>,
    c: usize,
    f: impl Fn(&mut [f32], &mut [f32], &[f32], &[f32]),
) {
    let (s1, s2) = acc.split_at_mut(c);
    let mut p = vec![0.0f32; 2 * c];
    let block = F32_ROWS * c;
    for (k, a) in a.chunks(block).enumerate() {
        p.fill(0.0);
        let (p1, p2) = p.split_at_mut(c);
        match b {
            Some(b) => {
                let b = &b[k * block..k * block + a.len()];
                for (ra, rb) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
                    f(p1, p2, ra, rb);
                }
            }
            None => a.chunks_exact(c).for_each(|ra| f(p1, p2, ra, &[])),
        }
        for (s, &p) in s1.iter_mut().zip(&*p1).chain(s2.iter_mut().zip(&*p2)) {
            *s += f64::from(p);
        }
    }
}

/// Per-channel batch mean and biased variance of the `[n, c]` matrix `x`, one
/// pass (f32 partial sums of a few rows, f64 totals), shifted by the first row
/// so that a large mean costs no precision.
fn moments(x: &[f32], c: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 || c == 0 {
        return (vec![0.0; c], vec![0.0; c]);
    }
    let shift = &x[..c];
    let acc = reduce_rows(x.len(), c, |acc, range| {
        fold_blocks(acc, &x[range], None, c, |p1, p2, row, _| {
            for (((&v, &k), p1), p2) in row.iter().zip(shift).zip(p1).zip(p2) {
                let d = v - k;
                *p1 += d;
                *p2 += d * d;
            }
        });
    });
    let nf = n as f64;
    let (s1, s2) = acc.split_at(c);
    let mean = s1
        .iter()
        .zip(shift)
        .map(|(&s, &k)| f64::from(k) + s / nf)
        .collect();
    let var = s1
        .iter()
        .zip(s2)
        .map(|(&s1, &s2)| (s2 / nf - (s1 / nf).powi(2)).max(0.0))
        .collect();
    (mean, var)
}

/// An activation fused into the batch norm: its value and its derivative
/// times an upstream gradient, both at the normalised value `y`. Each is a
/// type of its own so that the row loops are compiled once per activation,
/// with no branch on it inside.
trait Activation: Copy + Send + Sync {
    /// Whether this is the identity (backward then skips recomputing `y`).
    const IDENTITY: bool = false;
    /// The activation of `y`.
    fn value(self, y: f32) -> f32;
    /// `g` times the activation's derivative at `y`.
    fn grad(self, y: f32, g: f32) -> f32;
}

#[derive(Clone, Copy)]
struct Identity;

impl Activation for Identity {
    const IDENTITY: bool = true;
    #[inline(always)]
    fn value(self, y: f32) -> f32 {
        y
    }
    #[inline(always)]
    fn grad(self, _y: f32, g: f32) -> f32 {
        g
    }
}

/// As the `Relu` op: 0 where `y <= 0` (NaN passes), gradient 0 at `y = 0`.
#[derive(Clone, Copy)]
struct Relu;

impl Activation for Relu {
    #[inline(always)]
    fn value(self, y: f32) -> f32 {
        elementwise::relu(y)
    }
    #[inline(always)]
    fn grad(self, y: f32, g: f32) -> f32 {
        elementwise::relu_grad(y, g)
    }
}

/// As the `LeakyRelu` op.
#[derive(Clone, Copy)]
struct LeakyRelu(f32);

impl Activation for LeakyRelu {
    #[inline(always)]
    fn value(self, y: f32) -> f32 {
        elementwise::leaky_relu(self.0, y)
    }
    #[inline(always)]
    fn grad(self, y: f32, g: f32) -> f32 {
        elementwise::leaky_relu_grad(self.0, y, g)
    }
}

/// Per-channel `sum(g')` and `sum(g' * (x - mean))`, in f64.
type ChannelSums = (Vec<f64>, Vec<f64>);

/// What a backward computes: the per-channel sums (for dscale, doffset and
/// the training dx), dx, and whether dx is the training-mode one.
#[derive(Clone, Copy)]
struct Wants {
    sums: bool,
    dx: bool,
    training: bool,
}

/// The per-channel affine map of the forward, `y = (x - mean) * a + offset`
/// (`a = scale * inv_std`). Backward recomputes `y` from `x` with the same
/// operations in the same order, so bitwise the forward's value, rather than
/// reading the output: one pass fewer over the activations.
struct Affine<'a> {
    mean: &'a [f32],
    inv_std: &'a [f32],
    a: &'a [f32],
    offset: &'a [f32],
}

impl Affine<'_> {
    /// `activation(y)` for every row of the `[n, c]` matrix `x`.
    fn apply(&self, x: &[f32], activation: BatchNormActivation) -> Vec<f32> {
        match activation {
            BatchNormActivation::Identity => self.apply_with(x, Identity),
            BatchNormActivation::Relu => self.apply_with(x, Relu),
            BatchNormActivation::LeakyRelu(alpha) => self.apply_with(x, LeakyRelu(alpha)),
        }
    }

    /// `act(y)` for every row of the `[n, c]` matrix `x`.
    fn apply_with<A: Activation>(&self, x: &[f32], act: A) -> Vec<f32> {
        let c = self.mean.len();
        map_rows(x, None, c, |o, x, _| {
            let (m, a, b) = (&self.mean[..c], &self.a[..c], &self.offset[..c]);
            for ((((o, &x), &m), &a), &b) in o.iter_mut().zip(x).zip(m).zip(a).zip(b) {
                o.write(act.value((x - m) * a + b));
            }
        })
    }

    /// The upstream gradient `g` through the activation at `x`'s output.
    #[inline(always)]
    fn through<A: Activation>(act: A, g: f32, x: f32, m: f32, a: f32, b: f32) -> f32 {
        if A::IDENTITY {
            g
        } else {
            act.grad((x - m) * a + b, g)
        }
    }

    /// [`backward_with`](Self::backward_with) for `activation`.
    fn backward(
        &self,
        g: &[f32],
        x: &[f32],
        dims: (usize, usize),
        wants: Wants,
        activation: BatchNormActivation,
    ) -> (Option<ChannelSums>, Option<Vec<f32>>) {
        match activation {
            BatchNormActivation::Identity => self.backward_with(g, x, dims, wants, Identity),
            BatchNormActivation::Relu => self.backward_with(g, x, dims, wants, Relu),
            BatchNormActivation::LeakyRelu(alpha) => {
                self.backward_with(g, x, dims, wants, LeakyRelu(alpha))
            }
        }
    }

    /// The backward of batch norm + `act` for upstream `g` and input `x`
    /// (`[n, c]`, `n` rows of `c` channels): the per-channel `sum(g')` and
    /// `sum(g' * (x - mean))` (`g'` = `g` through the activation) when
    /// `wants.sums`, and dx when `wants.dx`: `(g' - mean(g')) * a - (x - mean) * a * inv_std^2 *
    /// mean(g' * (x - mean))` in training mode (mean and variance depend on
    /// x), `g' * a` in inference mode.
    fn backward_with<A: Activation>(
        &self,
        g: &[f32],
        x: &[f32],
        (c, n): (usize, usize),
        wants: Wants,
        act: A,
    ) -> (Option<ChannelSums>, Option<Vec<f32>>) {
        let (mean, a, offset) = (&self.mean[..c], &self.a[..c], &self.offset[..c]);
        let inv_std = &self.inv_std[..c];
        let sums = wants.sums.then(|| {
            let mut acc = reduce_rows(g.len(), c, |acc, range| {
                fold_blocks(
                    acc,
                    &g[range.clone()],
                    Some(&x[range]),
                    c,
                    |p1, p2, g, x| {
                        let rows = g.iter().zip(x).zip(mean).zip(a).zip(offset);
                        for (((((&g, &x), &m), &a), &b), (p1, p2)) in
                            rows.zip(p1.iter_mut().zip(p2))
                        {
                            let g = Self::through(act, g, x, m, a, b);
                            *p1 += g;
                            *p2 += g * (x - m);
                        }
                    },
                );
            });
            let s2 = acc.split_off(c);
            (acc, s2)
        });
        let dx = wants.dx.then(|| match &sums {
            Some((sum_g, sum_gxc)) if wants.training => {
                let nf = n.max(1) as f64;
                let mg: Vec<f32> = sum_g.iter().map(|&s| (s / nf) as f32).collect();
                let k: Vec<f32> = sum_gxc
                    .iter()
                    .zip(a)
                    .zip(inv_std)
                    .map(|((&s, &a), &i)| (f64::from(a) * f64::from(i).powi(2) * s / nf) as f32)
                    .collect();
                map_rows(g, Some(x), c, |o, g, x| {
                    let rows = g.iter().zip(x).zip(mean).zip(a).zip(offset);
                    for (((((&g, &x), &m), &a), &b), (o, (&mg, &k))) in
                        rows.zip(o.iter_mut().zip(mg.iter().zip(&k)))
                    {
                        let g = Self::through(act, g, x, m, a, b);
                        o.write((g - mg) * a - (x - m) * k);
                    }
                })
            }
            _ if A::IDENTITY => map_rows(g, None, c, |o, g, _| {
                for ((o, &g), &a) in o.iter_mut().zip(g).zip(a) {
                    o.write(g * a);
                }
            }),
            _ => map_rows(g, Some(x), c, |o, g, x| {
                let rows = g.iter().zip(x).zip(mean).zip(a).zip(offset);
                for (((((&g, &x), &m), &a), &b), o) in rows.zip(o.iter_mut()) {
                    o.write(Self::through(act, g, x, m, a, b) * a);
                }
            }),
        });
        (sums, dx)
    }
}

/// Fused batch normalization over every axis but the last, as TensorFlow's
/// `FusedBatchNormV3`.
///
/// `x` is `[N, C]` or `[N, H, W, C]`; `scale`, `offset`, `moving_mean` and
/// `moving_variance` are `[C]`. The output is
/// `y = scale * (x - mean) / sqrt(var + epsilon) + offset`, per channel.
///
/// * **Training** (`config.is_training`): `mean` and `var` are the batch mean
///   and biased variance (divided by the reduction count `n`); gradients w.r.t.
///   `x` include the dependence of the statistics on `x`. After each forward the
///   moving statistics, which must be variables (usually non-trainable), are
///   updated: `moving_mean' = decay*moving_mean + (1-decay)*mean`,
///   `moving_variance' = decay*moving_variance + (1-decay)*var*n/(n-1)`
///   (Bessel-corrected; factor 1 when `n == 1`; no update when `n == 0`).
/// * **Inference**: `mean` and `var` are the moving statistics (any nodes), with
///   no update; gradients as TensorFlow's: `dx = g*scale/sqrt(moving_variance+eps)`,
///   `dscale = sum(g*xhat)`, `doffset = sum(g)`.
///
/// The moving statistics never receive a gradient (of any order). The
/// gradients are [`FusedBatchNormGrad`] nodes, differentiable again (second
/// derivatives include the curvature of the batch statistics in training mode).
///
/// ```
/// use adgraph as ad;
/// use adgraph::init::{Ones, Zeros};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 2]);
/// let scale = g.variable(&[2], Ones, true).unwrap();
/// let offset = g.variable(&[2], Zeros, true).unwrap();
/// let mean = g.variable(&[2], Zeros, false).unwrap();
/// let var = g.variable(&[2], Ones, false).unwrap();
/// let config = ad::BatchNormConfig { decay: 0.5, ..Default::default() };
/// let y = ad::fused_batch_norm(&x, &scale, &offset, &mean, &var, config).unwrap();
///
/// let feed = ad::feed! { x => [[1.0, 10.0], [3.0, 30.0]] }.unwrap();
/// let out = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
/// assert!((out[[0, 0]] + 1.0).abs() < 1e-3 && (out[[1, 1]] - 1.0).abs() < 1e-3);
/// // moving_mean' = 0.5 * 0 + 0.5 * [2, 20]
/// assert_eq!(g.variable_value(&mean).unwrap(), ad::tensor([1.0f32, 10.0]));
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] in training mode when `moving_mean` or
/// `moving_variance` is not a variable; [`Error::Node`] wrapping
/// [`Error::Rank`] when `x` is not rank 2 or 4 or another input is not rank 1,
/// [`Error::ShapeMismatch`] when a `[C]` input does not match the channel dim
/// of `x`, [`Error::InvalidArgument`] for an epsilon that is negative or not
/// finite or a decay outside `[0, 1]`; [`Error::GraphMismatch`].
pub fn fused_batch_norm(
    x: &Node,
    scale: &Node,
    offset: &Node,
    moving_mean: &Node,
    moving_variance: &Node,
    config: BatchNormConfig,
) -> Result<Node> {
    if config.is_training {
        for (what, node) in [
            ("moving_mean", moving_mean),
            ("moving_variance", moving_variance),
        ] {
            let node = node.clone().check()?;
            if node.op_type() != "Variable" {
                return Err(Error::invalid(format!(
                    "fused_batch_norm in training mode updates {what}, so it must be a \
                     variable, but {} is a {}",
                    node.name(),
                    node.op_type()
                )));
            }
        }
    }
    build(
        FusedBatchNorm { config },
        &[x, scale, offset, moving_mean, moving_variance],
    )
}
