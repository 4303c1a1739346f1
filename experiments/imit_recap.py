"""Imit-Recap: one distributional value head (TD/MC mix, failures cost -C); online weight 1[A >= eps]."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'imit_recap'
  c.method.weighting = 'recap'
  c.method.use_autonomous = True
  return c
