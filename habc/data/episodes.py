"""Random access to the episodes of an RLDS dataset: ``EpisodeSource[i]`` is one episode (the
in-memory dict of docs/interfaces.md section 2), read from the dataset's array_record shards and
parsed with numpy (no TensorFlow).

Below both the reader (habc.data.reader: windows and batches) and the statistics
(habc.data.stats), which read datasets through it.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Mapping, Sequence

import numpy as np
# Imported here, not lazily in reader threads: two grain threads importing tfds at once deadlock
# on its lazy-import locks (seen in worker processes). Neither import loads TensorFlow.
from array_record.python import array_record_data_source
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_parser

from habc.data import images as images_lib
from habc.data import schema
from habc.data import writer as writer_lib


class EpisodeSource:
  """Random access to the episodes of one dataset directory (a snapshot of its committed shards).

  Picklable (grain worker processes reopen the files). ``source[i]`` is the in-memory episode of
  docs/interfaces.md section 2, with images decoded for ``cameras`` only (None: all cameras);
  with ``decode=False`` the images stay encoded (object arrays of bytes [T]).
  """

  def __init__(self, path: str, cameras: Sequence[str] | None = None, decode: bool = True):
    self.path = os.path.abspath(path)
    info_path = os.path.join(self.path, 'dataset_info.json')
    if not os.path.exists(info_path):
      raise FileNotFoundError(f'No RLDS dataset at {self.path} (no dataset_info.json).')
    try:
      with open(info_path) as f:
        info = json.load(f)
      if info.get('fileFormat') != 'array_record':
        raise ValueError(f'file format {info.get("fileFormat")!r}; the reader needs array_record '
                         '(the working format; TFRecord is for export only).')
      self.name = info['name']
      lengths, _ = writer_lib.existing_shards(info)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
      raise ValueError(f'Broken RLDS dataset {self.path}: cannot read {info_path} '
                       f'({type(e).__name__}: {e}). Rewrite or remove the dataset.') from e
    self.files = [os.path.join(self.path, writer_lib.shard_name(self.name, i))
                  for i, n in enumerate(lengths) if n]
    self._shard_ends = np.cumsum([int(n) for n in lengths if n])
    self._num_episodes = int(sum(lengths))
    self.spec = schema.spec_from_features(self._features())
    self.cameras = tuple(self.spec.camera_names if cameras is None else cameras)
    missing = set(self.cameras) - set(self.spec.camera_names)
    if missing:
      raise ValueError(f'{self.path}: cameras {sorted(missing)} are not in the dataset (it has '
                       f'{self.spec.camera_names}).')
    self.decode = decode
    self._lock = threading.Lock()
    self._source = None  # (array_record data source, tf.Example numpy parser), opened lazily.

  def _features(self):
    return tfds.features.FeatureConnector.from_config(self.path)

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None
    del state['_lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _open(self):
    opened = self._source
    if opened is None:
      with self._lock:  # Reader threads race here on first use.
        if self._source is None:
          parser = example_parser.ExampleParserNp(self._features().get_serialized_info())
          try:
            source = (array_record_data_source.ArrayRecordDataSource(self.files)
                      if self.files else [])
          except Exception as e:  # pylint: disable=broad-except
            raise ValueError(f'Broken RLDS dataset {self.path}: cannot open its shards '
                             f'{[os.path.basename(p) for p in self.files]} '
                             f'({type(e).__name__}: {e}).') from e
          self._source = (source, parser)
        opened = self._source
    return opened

  def __len__(self) -> int:
    return self._num_episodes

  def raw(self, index: int) -> bytes:
    """The serialized episode (a tf.Example as tfds stores it)."""
    if not 0 <= index < len(self):
      raise IndexError(f'Episode {index} out of range: {self.path} holds {len(self)} episodes.')
    source = self._open()[0]
    try:
      return source[index]
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{self._where(index)}: cannot read the record '
                       f'({type(e).__name__}: {e}).') from e

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    parser = self._open()[1]
    record = self.raw(index)
    try:
      return parse_episode(parser.parse_example(record), self.cameras, decode=self.decode)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{self._where(index)}: cannot parse the episode '
                       f'({type(e).__name__}: {e}).') from e

  def _where(self, index: int) -> str:
    """'Broken RLDS dataset <path>, shard <file>, episode <index>' for error messages."""
    shard = int(np.searchsorted(self._shard_ends, index, side='right'))
    name = os.path.basename(self.files[shard]) if shard < len(self.files) else '?'
    return f'Broken RLDS dataset {self.path}, shard {name}, episode {index}'


def _text(value) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def parse_episode(parsed: Mapping[str, Any], cameras: Sequence[str], decode: bool = True) -> dict:
  """tfds-parsed flat arrays -> the in-memory episode dict (images of ``cameras`` decoded, or left
  encoded with ``decode=False``)."""
  steps = parsed['steps']
  obs = {cam: images_lib.decode_images(steps['observation'][cam]) if decode
         else steps['observation'][cam] for cam in cameras}
  for key in ('state', 'privileged'):
    if key in steps['observation']:
      obs[key] = np.asarray(steps['observation'][key], np.float32)
  out = {key: np.asarray(steps[key]) for key in schema.STEP_FIELDS
         if key not in ('observation', 'language_instruction')}
  out['observation'] = obs
  instructions = steps['language_instruction']
  out['language_instruction'] = _text(instructions[0]) if len(instructions) else ''
  meta = parsed['episode_metadata']
  metadata = {k: _text(meta[k]) for k in ('episode_id', 'task', 'source', 'operator')}
  metadata['success'] = bool(meta['success'])
  metadata['policy_version'] = int(meta['policy_version'])
  return {'steps': out, 'episode_metadata': metadata}
