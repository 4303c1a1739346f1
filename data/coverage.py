"""Prints where each run's online data lies against its demonstrations (habc.data.coverage).

  python data/coverage.py --workdirs=workdirs/sweep/pouch_habc_0,workdirs/sweep/insert_habc_0

For every step of the held-out demonstrations, of the operator's segments and of the policy's
segments of the online rounds: the distance to the nearest demonstration state (in demonstration
std units) and the action gap there. Held-out demonstrations are the reference level.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

flags.DEFINE_list('workdirs', None, 'Run workdirs (each with data/demos and data/round_*).')
flags.DEFINE_float('held_out_fraction', 0.2, 'Demonstration episodes held out as the reference.')
flags.DEFINE_integer('max_steps', 2000, 'Steps per query set at most (subsampled).')
flags.DEFINE_integer('seed', 0, 'Seed of the held-out split and the subsampling.')
flags.mark_flag_as_required('workdirs')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from habc.data import coverage  # pylint: disable=g-import-not-at-top
  for workdir in FLAGS.workdirs:
    demos, online = coverage.load_workdir(workdir)
    rows = coverage.compare(demos, online, held_out_fraction=FLAGS.held_out_fraction,
                            max_steps=FLAGS.max_steps, seed=FLAGS.seed)
    print(f'\n{workdir}: {len(demos)} demonstrations, {len(online)} online episodes')
    print(coverage.table(rows))


if __name__ == '__main__':
  app.run(main)
