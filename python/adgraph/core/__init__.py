"""The graph's core classes, under the original's module paths:
``adgraph.core.base_node`` (``Node``, ``TensorShape``) and
``adgraph.core.environments`` (``Graph``, ``RunTime``, ``get_default_graph``)."""
from adgraph.core import base_node
from adgraph.core import environments
