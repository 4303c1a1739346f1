"""``python -m habc.critic_diagnostics --workdir=W``: the critic of each round on held-out episodes
(the work: habc.run.critic_diagnostics)."""

from habc.run import critic_diagnostics

if __name__ == '__main__':
  __doc__ = critic_diagnostics.__doc__  # What absl's --help prints: the main module's docstring.
  from absl import app, flags
  flags.DEFINE_string('workdir', '', 'A run directory (launch.py --workdir).')
  app.run(critic_diagnostics.main)
