"""Small type helpers, under the original's module name (``autodiff.type_utils``)."""
import numbers

import numpy as np


def isint(i):
  """Whether `i` is a Python or NumPy integer (not a bool)."""
  return (isinstance(i, (numbers.Integral, np.integer))
          and not isinstance(i, (bool, np.bool_)))


def is_variable(v):
  """Whether `v` is a variable node."""
  return type(v).__name__ == 'Variable'


def is_numeric(val):
  """Whether `val` is a Python or NumPy number."""
  return isinstance(val, (numbers.Number, np.number)) and not isinstance(val, bool)


def to_numpy(val):
  """`val` as a NumPy array (float32 unless it is an array already); NaN refused."""
  if not isinstance(val, np.ndarray):
    val = np.array(val).astype(np.float32)
  if np.issubdtype(val.dtype, np.floating) and np.isnan(val).any():
    raise ValueError('a value given to the graph holds NaN: every value must be a number')
  return val
