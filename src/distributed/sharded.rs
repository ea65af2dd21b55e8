//! [`ShardedOptimizer`]: the update split across the ranks (ZeRO stage 1).
//!
//! With [`AveragedOptimizer`](crate::distributed::AveragedOptimizer) every
//! rank averages the whole gradient (allreduce) and then runs the same update
//! of every variable. Here the gradients, packed into one flat buffer, are
//! summed with a reduce-scatter, after which each rank holds the averaged
//! gradient of its own contiguous `1/N` of the elements; it runs the update on
//! that share only (the optimizer's slots, e.g. Adam's moments, exist on that
//! rank only), and an allgather gives every rank all the updated values. A
//! reduce-scatter and an allgather move the bytes of one allreduce (which is
//! itself built of the two), so the communication is the same while the
//! update work and the optimizer's memory per rank fall to `1/N` (when the
//! MPI library's reduce-scatter costs half its allreduce, as a ring's does;
//! Open MPI's through shared memory on 2 ranks costs about as much, see
//! `docs/distributed.md`).
//!
//! The split is by elements, not by whole variables: a model whose largest
//! variable holds most of the elements (the conv net demo's last kernel is 75%
//! of them) would otherwise leave one rank most of the work. It needs an
//! optimizer whose update is element-wise ([`Optimizer::elementwise`]): every
//! built-in one. Each rank's share of a variable is a variable of a private
//! graph (a *piece*) that the wrapped optimizer updates as it would any other,
//! with its own state; [`state`](Optimizer::state) gathers the pieces' slots
//! back into whole-variable slots, so a checkpoint holds the same state as one
//! process's optimizer and resumes on any number of ranks.

use std::collections::HashMap;

use crate::distributed::comm::layout_hash;
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId};
use crate::init::Zeros;
use crate::optim::{check_gradient, Optimizer};
use crate::tensor::Tensor;

/// An optimizer state: named tensors.
type NamedTensors = Vec<(String, Tensor)>;

/// One bucket of the flat gradient buffer: elements `start .. start + len`,
/// split into `size` blocks of `block` elements (the last padded).
struct Bucket {
    start: usize,
    len: usize,
    block: usize,
    /// Where this rank's block starts in the buffer of owned blocks.
    owned: usize,
}

/// This rank's share of one variable.
struct Piece {
    /// Index of the variable in the plan.
    var: usize,
    /// The first element of the share, within the variable.
    offset: usize,
    /// Its length.
    len: usize,
    /// Its position in the buffer of owned blocks.
    owned: usize,
}

/// How the variables of one update are split across the ranks.
struct Plan {
    /// The update's variables (graph, node, elements), in order.
    key: Vec<(u64, NodeId, usize)>,
    vars: Vec<Node>,
    /// The first element of each variable in the flat buffer.
    offsets: Vec<usize>,
    buckets: Vec<Bucket>,
    pieces: Vec<Piece>,
    /// The private graph of the pieces' variables.
    graph: Graph,
    /// The pieces' variables and their gradients, as the wrapped optimizer
    /// takes them (a rank with no elements gives it none: its counters still
    /// advance).
    pairs: Vec<(Node, Tensor)>,
    /// A piece's index by its variable's name.
    piece_names: HashMap<String, usize>,
    /// Elements of the flat buffer with the last bucket's padding.
    padded: usize,
    /// Elements of this rank's blocks.
    owned: usize,
}

/// Wraps an element-wise optimizer so that each rank updates only its share
/// of the variables (ZeRO stage 1): the gradients are averaged with a
/// reduce-scatter (each rank gets the average of its own `1/N` of the
/// elements, weighted by the ranks' shares of the batch as in
/// [`Distributed::average_tensors`]), each rank runs the wrapped optimizer on
/// its share, and an allgather gives every rank all the new values. Same
/// communication volume as an allreduce, `1/N` of the update's work and of the
/// optimizer's slots per rank, and the same bits as
/// [`AveragedOptimizer`](crate::distributed::AveragedOptimizer) (each element
/// is updated by the same arithmetic, on one rank). The split is by
/// elements, not whole variables: each bucket of the packed buffer is cut
/// into one block per rank (the last padded), and each rank's share of a
/// variable is a variable of a private graph, which the wrapped optimizer
/// updates, with its own state, as any other.
///
/// [`Trainer::distributed`](crate::train::Trainer::distributed) uses it for
/// every optimizer whose update is [element-wise](Optimizer::elementwise)
/// when [`Distributed::set_shard_optimizer`] is on. Whether it is faster
/// depends on the transport: Open MPI's reduce-scatter through shared memory
/// on 2 ranks costs about as much as its allreduce, so the allgather and the
/// copies into and out of the pieces outweigh the half of the update saved
/// for a cheap update like Adam's (measured in `docs/distributed.md`); with a
/// ring allreduce (between machines) the two collectives are the allreduce.
///
/// Its [`state`](Optimizer::state) is the wrapped optimizer's, for whole
/// variables (the same entries one process would have), gathered from the
/// ranks: **a collective**, to call on every rank at the same point (as the
/// trainer's checkpoints do). [`load_state`](Optimizer::load_state) takes such
/// a state (from a run on any number of ranks) on every rank; each rank keeps
/// its share from the next update on. In a world of one it is the wrapped
/// optimizer.
pub struct ShardedOptimizer {
    inner: Box<dyn Optimizer>,
    dist: Distributed,
    /// `None` while the wrapped optimizer holds whole-variable state (before
    /// the first update, after a load).
    plan: Option<Plan>,
    /// Slots of variables outside the plan, whole (the same on every rank).
    stash: Vec<(String, Tensor)>,
    /// The packed gradients (reduce-scatter send buffer).
    send: Vec<f32>,
    /// This rank's blocks: averaged gradients, then updated values.
    owned: Vec<f32>,
    /// Every rank's updated values (allgather receive buffer).
    full: Vec<f32>,
}

/// `optimizer` made data-parallel over `dist`: a [`ShardedOptimizer`] when
/// `dist` [shards optimizers](Distributed::set_shard_optimizer) and its
/// update is element-wise, else an
/// [`AveragedOptimizer`](crate::distributed::AveragedOptimizer).
pub(crate) fn data_parallel(
    optimizer: Box<dyn Optimizer>,
    dist: &Distributed,
) -> Box<dyn Optimizer> {
    if dist.shard_optimizer() && optimizer.elementwise() {
        Box::new(ShardedOptimizer::wrap(optimizer, dist))
    } else {
        Box::new(crate::distributed::AveragedOptimizer::boxed(
            optimizer, dist,
        ))
    }
}

impl ShardedOptimizer {
    /// `optimizer`, its update split across the ranks of `dist`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the optimizer's update is not
    /// element-wise ([`Optimizer::elementwise`]): use
    /// [`AveragedOptimizer`](crate::distributed::AveragedOptimizer).
    pub fn new(optimizer: impl Optimizer + 'static, dist: &Distributed) -> Result<Self> {
        Self::boxed(Box::new(optimizer), dist)
    }

    /// A boxed `optimizer`, its update split across the ranks of `dist`.
    ///
    /// # Errors
    /// As [`new`](ShardedOptimizer::new).
    pub fn boxed(optimizer: Box<dyn Optimizer>, dist: &Distributed) -> Result<Self> {
        if !optimizer.elementwise() {
            return Err(Error::invalid(
                "ShardedOptimizer needs an optimizer whose update is element-wise \
                 (Optimizer::elementwise); average the gradients with AveragedOptimizer instead",
            ));
        }
        Ok(Self::wrap(optimizer, dist))
    }

    fn wrap(optimizer: Box<dyn Optimizer>, dist: &Distributed) -> Self {
        ShardedOptimizer {
            inner: optimizer,
            dist: dist.clone(),
            plan: None,
            stash: Vec::new(),
            send: Vec::new(),
            owned: Vec::new(),
            full: Vec::new(),
        }
    }

    /// The wrapped optimizer (in a world of more than one, holding this
    /// rank's share of the state after the first update).
    pub fn inner(&self) -> &dyn Optimizer {
        self.inner.as_ref()
    }

    /// The elements of the last update that this rank updates (0 before the first).
    pub fn owned_elements(&self) -> usize {
        self.plan
            .as_ref()
            .map_or(0, |p| p.pieces.iter().map(|q| q.len).sum())
    }

    /// Splits the variables of `grads_and_vars` across the ranks, moving the
    /// optimizer's state from the previous split (or whole variables) to it.
    fn replan(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let hash = layout_hash(
            grads_and_vars
                .iter()
                .map(|(v, g)| (g.shape(), Some(v.name()))),
        );
        self.dist.check_same(
            "the variables of a sharded update (names and gradient shapes, as a hash): \
             every rank must update the same variables",
            hash,
        )?;
        for (v, g) in grads_and_vars {
            check_gradient(v, g)?;
        }
        let state = self.whole_state()?;
        let plan = make_plan(grads_and_vars, &self.dist)?;
        let (pieces_state, stash) = split_state(state.clone(), &plan)?;
        if let Err(e) = self.inner.load_state(&pieces_state, &plan.graph) {
            // Put the whole state back (it came from this optimizer, so it loads).
            self.plan = None;
            self.stash.clear();
            let graph = grads_and_vars[0].0.graph().clone();
            let _ = self.inner.load_state(&state, &graph);
            return Err(e);
        }
        self.send = vec![0.0; plan.padded];
        self.owned = vec![0.0; plan.owned];
        self.full = vec![0.0; plan.padded];
        self.plan = Some(plan);
        self.stash = stash;
        Ok(())
    }

    /// The optimizer's state for whole variables: gathered from the ranks
    /// when split (a collective), else the wrapped optimizer's.
    fn whole_state(&self) -> Result<Vec<(String, Tensor)>> {
        let Some(plan) = &self.plan else {
            return Ok(self.inner.state());
        };
        let size = self.dist.size();
        let mut counters = Vec::new();
        let mut kind = String::new();
        let mut slot_names: Vec<String> = Vec::new();
        let mut slots: HashMap<(String, usize), Tensor> = HashMap::new();
        for (name, value) in self.inner.state() {
            let (k, rest) = name.split_once('/').unwrap_or(("", name.as_str()));
            kind = k.to_string();
            match rest.split_once('/') {
                None => counters.push((name.clone(), value)),
                Some((slot, piece)) => {
                    let Some(&i) = plan.piece_names.get(piece) else {
                        return Err(Error::invalid(format!(
                            "sharded optimizer: the wrapped optimizer's state entry {name:?} is \
                             for no piece of this rank"
                        )));
                    };
                    if !slot_names.iter().any(|s| s == slot) {
                        slot_names.push(slot.to_string());
                    }
                    slots.insert((slot.to_string(), i), value);
                }
            }
        }
        // Rank 0 always holds a piece (the first block): its kind and slot
        // names are every rank's.
        let mut names = std::iter::once(kind.clone())
            .chain(slot_names.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        self.dist.broadcast_bytes(&mut names);
        let names = String::from_utf8_lossy(&names).to_string();
        let mut names = names.split('\n').map(str::to_string);
        let kind = names.next().unwrap_or_default();
        let slot_names: Vec<String> = names.filter(|s| !s.is_empty()).collect();

        let mut owned = vec![0.0f32; plan.owned];
        let mut full = vec![0.0f32; plan.padded];
        let mut entries: Vec<(String, Tensor)> = Vec::new();
        for slot in &slot_names {
            owned.iter_mut().for_each(|x| *x = 0.0);
            let mut present = vec![0.0f64; plan.vars.len()];
            for (i, piece) in plan.pieces.iter().enumerate() {
                if let Some(t) = slots.get(&(slot.clone(), i)) {
                    copy_out(t, &mut owned[piece.owned..piece.owned + piece.len]);
                    present[piece.var] += 1.0;
                }
            }
            for b in &plan.buckets {
                self.dist.all_gather(
                    &owned[b.owned..b.owned + b.block],
                    &mut full[b.start..b.start + b.block * size],
                )?;
            }
            self.dist.all_reduce_sum_f64(&mut present);
            for (i, var) in plan.vars.iter().enumerate() {
                if present[i] > 0.0 {
                    let n = plan.key[i].2;
                    let at = plan.offsets[i];
                    let shape = var.graph().variable_value(var)?.shape().to_vec();
                    let value = Tensor::from_shape_vec(shape, full[at..at + n].to_vec())?;
                    entries.push((format!("{kind}/{slot}/{}", var.name()), value));
                }
            }
        }
        entries.extend(self.stash.iter().cloned());
        Ok(ordered(counters, entries))
    }
}

/// The split of `grads_and_vars` across the ranks of `dist`: the flat buffer
/// in buckets of at most [`Distributed::bucket_elements`] (rounded down to a
/// multiple of the ranks), each bucket in one block per rank; this rank's
/// pieces are the parts of the variables in its blocks.
fn make_plan(grads_and_vars: &[(Node, Tensor)], dist: &Distributed) -> Result<Plan> {
    let (rank, size) = (dist.rank(), dist.size());
    let key: Vec<(u64, NodeId, usize)> = grads_and_vars
        .iter()
        .map(|(v, g)| (v.graph().id(), v.id(), g.len()))
        .collect();
    let vars: Vec<Node> = grads_and_vars.iter().map(|(v, _)| v.clone()).collect();
    let mut offsets = Vec::with_capacity(vars.len());
    let mut total = 0;
    for k in &key {
        offsets.push(total);
        total += k.2;
    }
    let per_bucket = (dist.bucket_elements() / size).max(1) * size;
    let mut buckets = Vec::new();
    let mut owned = 0;
    let mut start = 0;
    while start < total {
        let len = per_bucket.min(total - start);
        let block = len.div_ceil(size);
        buckets.push(Bucket {
            start,
            len,
            block,
            owned,
        });
        owned += block;
        start += len;
    }
    let padded = buckets.last().map_or(0, |b| b.start + b.block * size);
    // This rank's pieces: its block of each bucket, cut at the variables' ends.
    let scratch = Graph::new();
    let mut pieces = Vec::new();
    let mut pairs = Vec::new();
    let mut piece_names = HashMap::new();
    for b in &buckets {
        let lo = b.start + rank * b.block;
        let hi = (b.start + (rank + 1) * b.block).min(b.start + b.len);
        let mut at = lo;
        while at < hi {
            let var = offsets.partition_point(|&o| o <= at) - 1;
            let end = (offsets[var] + key[var].2).min(hi);
            let len = end - at;
            let name = format!("piece{}", pieces.len());
            let node = scratch.variable_named(&name, &[len], Zeros, true)?;
            piece_names.insert(node.name(), pieces.len());
            pairs.push((node, Tensor::zeros(vec![len])));
            pieces.push(Piece {
                var,
                offset: at - offsets[var],
                len,
                owned: b.owned + (at - lo),
            });
            at = end;
        }
    }
    Ok(Plan {
        graph: scratch,
        key,
        vars,
        offsets,
        buckets,
        pieces,
        pairs,
        piece_names,
        padded,
        owned,
    })
}

/// Splits a whole-variable `state` for `plan`: the counters and the slots of
/// the plan's variables, cut into this rank's pieces (named as the pieces),
/// and the slots of other variables, kept whole.
fn split_state(state: NamedTensors, plan: &Plan) -> Result<(NamedTensors, NamedTensors)> {
    let by_name: HashMap<String, usize> = plan
        .vars
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name(), i))
        .collect();
    let mut pieces_state = Vec::new();
    let mut stash = Vec::new();
    for (name, value) in state {
        let (kind, rest) = name.split_once('/').unwrap_or(("", name.as_str()));
        let Some((slot, var_name)) = rest.split_once('/') else {
            pieces_state.push((name.clone(), value));
            continue;
        };
        let Some(&var) = by_name.get(var_name) else {
            stash.push((name.clone(), value));
            continue;
        };
        let data: Vec<f32> = value.iter().copied().collect();
        if data.len() != plan.key[var].2 {
            return Err(Error::invalid(format!(
                "state entry {name:?} has {} elements, but variable {var_name} has {}",
                data.len(),
                plan.key[var].2
            )));
        }
        for (i, piece) in plan.pieces.iter().enumerate() {
            if piece.var == var {
                let part = data[piece.offset..piece.offset + piece.len].to_vec();
                let piece_name = plan.pairs[i].0.name();
                pieces_state.push((
                    format!("{kind}/{slot}/{piece_name}"),
                    Tensor::from_shape_vec(vec![piece.len], part)?,
                ));
            }
        }
    }
    Ok((pieces_state, stash))
}

/// `counters`, then the slot entries grouped by slot (in order of first
/// appearance), each group sorted by variable name: the order the built-in
/// optimizers give.
fn ordered(
    counters: Vec<(String, Tensor)>,
    entries: Vec<(String, Tensor)>,
) -> Vec<(String, Tensor)> {
    let slot_of = |name: &str| -> String {
        let rest = name.split_once('/').map_or(name, |(_, r)| r);
        rest.split_once('/').map_or("", |(s, _)| s).to_string()
    };
    let mut order: Vec<String> = Vec::new();
    for (name, _) in &entries {
        let s = slot_of(name);
        if !order.contains(&s) {
            order.push(s);
        }
    }
    let mut entries = entries;
    entries.sort_by(|a, b| {
        let (sa, sb) = (slot_of(&a.0), slot_of(&b.0));
        let (ia, ib) = (
            order.iter().position(|s| *s == sa),
            order.iter().position(|s| *s == sb),
        );
        ia.cmp(&ib).then_with(|| a.0.cmp(&b.0))
    });
    counters.into_iter().chain(entries).collect()
}

/// Copies `t`'s elements (in logical order) into `out`.
fn copy_out(t: &Tensor, out: &mut [f32]) {
    match t.as_slice() {
        Some(s) => out.copy_from_slice(s),
        None => out.iter_mut().zip(t.iter()).for_each(|(o, &v)| *o = v),
    }
}

/// Copies `src` into `t`'s elements (in logical order).
fn copy_in(t: &mut Tensor, src: &[f32]) {
    match t.as_slice_mut() {
        Some(s) => s.copy_from_slice(src),
        None => t.iter_mut().zip(src).for_each(|(o, &v)| *o = v),
    }
}

impl Optimizer for ShardedOptimizer {
    fn apply_gradients(&mut self, grads_and_vars: &[(Node, Tensor)]) -> Result<()> {
        let size = self.dist.size();
        if size == 1 {
            return self.inner.apply_gradients(grads_and_vars);
        }
        let same = self.plan.as_ref().is_some_and(|p| {
            p.key.len() == grads_and_vars.len()
                && p.key
                    .iter()
                    .zip(grads_and_vars)
                    .all(|(k, (v, g))| *k == (v.graph().id(), v.id(), g.len()))
        });
        if !same {
            if grads_and_vars.is_empty() {
                return Err(Error::invalid(
                    "a sharded update needs at least one variable",
                ));
            }
            self.replan(grads_and_vars)?;
        }
        let Some(plan) = self.plan.as_mut() else {
            return Err(Error::invalid("sharded optimizer: no plan after planning"));
        };
        // Pack, scaled by this rank's share of the batch (padding stays zero).
        let share = self.dist.share();
        let mut at = 0;
        for (_, g) in grads_and_vars {
            let out = &mut self.send[at..at + g.len()];
            match g.as_slice() {
                Some(s) => out.iter_mut().zip(s).for_each(|(o, &v)| *o = v * share),
                None => out
                    .iter_mut()
                    .zip(g.iter())
                    .for_each(|(o, &v)| *o = v * share),
            }
            at += g.len();
        }
        for b in &plan.buckets {
            self.dist.reduce_scatter_sum(
                &self.send[b.start..b.start + b.block * size],
                &mut self.owned[b.owned..b.owned + b.block],
            )?;
        }
        // This rank's share: its pieces take the variables' current values
        // and the averaged gradients, and the wrapped optimizer updates them.
        for (piece, (node, grad)) in plan.pieces.iter().zip(plan.pairs.iter_mut()) {
            copy_in(grad, &self.owned[piece.owned..piece.owned + piece.len]);
            let value = plan.vars[piece.var]
                .graph()
                .variable_rc(&plan.vars[piece.var])?;
            node.graph()
                .update_variable_in_place(node, |t| match value.as_slice() {
                    Some(s) => copy_in(t, &s[piece.offset..piece.offset + piece.len]),
                    None => {
                        let src: Vec<f32> = value
                            .iter()
                            .skip(piece.offset)
                            .take(piece.len)
                            .copied()
                            .collect();
                        copy_in(t, &src);
                    }
                })?;
        }
        self.inner.apply_gradients(&plan.pairs)?;
        for (piece, (node, _)) in plan.pieces.iter().zip(&plan.pairs) {
            let value = node.graph().variable_rc(node)?;
            copy_out(
                &value,
                &mut self.owned[piece.owned..piece.owned + piece.len],
            );
        }
        for b in &plan.buckets {
            self.dist.all_gather(
                &self.owned[b.owned..b.owned + b.block],
                &mut self.full[b.start..b.start + b.block * size],
            )?;
        }
        for (var, &at) in plan.vars.iter().zip(&plan.offsets) {
            let n = var.graph().variable_rc(var)?.len();
            var.graph()
                .update_variable_in_place(var, |t| copy_in(t, &self.full[at..at + n]))?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        match self.whole_state() {
            Ok(state) => state,
            Err(e) => {
                // Only a failed collective gets here: the other ranks cannot go on.
                eprintln!(
                    "error on rank {} of {}: gathering the optimizer's state: {e}\naborting the job",
                    self.dist.rank(),
                    self.dist.size()
                );
                self.dist.abort(1)
            }
        }
    }

    fn load_state(&mut self, state: &[(String, Tensor)], graph: &Graph) -> Result<()> {
        // The wrapped optimizer checks and holds the whole state; the next
        // update splits it.
        self.inner.load_state(state, graph)?;
        self.plan = None;
        self.stash.clear();
        Ok(())
    }
}
