"""`Node`, the base class of every node, and `TensorShape`, a node's static shape.

Write a new node type as in the original: subclass `Node`, give
`Node.__init__` the static shape and the graph, put the inputs in
``self._arguments``, and implement ``_forward(feed_dict)`` (return the value
from the inputs' ``input.forward(feed_dict)``) and ``_backward(feed_dict)``
(return ``{input: gradient}`` from ``self._graph.get_runtime()._bwval[self.name]``)::

  from adgraph.core import base_node

  class Square(base_node.Node):
    def __init__(self, x, graph=None):
      super(Square, self).__init__(x.shape, graph)
      self._arguments['x'] = x

    def _forward(self, feed_dict):
      x_val = self._arguments['x'].forward(feed_dict)
      return x_val * x_val

    def _backward(self, feed_dict):
      grad_val = self._graph.get_runtime()._bwval[self.name]
      x_val = self._arguments['x'].forward(feed_dict)
      return {self._arguments['x']: 2 * x_val * grad_val}

The engine calls them (``_forward`` once per cycle, ``_backward`` once per
input that needs a gradient), and such nodes mix with built-in ones in one
graph. Their gradient is numeric, so a second derivative through them is an
error naming the node type. A subclass without ``_backward`` passes no
gradient to its inputs.
"""
import weakref

import numpy as np

from adgraph.type_utils import isint


class TensorShape(object):
  """The static shape of a node: sizes, `None` where unknown.

  ``repr`` is ``Shape(None, 1, 2, 3)``; ``shape[i]`` is an int or `None`,
  ``shape[1:]`` a `TensorShape`; there is no ``len`` (use ``ndims``), and
  ``==`` is identity, as in the original.
  """

  def __init__(self, *raw_shape):
    if not all(isint(i) or i is None for i in raw_shape):
      raise TypeError('raw_shape must be a list or tuple of integers or None, '
                      'got %r.' % (raw_shape,))
    self._raw_shape = tuple(None if i is None else int(i) for i in raw_shape)
    self._ndims = len(raw_shape)

  @property
  def ndims(self):
    return self._ndims

  def compatible_with(self, tensor_shape):
    """Whether the ranks are equal and each pair of sizes equal or one `None`.

    Args:
      tensor_shape: a `TensorShape`, or a list or tuple of ints (or `None`).
    """
    if not isinstance(tensor_shape, (TensorShape, list, tuple)):
      raise TypeError('tensor_shape must be a list or tuple or TensorShape.')
    if not isinstance(tensor_shape, TensorShape):
      tensor_shape = TensorShape(*tensor_shape)
    return (self._ndims == tensor_shape._ndims and
            all(a is None or b is None or a == b
                for a, b in zip(self._raw_shape, tensor_shape._raw_shape)))

  def __repr__(self):
    return 'Shape(%s)' % ', '.join(map(str, self._raw_shape))

  __str__ = __repr__

  def __getitem__(self, k):
    if isinstance(k, slice):
      return TensorShape(*self._raw_shape[k])
    return self._raw_shape[k]

  def _dims(self, what='shape'):
    """The sizes for the engine; negative sizes are refused."""
    for d in self._raw_shape:
      if d is not None and d < 0:
        raise ValueError('%s %r has a negative size.' % (what, self))
    return list(self._raw_shape)


def as_shape(shape):
  """`shape` (a `TensorShape`, or a list or tuple of ints or `None`) as a `TensorShape`."""
  if isinstance(shape, TensorShape):
    return shape
  if not isinstance(shape, (list, tuple)):
    raise TypeError('shape must be a list or tuple of integers or None, or a '
                    'TensorShape, got %r.' % (shape,))
  return TensorShape(*shape)


class _NodeMeta(type):
  """Adds a node written in Python to its graph's engine once its
  ``__init__`` has filled in ``_arguments``."""

  def __call__(cls, *args, **kwargs):
    node = super(_NodeMeta, cls).__call__(*args, **kwargs)
    if node.__dict__.get('_native') is None:
      if '_graph' not in node.__dict__:
        raise TypeError('%s.__init__ must call Node.__init__(self, shape, graph).'
                        % cls.__name__)
      node._materialize()
    return node


class Node(object, metaclass=_NodeMeta):
  """A node of a graph: its static `shape`, its `graph`, its unique `name`.

  ``forward(feed_dict)`` returns its value in the current cycle of the
  graph's run time (computed once, then cached); ``backward(feed_dict,
  bwval=None)`` sends gradients from it to everything it depends on.
  Operators ``+ - * / ** @`` and unary ``-``/``+`` build nodes; a non-node
  operand becomes a constant. Nodes hash by identity: they are the keys of
  ``feed_dict``.
  """

  # NumPy defers to the node's reflected operators (`array * node`).
  __array_ufunc__ = None

  def __init__(self, shape, graph):
    """Args:
      shape: the static shape: a list or tuple of ints (or `None`), or a `TensorShape`.
      graph: the `Graph` the node belongs to.
    """
    if graph is None:
      raise AttributeError("graph is None: a node needs a graph "
                           "(e.g. adgraph.get_default_graph())")
    self._shape = as_shape(shape)
    self._graph = graph
    self._arguments = dict()
    graph.add_node(self)

  # -- the engine side ---------------------------------------------------------

  def _materialize(self):
    """Adds this Python-written node to the engine graph."""
    inputs = [a for a in self._arguments.values() if isinstance(a, Node)]
    for a in inputs:
      if a._graph is not self._graph:
        raise ValueError('%s: input %s belongs to another graph.'
                         % (type(self).__name__, a.name))
    has_backward = getattr(type(self), '_backward') is not Node._backward
    native = self._graph._native.add_py_op(
        type(self).__name__, weakref.ref(self), [a._native for a in inputs],
        self._shape._dims('the static shape of %s' % type(self).__name__),
        has_backward)
    self._adgraph_inputs = inputs
    self._graph._register(self, native)

  def _adgraph_forward(self, values):
    """Called by the engine: runs ``_forward`` with the inputs' values."""
    runtime = self._graph.get_runtime()
    runtime._frames.append(_Frame(self, values))
    try:
      val = self._forward(runtime._feed)
    finally:
      runtime._frames.pop()
    val = np.asarray(val)
    self.check_dynamic_shape(val)
    return val

  def _adgraph_backward(self, values, output, grad):
    """Called by the engine: runs ``_backward`` with the inputs' values and
    this node's gradient; returns one gradient (or `None`) per input."""
    runtime = self._graph.get_runtime()
    runtime._frames.append(_Frame(self, values, output, grad))
    try:
      grads = self._backward(runtime._feed)
    finally:
      runtime._frames.pop()
    out = [None] * len(self._adgraph_inputs)
    if grads is None:
      return out
    if not isinstance(grads, dict):
      raise TypeError('%s._backward must return a dict {input node: gradient}, got %s.'
                      % (type(self).__name__, type(grads).__name__))
    seen = set()
    for i, node in enumerate(self._adgraph_inputs):
      # An input listed twice gets its whole gradient once.
      if id(node) in seen:
        continue
      seen.add(id(node))
      g = grads.get(node)
      if g is not None:
        out[i] = np.asarray(g)
    return out

  # -- the original's API ------------------------------------------------------

  @property
  def shape(self):
    return self._shape

  @property
  def graph(self):
    return self._graph

  @property
  def name(self):
    """The node's unique name in its graph: its type, then ``Type_0``, ``Type_1``, ..."""
    try:
      return self._name
    except AttributeError:
      raise AttributeError('%s has no name until its __init__ has returned.'
                           % type(self).__name__) from None

  def __repr__(self):
    return '<%s: shape=%s>' % (self.name, self._shape._raw_shape)

  def check_dynamic_shape(self, val):
    """`ValueError` when the array `val` does not fit the static shape."""
    if not self._shape.compatible_with(tuple(np.shape(val))):
      raise ValueError('%s: static shape (%s) and dynamic shape (%s) are not '
                       'compatible.' % (self.name, self._shape, np.shape(val)))

  def forward(self, feed_dict=None):
    """The node's value in the current cycle of its graph's run time.

    Computed once per cycle (with everything it needs), then the same array
    is returned until ``runtime.reset()``. A rank-0 value is a NumPy scalar.
    """
    return self._graph.get_runtime()._forward(self, feed_dict)

  def backward(self, feed_dict=None, bwval=None):
    """Sends gradients from this node to everything it depends on.

    `bwval` is the gradient of this node (array-like of its value's shape),
    all ones by default; read the results with ``runtime.get_bwval(name)``.
    Gradients add up over several ``backward`` calls in one cycle.
    """
    self._graph.get_runtime()._backward(self, feed_dict, bwval)

  def _forward(self, feed_dict):
    """The node's value from its inputs' values (implemented by subclasses)."""
    raise NotImplementedError('%s does not implement _forward.' % type(self).__name__)

  def _backward(self, feed_dict):
    """``{input: gradient}`` from this node's gradient (implemented by subclasses)."""
    raise NotImplementedError('%s does not implement _backward.' % type(self).__name__)

  # -- operators ---------------------------------------------------------------

  def _convert_arithmetic_operand(self, other):
    if isinstance(other, Node):
      return other
    try:
      return self._graph._constant(other)
    except (TypeError, ValueError) as e:
      raise TypeError('other must be a Node instance or convertable to numpy '
                      'array (%s).' % e) from None

  def _binary(self, op, other, reflected=False):
    from adgraph import exports
    other = self._convert_arithmetic_operand(other)
    if reflected:
      return getattr(exports, op)(other, self)
    return getattr(exports, op)(self, other)

  def __add__(self, other):
    return self._binary('add', other)

  def __radd__(self, other):
    return self._binary('add', other, True)

  def __sub__(self, other):
    return self._binary('subtract', other)

  def __rsub__(self, other):
    return self._binary('subtract', other, True)

  def __mul__(self, other):
    return self._binary('multiply', other)

  def __rmul__(self, other):
    return self._binary('multiply', other, True)

  def __truediv__(self, other):
    return self._binary('divide', other)

  def __rtruediv__(self, other):
    return self._binary('divide', other, True)

  def __matmul__(self, other):
    return self._binary('matmul', other)

  def __rmatmul__(self, other):
    return self._binary('matmul', other, True)

  def __pow__(self, exponent):
    from adgraph import exports
    if isinstance(exponent, Node) or np.ndim(exponent) != 0:
      raise TypeError('node ** exponent takes a number as the exponent.')
    return exports.pow(self, float(exponent))

  def __neg__(self):
    from adgraph import exports
    return exports.subtract(self._graph._constant(0.), self)

  def __pos__(self):
    from adgraph import exports
    return exports.add(self._graph._constant(0.), self)


class _Frame(object):
  """What a Python node's ``_forward``/``_backward`` may read while the engine
  runs it: its inputs' values, its own value and gradient."""

  __slots__ = ('node', 'inputs', 'output', 'grad')

  def __init__(self, node, values, output=None, grad=None):
    self.node = node
    self.inputs = list(zip(node._adgraph_inputs, values))
    self.output = output
    self.grad = grad

  def value_of(self, node):
    for n, v in self.inputs:
      if n is node:
        return v
    if node is self.node and self.output is not None:
      return self.output
    raise RuntimeError(
        'inside %s._forward/_backward only the values of its inputs '
        '(self._arguments) can be read; %s is not one of them.'
        % (type(self.node).__name__, node.name))

  def names(self, forward):
    if forward:
      names = [n.name for n, _ in self.inputs]
      return names + ([self.node.name] if self.output is not None else [])
    return [self.node.name] if self.grad is not None else []

  def lookup(self, name, forward):
    if forward:
      for n, v in self.inputs:
        if n.name == name:
          return v
      if self.output is not None and name == self.node.name:
        return self.output
    elif self.grad is not None and name == self.node.name:
      return self.grad
    raise KeyError(name)
