"""Engine errors as Python exceptions carrying the engine's message: a bad
feed, a wrong shape, a closed run time never abort the interpreter."""
import threading

import numpy as np
import pytest

import adgraph as ad
from adgraph import initializers


def test_errors_carry_node_op_and_shapes(graph):
  a = ad.placeholder((2, 3))
  b = ad.placeholder((4, 5))
  with pytest.raises(ValueError) as e:
    ad.matmul(a, b)
  msg = str(e.value)
  assert 'MatMul' in msg and 'Placeholder' in msg and '(2, 3)' in msg and '(4, 5)' in msg


def test_run_time_shape_error(graph):
  a = ad.placeholder((None, 3))
  y = ad.reshape(a, [2, 3])
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    with pytest.raises(ValueError, match='Reshape'):
      y.forward({a: np.zeros((4, 3))})


def test_missing_feed_is_a_key_error(graph):
  a = ad.placeholder((2,))
  y = ad.exp(a)
  with graph.get_runtime().forward_backward_cycle():
    with pytest.raises(KeyError, match='Placeholder'):
      y.forward({})
    with pytest.raises(KeyError):
      y.forward(None)


def test_bad_feed_values(graph):
  a = ad.placeholder((2,))
  y = ad.exp(a)
  rt = graph.get_runtime()
  for bad in (['x', 'y'], [[1., 2.], [3.]], object()):
    with rt.forward_backward_cycle():
      with pytest.raises((ValueError, TypeError)):
        y.forward({a: bad})
  with rt.forward_backward_cycle():
    with pytest.raises(TypeError, match='keys must be nodes'):
      y.forward({'a': [1., 2.]})
  with rt.forward_backward_cycle():
    with pytest.raises(TypeError):
      y.forward([(a, [1., 2.])])


def test_nodes_of_two_graphs(graph):
  a = ad.placeholder((2,))
  other = ad.Graph()
  with other.as_default_graph():
    b = ad.placeholder((2,))
  with pytest.raises(ValueError, match='different graphs'):
    ad.add(a, b)


def test_run_time_after_errors_and_reset(graph):
  a = ad.placeholder((2,))
  y = ad.exp(a)
  rt = graph.get_runtime()
  with pytest.raises(KeyError):
    y.forward({})
  rt.reset()
  np.testing.assert_allclose(y.forward({a: [0., 0.]}), [1., 1.])
  rt.reset()
  graph.reset_runtime()
  with pytest.raises(ValueError, match='runtime must be set'):
    y.forward({a: [0., 0.]})
  graph.set_runtime(rt)


def test_runtime_used_on_two_graphs_in_one_cycle(graph):
  a = ad.placeholder((2,))
  other = ad.Graph()
  other.set_runtime(graph.get_runtime())
  with other.as_default_graph():
    b = ad.placeholder((2,))
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    ad.exp(a).forward({a: [0., 0.]})
    with pytest.raises(ValueError, match='different graphs'):
      ad.exp(b).forward({b: [0., 0.]})


def test_numerics_check(graph):
  a = ad.placeholder((2,))
  y = ad.log(a)
  rt = graph.get_runtime()
  rt.set_check_numerics(True)
  try:
    with rt.forward_backward_cycle():
      with pytest.raises(ValueError, match='Log'):
        y.forward({a: [1., 0.]})
  finally:
    rt.set_check_numerics(False)


def test_other_threads_get_an_error_not_a_crash(graph):
  a = ad.placeholder((2,))
  y = ad.exp(a)
  caught = []

  def worker():
    try:
      y.forward({a: [0., 0.]})
    except RuntimeError as e:
      caught.append(str(e))

  t = threading.Thread(target=worker)
  t.start()
  t.join()
  assert caught and 'thread' in caught[0]


def test_gradient_of_an_unreached_node(graph):
  a = ad.placeholder((2,))
  b = ad.placeholder((2,))
  y = ad.exp(a)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    y.backward({a: [0., 0.], b: [1., 1.]})
    with pytest.raises(ValueError, match="node 'Placeholder_0' not in bwval"):
      rt.get_bwval(b.name)


def test_set_val_shape_and_uninitialized(graph):
  v = ad.variable((2,), initializers.ZerosInitializer())
  with pytest.raises(ValueError, match='has not been initialized'):
    v.val
  with pytest.raises(ValueError):
    v.set_val([1., 2., 3.])
