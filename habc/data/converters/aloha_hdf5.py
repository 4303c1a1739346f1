"""ALOHA-style HDF5 episodes (one ``episode_*.hdf5`` file per episode).

Layout read (and written by ``write_aloha_hdf5``, for rigs and the scripted-expert recorder)::

  /observations/qpos              f32 [T, S]      -> observation/state
  /observations/qvel              f32 [T, S']     optional; appended to the state
  /observations/privileged        f32 [T, P]      optional (habc extension: simulator object state)
  /observations/images/<camera>   uint8 [T, H, W, 3] (no group: state only), or JPEG bytes when the dataset
                                  has the attribute ``compress`` (variable-length bytes, or
                                  uint8 [T, L] rows zero-padded as ALOHA's recorder writes them)
  /action                         f32 [T, A]      the action sent at each frame
  /policy_action                  f32 [T, A]      optional (habc extension)
  /is_intervention                bool [T]        optional
  attributes: success (bool), instruction (str), task (str) -- all optional
"""

from __future__ import annotations

import glob
import os
import re
from typing import Iterator, Mapping

import numpy as np

from habc.data import images as images_lib
from habc.data.converters import common


def list_episodes(input_path: str) -> list[tuple[str, str]]:
  """(file, episode name) pairs, in natural order (episode_2 before episode_10)."""
  if os.path.isfile(input_path):
    files = [input_path]
  else:
    files = glob.glob(os.path.join(input_path, 'episode_*.hdf5'))
    files += glob.glob(os.path.join(input_path, 'episode_*.h5'))
  key = lambda f: [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', os.path.basename(f))]
  return [(f, os.path.splitext(os.path.basename(f))[0]) for f in sorted(files, key=key)]


def _decode_compressed(file, episode, field, data) -> np.ndarray:
  frames = []
  for step, row in enumerate(data):
    raw = bytes(row.tobytes() if isinstance(row, np.ndarray) else row)
    try:
      frames.append(images_lib.decode_image(raw))
    except Exception as e:  # pylint: disable=broad-except
      raise common.ConversionError(file, episode, field, f'step {step}: not a decodable JPEG '
                                   f'image ({e}).') from e
    if frames[-1].shape != frames[0].shape:
      raise common.ConversionError(file, episode, field, f'step {step} has image shape '
                                   f'{frames[-1].shape}, step 0 {frames[0].shape}: the shape '
                                   'disagrees across steps.')
  return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)


def _attr(attrs, name):
  if name not in attrs:
    return None
  value = attrs[name]
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  return value


def read_episode(file: str, episode: str) -> dict:
  """One HDF5 file -> a raw episode (see habc.data.converters.common)."""
  import h5py
  try:
    handle = h5py.File(file, 'r')
  except Exception as e:  # pylint: disable=broad-except
    raise common.ConversionError(file, episode, '<file>', f'unreadable HDF5 file ({e}).') from e
  with handle:
    def need(path):
      if path not in handle:
        raise common.ConversionError(file, episode, path, 'missing key (an ALOHA episode needs '
                                     '/observations/qpos and /action, and images under '
                                     '/observations/images/<camera>).')
      return handle[path]

    try:
      state = np.asarray(need('/observations/qpos')[()], np.float32)
      if '/observations/qvel' in handle:
        qvel = np.asarray(handle['/observations/qvel'][()], np.float32)
        if qvel.shape[0] != state.shape[0]:
          raise common.ConversionError(file, episode, '/observations/qvel', f'{qvel.shape[0]} '
                                       f'steps but qpos has {state.shape[0]}: the shape '
                                       'disagrees across steps.')
        state = np.concatenate([state, qvel], axis=-1)
      images = {}
      # No image group: a state-only recording.
      group = handle['/observations/images'] if '/observations/images' in handle else {}
      for cam in group.keys():
        data = group[cam]
        if data.attrs.get('compress', False):
          images[cam] = _decode_compressed(file, episode, f'/observations/images/{cam}', data[()])
        else:
          images[cam] = np.asarray(data[()])
      raw = {'images': images, 'state': state, 'action': np.asarray(need('/action')[()])}
      for key, path in (('privileged', '/observations/privileged'),
                        ('policy_action', '/policy_action'), ('is_intervention', '/is_intervention')):
        if path in handle:
          raw[key] = np.asarray(handle[path][()])
      for key in ('success', 'instruction', 'task'):
        raw[key] = _attr(handle.attrs, key)
      if raw['instruction'] is None:
        raw['instruction'] = _attr(handle.attrs, 'language_instruction')
    except common.ConversionError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise common.ConversionError(file, episode, '<file>', f'unreadable data ({e}).') from e
  if raw['success'] is not None:
    raw['success'] = bool(raw['success'])
  return raw


def iter_raw(input_path: str) -> Iterator[tuple[str, str, callable]]:
  for file, episode in list_episodes(input_path):
    yield file, episode, lambda f=file, e=episode: read_episode(f, e)


def write_aloha_hdf5(path: str, *, qpos: np.ndarray, action: np.ndarray,
                     images: Mapping[str, np.ndarray], qvel: np.ndarray | None = None,
                     privileged: np.ndarray | None = None,
                     policy_action: np.ndarray | None = None,
                     is_intervention: np.ndarray | None = None, success: bool | None = None,
                     instruction: str | None = None, task: str | None = None,
                     compress: bool = False) -> str:
  """Records one episode as an ALOHA-style HDF5 file (atomically: temp file, then rename).

  Args:
    path: the file (name it ``episode_<i>.hdf5`` for the converter to find it).
    qpos: f32 [T, S]. action: f32 [T, A], the action sent at each of the T frames (record the
      final frame with a zero action: the converter drops the last action).
    images: camera -> uint8 [T, H, W, 3].
    qvel, privileged, policy_action, is_intervention: optional per-step arrays.
    success, instruction, task: optional attributes.
    compress: store images as JPEG bytes (attribute ``compress``), as ALOHA's recorder can.

  Returns:
    The path written.
  """
  import h5py
  tmp = f'{path}.tmp-{os.getpid()}'
  with h5py.File(tmp, 'w') as f:
    obs = f.create_group('observations')
    obs.create_dataset('qpos', data=np.asarray(qpos, np.float32))
    if qvel is not None:
      obs.create_dataset('qvel', data=np.asarray(qvel, np.float32))
    if privileged is not None:
      obs.create_dataset('privileged', data=np.asarray(privileged, np.float32))
    group = obs.create_group('images')
    for cam, frames in images.items():
      if compress:
        encoded = [np.frombuffer(images_lib.encode_image(im, 'jpeg', 90), np.uint8)
                   for im in frames]
        data = group.create_dataset(cam, data=np.array(encoded, dtype=object),
                                    dtype=h5py.vlen_dtype(np.uint8))
        data.attrs['compress'] = True
      else:
        group.create_dataset(cam, data=np.asarray(frames, np.uint8), chunks=True)
    f.create_dataset('action', data=np.asarray(action, np.float32))
    if policy_action is not None:
      f.create_dataset('policy_action', data=np.asarray(policy_action, np.float32))
    if is_intervention is not None:
      f.create_dataset('is_intervention', data=np.asarray(is_intervention, bool))
    for key, value in (('success', success), ('instruction', instruction), ('task', task)):
      if value is not None:
        f.attrs[key] = value
  os.replace(tmp, path)
  return path
