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
  attributes: success (bool), instruction (str), task (str)
(written by ``habc.data.converters.aloha_hdf5.write_aloha_hdf5``).

Runs inside an environment worker process (``habc.run.rollout``): no TensorFlow here.
"""

from __future__ import annotations

import numpy as np


def _load(path):
  from habc.symbols import load_symbol
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


def write_demo(path: str, run: dict, cameras, *, instruction: str, task: str) -> None:
  """An expert run -> one ALOHA-style file, through the data layer's writer."""
  from habc.data.converters import aloha_hdf5
  obs = run['observations']
  actions = run['actions']
  zero = np.zeros((1,) + actions.shape[1:], np.float32)
  privileged = (np.stack([o['privileged'] for o in obs]).astype(np.float32)
                if 'privileged' in obs[0] else None)
  aloha_hdf5.write_aloha_hdf5(
      path, qpos=np.stack([o['state'] for o in obs]).astype(np.float32),
      action=np.concatenate([actions, zero]).astype(np.float32),
      images={c: np.stack([o[c] for o in obs]).astype(np.uint8) for c in cameras},
      privileged=privileged, success=bool(run['success']), instruction=instruction, task=task)


def record_demo(config, request) -> dict:
  """Records one demonstration (worker side of a 'demo' request).

  Args:
    config: ``habc.run.rollout.WorkerConfig``.
    request: ``habc.run.rollout.EpisodeRequest`` with ``demo_path`` set.

  Returns:
    The result summary: episode_id, seed, kind, success, length, path.
  """
  make_env = _load(config.env_factory)
  env = make_env(config.task, seed=request.seed, image_size=config.image_size,
                 cameras=config.cameras, time_limit=config.time_limit)
  try:
    expert = env.make_expert(request.seed)
    run = run_expert_episode(env, expert)
    write_demo(request.demo_path, run, config.cameras,
               instruction=str(getattr(env, 'instruction', '')),
               task=str(getattr(env, 'task_name', config.task)))
  finally:
    env.close()
  return {'episode_id': request.episode_id, 'seed': request.seed, 'kind': 'demo',
          'success': run['success'], 'length': int(len(run['actions'])),
          'intervention_steps': 0, 'episode': None, 'frames': None,
          'path': request.demo_path}

