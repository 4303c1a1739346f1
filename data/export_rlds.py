"""Writes a TFRecord copy of an RLDS dataset for tf.data-based (Open X-Embodiment, Octo) loaders.

  python data/export_rlds.py --input=datasets/demos --output=exports --name=fold_teleop

writes exports/fold_teleop/1.0.0/, which Octo's make_dataset_from_rlds, OXE mixers and plain
tfds read with tfds.builder('fold_teleop', data_dir='exports'). Required: --input, --output (the
data_dir; it may hold other datasets) and --name (each dataset a mixer combines needs its own).
The final zero-action step of each episode is dropped (--last_step=keep copies it); the control
rate and what observation/state holds go into the metadata (--control_hz, --state_description;
known for habc's own tasks). This loads TensorFlow: it runs in its own process, never next to
MuJoCo rendering.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('input', None, 'RLDS dataset (array_record) to export (required).')
flags.DEFINE_string('output', None, 'tfds data_dir to write into: <output>/<name>/<version>/ '
                    '(required).')
flags.DEFINE_string('name', None, 'Dataset name, snake_case (required; what '
                    "tfds.builder(name, data_dir) and Octo's dataset mixes refer to).")
flags.DEFINE_string('version', '1.0.0', 'Dataset version directory.')
flags.DEFINE_integer('episodes_per_shard', 64, 'Episodes per TFRecord file.')
flags.DEFINE_enum('last_step', 'drop', ['drop', 'keep'], 'The final step of each episode holds '
                  'the final observation and an all-zero action: drop it (Octo trains on every '
                  "step's action) or keep it (marked by is_last).")
flags.DEFINE_float('control_hz', None, 'Control rate recorded in the metadata (default: known '
                   "for habc's tasks).")
flags.DEFINE_string('state_description', None, 'What observation/state holds, recorded in the '
                    "metadata (default: known for habc's tasks).")
FLAGS = flags.FLAGS
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def main(argv):
  del argv
  from habc.data import export
  try:
    count, path = export.export_tfrecord(
        FLAGS.input, FLAGS.output, name=FLAGS.name, version=FLAGS.version,
        episodes_per_shard=FLAGS.episodes_per_shard, last_step=FLAGS.last_step,
        control_hz=FLAGS.control_hz, state_description=FLAGS.state_description)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'Exported {count} episodes to {path} (TFRecord); read it with '
        f"tfds.builder({FLAGS.name!r}, data_dir={FLAGS.output!r}).")
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['input', 'output', 'name'])
  try:
    app.run(lambda argv: sys.exit(main(argv)))
  except SystemExit as e:  # absl exits 1 after printing the help.
    if e.code == 1 and any(a in HELP_FLAGS for a in sys.argv[1:]):
      sys.exit(0)
    raise
