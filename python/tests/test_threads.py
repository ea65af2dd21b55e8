"""The engine runs with the GIL released: other Python threads go on meanwhile."""
import sys
import threading
import time

import numpy as np

import adgraph as ad


def test_other_threads_run_while_the_engine_works():
  state = {'done': False, 'error': None, 'window': None}

  def worker():
    try:
      g = ad.Graph()
      g.set_runtime(ad.RunTime())
      with g.as_default_graph():
        x = ad.placeholder((600, 600))
        y = x
        for _ in range(20):
          y = ad.tanh(ad.matmul(y, x))
        total = ad.reduce_sum(y)
      feed = {x: np.random.RandomState(0).rand(600, 600).astype(np.float32) / 600}
      t0 = time.perf_counter()
      total.forward(feed)
      state['window'] = (t0, time.perf_counter())
    except Exception as e:  # pragma: no cover - reported below
      state['error'] = e
    finally:
      state['done'] = True

  stamps = []
  t = threading.Thread(target=worker)
  t.start()
  while not state['done']:
    stamps.append(time.perf_counter())
    for _ in range(200):
      pass
  t.join()
  assert state['error'] is None
  t0, t1 = state['window']
  # Leave out the interpreter's switch interval at both ends: inside, this
  # thread can only have run if the forward pass released the GIL.
  margin = 4 * sys.getswitchinterval()
  assert t1 - t0 > 4 * margin, 'the forward pass was too short to tell'
  inside = [s for s in stamps if t0 + margin < s < t1 - margin]
  assert len(inside) > 10, (len(inside), t1 - t0)
