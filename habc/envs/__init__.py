"""Simulated bimanual tasks behind one dm_env interface (docs/interfaces.md section 1).

Software rendering (OSMesa) is the default, chosen by habc/__init__.py before MuJoCo is imported.
Never import TensorFlow in a process that renders: Mesa's software rasteriser crashes next to it.
"""

import importlib

from habc.envs.base import CAMERAS

# Task name -> 'module:ClassName'. Modules are imported on first use, so a missing task module
# only fails when that task is asked for.
_REGISTRY = {
    'fold': 'habc.envs.fold:FoldEnv',
    'pouch': 'habc.envs.pouch:PouchEnv',
    'insert': 'habc.envs.insert:InsertEnv',
}


def list_tasks() -> list:
  """Names of the simulated tasks."""
  return list(_REGISTRY)


def task_class(task: str):
  """The TaskEnv subclass registered as ``task``."""
  if task not in _REGISTRY:
    raise ValueError(f'Unknown task {task!r}; known tasks: {list_tasks()}.')
  module, name = _REGISTRY[task].split(':')
  try:
    mod = importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise ValueError(f'Task {task!r} is registered but its module {module} cannot be imported '
                     f'({e}).') from e
  return getattr(mod, name)


def make(task: str, *, seed: int, image_size: int = 64, cameras=CAMERAS, time_limit=None):
  """Builds the simulated task ``task`` (a TaskEnv). ``cameras=()`` renders nothing."""
  return task_class(task)(seed=seed, image_size=image_size, cameras=tuple(cameras),
                          time_limit=time_limit)
