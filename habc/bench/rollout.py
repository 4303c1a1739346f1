"""Rollout throughput: environment steps/s with the policy in the loop, against raw physics.

``python -m habc.bench rollout [--tasks=fold,pouch,insert] [--obs=state] [--episodes=4]``

Per task: a default-preset run's collection path (``runtime.num_workers`` environment processes,
the policy batched across them in this process, ``rollout.execute_steps`` control steps per
chunk), timed over a few evaluation episodes of a freshly initialised policy (untrained: its
episodes run to the time limit, which keeps every task's step count comparable). Next to it:
the same scene's raw ``mj_step`` rate divided by the physics substeps of one control step (the
ceiling of one core), and the expert's control rate without rendering (one process).

The policy needs normalisation statistics and an example batch, so the benchmark first records
two expert demonstrations into a temporary workdir (not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def measure(task: str, obs: str, episodes: int, workers: int, time_limit: int = 0) -> dict:
  """Steps/s of ``episodes`` evaluation episodes on ``workers`` processes, and the policy's time."""
  from experiments import presets
  from habc.run import pipeline, rollout
  c = presets.make_config('default')
  c.task, c.obs = task, obs
  if obs == 'state':
    c.cameras = ()
  elif not c.cameras:
    c.cameras = ('top', 'wrist_left', 'wrist_right')
  c.data.num_demos = 2
  c.runtime.num_workers = workers
  c.runtime.progress = False
  with tempfile.TemporaryDirectory() as workdir:
    recorder = pipeline.Pipeline(c, workdir, log=lambda _: None)
    try:
      recorder.demos()  # With the task's own time limit (the expert must finish).
    finally:
      recorder.close()
    c.rollout.time_limit = time_limit
    run = pipeline.Pipeline(c, workdir, log=lambda _: None)
    try:
      run.backend.load_latest(run.paths.checkpoints, allow_fresh=True)
      policy = run.backend.policy(0)
      requests = [rollout.EpisodeRequest(episode_id=f'bench-{i}', seed=1000 + i, kind='eval',
                                         record=False) for i in range(episodes)]
      steps = []
      pool = run.pool()
      # One untimed episode per worker: spawn, imports and the policy's compilation.
      rollout.run_episodes(pool, requests[:workers], policy, lambda r: None, pad_to=workers)
      run.backend.policy_seconds.clear()
      start = time.perf_counter()
      rollout.run_episodes(pool, requests, policy, lambda r: steps.append(r['length']),
                           pad_to=workers)
      seconds = time.perf_counter() - start
      policy_s = list(run.backend.policy_seconds)
    finally:
      run.close()
  return {'steps_per_s': sum(steps) / seconds, 'episodes': len(steps), 'steps': sum(steps),
          'policy_ms': 1000 * sum(policy_s) / max(len(policy_s), 1),
          'policy_share': sum(policy_s) / seconds}


def main(argv=None):
  from habc import envs
  from habc.bench import envs as env_bench
  p = argparse.ArgumentParser(prog='python -m habc.bench rollout',
                              description=__doc__.split('\n')[0])
  p.add_argument('--tasks', default=','.join(envs.list_tasks()))
  p.add_argument('--obs', default='state', choices=('state', 'vision'))
  p.add_argument('--episodes', type=int, default=4)
  p.add_argument('--workers', type=int, default=2)
  p.add_argument('--physics_steps', type=int, default=1000)
  p.add_argument('--time_limit', type=int, default=0,
                 help='control steps per timed episode (0: the task\'s own limit)')
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  load = os.getloadavg()[0]
  print(f'rollout benchmark: obs={args.obs}, {args.workers} worker process(es), {args.episodes} '
        f'episodes per task, untrained default-size policy; load average {load:.1f}, '
        f'{os.cpu_count()} cores')
  print('| task | env steps/s, policy in the loop | per worker | policy ms/call | policy share '
        '| expert steps/s, no render (1 proc) | physics ceiling steps/s (1 core) |')
  print('|---|---|---|---|---|---|---|')
  for task in args.tasks.split(','):
    r = measure(task, args.obs, args.episodes, args.workers, args.time_limit)
    expert = env_bench.control_rate(task, (), 40)
    physics, substeps = env_bench.physics_rate(task, args.physics_steps)
    print(f'| {task} | {r["steps_per_s"]:.1f} | {r["steps_per_s"] / args.workers:.1f} | '
          f'{r["policy_ms"]:.1f} | {100 * r["policy_share"]:.0f}% | {expert:.1f} | '
          f'{physics / substeps:.1f} |', flush=True)
  print('(physics ceiling: raw mj_step/s from mid-episode divided by the substeps of one control '
        'step; policy share: time in policy calls over wall time)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
