"""HABC with one more round and nothing else: the control for HABC+IR's last round.

HABC+IR is HABC for HABC's rounds, then one more round with intervention reweighting on. A
difference between HABC+IR and HABC mixes two things: the extra round (100 more rollouts, more
updates) and the reweighting. This run has the extra round without the reweighting, so HABC+IR
minus this run is the reweighting's own effect. Its first rounds are HABC's (the sweep starts it
from HABC's finished run, as it does HABC+IR), and its last round collects the same rollouts as
HABC+IR's: the same policy, the same seeds."""

import ml_collections

from experiments import habc


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = habc.get_config(preset)
  c.name = 'habc_extra_round'
  c.pipeline.rounds = c.pipeline.rounds + 1
  return c
