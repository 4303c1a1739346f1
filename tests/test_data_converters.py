"""Teleop converters on small files the tests write, every bad-input case, --skip-bad, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from habc.data import converters, episodes as episodes_lib, writer
from habc.data.converters import ConversionError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frames(rng, num_steps, height=24, width=32):
  """Smooth frames (video codecs and JPEG keep them close)."""
  base = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
  shift = rng.uniform(-20, 20, (num_steps, 1, 1, 1)).astype(np.float32)
  return np.clip(base + np.zeros((height, 1, 3)) + shift, 0, 255).astype(np.uint8)


def _read_all(path):
  source = episodes_lib.EpisodeSource(path)
  return [source[i] for i in range(len(source))]


# ---- ALOHA HDF5 -------------------------------------------------------------------------------

def _aloha_folder(path, rng, num=3, num_steps=8, compress=(False, True, False)):
  os.makedirs(path, exist_ok=True)
  recorded = []
  for i in range(num):
    arrays = dict(qpos=rng.normal(size=(num_steps, 4)), qvel=rng.normal(size=(num_steps, 4)),
                  action=rng.normal(size=(num_steps, 3)),
                  images={'cam_high': _frames(rng, num_steps), 'cam_low': _frames(rng, num_steps)},
                  is_intervention=np.arange(num_steps) >= 4 if i == 2 else None,
                  success=None if i == 0 else bool(i % 2))
    converters.write_aloha_hdf5(os.path.join(path, f'episode_{i}.hdf5'), compress=compress[i],
                                instruction='fold', **arrays)
    recorded.append(arrays)
  return recorded


def test_aloha_hdf5_with_options(tmp_path):
  rng = np.random.default_rng(0)
  recorded = _aloha_folder(str(tmp_path / 'in'), rng)
  out = str(tmp_path / 'out')
  summary = converters.convert('aloha_hdf5', str(tmp_path / 'in'), out, progress=False,
                               task='fold', resize='12x16', cameras='cam_high:top', success='true')
  assert summary.episodes == 3 and summary.steps == 24 and summary.cameras == {'top': (12, 16, 3)}
  assert summary.successes == 2 and summary.intervention_episodes == 1
  assert summary.intervention_steps == 4  # Steps 4..7: the flag of the final frame is kept.
  assert 'success rate: 66.7%' in summary.format()
  episodes = _read_all(out)
  for arrays, ep in zip(recorded, episodes):
    steps = ep['steps']
    np.testing.assert_allclose(steps['observation']['state'],
                               np.concatenate([arrays['qpos'], arrays['qvel']], 1), rtol=1e-6)
    np.testing.assert_allclose(steps['action'][:-1], arrays['action'][:-1], rtol=1e-6)
    assert not steps['action'][-1].any() and set(steps['observation']) == {'top', 'state'}
    assert steps['observation']['top'].shape == (8, 12, 16, 3)
    assert ep['steps']['language_instruction'] == 'fold' and ep['episode_metadata']['task'] == 'fold'
    assert ep['episode_metadata']['source'] == 'demo'
  assert [e['episode_metadata']['success'] for e in episodes] == [True, True, False]
  assert episodes[2]['steps']['is_intervention'].tolist() == [False] * 4 + [True] * 4
  assert episodes[1]['steps']['is_terminal'][-1] and not episodes[2]['steps']['is_terminal'].any()
  # Compressed (JPEG) frames decode close to the originals.
  resized = converters.common.select_cameras('f', 'e', {'a': recorded[1]['images']['cam_high']},
                                             converters.make_options(resize='12x16'))['a']
  assert np.abs(episodes[1]['steps']['observation']['top'].astype(int) - resized).mean() < 6


def test_aloha_padded_jpeg_rows(tmp_path):
  """ALOHA's own recorder stores JPEGs as zero-padded uint8 rows."""
  import h5py
  from habc.data import images
  rng = np.random.default_rng(1)
  frames = _frames(rng, 5)
  encoded = [images.encode_image(f, 'jpeg') for f in frames]
  padded = np.zeros((5, max(map(len, encoded)) + 10), np.uint8)
  for i, e in enumerate(encoded):
    padded[i, :len(e)] = np.frombuffer(e, np.uint8)
  os.makedirs(tmp_path / 'in')
  with h5py.File(tmp_path / 'in' / 'episode_0.hdf5', 'w') as f:
    f['/observations/qpos'] = rng.normal(size=(5, 2))
    f['/observations/images/cam'] = padded
    f['/observations/images/cam'].attrs['compress'] = True
    f['/action'] = rng.normal(size=(5, 2))
  summary = converters.convert('aloha_hdf5', str(tmp_path / 'in'), str(tmp_path / 'out'),
                               progress=False, success='false', instruction='x')
  assert summary.cameras == {'cam': (24, 32, 3)}
  got = _read_all(str(tmp_path / 'out'))[0]['steps']['observation']['cam']
  assert np.abs(got.astype(int) - frames).mean() < 4


# ---- LeRobot ----------------------------------------------------------------------------------

def _write_mp4(path, frames, fps=10):
  import av
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _lerobot_folder(root, rng, lengths=(6, 9), version='v2.1', drop_frame=False):
  import pyarrow as pa
  import pyarrow.parquet as pq
  info = {'codebase_version': version, 'fps': 10, 'chunks_size': 1000,
          'total_episodes': len(lengths),
          'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
          'video_path': 'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4',
          'features': {'observation.state': {'dtype': 'float32', 'shape': [3]},
                       'action': {'dtype': 'float32', 'shape': [2]},
                       'observation.images.front': {'dtype': 'video', 'shape': [24, 32, 3]}}}
  os.makedirs(os.path.join(root, 'meta'), exist_ok=True)
  json.dump(info, open(os.path.join(root, 'meta', 'info.json'), 'w'))
  with open(os.path.join(root, 'meta', 'tasks.jsonl'), 'w') as f:
    f.write(json.dumps({'task_index': 0, 'task': 'open the bag'}) + '\n')
  recorded = []
  with open(os.path.join(root, 'meta', 'episodes.jsonl'), 'w') as f:
    for i, num_steps in enumerate(lengths):
      f.write(json.dumps({'episode_index': i, 'tasks': ['open the bag'], 'length': num_steps}) + '\n')
      state = rng.normal(size=(num_steps, 3)).astype(np.float32)
      action = rng.normal(size=(num_steps, 2)).astype(np.float32)
      flags = np.arange(num_steps) % 4 == 1
      table = pa.table({'observation.state': state.tolist(), 'action': action.tolist(),
                        'frame_index': np.arange(num_steps), 'episode_index': [i] * num_steps,
                        'task_index': [0] * num_steps, 'is_intervention': flags,
                        'next.success': np.arange(num_steps) == num_steps - 1 if i == 0
                        else np.zeros(num_steps, bool)})
      path = os.path.join(root, info['data_path'].format(episode_chunk=0, episode_index=i))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      pq.write_table(table, path)
      frames = _frames(rng, num_steps)
      _write_mp4(os.path.join(root, info['video_path'].format(
          episode_chunk=0, video_key='observation.images.front', episode_index=i)),
          frames[:-1] if drop_frame else frames)
      recorded.append((state, action, flags, frames))
  return recorded


def test_lerobot_folder(tmp_path):
  rng = np.random.default_rng(2)
  recorded = _lerobot_folder(str(tmp_path / 'in'), rng)
  summary = converters.convert('lerobot', str(tmp_path / 'in'), str(tmp_path / 'out'),
                               progress=False)
  assert summary.episodes == 2 and summary.steps == 15 and summary.cameras == {'front': (24, 32, 3)}
  episodes = _read_all(str(tmp_path / 'out'))
  for (state, action, flags, frames), ep in zip(recorded, episodes):
    steps = ep['steps']
    np.testing.assert_array_equal(steps['observation']['state'], state)
    np.testing.assert_array_equal(steps['action'][:-1], action[:-1])
    np.testing.assert_array_equal(steps['is_intervention'][:-1], flags[:-1])
    assert np.abs(steps['observation']['front'].astype(int) - frames).mean() < 8
    assert steps['language_instruction'] == 'open the bag'
  assert [e['episode_metadata']['success'] for e in episodes] == [True, False]


# ---- npz --------------------------------------------------------------------------------------

def _npz(path, rng, num_steps=6, **overrides):
  arrays = {'state': rng.normal(size=(num_steps, 3)), 'action': rng.normal(size=(num_steps, 2)),
            'image_top': _frames(rng, num_steps), 'success': np.array(True),
            'instruction': np.array('stack the cups')}
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


def test_npz_episodes(tmp_path):
  rng = np.random.default_rng(3)
  os.makedirs(tmp_path / 'in')
  a = _npz(tmp_path / 'in' / 'ep_1.npz', rng, is_intervention=np.array([0, 1, 1, 0, 0, 0], bool),
           policy_action=np.zeros((6, 2)))
  _npz(tmp_path / 'in' / 'ep_2.npz', rng, success=None, instruction=None, qpos=None)
  summary = converters.convert('npz', str(tmp_path / 'in'), str(tmp_path / 'out'), progress=False,
                               success='false', instruction='stack')
  assert summary.episodes == 2 and summary.successes == 1
  ep = _read_all(str(tmp_path / 'out'))[0]
  np.testing.assert_allclose(ep['steps']['action'][:-1], a['action'][:-1], rtol=1e-6)
  assert not ep['steps']['policy_action'].any() and ep['steps']['is_intervention'].sum() == 2
  assert ep['steps']['language_instruction'] == 'stack'  # --instruction overrides the file.


# ---- bad input --------------------------------------------------------------------------------

def _bad_npz_cases(rng):
  nan_action = rng.normal(size=(6, 2))
  nan_action[3, 1] = np.nan
  return {
      'missing_key': ({'action': None}, 'action', 'missing key'),
      'ragged': ({'image_top': _frames(rng, 5)}, 'images/top', 'disagrees across steps'),
      'nan_action': ({'action': nan_action}, 'action', 'NaN or inf at step 3'),
      'inf_action': ({'action': np.full((6, 2), np.inf)}, 'action', 'NaN or inf'),
      'empty': ({'state': np.zeros((0, 3)), 'action': np.zeros((0, 2)),
                 'image_top': np.zeros((0, 24, 32, 3), np.uint8)}, 'action', 'empty'),
  }


@pytest.mark.parametrize('case', ['missing_key', 'ragged', 'nan_action', 'inf_action', 'empty',
                                  'unreadable'])
def test_bad_npz_names_file_episode_field_and_keeps_dataset(tmp_path, case):
  rng = np.random.default_rng(4)
  out = str(tmp_path / 'out')
  os.makedirs(tmp_path / 'first')
  _npz(tmp_path / 'first' / 'ep_0.npz', rng)
  converters.convert('npz', str(tmp_path / 'first'), out, progress=False)
  os.makedirs(tmp_path / 'in')
  _npz(tmp_path / 'in' / 'ep_1.npz', rng)
  bad_file = tmp_path / 'in' / 'ep_2.npz'
  if case == 'unreadable':
    bad_file.write_bytes(b'this is not a zip archive')
    field, words = '<file>', 'unreadable'
  else:
    overrides, field, words = _bad_npz_cases(rng)[case]
    _npz(bad_file, rng, **overrides)
  _npz(tmp_path / 'in' / 'ep_3.npz', rng)
  with pytest.raises(ConversionError) as err:
    converters.convert('npz', str(tmp_path / 'in'), out, progress=False)
  assert err.value.file == str(bad_file) and err.value.episode == 'ep_2'
  assert err.value.field == field and words in str(err.value), str(err.value)
  assert str(bad_file) in str(err.value) and "'ep_2'" in str(err.value)
  assert writer.num_episodes(out) == 2  # ep_0 from before, ep_1 converted before the bad one.
  assert len(_read_all(out)) == 2
  summary = converters.convert('npz', str(tmp_path / 'in'), out, progress=False, skip_bad=True)
  assert summary.episodes == 2 and [s[1] for s in summary.skipped] == ['ep_2']
  assert 'skipped 1 bad episodes' in summary.format() and field in summary.format()
  assert writer.num_episodes(out) == 4


def test_bad_aloha_and_lerobot_files(tmp_path):
  rng = np.random.default_rng(5)
  _aloha_folder(str(tmp_path / 'a'), rng, num=2, compress=(False, False))
  (tmp_path / 'a' / 'episode_2.hdf5').write_bytes(b'garbage')
  summary = converters.convert('aloha_hdf5', str(tmp_path / 'a'), str(tmp_path / 'o1'),
                               progress=False, skip_bad=True, success='true')
  assert summary.episodes == 2 and 'unreadable HDF5' in summary.skipped[0][2]
  with pytest.raises(ConversionError, match="field 'success'.*--success"):
    converters.convert('aloha_hdf5', str(tmp_path / 'a' / 'episode_0.hdf5'), str(tmp_path / 'o3'),
                       progress=False, cameras='cam_high')
  import h5py
  with h5py.File(tmp_path / 'a' / 'episode_0.hdf5', 'a') as f:
    del f['/action']
  with pytest.raises(ConversionError, match=r"episode_0\.hdf5: episode 'episode_0', field "
                     r"'/action': missing key"):
    converters.convert('aloha_hdf5', str(tmp_path / 'a'), str(tmp_path / 'o2'), progress=False,
                       success='true')
  _lerobot_folder(str(tmp_path / 'lr'), rng, lengths=(5,), drop_frame=True)
  with pytest.raises(ConversionError, match="field 'images/front': 4 steps but `action` has 5"):
    converters.convert('lerobot', str(tmp_path / 'lr'), str(tmp_path / 'o4'), progress=False)
  parquet = tmp_path / 'lr' / 'data' / 'chunk-000' / 'episode_000000.parquet'
  parquet.write_bytes(b'not parquet')
  with pytest.raises(ConversionError, match="episode_000000.parquet: episode 'episode_000000', "
                     "field '<file>': unreadable parquet"):
    converters.convert('lerobot', str(tmp_path / 'lr'), str(tmp_path / 'o4'), progress=False)
  _lerobot_folder(str(tmp_path / 'v1'), rng, lengths=(5,), version='v1.6')
  with pytest.raises(ConversionError, match="'v1.6' is not supported .*LeRobot's own converters"):
    converters.convert('lerobot', str(tmp_path / 'v1'), str(tmp_path / 'o5'), progress=False)


def test_cli(tmp_path):
  rng = np.random.default_rng(6)
  os.makedirs(tmp_path / 'in')
  for i in range(2):
    _npz(tmp_path / 'in' / f'ep_{i}.npz', rng)
  _npz(tmp_path / 'in' / 'ep_9.npz', rng, action=np.full((6, 2), np.nan))
  cmd = [sys.executable, os.path.join(REPO, 'data', 'convert_teleop.py'), '--format=npz',
         f'--input={tmp_path / "in"}', f'--output={tmp_path / "out"}', '--resize=8x8']
  failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert failed.returncode == 1 and "episode 'ep_9', field 'action'" in failed.stderr
  assert 'holds 2 episodes' in failed.stderr
  ok = subprocess.run(cmd + ['--skip-bad', f'--output={tmp_path / "out2"}'], capture_output=True,
                      text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert 'Converted 2 episodes (12 steps)' in ok.stdout and 'top 8x8x3' in ok.stdout
  assert 'skipped 1 bad episodes' in ok.stdout and 'converting npz' in ok.stderr
