"""An experiment file's config as launch.py's command line gets it.

``experiment_config(path, preset, overrides)`` loads ``path``'s ``get_config(preset)`` and applies
the ``--config.<key>=<value>`` overrides through ml_collections' ``config_flags`` (the parser
launch.py defines as its ``--config`` flag), on a private set of flags, so that tools that start
runs (experiments/sweep.py) parse values, check keys and name errors exactly as launch.py does.
"""

from __future__ import annotations

from typing import Sequence


def experiment_config(path: str, preset: str, overrides: Sequence[str] = ()):
  """The config of experiment file ``path`` at ``preset`` with ``overrides`` applied.

  Args:
    path: an experiment file (experiments/<method>.py).
    preset: its ``get_config`` argument (smoke, default, paper).
    overrides: '--config.<key>=<value>' arguments, as given to launch.py.

  Returns:
    An unlocked ml_collections.ConfigDict (task and seed as the file sets them).

  Raises:
    KeyError, AttributeError: an override names a key the config does not have.
    absl.flags.IllegalFlagValueError: a value that does not parse as its key's type (the message
      names the flag).
  """
  from absl import flags
  import ml_collections
  from ml_collections import config_flags
  argv = ['experiment_config', f'--config={path}:{preset}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'The experiment file and preset.',
                                  flag_values=values, sys_argv=argv)
  values(argv)
  return ml_collections.ConfigDict(values.config.to_dict())  # Unlocked copy, as launch.py's.
