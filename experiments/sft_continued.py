"""Control (not in the paper): SFT trained on for the online rounds' updates, on demonstrations only.

The rounds collect and evaluate as every method does, but their data gets sampling weight 0, so
the policy sees only the demonstrations, for as many updates as the other methods. Set against
Imit-DAgger and HABC, it separates what more training steps do from what the online data does.
"""

import ml_collections

from experiments import presets


def get_config(preset: str = 'default') -> ml_collections.ConfigDict:
  c = presets.make_config(preset)
  c.name = 'sft_continued'
  c.method.weighting = 'bc'
  c.method.use_autonomous = False
  c.data.demo_fraction = 1.0  # The rounds' rollouts get sampling weight 0.
  return c
