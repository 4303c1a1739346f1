"""Rollout throughput: environment steps/s with the policy in the loop, against raw physics.

``python -m habc.bench rollout [--tasks=pouch,insert] [--obs=state] [--episodes=4] [--workers=2]``

Per task, in one run:
- *policy in the loop*: a default-preset run's collection path (``--workers`` environment
  processes, the policy batched across them in this process, ``rollout.execute_steps`` control
  steps per chunk), timed over a few evaluation episodes of a freshly initialised policy
  (untrained: its episodes run to the time limit, which keeps every task's step count
  comparable); once with workers served as they become ready (the default) and once in lockstep
  (one policy call per decision point, the collection loop before issue 25);
- *raw physics*: the same scene's ``mj_step`` from mid-episode on the same number of processes,
  all stepping at once, converted to control steps/s (divided by the substeps of a control step);
- their ratio against the 0.7x target, and where the workers' time went (``breakdown``).

The policy needs normalisation statistics and an example batch, so the benchmark first records
two expert demonstrations into a temporary workdir (not timed).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time

TARGET = 0.7  # Issue 25: policy-in-the-loop steps/s >= 0.7x raw physics on the same workers.


# ----- raw physics on N processes ----------------------------------------------------------------

def _physics_worker(task: str, seed: int, seconds: float, barrier, queue) -> None:
  """One process: ``mj_step`` on ``task``'s scene from mid-episode for ``seconds`` after all
  processes are ready; puts (mj_steps, elapsed seconds, substeps per control step)."""
  from habc.bench import envs as env_bench
  import mujoco
  env = env_bench.mid_episode_env(task, seed)
  model, data = env.model, env.data
  barrier.wait()
  start = time.perf_counter()
  steps = 0
  while time.perf_counter() - start < seconds:
    for _ in range(50):
      mujoco.mj_step(model, data)
    steps += 50
  queue.put((steps, time.perf_counter() - start, env.n_substeps))


def physics_on_workers(task: str, workers: int, seconds: float = 2.0) -> dict:
  """Raw physics on ``workers`` spawned processes at once: control steps/s in total and per
  process (mj_step/s divided by the substeps of one control step)."""
  ctx = mp.get_context('spawn')
  barrier, queue = ctx.Barrier(workers), ctx.Queue()
  procs = [ctx.Process(target=_physics_worker, args=(task, i, seconds, barrier, queue),
                       daemon=True) for i in range(workers)]
  for p in procs:
    p.start()
  results = [queue.get(timeout=300) for _ in procs]
  for p in procs:
    p.join(timeout=30)
  per_proc = [steps / secs / substeps for steps, secs, substeps in results]
  return {'control_steps_per_s': sum(per_proc), 'per_process': per_proc,
          'mj_steps_per_s': [steps / secs for steps, secs, _ in results],
          'substeps': results[0][2]}


# ----- policy in the loop --------------------------------------------------------------------

def _config(task: str, obs: str, workers: int):
  from experiments import presets
  c = presets.make_config('default')
  c.task, c.obs = task, obs
  if obs == 'state':
    c.cameras = ()
  elif not c.cameras:
    c.cameras = ('top', 'wrist_left', 'wrist_right')
  c.data.num_demos = 2
  c.runtime.num_workers = workers
  c.runtime.progress = False
  return c


def measure(task: str, obs: str, episodes: int, workers: int, time_limit: int = 0,
            modes=(('ready', False), ('lockstep', True))) -> dict:
  """Per serving mode (name, lockstep): steps/s of ``episodes`` evaluation episodes on
  ``workers`` processes, the main process's timings and the workers' summed timings."""
  from habc import pipeline, rollout
  c = _config(task, obs, workers)
  out = {}
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
      pool = run.pool()
      # One untimed episode per worker: spawn, imports and the policy's compilation.
      rollout.run_episodes(pool, requests[:workers], policy, lambda r: None, pad_to=workers)
      for name, lockstep in modes:
        results, stats = [], {}
        rollout.run_episodes(pool, requests, policy, results.append, pad_to=workers,
                             lockstep=lockstep, stats=stats)
        worker = dict.fromkeys(rollout.WORKER_TIMINGS, 0.0)
        for r in results:
          for k in worker:
            worker[k] += r['timings'][k]
        steps = sum(r['length'] for r in results)
        out[name] = {'steps_per_s': steps / stats['wall'], 'steps': steps,
                     'episodes': len(results), 'main': stats, 'worker': worker,
                     'lengths': sorted((r['seed'], r['length']) for r in results)}
    finally:
      run.close()
  return out


def breakdown(run: dict, workers: int) -> dict:
  """Shares (fractions) of the workers' wall time (``workers`` x the run's wall time).

  physics: the environments' substep loops (``mj_step`` and setting the mocap targets);
  env_python: the rest of ``env.step`` outside rendering; policy, main_ipc: the main process's
  policy calls and pipe traffic (workers wait through them); other_workers: the rest of the
  waiting (for slower workers in lockstep, for the main process's attention, for a core);
  unaccounted: worker time outside every timed part (its message loop, unpickling chunks).
  """
  w, m = run['worker'], run['main']
  total = workers * m['wall']
  physics = w['physics']
  shares = {
      'physics': physics,
      'env_python': max(0.0, w['env_step'] - w['render'] - physics),
      'render': w['render'],
      'operator': w['operator'],
      'record': w['record'],
      'reset': w['reset'],
      'worker_ipc': w['send'],
      'policy': min(w['wait'], m['policy'] * workers),
      'main_ipc': min(max(0.0, w['wait'] - m['policy'] * workers),
                      (m['receive'] + m['send']) * workers),
  }
  shares['other_workers'] = max(0.0, w['wait'] - shares['policy'] - shares['main_ipc'])
  shares['unaccounted'] = max(0.0, total - sum(shares.values()))
  return {k: v / total for k, v in shares.items()}


BREAKDOWN_HELP = {
    'physics': 'the substep loop: mj_step and the mocap targets',
    'env_python': 'env.step outside mj_step and rendering: control, grasps, success, observation',
    'render': 'camera rendering (obs=vision)',
    'operator': 'action clipping and the operator',
    'record': 'copies for the episode dict, video frames',
    'reset': 'building the environment and its first reset',
    'worker_ipc': 'worker: sending observations',
    'policy': 'waiting on batched policy calls in the main process',
    'main_ipc': 'waiting on the main process receiving and sending',
    'other_workers': 'waiting for the other workers / for a core',
    'unaccounted': 'worker message loop, unpickling chunks, measurement error',
}


def main(argv=None):
  from habc import envs
  p = argparse.ArgumentParser(prog='python -m habc.bench rollout',
                              description=__doc__.split('\n')[0])
  p.add_argument('--tasks', default=','.join(envs.list_tasks()))
  p.add_argument('--obs', default='state', choices=('state', 'vision'))
  p.add_argument('--episodes', type=int, default=4)
  p.add_argument('--workers', type=int, default=2)
  p.add_argument('--physics_seconds', type=float, default=2.0,
                 help='seconds of raw mj_step per process for the physics rate')
  p.add_argument('--time_limit', type=int, default=0,
                 help='control steps per timed episode (0: the task\'s own limit)')
  p.add_argument('--modes', default='ready,lockstep',
                 help='serving modes to time: ready (default of run_episodes), lockstep')
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  modes = tuple((m, m == 'lockstep') for m in args.modes.split(','))
  print(f'rollout benchmark: obs={args.obs}, {args.workers} worker process(es), {args.episodes} '
        f'episodes per task, untrained default-size policy; load average '
        f'{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores')
  print()
  print('| task | serving | env steps/s, policy in the loop | raw physics control steps/s, '
        f'same {args.workers} proc | ratio (target {TARGET}x) | policy ms/call | rows/call |')
  print('|---|---|---|---|---|---|---|')
  shares = {}
  for task in args.tasks.split(','):
    runs = measure(task, args.obs, args.episodes, args.workers, args.time_limit, modes)
    phys = physics_on_workers(task, args.workers, args.physics_seconds)
    for name, run in runs.items():
      m = run['main']
      ratio = run['steps_per_s'] / phys['control_steps_per_s']
      print(f'| {task} | {name} | {run["steps_per_s"]:.1f} | {phys["control_steps_per_s"]:.1f} | '
            f'{ratio:.2f}x {"ok" if ratio >= TARGET else "below"} | '
            f'{1000 * m["policy"] / max(m["calls"], 1):.2f} | '
            f'{m["rows"] / max(m["calls"], 1):.2f} |', flush=True)
      shares[(task, name)] = breakdown(run, args.workers)
  print(f'\n(load average {os.getloadavg()[0]:.1f} after the runs)')
  print('\nWhere the workers\' time went (share of workers x wall time):\n')
  keys = list(BREAKDOWN_HELP)
  print('| task | serving | ' + ' | '.join(keys) + ' |')
  print('|---|---|' + '---|' * len(keys))
  for (task, name), s in shares.items():
    print(f'| {task} | {name} | ' + ' | '.join(f'{100 * s[k]:.1f}%' for k in keys) + ' |')
  print()
  for k, v in BREAKDOWN_HELP.items():
    print(f'- {k}: {v}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
