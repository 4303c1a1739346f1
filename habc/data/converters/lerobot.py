"""LeRobot datasets: codebase v3.0 (what current LeRobot writes) and v2.0 / v2.1.

v3.0 (``meta/info.json`` ``codebase_version`` 'v3.0')::

  meta/info.json                          features, fps, data_path, video_path
  meta/episodes/chunk-000/file-000.parquet one row per episode: episode_index, tasks, length,
                                          dataset_from_index, dataset_to_index (rows of the
                                          global ``index`` column), data/chunk_index,
                                          data/file_index, videos/<key>/chunk_index,
                                          videos/<key>/file_index, videos/<key>/from_timestamp,
                                          videos/<key>/to_timestamp
  meta/tasks.parquet                      task_index per task text
  data/chunk-000/file-000.parquet         the frames of several episodes
  videos/<key>/chunk-000/file-000.mp4     several episodes one after another

An episode is its rows of its data file (``dataset_from_index`` <= index < ``dataset_to_index``,
else its ``episode_index`` rows) and, per camera, the frames of its video file whose time lies in
[``from_timestamp``, ``to_timestamp``).

v2.x: ``meta/episodes.jsonl``, ``meta/tasks.jsonl``, one parquet file per episode, one mp4 per
camera and episode.

Read in both: ``observation.state`` -> state, ``action`` -> action, each ``video`` (or ``image``)
feature ``observation.images.<camera>`` -> camera <camera>. Optional columns: ``is_intervention``
(or ``intervention``), ``policy_action``, ``next.success`` (the outcome: any True). The
instruction is the episode's task text; a ``success`` entry of the episode's metadata gives the
outcome when there is no ``next.success`` column.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

from habc.data import images as images_lib
from habc.data.converters import common

SUPPORTED = ('v2.0', 'v2.1', 'v3.0')
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
                                 f'(this converter reads {", ".join(SUPPORTED)}). For an older '
                                 "dataset, LeRobot's own converters bring it to v2.1 or v3.0 "
                                 '(lerobot/datasets/v21, v30).')
  for key in ('features', 'data_path'):
    if key not in info:
      raise common.ConversionError(path, '-', key, 'missing in meta/info.json.')
  return info


def camera_name(key: str) -> str:
  for prefix in ('observation.images.', 'observation.image.'):
    if key.startswith(prefix):
      return key[len(prefix):]
  return key.rsplit('.', 1)[-1]


def _decode_video(path: str, episode: str, field: str, span: tuple[float, float] | None = None,
                  fps: float | None = None) -> np.ndarray:
  """The frames of an mp4 (PyAV), all of them or those whose time lies in ``span`` [from, to)
  seconds (v3.0: several episodes share one file; it seeks to the span's start)."""
  import av
  if not os.path.exists(path):
    raise common.ConversionError(path, episode, field, 'missing video file.')
  frames = []
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      if span is None:
        frames = [frame.to_ndarray(format='rgb24') for frame in container.decode(stream)]
      else:
        start, end = span
        half = 0.5 / (fps or float(stream.average_rate or 30))
        if start > half and stream.time_base:
          container.seek(int(max(0.0, start - half) / stream.time_base), stream=stream,
                         backward=True, any_frame=False)
        for frame in container.decode(stream):
          t = frame.time if frame.time is not None else 0.0
          if t < start - half:
            continue
          if t >= end - half:
            break
          frames.append(frame.to_ndarray(format='rgb24'))
  except common.ConversionError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(path, episode, field, f'unreadable video ({e}).') from e
  if not frames:
    return np.zeros((0, 1, 1, 3), np.uint8)
  return np.stack(frames)


def _format_path(root: str, info: dict, key: str, episode: str, **values) -> str:
  """info[key] (data_path, video_path) with ``values`` filled in; a placeholder the version does
  not fill (a v3.0 path in a v2.x info, say) is a ConversionError, not a KeyError."""
  template = info.get(key)
  if not template:
    raise common.ConversionError(os.path.join(root, 'meta', 'info.json'), episode, key,
                                 'missing in meta/info.json.')
  try:
    return template.format(**values)
  except (KeyError, IndexError, ValueError) as e:
    raise common.ConversionError(
        os.path.join(root, 'meta', 'info.json'), episode, key,
        f'{template!r} names {e}, which codebase_version {info.get("codebase_version")!r} does '
        f'not fill (it fills {sorted(values)}); is the codebase_version right?') from None


def _read_table(file: str, episode: str):
  import pyarrow.parquet as pq
  try:
    return pq.read_table(file)
  except FileNotFoundError:
    raise common.ConversionError(file, episode, '<file>', 'missing parquet file.') from None
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(file, episode, '<file>', f'unreadable parquet file ({e}).') from e


def _raw_from_table(table, file: str, episode: str, info: dict, entry: dict, tasks: dict,
                    video) -> dict:
  """One episode's rows (a pyarrow table) -> a raw episode; ``video(key)`` decodes a camera."""
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
      raw['images'][camera_name(key)] = video(key)
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
  elif entry.get('success') is not None:
    raw['success'] = bool(entry['success'])
  texts = list(entry.get('tasks') or [])
  if not texts and 'task_index' in columns and len(table):
    texts = [tasks.get(int(table.column('task_index')[0].as_py()), '')]
  raw['instruction'] = texts[0] if texts else None
  return raw


def read_episode(root: str, info: dict, entry: dict, tasks: dict) -> dict:
  """A v2.x episode: its own parquet file and one mp4 per camera."""
  index = int(entry['episode_index'])
  chunk = index // int(info.get('chunks_size', 1000))
  episode = f'episode_{index:06d}'
  file = os.path.join(root, _format_path(root, info, 'data_path', episode,
                                         episode_chunk=chunk, episode_index=index))
  table = _read_table(file, episode)

  def video(key):
    path = os.path.join(root, _format_path(root, info, 'video_path', episode,
                                           episode_chunk=chunk, video_key=key,
                                           episode_index=index))
    return _decode_video(path, episode, key)

  return _raw_from_table(table, file, episode, info, entry, tasks, video)


# -- v3.0 ----------------------------------------------------------------------------------------

def _v3_episodes(root: str) -> list[dict]:
  """The rows of meta/episodes/**/*.parquet (stats columns left out), by episode_index."""
  import glob
  import pyarrow.parquet as pq
  files = sorted(glob.glob(os.path.join(root, 'meta', 'episodes', '**', '*.parquet'),
                           recursive=True))
  if not files:
    raise common.ConversionError(os.path.join(root, 'meta', 'episodes'), '-', 'meta/episodes',
                                 'no episode metadata (meta/episodes/chunk-*/file-*.parquet), '
                                 'which a v3.0 dataset has.')
  rows = []
  for file in files:
    try:
      table = pq.read_table(file)
    except Exception as e:  # pylint: disable=broad-except
      raise common.ConversionError(file, '-', '<file>', f'unreadable parquet file ({e}).') from e
    keep = [c for c in table.column_names if not c.startswith('stats/')]
    for row in table.select(keep).to_pylist():
      if 'episode_index' not in row:
        raise common.ConversionError(file, '-', 'episode_index', 'missing column in the episode '
                                     'metadata.')
      row['_meta_file'] = file
      rows.append(row)
  return sorted(rows, key=lambda r: int(r['episode_index']))


def _v3_tasks(root: str) -> dict[int, str]:
  """task_index -> task text, from meta/tasks.parquet (the text is the pandas index)."""
  import pyarrow.parquet as pq
  path = os.path.join(root, 'meta', 'tasks.parquet')
  if not os.path.exists(path):
    return {}
  try:
    table = pq.read_table(path)
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(path, '-', '<file>', f'unreadable parquet file ({e}).') from e
  names = table.column_names
  text_column = 'task' if 'task' in names else next(
      (n for n in names if n not in ('task_index',)), None)
  if 'task_index' not in names or text_column is None:
    return {}
  return {int(i): str(t) for i, t in zip(table.column('task_index').to_pylist(),
                                         table.column(text_column).to_pylist())}


def _need(entry: dict, key: str, episode: str):
  value = entry.get(key)
  if value is None:
    raise common.ConversionError(entry.get('_meta_file', 'meta/episodes'), episode, key,
                                 'missing in the episode metadata (meta/episodes/*.parquet); a '
                                 'v3.0 dataset records it for every episode.')
  return value


class _V3Files:
  """Data tables of a v3.0 dataset, read once per file (episodes share files)."""

  def __init__(self, root: str, info: dict):
    self.root, self.info = root, info
    self._path, self._table = None, None

  def table(self, path: str, episode: str):
    if path != self._path:
      self._table = _read_table(path, episode)
      self._path = path
    return self._table


def read_episode_v3(root: str, info: dict, entry: dict, tasks: dict, files: _V3Files) -> dict:
  import pyarrow.compute as pc
  index = int(entry['episode_index'])
  episode = f'episode_{index:06d}'
  chunk = int(_need(entry, 'data/chunk_index', episode))
  file_index = int(_need(entry, 'data/file_index', episode))
  file = os.path.join(root, _format_path(root, info, 'data_path', episode, chunk_index=chunk,
                                         file_index=file_index))
  table = files.table(file, episode)
  names = table.column_names
  start, stop = entry.get('dataset_from_index'), entry.get('dataset_to_index')
  if 'index' in names and start is not None and stop is not None:
    mask = pc.and_(pc.greater_equal(table['index'], int(start)),
                   pc.less(table['index'], int(stop)))
  elif 'episode_index' in names:
    mask = pc.equal(table['episode_index'], index)
  else:
    raise common.ConversionError(file, episode, 'episode_index', 'missing column: the rows of '
                                 'the episode cannot be found.')
  rows = table.filter(mask)
  if 'frame_index' in rows.column_names:
    rows = rows.sort_by('frame_index')
  length = entry.get('length')
  if length is not None and len(rows) != int(length):
    raise common.ConversionError(file, episode, 'dataset_from_index', f'{len(rows)} rows in the '
                                 f'data file but the episode metadata says length {length}.')
  fps = float(info.get('fps') or 0) or None

  def video(key):
    v_chunk = int(_need(entry, f'videos/{key}/chunk_index', episode))
    v_file = int(_need(entry, f'videos/{key}/file_index', episode))
    span = (float(_need(entry, f'videos/{key}/from_timestamp', episode)),
            float(_need(entry, f'videos/{key}/to_timestamp', episode)))
    path = os.path.join(root, _format_path(root, info, 'video_path', episode, video_key=key,
                                           chunk_index=v_chunk, file_index=v_file))
    return _decode_video(path, episode, key, span=span, fps=fps)

  return _raw_from_table(rows, file, episode, info, entry, tasks, video)


def iter_raw(input_path: str) -> Iterator[tuple[str, str, callable]]:
  info = load_info(input_path)
  if info.get('codebase_version') == 'v3.0':
    entries = _v3_episodes(input_path)
    tasks = _v3_tasks(input_path)
    files = _V3Files(input_path, info)
    for entry in entries:
      name = f'episode_{int(entry["episode_index"]):06d}'
      yield (os.path.join(input_path, 'data'), name,
             lambda e=entry: read_episode_v3(input_path, info, e, tasks, files))
    return
  entries = _read_jsonl(os.path.join(input_path, 'meta', 'episodes.jsonl'))
  if not entries:
    entries = [{'episode_index': i} for i in range(int(info.get('total_episodes', 0)))]
  tasks = {int(t['task_index']): t['task']
           for t in _read_jsonl(os.path.join(input_path, 'meta', 'tasks.jsonl'))}
  for entry in sorted(entries, key=lambda e: int(e['episode_index'])):
    name = f'episode_{int(entry["episode_index"]):06d}'
    yield (os.path.join(input_path, 'data'), name,
           lambda e=entry: read_episode(input_path, info, e, tasks))
