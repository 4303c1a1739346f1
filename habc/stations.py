"""Actor/learner split for several robot stations sharing one storage directory.

Roles (each its own process, on its own machine or not):

* **actor** (``run_actor``, one per station): loads the newest learner checkpoint, runs one
  episode with the policy and the operator (``habc.rollout``: the environment renders in a spawned
  worker process; this process holds the policy and never imports TensorFlow), commits the
  finished episode to its station's RLDS dataset, and repeats. With no checkpoint yet it waits,
  saying so, and gives up after ``wait_timeout_s``.
* **learner** (``run_learner``): trains on the demonstrations plus every station's committed
  episodes, rescans for new ones every ``rescan_every`` steps, writes checkpoints every
  ``pipeline.checkpoint_every`` steps. With no new episodes it keeps training on what it has and
  says so (every ``idle_log_s`` seconds).

Shared directory (the learner's workdir; ``launch.py --mode=demos --workdir=<shared>`` makes the
demonstrations first, and optionally ``--mode=sft`` the first checkpoint)::

  config.json                  the run's config; every actor and the learner must agree
  data/demos/                  demonstrations (RLDS) and the normalisation statistics
  checkpoints/                 learner checkpoints (orbax)
  stations/station_000/        station 0's episodes (RLDS, tfds array_record)
  stations/station_000.jsonl   station 0's episode log (id, seed, outcome, policy version)
  logs/learner.jsonl           the learner's progress

No collisions: each station writes only its own dataset directory, whose writer holds an
exclusive lock (a second actor started with the same ``station_id`` stops with a clear error);
episode ids are ``station<id>-<index>`` and the index continues from what the station committed,
so a restarted actor neither overwrites nor duplicates. The learner only reads, and sees exactly
the episodes committed when it rescans (the writer replaces ``dataset_info.json`` atomically
after the shard is in place).

Storage requirement: the writer uses POSIX file operations (``os.replace``, ``fsync``,
``fcntl`` locks) and never TensorFlow, so the shared directory must be a local or network file
system with those semantics (a local disk, NFS). Bucket URLs (``gs://...``) are refused: a FUSE
mount of a bucket (gcsfuse) does not make renames atomic nor locks exclusive across machines.
Export a finished dataset to a bucket with tf.io.gfile in a process that does not render.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np

from habc import preflight
from habc import rollout

STATIONS_DIR = 'stations'
LEARNER_LOG = 'learner.jsonl'


class SharedStorageError(ValueError):
  """The shared directory is not usable by the actor/learner split."""


# ------------------------------------------------------------------------------------------------
# Layout.


def check_shared_dir(path: str) -> str:
  """Returns the absolute local path; refuses bucket URLs (see the module docstring)."""
  if preflight.is_remote(path):
    raise SharedStorageError(
        f'{path}: the actor/learner split needs a POSIX file system shared by every station '
        '(local disk or NFS) for atomic commits and the per-station writer lock; bucket URLs are '
        'not supported. Mount a shared file system and pass its path.')
  return os.path.abspath(path)


def station_dataset(shared_dir: str, station_id: int) -> str:
  return os.path.join(shared_dir, STATIONS_DIR, f'station_{int(station_id):03d}')


def station_log(shared_dir: str, station_id: int) -> str:
  return station_dataset(shared_dir, station_id) + '.jsonl'


def episode_id(station_id: int, index: int) -> str:
  return f'station{int(station_id):03d}-{int(index):06d}'


def scan_stations(shared_dir: str) -> dict[str, int]:
  """{station dataset dir: committed episodes} for every station with at least one episode."""
  from habc.data import writer as writer_lib
  root = os.path.join(shared_dir, STATIONS_DIR)
  if not os.path.isdir(root):
    return {}
  out = {}
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if name.startswith('station_') and os.path.isdir(path):
      try:
        n = writer_lib.num_episodes(path)
      except (OSError, ValueError):  # dataset_info.json being replaced: next scan.
        continue
      if n:
        out[path] = n
  return out


def _read_jsonl(path: str) -> list[dict]:
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break  # A line cut by a crash.
  return rows


def _append_jsonl(path: str, row: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')
    f.flush()
    os.fsync(f.fileno())


def next_episode_index(shared_dir: str, station_id: int) -> int:
  """The next free episode index of a station: after every logged or committed episode."""
  last = -1
  for row in _read_jsonl(station_log(shared_dir, station_id)):
    last = max(last, int(str(row.get('episode_id', '-1')).rsplit('-', 1)[-1]))
  path = station_dataset(shared_dir, station_id)
  from habc.data import writer as writer_lib
  n = writer_lib.num_episodes(path) if os.path.isdir(path) else 0
  if n:
    from habc.data import reader
    source = reader.EpisodeSource(path, cameras=())
    ids = str(source[n - 1]['episode_metadata']['episode_id'])
    last = max(last, int(ids.rsplit('-', 1)[-1]))
  return last + 1


# ------------------------------------------------------------------------------------------------
# Checkpoints shared between the roles.


def latest_checkpoint_step(directory: str) -> int | None:
  """The newest complete checkpoint's step, read fresh from disk (None: none yet)."""
  if not os.path.isdir(directory):
    return None
  from habc import checkpoints
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=None)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def wait_for_checkpoint(directory: str, *, timeout_s: float, poll_s: float = 2.0,
                        log: Callable[[str], None] = print, who: str = 'actor') -> int:
  """Blocks until a checkpoint exists in ``directory``; returns its step.

  Raises:
    TimeoutError: none appeared within ``timeout_s`` seconds (says what to start).
  """
  start = time.monotonic()
  last_message = None
  while True:
    step = latest_checkpoint_step(directory)
    if step is not None:
      if last_message is not None:
        log(f'{who}: checkpoint {step} appeared after {time.monotonic() - start:.0f} s')
      return step
    waited = time.monotonic() - start
    if waited >= timeout_s:
      raise TimeoutError(
          f'{who}: no learner checkpoint in {directory} after {waited:.0f} s. Start the learner '
          '(launch.py --mode=learner with the same --workdir) or give the actor a longer '
          '--wait_timeout.')
    if last_message is None or time.monotonic() - last_message >= 30:
      log(f'{who}: waiting for a learner checkpoint in {directory} (timeout {timeout_s:.0f} s)')
      last_message = time.monotonic()
    time.sleep(min(poll_s, max(0.05, timeout_s - waited)))


def _load_newest(backend, directory: str, attempts: int = 3) -> int:
  """Restores the newest checkpoint into ``backend``; retries when the learner deletes it."""
  error = None
  for _ in range(attempts):
    backend.close()  # Drops the cached checkpoint manager: its step list would be stale.
    try:
      return backend.load_latest(directory)
    except (FileNotFoundError, ValueError, OSError) as e:  # Removed while being read.
      error = e
      time.sleep(0.5)
  raise RuntimeError(f'Could not restore the newest checkpoint of {directory}: {error}') from error


# ------------------------------------------------------------------------------------------------
# Actor.


def _no_tensorflow(where: str) -> None:
  if 'tensorflow' in sys.modules:
    raise RuntimeError(f'TensorFlow was imported in the {where} process; the actor must stay '
                       'free of it (MuJoCo software rendering crashes next to it).')


def run_actor(config, shared_dir: str, station_id: int, *, max_episodes: int | None = None,
              max_seconds: float | None = None, wait_timeout_s: float = 600.0,
              poll_s: float = 2.0, min_free_gb: float | None = None,
              log: Callable[[str], None] = print) -> dict:
  """One station's loop: newest checkpoint -> one episode -> commit -> repeat.

  Args:
    config: the experiment config (the same as the learner's; checked against config.json).
    shared_dir: the shared directory (a local or NFS path; see the module docstring).
    station_id: this station's number (>= 0); one actor per id.
    max_episodes: stop after this many episodes in this call (None: run until killed).
    max_seconds: stop starting new episodes after this many seconds.
    wait_timeout_s: how long to wait for a first checkpoint before giving up.
    poll_s: seconds between looks for a checkpoint.
    min_free_gb: free-space threshold of the start-up check (None: preflight's default).
    log: where progress lines go.

  Returns:
    {'station', 'episodes', 'written', 'successes', 'policy_versions'} of this call.
  """
  from habc import pipeline
  from habc.data import schema
  from habc.data import writer as writer_lib
  shared_dir = check_shared_dir(shared_dir)
  if int(station_id) < 0:
    raise ValueError(f'station_id must be >= 0, got {station_id}.')
  preflight.check_workdir(shared_dir, min_free_gb)
  pipeline.prepare_workdir(config, shared_dir)
  paths = pipeline.Paths(shared_dir)
  dataset = station_dataset(shared_dir, station_id)
  os.makedirs(os.path.dirname(dataset), exist_ok=True)
  backend = pipeline.Backend(config)
  backend.bind(paths)
  out = {'station': int(station_id), 'episodes': 0, 'written': 0, 'successes': 0,
         'policy_versions': []}
  pool = None
  writer = None
  start_time = time.monotonic()
  try:
    wait_for_checkpoint(paths.checkpoints, timeout_s=wait_timeout_s, poll_s=poll_s, log=log,
                        who=f'actor {station_id}')
    if os.path.exists(os.path.join(dataset, 'dataset_info.json')):
      writer = writer_lib.EpisodeWriter(dataset)  # Takes the station's lock now.
    index = next_episode_index(shared_dir, station_id)
    pool = rollout.WorkerPool(backend.worker_config(), 1)
    while max_episodes is None or out['episodes'] < max_episodes:
      if max_seconds is not None and time.monotonic() - start_time > max_seconds:
        break
      step = _load_newest(backend, paths.checkpoints)
      request = rollout.EpisodeRequest(
          episode_id=episode_id(station_id, index),
          seed=rollout.seed_for(config.seed, 'actor', station_id, index), kind='rollout',
          policy_version=step, record=True)
      policy = backend.policy(rng_seed=rollout.seed_for(config.seed, 'actorpol', station_id,
                                                        index))
      results = []
      rollout.run_episodes(pool, [request], policy, results.append)
      result = results[0]
      if result['episode'] is not None:
        with preflight.storage_errors(dataset):
          if writer is None:
            writer = writer_lib.EpisodeWriter(dataset, schema.spec_of_episode(
                result['episode'], image_format=pipeline.IMAGE_FORMAT))
          writer.append(result['episode'])
        out['written'] += 1
      with preflight.storage_errors(dataset):
        _append_jsonl(station_log(shared_dir, station_id), {
            'episode_id': request.episode_id, 'seed': request.seed, 'policy_version': step,
            'success': result['success'], 'invalid': result['invalid'],
            'length': result['length'], 'intervention_steps': result['intervention_steps'],
            'time': time.time()})
      out['episodes'] += 1
      out['successes'] += int(result['success'])
      out['policy_versions'].append(step)
      log(f'actor {station_id}: {request.episode_id} with checkpoint {step}: '
          f'{"success" if result["success"] else "failure"} in {result["length"]} steps '
          f'({result["intervention_steps"]} operator steps)'
          + (' [invalid: not written]' if result['episode'] is None else ''))
      index += 1
    _no_tensorflow('actor')
  finally:
    if pool is not None:
      pool.close()
    if writer is not None:
      writer.close()
    backend.close()
  return out


# ------------------------------------------------------------------------------------------------
# Learner.


def mixture(demo_dir: str, stations: dict[str, int], demo_fraction: float) -> list:
  """[(dataset dir, sampling weight)]: demos at ``demo_fraction`` (all of it when no station has
  episodes), the stations sharing the rest in proportion to their episode counts."""
  if not stations:
    return [(demo_dir, 1.0)]
  total = sum(stations.values())
  rest = 1.0 - demo_fraction
  return [(demo_dir, demo_fraction)] + [(p, rest * n / total) for p, n in sorted(stations.items())]


def run_learner(config, shared_dir: str, *, max_steps: int | None = None,
                max_seconds: float | None = None, until_episodes: int | None = None,
                rescan_every: int = 20, idle_log_s: float = 60.0,
                min_free_gb: float | None = None, log: Callable[[str], None] = print) -> dict:
  """Trains on whatever episodes the stations committed, rescanning; writes checkpoints.

  Starts from the newest checkpoint in ``<shared>/checkpoints`` (e.g. the SFT one), or from a
  fresh initialisation, which it saves at once so that waiting actors can start.

  Args:
    config: the experiment config.
    shared_dir: the shared directory; ``data/demos`` must exist (``launch.py --mode=demos``).
    max_steps: stop at this learner step (None: no limit).
    max_seconds: stop after this many seconds of this call.
    until_episodes: stop once this many station episodes are in the training mix and a
      checkpoint was written after they joined (tests and bounded runs).
    rescan_every: learner steps between looks for new episodes.
    idle_log_s: seconds without new episodes between "no new episodes" lines.
    min_free_gb: free-space threshold of the start-up check.
    log: where progress lines go.

  Returns:
    {'step', 'episodes', 'stations', 'rescans', 'checkpoints'} at the end.
  """
  from habc import pipeline
  shared_dir = check_shared_dir(shared_dir)
  if max_steps is None and max_seconds is None and until_episodes is None:
    log('learner: no stop condition given; runs until killed')
  preflight.check_workdir(shared_dir, min_free_gb)
  pipeline.prepare_workdir(config, shared_dir)
  paths = pipeline.Paths(shared_dir)
  if not os.path.exists(os.path.join(paths.demo_data, 'dataset_info.json')):
    raise FileNotFoundError(
        f'No demonstrations in {paths.demo_data}: run launch.py --mode=demos with '
        f'--workdir={shared_dir} (and the same config) before the learner.')
  c = config
  backend = pipeline.Backend(c)
  backend.bind(paths)
  os.makedirs(paths.logs, exist_ok=True)
  learner_log = os.path.join(paths.logs, LEARNER_LOG)
  keep = max(3, int(c.pipeline.keep_checkpoints))  # Actors may be restoring an older one.
  ckpt = backend.checkpointer(paths.checkpoints, keep)
  resumed = backend.load_latest(paths.checkpoints, allow_fresh=True)
  stations = scan_stations(shared_dir)
  if resumed is None:
    backend.save(ckpt, meta={'stage': 'learner', 'station_episodes': 0})
    log(f'learner: no checkpoint in {paths.checkpoints}; saved the initial one (step '
        f'{backend.step}) for the actors')
  else:
    log(f'learner: resumed from checkpoint {resumed}')
  ir = pipeline.intervention_reweighting_at(c, 0)
  rebuilds = [0]

  def open_stream(found):
    rebuilds[0] += 1
    return backend.batches(mixture(paths.demo_data, found, c.data.demo_fraction),
                           seed=rollout.seed_for(c.seed, 'learner', rebuilds[0], backend.step))

  def total(found):
    return int(sum(found.values()))

  log(f'learner: training on {total(stations)} episodes from {len(stations)} stations '
      '+ demonstrations')
  batches = open_stream(stations)
  start_time = time.monotonic()
  last_new = time.monotonic()
  last_idle_log = time.monotonic()
  reached_at = None if until_episodes is None or total(stations) < until_episodes else backend.step
  rescans = 0
  saved = 0
  first_step = last_saved = backend.step
  try:
    while True:
      step = backend.step
      if max_steps is not None and step >= max_steps:
        break
      if max_seconds is not None and time.monotonic() - start_time > max_seconds:
        log(f'learner: time budget of {max_seconds:.0f} s spent')
        break
      if reached_at is not None and last_saved > reached_at:
        break
      # The gate's warm-up counts from where this learner started (e.g. an SFT checkpoint).
      metrics = backend.update(next(batches), intervention_reweighting=ir,
                               gate_warmup=step - first_step < c.method.warmup_steps)
      step = backend.step
      if step % c.pipeline.checkpoint_every == 0:
        with preflight.storage_errors(paths.checkpoints):
          backend.save(ckpt, meta={'stage': 'learner', 'station_episodes': total(stations)})
          _append_jsonl(learner_log, {
              'step': step, 'episodes': total(stations), 'stations': len(stations),
              'time': time.time(), **{k: v for k, v in metrics.items() if np.isfinite(v)}})
        saved += 1
        last_saved = step
      if step % max(1, rescan_every) == 0:
        rescans += 1
        found = scan_stations(shared_dir)
        if found != stations:
          new = total(found) - total(stations)
          if hasattr(batches, 'close'):
            batches.close()
          stations = found
          batches = open_stream(stations)
          last_new = last_idle_log = time.monotonic()
          log(f'learner: step {step}: {new} new episodes; training on {total(stations)} from '
              f'{len(stations)} stations + demonstrations')
          if reached_at is None and until_episodes is not None and \
              total(stations) >= until_episodes:
            reached_at = step
        elif time.monotonic() - last_idle_log >= idle_log_s:
          log(f'learner: step {step}: no new episodes for {time.monotonic() - last_new:.0f} s; '
              f'training on the {total(stations)} episodes it has ({len(stations)} stations + '
              'demonstrations)')
          last_idle_log = time.monotonic()
    if backend.step != last_saved:
      with preflight.storage_errors(paths.checkpoints):
        backend.save(ckpt, meta={'stage': 'learner', 'station_episodes': total(stations)})
      saved += 1
  finally:
    if hasattr(batches, 'close'):
      batches.close()
    backend.close()
  log(f'learner: stopped at step {backend.step} with {total(stations)} station episodes')
  return {'step': backend.step, 'episodes': total(stations), 'stations': len(stations),
          'rescans': rescans, 'checkpoints': saved}


# ------------------------------------------------------------------------------------------------
# Command line (also `launch.py --mode=actor|learner`):
#   python -m habc.stations --role=learner --workdir=/shared/run --task=insert --preset=smoke
#   python -m habc.stations --role=actor --station_id=0 --workdir=/shared/run --task=insert ...


def load_config(experiment: str, preset: str, task: str | None = None, seed: int | None = None):
  """An experiment config (a module name like 'habc' or a file path) with task/seed applied."""
  import importlib.util
  import ml_collections
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = experiment if experiment.endswith('.py') else os.path.join(
      root, 'experiments', f'{experiment}.py')
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(root, path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Unknown experiment {experiment!r} ({path} does not exist).')
  if root not in sys.path:
    sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location('habc_station_experiment', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = ml_collections.ConfigDict(module.get_config(preset).to_dict())
  if task is not None:
    config.task = task
  if seed is not None:
    config.seed = seed
  return config


def parse_args(argv):
  p = argparse.ArgumentParser(prog='python -m habc.stations', description=__doc__.split('\n')[0])
  p.add_argument('--role', choices=('actor', 'learner'), required=True)
  p.add_argument('--workdir', required=True, help='the shared directory')
  p.add_argument('--experiment', default='habc')
  p.add_argument('--preset', default='default')
  p.add_argument('--task', default=None)
  p.add_argument('--seed', type=int, default=None)
  p.add_argument('--station_id', type=int, default=0)
  p.add_argument('--max_episodes', type=int, default=None)
  p.add_argument('--max_steps', type=int, default=None)
  p.add_argument('--max_seconds', type=float, default=None)
  p.add_argument('--until_episodes', type=int, default=None)
  p.add_argument('--wait_timeout', type=float, default=600.0)
  p.add_argument('--poll', type=float, default=2.0)
  p.add_argument('--rescan_every', type=int, default=20)
  p.add_argument('--idle_log_s', type=float, default=60.0)
  p.add_argument('--min_free_gb', type=float, default=None)
  return p.parse_args(argv)


def main(argv=None) -> int:
  from habc import pipeline
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = load_config(args.experiment, args.preset, args.task, args.seed)
  log = lambda line: print(line, flush=True)
  try:
    if args.role == 'actor':
      out = run_actor(config, args.workdir, args.station_id, max_episodes=args.max_episodes,
                      max_seconds=args.max_seconds, wait_timeout_s=args.wait_timeout,
                      poll_s=args.poll, min_free_gb=args.min_free_gb, log=log)
    else:
      out = run_learner(config, args.workdir, max_steps=args.max_steps,
                        max_seconds=args.max_seconds, until_episodes=args.until_episodes,
                        rescan_every=args.rescan_every, idle_log_s=args.idle_log_s,
                        min_free_gb=args.min_free_gb, log=log)
  except (TimeoutError, SharedStorageError, preflight.StorageError, FileNotFoundError,
          pipeline.ConfigMismatchError) as e:
    print(f'habc.stations: {e}', file=sys.stderr, flush=True)
    return 1
  print('result ' + json.dumps(out), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
