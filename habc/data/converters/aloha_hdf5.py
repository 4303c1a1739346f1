"""ALOHA-style HDF5 episodes (one ``episode_*.hdf5`` file per episode).

Layout read, as the public ALOHA / Mobile ALOHA / ACT recorders (``record_episodes.py``) write it::

  attributes: compress (bool: images are JPEG rows), sim (bool)
  /observations/qpos              f32 [T, S]      -> observation/state
  /observations/qvel              f32 [T, S]      optional; appended to the state (``state``)
  /observations/effort            f32 [T, S]      optional; not read
  /observations/images/<camera>   uint8 [T, H, W, 3] raw RGB frames, or, with compress, JPEG
                                  rows zero-padded to one length, uint8 [T, L]
  /compress_len                   [num_cameras, T] optional; the JPEG lengths (not needed)
  /action                         f32 [T, A]      the action sent at each frame
  /base_action                    f32 [T, 2]      Mobile ALOHA's base velocities: appended to the
                                                  action or left out, as ``base_action`` says
                                                  (without it, a file that has one is refused)

The recorders JPEG-encode the camera's RGB arrays with OpenCV (``cv2.imencode``), which takes
them for BGR: a standard JPEG decoder then swaps red and blue. Their rows are decoded so that the
channel order round-trips (``jpeg_channels='rgb'``, the default); ``'bgr'`` is for files whose
arrays were BGR when encoded (frames straight from ``cv2.VideoCapture``), i.e. standard JPEGs.

habc extensions: ``/observations/privileged`` f32 [T, P] (simulator object state),
``/policy_action`` f32 [T, A], ``/is_intervention`` bool [T], attributes ``success``,
``instruction``, ``task``. Files written by older habc versions marked JPEG images with a
``compress`` attribute on the image dataset itself (variable-length rows, standard JPEGs); they
read as before.

``write_aloha_hdf5(compress=True)`` writes the recorders' layout (root attribute, padded rows of
``cv2.imencode`` applied to the RGB arrays, ``/compress_len``).
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


STATE_CHOICES = ('auto', 'qpos', 'qpos+qvel')
BASE_ACTION_CHOICES = ('', 'append', 'drop')
JPEG_CHANNEL_CHOICES = ('rgb', 'bgr')


def _decode_compressed(file, episode, field, data, opencv_rgb: bool = False) -> np.ndarray:
  """JPEG rows -> uint8 [T, H, W, 3]. ``opencv_rgb``: the rows are ``cv2.imencode`` of RGB
  arrays (the ALOHA recorders), so the standard decoding's channels are reversed back."""
  frames = []
  for step, row in enumerate(data):
    raw = bytes(row.tobytes() if isinstance(row, np.ndarray) else row)
    try:
      image = images_lib.decode_image(raw)
      frames.append(np.ascontiguousarray(image[..., ::-1]) if opencv_rgb else image)
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


def read_episode(file: str, episode: str, *, state: str = 'auto', base_action: str = '',
                 jpeg_channels: str = 'rgb') -> dict:
  """One HDF5 file -> a raw episode (see habc.data.converters.common).

  Args:
    state: 'auto' (qpos, then qvel when the file has it), 'qpos', or 'qpos+qvel' (qvel
      required).
    base_action: what to do with Mobile ALOHA's /base_action: 'append' (to the action), 'drop',
      or '' (a file that has one is refused, naming both choices).
    jpeg_channels: the channel order of the arrays the recorder JPEG-encoded ('rgb': the ALOHA
      recorders; 'bgr': standard JPEGs). Files marked the older habc way are standard JPEGs.
  """
  if state not in STATE_CHOICES:
    raise ValueError(f'state must be one of {STATE_CHOICES}, got {state!r}.')
  if base_action not in BASE_ACTION_CHOICES:
    raise ValueError(f'base_action must be one of {BASE_ACTION_CHOICES}, got {base_action!r}.')
  if jpeg_channels not in JPEG_CHANNEL_CHOICES:
    raise ValueError(f'jpeg_channels must be one of {JPEG_CHANNEL_CHOICES}, got '
                     f'{jpeg_channels!r}.')
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
      qpos = np.asarray(need('/observations/qpos')[()], np.float32)
      if state == 'qpos+qvel' and '/observations/qvel' not in handle:
        raise common.ConversionError(file, episode, '/observations/qvel', 'missing key, and the '
                                     'state was asked to be qpos+qvel; pass --state=qpos to '
                                     'read qpos alone.')
      if '/observations/qvel' in handle and state != 'qpos':
        qvel = np.asarray(handle['/observations/qvel'][()], np.float32)
        if qvel.shape[0] != qpos.shape[0]:
          raise common.ConversionError(file, episode, '/observations/qvel', f'{qvel.shape[0]} '
                                       f'steps but qpos has {qpos.shape[0]}: the shape '
                                       'disagrees across steps.')
        qpos = np.concatenate([qpos, qvel], axis=-1)
      images = {}
      # No image group: a state-only recording.
      group = handle['/observations/images'] if '/observations/images' in handle else {}
      recorder_jpeg = bool(_attr(handle.attrs, 'compress'))
      for cam in group.keys():
        data = group[cam]
        field = f'/observations/images/{cam}'
        if data.attrs.get('compress', False):  # Older habc files: standard JPEG rows.
          images[cam] = _decode_compressed(file, episode, field, data[()])
        elif recorder_jpeg and (data.ndim == 1 or data.ndim == 2):
          # The recorders' JPEG rows (a file flagged compress may still hold raw [T, H, W, 3]).
          images[cam] = _decode_compressed(file, episode, field, data[()],
                                           opencv_rgb=jpeg_channels == 'rgb')
        else:
          images[cam] = np.asarray(data[()])
      action = np.asarray(need('/action')[()])
      if '/base_action' in handle:
        if not base_action:
          raise common.ConversionError(
              file, episode, '/base_action', 'the file has a mobile base action (Mobile ALOHA); '
              'pass --base_action=append to append it to the action (as Mobile ALOHA trains), '
              'or --base_action=drop to leave it out.')
        if base_action == 'append':
          base = np.asarray(handle['/base_action'][()])
          if base.ndim != 2 or base.shape[0] != action.shape[0] or action.ndim != 2:
            raise common.ConversionError(file, episode, '/base_action', f'shape {base.shape} '
                                         f'does not match the action {action.shape}: the shape '
                                         'disagrees across steps.')
          action = np.concatenate([action.astype(np.float32), base.astype(np.float32)], -1)
      raw = {'images': images, 'state': qpos, 'action': action}
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


def iter_raw(input_path: str, options: common.Options | None = None
             ) -> Iterator[tuple[str, str, callable]]:
  options = options or common.Options()
  kwargs = dict(state=options.state, base_action=options.base_action,
                jpeg_channels=options.jpeg_channels)
  return common.iter_listed(input_path, list_episodes, read_episode, **kwargs)


def write_aloha_hdf5(path: str, *, qpos: np.ndarray, action: np.ndarray,
                     images: Mapping[str, np.ndarray], qvel: np.ndarray | None = None,
                     privileged: np.ndarray | None = None,
                     policy_action: np.ndarray | None = None,
                     is_intervention: np.ndarray | None = None, success: bool | None = None,
                     instruction: str | None = None, task: str | None = None,
                     compress: bool = False, base_action: np.ndarray | None = None) -> str:
  """Records one episode as an ALOHA-style HDF5 file (atomically: temp file, then rename).

  Args:
    path: the file (name it ``episode_<i>.hdf5`` for the converter to find it).
    qpos: f32 [T, S]. action: f32 [T, A], the action sent at each of the T frames (record the
      final frame with a zero action: the converter drops the last action).
    images: camera -> uint8 [T, H, W, 3].
    qvel, privileged, policy_action, is_intervention: optional per-step arrays.
    success, instruction, task: optional attributes.
    compress: store images as JPEG rows in the ALOHA recorders' layout (root attribute
      ``compress``, ``cv2.imencode`` of the RGB arrays, zero-padded rows, ``/compress_len``).
    base_action: optional f32 [T, 2], Mobile ALOHA's base velocities.

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
    lengths = []
    for cam, frames in images.items():
      if compress:
        # As the recorders do: cv2.imencode of the RGB arrays (encode_image reverses the
        # channels before cv2.imencode, so hand it BGR), rows zero-padded to one length.
        encoded = [images_lib.encode_image(np.asarray(im, np.uint8)[..., ::-1], 'jpeg', 90)
                   for im in frames]
        lengths.append([len(e) for e in encoded])
        rows = np.zeros((len(encoded), max([len(e) for e in encoded], default=0)), np.uint8)
        for i, e in enumerate(encoded):
          rows[i, :len(e)] = np.frombuffer(e, np.uint8)
        group.create_dataset(cam, data=rows, chunks=(1, max(rows.shape[1], 1)) if len(rows)
                             else None)
      else:
        group.create_dataset(cam, data=np.asarray(frames, np.uint8), chunks=True)
    f.attrs['compress'] = bool(compress)
    if compress and lengths:
      f.create_dataset('compress_len', data=np.asarray(lengths, np.float32))
    f.create_dataset('action', data=np.asarray(action, np.float32))
    if base_action is not None:
      f.create_dataset('base_action', data=np.asarray(base_action, np.float32))
    if policy_action is not None:
      f.create_dataset('policy_action', data=np.asarray(policy_action, np.float32))
    if is_intervention is not None:
      f.create_dataset('is_intervention', data=np.asarray(is_intervention, bool))
    for key, value in (('success', success), ('instruction', instruction), ('task', task)):
      if value is not None:
        f.attrs[key] = value
  os.replace(tmp, path)
  return path
