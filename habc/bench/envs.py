"""Speed of the simulated tasks: ``python -m habc.bench envs`` (or ``python -m habc.bench.envs``).

Prints one row per task: control steps/s with the expert acting and all cameras rendered at the
default size, the same without rendering, and raw physics steps/s (``mj_step`` alone, from a state
in the middle of an expert episode). Single process, so one core.
"""

import argparse
import sys
import time

import mujoco
import numpy as np

from habc import envs


def control_rate(task, cameras, steps, seed=0, image_size=64):
  """Control steps/s of the expert on ``task`` over ``steps`` steps (episodes restart as needed)."""
  env = envs.make(task, seed=seed, image_size=image_size, cameras=cameras)
  expert = env.make_expert(seed)
  ts = env.reset()
  t, n = time.perf_counter(), 0
  while n < steps:
    if ts.last():
      ts = env.reset()
      expert.reset()
    ts = env.step(expert.act(env))
    n += 1
  rate = n / (time.perf_counter() - t)
  env.close()
  return rate


def mid_episode_env(task, seed=0, warm_control_steps=15):
  """``task`` without cameras after ``warm_control_steps`` expert steps (objects in contact)."""
  env = envs.make(task, seed=seed, cameras=())
  expert = env.make_expert(seed)
  env.reset()
  for _ in range(warm_control_steps):
    if env.step(expert.act(env)).last():
      break
  return env


def physics_rate(task, steps, warm_control_steps=15, seed=0):
  """Raw ``mj_step`` per second on ``task``'s scene, from mid-episode (objects in contact)."""
  env = mid_episode_env(task, seed, warm_control_steps)
  t = time.perf_counter()
  for _ in range(steps):
    mujoco.mj_step(env.model, env.data)
  return steps / (time.perf_counter() - t), env.n_substeps


def main(argv=None):
  """argv: [program, args...] as ``python -m habc.bench`` passes it (default: sys.argv)."""
  p = argparse.ArgumentParser(prog='python -m habc.bench envs', description=__doc__.split('\n')[0])
  p.add_argument('--tasks', default=','.join(envs.list_tasks()))
  p.add_argument('--steps', type=int, default=40, help='control steps timed per measurement')
  p.add_argument('--physics_steps', type=int, default=1000)
  p.add_argument('--image_size', type=int, default=64)
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  print(f'{"task":8s} {"render steps/s":>15s} {"no-render steps/s":>18s} '
        f'{"physics steps/s":>16s} {"substeps":>9s}')
  for task in args.tasks.split(','):
    try:
      envs.task_class(task)
    except ValueError as e:
      print(f'{task:8s} unavailable: {e}')
      continue
    render = control_rate(task, envs.CAMERAS, args.steps, image_size=args.image_size)
    plain = control_rate(task, (), args.steps)
    phys, substeps = physics_rate(task, args.physics_steps)
    print(f'{task:8s} {render:15.1f} {plain:18.1f} {phys:16.0f} {substeps:9d}')
  print(f'(render: cameras {", ".join(envs.CAMERAS)} at {args.image_size}x{args.image_size}, '
        'OSMesa, one process)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
