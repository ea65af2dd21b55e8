"""`Graph`, `RunTime` and the default graph.

A `Graph` holds nodes; a `RunTime` holds the values and gradients of one
forward-backward cycle. Attach one to the other with
``graph.set_runtime(runtime)``; every ``forward``/``backward`` on the graph's
nodes then runs in that run time.
"""
import collections
import collections.abc
import contextlib

import numpy as np

from adgraph import _native
from adgraph.core.base_node import Node, TensorShape

# Graphs made default by `as_default_graph`, innermost last (process-wide,
# like the original's module-level stack).
_DEFAULT_STACK = []
_PROCESS_GRAPH = []


def get_default_graph():
  """The innermost graph made default by ``as_default_graph``, else the
  process's own graph (made on first use)."""
  if _DEFAULT_STACK:
    return _DEFAULT_STACK[-1]
  if not _PROCESS_GRAPH:
    _PROCESS_GRAPH.append(Graph())
  return _PROCESS_GRAPH[0]


_OP_CLASSES = {}


def _op_class(type_name):
  """The Python class of built-in nodes of a type (``Add``, ``MatMul``, ...)."""
  cls = _OP_CLASSES.get(type_name)
  if cls is None:
    from adgraph.nodes import origin_nodes
    cls = getattr(origin_nodes, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
      cls = type(type_name, (_OpNode,), {'__module__': 'adgraph.nodes'})
    _OP_CLASSES[type_name] = cls
  return cls


class _OpNode(Node):
  """A node computed by one of the engine's ops."""

  def _forward(self, feed_dict):
    return self.forward(feed_dict)


class Graph(object):
  """A computational graph: uniquely named nodes and the values of its variables.

  Graphs compare by identity. Nodes get names after their type in creation
  order: ``Add``, ``Add_0``, ``Add_1``, ...
  """

  def __init__(self):
    self._native = _native.Graph()
    self._runtime = None
    self._nodes = []          # the Python nodes, in creation order
    self._by_index = {}       # engine index -> Python node
    self._uninitialized = set()   # engine indices of variables never set
    self._needs = {}          # engine index -> first uninitialized variable it needs

  # -- nodes -------------------------------------------------------------------

  def add_node(self, node):
    """Called by ``Node.__init__``; the node is named when its ``__init__`` returns."""
    if not isinstance(node, Node):
      raise TypeError('add_node takes a Node, got %s.' % type(node).__name__)

  def _register(self, node, native):
    node._native = native
    node._name = native.name()
    self._nodes.append(node)
    self._by_index[native.index] = node
    return node

  def _wrap(self, native, arguments=None):
    """The Python node for a node just built by the engine."""
    cls = _op_class(native.op_type())
    node = cls.__new__(cls)
    node._shape = TensorShape(*native.dims())
    node._graph = self
    node._arguments = dict(arguments or {})
    return self._register(node, native)

  def _node_for(self, native):
    """The one Python node of an engine node (made, with those of its
    inputs, for nodes the engine built: gradients)."""
    node = self._by_index.get(native.index)
    if node is not None:
      return node
    # Inputs come before their consumers: wrap the missing ones in index order
    # (no recursion: a gradient graph can be deep).
    missing = {}
    stack = [native]
    while stack:
      n = stack.pop()
      if n.index in missing or n.index in self._by_index:
        continue
      missing[n.index] = n
      stack.extend(n.inputs())
    for index in sorted(missing):
      n = missing[index]
      self._wrap(n, {'input_%d' % i: self._by_index[m.index]
                     for i, m in enumerate(n.inputs())})
    return self._by_index[native.index]

  def _constant(self, value):
    from adgraph.nodes.origin_nodes import Constant
    return Constant(value, graph=self)

  def get_node(self, name):
    """The node called `name` (`KeyError` when there is none)."""
    return self._node_for(self._native.node(name))

  # -- variables ---------------------------------------------------------------

  def get_variables(self, only_trainable=True):
    """The variables in creation order (only the trainable ones by default)."""
    return [self._node_for(n) for n in self._native.variables(bool(only_trainable))]

  def initialize_variables(self, var_dict=None, only_trainable=False):
    """Gives every variable (only the trainable ones if asked) ``var_dict[name]``
    when given, else a fresh value from its initializer."""
    for var in self.get_variables(only_trainable):
      initial_val = (var_dict[var.name]
                     if var_dict is not None and var.name in var_dict else None)
      var.initialize(initial_val)

  def save_variables(self, filename, only_trainable=False):
    """Saves ``{name: value}`` of the variables with ``np.save``, the original's
    format (load it with ``np.load(filename, allow_pickle=True).item()``;
    ``.npy`` is appended when missing). See `save_checkpoint` for safetensors."""
    np.save(filename, dict((v.name, v.val) for v in self.get_variables(only_trainable)))

  def load_variables(self, filename):
    """Sets the variables found by name in a file written by `save_variables`
    (or the original's), leaving the others as they are; returns the names set.

    The file is a pickle: load only files you trust (this is the one place
    adgraph unpickles, and only when you call it).
    """
    values = np.load(filename, allow_pickle=True).item()
    if not isinstance(values, dict):
      raise ValueError('%s does not hold a dict of named arrays.' % filename)
    names = []
    for var in self.get_variables(False):
      if var.name in values:
        var.set_val(values[var.name])
        names.append(var.name)
    return names

  def save_checkpoint(self, path, only_trainable=False):
    """Saves the variables to a safetensors file (no pickle), atomically."""
    self._native.save_checkpoint(str(path), bool(only_trainable))

  def restore_checkpoint(self, path, strict=True):
    """Sets the variables from a safetensors file by name and shape.

    `strict`: every variable must be in the file with its shape, and nothing
    else may be (`ValueError` listing every difference; nothing changes).
    Returns ``(restored, missing, unexpected, mismatched)`` lists of names.
    """
    report = self._native.restore_checkpoint(str(path), bool(strict))
    for name in report[0]:
      self._set_initialized(self._native.node(name).index)
    return report

  def _set_initialized(self, index):
    if index in self._uninitialized:
      self._uninitialized.discard(index)
      self._needs.clear()

  def _check_initialized(self, node):
    """`ValueError` when `node` needs a variable that has no value yet."""
    if not self._uninitialized:
      return
    index = node._native.index
    if index not in self._needs:
      self._needs[index] = self._first_uninitialized(node._native)
    name = self._needs[index]
    if name is not None:
      raise ValueError('variable %s has not been initialized.' % name)

  def _first_uninitialized(self, native):
    seen = set()
    stack = [native]
    while stack:
      n = stack.pop()
      if n.index in seen:
        continue
      seen.add(n.index)
      if n.index in self._uninitialized:
        return n.name()
      stack.extend(n.inputs())
    return None

  # -- run time ----------------------------------------------------------------

  def get_runtime(self):
    """The attached `RunTime` (`ValueError` when none is)."""
    if self._runtime is None:
      raise ValueError('runtime must be set.')
    return self._runtime

  def set_runtime(self, runtime):
    """Attaches `runtime`: the graph's nodes run in it."""
    self._runtime = runtime

  def reset_runtime(self):
    """Detaches the run time."""
    self._runtime = None

  @contextlib.contextmanager
  def as_default_graph(self):
    """A context in which new nodes go to this graph (``with g.as_default_graph() as g:``)."""
    _DEFAULT_STACK.append(self)
    try:
      yield self
    finally:
      _DEFAULT_STACK.pop()

  def to_dot(self):
    """The graph in Graphviz's dot language."""
    return self._native.to_dot()

  def __len__(self):
    return len(self._native)

  def __repr__(self):
    return '<Graph: %d nodes>' % len(self._native)


class _ValueView(collections.abc.Mapping):
  """``runtime._fwval`` / ``runtime._bwval``: the values (gradients) of the
  current cycle by node name, read-only; empty outside a cycle."""

  def __init__(self, runtime, forward):
    self._runtime = runtime
    self._forward = forward

  def __getitem__(self, name):
    rt = self._runtime
    if rt._frames:
      return rt._frames[-1].lookup(name, self._forward)
    cache = rt._fw_arrays if self._forward else rt._bw_arrays
    value = cache.get(name)
    if value is not None:
      return value
    try:
      if self._forward:
        value = rt._native.get_fwval(name)
        if value.ndim == 0:
          value = value[()]
      else:
        value = rt._native.get_bwval(name)
    except (KeyError, ValueError):
      raise KeyError(name) from None
    cache[name] = value
    return value

  def __iter__(self):
    rt = self._runtime
    if rt._frames:
      return iter(rt._frames[-1].names(self._forward))
    return iter(rt._native.names_with(self._forward))

  def __len__(self):
    return sum(1 for _ in self)

  def __repr__(self):
    return '{%s}' % ', '.join(repr(k) for k in self)


class RunTime(object):
  """The values and gradients of a graph's forward-backward cycle.

  ``with runtime.forward_backward_cycle():`` clears them on entry and exit.
  ``_fwval``/``_bwval`` map node names to the cycle's values/gradients;
  ``_cache_data`` is per-node scratch (a dict per name) for custom nodes.
  """

  def __init__(self, seed=0):
    """`seed` starts the random generator of dropout masks."""
    self._native = _native.RunTime(seed)
    self._fwval = _ValueView(self, True)
    self._bwval = _ValueView(self, False)
    self._cache_data = collections.defaultdict(dict)
    self._nodes_stop_grad = set()
    self._node_arrays = {}  # (graph id, node index) -> value handed out this cycle
    self._fw_arrays = {}    # name -> value, for _fwval
    self._bw_arrays = {}    # name -> gradient, for _bwval
    self._frames = []       # custom nodes being run by the engine
    self._feed = None       # the feed_dict of the engine call in progress

  def _call(self, feed_dict, fn, *args):
    """Runs an engine call with `feed_dict` visible to custom nodes."""
    outer = self._feed
    self._feed = feed_dict
    try:
      return fn(*args)
    finally:
      self._feed = outer

  @staticmethod
  def _feed_arg(feed_dict):
    if feed_dict is None or type(feed_dict) is dict:
      return feed_dict
    if isinstance(feed_dict, collections.abc.Mapping):
      return dict(feed_dict)
    raise TypeError('feed_dict must be a dict {node: value}, got %s.'
                    % type(feed_dict).__name__)

  def _forward(self, node, feed_dict):
    if self._frames:
      return self._frames[-1].value_of(node)
    native = node._native
    key = (native.graph_id, native.index)
    value = self._node_arrays.get(key)
    if value is not None:
      return value
    node._graph._check_initialized(node)
    feed = self._feed_arg(feed_dict)
    value = self._call(feed_dict, self._native.forward, native, feed)
    if value.ndim == 0:
      value = value[()]
    self._node_arrays[key] = value
    return value

  def _backward(self, node, feed_dict, bwval):
    if self._frames:
      raise RuntimeError('backward() cannot be called inside a custom node\'s '
                         '_forward or _backward.')
    node._graph._check_initialized(node)
    feed = self._feed_arg(feed_dict)
    self._bw_arrays.clear()
    self._call(feed_dict, self._native.backward, node._native, feed, bwval)

  def get_bwval(self, name):
    """The gradient of the node called `name` in this cycle
    (``ValueError`` when no gradient reached it)."""
    try:
      return self._bwval[name]
    except KeyError:
      raise ValueError("node '%s' not in bwval" % name) from None

  def get_fwval(self, name):
    """The value of the node called `name` in this cycle
    (``ValueError`` when it has not been computed)."""
    try:
      return self._fwval[name]
    except KeyError:
      raise ValueError("node '%s' not in fwval" % name) from None

  def reset(self):
    """Clears the values, gradients, scratch data and stopped nodes."""
    self._native.reset()
    self._native.clear_stop_gradients()
    self._node_arrays = {}
    self._fw_arrays = {}
    self._bw_arrays = {}
    self._cache_data = collections.defaultdict(dict)
    self._nodes_stop_grad = set()

  def stop_grad(self, node):
    """Stops back-propagation at `node` until `reset`: it gets no gradient and passes none on."""
    self._native.stop_gradients_at([node._native])
    self._nodes_stop_grad.add(node.name)

  def grad_stopped(self, node):
    """Whether back-propagation stops at `node`."""
    return node.name in self._nodes_stop_grad

  @contextlib.contextmanager
  def forward_backward_cycle(self, grad_stopped_nodes=None):
    """A context for one cycle: everything is cleared on entry and on exit;
    gradients stop at `grad_stopped_nodes` during it. Yields the run time."""
    self.reset()
    if grad_stopped_nodes is not None:
      for node in grad_stopped_nodes:
        self.stop_grad(node)
    try:
      yield self
    finally:
      self.reset()

  # -- adgraph's additions -----------------------------------------------------

  def infer(self, nodes, feed_dict=None):
    """The values of `nodes` (a node or a list) in one pass that keeps no
    intermediate value (evaluation: memory holds only live activations)."""
    single = isinstance(nodes, Node)
    nodes = [nodes] if single else list(nodes)
    for n in nodes:
      n._graph._check_initialized(n)
    values = self._call(feed_dict, self._native.infer, [n._native for n in nodes],
                        self._feed_arg(feed_dict))
    values = [v[()] if v.ndim == 0 else v for v in values]
    return values[0] if single else values

  def set_check_numerics(self, on=True):
    """Checks every value and gradient for NaN and infinity (off by default);
    the first bad one raises ``ValueError`` naming the node."""
    self._native.set_check_numerics(bool(on))

  def enable_profiling(self, on=True):
    """Times every node's forward and backward from now on (a new profile)."""
    self._native.enable_profiling(bool(on))

  def profile(self, top=10):
    """The `top` nodes with the most time, as text (`None` when not profiling)."""
    return self._native.profile(top)
