"""Synthetic episodes for tests and benchmarks (smooth images with a moving blob, random walks)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from habc.data import schema


def synthetic_images(rng: np.random.Generator, num_steps: int, size: int) -> np.ndarray:
  """uint8 [T, size, size, 3]: a shaded background and a blob moving along a random path."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  colour = rng.uniform(60, 200, 3).astype(np.float32)
  background = colour * (0.6 + 0.4 * yy[..., None]) + 20 * xx[..., None]
  path = np.cumsum(rng.normal(0, 0.02, (num_steps, 2)), 0) + rng.uniform(0.3, 0.7, 2)
  frames = np.empty((num_steps, size, size, 3), np.uint8)
  for t, (cy, cx) in enumerate(path):
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)[..., None]
    frames[t] = np.clip(background * (1 - blob) + 230 * blob, 0, 255).astype(np.uint8)
  return frames


def synthetic_episode(rng: np.random.Generator, *, num_steps: int = 40,
                      cameras: Sequence[str] = ('top',), image_size: int = 64, state_dim: int = 6,
                      action_dim: int = 4, privileged_dim: int = 0, success: bool = True,
                      interventions: Sequence[tuple[int, int]] = (), source: str = 'rollout',
                      policy_version: int = 0, episode_id: str = 'ep', task: str = 'fold',
                      instruction: str = 'fold the cloth') -> dict:
  """A valid episode dict (docs/interfaces.md section 2) of ``num_steps`` steps.

  interventions: (start, stop) step ranges controlled by the operator.
  """
  obs = {cam: synthetic_images(rng, num_steps, image_size) for cam in cameras}
  obs['state'] = np.cumsum(rng.normal(0, 0.1, (num_steps, state_dim)), 0).astype(np.float32)
  if privileged_dim:
    obs['privileged'] = rng.normal(0, 1, (num_steps, privileged_dim)).astype(np.float32)
  action = rng.normal(0.5, 2.0, (num_steps - 1, action_dim)).astype(np.float32)
  flags = np.zeros(num_steps - 1, bool)
  for start, stop in interventions:
    flags[start:stop] = True
  policy_action = np.where(flags[:, None], rng.normal(0, 1, action.shape), action)
  return schema.make_episode(obs, action, instruction=instruction, episode_id=episode_id,
                             task=task, success=success, source=source,
                             policy_version=-1 if source == 'demo' else policy_version,
                             operator='sim' if flags.any() else '', policy_action=policy_action,
                             is_intervention=flags)


def write_dataset(path, *, episodes, steps, cameras, image_size, image_format='jpeg', seed=0):
  """A synthetic dataset of ``episodes`` rollouts (every other one with an intervention)."""
  from habc.data import writer  # Imported here: array_record.
  rng = np.random.default_rng(seed)
  eps = (synthetic_episode(
      rng, num_steps=steps, cameras=cameras, image_size=image_size, state_dim=16, action_dim=14,
      privileged_dim=8, success=bool(i % 3), interventions=[(steps // 3, steps // 2)] if i % 2
      else [], episode_id=f'bench{i}') for i in range(episodes))
  spec = schema.make_spec(cameras, image_size, state_dim=16, action_dim=14, privileged_dim=8,
                          image_format=image_format)
  return writer.write_episodes(path, eps, spec)
