"""adgraph: np-auto-diff's Python API on a static-graph autodiff engine in Rust.

``import adgraph as ad`` where the original's users wrote ``import autodiff as
ad``: graphs, the default graph, ``RunTime``, ``node.forward(feed_dict)``,
``node.backward(feed_dict, bwval=...)``, ``runtime.get_bwval(name)``, every
op with its arguments, ``ad.initializers``, ``ad.optimizers``, saving and
restoring, and nodes written in Python (subclass
``adgraph.core.base_node.Node``). Values are float32 NumPy arrays.

adgraph adds more ops (divide, log, softmax, layer_norm, gather, ...),
``ad.gradients`` (gradients as nodes, so second derivatives), safetensors
checkpoints (``graph.save_checkpoint``), and ``RunTime.infer``.

Set ``ADGRAPH_NUM_THREADS`` to size the kernels' thread pool (default: one
thread per core); the importing thread is one of the pool's threads.
"""
import os as _os

try:
  import numpy as _numpy  # noqa: F401
except ImportError:  # pragma: no cover
  raise ImportError('numpy must be installed to use adgraph.')

from adgraph import _native
from adgraph import core
from adgraph import exports
from adgraph import initializers
from adgraph import nodes
from adgraph import optimizers
from adgraph import train
from adgraph import type_utils
from adgraph.core.base_node import Node, TensorShape
from adgraph.core.environments import Graph, RunTime, get_default_graph
from adgraph.exports import (
    # the original's
    placeholder, variable, constant, add, subtract, multiply, exp, matmul, reshape,
    reduce_mean, reduce_sum, pad, concat, slice, sigmoid, tanh, relu, leaky_relu, dropout,
    fused_batch_norm, conv2d, conv2d_transpose, maxpool2d, avgpool2d, l2norm,
    softmax_cross_entropy_loss, sigmoid_cross_entropy_loss,
    # adgraph's
    divide, negate, log, sqrt, square, pow, abs, sin, cos, erf, log1p, rsqrt, softplus, silu,
    elu, gelu, stop_gradient, ones_like, zeros_like, softmax, log_softmax, transpose, maximum,
    minimum, greater, less, equal, greater_equal, less_equal, where, clip_by_value, reduce_max,
    reduce_min, argmax, argmin, cumsum, stack, unstack, split, tile, expand_dims, squeeze,
    broadcast_to, gather, embedding_lookup, one_hot, sparse_softmax_cross_entropy_loss,
    layer_norm, add_n, gradients, hessian_vector_product, jacobian)


def init_thread_pool(num_threads=None):
  """Builds the kernels' thread pool with the calling thread as one of its
  threads (done at import; a second call raises ``ValueError``)."""
  return _native.init_thread_pool(num_threads)


def retain_freed_memory():
  """Keeps memory freed by one training step for the next (glibc): fewer page
  faults per step, at the price of keeping the peak heap. Returns whether it could."""
  return _native.retain_freed_memory()


def _init_pool():
  n = _os.environ.get('ADGRAPH_NUM_THREADS')
  try:
    return _native.init_thread_pool(int(n) if n else None)
  except (ValueError, TypeError):
    return None  # a pool exists already (or a bad value): kernels use rayon's pool as it is


# The number of threads of the kernels' pool (None when it was built elsewhere).
num_threads = _init_pool()

__version__ = '0.1.0'
