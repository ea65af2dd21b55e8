"""adgraph's training loop from Python: the steps (your function), a progress
bar, evaluations every N steps, training checkpoints (variables, optimizer
state, step, data position, random generator) that `resume` continues from
exactly, and the loss and metric curves.

  trainer = ad.train.Trainer(graph, optimizer, steps=1000, data=(x, y), batch_size=32)

  def step(s):
    xb, yb = s.next_batch()
    return s.minimize(loss, {x_ph: xb, y_ph: yb})

  def evaluate(e):
    e.record('test loss', float(test_loss.forward(test_feed)))

  summary = trainer.run(step, evaluate)
  summary['final_loss'], summary['loss'], summary['evals']['test loss']

The trainer owns its run time (seeded by `seed`): nodes' ``forward`` in an
evaluation uses the graph's own run time, as usual.
"""
from adgraph import _native
from adgraph.core.base_node import Node


class Step(object):
  """One training step's context (valid only during the step function's call)."""

  def __init__(self, native):
    self._native = native

  @property
  def index(self):
    """The number of steps taken before this one."""
    return self._native.index

  @property
  def total(self):
    """The number of steps the run ends at."""
    return self._native.total

  def next_batch(self):
    """The next mini-batch ``(x, y)`` of the trainer's data."""
    return self._native.next_batch()

  def minimize(self, loss, feed_dict=None):
    """One update of the trainer's optimizer on `loss`, in a forward-backward
    cycle of its own; returns the loss (before the update)."""
    if not isinstance(loss, Node):
      raise TypeError('loss must be a Node, got %s.' % type(loss).__name__)
    loss._graph._check_initialized(loss)
    return self._native.minimize(loss._native, feed_dict)


class Eval(object):
  """An evaluation's context (valid only during the evaluation function's call)."""

  def __init__(self, native):
    self._native = native

  @property
  def step(self):
    """The steps taken so far."""
    return self._native.step

  @property
  def is_end(self):
    """Whether this is the evaluation after the last step."""
    return self._native.is_end

  def record(self, name, value):
    """Records `value` under `name` in the run's curves."""
    self._native.record(str(name), float(value))

  def println(self, line):
    """Prints a line above the progress bar."""
    self._native.println(str(line))


class Trainer(object):
  """The training loop of adgraph (``adgraph::train::Trainer``).

  Args:
    graph: the graph whose variables are trained.
    optimizer: an optimizer of `adgraph.optimizers` (its state is the trainer's:
      checkpoints keep it), or a dict ``{name: optimizer}`` for several.
    steps / epochs: the run's length (one of them; epochs need `data`).
    data: ``(x, y)`` arrays drawn in mini-batches of `batch_size`, shuffled
      by `data_seed` and again each epoch (``step.next_batch()``).
    eval_every: evaluate every N steps (and after the last one, unless
      `eval_at_end` is False; before the first with `eval_at_start`).
    checkpoint, checkpoint_every: a safetensors training checkpoint written
      every N steps and at the end.
    progress: show a progress bar on the terminal.
    seed: the seed of the trainer's run time (dropout masks).
  """

  def __init__(self, graph, optimizer, steps=None, epochs=None, data=None, batch_size=32,
               data_seed=0, eval_every=0, eval_at_start=False, eval_at_end=True,
               checkpoint=None, checkpoint_every=None, progress=True, seed=0):
    named = optimizer.items() if isinstance(optimizer, dict) else [('optimizer', optimizer)]
    natives = []
    for name, opt in named:
      if getattr(type(opt), '_factory', None) is None:
        raise TypeError('the trainer takes the optimizers of adgraph.optimizers, got %r.'
                        % (opt,))
      natives.append((str(name), opt._native()))
    if data is not None:
      x, y = data
      data = (x, y, int(batch_size), int(data_seed))
    self._graph = graph
    self._native = _native.Trainer(
        graph._native, natives, steps=steps, epochs=epochs, data=data, eval_every=eval_every,
        eval_at_start=eval_at_start, eval_at_end=eval_at_end,
        checkpoint=None if checkpoint is None else str(checkpoint),
        checkpoint_every=checkpoint_every, progress=progress, seed=seed)

  def run(self, step_fn, eval_fn=None):
    """Runs the steps left and returns the summary: a dict with ``final_loss``,
    ``step``, ``train_seconds``, ``eval_seconds``, and the curves ``loss``,
    ``running_loss``, ``metrics`` and ``evals`` (lists of ``(step, value)``).

    `step_fn(step)` returns the step's loss (``step.minimize(...)``), or
    ``(loss, {metric: value})``; `eval_fn(eval)` records values with
    ``eval.record(name, value)``.
    """
    for var in self._graph.get_variables(False):
      self._graph._check_initialized(var)
    step = lambda native: step_fn(Step(native))
    evaluate = None if eval_fn is None else (lambda native: eval_fn(Eval(native)))
    return self._native.run(step, evaluate)

  def resume(self, path):
    """Continues from a checkpoint written by this trainer (or restores the
    variables of a variables-only one); returns what was restored, as text."""
    restored = self._native.resume(str(path))
    for var in self._graph.get_variables(False):
      self._graph._set_initialized(var._native.index)
    return restored

  def save(self, path):
    """Writes a training checkpoint to `path`."""
    self._native.save(str(path))

  @property
  def step_count(self):
    """The number of steps taken so far."""
    return self._native.step_count
