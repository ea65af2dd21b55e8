"""The demos' patterns, small: training lowers the loss, batch norm's moving
statistics follow the original's rule, dropout, the conv net pieces."""
import numpy as np
import pytest

import adgraph as ad
from adgraph import initializers, optimizers

from conftest import close


def spiral(n=100, k=3, seed=0):
  rs = np.random.RandomState(seed)
  x = np.zeros((n * k, 2), dtype=np.float32)
  y = np.zeros((n * k, k), dtype=np.float32)
  for j in range(k):
    r = np.linspace(0., 1, n)
    t = np.linspace(j * 4, (j + 1) * 4, n) + rs.randn(n) * 0.2
    x[j * n:(j + 1) * n] = np.c_[r * np.sin(t), r * np.cos(t)]
    y[j * n:(j + 1) * n, j] = 1
  return x, y


def test_spiral_mlp_trains(graph):
  x_val, y_val = spiral()
  tni = initializers.TruncatedNormalInitializer(mean=0.0, stddev=0.5, seed=0)
  zi = initializers.ZerosInitializer()
  x = ad.placeholder((None, 2))
  y = ad.placeholder((None, 3))
  w1, b1 = ad.variable((2, 50), tni), ad.variable((50,), zi)
  w2, b2 = ad.variable((50, 3), tni), ad.variable((3,), zi)
  logits = ad.matmul(ad.relu(ad.matmul(x, w1) + b1), w2) + b2
  loss = ad.reduce_mean(ad.softmax_cross_entropy_loss(labels=y, logits=logits))
  loss = loss + ad.l2norm(w1, 1e-3) + ad.l2norm(w2, 1e-3)
  graph.initialize_variables()
  opt = optimizers.GradientDescentOptimizer(alpha=1.0)
  rt = graph.get_runtime()
  feed = {x: x_val, y: y_val}
  losses = []
  for _ in range(300):
    with rt.forward_backward_cycle():
      opt.optimize(loss, feed)
      losses.append(float(loss.forward(feed)))
      out = logits.forward(feed)
  accuracy = (out.argmax(1) == y_val.argmax(1)).mean()
  assert losses[-1] < 0.5 * losses[0]
  assert accuracy > 0.8


def test_batch_norm_training_and_inference_graphs():
  rs = np.random.RandomState(0)
  vx = rs.randn(8, 4).astype(np.float32) * 3 + 1

  def build(is_training):
    g = ad.Graph()
    g.set_runtime(ad.RunTime())
    with g.as_default_graph():
      x = ad.placeholder((None, 4))
      scale = ad.variable((4,), initializers.OnesInitializer())
      offset = ad.variable((4,), initializers.ZerosInitializer())
      mean = ad.variable((4,), initializers.ZerosInitializer(), trainable=False)
      var = ad.variable((4,), initializers.OnesInitializer(), trainable=False)
      y = ad.fused_batch_norm(x, scale, offset, mean, var, epsilon=1e-3, decay=0.9,
                              is_training=is_training)
    g.initialize_variables()
    return g, x, y, mean, var

  g, x, y, mean, var = build(True)
  with g.get_runtime().forward_backward_cycle():
    out = y.forward({x: vx})
    y.forward({x: vx})  # once per cycle
  bm, bv = vx.mean(0), vx.var(0)
  close(out, (vx - bm) / np.sqrt(bv + 1e-3), atol=1e-4, rtol=1e-4)
  close(mean.val, 0.1 * bm, rtol=1e-5)
  close(var.val, 0.9 + 0.1 * vx.var(0, ddof=1), rtol=1e-5)

  t, tx, ty, tmean, tvar = build(False)
  for dst, src in zip(t.get_variables(False), g.get_variables(False)):
    dst.set_val(src.val)
  with t.get_runtime().forward_backward_cycle():
    close(ty.forward({tx: vx}), (vx - mean.val) / np.sqrt(var.val + 1e-3), atol=1e-4, rtol=1e-4)
  close(tmean.val, mean.val)


def test_dropout(graph):
  x = ad.placeholder((1000,))
  d = ad.dropout(x, 0.25)
  ident = ad.dropout(x, 0.25, is_training=False)
  ones = np.ones(1000, dtype=np.float32)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    out = d.forward({x: ones})
    d.backward({x: ones})
    grad = rt.get_bwval(x.name)
  kept = out != 0
  assert 0.65 < kept.mean() < 0.85
  close(out[kept], np.full(kept.sum(), 1 / 0.75), rtol=1e-6)
  close(grad, out, rtol=1e-6)
  with rt.forward_backward_cycle():
    close(ident.forward({x: ones}), ones)
    ident.backward({x: ones})
    close(rt.get_bwval(x.name), ones)


def test_conv_net_pieces_train(graph):
  rs = np.random.RandomState(0)
  images = rs.rand(16, 8, 8, 1).astype(np.float32)
  labels = np.eye(2, dtype=np.float32)[(images.mean((1, 2, 3)) > 0.5).astype(int)]
  tni = initializers.TruncatedNormalInitializer(mean=0.0, stddev=0.1, seed=0)
  x = ad.placeholder((None, 8, 8, 1))
  y = ad.placeholder((None, 2))
  k = ad.variable((3, 3, 1, 4), tni)
  c = ad.conv2d(x, k, [2, 2], 'SAME')
  bn = ad.fused_batch_norm(c, ad.variable((4,), initializers.OnesInitializer()),
                           ad.variable((4,), initializers.ZerosInitializer()),
                           ad.variable((4,), initializers.ZerosInitializer(), trainable=False),
                           ad.variable((4,), initializers.OnesInitializer(), trainable=False))
  h = ad.maxpool2d(ad.relu(bn), [2, 2], [2, 2], 'VALID')
  w = ad.variable((4, 2), tni)
  logits = ad.matmul(ad.reduce_mean(h, axis=[1, 2]), w)
  loss = ad.reduce_mean(ad.softmax_cross_entropy_loss(labels=y, logits=logits))
  graph.initialize_variables()
  opt = optimizers.AdamOptimizer(alpha=0.05, beta1=0.9, beta2=0.999, epsilon=1e-8)
  rt = graph.get_runtime()
  feed = {x: images, y: labels}
  first = None
  for _ in range(60):
    with rt.forward_backward_cycle():
      opt.optimize(loss, feed)
      value = float(loss.forward(feed))
      first = value if first is None else first
  assert value < 0.7 * first


def test_gradients_as_nodes_and_second_derivatives(graph):
  x = ad.placeholder((3,))
  y = ad.reduce_sum(x * x * x)
  dy = ad.gradients(y, x)
  d2y = ad.gradients(ad.reduce_sum(dy), [x])[0]
  with graph.get_runtime().forward_backward_cycle():
    close(dy.forward({x: [1., 2., 3.]}), [3., 12., 27.])
    close(d2y.forward({x: [1., 2., 3.]}), [6., 12., 18.])
  assert ad.gradients(y, ad.placeholder((2,))) is None


def test_infer_keeps_nothing(graph):
  x = ad.placeholder((2,))
  h = ad.exp(x)
  y = ad.reduce_sum(h)
  rt = graph.get_runtime()
  with rt.forward_backward_cycle():
    out_y, out_h = rt.infer([y, h], {x: [0., 0.]})
    close(out_y, 2.)
    close(out_h, [1., 1.])
    assert not rt._fwval
