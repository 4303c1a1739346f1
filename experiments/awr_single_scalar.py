"""AWR with one scalar critic: discounted sparse reward, weights exp(A / beta) clipped."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'awr_single_scalar'
  c.method.weighting = 'awr'
  c.method.use_autonomous = True
  return c
