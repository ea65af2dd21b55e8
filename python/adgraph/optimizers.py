"""Optimizers, as the original's (``autodiff.optimizers``), on the engine's.

Made with keyword parameters (a missing one raises ``KeyError`` when the
optimizer is first used); ``compute_gradients`` returns ``[(gradient,
variable)]`` (the arrays are the caller's: they outlive the cycle),
``apply_gradients`` updates the variables, ``optimize`` does both in the
engine without copying either. State (moments, step count) is per variable.

Subclass `Optimizer` and override ``apply_gradients`` for an update rule of
your own in NumPy (``var.set_val(var.val - ...)``).
"""
from adgraph import _native
from adgraph.core.base_node import Node


class Optimizer(object):
  """Base class: keeps the keyword parameters, shows them in ``repr``."""

  # The engine optimizer's factory and its parameters in order (subclasses).
  _factory = None
  _param_names = ()

  def __init__(self, **params):
    self._params = params
    self._params_str = ', '.join('%s=%s' % (k, v) for k, v in params.items())
    self._engine = None

  def __repr__(self):
    if self._params_str:
      return '<%s:%s>' % (type(self).__name__, self._params_str)
    return '<%s>' % type(self).__name__

  def _native(self):
    if self._engine is None:
      args = [float(self._params[k]) for k in self._param_names]  # KeyError when missing
      self._engine = type(self)._factory(*args)
    return self._engine

  @staticmethod
  def _variables(objective, var_list):
    if not isinstance(objective, Node):
      raise TypeError('objective must be a Node, got %s.' % type(objective).__name__)
    if var_list is None:
      return None
    return [v for v in var_list if v.trainable]

  def compute_gradients(self, objective, feed_dict, var_list=None):
    """Back-propagates from `objective` (upstream all ones) in its graph's run
    time and returns ``[(gradient, variable)]`` for `var_list` (default: the
    graph's trainable variables; non-trainable ones are dropped)."""
    var_list = self._variables(objective, var_list)
    graph = objective._graph
    runtime = graph.get_runtime()
    graph._check_initialized(objective)
    pairs = runtime._call(feed_dict, runtime._native.compute_gradients, objective._native,
                          runtime._feed_arg(feed_dict),
                          None if var_list is None else [v._native for v in var_list])
    runtime._bw_arrays.clear()
    return [(g, graph._node_for(v)) for g, v in pairs]

  def apply_gradients(self, grads_and_vars):
    """Updates each variable from its gradient; returns None."""
    if type(self)._factory is None:
      raise NotImplementedError('%s must implement apply_gradients.' % type(self).__name__)
    pairs = [(g, v._native) for g, v in grads_and_vars]
    self._native().apply_gradients(pairs)

  def optimize(self, objective, feed_dict, var_list=None):
    """``apply_gradients(compute_gradients(objective, feed_dict, var_list))``."""
    if type(self)._factory is None or type(self).apply_gradients is not Optimizer.apply_gradients:
      self.apply_gradients(self.compute_gradients(objective, feed_dict, var_list))
      return
    var_list = self._variables(objective, var_list)
    graph = objective._graph
    runtime = graph.get_runtime()
    graph._check_initialized(objective)
    runtime._call(feed_dict, self._native().optimize, runtime._native, objective._native,
                  runtime._feed_arg(feed_dict),
                  None if var_list is None else [v._native for v in var_list])
    runtime._bw_arrays.clear()

  def state(self):
    """The optimizer's state as ``[(name, array)]`` (for checkpoints)."""
    return self._native().state()

  def load_state(self, state, graph):
    """Puts back a state read by `state`, finding the variables by name in `graph`."""
    self._native().load_state(list(state), graph._native)


class GradientDescentOptimizer(Optimizer):
  """``v -= alpha * g`` (parameter `alpha`)."""
  _factory = staticmethod(_native.Optimizer.gradient_descent)
  _param_names = ('alpha',)


class MomentumOptimizer(Optimizer):
  """Gradient descent with momentum (parameters `alpha`, `momentum`)."""
  _factory = staticmethod(_native.Optimizer.momentum)
  _param_names = ('alpha', 'momentum')


class AdamOptimizer(Optimizer):
  """Adam in TF1's form (parameters `alpha`, `beta1`, `beta2`, `epsilon`):
  ``v -= alpha * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(s) + epsilon)``."""
  _factory = staticmethod(_native.Optimizer.adam)
  _param_names = ('alpha', 'beta1', 'beta2', 'epsilon')


class AdamWOptimizer(Optimizer):
  """Adam with decoupled weight decay (parameters `alpha`, `weight_decay`,
  `beta1`, `beta2`, `epsilon`)."""
  _factory = staticmethod(_native.Optimizer.adamw)
  _param_names = ('alpha', 'weight_decay', 'beta1', 'beta2', 'epsilon')


class RMSPropOptimizer(Optimizer):
  """RMSProp, the original's formula (parameters `alpha`, `rho`, `momentum`,
  `epsilon`): ``ms = rho*ms + (1-rho)*g^2; mom = momentum*mom +
  alpha*g/(sqrt(ms)+epsilon); v -= mom``."""
  _factory = staticmethod(_native.Optimizer.rmsprop)
  _param_names = ('alpha', 'rho', 'momentum', 'epsilon')
