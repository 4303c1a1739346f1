"""Appends episodes to an RLDS dataset (tfds array_record), atomically, without TensorFlow.

Layout of a dataset directory (what ``tfds.builder_from_directory`` reads):
  dataset_info.json, features.json    tfds metadata; ``dataset_info.json`` lists the shards
  <name>-train.array_record-00000     one shard per flush (one episode by default)
  .habc_writer.lock                   held (fcntl) by the one process writing
  .tmp/                               shards being written

Atomicity: a shard is written under .tmp/, fsynced and renamed into place; only then is
``dataset_info.json`` replaced (temp file + ``os.replace``) with the new shard length. tfds reads
exactly the shards that ``dataset_info.json`` lists, so a process killed at any point leaves a
dataset that loads with whole episodes only. A shard renamed but never listed (killed between the
two steps) is removed when the next writer opens the dataset.

A dataset whose ``dataset_info.json`` is missing or unreadable (deleted by hand, copied without
it) proves nothing about its shards, so none is deleted: the next writer rebuilds the file from
the shards themselves (each was fsynced before its rename, so each holds whole episodes) and
``features.json``, and says so; without ``features.json`` it stops with ``DatasetInfoError``.

No TensorFlow: images are encoded here (``habc.data.images``) and handed to tfds as bytes, so tfds
never needs TF to encode them; everything else is numpy. The rollout processes render with MuJoCo
and must not load TF.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import shutil
from typing import Any, Iterable, Mapping

import numpy as np

from habc.data import images as images_lib
from habc.data import schema

SPLIT = 'train'
DEFAULT_NAME = 'habc_episodes'
LOCK_FILE = '.habc_writer.lock'
TMP_DIR = '.tmp'
VERSION = '1.0.0'


class DatasetLockedError(RuntimeError):
  """Another process is writing the dataset."""


class DatasetInfoError(ValueError):
  """A dataset's metadata is missing or broken and cannot be rebuilt (nothing was deleted)."""


def shard_name(name: str, index: int) -> str:
  return f'{name}-{SPLIT}.array_record-{index:05d}'


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def read_info_json(path: str) -> dict | None:
  """The dataset's dataset_info.json as a dict, or None when there is none yet."""
  info_path = os.path.join(path, 'dataset_info.json')
  if not os.path.exists(info_path):
    return None
  with open(info_path) as f:
    return json.load(f)


def shard_files(path: str) -> dict[str, list[int]]:
  """Shard indices on disk per dataset name: {name: sorted indices} (any name)."""
  pattern = re.compile(r'^(.+)-' + re.escape(SPLIT) + r'\.array_record-(\d+)$')
  found: dict[str, list[int]] = {}
  for fname in os.listdir(path) if os.path.isdir(path) else ():
    match = pattern.match(fname)
    if match:
      found.setdefault(match.group(1), []).append(int(match.group(2)))
  return {name: sorted(indices) for name, indices in found.items()}


def needs_repair(path: str) -> bool:
  """True when ``path`` holds shards but no readable dataset_info.json (see ``repair``)."""
  if not shard_files(path):
    return False
  try:
    return read_info_json(path) is None
  except ValueError:
    return True


def repair(path: str) -> bool:
  """Rebuilds a missing or unreadable dataset_info.json from the shards (nothing is deleted).

  Returns:
    True if the file was rebuilt, False if the dataset needed nothing.
  Raises:
    DatasetInfoError: the shards cannot be read back (the message says what to do).
    DatasetLockedError: another process is writing the dataset.
  """
  if not needs_repair(path):
    return False
  EpisodeWriter(path).close()
  return True


def existing_shards(info_json: Mapping[str, Any]) -> tuple[list[int], int]:
  """Shard lengths and byte count of the train split recorded in dataset_info.json."""
  for split in info_json.get('splits', []):
    if split.get('name') == SPLIT:
      return [int(n) for n in split.get('shardLengths', [])], int(split.get('numBytes', 0))
  return [], 0


def encode_episode(episode: Mapping[str, Any], spec: schema.EpisodeSpec) -> dict:
  """A validated episode -> the nested dict that tfds ``features.encode_example`` takes.

  Images become encoded bytes (file objects, which tfds stores as they are).
  """
  steps = episode['steps']
  num_steps = steps['action'].shape[0]
  obs = {'state': steps['observation']['state']}
  if spec.privileged_dim:
    obs['privileged'] = steps['observation']['privileged']
  for cam in spec.camera_names:
    obs[cam] = [io.BytesIO(images_lib.encode_image(im, spec.image_format))
                for im in steps['observation'][cam]]
  out = {key: steps[key] for key in schema.STEP_FIELDS if key not in ('observation',
                                                                      'language_instruction')}
  out['observation'] = obs
  out['language_instruction'] = [steps['language_instruction']] * num_steps
  return {'steps': out, 'episode_metadata': dict(episode['episode_metadata'])}


class EpisodeWriter:
  """Appends episodes to a dataset directory; one writer process per dataset.

  Usage::

    with EpisodeWriter(path, spec) as writer:
      writer.append(episode)   # written (atomically) once a shard's worth is buffered

  Args:
    path: the dataset directory (created if absent).
    spec: the episode spec; required for a new dataset, checked against an existing one
      (None: take the existing dataset's).
    name: the tfds dataset name (file prefix).
    episodes_per_shard: episodes buffered per shard. 1 (default) commits each episode as soon as
      it is appended; larger values make fewer files for bulk conversion.
    description: stored in dataset_info.json.
  """

  def __init__(self, path: str, spec: schema.EpisodeSpec | None = None, *,
               name: str = DEFAULT_NAME, episodes_per_shard: int = 1, description: str = ''):
    self.path = os.path.abspath(path)
    os.makedirs(self.path, exist_ok=True)
    self._lock = self._acquire_lock()
    try:
      self._open(spec, name, description)
    except BaseException:
      self._release_lock()
      raise
    self.episodes_per_shard = max(1, int(episodes_per_shard))
    self._buffer: list[bytes] = []
    self._closed = False
    self.num_appended = 0

  # -- set-up ----------------------------------------------------------------------------------
  def _acquire_lock(self):
    lock = open(os.path.join(self.path, LOCK_FILE), 'a+')
    try:
      fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      holder = lock.read().strip() or 'unknown'
      lock.close()
      raise DatasetLockedError(
          f'Dataset {self.path} is being written by another process ({holder}). One writer per '
          'dataset: wait for it to finish, or write to another directory.') from None
    lock.seek(0)
    lock.truncate()
    lock.write(f'pid {os.getpid()}\n')
    lock.flush()
    return lock

  def _release_lock(self):
    if self._lock is not None:
      fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
      self._lock.close()
      self._lock = None

  def _open(self, spec, name, description):
    from tensorflow_datasets.core import example_serializer
    try:
      info_json = read_info_json(self.path)
    except ValueError as e:  # Cut or garbled JSON.
      logging.warning('%s/dataset_info.json is unreadable (%s); rebuilding it from the shards.',
                      self.path, e)
      info_json = None
    rebuilt = False
    if info_json is None and shard_files(self.path):
      info_json, rebuilt = self._rebuild_info(), True
    if info_json is None:
      if spec is None and os.path.exists(os.path.join(self.path, 'features.json')):
        spec = schema.spec_from_features(self._load_features())  # Killed in its first commit.
      if spec is None:
        raise ValueError(f'{self.path} holds no dataset yet; pass the episode spec to create one.')
      self.name, self.description = name, description
      self.shard_lengths, self.num_bytes = [], 0
    else:
      self.name = info_json['name']
      self.description = info_json.get('description', description)
      if info_json.get('fileFormat', 'array_record') != 'array_record':
        raise ValueError(f'{self.path} is not an array_record dataset; the writer appends to '
                         'array_record datasets only.')
      existing = schema.spec_from_features(self._load_features())
      if spec is not None and spec != existing:
        raise ValueError(f'The episodes spec {spec} disagrees with the dataset in {self.path} '
                         f'({existing}). Write to a new directory, or convert to the same cameras, '
                         'image sizes and state/action sizes.')
      spec = existing
      self.shard_lengths, self.num_bytes = existing_shards(info_json)
    self.spec = spec
    self.features = schema.features(spec)
    self._serializer = example_serializer.ExampleSerializer(self.features.get_serialized_info())
    self._remove_orphans()
    if info_json is None:
      self._commit_info(first=True)
    elif rebuilt:
      self._commit_info()

  def _rebuild_info(self) -> dict:
    """dataset_info.json's content rebuilt from the shards on disk and features.json."""
    from array_record.python import array_record_module
    found = shard_files(self.path)
    total = sum(len(v) for v in found.values())
    keep = ('Nothing was deleted. Put back the dataset\'s dataset_info.json and features.json '
            '(from a copy of the dataset), or move the shards to another directory.')
    if len(found) > 1:
      raise DatasetInfoError(f'{self.path} has no dataset_info.json and holds shards of several '
                             f'datasets ({", ".join(sorted(found))}). {keep}')
    if not os.path.exists(os.path.join(self.path, 'features.json')):
      raise DatasetInfoError(f'{self.path} holds {total} shards but neither dataset_info.json '
                             f'nor features.json, so what the shards hold is unknown. {keep}')
    (name, indices), = found.items()
    if indices != list(range(len(indices))):
      missing = sorted(set(range(indices[-1] + 1)) - set(indices))
      raise DatasetInfoError(f'{self.path} has no dataset_info.json and its shards are not '
                             f'numbered 0..{indices[-1]} (missing: {missing[:10]}). {keep}')
    lengths, num_bytes = [], 0
    for index in indices:
      shard = os.path.join(self.path, shard_name(name, index))
      try:
        reader = array_record_module.ArrayRecordReader(shard)
        try:
          lengths.append(int(reader.num_records()))
        finally:
          reader.close()
      except Exception as e:  # pylint: disable=broad-except
        raise DatasetInfoError(f'{self.path} has no dataset_info.json and its shard {shard} is '
                               f'unreadable ({e}). {keep}') from e
      num_bytes += os.path.getsize(shard)
    logging.warning('%s had no readable dataset_info.json; rebuilt it from %d shards (%d '
                    'episodes) and features.json.', self.path, len(lengths), sum(lengths))
    return {'name': name, 'fileFormat': 'array_record',
            'splits': [{'name': SPLIT, 'shardLengths': [str(n) for n in lengths],
                        'numBytes': str(num_bytes)}]}

  def _load_features(self):
    import tensorflow_datasets as tfds
    return tfds.features.FeatureConnector.from_config(self.path)

  def _remove_orphans(self):
    tmp = os.path.join(self.path, TMP_DIR)
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
    pattern = re.compile(re.escape(f'{self.name}-{SPLIT}.array_record-') + r'(\d+)$')
    for fname in os.listdir(self.path):
      match = pattern.match(fname)
      if match and int(match.group(1)) >= len(self.shard_lengths):
        logging.warning('Removing %s: written but never committed (a writer was killed).', fname)
        os.remove(os.path.join(self.path, fname))

  # -- metadata ----------------------------------------------------------------------------------
  def _dataset_info(self):
    from tensorflow_datasets.core import dataset_info, file_adapters, naming
    from tensorflow_datasets.core import splits as splits_lib
    info = dataset_info.DatasetInfo(
        builder=dataset_info.DatasetIdentity(name=self.name, version=VERSION, data_dir=self.path,
                                             module_name=''),
        description=self.description or 'habc episodes (RLDS).',
        features=self.features)
    info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
    template = naming.ShardedFileTemplate(
        data_dir=self.path, dataset_name=self.name, split=SPLIT, filetype_suffix='array_record',
        template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}')
    info.set_splits(splits_lib.SplitDict([splits_lib.SplitInfo(
        name=SPLIT, shard_lengths=list(self.shard_lengths), num_bytes=self.num_bytes,
        filename_template=template)]))
    return info

  def _commit_info(self, first: bool = False) -> None:
    """Replaces dataset_info.json (and on creation features.json) atomically."""
    tmp = os.path.join(self.path, TMP_DIR, f'info-{os.getpid()}')
    os.makedirs(tmp, exist_ok=True)
    info = self._dataset_info()
    if first:
      info.write_to_directory(tmp)
    else:
      info.write_dataset_info_json(tmp)
    # features.json first: dataset_info.json is what makes the dataset exist.
    names = sorted(os.listdir(tmp), key=lambda n: n == 'dataset_info.json')
    for fname in names:
      with open(os.path.join(tmp, fname), 'rb+') as f:
        os.fsync(f.fileno())
      os.replace(os.path.join(tmp, fname), os.path.join(self.path, fname))
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(self.path)

  # -- writing -----------------------------------------------------------------------------------
  def serialize(self, episode: Mapping[str, Any]) -> bytes:
    """Validates and serializes one episode (a tf.Example, as tfds stores it)."""
    episode = schema.validate_episode(episode, self.spec)
    return self._serializer.serialize_example(
        self.features.encode_example(encode_episode(episode, self.spec)))

  def append(self, episode: Mapping[str, Any]) -> None:
    """Validates an episode and adds it; committed once ``episodes_per_shard`` are buffered.

    Raises:
      schema.EpisodeError: the episode does not match the spec (nothing is written).
    """
    if self._closed:
      raise RuntimeError(f'The writer of {self.path} is closed.')
    self._buffer.append(self.serialize(episode))
    self.num_appended += 1
    if len(self._buffer) >= self.episodes_per_shard:
      self.flush()

  def flush(self) -> None:
    """Commits the buffered episodes as one new shard (no-op when none are buffered)."""
    if not self._buffer:
      return
    from array_record.python import array_record_module
    index = len(self.shard_lengths)
    tmp_dir = os.path.join(self.path, TMP_DIR)
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, f'shard-{os.getpid()}-{index:05d}')
    final = os.path.join(self.path, shard_name(self.name, index))
    try:
      _write_shard(array_record_module, tmp, self._buffer)
      os.replace(tmp, final)
    except BaseException:
      # Not committed (a full disk, a kill): the buffered episodes are dropped, not retried by
      # close(), and no partial shard is left behind.
      self._buffer = []
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    self.shard_lengths.append(len(self._buffer))
    self.num_bytes += sum(len(b) for b in self._buffer)
    self._buffer = []
    self._commit_info()

  def close(self) -> None:
    """Commits what is buffered and releases the lock."""
    if self._closed:
      return
    try:
      self.flush()
    finally:
      self._closed = True
      shutil.rmtree(os.path.join(self.path, TMP_DIR), ignore_errors=True)
      self._release_lock()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  @property
  def num_episodes(self) -> int:
    """Episodes committed to disk."""
    return int(sum(self.shard_lengths))


def _write_shard(array_record_module, path: str, records: Iterable[bytes]) -> None:
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for record in records:
    writer.write(record)
  writer.close()
  with open(path, 'rb+') as f:
    os.fsync(f.fileno())


def write_episodes(path: str, episodes: Iterable[Mapping[str, Any]],
                   spec: schema.EpisodeSpec | None = None, **kwargs) -> int:
  """Appends episodes to a dataset (created if absent); returns the dataset's episode count."""
  episodes = iter(episodes)
  if spec is None and not os.path.exists(os.path.join(path, 'features.json')):
    first = next(episodes)
    spec = schema.spec_of_episode(first)
    episodes = _chain([first], episodes)
  with EpisodeWriter(path, spec, **kwargs) as writer:
    for episode in episodes:
      writer.append(episode)
  return writer.num_episodes


def _chain(head, tail):
  yield from head
  yield from tail


def num_episodes(path: str) -> int:
  """Episodes committed in a dataset directory (0 when there is none or its info is unreadable)."""
  try:
    info = read_info_json(path)
  except ValueError:
    return 0
  return sum(existing_shards(info)[0]) if info else 0
