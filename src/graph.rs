//! [`Graph`] and [`Node`]: the static computational graph, its uniquely named
//! nodes, and the per-thread default graph.
//!
//! ```
//! use adgraph as ad;
//!
//! let graph = ad::Graph::new();
//! let (a, c) = graph.with_default(|| {
//!     let a = ad::placeholder([2, 3]);
//!     let b = ad::placeholder([2, 3]);
//!     let c = ad::add(&a, &b).unwrap();
//!     (a, c)
//! });
//! assert_eq!(a.graph(), &graph);
//! assert_ne!(a.graph(), &ad::get_default_graph());
//! assert_eq!(c.name(), "Add");
//! assert_eq!(graph.node("Placeholder_0").unwrap().shape(), ad::shape![2, 3]);
//! ```

use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, InputDesc, Phase, Result};
use crate::init::Initializer;
use crate::op::Op;
use crate::shape::TensorShape;
use crate::tensor::{IntoTensor, Tensor};

/// Index of a node inside its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The index as `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a node is: an origin (placeholder, constant, variable) or an op.
pub(crate) enum NodeKind {
    Placeholder,
    Constant(Rc<Tensor>),
    Variable(VariableSlot),
    Op(Rc<dyn Op>),
    /// An op that could not be built through an operator (`+`, `*`, ...): the
    /// error is reported when the node is used.
    Failed(Error),
}

pub(crate) struct VariableSlot {
    pub(crate) value: Rc<Tensor>,
    pub(crate) initializer: Rc<dyn Initializer>,
    pub(crate) trainable: bool,
}

pub(crate) struct NodeData {
    pub(crate) name: String,
    pub(crate) type_name: &'static str,
    pub(crate) kind: NodeKind,
    pub(crate) inputs: Vec<NodeId>,
    pub(crate) shape: TensorShape,
    /// For a node built by [`gradients`](crate::gradients()): the forward node
    /// whose gradient it is part of (the profiler counts its time as that
    /// node's backward; `to_dot` marks it).
    pub(crate) grad_of: Option<NodeId>,
}

pub(crate) struct GraphInner {
    pub(crate) id: u64,
    pub(crate) nodes: Vec<NodeData>,
    names: HashMap<String, NodeId>,
    type_counts: HashMap<String, usize>,
    rng: ChaCha8Rng,
    /// The open name scopes, outermost first (see [`Graph::name_scope`]).
    scopes: Vec<String>,
    /// While a gradient is being built: the forward node it belongs to.
    pub(crate) building_grad_of: Option<NodeId>,
    /// The gradient graphs of [`RunTime::backward`](crate::RunTime::backward),
    /// built once per target and set of stopped nodes.
    pub(crate) backward_plans:
        HashMap<crate::gradients::PlanKey, Rc<crate::gradients::BackwardPlan>>,
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A computational graph: a set of uniquely named nodes, and the values of its variables.
///
/// A `Graph` is a cheap handle (cloning it shares the graph). Graphs live on one
/// thread, like TensorFlow 1's default graph; the kernels inside ops use all cores.
/// Nodes are named after their type: the first `Add` is `Add`, the next ones
/// `Add_0`, `Add_1`, ... (as in the original framework).
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Rc<RefCell<GraphInner>>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl PartialEq for Graph {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Graph {}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.borrow();
        write!(f, "Graph#{} ({} nodes)", g.id, g.nodes.len())
    }
}

/// A handle to one node of a graph. Cheap to clone; knows its graph.
#[derive(Clone)]
pub struct Node {
    pub(crate) graph: Graph,
    pub(crate) id: NodeId,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.graph == other.graph
    }
}

impl Eq for Node {}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.graph.id().hash(state);
        self.id.hash(state);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.graph.inner.borrow();
        let n = &g.nodes[self.id.index()];
        write!(f, "<{}: shape={}>", n.name, n.shape)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Graph {
    /// An empty graph whose unseeded initializers draw from seed 0.
    pub fn new() -> Self {
        Graph::with_seed(0)
    }

    /// An empty graph whose initializers without a seed of their own draw from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Graph {
            inner: Rc::new(RefCell::new(GraphInner {
                id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
                nodes: Vec::new(),
                names: HashMap::new(),
                type_counts: HashMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                scopes: Vec::new(),
                building_grad_of: None,
                backward_plans: HashMap::new(),
            })),
        }
    }

    /// A number unique to this graph in the process.
    pub fn id(&self) -> u64 {
        self.inner.borrow().id
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All nodes, in the order they were made (a topological order).
    pub fn nodes(&self) -> Vec<Node> {
        (0..self.len())
            .map(|i| self.handle(NodeId(i as u32)))
            .collect()
    }

    /// The node with this name.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] when there is none.
    pub fn node(&self, name: &str) -> Result<Node> {
        let id = self
            .inner
            .borrow()
            .names
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownNode(name.to_string()))?;
        Ok(self.handle(id))
    }

    /// Makes this graph the thread's default graph until the returned guard is dropped.
    ///
    /// ```
    /// let graph = adgraph::Graph::new();
    /// {
    ///     let _scope = graph.as_default();
    ///     let x = adgraph::placeholder([2]);
    ///     assert_eq!(x.graph(), &graph);
    /// }
    /// assert_ne!(adgraph::get_default_graph(), graph);
    /// ```
    #[must_use = "the graph is the default only while the guard lives"]
    pub fn as_default(&self) -> DefaultGraphGuard {
        DEFAULT_STACK.with(|s| s.borrow_mut().push(self.clone()));
        DefaultGraphGuard { _private: () }
    }

    /// Runs `f` with this graph as the thread's default graph.
    pub fn with_default<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.as_default();
        f()
    }

    pub(crate) fn handle(&self, id: NodeId) -> Node {
        Node {
            graph: self.clone(),
            id,
        }
    }

    pub(crate) fn borrow(&self) -> Ref<'_, GraphInner> {
        self.inner.borrow()
    }

    /// The name a node of `type_name` gets inside the open scopes: the scoped
    /// base name if free, else the base name with the first free `_k` suffix.
    fn unique_name(g: &GraphInner, type_name: &str) -> String {
        let base = Self::scoped(g, type_name);
        if !g.names.contains_key(&base) {
            return base;
        }
        let mut k = g.type_counts.get(&base).copied().unwrap_or(0);
        loop {
            let candidate = format!("{base}_{k}");
            if !g.names.contains_key(&candidate) {
                return candidate;
            }
            k += 1;
        }
    }

    fn scoped(g: &GraphInner, name: &str) -> String {
        let len = g.scopes.iter().map(|s| s.len() + 1).sum::<usize>() + name.len();
        let mut full = String::with_capacity(len);
        for scope in &g.scopes {
            full.push_str(scope);
            full.push('/');
        }
        full.push_str(name);
        full
    }

    fn push(
        &self,
        type_name: &'static str,
        kind: NodeKind,
        inputs: Vec<NodeId>,
        shape: TensorShape,
    ) -> Node {
        self.push_named(type_name, type_name, kind, inputs, shape)
    }

    /// As `push`, naming the node after `base_name` instead of its type.
    fn push_named(
        &self,
        base_name: &str,
        type_name: &'static str,
        kind: NodeKind,
        inputs: Vec<NodeId>,
        shape: TensorShape,
    ) -> Node {
        let mut g = self.inner.borrow_mut();
        let name = Self::unique_name(&g, base_name);
        let base = Self::scoped(&g, base_name);
        if name != base {
            // Advance the base name's counter past the suffix just used.
            let used: usize = name[base.len() + 1..].parse().unwrap_or(0);
            g.type_counts.insert(base, used + 1);
        }
        let id = NodeId(g.nodes.len() as u32);
        g.names.insert(name.clone(), id);
        let grad_of = g.building_grad_of;
        g.nodes.push(NodeData {
            name,
            type_name,
            kind,
            inputs,
            shape,
            grad_of,
        });
        drop(g);
        self.handle(id)
    }

    /// Runs `f` with `scope` opened: the nodes it makes are named
    /// `scope/Type`, `scope/Type_0`, ... (inside scopes already open, and
    /// made unique by a suffix if `scope` is taken: TensorFlow's
    /// `tf.name_scope`). Returns `f`'s result.
    ///
    /// ```
    /// let g = adgraph::Graph::new();
    /// let x = g.placeholder([2]);
    /// let y = g.name_scope("layer", || adgraph::exp(&x)).unwrap();
    /// assert_eq!(y.name(), "layer/Exp");
    /// let z = g.name_scope("layer", || g.name_scope("inner", || adgraph::exp(&x))).unwrap();
    /// assert_eq!(z.name(), "layer/inner/Exp");
    /// ```
    pub fn name_scope<T>(&self, scope: &str, f: impl FnOnce() -> T) -> T {
        self.inner.borrow_mut().scopes.push(scope.to_string());
        let _pop = ScopeGuard(self);
        let _default = self.as_default();
        f()
    }

    /// The first of `base`, `base_1`, `base_2`, ... under which no node is
    /// named yet inside the open name scopes: a fresh scope for a layer
    /// (Keras numbers its layers `dense`, `dense_1`, ...).
    ///
    /// ```
    /// let g = adgraph::Graph::new();
    /// assert_eq!(g.unique_scope_name("dense"), "dense");
    /// g.name_scope("dense", || g.placeholder([1]));
    /// assert_eq!(g.unique_scope_name("dense"), "dense_1");
    /// ```
    pub fn unique_scope_name(&self, base: &str) -> String {
        let g = self.inner.borrow();
        let taken = |candidate: &str| {
            let prefix = format!("{}/", Self::scoped(&g, candidate));
            g.names.keys().any(|n| n.starts_with(&prefix))
        };
        if !taken(base) {
            return base.to_string();
        }
        (1..)
            .map(|k| format!("{base}_{k}"))
            .find(|c| !taken(c))
            .unwrap_or_else(|| base.to_string())
    }

    /// Runs `f` with the nodes it makes marked as part of the gradient of
    /// `forward` (for the profiler and [`to_dot`](Graph::to_dot)).
    pub(crate) fn building_gradient_of<T>(&self, forward: NodeId, f: impl FnOnce() -> T) -> T {
        let previous = self.inner.borrow_mut().building_grad_of.replace(forward);
        let out = f();
        self.inner.borrow_mut().building_grad_of = previous;
        out
    }

    /// A placeholder: a node whose value is fed at run time. `None` dims match any size.
    ///
    /// ```
    /// use adgraph::shape;
    /// let g = adgraph::Graph::new();
    /// let x = g.placeholder(shape![None, 784]);
    /// assert_eq!(x.shape().to_string(), "(None, 784)");
    /// ```
    pub fn placeholder(&self, shape: impl Into<TensorShape>) -> Node {
        self.push(
            "Placeholder",
            NodeKind::Placeholder,
            Vec::new(),
            shape.into(),
        )
    }

    /// A constant node holding `value`.
    ///
    /// # Errors
    /// [`Error::Tensor`] when `value` cannot be made into a tensor.
    pub fn constant(&self, value: impl IntoTensor) -> Result<Node> {
        let value = value.into_tensor()?;
        let shape = TensorShape::known(value.shape());
        Ok(self.push(
            "Constant",
            NodeKind::Constant(Rc::new(value)),
            Vec::new(),
            shape,
        ))
    }

    /// A variable: a value that lives in the graph across runs, initialised now by
    /// `initializer` (again by [`initialize_variables`](Graph::initialize_variables)).
    /// Optimizers update the trainable ones.
    ///
    /// ```
    /// use adgraph::init::Ones;
    /// let g = adgraph::Graph::new();
    /// let w = g.variable(&[2, 2], Ones, true).unwrap();
    /// assert_eq!(g.variable_value(&w).unwrap().sum(), 4.0);
    /// ```
    ///
    /// # Errors
    /// Whatever the initializer reports for this shape.
    pub fn variable(
        &self,
        shape: &[usize],
        initializer: impl Initializer + 'static,
        trainable: bool,
    ) -> Result<Node> {
        let initializer: Rc<dyn Initializer> = Rc::new(initializer);
        let value = {
            let mut g = self.inner.borrow_mut();
            initializer.initialize(shape, &mut g.rng)?
        };
        check_init_shape(&value, shape)?;
        Ok(self.push(
            "Variable",
            NodeKind::Variable(VariableSlot {
                value: Rc::new(value),
                initializer,
                trainable,
            }),
            Vec::new(),
            TensorShape::known(shape),
        ))
    }

    /// A variable named `name` inside the open name scopes (`dense/kernel`
    /// for `name` = `kernel` in scope `dense`; with a `_k` suffix if that name
    /// is taken), otherwise as [`variable`](Graph::variable). Its type is still
    /// `Variable`. The layers ([`crate::layers`]) name their variables so.
    ///
    /// ```
    /// use adgraph::init::Zeros;
    /// let g = adgraph::Graph::new();
    /// let b = g.name_scope("dense", || g.variable_named("bias", &[3], Zeros, true)).unwrap();
    /// assert_eq!(b.name(), "dense/bias");
    /// assert_eq!(b.op_type(), "Variable");
    /// assert!(g.variable_named("", &[3], Zeros, true).is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `name` is empty or holds a `/`;
    /// whatever the initializer reports for this shape.
    pub fn variable_named(
        &self,
        name: &str,
        shape: &[usize],
        initializer: impl Initializer + 'static,
        trainable: bool,
    ) -> Result<Node> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::invalid(format!(
                "a variable name must be non-empty and without '/' (open a name scope for \
                 the path), got {name:?}"
            )));
        }
        let initializer: Rc<dyn Initializer> = Rc::new(initializer);
        let value = {
            let mut g = self.inner.borrow_mut();
            initializer.initialize(shape, &mut g.rng)?
        };
        check_init_shape(&value, shape)?;
        Ok(self.push_named(
            name,
            "Variable",
            NodeKind::Variable(VariableSlot {
                value: Rc::new(value),
                initializer,
                trainable,
            }),
            Vec::new(),
            TensorShape::known(shape),
        ))
    }

    /// A variable whose first value is `value` (its shape is the variable's);
    /// [`initialize_variables`](Graph::initialize_variables) restores that value.
    ///
    /// ```
    /// let g = adgraph::Graph::new();
    /// let b = g.variable_from([0.5f32, -0.5], true).unwrap();
    /// assert_eq!(b.shape(), adgraph::shape![2]);
    /// ```
    ///
    /// # Errors
    /// When `value` cannot be made into a tensor.
    pub fn variable_from(&self, value: impl IntoTensor, trainable: bool) -> Result<Node> {
        let value = value.into_tensor()?;
        let shape = value.shape().to_vec();
        self.variable(&shape, crate::init::FromTensor(value), trainable)
    }

    /// Adds a node computing `op` on `inputs`: the one way every op, built-in or
    /// user-written, enters a graph.
    ///
    /// # Errors
    /// [`Error::GraphMismatch`] when an input belongs to another graph; the
    /// error of a failed operator node among the inputs; [`Error::Node`] wrapping
    /// the shape rule's error, naming the node, the op and its inputs.
    pub fn add_op(&self, op: impl Op, inputs: &[&Node]) -> Result<Node> {
        self.add_op_rc(Rc::new(op), inputs)
    }

    pub(crate) fn add_op_rc(&self, op: Rc<dyn Op>, inputs: &[&Node]) -> Result<Node> {
        let type_name = op.type_name();
        let (ids, shapes) = {
            let g = self.inner.borrow();
            let mut ids = Vec::with_capacity(inputs.len());
            let mut shapes = Vec::with_capacity(inputs.len());
            for input in inputs {
                if input.graph != *self {
                    return Err(Error::GraphMismatch {
                        context: format!("building {type_name}"),
                        a: inputs.first().map(|n| n.name()).unwrap_or_default(),
                        b: input.name(),
                    });
                }
                let data = &g.nodes[input.id.index()];
                if let NodeKind::Failed(e) = &data.kind {
                    return Err(e.clone());
                }
                ids.push(input.id);
                shapes.push(data.shape.clone());
            }
            (ids, shapes)
        };
        let shape_refs: Vec<&TensorShape> = shapes.iter().collect();
        let shape = op.infer_shape(&shape_refs).map_err(|e| {
            let g = self.inner.borrow();
            Error::Node {
                node: Self::unique_name(&g, type_name),
                op: type_name.to_string(),
                phase: Phase::Build,
                inputs: inputs
                    .iter()
                    .zip(&shapes)
                    .map(|(n, s)| InputDesc {
                        name: g.nodes[n.id.index()].name.clone(),
                        shape: s.clone(),
                    })
                    .collect(),
                source: Box::new(e),
            }
        })?;
        Ok(self.push(type_name, NodeKind::Op(op), ids, shape))
    }

    /// Records a failed operator build as a node that reports `error` when used.
    pub(crate) fn failed_node(&self, error: Error) -> Node {
        self.push(
            "Failed",
            NodeKind::Failed(error),
            Vec::new(),
            TensorShape::scalar(),
        )
    }

    /// The variables, in creation order; only the trainable ones if `only_trainable`.
    pub fn variables(&self, only_trainable: bool) -> Vec<Node> {
        let g = self.inner.borrow();
        g.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| match &n.kind {
                NodeKind::Variable(v) => v.trainable || !only_trainable,
                _ => false,
            })
            .map(|(i, _)| self.handle(NodeId(i as u32)))
            .collect()
    }

    /// Draws every variable's value again from its initializer (only the trainable
    /// ones if `only_trainable`).
    ///
    /// # Errors
    /// Whatever an initializer reports.
    pub fn initialize_variables(&self, only_trainable: bool) -> Result<()> {
        let mut g = self.inner.borrow_mut();
        let GraphInner { nodes, rng, .. } = &mut *g;
        for node in nodes.iter_mut() {
            if let NodeKind::Variable(slot) = &mut node.kind {
                if only_trainable && !slot.trainable {
                    continue;
                }
                let shape = slot.value.shape().to_vec();
                let value = slot.initializer.initialize(&shape, rng)?;
                check_init_shape(&value, &shape)?;
                slot.value = Rc::new(value);
            }
        }
        Ok(())
    }

    /// The current value of a variable.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when `node` is not a variable; [`Error::GraphMismatch`]
    /// when it belongs to another graph.
    pub fn variable_value(&self, node: &Node) -> Result<Tensor> {
        self.check_same(node, "reading a variable")?;
        let g = self.inner.borrow();
        match &g.nodes[node.id.index()].kind {
            NodeKind::Variable(slot) => Ok((*slot.value).clone()),
            _ => Err(wrong_kind(&g.nodes[node.id.index()], "Variable")),
        }
    }

    /// The variable's value itself, shared (no copy).
    pub(crate) fn variable_rc(&self, node: &Node) -> Result<Rc<Tensor>> {
        self.check_same(node, "reading a variable")?;
        let g = self.inner.borrow();
        match &g.nodes[node.id.index()].kind {
            NodeKind::Variable(slot) => Ok(slot.value.clone()),
            _ => Err(wrong_kind(&g.nodes[node.id.index()], "Variable")),
        }
    }

    /// Sets a variable's value; the shape must be the variable's.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when `node` is not a variable; [`Error::ShapeMismatch`]
    /// when the value's shape differs from the variable's.
    pub fn set_variable_value(&self, node: &Node, value: impl IntoTensor) -> Result<()> {
        self.check_same(node, "setting a variable")?;
        let value = value.into_tensor()?;
        self.set_variable_by_id(node.id, value)
    }

    pub(crate) fn set_variable_by_id(&self, id: NodeId, value: Tensor) -> Result<()> {
        let mut g = self.inner.borrow_mut();
        let data = &mut g.nodes[id.index()];
        let name = data.name.clone();
        match &mut data.kind {
            NodeKind::Variable(slot) => {
                if slot.value.shape() != value.shape() {
                    return Err(Error::ShapeMismatch {
                        what: format!("new value of variable {name}"),
                        expected: TensorShape::known(slot.value.shape()),
                        got: TensorShape::known(value.shape()),
                    });
                }
                slot.value = Rc::new(value);
                Ok(())
            }
            _ => Err(wrong_kind(data, "Variable")),
        }
    }

    /// Applies `update` to a variable's value in place (copy-free when no run
    /// time still holds the old value).
    pub(crate) fn update_variable_in_place(
        &self,
        node: &Node,
        update: impl FnOnce(&mut Tensor),
    ) -> Result<()> {
        self.check_same(node, "updating a variable")?;
        let mut g = self.inner.borrow_mut();
        let data = &mut g.nodes[node.id.index()];
        match &mut data.kind {
            NodeKind::Variable(slot) => {
                update(Rc::make_mut(&mut slot.value));
                Ok(())
            }
            _ => Err(wrong_kind(data, "Variable")),
        }
    }

    pub(crate) fn check_same(&self, node: &Node, context: &str) -> Result<()> {
        if node.graph != *self {
            return Err(Error::GraphMismatch {
                context: context.to_string(),
                a: format!("of {self:?}"),
                b: node.name(),
            });
        }
        Ok(())
    }
}

/// Closes the innermost name scope when dropped (also when `f` panics).
struct ScopeGuard<'a>(&'a Graph);

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        self.0.inner.borrow_mut().scopes.pop();
    }
}

fn wrong_kind(data: &NodeData, expected: &str) -> Error {
    Error::WrongKind {
        name: data.name.clone(),
        kind: data.type_name.to_string(),
        expected: expected.to_string(),
    }
}

fn check_init_shape(value: &Tensor, shape: &[usize]) -> Result<()> {
    if value.shape() != shape {
        return Err(Error::ShapeMismatch {
            what: "initializer output".into(),
            expected: TensorShape::known(shape),
            got: TensorShape::known(value.shape()),
        });
    }
    Ok(())
}

impl Node {
    /// The node's unique name in its graph.
    pub fn name(&self) -> String {
        self.graph.borrow().nodes[self.id.index()].name.clone()
    }

    /// The node's static shape.
    pub fn shape(&self) -> TensorShape {
        self.graph.borrow().nodes[self.id.index()].shape.clone()
    }

    /// The node's type name (`Placeholder`, `Variable`, `Add`, ...).
    pub fn op_type(&self) -> &'static str {
        self.graph.borrow().nodes[self.id.index()].type_name
    }

    /// The graph the node belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The node's index in its graph.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's inputs, in order.
    pub fn inputs(&self) -> Vec<Node> {
        self.graph.borrow().nodes[self.id.index()]
            .inputs
            .iter()
            .map(|&i| self.graph.handle(i))
            .collect()
    }

    /// Whether this node was built by [`gradients`](crate::gradients()) (or
    /// by [`RunTime::backward`](crate::RunTime::backward)) as part of a gradient.
    pub fn is_gradient(&self) -> bool {
        self.graph.borrow().nodes[self.id.index()].grad_of.is_some()
    }

    /// Whether this node is a trainable variable.
    pub fn is_trainable(&self) -> bool {
        matches!(&self.graph.borrow().nodes[self.id.index()].kind,
            NodeKind::Variable(v) if v.trainable)
    }

    /// `Ok(self)`, or the error recorded when an operator (`+`, `*`, ...) could
    /// not build this node.
    ///
    /// ```
    /// let g = adgraph::Graph::new();
    /// let a = g.placeholder([2, 3]);
    /// let b = g.placeholder([4]);
    /// let c = &a + &b; // cannot broadcast: recorded, not panicking
    /// assert!(c.check().is_err());
    /// ```
    ///
    /// # Errors
    /// The recorded build error.
    pub fn check(self) -> Result<Node> {
        if let NodeKind::Failed(e) = &self.graph.borrow().nodes[self.id.index()].kind {
            return Err(e.clone());
        }
        Ok(self)
    }
}

thread_local! {
    static DEFAULT_STACK: RefCell<Vec<Graph>> = RefCell::new(vec![Graph::new()]);
}

/// Returned by [`Graph::as_default`]; restores the previous default graph when dropped.
pub struct DefaultGraphGuard {
    _private: (),
}

impl Drop for DefaultGraphGuard {
    fn drop(&mut self) {
        DEFAULT_STACK.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() > 1 {
                s.pop();
            }
        });
    }
}

/// The thread's current default graph: the innermost [`Graph::as_default`] scope,
/// or the thread's own graph outside any scope.
pub fn get_default_graph() -> Graph {
    DEFAULT_STACK.with(|s| s.borrow().last().cloned().unwrap_or_else(Graph::new))
}

/// Replaces the thread's own default graph (outside any scope) with a new, empty one.
pub fn reset_default_graph() {
    DEFAULT_STACK.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(base) = s.first_mut() {
            *base = Graph::new();
        }
    });
}
