"""HABC: both critic heads, the gate, intervention-aware credit assignment.

Critic features: model.critic_encoder='separate' (from experiments.base): the heads learn their
own small encoder, so critic gradients never disturb the actor's pretrained features, and s_{t+k}
costs a cheap forward pass."""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'habc'
  c.method.weighting = 'habc'
  c.method.use_autonomous = True
  c.method.intervention_reweighting = False
  c.credit.naive = False
  return c
