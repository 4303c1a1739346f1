"""SFT: behaviour cloning on the scripted demonstrations only (the pretrained starting point)."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'sft'
  c.method.weighting = 'bc'
  c.method.use_autonomous = False
  # Behaviour cloning on the demonstrations only: the SFT checkpoint is the result (round 0).
  c.pipeline.rounds = 0
  return c
