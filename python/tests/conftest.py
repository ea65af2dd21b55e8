"""Shared helpers: where the shared data is, and a fresh graph per test."""
import os
import pathlib

import numpy as np
import pytest

import adgraph as ad

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get('ADGRAPH_SHARED_DIR', REPO.parent / 'shared'))


@pytest.fixture
def graph():
  """A fresh graph, default for the test, with a run time attached."""
  g = ad.Graph()
  g.set_runtime(ad.RunTime())
  with g.as_default_graph():
    yield g


def close(got, want, atol=1e-5, rtol=1e-5):
  got = np.asarray(got, dtype=np.float64)
  want = np.asarray(want, dtype=np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
