"""The original's README examples, run with only the import changed, print
what the README says they print."""
import contextlib
import io
import re

import pytest

from conftest import SHARED

README = SHARED / 'seed' / 'README.md'


def blocks():
  text = README.read_text()
  return re.findall(r'```python\n(.*?)```', text, re.S)


def test_readme_examples_run_and_print_their_output():
  code = blocks()
  assert len(code) >= 6
  outputs = [b for b in code if b.lstrip().startswith('# c_val')]
  assert len(outputs) == 1
  expected = [line for line in outputs[0].splitlines()
              if line.strip() and not line.lstrip().startswith('#')]
  namespace = {}
  printed = []
  for block in code:
    if block is outputs[0]:
      continue
    assert 'import autodiff' in block or 'autodiff' not in block
    source = block.replace('import autodiff as ad', 'import adgraph as ad')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      exec(compile(source, str(README), 'exec'), namespace)
    printed.append(out.getvalue())
  # The RunTime example prints c_val and the two gradients, as in OUTPUT.
  runtime_out = next(p for p in printed if p.startswith('[['))
  assert runtime_out.splitlines() == expected
  # The Shape example prints the shape as its comment says.
  assert 'Shape(None, 1, 2, 3)\n' in printed
