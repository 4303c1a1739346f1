"""HABC-V: the viability head only (the gate is built from A_v)."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'habc_v'
  c.method.weighting = 'habc_v'
  c.method.use_autonomous = True
  return c
