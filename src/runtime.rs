//! [`RunTime`]: the state of one forward/backward cycle, and [`Feed`], the values
//! given to placeholders.
//!
//! ```
//! use adgraph as ad;
//!
//! let g = ad::Graph::new();
//! let _scope = g.as_default();
//! let a = ad::placeholder([2, 3]);
//! let b = ad::placeholder([2, 3]);
//! let c = ad::add(&a, &b).unwrap();
//!
//! let feed = ad::Feed::new()
//!     .with(&a, [[0., 1., 2.], [3., 4., 5.]]).unwrap()
//!     .with(&b, [[1., 1., 1.], [0., 0., 0.]]).unwrap();
//! let mut rt = ad::RunTime::new();
//! let c_val = rt.forward(&c, &feed).unwrap().clone();
//! rt.backward(&c, &feed, None).unwrap();
//! assert_eq!(c_val, ad::tensor([[1., 2., 3.], [3., 4., 5.]]));
//! assert_eq!(rt.get_bwval(&a.name()).unwrap(), &ad::tensor([[1., 1., 1.], [1., 1., 1.]]));
//! assert_eq!(rt.get_bwval(&b.name()).unwrap(), &ad::tensor([[1., 1., 1.], [1., 1., 1.]]));
//! ```

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, InputDesc, Phase, Result};
use crate::gradients::backward_plan;
use crate::graph::{Graph, GraphInner, Node, NodeData, NodeId, NodeKind};
use crate::kernels::elementwise::PARALLEL_MIN_LEN;
use crate::op::ForwardContext;
use crate::profile::Profile;
use crate::rng_state::RngState;
use crate::shape::TensorShape;
use crate::tensor::{full, IntoTensor, Tensor};

/// Values fed to placeholders for a run, checked against their static shapes when added.
///
/// ```
/// use adgraph::{shape, Feed, Graph};
/// let g = Graph::new();
/// let x = g.placeholder(shape![None, 2]);
/// let feed = Feed::new().with(&x, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).unwrap();
/// assert_eq!(feed.len(), 1);
/// // A value that does not fit the placeholder is refused at once:
/// assert!(Feed::new().with(&x, [1.0, 2.0]).is_err());
/// ```
#[derive(Default, Clone, Debug)]
pub struct Feed {
    graph_id: Option<u64>,
    values: HashMap<NodeId, Rc<Tensor>>,
}

impl Feed {
    /// An empty feed.
    pub fn new() -> Self {
        Feed::default()
    }

    /// Adds (or replaces) the value of placeholder `node`.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when `node` is not a placeholder, [`Error::FeedShape`]
    /// when the value does not fit its static shape, [`Error::GraphMismatch`] when
    /// the feed already holds values for another graph, [`Error::Tensor`] when the
    /// value cannot be made into a tensor.
    pub fn insert(&mut self, node: &Node, value: impl IntoTensor) -> Result<&mut Self> {
        let value = value.into_tensor()?;
        let graph_id = node.graph.id();
        if let Some(id) = self.graph_id {
            if id != graph_id {
                return Err(Error::GraphMismatch {
                    context: "feeding".into(),
                    a: format!("fed nodes of graph #{id}"),
                    b: node.name(),
                });
            }
        }
        {
            let g = node.graph.borrow();
            let data = &g.nodes[node.id.index()];
            if !matches!(data.kind, NodeKind::Placeholder) {
                return Err(Error::WrongKind {
                    name: data.name.clone(),
                    kind: data.type_name.to_string(),
                    expected: "Placeholder".into(),
                });
            }
            if !data.shape.is_compatible_with(value.shape()) {
                return Err(Error::FeedShape {
                    name: data.name.clone(),
                    expected: data.shape.clone(),
                    got: TensorShape::known(value.shape()),
                });
            }
        }
        self.graph_id = Some(graph_id);
        self.values.insert(node.id, Rc::new(value));
        Ok(self)
    }

    /// Builder form of [`insert`](Feed::insert).
    ///
    /// # Errors
    /// As [`insert`](Feed::insert).
    pub fn with(mut self, node: &Node, value: impl IntoTensor) -> Result<Self> {
        self.insert(node, value)?;
        Ok(self)
    }

    /// The number of fed placeholders.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is fed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value fed to `node`, if any.
    pub fn get(&self, node: &Node) -> Option<&Tensor> {
        if self.graph_id != Some(node.graph.id()) {
            return None;
        }
        self.values.get(&node.id).map(|v| &**v)
    }
}

/// Builds a [`Feed`] from `node => value` pairs; evaluates to `Result<Feed>`.
///
/// ```
/// use adgraph::{feed, Graph};
/// let g = Graph::new();
/// let a = g.placeholder([2]);
/// let b = g.placeholder(adgraph::shape![]);
/// let f = feed! { a => [1.0, 2.0], b => 3.0 }.unwrap();
/// assert_eq!(f.len(), 2);
/// ```
#[macro_export]
macro_rules! feed {
    ($($node:expr => $value:expr),* $(,)?) => {
        (|| -> $crate::Result<$crate::Feed> {
            let mut f = $crate::Feed::new();
            $( f.insert(&$node, $value)?; )*
            Ok(f)
        })()
    };
}

/// The state of forward/backward cycles on one graph: forward values, gradients,
/// data ops keep for their backward, and the random generator ops draw from.
///
/// Forward computes only what a node needs, each node once per cycle; backward
/// visits nodes in reverse topological order without recursion, summing the
/// gradients that reach a node from all its consumers.
pub struct RunTime {
    graph: Option<Graph>,
    values: Vec<Option<Rc<Tensor>>>,
    grads: Vec<Option<Tensor>>,
    saved: Vec<Option<Box<dyn Any>>>,
    stopped: HashSet<NodeId>,
    rng: ChaCha8Rng,
    profile: Option<Profile>,
    check_numerics: bool,
}

impl Default for RunTime {
    fn default() -> Self {
        RunTime::new()
    }
}

impl RunTime {
    /// A run time whose random generator (dropout masks) starts from seed 0.
    pub fn new() -> Self {
        RunTime::with_seed(0)
    }

    /// A run time whose random generator starts from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        RunTime {
            graph: None,
            values: Vec::new(),
            grads: Vec::new(),
            saved: Vec::new(),
            stopped: HashSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            profile: None,
            check_numerics: false,
        }
    }

    /// Turns the profiler on or off. While on, the forward and backward time of
    /// every op node is summed across cycles; read it with [`profile`](RunTime::profile).
    /// Turning it on starts a new profile.
    pub fn enable_profiling(&mut self, on: bool) {
        self.profile = on.then(Profile::default);
    }

    /// The profile gathered since profiling was enabled, if it is.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Turns the numerics check on or off (off by default). While on, every
    /// forward value and every gradient is checked for NaN and infinity, and the
    /// first bad one fails the run with [`Error::Numerics`] naming the node.
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([2]);
    /// let y = ad::log(&x).unwrap();
    /// let feed = ad::Feed::new().with(&x, [1.0, 0.0]).unwrap();
    /// let mut rt = ad::RunTime::new();
    /// rt.set_check_numerics(true);
    /// let err = rt.forward(&y, &feed).unwrap_err();
    /// assert!(matches!(err, ad::Error::Numerics { ref node, bad: 1, .. } if node == "Log"));
    /// ```
    pub fn set_check_numerics(&mut self, on: bool) {
        self.check_numerics = on;
    }

    /// The exact state of the random generator that ops such as dropout draw
    /// from. Save it with a training checkpoint (its text form fits the
    /// metadata) and give it to [`set_rng_state`](RunTime::set_rng_state) on
    /// resuming, so the resumed run draws the same masks as an uninterrupted one.
    pub fn rng_state(&self) -> RngState {
        RngState::of(&self.rng)
    }

    /// Puts the random generator at `state`, as read by
    /// [`rng_state`](RunTime::rng_state) from this or another run time: the next
    /// draws are those that run time would have made next. (A malformed state is
    /// refused when its text is parsed into an [`RngState`].)
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([1000]);
    /// let y = ad::dropout(&x, 0.5, true).unwrap();
    /// let feed = ad::Feed::new().with(&x, ad::tensor::full(&[1000], 1.0)).unwrap();
    /// let mut a = ad::RunTime::with_seed(1);
    /// a.forward_backward_cycle(|rt| rt.forward(&y, &feed).map(|_| ())).unwrap();
    /// let saved = a.rng_state();
    /// let mask_a = a.forward_backward_cycle(|rt| rt.forward(&y, &feed).cloned()).unwrap();
    /// let mut b = ad::RunTime::with_seed(99);
    /// b.set_rng_state(&saved);
    /// let mask_b = b.forward_backward_cycle(|rt| rt.forward(&y, &feed).cloned()).unwrap();
    /// assert_eq!(mask_a, mask_b);
    /// ```
    pub fn set_rng_state(&mut self, state: &RngState) {
        self.rng = state.to_rng();
    }

    /// Clears every value, gradient and saved datum of the cycle (the generator
    /// and the stop-gradient set stay).
    pub fn reset(&mut self) {
        self.graph = None;
        self.values.clear();
        self.grads.clear();
        self.saved.clear();
    }

    /// Runs `f` as one forward/backward cycle: the state is cleared at its start and its end.
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder(ad::shape![]);
    /// let y = ad::exp(&x).unwrap();
    /// let mut rt = ad::RunTime::new();
    /// for v in [0.0f32, 1.0] {
    ///     let feed = ad::Feed::new().with(&x, v).unwrap();
    ///     let dy = rt.forward_backward_cycle(|rt| -> ad::Result<f32> {
    ///         rt.backward(&y, &feed, None)?;
    ///         Ok(rt.grad(&x)?.sum())
    ///     }).unwrap();
    ///     assert!((dy - v.exp()).abs() < 1e-6);
    /// }
    /// assert!(rt.value(&y).is_err()); // cleared at the end
    /// ```
    pub fn forward_backward_cycle<T>(&mut self, f: impl FnOnce(&mut RunTime) -> T) -> T {
        self.reset();
        let out = f(self);
        self.reset();
        out
    }

    /// Stops gradients at these nodes: they receive none and pass none on.
    /// Stays in force across cycles until [`clear_stop_gradients`](RunTime::clear_stop_gradients).
    pub fn stop_gradients_at(&mut self, nodes: &[&Node]) {
        self.stopped.extend(nodes.iter().map(|n| n.id));
    }

    /// Lets gradients flow through every node again.
    pub fn clear_stop_gradients(&mut self) {
        self.stopped.clear();
    }

    fn bind(&mut self, graph: &Graph) -> Result<()> {
        match &self.graph {
            Some(g) if g != graph => Err(Error::GraphMismatch {
                context: "running".into(),
                a: format!("this cycle's {g:?}"),
                b: format!("a node of {graph:?}"),
            }),
            Some(_) => Ok(()),
            None => {
                self.graph = Some(graph.clone());
                Ok(())
            }
        }
    }

    fn grow(&mut self, n: usize) {
        if self.values.len() < n {
            self.values.resize(n, None);
            self.grads.resize_with(n, || None);
            self.saved.resize_with(n, || None);
        }
    }

    /// Computes `node`'s value (and all it needs that is not computed yet this cycle).
    ///
    /// # Errors
    /// [`Error::MissingFeed`] for an unfed placeholder; [`Error::Node`] when an op
    /// fails; [`Error::RuntimeShape`] when a value disagrees with its static
    /// shape; [`Error::GraphMismatch`] when `node` is not of this cycle's graph.
    pub fn forward(&mut self, node: &Node, feed: &Feed) -> Result<&Tensor> {
        self.bind(&node.graph)?;
        let graph = node.graph.clone();
        self.compute(&graph, &[node.id], feed, false, false)?;
        self.values
            .get(node.id.index())
            .and_then(|v| v.as_deref())
            .ok_or_else(|| Error::NoValue(node.name()))
    }

    /// Evaluates several nodes at once and returns their values, in order.
    ///
    /// # Errors
    /// As [`forward`](RunTime::forward).
    pub fn evaluate(&mut self, nodes: &[&Node], feed: &Feed) -> Result<Vec<Tensor>> {
        nodes
            .iter()
            .map(|n| self.forward(n, feed).cloned())
            .collect()
    }

    /// Computes `targets` and what they need that this cycle has not computed
    /// yet, in one pass; returns which nodes it computed, indexed up to the
    /// highest target. With `release`, each value made in the pass (and what
    /// its op saved) is dropped as soon as its last consumer in the pass has
    /// run, targets excepted; `inference` tells ops that nothing will read
    /// their optional caches (an [`infer`](RunTime::infer) pass).
    fn compute(
        &mut self,
        graph: &Graph,
        targets: &[NodeId],
        feed: &Feed,
        release: bool,
        inference: bool,
    ) -> Result<Vec<bool>> {
        let mut assignments: Vec<(NodeId, Tensor)> = Vec::new();
        let needed = {
            let g = graph.borrow();
            self.grow(g.nodes.len());
            let top = targets.iter().map(|t| t.index() + 1).max().unwrap_or(0);
            // Inputs are always made before their consumers, so ascending node ids
            // are a topological order: mark what is missing, then compute upwards.
            let mut needed = vec![false; top];
            let mut stack: Vec<NodeId> = Vec::new();
            for &t in targets {
                if self.values[t.index()].is_none() && !needed[t.index()] {
                    needed[t.index()] = true;
                    stack.push(t);
                }
            }
            let mut lowest = top;
            while let Some(id) = stack.pop() {
                lowest = lowest.min(id.index());
                for &input in &g.nodes[id.index()].inputs {
                    if !needed[input.index()] && self.values[input.index()].is_none() {
                        needed[input.index()] = true;
                        stack.push(input);
                    }
                }
            }
            // In a releasing pass, the number of consumers still to run of each
            // value made in this pass: at zero it is dropped (targets excepted).
            let mut uses = vec![0u32; if release { top } else { 0 }];
            if release {
                for (i, _) in needed.iter().enumerate().skip(lowest).filter(|(_, &n)| n) {
                    for &input in &g.nodes[i].inputs {
                        uses[input.index()] += 1;
                    }
                }
                for &t in targets {
                    uses[t.index()] += 1; // held for the caller
                }
            }
            for (i, _) in needed.iter().enumerate().skip(lowest).filter(|(_, &n)| n) {
                self.compute_one(&g, NodeId(i as u32), feed, inference, &mut assignments)?;
                if release {
                    for &input in &g.nodes[i].inputs {
                        let j = input.index();
                        uses[j] -= 1;
                        if uses[j] == 0 && needed[j] {
                            self.values[j] = None;
                            self.saved[j] = None;
                        }
                    }
                }
            }
            needed
        };
        for (var, value) in assignments {
            graph.set_variable_by_id(var, value)?;
        }
        Ok(needed)
    }

    /// Computes `targets` in one forward pass that keeps no intermediate value:
    /// each value made in the pass is dropped as soon as its last consumer in
    /// the pass has run, so memory holds only the live activations, as in
    /// TensorFlow's `Session.run(fetches)` or PyTorch's inference mode. Returns
    /// the targets' values, in order.
    ///
    /// Values already computed earlier in the cycle are used and kept; the ones
    /// this pass makes (the targets included) are not kept, so nothing
    /// back-propagates through it. Use it for evaluation and inference: a
    /// conv net's activations are freed layer by layer, which bounds the memory
    /// of a large batch and lets the allocator reuse the same blocks.
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([3]);
    /// let h = ad::exp(&x).unwrap();
    /// let y = ad::reduce_sum(&h, [0], false).unwrap();
    /// let feed = ad::Feed::new().with(&x, [0.0, 0.0, 0.0]).unwrap();
    /// let mut rt = ad::RunTime::new();
    /// let out = rt.infer(&[&y, &h], &feed).unwrap();
    /// assert_eq!(out[0].sum(), 3.0);
    /// assert_eq!(out[1], ad::tensor([1.0, 1.0, 1.0]));
    /// assert!(rt.value(&h).is_err()); // not kept
    /// ```
    ///
    /// # Errors
    /// As [`forward`](RunTime::forward).
    pub fn infer(&mut self, targets: &[&Node], feed: &Feed) -> Result<Vec<Tensor>> {
        let Some(first) = targets.first() else {
            return Ok(Vec::new());
        };
        let graph = first.graph.clone();
        for t in targets {
            self.bind(&t.graph)?;
        }
        let ids: Vec<NodeId> = targets.iter().map(|t| t.id).collect();
        let computed = self.compute(&graph, &ids, feed, true, true)?;
        let held: Vec<Rc<Tensor>> = targets
            .iter()
            .map(|t| {
                self.values
                    .get(t.id.index())
                    .and_then(Clone::clone)
                    .ok_or_else(|| Error::NoValue(t.name()))
            })
            .collect::<Result<_>>()?;
        for t in targets {
            if computed[t.id.index()] {
                self.values[t.id.index()] = None;
                self.saved[t.id.index()] = None;
            }
        }
        Ok(held
            .into_iter()
            .map(|v| Rc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone()))
            .collect())
    }

    fn compute_one(
        &mut self,
        g: &GraphInner,
        id: NodeId,
        feed: &Feed,
        inference: bool,
        assignments: &mut Vec<(NodeId, Tensor)>,
    ) -> Result<()> {
        let data = &g.nodes[id.index()];
        let value: Rc<Tensor> = match &data.kind {
            NodeKind::Placeholder => {
                let v = (feed.graph_id == Some(g.id))
                    .then(|| feed.values.get(&id))
                    .flatten()
                    .ok_or_else(|| Error::MissingFeed {
                        name: data.name.clone(),
                        shape: data.shape.clone(),
                    })?;
                v.clone()
            }
            NodeKind::Constant(v) => v.clone(),
            NodeKind::Variable(slot) => slot.value.clone(),
            NodeKind::Failed(e) => return Err(e.clone()),
            NodeKind::Op(op) => {
                let inputs: Vec<&Tensor> = data
                    .inputs
                    .iter()
                    .map(|&i| stored_value(&self.values, g, i))
                    .collect::<Result<_>>()?;
                let mut ctx =
                    ForwardContext::new(&mut self.rng, inference, &self.saved, &data.inputs);
                let started = self.profile.is_some().then(Instant::now);
                let out = op
                    .forward(&inputs, &mut ctx)
                    .map_err(|e| node_error(g, id, Phase::Forward, &inputs, e))?;
                let ForwardContext {
                    saved,
                    assignments: assigned,
                    ..
                } = ctx;
                if let (Some(profile), Some(started)) = (&mut self.profile, started) {
                    match data.grad_of {
                        // A gradient node's time is its forward node's backward.
                        Some(of) => profile.record_backward(of.index(), started.elapsed()),
                        None => profile.record_forward(
                            id.index(),
                            || {
                                (
                                    data.name.clone(),
                                    data.type_name,
                                    describe_shapes(&inputs, &out),
                                )
                            },
                            started.elapsed(),
                        ),
                    }
                }
                for (input, value) in assigned {
                    let var = data.inputs.get(input).copied().ok_or_else(|| {
                        node_error(
                            g,
                            id,
                            Phase::Forward,
                            &inputs,
                            Error::invalid(format!("no input {input} to assign")),
                        )
                    })?;
                    check_assignment(g, var, input, &value)
                        .map_err(|e| node_error(g, id, Phase::Forward, &inputs, e))?;
                    assignments.push((var, value));
                }
                self.saved[id.index()] = saved;
                Rc::new(out)
            }
        };
        if !data.shape.is_compatible_with(value.shape()) {
            return Err(Error::RuntimeShape {
                name: data.name.clone(),
                op: data.type_name.to_string(),
                expected: data.shape.clone(),
                got: TensorShape::known(value.shape()),
            });
        }
        if self.check_numerics {
            match data.grad_of {
                // A gradient node: name the forward node whose gradient it is part of.
                Some(of) => check_finite(&value, &g.nodes[of.index()], Phase::Backward, || {
                    format!(
                        "the value of its gradient node {} ({})",
                        data.name, data.type_name
                    )
                })?,
                None => check_finite(&value, data, Phase::Forward, || "its value".into())?,
            }
        }
        self.values[id.index()] = Some(value);
        Ok(())
    }

    /// Back-propagates from `node`: computes what forward still needs, then sends
    /// `upstream` (dL/d`node`; all ones when `None`) to every node it reaches.
    /// Gradients add up over consumers, and over several `backward` calls in a cycle.
    ///
    /// # Errors
    /// As [`forward`](RunTime::forward); [`Error::ShapeMismatch`] when `upstream`
    /// does not have the node's shape; [`Error::Node`] when an op's backward fails.
    pub fn backward(&mut self, node: &Node, feed: &Feed, upstream: Option<Tensor>) -> Result<()> {
        self.backward_to(node, feed, upstream, None)
    }

    /// [`backward`](RunTime::backward) computing only the gradients of
    /// `wanted` (all when `None`): what an optimizer's update needs. The
    /// gradients of other nodes are made only as far as `wanted`'s need them,
    /// and dropped as soon as used, so `grad` of such a node fails afterwards.
    pub(crate) fn backward_to(
        &mut self,
        node: &Node,
        feed: &Feed,
        upstream: Option<Tensor>,
        wanted: Option<&[Node]>,
    ) -> Result<()> {
        self.forward(node, feed)?;
        let graph = node.graph.clone();
        let g = graph.borrow();
        let target = node.id;
        let target_value = stored_value(&self.values, &g, target)?;
        let upstream = match upstream {
            None => full(target_value.shape(), 1.0),
            Some(u) if u.shape() == target_value.shape() => u,
            Some(u) => {
                return Err(Error::ShapeMismatch {
                    what: format!("upstream gradient for {}", g.nodes[target.index()].name),
                    expected: TensorShape::known(target_value.shape()),
                    got: TensorShape::known(u.shape()),
                })
            }
        };

        if self.check_numerics {
            check_finite(&upstream, &g.nodes[target.index()], Phase::Backward, || {
                "the upstream gradient fed to it".into()
            })?;
        }
        drop(g);

        // The target's gradient graph (built on the first call, then reused):
        // run it with the upstream fed, releasing what it makes as it goes.
        let wanted: Option<Vec<NodeId>> = wanted
            .map(|w| {
                w.iter()
                    .map(|n| {
                        graph.check_same(n, "backward")?;
                        Ok(n.id)
                    })
                    .collect::<Result<_>>()
            })
            .transpose()?;
        let plan = backward_plan(node, &self.stopped, wanted.as_deref())?;
        if plan.grads.is_empty() {
            return Ok(());
        }
        let mut feed = feed.clone();
        feed.insert(&plan.upstream, upstream)?;
        let targets: Vec<NodeId> = plan.grads.iter().map(|&(_, grad)| grad).collect();
        let computed = self.compute(&graph, &targets, &feed, true, false)?;
        let held: Vec<Rc<Tensor>> = targets
            .iter()
            .map(|&t| {
                self.values[t.index()]
                    .clone()
                    .ok_or_else(|| Error::NoValue(graph.handle(t).name()))
            })
            .collect::<Result<_>>()?;
        for &t in &targets {
            if computed.get(t.index()).copied().unwrap_or(false) {
                self.values[t.index()] = None;
                self.saved[t.index()] = None;
            }
        }
        // The feed shares the upstream: let it go, so the target's gradient moves.
        drop(feed);
        for (&(i, _), value) in plan.grads.iter().zip(held) {
            match &mut self.grads[i.index()] {
                Some(acc) => *acc += &*value,
                slot => *slot = Some(Rc::try_unwrap(value).unwrap_or_else(|v| (*v).clone())),
            }
        }
        Ok(())
    }

    /// The value of `node` computed in this cycle.
    ///
    /// # Errors
    /// [`Error::NoValue`] when it has not been computed.
    pub fn value(&self, node: &Node) -> Result<&Tensor> {
        self.same_graph(node)
            .then(|| self.values.get(node.id.index()).and_then(|v| v.as_deref()))
            .flatten()
            .ok_or_else(|| Error::NoValue(node.name()))
    }

    /// The gradient of the last backward's target w.r.t. `node`, summed over the cycle.
    ///
    /// # Errors
    /// [`Error::NoGradient`] when backward did not reach `node`.
    pub fn grad(&self, node: &Node) -> Result<&Tensor> {
        self.same_graph(node)
            .then(|| self.grads.get(node.id.index()).and_then(Option::as_ref))
            .flatten()
            .ok_or_else(|| Error::NoGradient(node.name()))
    }

    /// The forward value of the node called `name` (the original's `get_fwval`).
    ///
    /// # Errors
    /// [`Error::UnknownNode`], or as [`value`](RunTime::value).
    pub fn get_fwval(&self, name: &str) -> Result<&Tensor> {
        let node = self.lookup(name)?;
        self.value(&node)
    }

    /// The gradient of the node called `name` (the original's `get_bwval`).
    ///
    /// # Errors
    /// [`Error::UnknownNode`], or as [`grad`](RunTime::grad).
    pub fn get_bwval(&self, name: &str) -> Result<&Tensor> {
        let node = self.lookup(name)?;
        self.grad(&node)
    }

    fn lookup(&self, name: &str) -> Result<Node> {
        match &self.graph {
            Some(g) => g.node(name),
            None => Err(Error::UnknownNode(name.to_string())),
        }
    }

    /// Moves `node`'s gradient out of this cycle (for an update that only
    /// reads it; [`restore_grad`](RunTime::restore_grad) puts it back).
    pub(crate) fn take_grad(&mut self, node: &Node) -> Option<Tensor> {
        if !self.same_graph(node) {
            return None;
        }
        self.grads.get_mut(node.id.index()).and_then(Option::take)
    }

    /// Puts back a gradient moved out by [`take_grad`](RunTime::take_grad).
    pub(crate) fn restore_grad(&mut self, node: &Node, grad: Tensor) {
        if let Some(slot) = self.grads.get_mut(node.id.index()) {
            *slot = Some(grad);
        }
    }

    /// Lets go of this cycle's hold on a variable's value, so that an update
    /// can change it in place rather than copy it (copy-on-write: while the
    /// run time holds the value too, it keeps the old one). Returns whether it
    /// held one.
    pub(crate) fn release_value(&mut self, node: &Node) -> bool {
        self.same_graph(node)
            && self
                .values
                .get_mut(node.id.index())
                .and_then(Option::take)
                .is_some()
    }

    /// Holds the variable's current value again, as the cycle's value of the
    /// node, after [`release_value`](RunTime::release_value) and an update.
    pub(crate) fn refresh_value(&mut self, node: &Node) -> Result<()> {
        let value = node.graph.variable_rc(node)?;
        if let Some(slot) = self.values.get_mut(node.id.index()) {
            *slot = Some(value);
        }
        Ok(())
    }

    fn same_graph(&self, node: &Node) -> bool {
        self.graph.as_ref() == Some(&node.graph)
    }
}

/// Checks that input `input` (node `var`) of an op can take `value`: it must be a
/// variable of the same shape.
fn check_assignment(g: &GraphInner, var: NodeId, input: usize, value: &Tensor) -> Result<()> {
    let data = &g.nodes[var.index()];
    match &data.kind {
        NodeKind::Variable(slot) if slot.value.shape() == value.shape() => Ok(()),
        NodeKind::Variable(slot) => Err(Error::ShapeMismatch {
            what: format!("new value of variable {} (input {input})", data.name),
            expected: TensorShape::known(slot.value.shape()),
            got: TensorShape::known(value.shape()),
        }),
        _ => Err(Error::invalid(format!(
            "input {input} ({}, a {}) is assigned a new value by this op, so it must be a Variable",
            data.name, data.type_name
        ))),
    }
}

/// The value computed for `id` this cycle. Forward computes inputs before
/// consumers, so a missing value here is a bug, reported rather than panicking.
fn stored_value<'v>(
    values: &'v [Option<Rc<Tensor>>],
    g: &GraphInner,
    id: NodeId,
) -> Result<&'v Tensor> {
    values
        .get(id.index())
        .and_then(|v| v.as_deref())
        .ok_or_else(|| Error::NoValue(g.nodes[id.index()].name.clone()))
}

/// `Err(Error::Numerics)` when `value` holds NaN or infinity.
/// Counts the NaN and infinite values of `value`: on its memory directly when
/// it is contiguous (split over rayon's threads when large: a count, so the
/// result does not depend on the split), element by element otherwise.
fn count_non_finite(value: &Tensor) -> usize {
    // An all-ones exponent is NaN or infinity; a branch-free test that vectorizes.
    let bad = |s: &[f32]| {
        s.iter()
            .filter(|v| v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
            .count()
    };
    match value.as_slice_memory_order() {
        Some(s) if s.len() >= PARALLEL_MIN_LEN => s.par_chunks(1 << 14).map(bad).sum(),
        Some(s) => bad(s),
        None => value.iter().filter(|v| !v.is_finite()).count(),
    }
}

/// Fails with [`Error::Numerics`] when `value` holds NaN or infinity; `what`
/// (built only then) says which value of the node it is.
fn check_finite(
    value: &Tensor,
    data: &NodeData,
    phase: Phase,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let bad = count_non_finite(value);
    if bad == 0 {
        return Ok(());
    }
    Err(Error::Numerics {
        node: data.name.clone(),
        op: data.type_name.to_string(),
        phase,
        what: what(),
        bad,
        total: value.len(),
    })
}

fn describe_shapes(inputs: &[&Tensor], out: &Tensor) -> String {
    let ins: Vec<String> = inputs.iter().map(|t| format!("{:?}", t.shape())).collect();
    format!("{} -> {:?}", ins.join(" "), out.shape())
}

fn node_error(g: &GraphInner, id: NodeId, phase: Phase, inputs: &[&Tensor], e: Error) -> Error {
    let data = &g.nodes[id.index()];
    Error::Node {
        node: data.name.clone(),
        op: data.type_name.to_string(),
        phase,
        inputs: data
            .inputs
            .iter()
            .zip(inputs)
            .map(|(j, v)| InputDesc {
                name: g.nodes[j.index()].name.clone(),
                shape: TensorShape::known(v.shape()),
            })
            .collect(),
        source: Box::new(e),
    }
}
