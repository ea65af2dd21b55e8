//! Graph ops that talk across ranks: [`CrossReplicaSum`] (an allreduce as a
//! node, whose gradient is again one), [`AssignMovingAverage`] (batch norm's
//! moving statistics), and [`sync_batch_norm`] built on them.
//!
//! A node that communicates runs on every rank at the same point of the same
//! graph: the run time computes nodes in ascending id order, so ranks that
//! build the same graph and run the same targets meet in the same
//! collectives.

use crate::distributed::{Distributed, DistributedRef};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::activation::{leaky_relu, relu};
use crate::ops::math::rsqrt;
use crate::ops::norm::{fused_batch_norm, BatchNormActivation, BatchNormConfig};
use crate::ops::reduce::reduce_mean;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The element-wise sum of its input over all ranks (`MPI_Allreduce` with
/// `MPI_SUM`); every rank gets the same value. Build it with [`cross_replica_sum`].
pub struct CrossReplicaSum {
    /// The ranks summed over (a handle that does not keep MPI running: a
    /// graph can outlive the program's use of MPI).
    pub dist: DistributedRef,
}

impl Op for CrossReplicaSum {
    fn type_name(&self) -> &'static str {
        "CrossReplicaSum"
    }

    // Output: the input's shape (every rank must feed the same shape).
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        match inputs {
            [x] => Ok((*x).clone()),
            _ => Err(Error::invalid(format!(
                "CrossReplicaSum takes 1 input, got {}",
                inputs.len()
            ))),
        }
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let mut out = inputs[0].as_standard_layout().into_owned();
        let data = out
            .as_slice_mut()
            .ok_or_else(|| Error::invalid("CrossReplicaSum: output not contiguous"))?;
        self.dist.get()?.all_reduce_sum(data);
        Ok(out)
    }

    // y = Σ_s x_s, the same on every rank s. Training minimises the sum of the
    // ranks' losses Σ_s L_s (averaged by the optimizer), so
    // dΣL/dx_r = Σ_s dL_s/dy_s = cross_replica_sum(dy): an allreduce of the
    // upstream gradients. It is linear, so its own gradient is again one.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = CrossReplicaSum {
            dist: self.dist.clone(),
        };
        Ok(vec![Some(ctx.add_op(op, &[ctx.grad()])?)])
    }
}

/// `x` summed element-wise over all ranks of `dist`, as a node: forward is an
/// allreduce; the gradient w.r.t. `x` is the allreduce of the upstream
/// gradient (training minimises the sum of the ranks' losses). With one rank
/// it is the identity. The node holds a [`DistributedRef`]: running it after
/// every [`Distributed`] handle was dropped is an error.
///
/// # Errors
/// When `x` is a failed operator node.
pub fn cross_replica_sum(x: &Node, dist: &Distributed) -> Result<Node> {
    x.graph().add_op(
        CrossReplicaSum {
            dist: dist.downgrade(),
        },
        &[&x.clone().check()?],
    )
}

/// Passes its first input (a batch statistic, `[C]`) through unchanged and
/// sets the variable of its second (the moving statistic, `[C]`) to
/// `decay · moving + (1 - decay) · factor · stat`, `factor = n / (n - 1)`
/// (Bessel's correction, when `bessel`; 1 when `n == 1`) with
/// `n = replicas ·` the reduction count of the third input `x` (`[.., C]`:
/// all its elements over `C`), as [`fused_batch_norm`] updates its moving
/// statistics. The variable takes no gradient, nor does `x`.
pub struct AssignMovingAverage {
    /// The decay, in `[0, 1]`.
    pub decay: f32,
    /// Whether the statistic is a variance (Bessel's correction applies).
    pub bessel: bool,
    /// The number of ranks whose rows the statistic covers.
    pub replicas: usize,
}

impl Op for AssignMovingAverage {
    fn type_name(&self) -> &'static str {
        "AssignMovingAverage"
    }

    // stat: [C]; moving: [C]; x: [.., C]. Output: stat's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [stat, moving, x] = inputs else {
            return Err(Error::invalid(format!(
                "AssignMovingAverage takes 3 inputs (stat, moving, x), got {}",
                inputs.len()
            )));
        };
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(Error::invalid(format!(
                "AssignMovingAverage decay must be in [0, 1], got {}",
                self.decay
            )));
        }
        for (name, s) in [("stat", stat), ("moving", moving)] {
            if s.rank() != 1 {
                return Err(Error::Rank {
                    what: format!("AssignMovingAverage input {name}"),
                    expected: "1".into(),
                    got: (*s).clone(),
                });
            }
        }
        if x.rank() == 0 {
            return Err(Error::Rank {
                what: "AssignMovingAverage input x".into(),
                expected: "1 or more".into(),
                got: (*x).clone(),
            });
        }
        let c = x.dim(x.rank() - 1);
        for (name, s) in [("stat", stat), ("moving", moving)] {
            if let (Some(c), Some(d)) = (c, s.dim(0)) {
                if c != d {
                    return Err(Error::ShapeMismatch {
                        what: format!(
                            "AssignMovingAverage input {name} (one value per channel, the last dim of x)"
                        ),
                        expected: TensorShape::known(&[c]),
                        got: (*s).clone(),
                    });
                }
            }
        }
        Ok((*stat).clone())
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (stat, moving, x) = (inputs[0], inputs[1], inputs[2]);
        let c = stat.len();
        if moving.len() != c || x.shape().last() != Some(&c) {
            return Err(Error::invalid(format!(
                "AssignMovingAverage: stat {:?}, moving {:?} and x {:?} must agree on the \
                 channel count",
                stat.shape(),
                moving.shape(),
                x.shape()
            )));
        }
        let n = x.len() / c.max(1) * self.replicas;
        if n > 0 {
            let factor = if self.bessel && n > 1 {
                n as f64 / (n - 1) as f64
            } else {
                1.0
            };
            let decay = f64::from(self.decay);
            let v: Vec<f32> = moving
                .iter()
                .zip(stat.iter())
                .map(|(&m, &b)| {
                    (decay * f64::from(m) + (1.0 - decay) * f64::from(b) * factor) as f32
                })
                .collect();
            ctx.assign_input_variable(1, Tensor::from_shape_vec(moving.raw_dim(), v)?);
        }
        Ok(stat.clone())
    }

    // The output is the statistic itself: d stat = dy. The moving statistic
    // and x (read only for its count) take none.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(ctx.grad().clone()), None, None])
    }
}

/// Batch normalization whose statistics span the rows of all ranks
/// (synchronised batch norm, PyTorch's `SyncBatchNorm`): in training mode
/// the per-channel mean is the mean of the ranks' means (a
/// [`cross_replica_sum`] of `[C]` values), the variance likewise about that
/// mean, so that `N` ranks with `B` rows each normalise as one process with
/// `N·B` rows; the moving statistics are updated from these (Bessel's
/// correction over all `N·B·H·W` values). In inference mode it is
/// [`fused_batch_norm`] with the moving statistics (no communication).
///
/// Same inputs and attributes as [`fused_batch_norm`] (`x` `[N, C]` or
/// `[N, H, W, C]`). Built from simple ops and two cross-replica sums, so it
/// has first and second derivatives; the backward makes two more
/// allreduces of `[C]` values (the gradients of the sums). It assumes
/// every rank holds the same number of rows (the mean of the ranks' means
/// is the global mean only then), as a global batch that divides by the
/// number of ranks gives.
///
/// # Errors
/// As [`fused_batch_norm`]: bad attributes, inputs of the wrong rank or
/// channel count, or moving statistics that are not variables.
pub fn sync_batch_norm(
    x: &Node,
    scale: &Node,
    offset: &Node,
    moving_mean: &Node,
    moving_variance: &Node,
    config: BatchNormConfig,
    dist: &Distributed,
) -> Result<Node> {
    // The checks of the fused op: attributes, ranks, channels, variables.
    let plain = fused_batch_norm(x, scale, offset, moving_mean, moving_variance, config)?;
    if !config.is_training {
        return Ok(plain);
    }
    let rank = x.shape().rank();
    let axes: Vec<usize> = (0..rank - 1).collect();
    let per_rank = 1.0 / dist.size() as f32;
    let g = x.graph();
    let moving = |stat: &Node, var: &Node, bessel: bool| {
        g.add_op(
            AssignMovingAverage {
                decay: config.decay,
                bessel,
                replicas: dist.size(),
            },
            &[stat, var, x],
        )
    };
    let mean =
        (cross_replica_sum(&reduce_mean(x, axes.clone(), false)?, dist)? * per_rank).check()?;
    let mean = moving(&mean, moving_mean, false)?;
    let centred = (x - &mean).check()?;
    let square = (&centred * &centred).check()?;
    let var = (cross_replica_sum(&reduce_mean(&square, axes, false)?, dist)? * per_rank).check()?;
    let var = moving(&var, moving_variance, true)?;
    let gain = (rsqrt(&(&var + config.epsilon).check()?)? * scale).check()?;
    let y = (&centred * &gain + offset).check()?;
    match config.activation {
        BatchNormActivation::Identity => Ok(y),
        BatchNormActivation::Relu => relu(&y),
        BatchNormActivation::LeakyRelu(alpha) => leaky_relu(&y, alpha),
    }
}
