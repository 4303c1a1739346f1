"""Demonstrations recorded like a teleoperation rig: the scripted expert drives the robot and each
episode is written as one ALOHA-style HDF5 file, which the data layer's converter turns into RLDS.

So the demonstrations take the same path as a real teleop recording: raw files first, then
``habc.data`` conversion (exercised for real on every run).

File layout (one ``episode_<index>.hdf5`` per episode; T = executed steps + 1, the last row holds
the final observation and a zero action, as in RLDS):
  /observations/qpos            float32 [T, S]   proprioception (the environment's ``state``)
  /observations/privileged      float32 [T, P]   object state (simulation only)
  /observations/images/<camera> uint8 [T, H, W, 3]
  /action                       float32 [T, A]
  attributes: success (bool), instruction (str), task (str), seed (int), sim (True)

Runs inside an environment worker process (``habc.rollout``): no TensorFlow here.
"""

from __future__ import annotations

import os

import numpy as np


def _load(path):
  from habc.rollout import load_symbol
  return load_symbol(path)


def run_expert_episode(env, expert) -> dict:
  """Runs the expert until the episode ends.

  Returns:
    dict with 'observations' (list of T observation dicts), 'actions' f32 [T-1, A], 'success'.
  """
  timestep = env.reset()
  if hasattr(expert, 'reset'):
    expert.reset()
  observations, actions = [dict(timestep.observation)], []
  while not timestep.last():
    action = np.asarray(expert.act(env), np.float32)
    timestep = env.step(action)
    actions.append(action)
    observations.append(dict(timestep.observation))
  success = bool(timestep.discount == 0)
  return {'observations': observations, 'actions': np.stack(actions) if actions else
          np.zeros((0,) + env.action_spec().shape, np.float32), 'success': success}


def to_aloha_arrays(run: dict, cameras) -> dict:
  """An expert run -> the arrays of one ALOHA-style file (keys are HDF5 paths)."""
  obs = run['observations']
  actions = run['actions']
  zero = np.zeros((1,) + actions.shape[1:], np.float32)
  arrays = {
      '/observations/qpos': np.stack([o['state'] for o in obs]).astype(np.float32),
      '/action': np.concatenate([actions, zero]).astype(np.float32),
  }
  if 'privileged' in obs[0]:
    arrays['/observations/privileged'] = np.stack([o['privileged'] for o in obs]).astype(
        np.float32)
  for camera in cameras:
    arrays[f'/observations/images/{camera}'] = np.stack([o[camera] for o in obs]).astype(np.uint8)
  return arrays


def write_aloha_hdf5(path: str, arrays: dict, attrs: dict) -> None:
  """Writes one episode file atomically (a temporary name, then a rename)."""
  import h5py
  tmp = path + '.tmp'
  with h5py.File(tmp, 'w') as f:
    for key, value in arrays.items():
      f.create_dataset(key.lstrip('/'), data=value)
    for key, value in attrs.items():
      f.attrs[key] = value
  os.replace(tmp, path)


def record_demo(config, request) -> dict:
  """Records one demonstration (worker side of a 'demo' request).

  Args:
    config: ``habc.rollout.WorkerConfig``.
    request: ``habc.rollout.EpisodeRequest`` with ``demo_path`` set.

  Returns:
    The result summary: episode_id, seed, kind, success, length, path.
  """
  make_env = _load(config.env_factory)
  env = make_env(config.task, seed=request.seed, image_size=config.image_size,
                 cameras=config.cameras, time_limit=config.time_limit)
  try:
    expert = env.make_expert(request.seed)
    run = run_expert_episode(env, expert)
    attrs = {'success': run['success'], 'instruction': str(getattr(env, 'instruction', '')),
             'task': str(getattr(env, 'task_name', config.task)), 'seed': int(request.seed),
             'sim': True}
    write_aloha_hdf5(request.demo_path, to_aloha_arrays(run, config.cameras), attrs)
  finally:
    env.close()
  return {'episode_id': request.episode_id, 'seed': request.seed, 'kind': 'demo',
          'success': run['success'], 'length': int(len(run['actions'])),
          'intervention_steps': 0, 'episode': None, 'frames': None,
          'path': request.demo_path}


def read_aloha_episode(path: str, *, task: str = '', episode_id: str | None = None) -> dict:
  """One file written by ``write_aloha_hdf5`` -> the in-memory episode dict (source 'demo').

  Used until the data layer's converter (``habc.data.converters``) reads these files itself.
  """
  import h5py
  with h5py.File(path, 'r') as f:
    qpos = np.asarray(f['observations/qpos'], np.float32)
    observation = {'state': qpos}
    if 'observations/privileged' in f:
      observation['privileged'] = np.asarray(f['observations/privileged'], np.float32)
    if 'observations/images' in f:
      for camera in f['observations/images']:
        observation[camera] = np.asarray(f[f'observations/images/{camera}'], np.uint8)
    action = np.asarray(f['action'], np.float32)
    success = bool(f.attrs.get('success', True))
    instruction = str(f.attrs.get('instruction', ''))
    task = task or str(f.attrs.get('task', ''))
  num = len(qpos)
  last = np.arange(num) == num - 1
  terminal = last & success
  steps = {
      'observation': observation, 'action': action, 'policy_action': action.copy(),
      'is_intervention': np.zeros(num, bool), 'reward': terminal.astype(np.float32),
      'discount': np.where(terminal, 0.0, 1.0).astype(np.float32),
      'is_first': np.arange(num) == 0, 'is_last': last, 'is_terminal': terminal,
      'language_instruction': instruction}
  meta = {'episode_id': episode_id or os.path.splitext(os.path.basename(path))[0], 'task': task,
          'success': success, 'policy_version': -1, 'source': 'demo', 'operator': 'scripted_expert'}
  return {'steps': steps, 'episode_metadata': meta}
