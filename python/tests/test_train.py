"""adgraph's training loop from Python: steps written in Python, evaluations,
checkpoints that resume exactly, errors raised from the step come back."""
import numpy as np
import pytest

import adgraph as ad
from adgraph import initializers, optimizers

from conftest import close


def line_model():
  g = ad.Graph()
  g.set_runtime(ad.RunTime())
  with g.as_default_graph():
    x = ad.placeholder((None, 1))
    y = ad.placeholder((None, 1))
    w = ad.variable((1, 1), initializers.ZerosInitializer())
    b = ad.variable((1,), initializers.ZerosInitializer())
    err = ad.matmul(x, w) + b - y
    loss = ad.reduce_mean(err * err)
  g.initialize_variables()
  xs = (np.arange(64, dtype=np.float32) / 64).reshape(64, 1)
  return g, x, y, w, b, loss, xs, 2 * xs + 1


def test_fit_a_line_with_evaluations():
  g, x, y, w, b, loss, xs, ys = line_model()
  opt = optimizers.GradientDescentOptimizer(alpha=0.5)
  trainer = ad.train.Trainer(g, opt, steps=300, data=(xs, ys), batch_size=16,
                             eval_every=100, progress=False)
  seen = []

  def step(s):
    xb, yb = s.next_batch()
    assert xb.shape == (16, 1)
    seen.append(s.index)
    return s.minimize(loss, {x: xb, y: yb})

  def evaluate(e):
    with g.get_runtime().forward_backward_cycle():
      e.record('full loss', float(loss.forward({x: xs, y: ys})))

  summary = trainer.run(step, evaluate)
  assert seen == list(range(300))
  assert summary['step'] == 300 and len(summary['loss']) == 300
  assert summary['final_loss'] < 1e-4
  assert [p[0] for p in summary['evals']['full loss']] == [100, 200, 300]
  close(w.val, [[2.]], atol=1e-2)
  close(b.val, [1.], atol=1e-2)


def test_metrics_from_the_step():
  g, x, y, w, b, loss, xs, ys = line_model()
  trainer = ad.train.Trainer(g, optimizers.GradientDescentOptimizer(alpha=0.1), steps=5,
                             progress=False)
  summary = trainer.run(lambda s: (s.minimize(loss, {x: xs, y: ys}), {'twice': 2. * s.index}))
  assert [v for _, v in summary['metrics']['twice']] == [0., 2., 4., 6., 8.]


def test_resume_continues_exactly(tmp_path):
  def train(steps, resume_from=None, save_to=None):
    g, x, y, w, b, loss, xs, ys = line_model()
    opt = optimizers.AdamOptimizer(alpha=0.05, beta1=0.9, beta2=0.999, epsilon=1e-8)
    trainer = ad.train.Trainer(g, opt, steps=steps, data=(xs, ys), batch_size=8,
                               checkpoint=save_to, progress=False)
    if resume_from is not None:
      trainer.resume(resume_from)
    trainer.run(lambda s: s.minimize(loss, dict(zip((x, y), s.next_batch()))))
    return w.val, b.val

  path = tmp_path / 'run.safetensors'
  train(20, save_to=path)
  resumed = train(50, resume_from=path)
  straight = train(50)
  np.testing.assert_array_equal(resumed[0], straight[0])
  np.testing.assert_array_equal(resumed[1], straight[1])


def test_errors_from_the_step_and_stale_handles():
  g, x, y, w, b, loss, xs, ys = line_model()
  trainer = ad.train.Trainer(g, optimizers.GradientDescentOptimizer(alpha=0.1), steps=3,
                             progress=False)
  kept = []

  def failing(s):
    kept.append(s)
    raise ZeroDivisionError('step failed')

  with pytest.raises(ZeroDivisionError, match='step failed'):
    trainer.run(failing)
  with pytest.raises(RuntimeError, match='only valid during'):
    kept[0].minimize(loss, {x: xs, y: ys})
  with pytest.raises(TypeError):
    trainer.run(lambda s: 'not a loss')
  with pytest.raises(ValueError, match='no data'):
    trainer.run(lambda s: s.next_batch())
