"""Converts teleop recordings into an RLDS dataset (tfds array_record).

  python data/convert_teleop.py --format=aloha_hdf5 --input=recordings/ --output=datasets/demos \
      --instruction="fold the cloth" --resize=64x64 --cameras=cam_high:top,cam_left_wrist:wrist_left

Formats: aloha_hdf5 (episode_*.hdf5), lerobot (a LeRobot v2.x folder), npz (one .npz per episode;
array names in habc/data/converters/npz.py). Appends to --output when it already holds a dataset.
Bad input stops the conversion with a message naming the file, episode and field (the episodes
converted before it stay in the dataset); --skip-bad converts the rest and lists what it skipped.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

flags.DEFINE_enum('format', None, ['aloha_hdf5', 'lerobot', 'npz'], 'Recording format.')
flags.DEFINE_string('input', None, 'Folder (or file) of recordings.')
flags.DEFINE_string('output', None, 'RLDS dataset directory (created or appended to).')
flags.DEFINE_string('task', '', 'Task name stored in the metadata (default: from the files).')
flags.DEFINE_string('instruction', '', 'Language instruction (default: from the files).')
flags.DEFINE_string('resize', '', 'Resize every camera to HxW, e.g. 64x64.')
flags.DEFINE_string('success', '', 'Outcome (true/false) of episodes whose file records none.')
flags.DEFINE_string('cameras', '', 'Cameras to keep, optionally renamed: src[:dst],...')
flags.DEFINE_enum('source', 'demo', ['demo', 'rollout', 'converted'], 'Episode metadata source.')
flags.DEFINE_string('operator', 'teleop', 'Episode metadata operator.')
flags.DEFINE_enum('image_format', 'jpeg', ['jpeg', 'png'], 'Image storage in a new dataset.')
flags.DEFINE_bool('skip_bad', False, 'Skip bad episodes (listed at the end) instead of stopping.')
flags.DEFINE_bool('progress', True, 'Show a progress bar.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from habc.data import converters
  try:
    summary = converters.convert(
        FLAGS.format, FLAGS.input, FLAGS.output, skip_bad=FLAGS.skip_bad,
        progress=FLAGS.progress, task=FLAGS.task, instruction=FLAGS.instruction,
        resize=FLAGS.resize, success=FLAGS.success, cameras=FLAGS.cameras, source=FLAGS.source,
        operator=FLAGS.operator, image_format=FLAGS.image_format)
  except (converters.ConversionError, ValueError, FileNotFoundError,
          RuntimeError) as e:  # RuntimeError: DatasetLockedError (another writer).
    from habc.data import writer
    print(f'error: {e}', file=sys.stderr)
    print(f'{FLAGS.output} holds {writer.num_episodes(FLAGS.output)} episodes (unchanged by the '
          'failed one).', file=sys.stderr)
    return 1
  print(summary.format())
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['format', 'input', 'output'])
  sys.argv = [a.replace('--skip-bad', '--skip_bad') for a in sys.argv]
  app.run(lambda argv: sys.exit(main(argv)))
