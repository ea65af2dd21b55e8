"""The workload benchmark from Python: W1-W6 of ../shared/bench/README.md, the
same models, batches and optimizers as examples/bench.rs, built with the
Python API, one line per workload in the bench's format:

  W4 adgraph-py step_ms_median=25.123 steps_per_s=39.80 gflops=154.4 n=50 min_ms=24.9 foreign_cpu=2% batch 50 threads=2

One step is a forward-backward cycle with the optimizer's update (W4inf:
forward only), timed after warm-up; the median of the steps' times.
`python_ms` is the median over the steps of a step's time minus the time the
engine spent in it (forward, backward, update, resets: what the Rust bench's
step does too), i.e. what the Python layer adds per step (the interpreter,
argument conversion, the feed's copy into the engine, the arrays handed back);
`python_share` is that as a share of the step.

  python python/bench.py [--only W1,W4] [--steps 50] [--warmup 10]
  python python/bench.py --only W4 --rust target/release/examples/bench --rounds 3

With --rust, the Rust bench (the binary of `cargo build --release --example
bench`) runs the same workloads interleaved with this script's, --rounds times,
and the Python overhead per step (Python median minus Rust median, as a share
of the Rust median) is printed per round.
"""
import argparse
import gzip
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

# Run as `python python/bench.py`, Python puts python/ first on the path, where
# the package's sources sit without the compiled extension unless it was built
# in place (`maturin develop`): then import the installed package instead.
_HERE = pathlib.Path(__file__).resolve().parent
if not any((_HERE / 'adgraph').glob('_native*')):
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or '.').resolve() != _HERE]

import adgraph as ad  # noqa: E402
from adgraph import _native, initializers, optimizers  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SEED = 0
CLASSES = 10
GFLOP = {'W1': 0.005, 'W2': 0.003, 'W3': 0.019, 'W4': 3.88, 'W4inf': 6.64, 'W5': 154.0,
         'W6': 1.05}
ALL = ['W1', 'W2', 'W3', 'W4', 'W4inf', 'W5', 'W6']

# -- data ------------------------------------------------------------------------


def read_idx(path):
  with gzip.open(path, 'rb') as f:
    content = f.read()
  ndim = content[3]
  dims = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Data(object):
  def __init__(self, folder):
    folder = pathlib.Path(folder)
    self.train_images = read_idx(folder / 'train-images-idx3-ubyte.gz').astype(np.float32) / 255
    self.train_labels = read_idx(folder / 'train-labels-idx1-ubyte.gz')
    self.test_images = read_idx(folder / 't10k-images-idx3-ubyte.gz').astype(np.float32) / 255

  def batch(self, n, flat):
    rs = np.random.RandomState(SEED)
    idx = rs.permutation(len(self.train_images))[:n]
    x = self.train_images[idx]
    x = x.reshape(n, 784) if flat else x.reshape(n, 28, 28, 1)
    y = np.eye(CLASSES, dtype=np.float32)[self.train_labels[idx]]
    return np.ascontiguousarray(x), y


def spiral(points_per_class=150, classes=3):
  rs = np.random.RandomState(SEED)
  n = points_per_class
  x = np.zeros((n * classes, 2), dtype=np.float32)
  y = np.zeros((n * classes, classes), dtype=np.float32)
  for j in range(classes):
    r = np.linspace(0., 1, n)
    t = np.linspace(j * 4, (j + 1) * 4, n) + rs.randn(n) * 0.2
    x[j * n:(j + 1) * n] = np.c_[r * np.sin(t), r * np.cos(t)]
    y[j * n:(j + 1) * n, j] = 1
  keep = rs.permutation(n * classes)[:2 * n]   # 2/3 for training, as the demo
  return x[keep], y[keep]


# -- model pieces ----------------------------------------------------------------

TNI = initializers.TruncatedNormalInitializer(mean=0.0, stddev=0.01, seed=SEED)
ZI = initializers.ZerosInitializer()
OI = initializers.OnesInitializer()


def dense(x, n_in, n_out, init=TNI):
  return ad.matmul(x, ad.variable((n_in, n_out), init))


def bias(x, n):
  return x + ad.variable((n,), ZI)


def batch_norm(x, c, decay, training, activation=None, alpha=0.2):
  return ad.fused_batch_norm(x, ad.variable((c,), OI), ad.variable((c,), ZI),
                             ad.variable((c,), ZI, trainable=False),
                             ad.variable((c,), OI, trainable=False), epsilon=1e-3,
                             decay=decay, is_training=training, activation=activation,
                             alpha=alpha)


def mean_ce(labels, logits):
  return ad.reduce_mean(ad.softmax_cross_entropy_loss(labels=labels, logits=logits))


def new_graph():
  g = ad.Graph()
  g.set_runtime(ad.RunTime(SEED))
  return g


def train_step(graph, loss, feed, opt, data_nodes):
  """The demos' step: one cycle, optimize, then read the loss."""
  rt = graph.get_runtime()

  def step():
    with rt.forward_backward_cycle(grad_stopped_nodes=data_nodes):
      opt.optimize(loss, feed)
      return float(loss.forward(feed))
  graph.initialize_variables()
  return step


# -- workloads -------------------------------------------------------------------


def w1(data):
  xv, yv = spiral()
  g = new_graph()
  with g.as_default_graph():
    x, y = ad.placeholder((None, 2)), ad.placeholder((None, 3))
    w1_, w2_, w3_ = (ad.variable(s, TNI) for s in ((2, 50), (50, 50), (50, 3)))
    h = ad.relu(bias(ad.matmul(x, w1_), 50))
    h = ad.relu(bias(ad.matmul(h, w2_), 50))
    loss = mean_ce(y, bias(ad.matmul(h, w3_), 3))
    for w in (w1_, w2_, w3_):
      loss = loss + ad.l2norm(w, 1e-3)
  opt = optimizers.GradientDescentOptimizer(alpha=0.1)
  return train_step(g, loss, {x: xv, y: yv}, opt, [x, y]), 'full batch %d' % len(xv)


def w2(data):
  xv, yv = data.batch(100, flat=True)
  g = new_graph()
  with g.as_default_graph():
    x, y = ad.placeholder((None, 784)), ad.placeholder((None, CLASSES))
    w = ad.variable((784, CLASSES), TNI)
    loss = mean_ce(y, bias(ad.matmul(x, w), CLASSES)) + ad.l2norm(w, 1e-3)
  opt = optimizers.GradientDescentOptimizer(alpha=0.5)
  return train_step(g, loss, {x: xv, y: yv}, opt, [x, y]), 'batch 100'


def w3(data):
  xv, yv = data.batch(50, flat=True)
  g = new_graph()
  with g.as_default_graph():
    x, y = ad.placeholder((None, 784)), ad.placeholder((None, CLASSES))
    h, n = x, 784
    for _ in range(2):
      h = ad.sigmoid(batch_norm(dense(h, n, 100), 100, 0.997, True))
      n = 100
    loss = ad.reduce_sum(ad.softmax_cross_entropy_loss(y, bias(dense(h, 100, CLASSES),
                                                                CLASSES)))
  opt = optimizers.GradientDescentOptimizer(alpha=0.01)
  return train_step(g, loss, {x: xv, y: yv}, opt, [x, y]), 'batch 50, CE sum'


CONV_LAYERS = [(16, 1), (32, 2), (64, 1), (128, 2), (256, 2)]


def conv_net(x, training):
  h, cin = x, 1
  for cout, stride in CONV_LAYERS:
    k = ad.variable((3, 3, cin, cout), TNI)
    h = batch_norm(ad.conv2d(h, k, [stride, stride], 'SAME'), cout, 0.9, training, 'relu')
    cin = cout
  return bias(dense(ad.reduce_mean(h, axis=[1, 2]), cin, CLASSES), CLASSES)


def w4(data):
  xv, yv = data.batch(50, flat=False)
  g = new_graph()
  with g.as_default_graph():
    x, y = ad.placeholder((None, 28, 28, 1)), ad.placeholder((None, CLASSES))
    loss = mean_ce(y, conv_net(x, True))
  opt = optimizers.AdamOptimizer(alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
  return train_step(g, loss, {x: xv, y: yv}, opt, [x, y]), 'batch 50'


def w4inf(data):
  xv = np.ascontiguousarray(data.test_images[:256].reshape(256, 28, 28, 1))
  g = new_graph()
  with g.as_default_graph():
    x = ad.placeholder((None, 28, 28, 1))
    logits = conv_net(x, False)
  g.initialize_variables()
  rt = g.get_runtime()
  feed = {x: xv}

  def step():
    with rt.forward_backward_cycle():
      return float(rt.infer(logits, feed).sum())
  return step, 'batch 256 eval mode'


def w5(data):
  n = 250
  real, _ = data.batch(n, flat=False)
  real = real * 2 - 1
  rui = initializers.RandomUniformInitializer(minval=-1e-4, maxval=1e-4, seed=SEED)
  g = new_graph()
  with g.as_default_graph():
    z = ad.placeholder((None, 100))
    real_in = ad.placeholder((None, 28, 28, 1))
    labels = ad.placeholder((None, 1))
    fake_labels = ad.placeholder((None, 1))
    before = len(g.get_variables())
    h = batch_norm(dense(z, 100, 7 * 7 * 256, rui), 7 * 7 * 256, 0.999, True, 'leaky_relu', 0.3)
    h, cin = ad.reshape(h, [-1, 7, 7, 256]), 256
    for cout, stride in ((128, 1), (64, 2)):
      k = ad.variable((5, 5, cout, cin), rui)
      h = batch_norm(ad.conv2d_transpose(h, k, [stride, stride], 'SAME'), cout, 0.999, True,
                     'leaky_relu', 0.3)
      cin = cout
    k = ad.variable((5, 5, 1, cin), rui)
    fake = ad.tanh(ad.conv2d_transpose(h, k, [2, 2], 'SAME'))
    g_vars = g.get_variables()[before:]
    before = len(g.get_variables())
    h, cin = ad.concat([real_in, fake], 0), 1
    for cout in (64, 128):
      k = ad.variable((5, 5, cin, cout), rui)
      h = ad.dropout(ad.leaky_relu(bias(ad.conv2d(h, k, [2, 2], 'SAME'), cout), 0.3), 0.3)
      cin = cout
    logits = bias(dense(ad.reshape(h, [-1, 7 * 7 * 128]), 7 * 7 * 128, 1, rui), 1)
    d_vars = g.get_variables()[before:]
    d_loss = ad.reduce_mean(ad.sigmoid_cross_entropy_loss(labels, logits))
    fake_logits = ad.slice(logits, [n, 0], [-1, -1])
    g_loss = ad.reduce_mean(ad.sigmoid_cross_entropy_loss(fake_labels, fake_logits))
  g.initialize_variables()
  ones = np.ones((n, 1), dtype=np.float32)
  feed = {z: np.random.RandomState(SEED).randn(n, 100).astype(np.float32), real_in: real,
          labels: np.concatenate([ones, np.zeros((n, 1), dtype=np.float32)]), fake_labels: ones}
  adam = optimizers.AdamOptimizer(alpha=1e-4, beta1=0.9, beta2=0.999, epsilon=1e-8)
  rt = g.get_runtime()
  data_nodes = [z, real_in, labels, fake_labels]

  def step():
    with rt.forward_backward_cycle(grad_stopped_nodes=data_nodes + [fake]):
      grads = adam.compute_gradients(d_loss, feed, d_vars)
      d_value = float(d_loss.forward(feed))
    with rt.forward_backward_cycle(grad_stopped_nodes=data_nodes + d_vars):
      grads += adam.compute_gradients(g_loss, feed, g_vars)
      g_value = float(g_loss.forward(feed))
    adam.apply_gradients(grads)
    return d_value + g_value
  return step, 'batch %d(+%d fake); D step + G step' % (n, n)


def w6(data):
  n, latent = 32, 2
  xv = np.ascontiguousarray((data.train_images[:n] > 0.5).astype(np.float32).reshape(n, 28, 28, 1))
  gui = initializers.GlorotUniformInitializer(seed=SEED)
  log2pi = np.float32(np.log(2. * np.pi))
  g = new_graph()
  with g.as_default_graph():
    x = ad.placeholder((None, 28, 28, 1))
    eps = ad.placeholder((None, latent))
    h, cin = x, 1
    for cout in (32, 64):
      h = ad.relu(bias(ad.conv2d(h, ad.variable((3, 3, cin, cout), gui), [2, 2], 'VALID'), cout))
      cin = cout
    params = bias(dense(ad.reshape(h, [-1, 6 * 6 * 64]), 6 * 6 * 64, 2 * latent, gui),
                  2 * latent)
    mean = ad.slice(params, [0, 0], [-1, latent])
    logvar = ad.slice(params, [0, latent], [-1, latent])
    zz = eps * ad.exp(logvar * .5) + mean
    h = ad.reshape(ad.relu(bias(dense(zz, latent, 7 * 7 * 32, gui), 7 * 7 * 32)), [-1, 7, 7, 32])
    cin = 32
    for cout, stride in ((64, 2), (32, 2), (1, 1)):
      h = bias(ad.conv2d_transpose(h, ad.variable((3, 3, cout, cin), gui), [stride, stride],
                                   'SAME'), cout)
      if cout != 1:
        h = ad.relu(h)
      cin = cout
    cross_ent = ad.sigmoid_cross_entropy_loss(x, h)
    logpx_z = -ad.reduce_sum(cross_ent, axis=[1, 2, 3])
    logpz = ad.reduce_sum(-0.5 * (zz * zz + log2pi), axis=1)
    d = zz - mean
    logqz_x = ad.reduce_sum(-.5 * (d * d * ad.exp(-logvar) + logvar + log2pi), axis=1)
    loss = -ad.reduce_mean(logpx_z + logpz - logqz_x)
  feed = {x: xv, eps: np.random.RandomState(SEED).randn(n, latent).astype(np.float32)}
  opt = optimizers.AdamOptimizer(alpha=1e-4, beta1=0.9, beta2=0.999, epsilon=1e-7)
  return train_step(g, loss, feed, opt, [x, eps]), 'batch %d' % n


BUILD = {'W1': w1, 'W2': w2, 'W3': w3, 'W4': w4, 'W4inf': w4inf, 'W5': w5, 'W6': w6}

# -- timing ----------------------------------------------------------------------


class CpuSample(object):
  """CPU counters of the machine and of this process (Linux /proc)."""

  def __init__(self):
    with open('/proc/stat') as f:
      ticks = [int(v) for v in f.readline().split()[1:9]]
    self.total = sum(ticks)
    self.busy = self.total - ticks[3] - ticks[4]
    with open('/proc/self/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    self.own = int(fields[11]) + int(fields[12])

  def foreign_share(self):
    """Percent of all cores' time since this sample used by other processes."""
    now = CpuSample()
    total = now.total - self.total
    if total <= 0:
      return None
    return 100. * max(0, (now.busy - self.busy) - (now.own - self.own)) / total


def run_workload(wid, data, steps, warmup, budget):
  step, note = BUILD[wid](data)
  start = time.perf_counter()
  for _ in range(warmup):
    if not np.isfinite(step()):
      raise SystemExit('%s: the step result is not finite during warm-up' % wid)
    if time.perf_counter() - start > 10:
      break
  try:
    cpu = CpuSample()
  except OSError:
    cpu = None
  times = []
  outside = []   # per step: its time minus the engine's (the Python layer's cost)
  timed_start = time.perf_counter()
  last = 0.
  while len(times) < steps:
    e0 = _native.engine_seconds()
    t0 = time.perf_counter()
    last = step()
    t = time.perf_counter() - t0
    times.append(t)
    outside.append(t - (_native.engine_seconds() - e0))
    if len(times) >= 20 and time.perf_counter() - timed_start > budget:
      break
  if not np.isfinite(last):
    raise SystemExit('%s: the step result is %r after the timed steps' % (wid, last))
  foreign = cpu.foreign_share() if cpu else None
  times.sort()
  median = float(np.median(times))
  line = '%s adgraph-py step_ms_median=%.3f steps_per_s=%.2f gflops=%.1f n=%d min_ms=%.3f' % (
      wid, median * 1e3, 1 / median, GFLOP[wid] / median, len(times), times[0] * 1e3)
  if wid == 'W4inf':
    line += ' images_per_s=%.1f' % (256 / median)
  python_ms = float(np.median(outside)) * 1e3
  line += ' python_ms=%.3f python_share=%.2f%%' % (python_ms, 100 * python_ms / (median * 1e3))
  if foreign is not None:
    line += ' foreign_cpu=%.0f%%' % foreign
  line += ' %s threads=%s' % (note, ad.num_threads)
  return line, median


def rust_median(binary, wid, steps, warmup):
  out = subprocess.run([binary, '--only', wid, '--steps', str(steps), '--warmup', str(warmup)],
                       check=True, capture_output=True, text=True, cwd=REPO).stdout
  line = next(l for l in out.splitlines() if l.startswith('%s adgraph ' % wid))
  return line, float(re.search(r'step_ms_median=([0-9.]+)', line).group(1)) / 1e3


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--only', default=','.join(ALL))
  p.add_argument('--steps', type=int, default=50)
  p.add_argument('--warmup', type=int, default=10)
  p.add_argument('--budget', type=float, default=60.)
  p.add_argument('--data', default=str(REPO / 'data' / 'fashion-mnist'))
  p.add_argument('--rust', help='the Rust bench binary, to interleave with')
  p.add_argument('--rounds', type=int, default=3)
  args = p.parse_args()
  wanted = [w.strip() for w in args.only.split(',')]
  unknown = [w for w in wanted if w not in BUILD]
  if unknown:
    raise SystemExit('--only: unknown workload(s) %s (known: %s)' % (unknown, ','.join(ALL)))
  ad.retain_freed_memory()
  data = Data(args.data)
  print('data: %s; warmup=%d steps=%d threads=%s' % (args.data, args.warmup, args.steps,
                                                      ad.num_threads))
  sys.stdout.flush()
  for wid in wanted:
    rounds = args.rounds if args.rust else 1
    for r in range(rounds):
      line, median = run_workload(wid, data, args.steps, args.warmup, args.budget)
      print(line)
      if args.rust:
        rline, rmedian = rust_median(args.rust, wid, args.steps, args.warmup)
        print(rline)
        print('%s round %d python_overhead_ms=%.3f python_overhead=%.1f%%' % (
            wid, r + 1, (median - rmedian) * 1e3, 100 * (median - rmedian) / rmedian))
      sys.stdout.flush()


if __name__ == '__main__':
  main()
