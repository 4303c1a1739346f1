"""Writes a TFRecord copy of an RLDS dataset for tf.data-based (Open X-Embodiment) loaders.

  python data/export_rlds.py --input=datasets/demos --output=exports/demos_tfrecord

Then, anywhere: tfds.builder_from_directory('exports/demos_tfrecord').as_dataset(split='train').
This loads TensorFlow: it runs in its own process, never next to MuJoCo rendering.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('input', None, 'RLDS dataset (array_record).')
flags.DEFINE_string('output', None, 'New directory for the TFRecord copy.')
flags.DEFINE_integer('episodes_per_shard', 64, 'Episodes per TFRecord file.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from habc.data import export
  count = export.export_tfrecord(FLAGS.input, FLAGS.output,
                                 episodes_per_shard=FLAGS.episodes_per_shard)
  print(f'Exported {count} episodes to {FLAGS.output} (TFRecord).')


if __name__ == '__main__':
  flags.mark_flags_as_required(['input', 'output'])
  app.run(main)
