"""Actor/learner split: layout helpers, liveness (waiting actor, idle learner), and two actor
processes with one learner process on this machine (smoke preset, state observations)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from habc.fleet import stations
from tests import tfds_plain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = 'insert'
SMOKE = ['--task=insert', '--preset=smoke']


def env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=os.path.join(
      os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))


def test_shared_locations():
  assert stations.check_shared_dir('gs://bucket/run/') == 'gs://bucket/run'
  assert stations.check_shared_dir('rel') == os.path.abspath('rel')
  for bad in ('', 'gs://', 'gs:///'):
    with pytest.raises(stations.SharedStorageError):
      stations.check_shared_dir(bad)
  shared = stations.open_shared('/tmp/x', 'learner')
  assert shared.local == shared.url == '/tmp/x' and not shared.remote
  a = stations.default_cache('gs://b/run', 'learner', base='/c')
  assert a.startswith('/c/') and a.endswith('/learner')
  assert a != stations.default_cache('gs://b/run2', 'learner', base='/c')


def test_mixture_weights():
  assert stations.mixture('d', {}, 0.5) == [('d', 1.0)]
  mix = stations.mixture('d', {'b': 3, 'a': 1}, 0.5)
  assert mix == [('d', 0.5), ('a', 0.125), ('b', 0.375)]


def test_actor_without_checkpoint_waits_then_times_out(tmp_path):
  lines = []
  start = time.monotonic()
  with pytest.raises(TimeoutError, match='Start the learner'):
    stations.wait_for_checkpoint(str(tmp_path / 'checkpoints'), timeout_s=1.0, poll_s=0.2,
                                 log=lines.append)
  assert 1.0 <= time.monotonic() - start < 10
  assert len(lines) == 1 and 'waiting for a learner checkpoint' in lines[0]


def test_restarted_station_continues_numbering(tmp_path):
  from habc.data import synthetic
  from habc.data import writer
  shared = str(tmp_path)
  rng = np.random.default_rng(0)
  episodes = [synthetic.synthetic_episode(rng, num_steps=5, cameras=(),
                                          episode_id=stations.episode_id(3, i)) for i in (0, 1)]
  writer.write_episodes(stations.station_dataset(shared, 3), episodes)
  assert stations.next_episode_index(shared, 3) == 2
  # Episode 2 was invalid (logged, not written); episode 3 was committed but the actor died
  # before logging it: the next index is 4 either way.
  with open(stations.station_log(shared, 3), 'w') as f:
    for i in range(3):
      f.write(json.dumps({'episode_id': stations.episode_id(3, i)}) + '\n')
  writer.write_episodes(stations.station_dataset(shared, 3), [synthetic.synthetic_episode(
      rng, num_steps=5, cameras=(), episode_id=stations.episode_id(3, 3))])
  assert stations.next_episode_index(shared, 3) == 4
  assert stations.next_episode_index(shared, 4) == 0
  assert stations.scan_stations(shared) == {stations.station_dataset(shared, 3): 3}


def test_publish_and_fetch_a_dataset_shard_by_shard(tmp_path):
  """The copy logic of the URL case, run here on plain paths (same code, no helper process)."""
  from habc.fleet import storage
  from habc.data import synthetic
  from habc.data import writer
  rng = np.random.default_rng(0)
  staging, shared, cache = (str(tmp_path / n) for n in ('staging', 'shared', 'cache'))
  eps = [synthetic.synthetic_episode(rng, num_steps=5, cameras=(),
                                     episode_id=stations.episode_id(0, i)) for i in range(3)]
  st = storage.Storage()
  writer.write_episodes(staging, eps[:2])
  assert stations.remote_shards(st, shared) == 0
  assert stations.publish_dataset(st, staging, shared, 0) == 2
  assert stations.publish_dataset(st, staging, shared, 2) == 2  # Nothing new.
  # A shard whose upload landed but whose dataset_info.json did not is invisible to readers.
  writer.write_episodes(staging, eps[2:])
  shard = sorted(n for n in os.listdir(staging) if 'array_record' in n)[-1]
  st.upload(os.path.join(staging, shard), os.path.join(shared, shard))
  assert stations.fetch_dataset(st, shared, cache) == 2
  assert writer.num_episodes(cache) == 2 and not os.path.exists(os.path.join(cache, shard))
  assert stations.publish_dataset(st, staging, shared, 2) == 3
  assert stations.fetch_dataset(st, shared, cache) == 3 and writer.num_episodes(cache) == 3
  assert not [n for n in os.listdir(cache) + os.listdir(shared) if '.tmp-' in n]
  assert stations.scan_stations(str(tmp_path)) == {}  # Not under stations/: not a station.
  # A listed shard that is missing is a clear error, not a half-copied dataset.
  os.remove(os.path.join(shared, shard))
  with pytest.raises(storage.StorageError, match=r'lists shard\(s\) \[2\]'):
    stations.fetch_dataset(st, shared, str(tmp_path / 'other'))


def test_station_with_a_lost_cache_gets_its_episodes_back(tmp_path):
  """An actor whose local cache is gone restores its published dataset and log before writing,
  so its indices continue and no published shard is overwritten."""
  from habc.fleet import storage
  from habc.data import synthetic
  from habc.data import writer
  rng = np.random.default_rng(0)
  st = storage.Storage()
  url = str(tmp_path / 'shared')
  first = stations.Shared(url, str(tmp_path / 'cache_a'), st)
  local = stations.station_dataset(first.local, 2)
  writer.write_episodes(local, [synthetic.synthetic_episode(
      rng, num_steps=5, cameras=(), episode_id=stations.episode_id(2, i)) for i in (0, 1)])
  stations.publish_dataset(st, local, stations.station_dataset(url, 2), 0)
  with open(stations.station_log(first.local, 2), 'w') as f:
    for i in range(3):  # Episode 2 was invalid: logged, not written.
      f.write(json.dumps({'episode_id': stations.episode_id(2, i)}) + '\n')
  st.upload(stations.station_log(first.local, 2), stations.station_log(url, 2))
  again = stations.Shared(url, str(tmp_path / 'cache_b'), st)
  assert stations._restore_station(again, 2) == 2  # pylint: disable=protected-access
  assert writer.num_episodes(stations.station_dataset(again.local, 2)) == 2
  assert stations.next_episode_index(again.local, 2) == 3


def test_checkpoints_are_published_whole_and_pruned(tmp_path):
  from habc.fleet import storage
  st = storage.Storage()
  local, url, cache = (str(tmp_path / n) for n in ('ckpt', 'shared/checkpoints', 'cache'))
  for step in (2, 4, 6, 8):
    os.makedirs(os.path.join(local, str(step), 'state'))
    for rel in ('commit_success.txt', 'state/d'):
      with open(os.path.join(local, str(step), rel), 'w') as f:
        f.write(f'{step} {rel}')
    stations.publish_checkpoint(st, local, step, url, keep=3)
  assert stations.published_steps(st, url) == [4, 6, 8]
  assert not os.path.exists(os.path.join(url, '2'))
  # A step directory without its marker (upload cut short) is not published.
  os.makedirs(os.path.join(url, '10'))
  assert stations.published_steps(st, url) == [4, 6, 8]
  with pytest.raises(storage.NotFound):
    stations.fetch_tree(st, os.path.join(url, '10'), os.path.join(cache, '10'))
  for step in (4, 6, 8):
    stations.fetch_checkpoint(st, url, step, cache, keep_local=2)
  assert sorted(os.listdir(cache)) == ['6', '8']  # Older cached ones pruned, no temporaries.
  with open(os.path.join(cache, '8', 'state', 'd')) as f:
    assert f.read() == '8 state/d'
  shared = stations.Shared(str(tmp_path / 'shared'), str(tmp_path / 'actor'), st)
  assert stations.newest_checkpoint(shared) == 8


@pytest.mark.parametrize('kind', ['url', pytest.param('path', marks=pytest.mark.slow)])
def test_two_actors_and_a_learner(tmp_path, kind):
  """kind 'url': the shared location is a file:// URL, so every copy goes through
  habc.fleet.storage's tf.io.gfile helper process (as with a bucket), each role working in its own
  cache; 'path': one directory that every role works in (local disk / NFS)."""
  bucket = str(tmp_path / 'shared')
  url = f'file://{bucket}' if kind == 'url' else bucket
  cache = {name: str(tmp_path / 'cache' / name) for name in ('actor0', 'actor1', 'learner')}
  # With a URL the demonstrations are made in the learner's cache; the learner publishes them.
  demos_dir = cache['learner'] if kind == 'url' else bucket
  demos = subprocess.run([sys.executable, 'launch.py', *SMOKE, '--mode=demos',
                          f'--workdir={demos_dir}'], cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=300)
  assert demos.returncode == 0, demos.stderr[-3000:]
  common = [*SMOKE, f'--workdir={url}', '--min_free_gb=0.05']
  module = [sys.executable, '-m', 'habc.stations']
  logs = {name: open(tmp_path / f'{name}.log', 'w+') for name in cache}
  procs = {}
  try:
    # The actors start first: they find no checkpoint and wait.
    for i in (0, 1):
      procs[f'actor{i}'] = subprocess.Popen(
          [*module, '--role=actor', f'--station_id={i}', '--max_episodes=2', '--poll=0.5',
           '--wait_timeout=240', f'--cache_dir={cache[f"actor{i}"]}', *common], cwd=ROOT,
          env=env(), stdout=logs[f'actor{i}'], stderr=subprocess.STDOUT)
    procs['learner'] = subprocess.Popen(
        [*module, '--role=learner', '--until_episodes=4', '--max_seconds=240',
         '--rescan_every=3', '--idle_log_s=0.5', f'--cache_dir={cache["learner"]}', *common],
        cwd=ROOT, env=env(), stdout=logs['learner'], stderr=subprocess.STDOUT)
    for name, proc in procs.items():
      proc.wait(timeout=300)
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  text = {}
  for name, f in logs.items():
    f.seek(0)
    text[name] = f.read()
    f.close()
  for name, proc in procs.items():
    assert proc.returncode == 0, f'{name}:\n{text[name][-3000:]}'
  results = {name: json.loads(text[name].split('result ', 1)[1].splitlines()[0]) for name in text}

  for i in (0, 1):
    assert 'waiting for a learner checkpoint' in text[f'actor{i}']
    assert results[f'actor{i}']['episodes'] == 2 == results[f'actor{i}']['written']
  assert 'saved the initial one' in text['learner']
  # Trained on the demonstrations meanwhile. The line needs half a second without a new episode
  # between two rescans (it needed 2 s before, and under load the actors' episodes sometimes came
  # closer together than that: seen in sessions 15 and 16).
  assert 'no new episodes for' in text['learner']
  assert results['learner']['episodes'] == 4 and results['learner']['stations'] == 2
  assert results['learner']['checkpoints'] >= 2
  assert not results['learner']['tensorflow_loaded']  # The actors check it themselves.

  # Each station's dataset in the shared location holds its own two episodes, whole, readable by
  # plain tfds.
  paths = [stations.station_dataset(bucket, i) for i in (0, 1)]
  found = tfds_plain.read_episodes(*paths, timeout=120)
  for i, rows in enumerate(found):
    assert [r['episode_id'] for r in rows] == [stations.episode_id(i, k) for k in (0, 1)]
    assert all(r['steps'] >= 2 and r['last_is_last'] and r['first_is_first'] for r in rows)
  logged = [json.loads(line) for line in open(stations.station_log(bucket, 0))]
  assert [r['episode_id'] for r in logged] == [stations.episode_id(0, k) for k in (0, 1)]
  # The learner's last checkpoint came after every episode joined, and (URL) was published whole.
  from habc.run import checkpoints
  ckpt = checkpoints.Checkpointer(os.path.join(bucket, 'checkpoints'), max_to_keep=None)
  assert ckpt.latest_step() == results['learner']['step'] > 0
  ckpt.close()
  if kind == 'url':
    step_dir = os.path.join(bucket, 'checkpoints', str(results['learner']['step']))
    marker = json.load(open(os.path.join(step_dir, stations.MARKER)))
    assert sorted(marker['files']) == sorted(
        os.path.relpath(os.path.join(d, f), step_dir) for d, _, files in os.walk(step_dir)
        for f in files if f != stations.MARKER)
    assert os.path.exists(os.path.join(bucket, 'data', 'demos', stations.MARKER))
    assert os.path.exists(os.path.join(bucket, 'logs', stations.LEARNER_LOG))
    for i in (0, 1):  # Nothing left under a temporary name.
      assert not [n for n in os.listdir(paths[i]) if '.tmp-' in n]


def test_process_batches_draw_each_process_share_with_its_own_seed():
  import ml_collections
  from habc.fleet import stations

  class Backend:
    config = ml_collections.ConfigDict({'learner': {'batch_size': 8}})

    def batches(self, datasets, seed, batch_size=None):
      return (seed, batch_size)

  backend = Backend()
  assert stations.process_batches(backend, [], 3, 0, 1) == (3, None)
  shares = [stations.process_batches(backend, [], 3, i, 2) for i in range(2)]
  assert [size for _, size in shares] == [4, 4]
  assert shares[0][0] != shares[1][0]
  with pytest.raises(ValueError, match='not divisible by the 3 learner processes'):
    stations.process_batches(backend, [], 3, 0, 3)
