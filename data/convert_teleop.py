r"""Converts teleop recordings into an RLDS dataset (tfds array_record).

  python data/convert_teleop.py --format=aloha_hdf5 --input=recordings/ --output=datasets/demos \
      --instruction="fold the cloth" --resize=64x64 --cameras=cam_high:top,cam_left_wrist:wrist_left

Required: --format, --input, --output. Also --instruction when the files record none (ALOHA and
LeRobot image-only files often do not) and --success=true|false when they record no outcome.
Appends to --output when it already holds a dataset. Bad input stops the conversion with a message
naming the file, episode and field (the episodes converted before it stay in the dataset);
--skip-bad converts the rest and lists what it skipped.

What each format reads (docs/data.md has the details):

  aloha_hdf5  a folder of episode_*.hdf5 (or one file), as the ALOHA / Mobile ALOHA / ACT
              recorders write them: /observations/qpos [T,S] (the state; with --state=auto or
              qpos+qvel also /observations/qvel), /observations/images/<camera> (uint8
              [T,H,W,3], or JPEG rows when the root attribute `compress` is set: decoded so that
              the recorders' RGB arrays round-trip, --jpeg_channels=bgr for standard JPEGs),
              /action [T,A]; Mobile ALOHA's /base_action [T,2] needs --base_action=append|drop.
              Optional: /observations/privileged, /policy_action, /is_intervention, attributes
              success, instruction, task.
  lerobot     a LeRobot dataset folder, codebase v3.0 (meta/info.json, meta/episodes/*.parquet,
              meta/tasks.parquet, data/chunk-*/file-*.parquet holding several episodes,
              videos/<key>/chunk-*/file-*.mp4 with time spans per episode) or v2.0 / v2.1
              (meta/episodes.jsonl, meta/tasks.jsonl, one parquet and one mp4 per episode).
              Columns: observation.state, action; cameras: observation.images.<camera> (video or
              image features); optional is_intervention, policy_action, next.success.
  npz         one .npz per episode: state (or qpos), action, image_<camera>; optional
              privileged, policy_action, is_intervention, success, instruction, task.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

flags.DEFINE_enum('format', None, ['aloha_hdf5', 'lerobot', 'npz'], 'Recording format '
                  '(required; what each reads: see above).')
flags.DEFINE_string('input', None, 'Folder (or file) of recordings (required).')
flags.DEFINE_string('output', None, 'RLDS dataset directory, created or appended to (required).')
flags.DEFINE_string('task', '', 'Task name stored in the metadata (default: from the files).')
flags.DEFINE_string('instruction', '', 'Language instruction (default: from the files; required '
                    'when they record none).')
flags.DEFINE_string('resize', '', 'Resize every camera to HxW, e.g. 64x64.')
flags.DEFINE_string('success', '', 'Outcome (true/false) of episodes whose file records none '
                    '(required for such files).')
flags.DEFINE_string('cameras', '', 'Cameras to keep, optionally renamed: src[:dst],...')
flags.DEFINE_enum('source', 'demo', ['demo', 'rollout', 'converted'], 'Episode metadata source.')
flags.DEFINE_string('operator', 'teleop', 'Episode metadata operator.')
flags.DEFINE_enum('image_format', 'jpeg', ['jpeg', 'png'], 'Image storage in a new dataset.')
flags.DEFINE_enum('state', 'auto', ['auto', 'qpos', 'qpos+qvel'], 'aloha_hdf5: the state: qpos '
                  'alone, qpos+qvel (qvel required), or auto (qvel appended when present).')
flags.DEFINE_enum('base_action', '', ['', 'append', 'drop'], "aloha_hdf5: Mobile ALOHA's "
                  '/base_action: append it to the action, or drop it; without the flag a file '
                  'that has one is refused.')
flags.DEFINE_enum('jpeg_channels', 'rgb', ['rgb', 'bgr'], 'aloha_hdf5 JPEG rows: the channel '
                  'order of the arrays the recorder encoded with OpenCV (rgb: the ALOHA '
                  'recorders; bgr: standard JPEGs).')
flags.DEFINE_bool('skip_bad', False, 'Skip bad episodes (listed at the end) instead of stopping.')
flags.DEFINE_bool('progress', True, 'Show a progress bar.')
FLAGS = flags.FLAGS
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def main(argv):
  del argv
  from habc.data import converters
  from habc.data import writer
  try:
    summary = converters.convert(
        FLAGS.format, FLAGS.input, FLAGS.output, skip_bad=FLAGS.skip_bad,
        progress=FLAGS.progress, task=FLAGS.task, instruction=FLAGS.instruction,
        resize=FLAGS.resize, success=FLAGS.success, cameras=FLAGS.cameras, source=FLAGS.source,
        operator=FLAGS.operator, image_format=FLAGS.image_format, state=FLAGS.state,
        base_action=FLAGS.base_action, jpeg_channels=FLAGS.jpeg_channels)
  except (converters.ConversionError, ValueError, FileNotFoundError,
          RuntimeError) as e:  # RuntimeError: DatasetLockedError (another writer).
    print(f'error: {e}', file=sys.stderr)
    print(f'{FLAGS.output} holds {writer.num_episodes(FLAGS.output)} episodes (unchanged by the '
          'failed one).', file=sys.stderr)
    return 1
  print(summary.format())
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['format', 'input', 'output'])
  sys.argv = [a.replace('--skip-bad', '--skip_bad') for a in sys.argv]
  try:
    app.run(lambda argv: sys.exit(main(argv)))
  except SystemExit as e:  # absl exits 1 after printing the help.
    if e.code == 1 and any(a in HELP_FLAGS for a in sys.argv[1:]):
      sys.exit(0)
    raise
