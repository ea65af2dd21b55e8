"""Variable initializers, as the original's (``autodiff.initializers``).

An initializer is made with keyword parameters and called with a shape:
``TruncatedNormalInitializer(mean=0., stddev=0.01, seed=0)(shape=(784, 10))``.
A missing parameter raises ``KeyError`` when it is called. With a `seed`, every
call starts ``numpy.random.RandomState(seed)`` afresh, so it returns the same
values each time (the original's behaviour); without one it draws from a fresh
unseeded generator.
"""
import numpy as np


class Initializer(object):
  """Base class: keeps the keyword parameters, shows them in ``repr``."""

  def __init__(self, **params):
    self._params = params
    self._params_str = ', '.join('%s=%s' % (k, v) for k, v in params.items())

  def __repr__(self):
    if self._params_str:
      return '<%s:%s>' % (type(self).__name__, self._params_str)
    return '<%s>' % type(self).__name__

  def _get_random_state(self):
    return np.random.RandomState(seed=self._params.get('seed'))

  def __call__(self, shape):
    raise NotImplementedError


class TruncatedNormalInitializer(Initializer):
  """Normal draws with `mean` and `stddev`, redrawn (up to `max_attempts`
  times) where further than ``2 * stddev`` from the mean (float32)."""

  def __call__(self, shape, max_attempts=100):
    rs = self._get_random_state()
    mean, stddev = self._params['mean'], self._params['stddev']
    values = rs.normal(loc=mean, scale=stddev, size=int(np.prod(shape)))
    for _ in range(max_attempts):
      bad = np.abs(values - mean) > 2. * stddev
      count = int(bad.sum())
      if count == 0:
        break
      values[bad] = rs.normal(loc=mean, scale=stddev, size=count)
    return values.reshape(shape).astype(np.float32)


class RandomUniformInitializer(Initializer):
  """Uniform draws in [`minval`, `maxval`)."""

  def __call__(self, shape):
    rs = self._get_random_state()
    return rs.uniform(low=self._params['minval'], high=self._params['maxval'], size=shape)


class ZerosInitializer(Initializer):
  """All zeros (float32)."""

  def __call__(self, shape):
    return np.zeros(shape, dtype=np.float32)


class OnesInitializer(Initializer):
  """All ones (float32)."""

  def __call__(self, shape):
    return np.ones(shape, dtype=np.float32)


def _fans(shape):
  """``(fan_in, fan_out)`` of a 2-D weight or a 4-D kernel [kh, kw, in, out]."""
  shape = tuple(shape)
  if len(shape) == 2:
    return shape
  if len(shape) == 4:
    kh, kw, cin, cout = shape
    return cin * kh * kw, cout * kh * kw
  raise ValueError('kernel must be 2D or 4D array, got %dD.' % len(shape))


class GlorotUniformInitializer(Initializer):
  """Uniform in ``+-sqrt(6 / (fan_in + fan_out))``."""

  def __call__(self, shape):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6. / (fan_in + fan_out))
    return self._get_random_state().uniform(low=-limit, high=limit, size=shape)


class GlorotNormalInitializer(Initializer):
  """Normal with standard deviation ``sqrt(2 / (fan_in + fan_out))`` (not truncated)."""

  def __call__(self, shape):
    fan_in, fan_out = _fans(shape)
    return self._get_random_state().normal(
        loc=0., scale=np.sqrt(2. / (fan_in + fan_out)), size=shape)


class HeUniformInitializer(Initializer):
  """Uniform in ``+-sqrt(6 / fan_in)``."""

  def __call__(self, shape):
    fan_in, _ = _fans(shape)
    limit = np.sqrt(6. / fan_in)
    return self._get_random_state().uniform(low=-limit, high=limit, size=shape)


class HeNormalInitializer(Initializer):
  """Normal with standard deviation ``sqrt(2 / fan_in)`` (not truncated)."""

  def __call__(self, shape):
    fan_in, _ = _fans(shape)
    return self._get_random_state().normal(loc=0., scale=np.sqrt(2. / fan_in), size=shape)
