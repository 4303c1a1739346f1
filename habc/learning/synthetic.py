"""Synthetic training batches with the real batch layout (docs/interfaces.md, section 3).

For benchmarks and tests of the learner that should not depend on environments or datasets.
"""

from __future__ import annotations

import numpy as np

from habc.labeling import NUM_KINDS, SampleKind


def synthetic_batch(batch_size: int, *, action_dim: int = 10, state_dim: int = 20, horizon: int = 16,
                    cameras: int = 3, image_size: int = 64, instruction_len: int = 32,
                    vision: bool = True, seed: int = 0) -> dict:
  """A random batch with every sample kind represented; numpy arrays with leading dim B."""
  rng = np.random.default_rng(seed)

  def observation():
    obs = {'state': rng.normal(size=(batch_size, state_dim)).astype(np.float32),
           'instruction': rng.integers(1, 257, size=(batch_size, instruction_len)).astype(np.int32)}
    if vision:
      obs['images'] = rng.integers(0, 256, size=(batch_size, cameras, image_size, image_size, 3),
                                   dtype=np.uint8)
    return obs

  kind = (np.arange(batch_size) % NUM_KINDS).astype(np.int32)
  labelled = (kind == SampleKind.SUCCESS) | (kind == SampleKind.FAILURE)
  success = kind == SampleKind.SUCCESS
  return {
      'obs': observation(),
      'next_obs': observation(),
      'actions': rng.normal(size=(batch_size, horizon, action_dim)).astype(np.float32),
      'action_mask': np.ones((batch_size, horizon), bool),
      'kind': kind,
      'outcome': success.astype(np.float32),
      'viability_mask': labelled,
      'efficiency_mask': success | (kind == SampleKind.INTERVENTION),
      'next_is_terminal': rng.random(batch_size) < 0.1,
      'steps_to_end': rng.integers(1, 20, size=batch_size).astype(np.float32),
      'episode_success': success | (kind == SampleKind.INTERVENTION),
      'valid': np.ones(batch_size, bool),
  }
