"""HABC with naive (leaking) credit assignment: the ablation of intervention-aware credit."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'habc_naive_credit'
  c.method.weighting = 'habc'
  c.method.use_autonomous = True
  # Ablation: every policy window of an episode gets its outcome, across interventions.
  c.credit.naive = True
  return c
