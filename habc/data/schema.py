"""The RLDS episode schema: one spec, its tfds features, and the episode validator.

Step convention (RLDS, as in the Open X-Embodiment datasets)
-------------------------------------------------------------
An episode of T steps. Step t holds the observation s_t and the action a_t executed from it, plus
the reward and discount that followed a_t. The last step (t = T - 1, ``is_last``) holds the final
observation s_{T-1} and a dummy all-zero action; nothing was executed from it. So an episode with
N executed actions has T = N + 1 steps, and at least 2.

* ``is_first``: True on step 0 only. ``is_last``: True on step T - 1 only.
* ``is_terminal``: True on the last step only, and only when the episode ended in a real success
  (the environment's ``LAST`` with discount 0). A time-out is ``is_last`` without ``is_terminal``.
* ``reward``: sparse; 1.0 on the last step of a successful episode, else 0.
* ``discount``: 1.0, except 0.0 on a terminal last step.
* ``action``: what was executed (the operator's command on intervention steps).
  ``policy_action``: what the policy proposed; equal to ``action`` on autonomous steps and for
  demonstrations (no policy ran). ``is_intervention``: the operator controlled the step.
* ``language_instruction``: the episode's instruction, repeated on every step (OXE layout).

Episode metadata: ``episode_id``, ``task``, ``success`` (bool), ``policy_version`` (the checkpoint
that ran it; -1 for demonstrations), ``source`` ('demo' | 'rollout' | 'converted'), ``operator``.

In memory an episode is the dict of docs/interfaces.md section 2; ``validate_episode`` checks one
against an ``EpisodeSpec`` and names the episode and field of the first problem.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

SOURCES = ('demo', 'rollout', 'converted')
STEP_FIELDS = ('observation', 'action', 'policy_action', 'is_intervention', 'reward', 'discount',
               'is_first', 'is_last', 'is_terminal', 'language_instruction')
METADATA_FIELDS = ('episode_id', 'task', 'success', 'policy_version', 'source', 'operator')


class EpisodeError(ValueError):
  """An episode does not match the schema; the message names the episode and the field."""

  def __init__(self, episode: str, field: str, problem: str):
    self.episode, self.field, self.problem = episode, field, problem
    super().__init__(f'episode {episode!r}, field {field!r}: {problem}')


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """Shapes of one dataset's steps.

  cameras: ((name, (H, W)), ...) in storage order; empty for state-only data.
  state_dim: S. action_dim: A. privileged_dim: P, 0 when the dataset has no privileged state.
  image_format: 'jpeg' (quality 95, no chroma subsampling; default: see docs/data.md) or
    'png' (lossless, ~2x slower to decode).
  """

  cameras: tuple[tuple[str, tuple[int, int]], ...]
  state_dim: int
  action_dim: int
  privileged_dim: int = 0
  image_format: str = 'jpeg'

  @property
  def camera_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.cameras)

  def camera_shape(self, name: str) -> tuple[int, int, int]:
    return tuple(dict(self.cameras)[name]) + (3,)


def make_spec(cameras=(), image_size=(64, 64), *, state_dim: int, action_dim: int,
              privileged_dim: int = 0, image_format: str = 'jpeg') -> EpisodeSpec:
  """A spec with every camera at one size. ``image_size``: int or (H, W)."""
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  return EpisodeSpec(tuple((str(c), tuple(int(s) for s in image_size)) for c in cameras),
                     int(state_dim), int(action_dim), int(privileged_dim), image_format)


def spec_from_env(observation_spec: Mapping[str, Any], action_spec, *,
                  image_format: str = 'jpeg') -> EpisodeSpec:
  """The spec of an environment's episodes (docs/interfaces.md section 1).

  Args:
    observation_spec: dict of dm_env specs: uint8 [H, W, 3] per camera, ``state`` [S],
      optionally ``privileged`` [P].
    action_spec: a dm_env spec of shape [A].
  """
  cameras = []
  for name, spec in observation_spec.items():
    if name in ('state', 'privileged'):
      continue
    shape = tuple(spec.shape)
    if np.dtype(spec.dtype) != np.uint8 or len(shape) != 3 or shape[-1] != 3:
      raise ValueError(f'Observation {name!r} is neither state/privileged nor a uint8 [H, W, 3] '
                       f'camera (shape {shape}, dtype {spec.dtype}); the RLDS schema cannot store it.')
    cameras.append((name, shape[:2]))
  if 'state' not in observation_spec:
    raise ValueError('The observation spec has no `state` entry (proprioception).')
  privileged = observation_spec.get('privileged')
  return EpisodeSpec(tuple(cameras), int(observation_spec['state'].shape[0]),
                     int(action_spec.shape[0]),
                     int(privileged.shape[0]) if privileged is not None else 0, image_format)


def spec_of_episode(episode: Mapping[str, Any], image_format: str = 'jpeg') -> EpisodeSpec:
  """The spec implied by one in-memory episode (its cameras, state and action sizes)."""
  obs = episode['steps']['observation']
  cameras = tuple((k, tuple(np.shape(v)[1:3])) for k, v in obs.items()
                  if k not in ('state', 'privileged'))
  privileged = obs.get('privileged')
  return EpisodeSpec(cameras, int(np.shape(obs['state'])[-1]),
                     int(np.shape(episode['steps']['action'])[-1]),
                     int(np.shape(privileged)[-1]) if privileged is not None else 0, image_format)


def features(spec: EpisodeSpec):
  """The tfds ``FeaturesDict`` of an episode (importing tfds does not import TensorFlow)."""
  import tensorflow_datasets as tfds
  tf = tfds.features
  scalar = lambda dtype, doc: tf.Scalar(dtype=dtype, doc=doc)
  vector = lambda n, doc: tf.Tensor(shape=(n,), dtype=np.float32, doc=doc)
  observation = {
      name: tf.Image(shape=(h, w, 3), dtype=np.uint8, encoding_format=spec.image_format,
                     doc=f'Camera {name}, RGB.')
      for name, (h, w) in spec.cameras}
  observation['state'] = vector(spec.state_dim, 'Proprioception.')
  if spec.privileged_dim:
    observation['privileged'] = vector(spec.privileged_dim, 'Object state (simulation only).')
  return tf.FeaturesDict({
      'steps': tf.Dataset({
          'observation': tf.FeaturesDict(observation),
          'action': vector(spec.action_dim, 'Executed action (zero on the last step).'),
          'policy_action': vector(spec.action_dim, 'Action the policy proposed.'),
          'is_intervention': scalar(np.bool_, 'The operator controlled this step.'),
          'reward': scalar(np.float32, 'Sparse: 1 on the last step of a success.'),
          'discount': scalar(np.float32, '0 on a terminal last step, else 1.'),
          'is_first': scalar(np.bool_, 'First step of the episode.'),
          'is_last': scalar(np.bool_, 'Last step of the episode.'),
          'is_terminal': scalar(np.bool_, 'Last step of a real success (never a time-out).'),
          'language_instruction': tf.Text(doc='The instruction.'),
      }),
      'episode_metadata': tf.FeaturesDict({
          'episode_id': tf.Text(doc='Unique id.'),
          'task': tf.Text(doc='Task name.'),
          'success': scalar(np.bool_, 'Binary outcome.'),
          'policy_version': scalar(np.int32, 'Checkpoint that ran it; -1 for demonstrations.'),
          'source': tf.Text(doc='demo | rollout | converted.'),
          'operator': tf.Text(doc='Who or what operated interventions.'),
      }),
  })


def spec_from_features(feats) -> EpisodeSpec:
  """Inverse of ``features``: the spec of a dataset written by habc."""
  steps = feats['steps']
  obs = steps['observation']
  cameras, image_format = [], 'jpeg'
  for name in obs.keys():
    if name in ('state', 'privileged'):
      continue
    shape = obs[name].shape
    cameras.append((name, (int(shape[0]), int(shape[1]))))
    image_format = obs[name].encoding_format or 'jpeg'
  privileged = int(obs['privileged'].shape[0]) if 'privileged' in obs.keys() else 0
  return EpisodeSpec(tuple(cameras), int(obs['state'].shape[0]), int(steps['action'].shape[0]),
                     privileged, image_format)


def _name(episode: Mapping[str, Any]) -> str:
  try:
    return str(episode['episode_metadata']['episode_id'])
  except (KeyError, TypeError):
    return '<no episode_id>'


def _array(value, dtype, name: str, field: str, shape: tuple[int, ...]) -> np.ndarray:
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise EpisodeError(name, field, f'cannot be read as an array ({e}).') from e
  if arr.shape != shape:
    raise EpisodeError(name, field, f'expected shape {shape}, got {arr.shape}. Every step must '
                       'have the same shape, with one entry per step.')
  if dtype == np.bool_ and arr.dtype != np.bool_:
    if arr.size and not np.isin(arr, (0, 1)).all():
      raise EpisodeError(name, field, 'expected booleans (or 0/1).')
  elif dtype == np.uint8 and arr.dtype != np.uint8:
    raise EpisodeError(name, field, f'expected uint8 images, got {arr.dtype}.')
  elif np.issubdtype(dtype, np.floating):
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
      raise EpisodeError(name, field, f'expected numbers, got dtype {arr.dtype}.')
    if not np.isfinite(arr).all():
      bad = np.argwhere(~np.isfinite(arr))[0].tolist()
      raise EpisodeError(name, field, f'holds NaN or inf (first at index {bad}). Fix or drop the '
                         'episode (converters: --skip-bad).')
  return arr.astype(dtype, copy=False)


def validate_episode(episode: Mapping[str, Any], spec: EpisodeSpec) -> dict:
  """Checks an in-memory episode against the spec.

  Args:
    episode: the dict of docs/interfaces.md section 2.
    spec: the dataset's spec.

  Returns:
    The episode with arrays cast to their stored dtypes and the instruction as one str.

  Raises:
    EpisodeError: naming the episode and the first bad field.
  """
  name = _name(episode)
  if not isinstance(episode, Mapping) or 'steps' not in episode or 'episode_metadata' not in episode:
    raise EpisodeError(name, '<episode>', "needs the keys 'steps' and 'episode_metadata'.")
  steps, meta = episode['steps'], episode['episode_metadata']
  for key in STEP_FIELDS:
    if key not in steps:
      raise EpisodeError(name, f'steps/{key}', 'missing.')
  for key in METADATA_FIELDS:
    if key not in meta:
      raise EpisodeError(name, f'episode_metadata/{key}', 'missing.')
  num_steps = int(np.shape(steps['action'])[0]) if np.ndim(steps['action']) else 0
  if num_steps == 0:
    raise EpisodeError(name, 'steps/action', 'the episode is empty (0 steps).')
  if num_steps < 2:
    raise EpisodeError(name, 'steps/action', f'an episode needs at least 2 steps (one action and '
                       f'the final observation), got {num_steps}.')
  T = num_steps
  obs_in = steps['observation']
  obs = {}
  for cam, (h, w) in spec.cameras:
    if cam not in obs_in:
      raise EpisodeError(name, f'steps/observation/{cam}',
                         f'missing camera (the dataset has cameras {spec.camera_names}).')
    obs[cam] = _array(obs_in[cam], np.uint8, name, f'steps/observation/{cam}', (T, h, w, 3))
  extra = set(obs_in) - set(spec.camera_names) - {'state', 'privileged'}
  if extra:
    raise EpisodeError(name, 'steps/observation', f'cameras {sorted(extra)} are not in the '
                       f'dataset spec {spec.camera_names}; drop or rename them.')
  if 'state' not in obs_in:
    raise EpisodeError(name, 'steps/observation/state', 'missing.')
  obs['state'] = _array(obs_in['state'], np.float32, name, 'steps/observation/state',
                        (T, spec.state_dim))
  if spec.privileged_dim:
    if 'privileged' not in obs_in:
      raise EpisodeError(name, 'steps/observation/privileged', 'missing (the spec has it).')
    obs['privileged'] = _array(obs_in['privileged'], np.float32, name,
                               'steps/observation/privileged', (T, spec.privileged_dim))
  out = {'observation': obs}
  for key in ('action', 'policy_action'):
    out[key] = _array(steps[key], np.float32, name, f'steps/{key}', (T, spec.action_dim))
  for key in ('reward', 'discount'):
    out[key] = _array(steps[key], np.float32, name, f'steps/{key}', (T,))
  for key in ('is_intervention', 'is_first', 'is_last', 'is_terminal'):
    out[key] = _array(steps[key], np.bool_, name, f'steps/{key}', (T,))
  expected_first = np.arange(T) == 0
  expected_last = np.arange(T) == T - 1
  if not np.array_equal(out['is_first'], expected_first):
    raise EpisodeError(name, 'steps/is_first', 'must be True on step 0 only.')
  if not np.array_equal(out['is_last'], expected_last):
    raise EpisodeError(name, 'steps/is_last', 'must be True on the last step only.')
  if out['is_terminal'][:-1].any():
    raise EpisodeError(name, 'steps/is_terminal', 'may be True on the last step only.')
  success = meta['success']
  if not isinstance(success, (bool, np.bool_)) and success not in (0, 1):
    raise EpisodeError(name, 'episode_metadata/success', f'must be a bool, got {success!r}.')
  if out['is_terminal'][-1] and not bool(success):
    raise EpisodeError(name, 'steps/is_terminal', 'a failed episode cannot end on a terminal step '
                       '(is_terminal marks a real success, never a time-out).')
  instruction = steps['language_instruction']
  if not isinstance(instruction, (str, bytes)):
    values = {v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(instruction).ravel()}
    if len(values) != 1 or np.size(instruction) != T:
      raise EpisodeError(name, 'steps/language_instruction',
                         'must be one str, or the same str on each of the T steps.')
    instruction = values.pop()
  out['language_instruction'] = instruction.decode() if isinstance(instruction, bytes) else instruction
  if meta['source'] not in SOURCES:
    raise EpisodeError(name, 'episode_metadata/source', f'must be one of {SOURCES}, '
                       f'got {meta["source"]!r}.')
  metadata = {'episode_id': str(meta['episode_id']), 'task': str(meta['task']),
              'success': bool(success), 'policy_version': int(meta['policy_version']),
              'source': str(meta['source']), 'operator': str(meta['operator'])}
  return {'steps': out, 'episode_metadata': metadata}


def make_episode(observation: Mapping[str, np.ndarray], action: np.ndarray, *, instruction: str,
                 episode_id: str, task: str, success: bool, source: str, policy_version: int = -1,
                 operator: str = '', policy_action: np.ndarray | None = None,
                 is_intervention: np.ndarray | None = None, terminal: bool | None = None) -> dict:
  """Builds an episode dict in the step convention from raw arrays.

  Args:
    observation: per-step arrays with T entries each (cameras uint8 [T, H, W, 3], state [T, S]).
    action: f32 [T - 1, A] (executed actions; the dummy last action is appended) or [T, A]
      (already in the convention: the last row is replaced by zeros).
    instruction: the language instruction.
    episode_id, task, success, source, policy_version, operator: the episode metadata.
    policy_action: like ``action``; defaults to ``action``.
    is_intervention: bool [T - 1] or [T]; defaults to all False.
    terminal: the episode ended on a real success; defaults to ``success``.

  Returns:
    The episode dict (not yet validated against a spec).
  """
  num_steps = int(np.shape(observation['state'])[0])

  def per_step(x, dtype, fill=0):
    x = np.asarray(x, dtype)
    if x.shape[0] == num_steps - 1:
      x = np.concatenate([x, np.full((1,) + x.shape[1:], fill, dtype)])
    elif x.shape[0] == num_steps:
      x = x.copy()
      x[-1] = fill
    else:
      raise EpisodeError(episode_id, 'steps/action', f'expected {num_steps - 1} or {num_steps} '
                         f'actions for {num_steps} observations, got {x.shape[0]}.')
    return x

  action = per_step(action, np.float32)
  policy_action = action if policy_action is None else per_step(policy_action, np.float32)
  flags = (np.zeros(num_steps, bool) if is_intervention is None
           else per_step(is_intervention, np.bool_, fill=False))
  if is_intervention is not None and np.shape(is_intervention)[0] == num_steps:
    flags[-1] = bool(np.asarray(is_intervention)[-1])
  terminal = bool(success) if terminal is None else bool(terminal)
  last = np.arange(num_steps) == num_steps - 1
  return {
      'steps': {
          'observation': dict(observation),
          'action': action,
          'policy_action': policy_action,
          'is_intervention': flags,
          'reward': (last & bool(success)).astype(np.float32),
          'discount': np.where(last & terminal, 0.0, 1.0).astype(np.float32),
          'is_first': np.arange(num_steps) == 0,
          'is_last': last,
          'is_terminal': last & terminal,
          'language_instruction': instruction,
      },
      'episode_metadata': {'episode_id': episode_id, 'task': task, 'success': bool(success),
                           'policy_version': int(policy_version), 'source': source,
                           'operator': operator},
  }
