"""Issue 29: teleop files in the exact layouts the public tools write, built here.

* ALOHA / Mobile ALOHA / ACT ``record_episodes.py``: root attribute ``compress``, JPEG rows made by
  ``cv2.imencode`` from the camera's RGB arrays, zero-padded to one length, ``/compress_len``,
  ``/observations/qvel`` and ``effort``, Mobile ALOHA's ``/base_action``.
* LeRobot v3.0, from its documented layout (meta/info.json, meta/episodes/chunk-000/file-000.parquet,
  meta/tasks.parquet, data/chunk-000/file-00N.parquet holding several episodes,
  videos/<key>/chunk-000/file-00N.mp4 with per-episode time spans). The fixture follows the column
  names LeRobot 0.4's own writer uses (episode_index, tasks, length, dataset_from_index,
  dataset_to_index, data/chunk_index, data/file_index, videos/<key>/chunk_index, file_index,
  from_timestamp, to_timestamp; global ``index`` in the data rows; meta/tasks.parquet with the
  task text as the pandas index column ``__index_level_0__``). Checked once (issue 29, by hand,
  not in the suite: LeRobot pulls in torch) against a dataset made by LeRobot 0.4.4's own API
  (``LeRobotDataset.create``, ``add_frame``, ``save_episode``, ``finalize``; 3 episodes in one
  data parquet and one AV1 mp4): the same files and columns, and the converter gave each episode
  its own rows and frames in order, colours kept.
"""

import json
import os
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from habc.data import converters, episodes as episodes_lib
from habc.data.converters import ConversionError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RED = np.array([200, 30, 40], np.uint8)  # Red dominant: a swap of red and blue shows.


def _red_frames(num_steps, height=24, width=32):
  frames = np.zeros((num_steps, height, width, 3), np.uint8) + RED
  for t in range(num_steps):
    frames[t, :, : 2 + t] = (20, 220, 60)  # A moving green bar: frames differ.
  return frames


def _read_all(path):
  source = episodes_lib.EpisodeSource(path)
  return [source[i] for i in range(len(source))]


def _write_recorder_episode(path, num_steps=6, *, base_action=True, bgr_arrays=False,
                            compress=True, cameras=('cam_high', 'cam_left_wrist')):
  """An episode as ALOHA's record_episodes.py writes it (Mobile ALOHA: with base_action)."""
  rng = np.random.default_rng(0)
  frames = {cam: _red_frames(num_steps) for cam in cameras}
  data = {'/observations/qpos': rng.normal(size=(num_steps, 14)),
          '/observations/qvel': rng.normal(size=(num_steps, 14)),
          '/observations/effort': rng.normal(size=(num_steps, 14)),
          '/action': rng.normal(size=(num_steps, 14))}
  if base_action:
    data['/base_action'] = rng.normal(size=(num_steps, 2))
  compressed_len = []
  if compress:
    encode_param = [int(cv2.IMWRITE_JPEG_QUALITY), 50]
    encoded = {}
    for cam in cameras:
      compressed_len.append([])
      encoded[cam] = []
      for image in frames[cam]:
        source = image[..., ::-1] if bgr_arrays else image  # What the recorder handed OpenCV.
        _, buf = cv2.imencode('.jpg', np.ascontiguousarray(source), encode_param)
        encoded[cam].append(buf)
        compressed_len[-1].append(len(buf))
    padded_size = int(np.max(compressed_len))
  with h5py.File(path, 'w', rdcc_nbytes=1024 ** 2 * 2) as root:
    root.attrs['sim'] = False
    root.attrs['compress'] = compress
    obs = root.create_group('observations')
    image = obs.create_group('images')
    for cam in cameras:
      if compress:
        rows = image.create_dataset(cam, (num_steps, padded_size), dtype='uint8',
                                    chunks=(1, padded_size))
        for t, buf in enumerate(encoded[cam]):
          row = np.zeros(padded_size, np.uint8)
          row[:len(buf)] = buf.ravel()
          rows[t] = row
      else:
        image.create_dataset(cam, data=frames[cam], chunks=(1,) + frames[cam].shape[1:])
    for key in ('qpos', 'qvel', 'effort'):
      obs.create_dataset(key, (num_steps, 14))
    root.create_dataset('action', (num_steps, 14))
    if base_action:
      root.create_dataset('base_action', (num_steps, 2))
    for name, array in data.items():
      root[name][...] = array
    if compress:
      root.create_dataset('compress_len', (len(cameras), num_steps))
      root['/compress_len'][...] = np.array(compressed_len)
  return frames, data


def _convert(tmp_path, name='out', **options):
  options.setdefault('instruction', 'fold the shirt')
  options.setdefault('success', 'true')
  out = str(tmp_path / name)
  converters.convert('aloha_hdf5', str(tmp_path / 'in'), out, progress=False, **options)
  return _read_all(out)


def test_mobile_aloha_base_action_is_refused_without_a_choice(tmp_path):
  (tmp_path / 'in').mkdir()
  _write_recorder_episode(str(tmp_path / 'in' / 'episode_0.hdf5'))
  with pytest.raises(ConversionError, match=r"field '/base_action': the file has a mobile base "
                                            r'action \(Mobile ALOHA\); pass --base_action=append'):
    _convert(tmp_path)
  assert not os.path.exists(tmp_path / 'out' / 'dataset_info.json')


def test_recorder_layout_round_trips_colours_and_keeps_base_action(tmp_path):
  (tmp_path / 'in').mkdir()
  frames, data = _write_recorder_episode(str(tmp_path / 'in' / 'episode_0.hdf5'))
  (episode,) = _convert(tmp_path, base_action='append')
  steps = episode['steps']
  for cam in ('cam_high', 'cam_left_wrist'):
    got = steps['observation'][cam].astype(int)
    assert got.shape == frames[cam].shape
    # The red-dominant background stays red (a standard JPEG decoder would make it blue).
    assert got[:, :, -4:, 0].mean() > 150 and got[:, :, -4:, 2].mean() < 90
    assert np.abs(got - frames[cam]).mean() < 12
  expected_action = np.concatenate([data['/action'], data['/base_action']], -1)
  np.testing.assert_allclose(steps['action'][:-1], expected_action[:-1], rtol=1e-5)
  np.testing.assert_allclose(  # State default: qpos then qvel (effort is not read).
      steps['observation']['state'],
      np.concatenate([data['/observations/qpos'], data['/observations/qvel']], -1), rtol=1e-5)
  (dropped,) = _convert(tmp_path, name='dropped', base_action='drop', state='qpos')
  assert dropped['steps']['action'].shape[1] == 14
  np.testing.assert_allclose(dropped['steps']['observation']['state'],
                             data['/observations/qpos'], rtol=1e-5)


def test_bgr_arrays_decode_with_jpeg_channels_bgr(tmp_path):
  (tmp_path / 'in').mkdir()
  frames, _ = _write_recorder_episode(str(tmp_path / 'in' / 'episode_0.hdf5'), bgr_arrays=True,
                                      base_action=False, cameras=('cam_high',))
  (episode,) = _convert(tmp_path, jpeg_channels='bgr')
  got = episode['steps']['observation']['cam_high'].astype(int)
  assert np.abs(got - frames['cam_high']).mean() < 12


def test_uncompressed_recorder_file_flagged_compress_reads_raw_frames(tmp_path):
  (tmp_path / 'in').mkdir()
  frames, _ = _write_recorder_episode(str(tmp_path / 'in' / 'episode_0.hdf5'), compress=False,
                                      base_action=False)
  with h5py.File(tmp_path / 'in' / 'episode_0.hdf5', 'a') as f:
    f.attrs['compress'] = True  # Some recorders set it with raw (gzip) frames.
  (episode,) = _convert(tmp_path, image_format='png')  # Lossless storage: exact frames.
  np.testing.assert_array_equal(episode['steps']['observation']['cam_high'], frames['cam_high'])


def test_state_qpos_plus_qvel_needs_qvel(tmp_path):
  (tmp_path / 'in').mkdir()
  rng = np.random.default_rng(1)
  converters.write_aloha_hdf5(str(tmp_path / 'in' / 'episode_0.hdf5'),
                              qpos=rng.normal(size=(5, 3)), action=rng.normal(size=(5, 2)),
                              images={})
  with pytest.raises(ConversionError, match=r"'/observations/qvel': missing key.*--state=qpos"):
    _convert(tmp_path, state='qpos+qvel')
  with pytest.raises(ValueError, match='--state must be one of'):
    _convert(tmp_path, name='o2', state='qvel')


def test_write_aloha_hdf5_compress_writes_the_recorders_layout(tmp_path):
  (tmp_path / 'in').mkdir()
  frames = _red_frames(5)
  rng = np.random.default_rng(2)
  path = str(tmp_path / 'in' / 'episode_0.hdf5')
  converters.write_aloha_hdf5(path, qpos=rng.normal(size=(5, 3)), action=rng.normal(size=(5, 2)),
                              images={'cam_high': frames}, compress=True,
                              base_action=rng.normal(size=(5, 2)))
  with h5py.File(path, 'r') as f:
    assert bool(f.attrs['compress'])
    rows = f['/observations/images/cam_high']
    assert rows.dtype == np.uint8 and rows.ndim == 2 and 'compress' not in rows.attrs
    assert f['/compress_len'].shape == (1, 5) and f['/base_action'].shape == (5, 2)
    # As the recorders' loaders read it: cv2.imdecode gives back the RGB arrays.
    row = rows[0][:int(f['/compress_len'][0, 0])]
    decoded = cv2.imdecode(row, 1)
  assert np.abs(decoded.astype(int) - frames[0]).mean() < 12
  (episode,) = _convert(tmp_path, base_action='drop')
  assert np.abs(episode['steps']['observation']['cam_high'].astype(int) - frames).mean() < 12


# ---- LeRobot v3.0 ------------------------------------------------------------------------------

FPS = 10


def _write_mp4(path, frames):
  import av
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=FPS)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.options = {'g': '3'}  # Key frames every 3 frames: seeking lands before a span.
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _level_frames(levels, height=24, width=32):
  """One grey level per frame: which frames an episode got is read back from its levels."""
  return np.stack([np.full((height, width, 3), level, np.uint8) for level in levels])


def _lerobot_v3(root, lengths=(5, 7, 4), files=((0, 1), (2,)), drop=None):
  """A v3.0 dataset: episodes grouped into data/video files as ``files`` says."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  info = {
      'codebase_version': 'v3.0', 'robot_type': 'aloha', 'total_episodes': len(lengths),
      'total_frames': int(sum(lengths)), 'total_tasks': 2, 'chunks_size': 1000,
      'data_files_size_in_mb': 100, 'video_files_size_in_mb': 500, 'fps': FPS,
      'splits': {'train': f'0:{len(lengths)}'},
      'data_path': 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
      'video_path': 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4',
      'features': {
          'observation.state': {'dtype': 'float32', 'shape': [3], 'names': None},
          'action': {'dtype': 'float32', 'shape': [2], 'names': None},
          'observation.images.front': {
              'dtype': 'video', 'shape': [24, 32, 3], 'names': ['height', 'width', 'channels'],
              'info': {'video.fps': FPS, 'video.codec': 'mpeg4', 'video.pix_fmt': 'yuv420p'}},
          'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
          'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
          'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
          'index': {'dtype': 'int64', 'shape': [1], 'names': None},
          'task_index': {'dtype': 'int64', 'shape': [1], 'names': None}}}
  os.makedirs(os.path.join(root, 'meta', 'episodes', 'chunk-000'), exist_ok=True)
  json.dump(info, open(os.path.join(root, 'meta', 'info.json'), 'w'), indent=4)
  tasks = ['open the bag', 'close the bag']
  pq.write_table(pa.table({'task_index': [0, 1], '__index_level_0__': tasks}),  # As LeRobot.
                 os.path.join(root, 'meta', 'tasks.parquet'))
  rng = np.random.default_rng(3)
  recorded, episode_rows, index, level = {}, [], 0, 30
  for file_index, episodes in enumerate(files):
    columns = {k: [] for k in ('observation.state', 'action', 'timestamp', 'frame_index',
                               'episode_index', 'index', 'task_index')}
    levels, start_time = [], 0.0
    for ep in episodes:
      n = lengths[ep]
      state = rng.normal(size=(n, 3)).astype(np.float32)
      action = rng.normal(size=(n, 2)).astype(np.float32)
      ep_levels = [level + 12 * t for t in range(n)]
      level += 12 * n
      columns['observation.state'] += state.tolist()
      columns['action'] += action.tolist()
      columns['timestamp'] += [t / FPS for t in range(n)]
      columns['frame_index'] += list(range(n))
      columns['episode_index'] += [ep] * n
      columns['index'] += list(range(index, index + n))
      columns['task_index'] += [ep % 2] * n
      row = {'episode_index': ep, 'tasks': [tasks[ep % 2]], 'length': n,
             'data/chunk_index': 0, 'data/file_index': file_index,
             'dataset_from_index': index, 'dataset_to_index': index + n,
             'videos/observation.images.front/chunk_index': 0,
             'videos/observation.images.front/file_index': file_index,
             'videos/observation.images.front/from_timestamp': start_time,
             'videos/observation.images.front/to_timestamp': start_time + n / FPS,
             'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0,
             'stats/action/mean': action.mean(0).tolist()}
      episode_rows.append(row)
      recorded[ep] = (state, action, ep_levels, tasks[ep % 2])
      levels += ep_levels
      index += n
      start_time += n / FPS
    path = os.path.join(root, info['data_path'].format(chunk_index=0, file_index=file_index))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path)
    _write_mp4(os.path.join(root, info['video_path'].format(
        video_key='observation.images.front', chunk_index=0, file_index=file_index)),
        _level_frames(levels))
  episode_rows.sort(key=lambda r: r['episode_index'])
  if drop:
    for row in episode_rows:
      row.pop(drop)
  table = pa.Table.from_pylist(episode_rows)
  pq.write_table(table, os.path.join(root, 'meta', 'episodes', 'chunk-000', 'file-000.parquet'))
  return recorded


def test_lerobot_v3_reads_several_episodes_per_file(tmp_path):
  recorded = _lerobot_v3(str(tmp_path / 'lr'))
  out = str(tmp_path / 'out')
  summary = converters.convert('lerobot', str(tmp_path / 'lr'), out, progress=False,
                               success='true')
  assert summary.episodes == 3 and summary.steps == 16 and summary.cameras == {'front': (24, 32, 3)}
  episodes = _read_all(out)
  for ep, episode in enumerate(episodes):
    state, action, levels, task = recorded[ep]
    steps = episode['steps']
    assert episode['episode_metadata']['episode_id'] == f'episode_{ep:06d}'
    np.testing.assert_allclose(steps['observation']['state'], state, rtol=1e-6)
    np.testing.assert_allclose(steps['action'][:-1], action[:-1], rtol=1e-6)
    assert steps['language_instruction'] == task
    got = steps['observation']['front'].reshape(len(levels), -1).mean(1)
    np.testing.assert_allclose(got, levels, atol=5)  # Its own frames, in order.


def test_lerobot_v3_missing_chunk_index_is_a_clear_error(tmp_path):
  _lerobot_v3(str(tmp_path / 'lr'), drop='data/chunk_index')
  with pytest.raises(ConversionError, match=r"episode 'episode_000000', field "
                                            r"'data/chunk_index': missing in the episode metadata"):
    converters.convert('lerobot', str(tmp_path / 'lr'), str(tmp_path / 'out'), progress=False,
                       success='true')


def test_lerobot_v2_info_with_v3_paths_is_a_clear_error(tmp_path):
  _lerobot_v3(str(tmp_path / 'lr'))
  info_path = tmp_path / 'lr' / 'meta' / 'info.json'
  info = json.load(open(info_path))
  info['codebase_version'] = 'v2.1'
  json.dump(info, open(info_path, 'w'))
  with pytest.raises(ConversionError, match=r"field 'data_path': .*names 'chunk_index'"):
    converters.convert('lerobot', str(tmp_path / 'lr'), str(tmp_path / 'out'), progress=False,
                       success='true')


def test_convert_teleop_help_lists_fields_and_exits_0():
  result = subprocess.run([sys.executable, os.path.join(REPO, 'data', 'convert_teleop.py'),
                           '--help'], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  text = result.stdout
  assert 'Required: --format, --input, --output' in text
  for field in ('/observations/qpos', '/base_action', 'meta/episodes/*.parquet',
                'observation.state', 'image_<camera>', '--jpeg_channels', '--state'):
    assert field in text, field
