"""Imit-DAgger: imitation of the operator's interventions mixed 50/50 with SFT data."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'imit_dagger'
  c.method.weighting = 'bc'
  # Autonomous rollout windows get weight 0: only the operator's takeovers are learned from,
  # mixed half and half with the demonstrations.
  c.method.use_autonomous = False
  c.data.demo_fraction = 0.5
  return c
