"""The op functions: the original's (same names, arguments and defaults), then
adgraph's additions. Each takes nodes and returns a new node; shapes are
checked when the node is built (``ValueError`` naming the op, its inputs and
their shapes), argument types too (``TypeError``).

Nodes go into their inputs' graph; origin nodes (`placeholder`, `variable`,
`constant`) into the default graph.
"""
import numbers

import numpy as np

from adgraph import _native
from adgraph.core.base_node import Node, TensorShape
from adgraph.core.environments import get_default_graph
from adgraph.nodes.origin_nodes import Constant, Placeholder, Variable
from adgraph.type_utils import isint

# -- helpers ---------------------------------------------------------------------


def _check_node(x, what='x'):
  if not isinstance(x, Node):
    raise TypeError('%s must be a Node, got %s (use adgraph.constant(value) for a '
                    'fixed value).' % (what, type(x).__name__))
  return x


def _make(native, **arguments):
  """The Python node of `native`, built from `arguments` (the first is in its graph)."""
  first = next(a for a in arguments.values() if isinstance(a, Node))
  return first._graph._wrap(native, arguments)


def _float(value, what):
  if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
    raise TypeError('%s must be a number, got %r.' % (what, value))
  return float(value)


def _int_pair(value, what):
  if not isinstance(value, (list, tuple)):
    raise TypeError('%s must be a list or tuple of 2 ints, got %r.' % (what, value))
  if len(value) != 2 or not all(isint(v) for v in value):
    raise ValueError('%s must be 2 ints, got %r.' % (what, value))
  if not all(v > 0 for v in value):
    raise ValueError('%s must be positive, got %r.' % (what, value))
  return [int(v) for v in value]


def _padding(padding):
  if padding not in ('SAME', 'VALID'):
    raise ValueError("padding must be 'SAME' or 'VALID', got %r." % (padding,))
  return padding


def _axis(axis, ndims, what='axis'):
  """An axis in [-ndims, ndims) as a non-negative int (adgraph's additions)."""
  if not isint(axis):
    raise TypeError('%s must be an int, got %r.' % (what, axis))
  axis = int(axis)
  if not -ndims <= axis < ndims:
    raise ValueError('%s %d is out of range for rank %d.' % (what, axis, ndims))
  return axis % ndims if ndims else axis


def _axes_original(axis, ndims):
  """The original's reduction axes: None, an int or a list/tuple of ints in [0, ndims)."""
  if axis is None:
    return None
  axes = [axis] if not isinstance(axis, (list, tuple)) else list(axis)
  for a in axes:
    if not isint(a):
      raise TypeError('axis must be None, an int or a list/tuple of ints, got %r.' % (axis,))
    if not 0 <= a < ndims:
      raise ValueError('axis %r is out of range [0, %d).' % (a, ndims))
  return [int(a) for a in axes]


def _axes(axis, ndims):
  """Reduction axes for adgraph's additions: negative axes count from the end."""
  if axis is None:
    return None
  axes = [axis] if not isinstance(axis, (list, tuple)) else list(axis)
  return [_axis(a, ndims) for a in axes]


def _unary(op, x):
  _check_node(x)
  return _make(_native.unary(op, x._native), x=x)


def _binary(op, x, y, names=('x', 'y')):
  _check_node(x, names[0])
  _check_node(y, names[1])
  return _make(_native.binary(op, x._native, y._native), **{names[0]: x, names[1]: y})


def _int_list(values, what, minimum=0):
  if not isinstance(values, (list, tuple)):
    raise TypeError('%s must be a list or tuple of ints, got %r.' % (what, values))
  if not all(isint(v) for v in values):
    raise TypeError('%s must hold ints, got %r.' % (what, values))
  if not all(v >= minimum for v in values):
    raise ValueError('%s must hold ints >= %d, got %r.' % (what, minimum, values))
  return [int(v) for v in values]


# -- origin nodes ----------------------------------------------------------------


def placeholder(shape):
  """A node fed at run time (``feed_dict[node]``); `None` sizes match any size."""
  return Placeholder(shape=shape, graph=get_default_graph())


def variable(shape, initializer, trainable=True):
  """A variable of `shape`, valued by `initializer` (any callable taking
  ``shape=``) on ``initialize()``."""
  return Variable(shape=shape, initializer=initializer, trainable=trainable,
                  graph=get_default_graph())


def constant(val):
  """A node holding `val` (anything NumPy makes an array of)."""
  return Constant(val=val, graph=get_default_graph())


# -- the original's ops ------------------------------------------------------------


def add(x, y):
  """`x + y` with NumPy broadcasting."""
  return _binary('add', x, y)


def subtract(x, y):
  """`x - y` with NumPy broadcasting."""
  return _binary('subtract', x, y)


def multiply(x, y):
  """`x * y` with NumPy broadcasting."""
  return _binary('multiply', x, y)


def exp(x):
  """`e^x`, element-wise."""
  return _unary('exp', x)


def matmul(x, y, transpose_a=False, transpose_b=False):
  """The matrix product (batched over leading dims; adgraph adds the transposes)."""
  _check_node(x)
  _check_node(y, 'y')
  return _make(_native.matmul(x._native, y._native, bool(transpose_a), bool(transpose_b)),
               x=x, y=y)


def reshape(x, target_shape):
  """`x` reshaped to `target_shape` (a list/tuple of ints >= -1, at most one -1)."""
  _check_node(x)
  if isinstance(target_shape, TensorShape):
    target_shape = [-1 if d is None else d for d in target_shape._raw_shape]
  shape = _int_list(target_shape, 'target_shape', minimum=-1)
  if shape.count(-1) > 1:
    raise ValueError('target_shape may hold one -1, got %r.' % (target_shape,))
  return _make(_native.reshape(x._native, shape), x=x)


def reduce_mean(x, axis=None, keep_dims=False):
  """The mean over `axis` (None: all; an int or a list/tuple of ints in [0, ndims))."""
  _check_node(x)
  axes = _axes_original(axis, x.shape.ndims)
  return _make(_native.reduce('mean', x._native, axes, bool(keep_dims)), x=x)


def reduce_sum(x, axis=None, keep_dims=False):
  """The sum over `axis` (None: all; an int or a list/tuple of ints in [0, ndims))."""
  _check_node(x)
  axes = _axes_original(axis, x.shape.ndims)
  return _make(_native.reduce('sum', x._native, axes, bool(keep_dims)), x=x)


def pad(x, paddings, constant_value=0):
  """`x` padded with `constant_value`: ``paddings[i] = [before, after]`` for dim i."""
  _check_node(x)
  p = np.asarray(paddings)
  if p.shape != (x.shape.ndims, 2):
    raise ValueError('paddings must be of shape [%d, 2], got %r.' % (x.shape.ndims, paddings))
  if not np.issubdtype(p.dtype, np.number) or (p != np.round(p)).any() or (p < 0).any():
    raise ValueError('paddings must hold non-negative integers, got %r.' % (paddings,))
  return _make(_native.pad(x._native, [[int(a), int(b)] for a, b in p.tolist()],
                           _float(constant_value, 'constant_value')), x=x)


def concat(tensors, axis=0):
  """`tensors` (a list/tuple of at least 2 nodes of one rank) joined along `axis`."""
  if not isinstance(tensors, (list, tuple)):
    raise TypeError('tensors must be a list or tuple of nodes, got %r.' % (tensors,))
  if len(tensors) < 2:
    raise ValueError('concat takes at least 2 tensors, got %d.' % len(tensors))
  for t in tensors:
    _check_node(t, 'each of tensors')
  if not isint(axis):
    raise TypeError('axis must be an int, got %r.' % (axis,))
  ndims = tensors[0].shape.ndims
  if not 0 <= axis < ndims:
    raise ValueError('axis %r is out of range [0, %d).' % (axis, ndims))
  native = _native.concat([t._native for t in tensors], int(axis))
  return _make(native, **{'tensor_%d' % i: t for i, t in enumerate(tensors)})


def _slice_arg(value, what, x):
  if isinstance(value, Constant):
    return [int(v) for v in np.ravel(value._val)], value
  if isinstance(value, Node):
    raise TypeError('slice: %s must be a list/tuple of ints or a Constant node '
                    '(values computed at run time are not supported).' % what)
  if not isinstance(value, (list, tuple)) or not all(
      isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise TypeError('%s must be a list or tuple of Python ints, got %r.' % (what, value))
  if len(value) != x.shape.ndims:
    raise ValueError('%s must have %d entries (the rank of x), got %r.'
                     % (what, x.shape.ndims, value))
  # The original makes a Constant of each (they take Constant names).
  return list(value), x._graph._constant(np.array(value, dtype=np.float32))


def slice(x, begin, sizes):
  """``x[begin[0]:begin[0]+sizes[0], ...]``; a size of -1 runs to the end."""
  _check_node(x)
  begin, begin_node = _slice_arg(begin, 'begin', x)
  sizes, sizes_node = _slice_arg(sizes, 'sizes', x)
  if any(b < 0 for b in begin) or any(s < -1 for s in sizes):
    raise ValueError('slice: begin must be >= 0 and sizes >= -1, got %r and %r.'
                     % (begin, sizes))
  return _make(_native.slice(x._native, begin, sizes), x=x, begin=begin_node,
               sizes=sizes_node)


def sigmoid(x):
  """`1 / (1 + e^-x)`, element-wise."""
  return _unary('sigmoid', x)


def tanh(x):
  """`tanh(x)`, element-wise."""
  return _unary('tanh', x)


def relu(x):
  """`max(x, 0)`, element-wise."""
  return _unary('relu', x)


def leaky_relu(x, alpha):
  """`x` where `x >= 0`, else `alpha * x`."""
  _check_node(x)
  return _make(_native.unary_attr('leaky_relu', x._native, _float(alpha, 'alpha')), x=x)


def dropout(x, rate, is_training=True):
  """Inverted dropout: each value dropped with probability `rate` (a float in
  [0, 1]), the others scaled by ``1 / (1 - rate)``; the identity when not training."""
  _check_node(x)
  if not isinstance(rate, float):
    raise TypeError('rate must be a float, got %r.' % (rate,))
  if not 0. <= rate <= 1.:
    raise ValueError('rate must be in [0, 1], got %r.' % rate)
  if not isinstance(is_training, bool):
    raise TypeError('is_training must be a bool, got %r.' % (is_training,))
  return _make(_native.dropout(x._native, rate, is_training), x=x)


def fused_batch_norm(x, scale, offset, moving_mean, moving_variance, epsilon=0.001,
                     decay=0.999, is_training=True, activation=None, alpha=0.2):
  """Batch normalization over every axis but the last.

  Training: batch mean and (biased) variance, and the moving statistics (which
  must be variables) updated once per cycle as a side effect of forward:
  ``moving = decay * moving + (1 - decay) * batch`` (the unbiased variance).
  Inference: the moving statistics. adgraph adds `activation` (None, 'relu' or
  'leaky_relu' with `alpha`): the activation applied in the same node.
  """
  for name, n in (('x', x), ('scale', scale), ('offset', offset),
                  ('moving_mean', moving_mean), ('moving_variance', moving_variance)):
    _check_node(n, name)
  if not isinstance(is_training, bool):
    raise TypeError('is_training must be a bool, got %r.' % (is_training,))
  act = 'none' if activation is None else activation
  native = _native.fused_batch_norm(
      x._native, scale._native, offset._native, moving_mean._native,
      moving_variance._native, _float(epsilon, 'epsilon'), _float(decay, 'decay'),
      is_training, act, _float(alpha, 'alpha'))
  return _make(native, x=x, scale=scale, offset=offset, moving_mean=moving_mean,
               moving_variance=moving_variance)


def conv2d(x, kernel, strides, padding):
  """2-D convolution: `x` NHWC, `kernel` [kh, kw, in, out], `padding` 'SAME' or 'VALID'."""
  _check_node(x)
  _check_node(kernel, 'kernel')
  native = _native.conv('conv2d', x._native, kernel._native, _int_pair(strides, 'strides'),
                        _padding(padding))
  return _make(native, x=x, kernel=kernel)


def conv2d_transpose(x, kernel, strides, padding):
  """The transpose of conv2d (its gradient w.r.t. its input): `kernel`
  [kh, kw, out, in] with in = x's channels; output size ``in * stride`` (SAME)
  or ``in * stride + max(k - stride, 0)`` (VALID)."""
  _check_node(x)
  _check_node(kernel, 'kernel')
  native = _native.conv('conv2d_transpose', x._native, kernel._native,
                        _int_pair(strides, 'strides'), _padding(padding))
  return _make(native, x=x, kernel=kernel)


def maxpool2d(x, kernel_size, strides, padding):
  """2-D max pooling of NHWC `x` (SAME padding is never the max)."""
  _check_node(x)
  native = _native.pool('max', x._native, _int_pair(kernel_size, 'kernel_size'),
                        _int_pair(strides, 'strides'), _padding(padding))
  return _make(native, x=x)


def avgpool2d(x, kernel_size, strides, padding):
  """2-D average pooling of NHWC `x` (SAME padding is not counted)."""
  _check_node(x)
  native = _native.pool('avg', x._native, _int_pair(kernel_size, 'kernel_size'),
                        _int_pair(strides, 'strides'), _padding(padding))
  return _make(native, x=x)


def l2norm(x, scalar):
  """`scalar * 0.5 * sum(x ** 2)`."""
  _check_node(x)
  return _make(_native.unary_attr('l2norm', x._native, _float(scalar, 'scalar')), x=x)


def softmax_cross_entropy_loss(labels, logits):
  """Per-example softmax cross-entropy over the last axis (no gradient to `labels`)."""
  return _binary('softmax_cross_entropy_loss', labels, logits, ('labels', 'logits'))


def sigmoid_cross_entropy_loss(labels, logits):
  """Element-wise ``max(x, 0) - x * z + log(1 + e^-|x|)`` (no gradient to `labels`)."""
  return _binary('sigmoid_cross_entropy_loss', labels, logits, ('labels', 'logits'))


# -- adgraph's additions ------------------------------------------------------------


def divide(x, y):
  """`x / y` with NumPy broadcasting."""
  return _binary('divide', x, y)


def negate(x):
  """`-x`."""
  return _unary('negate', x)


def log(x):
  """The natural logarithm."""
  return _unary('log', x)


def sqrt(x):
  """The square root."""
  return _unary('sqrt', x)


def square(x):
  """`x ** 2`."""
  return _unary('square', x)


def pow(x, exponent):
  """`x ** exponent` for a number `exponent`."""
  _check_node(x)
  return _make(_native.unary_attr('pow', x._native, _float(exponent, 'exponent')), x=x)


def abs(x):
  """`|x|`."""
  return _unary('abs', x)


def sin(x):
  """`sin(x)`."""
  return _unary('sin', x)


def cos(x):
  """`cos(x)`."""
  return _unary('cos', x)


def erf(x):
  """The error function."""
  return _unary('erf', x)


def log1p(x):
  """`log(1 + x)`, accurate near 0."""
  return _unary('log1p', x)


def rsqrt(x):
  """`1 / sqrt(x)`."""
  return _unary('rsqrt', x)


def softplus(x):
  """`log(1 + e^x)`."""
  return _unary('softplus', x)


def silu(x):
  """`x * sigmoid(x)`."""
  return _unary('silu', x)


def elu(x, alpha=1.0):
  """`x` where `x > 0`, else `alpha * (e^x - 1)`."""
  _check_node(x)
  return _make(_native.unary_attr('elu', x._native, _float(alpha, 'alpha')), x=x)


def gelu(x, approximate=False):
  """GELU: exact (erf) or, with `approximate`, the tanh form."""
  _check_node(x)
  return _make(_native.gelu(x._native, bool(approximate)), x=x)


def stop_gradient(x):
  """`x`, through which no gradient flows."""
  return _unary('stop_gradient', x)


def ones_like(x):
  """Ones of `x`'s shape."""
  return _unary('ones_like', x)


def zeros_like(x):
  """Zeros of `x`'s shape."""
  return _unary('zeros_like', x)


def softmax(x, axis=-1):
  """Softmax along `axis`."""
  _check_node(x)
  axis = _axis(axis, x.shape.ndims)
  if axis == x.shape.ndims - 1:
    return _unary('softmax', x)
  return _make(_native.softmax_axis('softmax', x._native, axis), x=x)


def log_softmax(x, axis=-1):
  """Log-softmax along `axis`."""
  _check_node(x)
  return _make(_native.softmax_axis('log_softmax', x._native, _axis(axis, x.shape.ndims)), x=x)


def transpose(x, perm=None):
  """`x` with its dims permuted (reversed when `perm` is None)."""
  _check_node(x)
  n = x.shape.ndims
  perm = list(range(n))[::-1] if perm is None else [_axis(p, n, 'perm') for p in perm]
  return _make(_native.transpose(x._native, perm), x=x)


def maximum(x, y):
  """Element-wise maximum."""
  return _binary('maximum', x, y)


def minimum(x, y):
  """Element-wise minimum."""
  return _binary('minimum', x, y)


def greater(x, y):
  """1.0 where `x > y`, else 0.0."""
  return _binary('greater', x, y)


def less(x, y):
  """1.0 where `x < y`, else 0.0."""
  return _binary('less', x, y)


def equal(x, y):
  """1.0 where `x == y`, else 0.0."""
  return _binary('equal', x, y)


def greater_equal(x, y):
  """1.0 where `x >= y`, else 0.0."""
  return _binary('greater_equal', x, y)


def less_equal(x, y):
  """1.0 where `x <= y`, else 0.0."""
  return _binary('less_equal', x, y)


def where(condition, x, y):
  """`x` where `condition` is non-zero, else `y` (broadcasting)."""
  _check_node(condition, 'condition')
  _check_node(x)
  _check_node(y, 'y')
  return _make(_native.where_(condition._native, x._native, y._native),
               condition=condition, x=x, y=y)


def clip_by_value(x, clip_value_min, clip_value_max):
  """`x` clipped to [min, max]."""
  _check_node(x)
  return _make(_native.clip_by_value(x._native, _float(clip_value_min, 'clip_value_min'),
                                     _float(clip_value_max, 'clip_value_max')), x=x)


def reduce_max(x, axis=None, keep_dims=False):
  """The maximum over `axis` (None: all)."""
  _check_node(x)
  return _make(_native.reduce('max', x._native, _axes(axis, x.shape.ndims), bool(keep_dims)),
               x=x)


def reduce_min(x, axis=None, keep_dims=False):
  """The minimum over `axis` (None: all)."""
  _check_node(x)
  return _make(_native.reduce('min', x._native, _axes(axis, x.shape.ndims), bool(keep_dims)),
               x=x)


def argmax(x, axis=-1):
  """The index of the largest value along `axis` (a float tensor of integers)."""
  _check_node(x)
  return _make(_native.arg_reduce('argmax', x._native, _axis(axis, x.shape.ndims)), x=x)


def argmin(x, axis=-1):
  """The index of the smallest value along `axis`."""
  _check_node(x)
  return _make(_native.arg_reduce('argmin', x._native, _axis(axis, x.shape.ndims)), x=x)


def cumsum(x, axis=0, exclusive=False, reverse=False):
  """The cumulative sum along `axis`."""
  _check_node(x)
  return _make(_native.cumsum(x._native, _axis(axis, x.shape.ndims), bool(exclusive),
                              bool(reverse)), x=x)


def stack(tensors, axis=0):
  """Nodes of one shape stacked along a new `axis`."""
  tensors = list(tensors)
  for t in tensors:
    _check_node(t, 'each of tensors')
  axis = _axis(axis, tensors[0].shape.ndims + 1) if tensors else 0
  return _make(_native.stack([t._native for t in tensors], axis),
               **{'tensor_%d' % i: t for i, t in enumerate(tensors)})


def unstack(x, axis=0):
  """The slices of `x` along `axis`, as a list of nodes."""
  _check_node(x)
  natives = _native.multi('unstack', x._native, _axis(axis, x.shape.ndims))
  return [_make(n, x=x) for n in natives]


def split(x, num_or_size_splits, axis=0):
  """`x` split along `axis` into that many equal parts, or parts of those sizes."""
  _check_node(x)
  axis = _axis(axis, x.shape.ndims)
  if isint(num_or_size_splits):
    natives = _native.multi('split', x._native, axis, num=int(num_or_size_splits))
  else:
    natives = _native.multi('split', x._native, axis,
                            sizes=_int_list(num_or_size_splits, 'size_splits', -1))
  return [_make(n, x=x) for n in natives]


def tile(x, multiples):
  """`x` repeated `multiples[i]` times along each dim."""
  _check_node(x)
  return _make(_native.tile(x._native, _int_list(multiples, 'multiples')), x=x)


def expand_dims(x, axis):
  """`x` with a new dim of size 1 at `axis`."""
  _check_node(x)
  return _make(_native.expand_dims(x._native, _axis(axis, x.shape.ndims + 1)), x=x)


def squeeze(x, axis=None):
  """`x` without its size-1 dims (those of `axis`, or all)."""
  _check_node(x)
  if axis is None:
    axes = [i for i, d in enumerate(x.shape._raw_shape) if d == 1]
  else:
    axes = _axes(axis, x.shape.ndims)
  return _make(_native.squeeze(x._native, axes), x=x)


def broadcast_to(x, shape):
  """`x` broadcast to `shape`."""
  _check_node(x)
  return _make(_native.broadcast_to(x._native, _int_list(list(shape), 'shape')), x=x)


def gather(params, indices, axis=0):
  """The slices of `params` at `indices` (a node of integer values) along `axis`."""
  _check_node(params, 'params')
  _check_node(indices, 'indices')
  return _make(_native.gather(params._native, indices._native,
                              _axis(axis, params.shape.ndims)), params=params, indices=indices)


def embedding_lookup(params, ids):
  """The rows of `params` at `ids`."""
  return _binary('embedding_lookup', params, ids, ('params', 'ids'))


def one_hot(indices, depth, on_value=1.0, off_value=0.0):
  """One-hot vectors of `depth` for integer `indices`."""
  _check_node(indices, 'indices')
  return _make(_native.one_hot(indices._native, int(depth), _float(on_value, 'on_value'),
                               _float(off_value, 'off_value')), indices=indices)


def sparse_softmax_cross_entropy_loss(labels, logits):
  """Softmax cross-entropy with integer class `labels` (no gradient to `labels`)."""
  return _binary('sparse_softmax_cross_entropy_loss', labels, logits, ('labels', 'logits'))


def layer_norm(x, gamma, beta, begin_norm_axis=-1, epsilon=1e-5):
  """Layer normalization over the dims from `begin_norm_axis` on, then ``* gamma + beta``."""
  for name, n in (('x', x), ('gamma', gamma), ('beta', beta)):
    _check_node(n, name)
  return _make(_native.layer_norm(x._native, gamma._native, beta._native,
                                  _axis(begin_norm_axis, x.shape.ndims),
                                  _float(epsilon, 'epsilon')), x=x, gamma=gamma, beta=beta)


def add_n(tensors):
  """The sum of nodes of one shape."""
  tensors = list(tensors)
  for t in tensors:
    _check_node(t, 'each of tensors')
  return _make(_native.add_n([t._native for t in tensors]),
               **{'tensor_%d' % i: t for i, t in enumerate(tensors)})


# -- derivatives as nodes ------------------------------------------------------------


def _node_list(nodes, what):
  single = isinstance(nodes, Node)
  nodes = [nodes] if single else list(nodes)
  for n in nodes:
    _check_node(n, what)
  return nodes, single


def gradients(ys, xs, grad_ys=None):
  """The gradients of ``sum(ys)`` (each weighted by `grad_ys`) w.r.t. each of
  `xs`, as nodes of the graph (so they can be differentiated again); `None`
  for an x that does not affect ys. `xs` a node gives one node (or None)."""
  ys, _ = _node_list(ys, 'ys')
  xs, single = _node_list(xs, 'xs')
  gys = None if grad_ys is None else _node_list(grad_ys, 'grad_ys')[0]
  natives = _native.gradients([y._native for y in ys], [x._native for x in xs],
                              None if gys is None else [g._native for g in gys])
  graph = ys[0]._graph
  out = [None if n is None else graph._node_for(n) for n in natives]
  return out[0] if single else out


def hessian_vector_product(loss, xs, vs):
  """For each x of `xs`: the gradient of ``sum_j grad_j(loss) . vs[j]`` w.r.t. x."""
  _check_node(loss, 'loss')
  xs, _ = _node_list(xs, 'xs')
  vs, _ = _node_list(vs, 'vs')
  natives = _native.hessian_vector_product(loss._native, [x._native for x in xs],
                                           [v._native for v in vs])
  return [None if n is None else loss._graph._node_for(n) for n in natives]


def jacobian(y, x):
  """The Jacobian of `y` w.r.t. `x` as a node of shape ``y.shape + x.shape``."""
  _check_node(y, 'y')
  _check_node(x)
  return y._graph._node_for(_native.jacobian(y._native, x._native))

