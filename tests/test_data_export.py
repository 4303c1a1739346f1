"""The TFRecord export, read back by tf.data through plain tfds (TF only in subprocesses).

Issue 29: the export is in the ``<data_dir>/<name>/<version>/`` layout that
``tfds.builder(name, data_dir)`` (Octo's ``make_dataset_from_rlds``, OXE mixers) reads, under the
``--name`` given; the final zero-action step is dropped by default (Octo trains on every step's
action) and the control rate and state layout are in the metadata.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from habc.data import export, synthetic, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _episodes(task='insert'):
  rng = np.random.default_rng(0)
  episodes = [synthetic.synthetic_episode(rng, num_steps=7 + i, cameras=('top',), image_size=16,
                                          episode_id=f'e{i}', interventions=[(1, 3)],
                                          success=bool(i % 2))
              for i in range(3)]
  for episode in episodes:
    episode['episode_metadata']['task'] = task
  return episodes


def _export(src, out, *args):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'data', 'export_rlds.py'), f'--input={src}',
       f'--output={out}', '--episodes_per_shard=2', *args], capture_output=True, text=True,
      timeout=300)


READ = '''
    import json, numpy as np, tensorflow_datasets as tfds
    builder = tfds.builder({name!r}, data_dir={out!r})  # What Octo's loaders call.
    print('META ' + json.dumps(dict(builder.info.metadata or {{}})))
    for ep in builder.as_dataset(split='train'):  # Episodes hold a tf.data.Dataset of steps.
      steps = list(ep['steps'].as_numpy_iterator())
      print('EP ' + json.dumps(dict(
          name=ep['episode_metadata']['episode_id'].numpy().decode(), steps=len(steps),
          image=[list(steps[0]['observation']['top'].shape),
                 str(steps[0]['observation']['top'].dtype)],
          interventions=int(sum(s['is_intervention'] for s in steps)),
          last=[[bool(s['is_last']), bool(s['is_terminal']), float(s['reward']),
                 float(s['discount'])] for s in steps[-2:]],
          action_sum=float(np.abs(np.stack([s['action'] for s in steps])).sum()),
          all_executed=bool(all(np.abs(s['action']).sum() > 0 for s in steps)))))
'''


def _read(name, out, cwd):
  read = subprocess.run([sys.executable, '-c', textwrap.dedent(READ.format(name=name, out=out))],
                        capture_output=True, text=True, timeout=300, cwd=str(cwd))
  assert read.returncode == 0, read.stderr[-3000:]
  lines = read.stdout.splitlines()
  meta = json.loads(next(l for l in lines if l.startswith('META '))[5:])
  rows = sorted((json.loads(l[3:]) for l in lines if l.startswith('EP ')), key=lambda r: r['name'])
  return meta, rows


def test_export_layout_name_and_dropped_last_step(tmp_path):
  episodes = _episodes()
  src = str(tmp_path / 'rlds')
  writer.write_episodes(src, episodes)
  out = str(tmp_path / 'exports')
  exported = _export(src, out, '--name=insert_demos')
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert 'Exported 3 episodes' in exported.stdout
  version_dir = os.path.join(out, 'insert_demos', '1.0.0')
  assert sorted(f for f in os.listdir(version_dir) if 'tfrecord' in f) == [
      'insert_demos-train.tfrecord-00000-of-00002', 'insert_demos-train.tfrecord-00001-of-00002']
  meta, rows = _read('insert_demos', out, tmp_path)
  assert meta['control_hz'] == 10.0 and meta['last_step'] == 'drop'
  assert meta['state'].startswith('12 floats, per arm')
  assert len(rows) == 3
  for i, row in enumerate(rows):
    assert row['name'] == f'e{i}' and row['steps'] == 7 + i - 1  # The zero-action step is gone.
    assert row['image'] == [[16, 16, 3], 'uint8'] and row['interventions'] == 2
    assert row['all_executed']  # Every remaining step's action was executed.
    (_, prev_terminal, prev_reward, _), (is_last, terminal, reward, discount) = row['last']
    success = bool(i % 2)
    assert is_last and terminal == success and reward == float(success)
    assert discount == (0.0 if success else 1.0) and not prev_terminal and prev_reward == 0.0
    np.testing.assert_allclose(row['action_sum'], np.abs(episodes[i]['steps']['action']).sum(),
                               rtol=1e-4)  # Only the all-zero action was dropped.
  again = _export(src, out, '--name=insert_demos')
  assert again.returncode == 1 and 'exists; export under another --name' in again.stderr


def test_export_keep_last_step_and_bad_name(tmp_path):
  src = str(tmp_path / 'rlds')
  writer.write_episodes(src, _episodes(task='my_rig'))
  out = str(tmp_path / 'exports')
  bad = _export(src, out, '--name=Bad-Name')
  assert bad.returncode == 1 and 'snake_case' in bad.stderr, bad.stderr[-2000:]
  kept = _export(src, out, '--name=rig', '--last_step=keep', '--control_hz=50',
                 '--state_description=14 joint positions')
  assert kept.returncode == 0, kept.stderr[-3000:]
  meta, rows = _read('rig', out, tmp_path)
  assert meta['control_hz'] == 50.0 and meta['state'] == '14 joint positions'
  assert meta['last_step'] == 'keep' and meta['task'] == 'my_rig'
  assert [r['steps'] for r in rows] == [7, 8, 9]
  assert not any(r['all_executed'] for r in rows)  # The zero action is still there.


def test_habc_constants_match_the_environments():
  from habc.envs import base
  assert export.HABC_CONTROL_HZ == base.TaskEnv.control_hz
  assert base.STATE_DIM == 12 and base.ACTION_DIM == 10
  from habc import envs
  from habc.envs import hardware
  assert set(export.HABC_TASKS) == set(envs.list_tasks()) | set(hardware.list_tasks())
  for task in envs.list_tasks():
    assert envs.task_class(task).control_hz == export.HABC_CONTROL_HZ
  assert 'tensorflow' not in sys.modules
