"""Regression guard: processes that render must never load TensorFlow.

With TensorFlow loaded, Mesa's software rasteriser crashes the process (``free(): invalid
pointer``). Each check runs in a fresh interpreter, since this test process may have imported
anything.
"""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str):
  env = dict(os.environ, MUJOCO_GL='osmesa', PYOPENGL_PLATFORM='osmesa', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)


def test_rendering_a_task_does_not_load_tensorflow():
  r = _run(
      'import sys\n'
      'from habc import envs\n'
      'env = envs.make("fold", seed=0, image_size=32)\n'
      'ts = env.reset()\n'
      'ts = env.step(env.make_expert(0).act(env))\n'
      'assert ts.observation["top"].std() > 0\n'
      'loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))\n'
      'assert not loaded, loaded\n'
      'print("ok")\n')
  assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-3000:]


# Modules that environment workers and the task tools import (those that exist yet).
_WORKER_MODULES = [m for m in ('habc.envs', 'habc.envs.base', 'habc.envs.fold', 'habc.envs.operator',
                               'habc.envs.video', 'habc.envs.__main__', 'habc.envs.pouch',
                               'habc.envs.insert', 'habc.bench.envs', 'habc.run.rollout',
                               'habc.run.recorder')
                   if importlib.util.find_spec(m.rsplit('.', 1)[0]) is not None
                   and os.path.exists(os.path.join(ROOT, *m.split('.')) + '.py')]


def test_worker_modules_do_not_import_tensorflow():
  assert 'habc.envs.fold' in _WORKER_MODULES
  r = _run('import importlib, sys\n'
           f'for m in {_WORKER_MODULES!r}:\n'
           '  importlib.import_module(m)\n'
           '  assert "tensorflow" not in sys.modules, m + " imports tensorflow"\n'
           'print("ok")\n')
  assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-3000:]
