"""The RLDS writer: round trip through plain tfds, appending, locking, crash safety."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from habc.data import episodes as episodes_lib, schema, synthetic, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def _episodes(n, fmt_cams=('top', 'wrist'), start=0, **kwargs):
  rng = np.random.default_rng(start)
  return [synthetic.synthetic_episode(
      rng, num_steps=12 + i, cameras=fmt_cams, image_size=16, privileged_dim=2,
      success=bool(i % 2), interventions=[(3, 6)] if i % 2 else [], episode_id=f'ep{start + i}',
      **kwargs) for i in range(n)]


def _spec(fmt='jpeg'):
  return schema.make_spec(('top', 'wrist'), 16, state_dim=6, action_dim=4, privileged_dim=2,
                          image_format=fmt)


def _run(code, cwd, env_extra=None):
  """Runs python code in a fresh process (no habc on its path unless the code adds it)."""
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(env_extra or {})
  return subprocess.run([PYTHON, '-c', textwrap.dedent(code)], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120)


def test_round_trip_with_plain_tfds(tmp_path):
  path = str(tmp_path / 'ds')
  episodes = _episodes(3)
  with writer.EpisodeWriter(path, _spec('png')) as w:
    for ep in episodes:
      w.append(ep)
  assert 'tensorflow' not in sys.modules
  # A process with no habc code and no TensorFlow reads it back.
  result = _run(f'''
      import sys, numpy as np, tensorflow_datasets as tfds
      assert 'habc' not in sys.modules
      source = tfds.builder_from_directory({path!r}).as_data_source()['train']
      out = {{}}
      for i in range(len(source)):
        ep = source[i]
        steps = [ep['steps'][t] for t in range(len(ep['steps']))]
        for key in ('action', 'policy_action', 'is_intervention', 'is_terminal', 'is_last',
                    'reward', 'discount'):
          out[f'{{i}}/{{key}}'] = np.stack([s[key] for s in steps])
        for key in ('top', 'wrist', 'state', 'privileged'):
          out[f'{{i}}/{{key}}'] = np.stack([s['observation'][key] for s in steps])
        out[f'{{i}}/instruction'] = np.array(steps[0]['language_instruction'])
        out[f'{{i}}/meta'] = np.array(repr(ep['episode_metadata']))
      np.savez({str(tmp_path / 'out.npz')!r}, **out)
      print('TF', 'tensorflow' in sys.modules, len(source))
  ''', cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TF False 3' in result.stdout
  got = np.load(tmp_path / 'out.npz')
  for i, ep in enumerate(episodes):
    steps = ep['steps']
    for key in ('action', 'policy_action', 'is_intervention', 'is_terminal', 'is_last', 'reward',
                'discount'):
      np.testing.assert_array_equal(got[f'{i}/{key}'], steps[key], err_msg=key)
    for key in ('top', 'wrist', 'state', 'privileged'):
      np.testing.assert_array_equal(got[f'{i}/{key}'], steps['observation'][key], err_msg=key)
    assert got[f'{i}/instruction'].item() == b'fold the cloth'
    meta = str(got[f'{i}/meta'])
    assert f"b'ep{i}'" in meta and f"'success': {bool(i % 2)}" in meta


def test_jpeg_round_trip_is_close_and_habc_reader_matches(tmp_path):
  path = str(tmp_path / 'ds')
  episodes = _episodes(2)
  writer.write_episodes(path, episodes, _spec('jpeg'))
  source = episodes_lib.EpisodeSource(path)
  assert len(source) == 2
  back = source[1]
  np.testing.assert_array_equal(back['steps']['action'], episodes[1]['steps']['action'])
  diff = np.abs(back['steps']['observation']['top'].astype(int)
                - episodes[1]['steps']['observation']['top'])
  assert diff.mean() < 4.0  # JPEG-95 on tiny 16x16 frames; ~0.5 at 64x64.
  assert back['episode_metadata'] == schema.validate_episode(episodes[1], _spec())['episode_metadata']


def test_append_in_later_sessions_and_spec_mismatch(tmp_path):
  path = str(tmp_path / 'ds')
  writer.write_episodes(path, _episodes(2), _spec())
  writer.write_episodes(path, _episodes(2, start=10))  # Spec taken from the dataset.
  assert writer.num_episodes(path) == 4
  ids = [episodes_lib.EpisodeSource(path, cameras=())[i]['episode_metadata']['episode_id']
         for i in range(4)]
  assert ids == ['ep0', 'ep1', 'ep10', 'ep11']
  other = schema.make_spec(('top',), 16, state_dim=6, action_dim=4)
  with pytest.raises(ValueError, match='disagrees'):
    writer.EpisodeWriter(path, other)
  with writer.EpisodeWriter(path, episodes_per_shard=3) as w:  # Lock released after errors.
    for ep in _episodes(4, start=20):
      w.append(ep)
  assert writer.num_episodes(path) == 8
  info = json.load(open(os.path.join(path, 'dataset_info.json')))
  assert info['splits'][0]['shardLengths'] == ['1', '1', '1', '1', '3', '1']


def test_bad_episode_is_not_written(tmp_path):
  path = str(tmp_path / 'ds')
  good, bad = _episodes(2)
  bad['steps']['action'][2, 1] = np.nan
  with writer.EpisodeWriter(path, _spec()) as w:
    w.append(good)
    with pytest.raises(schema.EpisodeError, match="'ep1', field 'steps/action'"):
      w.append(bad)
  assert writer.num_episodes(path) == 1


def test_second_writer_is_refused(tmp_path):
  path = str(tmp_path / 'ds')
  with writer.EpisodeWriter(path, _spec()):
    with pytest.raises(writer.DatasetLockedError, match=f'pid {os.getpid()}'):
      writer.EpisodeWriter(path, _spec())
    result = _run(f'''
        import sys; sys.path.insert(0, {REPO!r})
        from habc.data import writer
        try:
          writer.EpisodeWriter({path!r})
        except writer.DatasetLockedError as e:
          print('REFUSED', e)
    ''', cwd=REPO)
    assert 'REFUSED' in result.stdout, result.stderr[-2000:]
  writer.EpisodeWriter(path).close()  # Free again once the first writer closed.


@pytest.mark.parametrize('where', ['_write_shard', '_commit_info'])
def test_killed_writer_leaves_a_loadable_dataset(tmp_path, where):
  path = str(tmp_path / 'ds')
  result = _run(f'''
      import os, signal, sys; sys.path.insert(0, {REPO!r})
      import numpy as np
      from habc.data import schema, synthetic, writer
      rng = np.random.default_rng(0)
      eps = [synthetic.synthetic_episode(rng, num_steps=10, cameras=('top',), image_size=16,
                                         episode_id=f'ep{{i}}') for i in range(3)]
      w = writer.EpisodeWriter({path!r}, schema.spec_of_episode(eps[0]))
      w.append(eps[0]); w.append(eps[1])
      original = getattr(writer, {where!r}, None) or getattr(writer.EpisodeWriter, {where!r})
      def die(*args, **kwargs):
        if {where!r} == '_write_shard':  # Killed halfway through the shard's records.
          mod, tmp, records = args
          out = mod.ArrayRecordWriter(tmp, 'group_size:1'); out.write(records[0][:100])
        os.kill(os.getpid(), signal.SIGKILL)
      if {where!r} == '_write_shard':
        writer._write_shard = die
      else:
        writer.EpisodeWriter._commit_info = die
      w.append(eps[2])
  ''', cwd=REPO)
  assert result.returncode == -9, result.stderr[-2000:]
  check = _run(f'''
      import tensorflow_datasets as tfds
      src = tfds.builder_from_directory({path!r}).as_data_source()['train']
      print('EPISODES', len(src), [src[i]['episode_metadata']['episode_id'] for i in range(len(src))])
  ''', cwd=str(tmp_path))
  assert "EPISODES 2 [b'ep0', b'ep1']" in check.stdout, check.stderr[-2000:]
  orphan = os.path.join(path, writer.shard_name(writer.DEFAULT_NAME, 2))
  assert os.path.exists(orphan) == (where == '_commit_info')  # Renamed, never listed.
  # The next writer cleans up the orphan shard and appends after the committed ones.
  writer.write_episodes(path, _episodes(1, fmt_cams=('top',), start=5, ))
  source = episodes_lib.EpisodeSource(path)
  assert len(source) == 3 and source[2]['episode_metadata']['episode_id'] == 'ep5'
  assert not os.path.exists(os.path.join(path, writer.TMP_DIR))
