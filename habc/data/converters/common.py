"""What every teleop converter shares: options, raw episode -> RLDS episode, errors, summary.

A format module turns one recorded episode into a *raw episode*: a dict of per-step arrays with
one action per recorded observation (how rigs record: the action sent at each frame)::

  {'images': {camera: uint8 [T, H, W, 3]}, 'state': f32 [T, S], 'action': f32 [T, A],
   optional: 'privileged' f32 [T, P], 'policy_action' f32 [T, A], 'is_intervention' bool [T],
   'success' bool, 'instruction' str, 'task' str}

``build_episode`` maps it onto the RLDS step convention (habc.data.schema): the last recorded
frame becomes the final observation and its action is dropped (a recorder that wants no loss
records the final frame with a zero action).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from habc.data import images as images_lib
from habc.data import schema


class ConversionError(ValueError):
  """Bad input; the message names the file, the episode and the field, and what to do."""

  def __init__(self, file: str, episode: str, field: str, problem: str):
    self.file, self.episode, self.field, self.problem = file, episode, field, problem
    super().__init__(f'{file}: episode {episode!r}, field {field!r}: {problem}')


@dataclasses.dataclass(frozen=True)
class Options:
  """Conversion options (the flags of data/convert_teleop.py).

  task, instruction: override what the files say (needed when they say nothing).
  resize: (H, W) for every camera, or None to keep the recorded size.
  success: the outcome of episodes whose file records none (None: such a file is an error).
  cameras: ((recorded name, stored name), ...) to choose and rename cameras; None keeps all.
  source, operator, policy_version: episode metadata (teleop recordings are demonstrations).
  image_format: 'jpeg' (default, quality 95) or 'png' (lossless) storage.
  state, base_action, jpeg_channels: ALOHA HDF5 only (see ``aloha_hdf5.read_episode``): which
    arrays make the state ('auto', 'qpos', 'qpos+qvel'), Mobile ALOHA's /base_action ('append',
    'drop'; '' refuses a file that has one), the channel order the recorder JPEG-encoded ('rgb'
    for the ALOHA recorders, 'bgr' for standard JPEGs).
  """

  task: str = ''
  instruction: str = ''
  resize: tuple[int, int] | None = None
  success: bool | None = None
  cameras: tuple[tuple[str, str], ...] | None = None
  source: str = 'demo'
  operator: str = 'teleop'
  policy_version: int = -1
  image_format: str = 'jpeg'
  state: str = 'auto'
  base_action: str = ''
  jpeg_channels: str = 'rgb'


def parse_cameras(text: str | Sequence[str] | None) -> tuple[tuple[str, str], ...] | None:
  """'top,left_wrist:wrist_left' -> (('top', 'top'), ('left_wrist', 'wrist_left'))."""
  if not text:
    return None
  items = text.split(',') if isinstance(text, str) else list(text)
  pairs = []
  for item in items:
    item = item.strip()
    if not item:
      continue
    src, _, dst = item.partition(':')
    pairs.append((src.strip(), (dst or src).strip()))
  return tuple(pairs)


def parse_resize(text: str | None) -> tuple[int, int] | None:
  """'64x64' -> (64, 64)."""
  if not text:
    return None
  try:
    height, width = (int(v) for v in str(text).lower().split('x'))
  except ValueError:
    raise ValueError(f'--resize must look like HxW (e.g. 64x64), got {text!r}.') from None
  if height < 1 or width < 1:
    raise ValueError(f'--resize must be positive, got {text!r}.')
  return height, width


def check_array(file: str, episode: str, field: str, value: Any, *, ndim: int | None = None,
                finite: bool = False) -> np.ndarray:
  """An array read from a file, or a ConversionError saying what is wrong with it."""
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except  (ragged lists and the like)
    raise ConversionError(file, episode, field, f'shape disagrees across steps ({e}).') from e
  if arr.dtype == object:
    raise ConversionError(file, episode, field, 'shape disagrees across steps (ragged data).')
  if ndim is not None and arr.ndim != ndim:
    raise ConversionError(file, episode, field, f'expected {ndim} dimensions, got shape '
                          f'{arr.shape}.')
  if finite:
    if not np.issubdtype(arr.dtype, np.number):
      raise ConversionError(file, episode, field, f'expected numbers, got dtype {arr.dtype}.')
    bad = ~np.isfinite(arr)
    if bad.any():
      step = int(np.argwhere(bad)[0][0])
      raise ConversionError(file, episode, field, f'NaN or inf at step {step}. Fix the recording '
                            'or pass --skip-bad to leave the episode out.')
  return arr


def select_cameras(file: str, episode: str, recorded: Mapping[str, np.ndarray],
                   options: Options) -> dict[str, np.ndarray]:
  """Chooses, renames and resizes cameras."""
  pairs = options.cameras or tuple((name, name) for name in recorded)
  out = {}
  for src, dst in pairs:
    if src not in recorded:
      raise ConversionError(file, episode, f'images/{src}', f'missing camera (recorded: '
                            f'{sorted(recorded)}); fix --cameras.')
    frames = recorded[src]
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ConversionError(file, episode, f'images/{src}', f'expected uint8 [T, H, W, 3], got '
                            f'shape {frames.shape}.')
    if frames.dtype != np.uint8:
      raise ConversionError(file, episode, f'images/{src}', f'expected uint8, got {frames.dtype}.')
    if options.resize is not None and len(frames):
      frames = images_lib.resize_images(frames, options.resize)
    out[dst] = frames
  return out


def build_episode(raw: Mapping[str, Any], options: Options, *, file: str, episode: str) -> dict:
  """A raw recorded episode -> the RLDS episode dict (see the module docstring)."""
  action = check_array(file, episode, 'action', raw.get('action'), ndim=2, finite=True)
  num_steps = action.shape[0]
  if num_steps == 0:
    raise ConversionError(file, episode, 'action', 'the episode is empty (0 steps).')
  if num_steps < 2:
    raise ConversionError(file, episode, 'action', 'the episode has 1 step; an episode needs at '
                          'least 2 (one action and the final observation).')
  state = check_array(file, episode, 'state', raw.get('state'), ndim=2, finite=True)
  observation = select_cameras(file, episode, raw.get('images', {}), options)
  observation['state'] = state
  per_step = dict(observation)
  for key in ('privileged', 'policy_action'):
    if raw.get(key) is not None:
      per_step[key] = check_array(file, episode, key, raw[key], ndim=2, finite=True)
  if raw.get('is_intervention') is not None:
    per_step['is_intervention'] = check_array(file, episode, 'is_intervention',
                                              raw['is_intervention'], ndim=1)
  for key, value in per_step.items():
    if len(value) != num_steps:
      name = f'images/{key}' if key not in ('state', 'privileged', 'policy_action',
                                            'is_intervention') else key
      raise ConversionError(file, episode, name, f'{len(value)} steps but `action` has '
                            f'{num_steps}; the shape disagrees across steps.')
  if 'privileged' in per_step:
    observation['privileged'] = per_step['privileged']
  success = raw.get('success')
  if success is None:
    success = options.success
  if success is None:
    raise ConversionError(file, episode, 'success', 'the file records no outcome; pass '
                          '--success=true or --success=false.')
  instruction = options.instruction or raw.get('instruction') or ''
  task = options.task or raw.get('task') or ''
  if not instruction:
    raise ConversionError(file, episode, 'instruction', 'the file records no language '
                          'instruction; pass --instruction="...".')
  flags = per_step.get('is_intervention')
  return schema.make_episode(
      observation, action.astype(np.float32), instruction=str(instruction),
      episode_id=episode, task=str(task or 'unknown'), success=bool(success),
      source=options.source, policy_version=options.policy_version, operator=options.operator,
      policy_action=per_step.get('policy_action'),
      is_intervention=None if flags is None else flags.astype(bool))


def iter_listed(input_path: str, list_episodes: Callable[[str], Sequence[tuple[str, str]]],
                read_episode: Callable[..., dict], **kwargs
                ) -> Iterator[tuple[str, str, Callable[[], dict]]]:
  """(file, episode, load) for each (file, episode) that ``list_episodes(input_path)`` names;
  ``load()`` reads it, when called, with ``read_episode(file, episode, **kwargs)``. The
  ``iter_raw`` of the formats that store episodes as files."""
  for file, episode in list_episodes(input_path):
    yield file, episode, lambda f=file, e=episode: read_episode(f, e, **kwargs)


@dataclasses.dataclass
class Summary:
  """What a conversion did."""

  episodes: int = 0
  steps: int = 0
  successes: int = 0
  intervention_episodes: int = 0
  intervention_steps: int = 0
  cameras: dict = dataclasses.field(default_factory=dict)  # name -> (H, W, 3)
  state_dim: int = 0
  action_dim: int = 0
  skipped: list = dataclasses.field(default_factory=list)  # (file, episode, message)
  output: str = ''

  def add(self, episode: Mapping[str, Any]) -> None:
    steps = episode['steps']
    self.episodes += 1
    self.steps += len(steps['action'])
    self.successes += int(episode['episode_metadata']['success'])
    flags = np.asarray(steps['is_intervention'])
    self.intervention_episodes += int(flags.any())
    self.intervention_steps += int(flags.sum())
    for name, value in steps['observation'].items():
      if name not in ('state', 'privileged'):
        self.cameras[name] = tuple(np.shape(value)[1:])
    self.state_dim = int(np.shape(steps['observation']['state'])[1])
    self.action_dim = int(np.shape(steps['action'])[1])

  @property
  def success_rate(self) -> float:
    return self.successes / self.episodes if self.episodes else float('nan')

  def format(self) -> str:
    cams = ', '.join(f'{k} {"x".join(map(str, v))}' for k, v in self.cameras.items()) or 'none'
    lines = [
        f'Converted {self.episodes} episodes ({self.steps} steps) into {self.output}',
        f'  cameras: {cams}; state [{self.state_dim}], action [{self.action_dim}]',
        f'  success rate: {self.success_rate:.1%} ({self.successes}/{self.episodes})',
        f'  interventions: {self.intervention_episodes} episodes, {self.intervention_steps} steps',
    ]
    if self.skipped:
      lines.append(f'  skipped {len(self.skipped)} bad episodes:')
      lines += [f'    {message}' for _, _, message in self.skipped]
    return '\n'.join(lines)
