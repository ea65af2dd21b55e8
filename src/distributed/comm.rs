//! [`Distributed`]: this process's place in an MPI job, and the collectives
//! data-parallel training uses.
//!
//! Gradients are averaged with `MPI_Allreduce` on two buffers (`sendbuf`,
//! `recvbuf`), not in place: rsmpi 0.8.2 has no `MPI_IN_PLACE`, whose value
//! differs between MPI implementations (Open MPI `(void *) 1`, MPICH
//! `(void *) -1`) and would need a C shim compiled against the system's MPI
//! by a build script. The gradients are separate tensors, so they are copied
//! into one flat buffer anyway (scaled by this rank's share as they are
//! copied) and out of one afterwards: with two buffers that is the same two
//! copies, into the send buffer and out of the receive buffer. What it costs
//! is a second buffer of the model's size, kept from step to step (1.6 MB
//! for the conv net demo), and inside Open MPI one `memcpy` of it.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ndarray::{Axis, Slice};

use crate::distributed::RowBalancer;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;

/// The largest gradient buffer one allreduce takes, in bytes (16 MiB): a model's
/// gradients are packed into as few buffers of at most this size as they fill.
pub const DEFAULT_BUCKET_BYTES: usize = 16 << 20;

/// MPI counts are C `int`s: no collective moves more elements than this.
const MAX_COUNT: usize = i32::MAX as usize;

thread_local! {
    /// The live handle of this process, if any ([`Distributed::init`] returns it again).
    static CURRENT: RefCell<Weak<Inner>> = const { RefCell::new(Weak::new()) };
}

/// The world's size once MPI is up (0 before): the panic hook aborts the job
/// only when there are other ranks to stop.
static WORLD_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Time and volume of the collectives a [`Distributed`] ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Gradient averagings ([`Distributed::average_tensors`] and its users).
    pub averages: u64,
    /// Allreduce calls those made (one per bucket).
    pub gradient_calls: u64,
    /// Bytes of gradients each rank sent into them.
    pub gradient_bytes: u64,
    /// Seconds spent in those allreduce calls, and in the reduce-scatter and
    /// allgather calls of a [`ShardedOptimizer`](crate::distributed::ShardedOptimizer)
    /// (waiting for slower ranks included, unless
    /// [`set_measure_wait`](Distributed::set_measure_wait) takes it apart).
    pub gradient_seconds: f64,
    /// With [`set_measure_wait`](Distributed::set_measure_wait): seconds spent
    /// in a barrier before each gradient communication, waiting for the
    /// slowest rank to be ready (then not counted in `gradient_seconds`).
    pub wait_seconds: f64,
    /// Other collectives (broadcasts, [`cross_replica_sum`](crate::distributed::cross_replica_sum),
    /// loss averaging, checks).
    pub other_calls: u64,
    /// Seconds spent in them.
    pub other_seconds: f64,
}

struct Inner {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Elements of one allreduce of gradients at most.
    bucket_elements: Cell<usize>,
    /// This rank's weight in the next average: its share of the global batch.
    share: Cell<f32>,
    /// Send and receive buffers, kept from call to call.
    buffers: RefCell<(Vec<f32>, Vec<f32>)>,
    /// The last gradient layout every rank was found to share.
    verified_layout: Cell<Option<u64>>,
    /// A barrier before each gradient communication, timed apart.
    measure_wait: Cell<bool>,
    /// Whether trainers split element-wise optimizers' updates across the ranks.
    shard_optimizer: Cell<bool>,
    /// With [`set_balance`](Distributed::set_balance): the speed estimates
    /// that split each global batch.
    balancer: RefCell<Option<RowBalancer>>,
    /// When this rank's share of the current step was handed out ([`shard`](Distributed::shard)).
    step_started: Cell<Option<Instant>>,
    /// Seconds from then to the step's gradient communication.
    step_compute: Cell<Option<f64>>,
    /// Rows each rank took in the current step.
    step_rows: RefCell<Vec<usize>>,
    stats: Cell<CommStats>,
    /// Dropped last: dropping it finalises MPI.
    _universe: Universe,
}

/// This process's place in an MPI job (its rank among `size` ranks) and the
/// collectives of data-parallel training. See the [module docs](crate::distributed).
///
/// A cheap handle: clones share one MPI environment, which ends
/// (`MPI_Finalize`) when the last of them is dropped. Started without
/// `mpirun`, MPI makes a world of one process (rank 0 of 1), in which every
/// collective is a copy.
#[derive(Clone)]
pub struct Distributed {
    inner: Rc<Inner>,
}

/// A handle on this process's MPI job that does not keep MPI running: what
/// graph nodes that communicate ([`CrossReplicaSum`](crate::distributed::CrossReplicaSum))
/// hold, so that MPI stops when the program drops its last [`Distributed`]
/// even if a graph outlives it.
#[derive(Clone)]
pub struct DistributedRef {
    inner: Weak<Inner>,
}

impl DistributedRef {
    /// The job's handle.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when every [`Distributed`] handle was
    /// dropped (MPI has stopped): keep one while the graph runs.
    pub fn get(&self) -> Result<Distributed> {
        self.inner
            .upgrade()
            .map(|inner| Distributed { inner })
            .ok_or_else(|| {
                Error::invalid(
                    "MPI has stopped: every Distributed handle was dropped before this node ran \
                     (keep one while the graph runs)",
                )
            })
    }
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distributed(rank {} of {})", self.rank(), self.size())
    }
}

/// 64-bit FNV-1a of `bytes`, continuing from `hash`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of a list of shapes (and names, when given).
pub(crate) fn layout_hash<'a>(items: impl Iterator<Item = (&'a [usize], Option<String>)>) -> u64 {
    let mut h = FNV_START;
    let mut count = 0u64;
    for (shape, name) in items {
        count += 1;
        h = fnv(h, &(shape.len() as u64).to_le_bytes());
        for &d in shape {
            h = fnv(h, &(d as u64).to_le_bytes());
        }
        if let Some(name) = name {
            h = fnv(h, name.as_bytes());
            h = fnv(h, &[0]);
        }
    }
    fnv(h, &count.to_le_bytes())
}

impl Distributed {
    /// Starts MPI in this process (or returns the handle already started) and
    /// finds this process's rank. Launched by `mpirun -np N` (or `srun`), the
    /// world has N ranks; otherwise it has one.
    ///
    /// It also sets [`train::set_primary`](crate::train::set_primary) (only
    /// rank 0 prints `key=value` lines and draws pictures), and installs a
    /// panic hook that, after the usual message, aborts the whole job when it
    /// has other ranks: a rank that unwound and left would leave the others
    /// waiting in their next collective forever.
    ///
    /// MPI is asked for `MPI_THREAD_FUNNELED`: call every collective from the
    /// thread that called `init` (adgraph's kernels use other threads, never
    /// MPI).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when MPI was initialised in this process by
    /// other code, or already finalised (every handle dropped): MPI starts
    /// once per process.
    pub fn init() -> Result<Distributed> {
        if let Some(inner) = CURRENT.with(|c| c.borrow().upgrade()) {
            return Ok(Distributed { inner });
        }
        if mpi::environment::is_finalized() {
            return Err(Error::invalid(
                "MPI was already finalised in this process (every Distributed handle was \
                 dropped); it can start only once per process",
            ));
        }
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| {
                Error::invalid(
                    "MPI is already initialised in this process, by other code or on another \
                     thread: adgraph::distributed starts it once per process",
                )
            })?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let size = usize::try_from(world.size()).unwrap_or(1).max(1);
        WORLD_SIZE.store(size, Ordering::SeqCst);
        install_panic_hook();
        crate::train::set_primary(rank == 0);
        let inner = Rc::new(Inner {
            world,
            rank,
            size,
            bucket_elements: Cell::new(DEFAULT_BUCKET_BYTES / 4),
            share: Cell::new(1.0 / size as f32),
            buffers: RefCell::new((Vec::new(), Vec::new())),
            verified_layout: Cell::new(None),
            measure_wait: Cell::new(false),
            shard_optimizer: Cell::new(false),
            balancer: RefCell::new(None),
            step_started: Cell::new(None),
            step_compute: Cell::new(None),
            step_rows: RefCell::new(Vec::new()),
            stats: Cell::new(CommStats::default()),
            _universe: universe,
        });
        CURRENT.with(|c| *c.borrow_mut() = Rc::downgrade(&inner));
        Ok(Distributed { inner })
    }

    /// A handle that does not keep MPI running (see [`DistributedRef`]).
    pub fn downgrade(&self) -> DistributedRef {
        DistributedRef {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.inner.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether this is rank 0, the one that writes checkpoints, pictures and
    /// results.
    pub fn is_primary(&self) -> bool {
        self.inner.rank == 0
    }

    /// The name of the machine this rank runs on (`MPI_Get_processor_name`),
    /// `?` when MPI cannot tell.
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string())
    }

    /// Sets the largest buffer of one gradient allreduce, in bytes (at least one
    /// element; default [`DEFAULT_BUCKET_BYTES`]). Every rank must set the same.
    pub fn set_bucket_bytes(&self, bytes: usize) {
        self.inner
            .bucket_elements
            .set((bytes / 4).clamp(1, MAX_COUNT));
    }

    /// What the collectives of this process cost so far.
    pub fn stats(&self) -> CommStats {
        self.inner.stats.get()
    }

    /// Whether to time apart the wait for the slowest rank (default: no):
    /// with it, every gradient communication starts with a barrier, whose
    /// time goes to [`CommStats::wait_seconds`], so that
    /// [`CommStats::gradient_seconds`] is the transfer alone. A diagnostic:
    /// the barrier costs one more small collective per step. Every rank must
    /// set the same.
    pub fn set_measure_wait(&self, on: bool) {
        self.inner.measure_wait.set(on);
    }

    /// Whether a [`Trainer::distributed`](crate::train::Trainer::distributed)
    /// on this handle splits the update of each element-wise optimizer across
    /// the ranks ([`ShardedOptimizer`](crate::distributed::ShardedOptimizer),
    /// ZeRO stage 1: `1/N` of the update's work and of the optimizer's state
    /// per rank) instead of averaging the whole gradient on every rank
    /// ([`AveragedOptimizer`](crate::distributed::AveragedOptimizer), the
    /// default). Set it before the trainer wraps its optimizers
    /// ([`Trainer::distributed`](crate::train::Trainer::distributed) and the
    /// optimizers added after it read it). Every rank must set the same. On
    /// 2 ranks through shared memory the sharded update of the conv net demo
    /// was the slower (see `docs/distributed.md`): it pays when the update or
    /// the optimizer's memory is large against the collectives.
    pub fn set_shard_optimizer(&self, on: bool) {
        self.inner.shard_optimizer.set(on);
    }

    /// See [`set_shard_optimizer`](Distributed::set_shard_optimizer) (default: no).
    pub fn shard_optimizer(&self) -> bool {
        self.inner.shard_optimizer.get()
    }

    /// Turns on or off (default off) splitting each global batch in
    /// proportion to the ranks' speeds ([`RowBalancer`]): [`shard`](Distributed::shard)
    /// gives a rank that computed its rows faster on the last steps more rows,
    /// so that the others wait less for the slowest. The global batch and the
    /// weight of every row in the averaged gradient stay the same, but the
    /// rounding (and per-rank batch norm's statistics) then depend on timing,
    /// so repeated runs are no longer the same bits. Every rank must set the
    /// same; it costs one allreduce of one value per rank each step.
    pub fn set_balance(&self, on: bool) {
        *self.inner.balancer.borrow_mut() = on.then(|| RowBalancer::new(self.inner.size));
        self.inner.step_started.set(None);
    }

    /// Whether [`set_balance`](Distributed::set_balance) is on.
    pub fn balance(&self) -> bool {
        self.inner.balancer.borrow().is_some()
    }

    /// This rank's rows of a global batch of `rows` under balancing: the
    /// last step's compute times are exchanged (one small allreduce) and
    /// recorded, then the batch is split by the speeds.
    fn balanced_rows(&self, rows: usize) -> Result<Range<usize>> {
        let (r, n) = (self.inner.rank, self.inner.size);
        if rows < n {
            return self.rows_of(rows);
        }
        let mut guard = self.inner.balancer.borrow_mut();
        let Some(balancer) = guard.as_mut() else {
            return self.rows_of(rows);
        };
        if self.inner.step_started.get().is_some() {
            let mut seconds = vec![0.0f64; n];
            seconds[r] = self.inner.step_compute.get().unwrap_or(0.0);
            self.all_reduce_sum_f64(&mut seconds);
            balancer.record(&self.inner.step_rows.borrow(), &seconds);
        }
        let split = balancer.split(rows);
        let start: usize = split[..r].iter().sum();
        let range = start..start + split[r];
        *self.inner.step_rows.borrow_mut() = split;
        self.inner.step_compute.set(None);
        self.inner.step_started.set(Some(Instant::now()));
        Ok(range)
    }

    /// Called as a step's gradient communication starts: ends the step's
    /// compute time (for [`set_balance`](Distributed::set_balance)), then the
    /// barrier of [`set_measure_wait`](Distributed::set_measure_wait), timed into `stats`.
    fn gradient_comm_starts(&self, stats: &mut CommStats) {
        if let (Some(t0), None) = (self.inner.step_started.get(), self.inner.step_compute.get()) {
            self.inner
                .step_compute
                .set(Some(t0.elapsed().as_secs_f64()));
        }
        if self.inner.measure_wait.get() {
            let t0 = Instant::now();
            self.inner.world.barrier();
            stats.wait_seconds += t0.elapsed().as_secs_f64();
        }
    }

    /// The sum across ranks of `send` (`size` blocks of `recv.len()`
    /// elements), of which this rank gets block `rank` in `recv`
    /// (`MPI_Reduce_scatter_block`; a copy of block 0 in a world of one).
    /// Counted as gradient communication in [`stats`](Distributed::stats).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `send` is not `size · recv.len()`
    /// elements, or a block exceeds `2^31 - 1` elements.
    pub fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = self.inner.size;
        if send.len() != n * recv.len() || recv.len() > MAX_COUNT {
            return Err(Error::invalid(format!(
                "reduce_scatter_sum: {n} ranks need a send buffer of {n} blocks of the receive \
                 buffer's {} elements (at most 2^31 - 1), got {} elements",
                recv.len(),
                send.len()
            )));
        }
        let mut stats = self.inner.stats.get();
        if n == 1 {
            recv.copy_from_slice(send);
        } else {
            self.gradient_comm_starts(&mut stats);
            let t0 = Instant::now();
            self.inner
                .world
                .reduce_scatter_block_into(send, recv, SystemOperation::sum());
            stats.gradient_seconds += t0.elapsed().as_secs_f64();
            stats.gradient_calls += 1;
            stats.gradient_bytes += 4 * send.len() as u64;
        }
        self.inner.stats.set(stats);
        Ok(())
    }

    /// Every rank's `send`, concatenated in rank order into `recv`
    /// (`MPI_Allgather`; every rank sends as many elements). Counted as
    /// gradient communication in [`stats`](Distributed::stats).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `recv` is not `size · send.len()`
    /// elements, or `send` exceeds `2^31 - 1` elements.
    pub fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = self.inner.size;
        if recv.len() != n * send.len() || send.len() > MAX_COUNT {
            return Err(Error::invalid(format!(
                "all_gather: {n} ranks need a receive buffer of {n} times the send buffer's {} \
                 elements (at most 2^31 - 1), got {} elements",
                send.len(),
                recv.len()
            )));
        }
        if n == 1 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        let mut stats = self.inner.stats.get();
        let t0 = Instant::now();
        self.inner.world.all_gather_into(send, recv);
        stats.gradient_seconds += t0.elapsed().as_secs_f64();
        stats.gradient_calls += 1;
        self.inner.stats.set(stats);
        Ok(())
    }

    /// The largest gradient buffer of one collective, in elements
    /// ([`set_bucket_bytes`](Distributed::set_bucket_bytes) / 4).
    pub fn bucket_elements(&self) -> usize {
        self.inner.bucket_elements.get()
    }

    /// Waits until every rank has called it.
    pub fn barrier(&self) {
        let t0 = Instant::now();
        self.inner.world.barrier();
        self.count_other(t0);
    }

    /// Ends the whole job: every rank's process is stopped with exit code
    /// `code` (`MPI_Abort`). For a failure that the other ranks cannot know
    /// of, which would leave them waiting.
    pub fn abort(&self, code: i32) -> ! {
        self.inner.world.abort(code)
    }

    fn count_other(&self, t0: Instant) {
        let mut s = self.inner.stats.get();
        s.other_calls += 1;
        s.other_seconds += t0.elapsed().as_secs_f64();
        self.inner.stats.set(s);
    }

    /// The rows of a global batch of `rows` that this rank takes:
    /// `rank·rows/size .. (rank+1)·rows/size`, so that the ranks' shares,
    /// in rank order, are the global batch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a rank's share would be empty (fewer
    /// rows than ranks).
    pub fn rows_of(&self, rows: usize) -> Result<Range<usize>> {
        let (r, n) = (self.inner.rank, self.inner.size);
        if rows < n {
            return Err(Error::invalid(format!(
                "a batch of {rows} rows cannot be shared by {n} ranks (each needs at least one \
                 row): use a global batch of at least {n}"
            )));
        }
        Ok(r * rows / n..(r + 1) * rows / n)
    }

    /// Sets this rank's weight in the next gradient average: its share
    /// `rows / global_rows` of the global batch. The average is then
    /// `Σ_r share_r · g_r`, the gradient of the mean loss over the global
    /// batch when each rank's loss is the mean over its rows (also when the
    /// shares differ, as for an epoch's last, smaller batch). Default: `1/size`.
    pub fn set_share(&self, rows: usize, global_rows: usize) {
        let share = if global_rows == 0 {
            1.0 / self.inner.size as f32
        } else {
            rows as f32 / global_rows as f32
        };
        self.inner.share.set(share);
    }

    /// This rank's weight in the next gradient average (see [`set_share`](Distributed::set_share)).
    pub fn share(&self) -> f32 {
        self.inner.share.get()
    }

    /// This rank's rows ([`rows_of`](Distributed::rows_of), or split by the
    /// ranks' speeds with [`set_balance`](Distributed::set_balance)) of a
    /// global batch `(x, y)` (examples along axis 0), and its share of the
    /// batch set as the weight of the next average ([`set_share`](Distributed::set_share)).
    ///
    /// # Errors
    /// As [`rows_of`](Distributed::rows_of); [`Error::InvalidArgument`] when
    /// `x` or `y` is a scalar or they differ in length.
    pub fn shard(&self, x: Tensor, y: Tensor) -> Result<(Tensor, Tensor)> {
        let rows = x.shape().first().copied();
        if rows.is_none() || rows != y.shape().first().copied() {
            return Err(Error::invalid(format!(
                "a batch to share across ranks needs x and y with the same number of rows \
                 (axis 0), got shapes {:?} and {:?}",
                x.shape(),
                y.shape()
            )));
        }
        let rows = rows.unwrap_or(0);
        let range = if self.balance() {
            self.balanced_rows(rows)?
        } else {
            self.rows_of(rows)?
        };
        self.set_share(range.len(), rows);
        if range.len() == rows {
            return Ok((x, y));
        }
        let slice = Slice::from(range);
        Ok((
            x.slice_axis(Axis(0), slice).to_owned(),
            y.slice_axis(Axis(0), slice).to_owned(),
        ))
    }

    /// Checks that every rank has the same `value`; all ranks get the same answer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `what`, this rank's value and the
    /// range of values across the ranks, on every rank, when they differ.
    pub fn check_same(&self, what: &str, value: u64) -> Result<()> {
        if self.inner.size == 1 {
            return Ok(());
        }
        let t0 = Instant::now();
        let send = [value, u64::MAX - value];
        let mut recv = [0u64; 2];
        self.inner
            .world
            .all_reduce_into(&send[..], &mut recv[..], SystemOperation::max());
        self.count_other(t0);
        let (max, min) = (recv[0], u64::MAX - recv[1]);
        if max != min {
            return Err(Error::invalid(format!(
                "the {} ranks disagree on {what}: rank {} has {value}, the values range from \
                 {min} to {max}",
                self.inner.size, self.inner.rank
            )));
        }
        Ok(())
    }

    /// Sums `data` element-wise across the ranks, in place (every rank gets
    /// the same sum): in chunks of at most `2^31 - 1` elements.
    pub fn all_reduce_sum(&self, data: &mut [f32]) {
        if self.inner.size == 1 {
            return;
        }
        let t0 = Instant::now();
        let mut send = Vec::new();
        for chunk in data.chunks_mut(MAX_COUNT) {
            send.clear();
            send.extend_from_slice(chunk);
            self.inner
                .world
                .all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
        self.count_other(t0);
    }

    /// Sums `data` element-wise across the ranks, in place (for small
    /// vectors: losses, metrics, counts).
    pub fn all_reduce_sum_f64(&self, data: &mut [f64]) {
        if self.inner.size == 1 {
            return;
        }
        let t0 = Instant::now();
        for chunk in data.chunks_mut(MAX_COUNT) {
            let send = chunk.to_vec();
            self.inner
                .world
                .all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
        self.count_other(t0);
    }

    /// Rank 0's `bytes`, on every rank (their length first).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        if self.inner.size == 1 {
            return;
        }
        let t0 = Instant::now();
        let root = self.inner.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        for chunk in bytes.chunks_mut(MAX_COUNT) {
            root.broadcast_into(chunk);
        }
        self.count_other(t0);
    }

    /// The contents of the file at `path` as rank 0 reads it, on every rank:
    /// a checkpoint need only be where rank 0 runs.
    ///
    /// # Errors
    /// [`Error::Io`] on every rank when rank 0 cannot read the file (rank 0's
    /// names the reason).
    pub fn broadcast_file(&self, path: &Path) -> Result<Vec<u8>> {
        let read = if self.is_primary() {
            std::fs::read(path).map_err(|e| Error::Io {
                path: path.display().to_string(),
                message: format!("cannot read it: {e}"),
            })
        } else {
            Ok(Vec::new())
        };
        if self.inner.size == 1 {
            return read;
        }
        // The status first (1: read), so that the others fail with rank 0.
        let t0 = Instant::now();
        let mut ok = u8::from(read.is_ok());
        self.inner.world.process_at_rank(0).broadcast_into(&mut ok);
        self.count_other(t0);
        if ok == 0 {
            return match read {
                Err(e) => Err(e),
                Ok(_) => Err(Error::Io {
                    path: path.display().to_string(),
                    message: "rank 0 cannot read it (its error says why)".to_string(),
                }),
            };
        }
        let mut bytes = read?;
        self.broadcast_bytes(&mut bytes);
        Ok(bytes)
    }

    /// Sets every variable of `graph` (trainable or not: batch norm's moving
    /// statistics too) to rank 0's value, so that all ranks start alike.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], on every rank, when the ranks' graphs do
    /// not have the same variables (names and shapes, in the same order);
    /// errors of reading or setting a variable.
    pub fn broadcast_variables(&self, graph: &Graph) -> Result<()> {
        if self.inner.size == 1 {
            return Ok(());
        }
        let vars = graph.variables(false);
        let values: Vec<Tensor> = vars
            .iter()
            .map(|v| graph.variable_value(v))
            .collect::<Result<_>>()?;
        let hash = layout_hash(
            vars.iter()
                .zip(&values)
                .map(|(v, t)| (t.shape(), Some(v.name()))),
        );
        self.check_same(
            "the graph's variables (names and shapes, as a hash): build the same graph on every rank",
            hash,
        )?;
        let total: usize = values.iter().map(Tensor::len).sum();
        let mut buffers = self.inner.buffers.borrow_mut();
        let buf = &mut buffers.0;
        buf.clear();
        if self.is_primary() {
            for t in &values {
                buf.extend(t.iter().copied());
            }
        } else {
            buf.resize(total, 0.0);
        }
        let t0 = Instant::now();
        let root = self.inner.world.process_at_rank(0);
        for chunk in buf.chunks_mut(MAX_COUNT) {
            root.broadcast_into(chunk);
        }
        self.count_other(t0);
        if !self.is_primary() {
            let mut offset = 0;
            for (v, t) in vars.iter().zip(&values) {
                let n = t.len();
                let value =
                    Tensor::from_shape_vec(t.shape().to_vec(), buf[offset..offset + n].to_vec())?;
                graph.set_variable_value(v, value)?;
                offset += n;
            }
        }
        Ok(())
    }

    /// The weighted average across ranks of each tensor,
    /// `Σ_r share_r · t_r` ([`set_share`](Distributed::set_share); by
    /// default the plain mean): the tensors are packed into one flat buffer,
    /// scaled by this rank's share as they are copied, summed by allreduce in
    /// buckets of at most [`set_bucket_bytes`](Distributed::set_bucket_bytes)
    /// (one call for most models), and unpacked into new tensors of the same
    /// shapes. With two ranks the result is the same bits on both, and the
    /// same from run to run.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], on every rank, when the ranks' tensors
    /// differ in number or shapes (checked when the layout changes, with one
    /// small allreduce).
    pub fn average_tensors(&self, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        let hash = layout_hash(tensors.iter().map(|t| (t.shape(), None)));
        if self.inner.verified_layout.get() != Some(hash) {
            self.check_same(
                "the gradients' layout (number of tensors and their shapes, as a hash)",
                hash,
            )?;
            self.inner.verified_layout.set(Some(hash));
        }
        let share = self.inner.share.get();
        let total: usize = tensors.iter().map(|t| t.len()).sum();
        let mut buffers = self.inner.buffers.borrow_mut();
        let (send, recv) = &mut *buffers;
        send.clear();
        send.reserve(total);
        for t in tensors {
            match t.as_slice() {
                Some(s) => send.extend(s.iter().map(|&v| v * share)),
                None => send.extend(t.iter().map(|&v| v * share)),
            }
        }
        recv.resize(total, 0.0);
        let bucket = self.inner.bucket_elements.get().max(1);
        let mut stats = self.inner.stats.get();
        stats.averages += 1;
        if self.inner.size == 1 {
            recv.copy_from_slice(send);
        } else {
            self.gradient_comm_starts(&mut stats);
            let t0 = Instant::now();
            for (s, r) in send.chunks(bucket).zip(recv.chunks_mut(bucket)) {
                self.inner
                    .world
                    .all_reduce_into(s, r, SystemOperation::sum());
                stats.gradient_calls += 1;
            }
            stats.gradient_seconds += t0.elapsed().as_secs_f64();
            stats.gradient_bytes += 4 * total as u64;
        }
        self.inner.stats.set(stats);
        let mut out = Vec::with_capacity(tensors.len());
        let mut offset = 0;
        for t in tensors {
            let n = t.len();
            out.push(Tensor::from_shape_vec(
                t.shape().to_vec(),
                recv[offset..offset + n].to_vec(),
            )?);
            offset += n;
        }
        Ok(out)
    }

    /// [`average_tensors`](Distributed::average_tensors) of the gradients of
    /// `(variable, gradient)` pairs: the pairs with the averaged gradients.
    ///
    /// # Errors
    /// As [`average_tensors`](Distributed::average_tensors).
    pub fn average_gradients(
        &self,
        grads_and_vars: &[(Node, Tensor)],
    ) -> Result<Vec<(Node, Tensor)>> {
        let tensors: Vec<&Tensor> = grads_and_vars.iter().map(|(_, g)| g).collect();
        let averaged = self.average_tensors(&tensors)?;
        Ok(grads_and_vars
            .iter()
            .map(|(v, _)| v.clone())
            .zip(averaged)
            .collect())
    }
}

/// Installs, once, the hook that aborts the job on a panic when it has other ranks.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if WORLD_SIZE.load(Ordering::SeqCst) > 1
                && mpi::environment::is_initialized()
                && !mpi::environment::is_finalized()
            {
                eprintln!("adgraph::distributed: a rank panicked: aborting the MPI job");
                SimpleCommunicator::world().abort(101);
            }
        }));
    });
}
