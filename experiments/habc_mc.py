"""HABC with the Monte-Carlo efficiency target: y_e = -(decisions the successful episode still
took), instead of DESIGN.md's one-step TD target -1 + V_e(s_{t+k}). Everything else as HABC.

An ablation of the efficiency head (issue 26): session 17's toy showed the TD target running away
where the Monte-Carlo one stayed within 0.15 of the truth (results/notes.md, session 17)."""

import ml_collections

from experiments import habc


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = habc.get_config(preset)
  c.name = 'habc_mc'
  c.critic.efficiency_target = 'monte_carlo'
  return c
