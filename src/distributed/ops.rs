//! Graph ops that talk across ranks: [`CrossReplicaSum`] (an allreduce as a
//! node, whose gradient is again one), [`AssignMovingAverage`] (batch norm's
//! moving statistics), [`ChannelCount`] (a rank's values per channel), and
//! [`sync_batch_norm`] built on them.
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
use crate::ops::array::{concat, slice};
use crate::ops::math::rsqrt;
use crate::ops::norm::{fused_batch_norm, BatchNormActivation, BatchNormConfig};
use crate::ops::reduce::reduce_sum;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// The element-wise sum of its input over all ranks (`MPI_Allreduce` with
/// `MPI_SUM`); every rank gets the same value. Build it with [`cross_replica_sum`].
///
/// With `weighted`, rank `r` gets `Σ_s w_s x_s / w_r` instead, `w` being
/// each rank's share of the step's batch ([`Distributed::share`]): the
/// gradient of the plain sum when the ranks' shares differ (see `gradient`).
pub struct CrossReplicaSum {
    /// The ranks summed over (a handle that does not keep MPI running: a
    /// graph can outlive the program's use of MPI).
    pub dist: DistributedRef,
    /// Whether each rank's input is weighted by its share (and the sum
    /// divided by its own).
    pub weighted: bool,
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
        let dist = self.dist.get()?;
        let share = dist.share();
        let mut out = if self.weighted {
            inputs[0].mapv(|v| v * share)
        } else {
            inputs[0].as_standard_layout().into_owned()
        };
        let data = out
            .as_slice_mut()
            .ok_or_else(|| Error::invalid("CrossReplicaSum: output not contiguous"))?;
        dist.all_reduce_sum(data);
        if self.weighted {
            data.iter_mut().for_each(|v| *v /= share);
        }
        Ok(out)
    }

    // Training minimises J = Σ_s w_s L_s (rank s's mean loss weighted by its
    // share), and the optimizer averages the ranks' gradients with the same
    // weights, so each rank's adjoint of a value v is (1/w_r) ∂J/∂v_r. For
    // the plain sum y = Σ_s x_s that gives x̄_s = Σ_r w_r ȳ_r / w_s: the
    // weighted sum of the upstream gradients; for the weighted one, the plain
    // sum. Each is linear and the other's gradient, so derivatives of any
    // order stay allreduces. (Equal shares: both are the plain sum.)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let op = CrossReplicaSum {
            dist: self.dist.clone(),
            weighted: !self.weighted,
        };
        Ok(vec![Some(ctx.add_op(op, &[ctx.grad()])?)])
    }
}

/// `x` summed element-wise over all ranks of `dist`, as a node: forward is an
/// allreduce; the gradient w.r.t. `x` is the allreduce of the upstream
/// gradients, each rank's weighted by its share of the batch (training
/// minimises the ranks' losses weighted by their shares, see
/// [`CrossReplicaSum`]). With one rank it is the identity. The node holds a [`DistributedRef`]: running it after
/// every [`Distributed`] handle was dropped is an error.
///
/// # Errors
/// When `x` is a failed operator node.
pub fn cross_replica_sum(x: &Node, dist: &Distributed) -> Result<Node> {
    x.graph().add_op(
        CrossReplicaSum {
            dist: dist.downgrade(),
            weighted: false,
        },
        &[&x.clone().check()?],
    )
}

/// The number of values per channel in its input `x` (`[.., C]`: all its
/// elements over `C`) on this rank, as a `[1]` tensor: what a synchronised
/// batch norm sums across the ranks to weight each rank's rows. A count,
/// not a function of `x`'s values: it takes no gradient.
pub struct ChannelCount;

impl Op for ChannelCount {
    fn type_name(&self) -> &'static str {
        "ChannelCount"
    }

    // x: [.., C] (rank 1 or more). Output: [1].
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        match inputs {
            [x] if x.rank() > 0 => Ok(TensorShape::known(&[1])),
            [x] => Err(Error::Rank {
                what: "ChannelCount input x".into(),
                expected: "1 or more".into(),
                got: (*x).clone(),
            }),
            _ => Err(Error::invalid(format!(
                "ChannelCount takes 1 input, got {}",
                inputs.len()
            ))),
        }
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        let x = inputs[0];
        let c = x.shape().last().copied().unwrap_or(1).max(1);
        Ok(Tensor::from_elem(vec![1], (x.len() / c) as f32))
    }

    // A count of elements: constant in x's values.
    fn gradient(&self, _ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![None])
    }
}

/// Passes its first input (a batch statistic, `[C]`) through unchanged and
/// sets the variable of its second (the moving statistic, `[C]`) to
/// `decay · moving + (1 - decay) · factor · stat`, `factor = n / (n - 1)`
/// (Bessel's correction, when `bessel`; 1 when `n <= 1`), where `n`, its
/// third input (`[1]`), is the number of values per channel the statistic
/// covers (on all ranks), as [`fused_batch_norm`] updates its moving
/// statistics. The variable takes no gradient, nor does `n`.
pub struct AssignMovingAverage {
    /// The decay, in `[0, 1]`.
    pub decay: f32,
    /// Whether the statistic is a variance (Bessel's correction applies).
    pub bessel: bool,
}

impl Op for AssignMovingAverage {
    fn type_name(&self) -> &'static str {
        "AssignMovingAverage"
    }

    // stat: [C]; moving: [C]; n: [1]. Output: stat's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        let [stat, moving, n] = inputs else {
            return Err(Error::invalid(format!(
                "AssignMovingAverage takes 3 inputs (stat, moving, n), got {}",
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
        if let (Some(c), Some(d)) = (stat.dim(0), moving.dim(0)) {
            if c != d {
                return Err(Error::ShapeMismatch {
                    what: "AssignMovingAverage input moving (one value per channel, as stat)"
                        .into(),
                    expected: TensorShape::known(&[c]),
                    got: (*moving).clone(),
                });
            }
        }
        if n.rank() != 1 || n.dim(0).is_some_and(|d| d != 1) {
            return Err(Error::ShapeMismatch {
                what: "AssignMovingAverage input n (the count of values per channel)".into(),
                expected: TensorShape::known(&[1]),
                got: (*n).clone(),
            });
        }
        Ok((*stat).clone())
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let (stat, moving, count) = (inputs[0], inputs[1], inputs[2]);
        if moving.len() != stat.len() || count.len() != 1 {
            return Err(Error::invalid(format!(
                "AssignMovingAverage: stat {:?} and moving {:?} must agree on the channel \
                 count, and n {:?} must hold one value",
                stat.shape(),
                moving.shape(),
                count.shape()
            )));
        }
        let n = count.iter().next().copied().unwrap_or(0.0);
        if !(n >= 0.0 && n.is_finite()) {
            return Err(Error::invalid(format!(
                "AssignMovingAverage: the count of values per channel must be a finite \
                 number >= 0, got {n}"
            )));
        }
        let n = f64::from(n.round());
        if n > 0.0 {
            let factor = if self.bessel && n > 1.0 {
                n / (n - 1.0)
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
    // and the count take none.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(ctx.grad().clone()), None, None])
    }
}

/// Batch normalization whose statistics span the rows of all ranks
/// (synchronised batch norm, PyTorch's `SyncBatchNorm`): in training mode
/// the per-channel mean is the sum of the ranks' values over the sum of
/// their counts (one [`cross_replica_sum`] of `[C + 1]` values: the sums and
/// the count), the variance likewise about that mean (one more of `[C]`), so
/// that ranks with `B_r` rows each normalise as one process with `Σ B_r` rows,
/// also when the ranks hold different numbers of rows (a batch that does not
/// divide by the number of ranks, an epoch's last batch); the moving
/// statistics are updated from these (Bessel's correction over all the
/// ranks' values). In inference mode it is [`fused_batch_norm`] with the
/// moving statistics (no communication).
///
/// Same inputs and attributes as [`fused_batch_norm`] (`x` `[N, C]` or
/// `[N, H, W, C]`). Built from simple ops and two cross-replica sums, so it
/// has first and second derivatives; the backward makes two more
/// allreduces (the gradients of the sums).
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
    // The moving mean is a variable (checked above): its one dim is known.
    let c = moving_mean.shape().dim(0).ok_or_else(|| {
        Error::invalid("sync_batch_norm: the moving mean's channel count is unknown")
    })?;
    let g = x.graph();
    let count = g.add_op(ChannelCount, &[x])?;
    let sums = cross_replica_sum(
        &concat(&[&reduce_sum(x, axes.clone(), false)?, &count], 0)?,
        dist,
    )?;
    // All ranks' values per channel.
    let total = slice(&sums, &[c], &[1])?;
    let moving = |stat: &Node, var: &Node, bessel: bool| {
        g.add_op(
            AssignMovingAverage {
                decay: config.decay,
                bessel,
            },
            &[stat, var, &total],
        )
    };
    let mean = (slice(&sums, &[0], &[c as isize])? / &total).check()?;
    let mean = moving(&mean, moving_mean, false)?;
    let centred = (x - &mean).check()?;
    let square = (&centred * &centred).check()?;
    let var = (cross_replica_sum(&reduce_sum(&square, axes, false)?, dist)? / &total).check()?;
    let var = moving(&var, moving_variance, true)?;
    let gain = (rsqrt(&(&var + config.epsilon).check()?)? * scale).check()?;
    let y = (&centred * &gain + offset).check()?;
    match config.activation {
        BatchNormActivation::Identity => Ok(y),
        BatchNormActivation::Relu => relu(&y),
        BatchNormActivation::LeakyRelu(alpha) => leaky_relu(&y, alpha),
    }
}
