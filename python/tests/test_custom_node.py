"""Nodes written in Python, as the original's guide describes: subclass
`Node`, implement `_forward` and `_backward` in NumPy; they mix with built-in
ops in one graph, forward and backward, in both directions."""
import numpy as np
import pytest

import adgraph as ad
from adgraph import optimizers
from adgraph.core import base_node

from conftest import close


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


def square(x):
  return Square(x, graph=ad.get_default_graph())


class ScaledProduct(base_node.Node):
  """Two inputs, per-cycle scratch in _cache_data, a non-node attribute."""

  def __init__(self, x, y, scale, graph):
    super(ScaledProduct, self).__init__(x.shape, graph)
    self._arguments['x'] = x
    self._arguments['y'] = y
    self._scale = scale
    self.forward_calls = 0

  def _forward(self, feed_dict):
    self.forward_calls += 1
    x = self._arguments['x'].forward(feed_dict)
    y = self._arguments['y'].forward(feed_dict)
    self._graph.get_runtime()._cache_data[self.name]['xy'] = (x, y)
    return self._scale * x * y

  def _backward(self, feed_dict):
    grad = self._graph.get_runtime()._bwval[self.name]
    x, y = self._graph.get_runtime()._cache_data[self.name]['xy']
    return {self._arguments['x']: self._scale * y * grad,
            self._arguments['y']: self._scale * x * grad}


def test_square_mixed_with_builtin_ops(graph):
  x = ad.placeholder((2, 3))
  h = ad.exp(x)                 # built-in into Python
  s = square(h)                 # Python node
  y = ad.reduce_sum(s * 3.)     # Python into built-in
  assert s.name == 'Square' and square(x).name == 'Square_0'
  assert repr(s) == '<Square: shape=(2, 3)>'
  vx = np.random.RandomState(0).randn(2, 3).astype(np.float32)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    close(y.forward({x: vx}), 3 * np.exp(2 * vx).sum(), rtol=1e-5)
    y.backward({x: vx})
    close(rt.get_bwval(s.name), np.full((2, 3), 3.))
    close(rt.get_bwval(h.name), 6 * np.exp(vx), rtol=1e-5)
    close(rt.get_bwval(x.name), 6 * np.exp(2 * vx), rtol=1e-5)


def test_two_inputs_cache_data_and_forward_once(graph):
  x = ad.placeholder((3,))
  y = ad.placeholder((3,))
  p = ScaledProduct(x, y, 2.0, graph)
  loss = ad.reduce_sum(p + p)
  vx, vy = np.array([1., 2., 3.]), np.array([4., 5., 6.])
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    loss.backward({x: vx, y: vy})
    close(rt.get_bwval(x.name), 4 * vy)
    close(rt.get_bwval(y.name), 4 * vx)
    close(p.forward({x: vx, y: vy}), 2 * vx * vy)
  assert p.forward_calls == 1
  assert not rt._cache_data


def test_same_input_twice(graph):
  x = ad.placeholder((2,))
  p = ScaledProduct(x, x, 1.0, graph)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    p.backward({x: [3., 4.]})
    # d(x*x)/dx is 2x, but _backward's dict holds one entry per node: the
    # last one wins, as in the original.
    close(rt.get_bwval(x.name), [3., 4.])


def test_trains_with_an_optimizer(graph):
  w = ad.variable((3,), None)
  w.set_val([0., 0., 0.])
  target = ad.constant([1., -2., 3.])
  loss = ad.reduce_sum(square(w - target))
  opt = optimizers.GradientDescentOptimizer(alpha=0.1)
  rt = graph.get_runtime()
  for _ in range(80):
    with rt.forward_backward_cycle():
      opt.optimize(loss, {})
  close(w.val, [1., -2., 3.], atol=1e-4)


def test_node_without_backward_is_a_leaf(graph):
  class Frozen(base_node.Node):
    def __init__(self, x, graph):
      super(Frozen, self).__init__(x.shape, graph)
      self._arguments['x'] = x

    def _forward(self, feed_dict):
      return self._arguments['x'].forward(feed_dict) + 1

  x = ad.placeholder((2,))
  f = Frozen(x, graph)
  y = f * 2. + x
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    close(y.forward({x: [1., 2.]}), [5., 8.])
    y.backward({x: [1., 2.]})
    close(rt.get_bwval(x.name), [1., 1.])  # only through `+ x`


def test_second_derivative_through_a_python_node_is_a_clear_error(graph):
  x = ad.placeholder((2,))
  y = ad.reduce_sum(square(x))
  dx = ad.gradients(y, x)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    close(dx.forward({x: [1., 2.]}), [2., 4.])
  with pytest.raises(ValueError, match='Square'):
    ad.gradients(ad.reduce_sum(dx), x)


def test_exceptions_in_forward_and_backward_come_back_as_themselves(graph):
  class Broken(base_node.Node):
    def __init__(self, x, graph):
      super(Broken, self).__init__(x.shape, graph)
      self._arguments['x'] = x

    def _forward(self, feed_dict):
      v = self._arguments['x'].forward(feed_dict)
      if v.sum() < 0:
        raise ZeroDivisionError('negative input')
      return v

    def _backward(self, feed_dict):
      raise KeyError('no gradient today')

  x = ad.placeholder((2,))
  b = Broken(x, graph)
  y = ad.exp(b)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    with pytest.raises(ZeroDivisionError, match='negative input'):
      y.forward({x: [-1., -2.]})
  with rt.forward_backward_cycle():
    with pytest.raises(KeyError, match='no gradient today'):
      y.backward({x: [1., 2.]})
  with rt.forward_backward_cycle():  # the run time still works
    close(y.forward({x: [0., 0.]}), [1., 1.])


def test_wrong_value_shape_and_type(graph):
  class BadShape(base_node.Node):
    def __init__(self, x, graph):
      super(BadShape, self).__init__((3,), graph)
      self._arguments['x'] = x

    def _forward(self, feed_dict):
      return np.zeros(4)

  class BadReturn(Square):
    def _backward(self, feed_dict):
      return [1.]

  x = ad.placeholder((3,))
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    with pytest.raises(ValueError, match='BadShape'):
      BadShape(x, graph).forward({x: [1., 2., 3.]})
  with rt.forward_backward_cycle():
    with pytest.raises(TypeError, match='dict'):
      BadReturn(x, graph).backward({x: [1., 2., 3.]})


def test_callbacks_may_not_change_the_running_graph(graph):
  class Sneaky(base_node.Node):
    def __init__(self, x, graph):
      super(Sneaky, self).__init__(x.shape, graph)
      self._arguments['x'] = x

    def _forward(self, feed_dict):
      ad.constant(1.)  # adding a node while the graph runs
      return self._arguments['x'].forward(feed_dict)

  class Peeker(base_node.Node):
    def __init__(self, x, other, graph):
      super(Peeker, self).__init__(x.shape, graph)
      self._arguments['x'] = x
      self._other = other

    def _forward(self, feed_dict):
      return self._other.forward(feed_dict)  # not an input

  x = ad.placeholder((2,))
  other = ad.exp(x)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    with pytest.raises(RuntimeError, match='while the graph is running'):
      Sneaky(x, graph).forward({x: [1., 2.]})
  with rt.forward_backward_cycle():
    with pytest.raises(RuntimeError, match='only the values of its inputs'):
      Peeker(x, other, graph).forward({x: [1., 2.]})


def test_init_must_call_node_init():
  class NoInit(base_node.Node):
    def __init__(self):
      pass

  with pytest.raises(TypeError, match='Node.__init__'):
    NoInit()
  with pytest.raises(AttributeError):
    Square(ad.placeholder((2,)), graph=None)
