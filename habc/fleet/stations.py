"""Actor/learner split for several robot stations sharing one storage location.

Roles (each its own process, on its own machine or not):

* **actor** (``run_actor``, one per station): loads the newest learner checkpoint, runs one
  episode with the policy and the operator (``habc.run.rollout``: the environment renders in a
  spawned worker process; this process holds the policy and never imports TensorFlow), commits the
  finished episode to its station's RLDS dataset, and repeats. With no checkpoint yet it waits,
  saying so, and gives up after ``wait_timeout_s``.
* **learner** (``run_learner``): trains on the demonstrations plus every station's committed
  episodes, rescans for new ones every ``rescan_every`` steps, writes checkpoints every
  ``pipeline.checkpoint_every`` steps. With no new episodes it keeps training on what it has and
  says so (every ``idle_log_s`` seconds). It may span several hosts (``jax.distributed``): every
  process feeds its share of each batch and takes part in each checkpoint save; only process 0
  writes logs and publishes.

Shared location (``--workdir``): a local or NFS path, or any URL tf.io.gfile accepts (``gs://``,
``s3://``, ``file://``...). ``launch.py --mode=demos`` makes the demonstrations first (see
"Remote" below for a bucket). Layout, the same under a path or a URL::

  config.json                  the run's config; every actor and the learner must agree
  data/demos/                  demonstrations (RLDS) and the normalisation statistics
  checkpoints/<step>/          learner checkpoints (orbax)
  stations/station_000/        station 0's episodes (RLDS, tfds array_record)
  stations/station_000.jsonl   station 0's episode log (id, seed, outcome, policy version)
  logs/learner.jsonl           the learner's progress

No collisions: each station writes only its own dataset, whose writer holds an exclusive lock (a
second actor started with the same ``station_id`` on the same disk stops with a clear error);
episode ids are ``station<id>-<index>`` and the index continues from what the station committed,
so a restarted actor neither overwrites nor duplicates. The learner sees exactly the episodes
committed when it rescans (the writer replaces ``dataset_info.json`` atomically after the shard
is in place).

**Local path**: every role works in the shared directory itself (POSIX ``os.replace``, ``fsync``,
``fcntl`` locks: a local disk or NFS; not a FUSE-mounted bucket).

**Remote URL**: every role works in a local cache directory (``cache_dir``, default
``$HABC_STATION_CACHE`` or ``~/.cache/habc/stations``, then ``<url slug>/<role>``) laid out as
above, and copies files through ``habc.fleet.storage`` (a tf.io.gfile helper process: TensorFlow
never loads in a role's own process, and orbax never sees a URL):

* an actor commits each episode locally exactly as on a local path, then publishes the new shard,
  then ``features.json``, then ``dataset_info.json`` (each upload atomic): a reader that fetches
  ``dataset_info.json`` finds every shard it lists. It fetches the newest *published* checkpoint
  into its cache before loading it, and the demonstrations once (the model is built from them).
* the learner fetches each station's new shards (those listed in the remote
  ``dataset_info.json``, which it writes locally last), trains on its cache, saves checkpoints
  locally and publishes each: its files under ``checkpoints/<step>/``, then the marker
  ``checkpoints/<step>/habc_published.json`` (its file list) last. Readers only take steps whose
  marker exists; older steps are unpublished (marker first) beyond ``keep`` (at least 3).
* demonstrations: made locally with ``launch.py --mode=demos --workdir=<learner cache>`` (the
  learner's error message prints that path); the learner publishes them with a marker as above.
* a station whose cache was lost gets its committed episodes back from the URL before writing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from typing import Callable

import numpy as np

from habc.fleet import distributed
from habc.fleet import preflight
from habc.run import storage_errors
from habc.run import rollout
from habc.fleet import storage as storage_lib

STATIONS_DIR = 'stations'
LEARNER_LOG = 'learner.jsonl'
CACHE_ENV = 'HABC_STATION_CACHE'
MARKER = 'habc_published.json'
_SHARD = re.compile(r'-train\.array_record-(\d{5})$')
_STATION = re.compile(r'^station_\d+$')


class SharedStorageError(ValueError):
  """The shared location is not usable by the actor/learner split."""


# ------------------------------------------------------------------------------------------------
# Layout.


def check_shared_dir(path: str) -> str:
  """The shared location: an absolute local path, or the URL without a trailing '/'."""
  if not str(path or '').strip():
    raise SharedStorageError('The actor/learner split needs --workdir=<shared path or URL>.')
  if storage_lib.is_remote(path):
    scheme, _, rest = str(path).partition('://')
    if not scheme or not rest.strip('/'):
      raise SharedStorageError(f'{path}: a URL needs a scheme and a path (e.g. gs://bucket/run).')
    return str(path).rstrip('/')
  return os.path.abspath(path)


def default_cache(url: str, role: str, base: str | None = None) -> str:
  """The local cache of one role for a remote URL: ``<base>/<url slug>-<hash>/<role>``."""
  base = base or os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser('~'), '.cache', 'habc', 'stations')
  slug = re.sub(r'[^A-Za-z0-9._-]+', '_', url)[-60:].strip('_')
  digest = hashlib.sha1(url.encode()).hexdigest()[:8]
  return os.path.join(base, f'{slug}-{digest}', role)


@dataclasses.dataclass
class Shared:
  """Where a role works: ``url`` (the shared location) and ``local`` (its working directory:
  ``url`` itself for a local path, a cache for a URL). ``storage`` is None for a local path."""

  url: str
  local: str
  storage: storage_lib.Storage | None = None

  @property
  def remote(self) -> bool:
    return self.storage is not None

  def at(self, *parts: str) -> str:
    return storage_lib.join(self.url, *parts)

  def close(self) -> None:
    if self.storage is not None:
      self.storage.close()


def open_shared(path: str, role: str, cache_dir: str | None = None,
                storage: storage_lib.Storage | None = None) -> Shared:
  """``Shared`` for ``path``; a URL gets ``cache_dir`` (default ``default_cache``) and a Storage."""
  url = check_shared_dir(path)
  if not storage_lib.is_remote(url):
    return Shared(url, url)
  local = os.path.abspath(cache_dir) if cache_dir else default_cache(url, role)
  os.makedirs(local, exist_ok=True)
  return Shared(url, local, storage or storage_lib.Storage())


def station_dataset(shared_dir: str, station_id: int) -> str:
  return storage_lib.join(shared_dir, STATIONS_DIR, f'station_{int(station_id):03d}')


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
    from habc.data import episodes as episodes_lib
    source = episodes_lib.EpisodeSource(path, cameras=())
    ids = str(source[n - 1]['episode_metadata']['episode_id'])
    last = max(last, int(ids.rsplit('-', 1)[-1]))
  return last + 1


# ------------------------------------------------------------------------------------------------
# Remote copies (habc.fleet.storage): datasets shard by shard, directories with a marker written
# last.


def _info_lengths(info: dict | None) -> list[int]:
  from habc.data import writer as writer_lib
  return writer_lib.existing_shards(info)[0] if info else []


def _shard_files(names) -> dict[int, str]:
  """{shard index: file name} of the array_record shards among ``names``."""
  out = {}
  for name in names:
    match = _SHARD.search(name)
    if match:
      out[int(match.group(1))] = name
  return out


def remote_shards(st: storage_lib.Storage, url: str) -> int:
  """How many shards the dataset at ``url`` lists (0: none published yet)."""
  try:
    return len(_info_lengths(json.loads(st.read_bytes(storage_lib.join(url,
                                                                       'dataset_info.json')))))
  except storage_lib.NotFound:
    return 0


def publish_dataset(st: storage_lib.Storage, local_dir: str, url: str, listed: int) -> int:
  """Uploads shards ``listed..`` of a local dataset, then its metadata; returns the shard count.

  ``dataset_info.json`` goes last, so a reader that sees it finds every shard it lists.
  """
  from habc.data import writer as writer_lib
  info = writer_lib.read_info_json(local_dir)
  n = len(_info_lengths(info))
  if n <= listed:
    return listed
  files = _shard_files(os.listdir(local_dir))
  for index in range(listed, n):
    st.upload(os.path.join(local_dir, files[index]), storage_lib.join(url, files[index]))
  st.upload(os.path.join(local_dir, 'features.json'), storage_lib.join(url, 'features.json'))
  st.upload(os.path.join(local_dir, 'dataset_info.json'),
            storage_lib.join(url, 'dataset_info.json'))
  return n


def fetch_dataset(st: storage_lib.Storage, url: str, local_dir: str) -> int:
  """Brings ``local_dir`` up to the shards the remote dataset lists; returns the shard count.

  New shards first, ``dataset_info.json`` last (replaced atomically): a local reader sees whole
  episodes only. Not while a writer has ``local_dir`` open.
  """
  from habc.data import writer as writer_lib
  try:
    raw = st.read_bytes(storage_lib.join(url, 'dataset_info.json'))
  except storage_lib.NotFound:
    return len(_info_lengths(writer_lib.read_info_json(local_dir)))
  remote = _info_lengths(json.loads(raw))
  have = len(_info_lengths(writer_lib.read_info_json(local_dir)))
  if len(remote) <= have:
    return have
  files = _shard_files(st.listdir(url))
  missing = [i for i in range(have, len(remote)) if i not in files]
  if missing:
    raise storage_lib.StorageError(
        f'{url}: dataset_info.json lists shard(s) {missing} that are not there; the dataset was '
        'changed by something other than its station\'s actor.')
  os.makedirs(local_dir, exist_ok=True)
  for index in range(have, len(remote)):
    st.download(storage_lib.join(url, files[index]), os.path.join(local_dir, files[index]))
  st.download(storage_lib.join(url, 'features.json'), os.path.join(local_dir, 'features.json'))
  tmp = os.path.join(local_dir, f'.dataset_info.json.tmp-{uuid.uuid4().hex[:8]}')
  with open(tmp, 'wb') as f:
    f.write(raw)
  os.replace(tmp, os.path.join(local_dir, 'dataset_info.json'))
  return len(remote)


def publish_tree(st: storage_lib.Storage, local_dir: str, url: str, **meta) -> list[str]:
  """Uploads every file under ``local_dir`` (not dot-files), then ``<url>/habc_published.json``
  listing them. Returns the relative paths."""
  files = sorted(
      os.path.relpath(os.path.join(d, f), local_dir)
      for d, dirs, names in os.walk(local_dir)
      for f in names if not f.startswith('.') and f != MARKER
      and not any(part.startswith('.') for part in os.path.relpath(d, local_dir).split(os.sep)
                  if part != '.'))
  for rel in files:
    st.upload(os.path.join(local_dir, rel), storage_lib.join(url, *rel.split(os.sep)))
  st.write_bytes(storage_lib.join(url, MARKER),
                 json.dumps({'files': files, 'time': time.time(), **meta}).encode())
  return files


def is_published(st: storage_lib.Storage, url: str) -> bool:
  return st.exists(storage_lib.join(url, MARKER))


def fetch_tree(st: storage_lib.Storage, url: str, local_dir: str) -> bool:
  """Downloads a published directory into ``local_dir`` (a temporary sibling renamed into place).

  Returns False when ``local_dir`` already exists (nothing fetched).

  Raises:
    storage.NotFound: ``url`` is not published (no marker) or lost a file meanwhile.
  """
  if os.path.isdir(local_dir):
    return False
  marker = json.loads(st.read_bytes(storage_lib.join(url, MARKER)))
  parent = os.path.dirname(os.path.abspath(local_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.fetch-{os.path.basename(local_dir)}-{uuid.uuid4().hex[:8]}')
  try:
    for rel in marker['files']:
      st.download(storage_lib.join(url, *rel.split('/')), os.path.join(tmp, rel))
    os.makedirs(tmp, exist_ok=True)
    try:
      os.rename(tmp, local_dir)
    except OSError:
      if not os.path.isdir(local_dir):  # Else another process fetched it first: same content.
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return True


def sync_stations(st: storage_lib.Storage, url: str, local: str) -> None:
  """Fetches every station's newly published shards from ``<url>/stations`` into ``local``."""
  root = storage_lib.join(url, STATIONS_DIR)
  try:
    names = st.listdir(root)
  except storage_lib.NotFound:
    return
  for name in names:
    if _STATION.match(name):
      fetch_dataset(st, storage_lib.join(root, name), os.path.join(local, STATIONS_DIR, name))


def sync_config(shared: Shared, config, *, primary: bool = True) -> None:
  """Creates or checks ``config.json`` (``pipeline.prepare_workdir``) against the shared one.

  With a URL: the remote config.json, when there is one, replaces the cache's before the check;
  when there is none, the checked one is published.
  """
  from habc.run import pipeline
  if shared.remote:
    local = os.path.join(shared.local, pipeline.CONFIG_FILE)
    try:
      shared.storage.download(shared.at(pipeline.CONFIG_FILE), local)
      found = True
    except storage_lib.NotFound:
      found = False
    pipeline.prepare_workdir(config, shared.local)
    if not found and primary:
      shared.storage.upload(local, shared.at(pipeline.CONFIG_FILE))
  else:
    pipeline.prepare_workdir(config, shared.local)


def check_storage(shared: Shared, min_free_gb: float | None) -> None:
  """Start-up checks: the local working directory, and for a URL the URL itself."""
  preflight.check_workdir(shared.local, min_free_gb)
  if shared.remote:
    preflight.check_workdir(shared.url, storage=shared.storage)


# ------------------------------------------------------------------------------------------------
# Checkpoints shared between the roles.


def latest_checkpoint_step(directory: str) -> int | None:
  """The newest complete checkpoint's step, read fresh from disk (None: none yet)."""
  if not os.path.isdir(directory):
    return None
  from habc.run import checkpoints
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=None)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def published_steps(st: storage_lib.Storage, url: str) -> list[int]:
  """Sorted steps of the checkpoints published under ``url`` (those with a marker)."""
  try:
    names = st.listdir(url)
  except storage_lib.NotFound:
    return []
  return sorted(int(n) for n in names if n.isdigit()
                and st.exists(storage_lib.join(url, n, MARKER)))


def publish_checkpoint(st: storage_lib.Storage, local_dir: str, step: int, url: str,
                       keep: int) -> None:
  """Publishes local checkpoint ``step`` and unpublishes all but the newest ``keep``."""
  publish_tree(st, os.path.join(local_dir, str(int(step))), storage_lib.join(url, str(int(step))),
               step=int(step))
  for old in published_steps(st, url)[:-max(1, keep)]:
    with contextlib.suppress(storage_lib.NotFound):
      st.remove(storage_lib.join(url, str(old), MARKER))  # Unpublished first, then removed.
      st.rmtree(storage_lib.join(url, str(old)))


def fetch_checkpoint(st: storage_lib.Storage, url: str, step: int, local_dir: str,
                     keep_local: int = 2) -> None:
  """Copies published checkpoint ``step`` into ``local_dir/<step>`` (whole or not at all) and
  removes the older cached ones beyond ``keep_local``."""
  fetch_tree(st, storage_lib.join(url, str(int(step))), os.path.join(local_dir, str(int(step))))
  cached = sorted(int(n) for n in os.listdir(local_dir) if n.isdigit())
  for old in cached[:-max(1, keep_local)]:
    shutil.rmtree(os.path.join(local_dir, str(old)), ignore_errors=True)


def newest_checkpoint(shared: Shared) -> int | None:
  """The newest checkpoint a reader may load: published (URL) or complete (local path)."""
  if shared.remote:
    steps = published_steps(shared.storage, shared.at('checkpoints'))
    return steps[-1] if steps else None
  return latest_checkpoint_step(os.path.join(shared.local, 'checkpoints'))


def wait_for_checkpoint(directory: str | Shared, *, timeout_s: float, poll_s: float = 2.0,
                        log: Callable[[str], None] = print, who: str = 'actor') -> int:
  """Blocks until a checkpoint exists (a local directory, or a ``Shared``); returns its step.

  Raises:
    TimeoutError: none appeared within ``timeout_s`` seconds (says what to start).
  """
  if isinstance(directory, Shared):
    shared, where = directory, directory.at('checkpoints')
    latest = lambda: newest_checkpoint(shared)
  else:
    where = directory
    latest = lambda: latest_checkpoint_step(where)
  start = time.monotonic()
  last_message = None
  while True:
    step = latest()
    if step is not None:
      if last_message is not None:
        log(f'{who}: checkpoint {step} appeared after {time.monotonic() - start:.0f} s')
      return step
    waited = time.monotonic() - start
    if waited >= timeout_s:
      raise TimeoutError(
          f'{who}: no learner checkpoint in {where} after {waited:.0f} s. Start the learner '
          '(launch.py --mode=learner with the same --workdir) or give the actor a longer '
          '--wait_timeout.')
    if last_message is None or time.monotonic() - last_message >= 30:
      log(f'{who}: waiting for a learner checkpoint in {where} (timeout {timeout_s:.0f} s)')
      last_message = time.monotonic()
    time.sleep(min(poll_s, max(0.05, timeout_s - waited)))


def _load_newest(backend, directory: str, attempts: int = 3, before: Callable[[], None] = None
                 ) -> int:
  """Restores the newest checkpoint into ``backend``; retries when the learner deletes it.

  ``before``: called before each attempt (a URL: fetch the newest published checkpoint).
  """
  error = None
  for _ in range(attempts):
    backend.close()  # Drops the cached checkpoint manager: its step list would be stale.
    try:
      if before is not None:
        before()
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


def _restore_station(shared: Shared, station_id: int) -> int:
  """URL: brings the station's local dataset and log up to what was published; returns the
  number of shards published."""
  from habc.data import writer as writer_lib
  st = shared.storage
  local = station_dataset(shared.local, station_id)
  remote = station_dataset(shared.url, station_id)
  listed = remote_shards(st, remote)
  if listed > len(_info_lengths(writer_lib.read_info_json(local))):
    fetch_dataset(st, remote, local)
  log_path = station_log(shared.local, station_id)
  try:
    raw = st.read_bytes(station_log(shared.url, station_id))
    if raw.count(b'\n') > len(_read_jsonl(log_path)):
      with open(log_path, 'wb') as f:
        f.write(raw)
  except storage_lib.NotFound:
    pass
  return listed


def run_actor(config, shared_dir: str, station_id: int, *, max_episodes: int | None = None,
              max_seconds: float | None = None, wait_timeout_s: float = 600.0,
              poll_s: float = 2.0, min_free_gb: float | None = None,
              cache_dir: str | None = None, log: Callable[[str], None] = print) -> dict:
  """One station's loop: newest checkpoint -> one episode -> commit (-> publish) -> repeat.

  Args:
    config: the experiment config (the same as the learner's; checked against config.json).
    shared_dir: the shared location: a local/NFS path or a URL (see the module docstring).
    station_id: this station's number (>= 0); one actor per id.
    max_episodes: stop after this many episodes in this call (None: run until killed).
    max_seconds: stop starting new episodes after this many seconds.
    wait_timeout_s: how long to wait for a first checkpoint before giving up.
    poll_s: seconds between looks for a checkpoint.
    min_free_gb: free-space threshold of the start-up check (None: preflight's default).
    cache_dir: with a URL, the local working directory (default ``default_cache``).
    log: where progress lines go.

  Returns:
    {'station', 'episodes', 'written', 'successes', 'policy_versions'} of this call.
  """
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  from habc.data import schema
  from habc.data import writer as writer_lib
  if int(station_id) < 0:
    raise ValueError(f'station_id must be >= 0, got {station_id}.')
  shared = open_shared(shared_dir, f'station_{int(station_id):03d}', cache_dir)
  out = {'station': int(station_id), 'episodes': 0, 'written': 0, 'successes': 0,
         'policy_versions': []}
  pool = writer = backend = None
  start_time = time.monotonic()
  try:
    check_storage(shared, min_free_gb)
    sync_config(shared, config)
    paths = paths_lib.Paths(shared.local)
    dataset = station_dataset(shared.local, station_id)
    os.makedirs(os.path.dirname(dataset), exist_ok=True)
    backend = backend_lib.Backend(config)
    backend.bind(paths)
    wait_for_checkpoint(shared, timeout_s=wait_timeout_s, poll_s=poll_s, log=log,
                        who=f'actor {station_id}')
    fetch_newest = None
    listed = 0
    if shared.remote:
      st = shared.storage
      if not os.path.exists(os.path.join(paths.demo_data, 'dataset_info.json')):
        fetch_tree(st, shared.at('data', 'demos'), paths.demo_data)
      listed = _restore_station(shared, station_id)

      def fetch_newest():
        step = newest_checkpoint(shared)
        if step is not None:
          fetch_checkpoint(st, shared.at('checkpoints'), step, paths.checkpoints)
    if os.path.exists(os.path.join(dataset, 'dataset_info.json')):
      writer = writer_lib.EpisodeWriter(dataset)  # Takes the station's lock now.
    if shared.remote:  # Committed locally but not published before a crash.
      listed = publish_dataset(shared.storage, dataset, station_dataset(shared.url, station_id),
                               listed)
    index = next_episode_index(shared.local, station_id)
    pool = rollout.WorkerPool(backend.worker_config(), 1)
    while max_episodes is None or out['episodes'] < max_episodes:
      if max_seconds is not None and time.monotonic() - start_time > max_seconds:
        break
      step = _load_newest(backend, paths.checkpoints, before=fetch_newest)
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
        with storage_errors.storage_errors(dataset):
          if writer is None:
            writer = writer_lib.EpisodeWriter(dataset, schema.spec_of_episode(
                result['episode'], image_format=backend_lib.IMAGE_FORMAT))
          writer.append(result['episode'])
        if shared.remote:
          listed = publish_dataset(shared.storage, dataset,
                                   station_dataset(shared.url, station_id), listed)
        out['written'] += 1
      log_path = station_log(shared.local, station_id)
      with storage_errors.storage_errors(dataset):
        _append_jsonl(log_path, {
            'episode_id': request.episode_id, 'seed': request.seed, 'policy_version': step,
            'success': result['success'], 'invalid': result['invalid'],
            'length': result['length'], 'intervention_steps': result['intervention_steps'],
            'time': time.time()})
      if shared.remote:
        shared.storage.upload(log_path, station_log(shared.url, station_id))
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
    if backend is not None:
      backend.close()
    shared.close()
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


def process_batches(backend, datasets, seed: int, process_index: int, process_count: int):
  """This process's share of every global batch: ``batch_size / process_count`` rows drawn with
  its own seed (``Learner.put_batch`` assembles the global batch from every process's rows).

  One process: ``backend.batches`` unchanged.
  """
  if process_count == 1:
    return backend.batches(datasets, seed=seed)
  batch_size = int(backend.config.learner.batch_size)
  if batch_size % process_count:
    raise ValueError(f'config.learner.batch_size={batch_size} is not divisible by the '
                     f'{process_count} learner processes; use a multiple of {process_count}.')
  return backend.batches(datasets, seed=rollout.seed_for(seed, 'process', 0, process_index),
                         batch_size=batch_size // process_count)


def params_digest(params) -> str:
  """A short hash of every parameter's bytes (processes of one learner must agree)."""
  import jax
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(params)):
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()[:16]


def _publish_demos(shared: Shared, demo_dir: str) -> None:
  """URL: fetches the published demonstrations, or publishes the cache's (primary only)."""
  st, url = shared.storage, shared.at('data', 'demos')
  have = os.path.exists(os.path.join(demo_dir, 'dataset_info.json'))
  published = is_published(st, url)
  if not have and published:
    fetch_tree(st, url, demo_dir)
  elif have and not published:
    publish_tree(st, demo_dir, url)


def run_learner(config, shared_dir: str, *, max_steps: int | None = None,
                max_seconds: float | None = None, until_episodes: int | None = None,
                rescan_every: int = 20, idle_log_s: float = 60.0,
                min_free_gb: float | None = None, cache_dir: str | None = None,
                log: Callable[[str], None] = print) -> dict:
  """Trains on whatever episodes the stations committed, rescanning; writes checkpoints.

  Starts from the newest checkpoint (e.g. the SFT one), or from a fresh initialisation, which it
  saves at once so that waiting actors can start. Several processes (``jax.distributed``, every
  one running this with the same arguments): each feeds its share of each batch, all take part
  in each orbax save (the checkpoint directory must be the same directory for all of them), and
  process 0 alone writes config.json, logs and progress lines and publishes to a URL; process 0
  decides when to stop (time budget, episode count) and the others follow.

  Args:
    config: the experiment config.
    shared_dir: the shared location (path or URL); ``data/demos`` must exist there (or, with a
      URL, in the cache: ``launch.py --mode=demos --workdir=<cache>``).
    max_steps: stop at this learner step (None: no limit).
    max_seconds: stop after this many seconds of this call.
    until_episodes: stop once this many station episodes are in the training mix and a
      checkpoint was written after they joined (tests and bounded runs).
    rescan_every: learner steps between looks for new episodes.
    idle_log_s: seconds without new episodes between "no new episodes" lines.
    min_free_gb: free-space threshold of the start-up check.
    cache_dir: with a URL, the local working directory (default ``default_cache``).
    log: where progress lines go (process 0 only).

  Returns:
    {'step', 'episodes', 'stations', 'rescans', 'checkpoints', 'process', 'processes',
    'rows_per_batch' (this process's share of the last batch), 'params_digest' (equal in every
    process), 'tensorflow_loaded'} at the end.
  """
  from habc.run import pipeline
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  count = distributed.process_count()
  index = distributed.process_index()
  primary = index == 0
  say = log if primary else (lambda line: None)
  shared = open_shared(shared_dir, 'learner', cache_dir)
  backend = batches = None
  try:
    if max_steps is None and max_seconds is None and until_episodes is None:
      say('learner: no stop condition given; runs until killed')
    check_storage(shared, min_free_gb)
    if primary:
      sync_config(shared, config)
    distributed.barrier('habc_learner_config')
    if not primary:
      sync_config(shared, config, primary=False)
    paths = paths_lib.Paths(shared.local)
    st = shared.storage
    ckpt_url = shared.at('checkpoints')
    if shared.remote and primary:
      _publish_demos(shared, paths.demo_data)
      local_step = latest_checkpoint_step(paths.checkpoints)
      remote_steps = published_steps(st, ckpt_url)
      if remote_steps and (local_step is None or remote_steps[-1] > local_step):
        fetch_checkpoint(st, ckpt_url, remote_steps[-1], paths.checkpoints,
                         keep_local=max(3, int(config.pipeline.keep_checkpoints)))
    distributed.barrier('habc_learner_fetch')
    distributed.check_shared_directory(shared.local, 'the learner\'s working directory')
    if not os.path.exists(os.path.join(paths.demo_data, 'dataset_info.json')):
      if shared.remote:
        raise FileNotFoundError(
            f'No demonstrations at {shared.at("data", "demos")} nor in {paths.demo_data}: run '
            f'launch.py --mode=demos --workdir={shared.local} (and the same config) on this '
            'machine; the learner then publishes them for the actors.')
      raise FileNotFoundError(
          f'No demonstrations in {paths.demo_data}: run launch.py --mode=demos with '
          f'--workdir={shared.local} (and the same config) before the learner.')
    c = config
    backend = backend_lib.Backend(c)
    backend.bind(paths)
    learner_log = os.path.join(paths.logs, LEARNER_LOG)
    if primary:
      os.makedirs(paths.logs, exist_ok=True)
    keep = max(3, int(c.pipeline.keep_checkpoints))  # Actors may be restoring an older one.
    ckpt = backend.checkpointer(paths.checkpoints, keep)
    resumed = backend.load_latest(paths.checkpoints, allow_fresh=True)

    def save(episodes: int) -> None:
      with storage_errors.storage_errors(paths.checkpoints):
        backend.save(ckpt, meta={'stage': 'learner', 'station_episodes': episodes})
      if shared.remote and primary:
        publish_checkpoint(st, paths.checkpoints, backend.step, ckpt_url, keep)

    def scan() -> dict[str, int]:
      if shared.remote:
        if primary:
          sync_stations(st, shared.url, shared.local)
        distributed.barrier('habc_learner_scan')
      return scan_stations(shared.local)

    stations = scan()
    if resumed is None:
      save(0)
      say(f'learner: no checkpoint in {shared.at("checkpoints")}; saved the initial one (step '
          f'{backend.step}) for the actors')
    else:
      say(f'learner: resumed from checkpoint {resumed}')
      if shared.remote and primary and resumed not in published_steps(st, ckpt_url):
        publish_checkpoint(st, paths.checkpoints, resumed, ckpt_url, keep)
    ir = pipeline.intervention_reweighting_at(c, 0)
    rebuilds = [0]

    def open_stream(found):
      rebuilds[0] += 1
      return process_batches(
          backend, mixture(paths.demo_data, found, c.data.demo_fraction),
          rollout.seed_for(c.seed, 'learner', rebuilds[0], backend.step), index, count)

    def total(found):
      return int(sum(found.values()))

    def write_log(row: dict) -> None:
      if not primary:
        return
      with storage_errors.storage_errors(learner_log):
        _append_jsonl(learner_log, row)
      if shared.remote:
        st.upload(learner_log, shared.at('logs', LEARNER_LOG))

    say(f'learner: training on {total(stations)} episodes from {len(stations)} stations '
        '+ demonstrations' + (f' ({count} processes)' if count > 1 else ''))
    batches = open_stream(stations)
    start_time = time.monotonic()
    last_new = time.monotonic()
    last_idle_log = time.monotonic()
    reached_at = (None if until_episodes is None or total(stations) < until_episodes
                  else backend.step)
    rescans = 0
    saved = 0
    rows = 0
    first_step = last_saved = backend.step
    while True:
      step = backend.step
      stop = max_steps is not None and step >= max_steps
      if not stop and max_seconds is not None and time.monotonic() - start_time > max_seconds:
        stop = 'time'
      if not stop and reached_at is not None and last_saved > reached_at:
        stop = True
      if count > 1:  # Process 0's clock and episode count decide for every process.
        stop = (stop or True) if distributed.agree(bool(stop)) else False
      if stop:
        if stop == 'time':
          say(f'learner: time budget of {max_seconds:.0f} s spent')
        break
      # The gate's warm-up counts from where this learner started (e.g. an SFT checkpoint).
      batch = next(batches)
      rows = len(batch['valid'])
      metrics = backend.update(batch, intervention_reweighting=ir,
                               gate_warmup=step - first_step < c.method.warmup_steps)
      step = backend.step
      if step % c.pipeline.checkpoint_every == 0:
        save(total(stations))
        write_log({'step': step, 'episodes': total(stations), 'stations': len(stations),
                   'time': time.time(),
                   **{k: v for k, v in ((k, float(v)) for k, v in metrics.items())
                      if np.isfinite(v)}})
        saved += 1
        last_saved = step
      if step % max(1, rescan_every) == 0:
        rescans += 1
        found = scan()
        if found != stations:
          new = total(found) - total(stations)
          if hasattr(batches, 'close'):
            batches.close()
          stations = found
          batches = open_stream(stations)
          last_new = last_idle_log = time.monotonic()
          say(f'learner: step {step}: {new} new episodes; training on {total(stations)} from '
              f'{len(stations)} stations + demonstrations')
          if reached_at is None and until_episodes is not None and \
              total(stations) >= until_episodes:
            reached_at = step
        elif time.monotonic() - last_idle_log >= idle_log_s:
          say(f'learner: step {step}: no new episodes for {time.monotonic() - last_new:.0f} s; '
              f'training on the {total(stations)} episodes it has ({len(stations)} stations + '
              'demonstrations)')
          last_idle_log = time.monotonic()
    if backend.step != last_saved:
      save(total(stations))
      saved += 1
    digest = params_digest(backend.learner.params)
  finally:
    if batches is not None and hasattr(batches, 'close'):
      batches.close()
    if backend is not None:
      backend.close()
    shared.close()
  say(f'learner: stopped at step {backend.step} with {total(stations)} station episodes')
  return {'step': backend.step, 'episodes': total(stations), 'stations': len(stations),
          'rescans': rescans, 'checkpoints': saved, 'process': index, 'processes': count,
          'rows_per_batch': rows, 'params_digest': digest,
          'tensorflow_loaded': 'tensorflow' in sys.modules}


# ------------------------------------------------------------------------------------------------
# Command line (also `launch.py --mode=actor|learner`):
#   python -m habc.stations --role=learner --workdir=/shared/run --task=insert --preset=smoke
#   python -m habc.stations --role=actor --station_id=0 --workdir=/shared/run --task=insert ...


def load_config(experiment: str, preset: str, task: str | None = None, seed: int | None = None):
  """An experiment config (a module name like 'habc' or a file path) with task/seed applied."""
  import importlib.util
  import ml_collections
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
  p.add_argument('--cache_dir', default=None,
                 help='with a URL --workdir: this role\'s local working directory')
  return p.parse_args(argv)


def main(argv=None) -> int:
  from habc.run import pipeline
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = load_config(args.experiment, args.preset, args.task, args.seed)
  log = lambda line: print(line, flush=True)
  try:
    # Multi-host learner: HABC_COORDINATOR_ADDRESS / HABC_NUM_PROCESSES / HABC_PROCESS_ID.
    distributed.maybe_initialize(log=log)
    distributed.check_mode(args.role)
    if args.role == 'actor':
      out = run_actor(config, args.workdir, args.station_id, max_episodes=args.max_episodes,
                      max_seconds=args.max_seconds, wait_timeout_s=args.wait_timeout,
                      poll_s=args.poll, min_free_gb=args.min_free_gb,
                      cache_dir=args.cache_dir, log=log)
    else:
      out = run_learner(config, args.workdir, max_steps=args.max_steps,
                        max_seconds=args.max_seconds, until_episodes=args.until_episodes,
                        rescan_every=args.rescan_every, idle_log_s=args.idle_log_s,
                        min_free_gb=args.min_free_gb, cache_dir=args.cache_dir, log=log)
  except (distributed.DistributedConfigError, TimeoutError, SharedStorageError,
          storage_errors.StorageError, FileNotFoundError, pipeline.ConfigMismatchError) as e:
    print(f'habc.stations: {e}', file=sys.stderr, flush=True)
    return 1
  print('result ' + json.dumps(out), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
