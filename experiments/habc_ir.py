"""HABC+IR: HABC rounds, then a final phase with intervention reweighting switched on.

The pipeline sets method.intervention_reweighting=True from round
pipeline.intervention_reweighting_from_round (1-based; round 0 is SFT) on."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'habc_ir'
  c.method.weighting = 'habc'
  c.method.use_autonomous = True
  # HABC rounds first, then one more round with intervention windows weighted by the gate (IR).
  c.pipeline.rounds = c.pipeline.rounds + 1
  c.pipeline.intervention_reweighting_from_round = c.pipeline.rounds
  return c
