"""The nodes that start a graph: `Placeholder`, `Variable` and `Constant`."""
import numpy as np

from adgraph.core import base_node
from adgraph.type_utils import to_numpy


def _default(graph):
  if graph is not None:
    return graph
  from adgraph.core.environments import get_default_graph
  return get_default_graph()


class Placeholder(base_node.Node):
  """A node whose value is given at run time: ``feed_dict[node]``
  (``KeyError`` when missing). `None` sizes match any size."""

  def __init__(self, shape, graph=None):
    graph = _default(graph)
    super(Placeholder, self).__init__(shape, graph)
    native = graph._native.placeholder(self._shape._dims('placeholder shape'))
    graph._register(self, native)


class Variable(base_node.Node):
  """A value that lives in the graph across cycles; optimizers update the
  trainable ones. It has no value until ``initialize()`` (or
  ``graph.initialize_variables()``, ``set_val``); feeding it is ignored."""

  def __init__(self, shape, initializer, trainable=True, graph=None):
    graph = _default(graph)
    super(Variable, self).__init__(shape, graph)
    dims = self._shape._dims('variable shape')
    if None in dims:
      raise ValueError('a variable needs a fully known shape, got %r.' % self._shape)
    self._initializer = initializer
    self._trainable = bool(trainable)
    native = graph._native.variable(dims, self._trainable)
    graph._register(self, native)
    graph._uninitialized.add(native.index)
    graph._needs.clear()

  def initialize(self, initial_val=None):
    """Sets `initial_val`, or a value from the initializer
    (``initializer(shape=shape_tuple)``); returns the variable."""
    if initial_val is not None:
      self.set_val(initial_val)
    else:
      if self._initializer is None:
        raise ValueError('variable %s has no initializer.' % self.name)
      self.set_val(self._initializer(shape=self._shape._raw_shape))
    return self

  def set_val(self, val):
    """Sets the value (its shape must be the variable's; stored as float32)."""
    val = np.asarray(val)
    self.check_dynamic_shape(val)
    self._graph._native.set_variable_value(self._native, val)
    self._graph._set_initialized(self._native.index)

  @property
  def val(self):
    """A copy of the current value (``ValueError`` before initialization)."""
    if self._native.index in self._graph._uninitialized:
      raise ValueError('variable %s has not been initialized.' % self.name)
    return self._graph._native.variable_value(self._native)

  @property
  def trainable(self):
    return self._trainable

  def _forward(self, feed_dict=None):
    return self.val


class Constant(base_node.Node):
  """A node holding a fixed value (anything NumPy makes an array of; NaN refused)."""

  def __init__(self, val, graph=None):
    graph = _default(graph)
    val = to_numpy(val)
    super(Constant, self).__init__(val.shape, graph)
    self._val = val
    native = graph._native.constant(val)
    graph._register(self, native)

  def _forward(self, feed_dict=None):
    return self._val
