"""'module:name' strings -> objects: how configs name environment and operator factories.

Layer 0 (docs/architecture.md): imports nothing of habc, so every layer may use it.
"""


def load_symbol(path: str):
  """'package.module:name' -> the object."""
  import importlib
  module, _, name = path.partition(':')
  if not name:
    raise ValueError(f'Expected "module:name", got {path!r}.')
  return getattr(importlib.import_module(module), name)
