"""Node classes, under the original's module path (``autodiff.nodes``).

``origin_nodes`` holds `Placeholder`, `Variable` and `Constant`; the nodes of
built-in ops are of classes named after their type (``Add``, ``MatMul``,
``ReLU``, ...), made on first use.
"""
from adgraph.nodes import origin_nodes
