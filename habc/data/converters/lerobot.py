"""LeRobot datasets (codebase v2.0 / v2.1): meta/info.json, one parquet file per episode, one mp4
per camera and episode.

Read: ``observation.state`` -> state, ``action`` -> action, each ``video`` (or ``image``) feature
``observation.images.<camera>`` -> camera <camera>. Optional columns: ``is_intervention`` (or
``intervention``), ``policy_action``, ``next.success`` (the outcome: any True). The instruction is
the episode's task text (meta/episodes.jsonl or meta/tasks.jsonl); an ``success`` entry in
meta/episodes.jsonl gives the outcome when there is no ``next.success`` column.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

from habc.data import images as images_lib
from habc.data.converters import common

SUPPORTED = ('v2.0', 'v2.1')
INTERVENTION_COLUMNS = ('is_intervention', 'intervention', 'complementary_info.is_intervention')


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def load_info(root: str) -> dict:
  path = os.path.join(root, 'meta', 'info.json')
  try:
    with open(path) as f:
      info = json.load(f)
  except FileNotFoundError:
    raise common.ConversionError(path, '-', 'meta/info.json', 'missing: not a LeRobot dataset '
                                 'folder.') from None
  except (OSError, ValueError) as e:
    raise common.ConversionError(path, '-', 'meta/info.json', f'unreadable ({e}).') from e
  version = info.get('codebase_version', '?')
  if version not in SUPPORTED:
    raise common.ConversionError(path, '-', 'codebase_version', f'{version!r} is not supported '
                                 f'(this converter reads {SUPPORTED}); convert the dataset with '
                                 "LeRobot's own tools to v2.1.")
  for key in ('features', 'data_path'):
    if key not in info:
      raise common.ConversionError(path, '-', key, 'missing in meta/info.json.')
  return info


def camera_name(key: str) -> str:
  for prefix in ('observation.images.', 'observation.image.'):
    if key.startswith(prefix):
      return key[len(prefix):]
  return key.rsplit('.', 1)[-1]


def _decode_video(path: str, episode: str, field: str) -> np.ndarray:
  import av
  if not os.path.exists(path):
    raise common.ConversionError(path, episode, field, 'missing video file.')
  try:
    with av.open(path) as container:
      frames = [frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)]
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(path, episode, field, f'unreadable video ({e}).') from e
  if not frames:
    return np.zeros((0, 1, 1, 3), np.uint8)
  return np.stack(frames)


def read_episode(root: str, info: dict, entry: dict, tasks: dict) -> dict:
  import pyarrow.parquet as pq
  index = int(entry['episode_index'])
  chunk = index // int(info.get('chunks_size', 1000))
  episode = f'episode_{index:06d}'
  file = os.path.join(root, info['data_path'].format(episode_chunk=chunk, episode_index=index))
  try:
    table = pq.read_table(file)
  except FileNotFoundError:
    raise common.ConversionError(file, episode, '<file>', 'missing parquet file.') from None
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(file, episode, '<file>', f'unreadable parquet file ({e}).') from e
  columns = set(table.column_names)

  def column(name):
    if name not in columns:
      raise common.ConversionError(file, episode, name, f'missing column (columns: '
                                   f'{sorted(columns)}).')
    values = table.column(name).to_pylist()
    try:
      return np.asarray(values)
    except ValueError as e:
      raise common.ConversionError(file, episode, name, f'shape disagrees across steps '
                                   f'({e}).') from e

  raw = {'state': column('observation.state'), 'action': column('action'), 'images': {}}
  for key, feature in info['features'].items():
    if feature.get('dtype') == 'video':
      path = os.path.join(root, info['video_path'].format(episode_chunk=chunk, video_key=key,
                                                          episode_index=index))
      raw['images'][camera_name(key)] = _decode_video(path, episode, key)
    elif feature.get('dtype') == 'image':
      cells = table.column(key).to_pylist() if key in columns else None
      if cells is None:
        raise common.ConversionError(file, episode, key, 'missing image column.')
      raw['images'][camera_name(key)] = np.stack(
          [images_lib.decode_image(c['bytes'] if isinstance(c, dict) else c) for c in cells])
  for name in INTERVENTION_COLUMNS:
    if name in columns:
      raw['is_intervention'] = column(name).astype(bool)
      break
  if 'policy_action' in columns:
    raw['policy_action'] = column('policy_action')
  if 'next.success' in columns:
    raw['success'] = bool(column('next.success').any())
  elif 'success' in entry:
    raw['success'] = bool(entry['success'])
  texts = entry.get('tasks') or []
  if not texts and 'task_index' in columns and len(table):
    texts = [tasks.get(int(table.column('task_index')[0].as_py()), '')]
  raw['instruction'] = texts[0] if texts else None
  return raw


def iter_raw(input_path: str) -> Iterator[tuple[str, str, callable]]:
  info = load_info(input_path)
  entries = _read_jsonl(os.path.join(input_path, 'meta', 'episodes.jsonl'))
  if not entries:
    entries = [{'episode_index': i} for i in range(int(info.get('total_episodes', 0)))]
  tasks = {int(t['task_index']): t['task']
           for t in _read_jsonl(os.path.join(input_path, 'meta', 'tasks.jsonl'))}
  for entry in sorted(entries, key=lambda e: int(e['episode_index'])):
    name = f'episode_{int(entry["episode_index"]):06d}'
    yield (os.path.join(input_path, 'data'), name,
           lambda e=entry: read_episode(input_path, info, e, tasks))
