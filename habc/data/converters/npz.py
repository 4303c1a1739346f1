"""Plain npz episodes: one ``.npz`` file per episode, arrays named by this mapping.

  state (or qpos)       f32 [T, S]            required
  action                f32 [T, A]            required: the action sent at each frame
  image_<camera>        uint8 [T, H, W, 3]    one per camera (e.g. image_top)
  privileged            f32 [T, P]            optional
  policy_action         f32 [T, A]            optional
  is_intervention       bool [T]              optional
  success               bool scalar           optional
  instruction, task     str scalar            optional
"""

from __future__ import annotations

import glob
import os
import re
import zipfile
from typing import Iterator

import numpy as np

from habc.data.converters import common

IMAGE_PREFIX = 'image_'


def list_episodes(input_path: str) -> list[tuple[str, str]]:
  files = [input_path] if os.path.isfile(input_path) else glob.glob(os.path.join(input_path, '*.npz'))
  key = lambda f: [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', os.path.basename(f))]
  return [(f, os.path.splitext(os.path.basename(f))[0]) for f in sorted(files, key=key)]


def _scalar(value):
  value = np.asarray(value)
  if value.shape != ():
    return None
  value = value.item()
  return value.decode('utf-8') if isinstance(value, bytes) else value


def read_episode(file: str, episode: str) -> dict:
  try:
    with np.load(file, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise common.ConversionError(file, episode, '<file>', f'unreadable npz file ({e}).') from e
  state_key = 'state' if 'state' in arrays else 'qpos'
  for key in (state_key, 'action'):
    if key not in arrays:
      raise common.ConversionError(file, episode, key, 'missing key (an npz episode needs state '
                                   'or qpos, action and image_<camera> arrays).')
  raw = {'state': arrays[state_key], 'action': arrays['action'],
         'images': {k[len(IMAGE_PREFIX):]: v for k, v in arrays.items()
                    if k.startswith(IMAGE_PREFIX)}}
  for key in ('privileged', 'policy_action', 'is_intervention'):
    raw[key] = arrays.get(key)
  for key in ('success', 'instruction', 'task'):
    raw[key] = _scalar(arrays[key]) if key in arrays else None
  if raw['success'] is not None:
    raw['success'] = bool(raw['success'])
  return raw


def iter_raw(input_path: str) -> Iterator[tuple[str, str, callable]]:
  return common.iter_listed(input_path, list_episodes, read_episode)
