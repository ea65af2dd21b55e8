//! Data-parallel training across processes and machines, on MPI (cargo
//! feature `mpi`).
//!
//! Every process (a *rank*) holds the whole model and takes its own share of
//! each mini-batch; before every update the ranks average their gradients
//! with an allreduce, so that all of them take the same step, the one a
//! single process would take on the whole batch (PyTorch's DDP, Horovod). The
//! processes are started by `mpirun` (or a cluster scheduler: Slurm's `srun`,
//! PBS), which also says how they reach each other (shared memory on one
//! machine, TCP or InfiniBand between machines); see `docs/distributed.md`.
//!
//! - [`Distributed`]: this process's place in the job (rank and size) and the
//!   collectives training needs: variables broadcast from rank 0
//!   ([`Distributed::broadcast_variables`]), gradients averaged in a few large
//!   buffers ([`Distributed::average_gradients`]), a batch's share for this
//!   rank ([`Distributed::shard`]).
//! - [`AveragedOptimizer`]: any [`Optimizer`](crate::optim::Optimizer) whose
//!   updates use the gradients averaged across ranks (Horovod's
//!   `DistributedOptimizer`).
//! - [`ShardedOptimizer`]: an element-wise optimizer (every built-in one)
//!   whose update is split across the ranks (ZeRO stage 1): the gradients
//!   are reduce-scattered, each rank updates its `1/N` of the elements, and
//!   the new values are allgathered; the same bits as averaging, `1/N` of
//!   the update's work and optimizer memory per rank (trainers use it when
//!   [`Distributed::set_shard_optimizer`] is on).
//! - [`Trainer::distributed`](crate::train::Trainer::distributed) does all of
//!   it for a training loop: variables broadcast at the start (and after a
//!   resume, whose checkpoint rank 0 reads and sends to the others), each
//!   rank's share of every global batch, averaged gradients (optionally the
//!   update split across the ranks), loss and metrics
//!   averaged over the ranks, and checkpoints, the progress bar and lines
//!   written by rank 0 only.
//! - Balanced shares, opt-in ([`Distributed::set_balance`], [`RowBalancer`]):
//!   each global batch split in proportion to the ranks' measured speeds, so
//!   that ranks on faster cores do not wait for a slower one in every
//!   allreduce (the same update up to rounding; no longer the same bits).
//! - Batch norm: per-rank statistics by default (as DDP: each rank normalises
//!   its share with its share's statistics), or statistics across all ranks
//!   with [`sync_batch_norm`], built on [`cross_replica_sum`] (an allreduce as
//!   a graph node, whose gradient is again an allreduce).
//!
//! ```no_run
//! use adgraph::{self as ad, distributed::Distributed, train::Trainer};
//! # fn demo(g: &ad::Graph, batches: ad::data::Batches) -> ad::Result<()> {
//! let dist = Distributed::init()?; // a world of 1 when not started by mpirun
//! let trainer = Trainer::new(g)
//!     .optimizer(ad::optim::Adam::new(1e-3))
//!     .data(batches) // the global batch: each of N ranks takes batch / N rows of it
//!     .steps(1000)
//!     .distributed(&dist);
//! # Ok(()) }
//! ```
//!
//! Everything a rank does in a collective must be done by every rank, in the
//! same order: the same graph, the same steps. A rank that fails alone cannot
//! tell the others, which would wait for it forever, so an error inside a
//! distributed [`Trainer`](crate::train::Trainer) run, or a panic anywhere,
//! aborts the whole job ([`Distributed::abort`], `MPI_Abort`) after printing
//! it; a rank that dies is noticed by `mpirun`, which stops the others.
//!
//! MPI starts once per process and stops when the last [`Distributed`]
//! handle is dropped (graph nodes hold a [`DistributedRef`], which does not
//! keep it running: keep a handle while a graph that communicates runs).

mod balance;
mod comm;
mod ops;
mod optimizer;
mod sharded;

pub use balance::RowBalancer;
pub use comm::{CommStats, Distributed, DistributedRef, DEFAULT_BUCKET_BYTES};
pub use ops::{
    cross_replica_sum, sync_batch_norm, AssignMovingAverage, ChannelCount, CrossReplicaSum,
};
pub use optimizer::AveragedOptimizer;
pub(crate) use sharded::data_parallel;
pub use sharded::ShardedOptimizer;
