"""Rollout throughput: environment steps/s with the policy in the loop, against raw physics.

``python -m habc.bench rollout [--tasks=pouch,insert] [--obs=state] [--episodes=4] [--workers=2]``

Per task, in one run:
- *policy in the loop*: a default-preset run's collection path (``--workers`` environment
  processes, the policy batched across them in this process, ``rollout.execute_steps`` control
  steps per chunk), timed over a few evaluation episodes of a freshly initialised policy
  (untrained: its episodes run to the time limit, which keeps every task's step count
  comparable), for each variant of ``VARIANTS``: workers served as they become ready, with one
  row per policy call or every call padded to all episode slots (the serving before session 18,
  and the study preset's), each with one or two episodes interleaved per worker process (the
  default: one row, two episodes); in lockstep; 'before' (lockstep with the control step of
  commit 157f4ce); and ready with a policy that costs nothing (the round trip through the main
  process alone), the variants alternating over ``--rounds`` rounds; the episode lengths per
  seed of the variants with the network must agree;
- *raw physics*: the same scene's ``mj_step`` from mid-episode on the same number of processes,
  all stepping at once, converted to control steps/s (divided by the substeps of a control step),
  measured right before and right after every timed run (each run against the mean of its two);
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
  else:
    if not c.cameras:
      c.cameras = ('top', 'wrist_left', 'wrist_right')
    # The default kind fractions stratify the uniform sampler (habc.run.backend._sampler); with
    # images 'auto' would pick the episode pool, which refuses them. Two demos fit in memory.
    c.data.sampler = 'uniform'
  c.data.num_demos = 2
  c.runtime.num_workers = workers
  c.runtime.progress = False
  return c


# ----- the environment's control step as it was before issue 25 ----------------------------------

def _legacy_apply_action(self, action) -> None:
  """``TaskEnv.apply_action`` as of commit 157f4ce: the substeps in a Python loop, the mocap
  targets computed and set one substep at a time (the same results, the old cost). It does not
  count ``physics_seconds``: the breakdown estimates its physics from the raw rate, and the
  loop's Python shows as env_python."""
  import mujoco
  import numpy as np
  from habc.envs import base
  a = np.clip(np.asarray(action, np.float32).reshape(base.ACTION_DIM), -1.0, 1.0)
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{self.task_name}: non-finite action {a} at step {self.step_count}.')
  self.last_action = a
  lo, hi = np.asarray(self.workspace[0]), np.asarray(self.workspace[1])
  start = {}
  for i, s in enumerate(base.SIDES):
    d = a[i * base.ARM_ACTION_DIM:(i + 1) * base.ARM_ACTION_DIM]
    cmd = self._cmd[s]
    start[s] = (cmd.pos.copy(), cmd.yaw)
    cmd.pos = np.clip(cmd.pos + d[:3] * self.max_delta_pos, lo, hi)
    cmd.yaw = float(np.clip(cmd.yaw + d[3] * self.max_delta_yaw, -np.pi / 2, np.pi / 2))
    cmd.grip = float(d[4])
    cmd.closed = base.gripper_state(cmd.closed, cmd.grip, self.grip_deadband)
    self.data.ctrl[self._actuator[s]] = base.finger_target(cmd.closed)
  self._after_control(a)
  off = self._grasp_offset()
  for k in range(1, self.n_substeps + 1):
    f = k / self.n_substeps
    for s in base.SIDES:
      (p0, y0), cmd = start[s], self._cmd[s]
      m = self._mocap[s]
      self.data.mocap_pos[m] = p0 + f * (cmd.pos - p0) - off
      self.data.mocap_quat[m] = base.yaw_quat(y0 + f * (cmd.yaw - y0))
    mujoco.mj_step(self.model, self.data)
  if not np.all(np.isfinite(self.data.qacc)):
    raise FloatingPointError(f'{self.task_name}: simulation diverged at step {self.step_count} '
                             f'(episode seed {self.episode_seed}).')


def legacy_env(task: str, **kwargs):
  """``habc.envs.make`` with the control step of commit 157f4ce (``_legacy_apply_action``): the
  benchmark's 'before' environment, a ``WorkerConfig.env_factory``."""
  from habc import envs
  cls = envs.task_class(task)
  legacy = type(f'Legacy{cls.__name__}', (cls,), {'apply_action': _legacy_apply_action})
  return legacy(**kwargs)


# Variants timed per task: name -> (serving in lockstep, environment factory, episodes per
# worker, policy, rows per policy call: 0 pads every call to all episode slots, as before issue
# 25's change and in the study preset; 1 is ``rollout.policy_batch``'s default). 'before' is the
# collection path of commit 157f4ce (lockstep serving, the Python substep loop, one episode per
# worker). 'ready-zero' replaces the network by a policy that costs nothing (zero chunks of the
# same shape): what is left of the waiting is the round trip through the main process.
VARIANTS = {
    'ready': (False, 'habc.envs:make', 1, 'network', 1),
    'ready-2ep': (False, 'habc.envs:make', 2, 'network', 1),
    'ready-slots': (False, 'habc.envs:make', 1, 'network', 0),
    'ready-2ep-slots': (False, 'habc.envs:make', 2, 'network', 0),
    'lockstep': (True, 'habc.envs:make', 1, 'network', 0),
    'before': (True, 'habc.bench.rollout:legacy_env', 1, 'network', 0),
    'ready-zero': (False, 'habc.envs:make', 1, 'zero', 1),
}


def _zero_policy(shape):
  """A policy that costs nothing: zero chunks [N, *shape]."""
  import numpy as np

  def act(observations, noise_ids):
    del noise_ids
    return np.zeros((len(observations),) + tuple(shape), np.float32)
  return act


def measure(task: str, obs: str, episodes: int, workers: int, time_limit: int = 0,
            variants=tuple(VARIANTS), rounds: int = 2, physics_seconds: float = 2.0) -> dict:
  """Per variant (see ``VARIANTS``): steps/s of ``episodes`` evaluation episodes on ``workers``
  processes, the main process's timings and the workers' summed timings, and the raw physics of
  the scene on ``workers`` processes measured right before and right after each of its runs
  ('physics': control steps/s, the neighbours' mean weighted by the run's wall time). Variants
  alternate over ``rounds`` rounds, so that a change of load weighs on all alike."""
  import dataclasses
  from habc.run import pipeline, rollout
  c = _config(task, obs, workers)
  out = {name: {'steps': 0, 'episodes': 0, 'main': {}, 'lengths': {}, 'physics_x_wall': 0.0,
                'worker': dict.fromkeys(rollout.WORKER_TIMINGS, 0.0)} for name in variants}
  physics = []
  with tempfile.TemporaryDirectory() as workdir:
    recorder = pipeline.Pipeline(c, workdir, log=lambda _: None)
    try:
      recorder.demos()  # With the task's own time limit (the expert must finish).
    finally:
      recorder.close()
    c.rollout.time_limit = time_limit
    run = pipeline.Pipeline(c, workdir, log=lambda _: None)
    pools = {}
    try:
      run.backend.load_latest(run.paths.checkpoints, allow_fresh=True)
      network = run.backend.policy(0)
      requests = [rollout.EpisodeRequest(episode_id=f'bench-{i}', seed=1000 + i, kind='eval',
                                         record=False) for i in range(episodes)]
      from habc.envs import base as envs_base
      policies = {'network': network,
                  'zero': _zero_policy((c.model.action_horizon, envs_base.ACTION_DIM))}
      for name in variants:
        _, factory, per, policy_name, rows = VARIANTS[name]
        policy = policies[policy_name]
        config = dataclasses.replace(run.backend.worker_config(), env_factory=factory)
        pools[name] = rollout.WorkerPool(config, workers, episodes_per_worker=per)
        # One untimed episode per slot: spawn, imports and the policy's compilation.
        rollout.run_episodes(pools[name], requests[:workers * per], policy, lambda r: None,
                             pad_to=rows or None)
      physics.append(physics_on_workers(task, workers, physics_seconds))
      for _ in range(rounds):
        for name in variants:
          results, r, main = [], out[name], {}
          lockstep, _, _, policy_name, rows = VARIANTS[name]
          rollout.run_episodes(pools[name], requests, policies[policy_name], results.append,
                               lockstep=lockstep, pad_to=rows or None, stats=main)
          physics.append(physics_on_workers(task, workers, physics_seconds))
          raw = (physics[-2]['control_steps_per_s'] + physics[-1]['control_steps_per_s']) / 2
          r['physics_x_wall'] += raw * main['wall']
          for k, v in main.items():
            r['main'][k] = r['main'].get(k, 0.0) + v
          for result in results:
            for k in r['worker']:
              r['worker'][k] += result['timings'][k]
            r['lengths'][result['seed']] = result['length']
          r['steps'] += sum(result['length'] for result in results)
          r['episodes'] += len(results)
    finally:
      for pool in pools.values():
        pool.close()
      run.close()
  same = [name for name in variants if VARIANTS[name][3] == 'network']  # Same policy.
  for name, r in out.items():
    r['steps_per_s'] = r['steps'] / r['main']['wall']
    r['physics'] = r.pop('physics_x_wall') / r['main']['wall']
    if name in same and r['lengths'] != out[same[0]]['lengths']:
      raise AssertionError(f'{task}: episode lengths per seed differ between the variants '
                           f'{same[0]} and {name}: {out[same[0]]["lengths"]} vs '
                           f'{r["lengths"]}. The speed-up changed the episodes.')
  mj = [rate for p in physics for rate in p['mj_steps_per_s']]
  out['physics'] = {'mj_steps_per_s_per_process': sum(mj) / len(mj),
                    'substeps': physics[0]['substeps']}
  return out


def breakdown(run: dict, workers: int, mj_steps_per_s: float, substeps: int) -> dict:
  """Shares (fractions) of the workers' wall time (``workers`` x the run's wall time).

  physics: the environments' substep loops as they count them (``physics_seconds``), or, for
  environments that do not count, the run's steps x substeps at the raw per-process
  ``mj_steps_per_s`` (an estimate);
  env_python: the rest of ``env.step`` outside rendering; policy, main_ipc: the main process's
  policy calls and pipe traffic (workers wait through them); other_workers: the rest of the
  waiting (for slower workers in lockstep, for the main process's attention, for a core);
  unaccounted: worker time outside every timed part (its message loop, unpickling chunks).
  """
  w, m = run['worker'], run['main']
  total = workers * m['wall']
  physics = w['physics'] or run['steps'] * substeps / mj_steps_per_s
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
  p.add_argument('--variants', default=','.join(VARIANTS),
                 help=f'what to time, among {",".join(VARIANTS)} (see VARIANTS)')
  p.add_argument('--rounds', type=int, default=2,
                 help='rounds; each runs every variant once, the raw physics after each')
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  variants = tuple(args.variants.split(','))
  print(f'rollout benchmark: obs={args.obs}, {args.workers} worker process(es), {args.episodes} '
        f'episodes x {args.rounds} rounds per variant and task, untrained default-size policy; '
        f'load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores')
  print()
  print('| task | variant | env steps/s, policy in the loop | raw physics control steps/s, '
        f'same {args.workers} proc | ratio (target {TARGET}x) | policy ms/call | rows/call |')
  print('|---|---|---|---|---|---|---|')
  shares = {}
  for task in args.tasks.split(','):
    runs = measure(task, args.obs, args.episodes, args.workers, args.time_limit, variants,
                   args.rounds, args.physics_seconds)
    phys = runs.pop('physics')
    for name, run in runs.items():
      m = run['main']
      ratio = run['steps_per_s'] / run['physics']
      print(f'| {task} | {name} | {run["steps_per_s"]:.1f} | {run["physics"]:.1f} | '
            f'{ratio:.2f}x {"ok" if ratio >= TARGET else "below"} | '
            f'{1000 * m["policy"] / max(m["calls"], 1):.2f} | '
            f'{m["rows"] / max(m["calls"], 1):.2f} |', flush=True)
      shares[(task, name)] = breakdown(run, args.workers, phys['mj_steps_per_s_per_process'],
                                       phys['substeps'])
  print(f'\n(load average {os.getloadavg()[0]:.1f} after the runs; variants: ready = this code, '
        'workers served as they become ready, one row per policy call (rollout.policy_batch=1); '
        'ready-2ep = the same, each worker process interleaving two episodes '
        '(runtime.episodes_per_worker=2, the default); -slots = every call padded to all '
        'episode slots (policy_batch=0, the study preset and the code before this change); '
        'lockstep = one policy call per decision point, padded to the slots; before = lockstep '
        'with the control step of 157f4ce; ready-zero = ready with a policy that costs nothing, '
        'other actions: its waiting is the round trip alone)')
  print('\nWhere the workers\' time went (share of workers x wall time):\n')
  keys = list(BREAKDOWN_HELP)
  print('| task | variant | ' + ' | '.join(keys) + ' |')
  print('|---|---|' + '---|' * len(keys))
  for (task, name), s in shares.items():
    print(f'| {task} | {name} | ' + ' | '.join(f'{100 * s[k]:.1f}%' for k in keys) + ' |')
  print()
  for k, v in BREAKDOWN_HELP.items():
    print(f'- {k}: {v}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
