"""TFRecord copy of an RLDS dataset, for tf.data-based Open X-Embodiment loaders (Octo).

The working format is array_record (readable without TensorFlow). Loaders built on tf.data, Octo's
``make_dataset_from_rlds`` and the OXE mixers among them, call ``tfds.builder(name, data_dir)``,
which reads ``<data_dir>/<name>/<version>/``: the export writes that layout, under the ``name``
given (each dataset a mixer combines needs its own; every habc dataset is ``habc_episodes``
inside). Records are the same tf.Example per episode as in the working format, with two changes:

* the last step (the final observation, whose action is all zeros: nothing was executed from it)
  is dropped by default (``last_step='drop'``): Octo trains on every step's action. The step
  before it becomes the last (``is_last``), taking over the episode's ``is_terminal``, ``reward``
  and ``discount``. ``last_step='keep'`` copies episodes unchanged; the zero action is then
  marked only by ``is_last``.
* the dataset metadata (``metadata.json`` and the description) records the control rate, what
  ``observation/state`` holds and the ``last_step`` choice. For habc's own tasks they are known;
  for converted teleop data pass ``control_hz`` and ``state_description``.

It needs TensorFlow: run it in its own process (data/export_rlds.py), never in one that renders
with MuJoCo.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from habc.data import writer as writer_lib

LAST_STEP_CHOICES = ('drop', 'keep')
NAME_PATTERN = re.compile(r'^[a-z][a-z0-9_]*$')
# habc's simulated tasks and their station counterparts (habc.envs.base.TaskEnv, kept in step
# with it by tests/test_issue29_export.py; no environment import here: this process loads TF).
HABC_TASKS = ('fold', 'pouch', 'insert', 'hw_fold', 'hw_pouch', 'hw_insert')
HABC_CONTROL_HZ = 10.0
HABC_STATE = ('12 floats, per arm (left, right): end-effector x, y, z (m, world frame), '
              'sin(yaw), cos(yaw), gripper opening in [0, 1] (1 = open)')
HABC_ACTION = ('10 floats in [-1, 1], per arm (left, right): end-effector dx, dy, dz (scaled by '
               'max_delta_pos per control step), dyaw (scaled by max_delta_yaw), gripper command')


def _first_task(input_path: str, name: str, lengths) -> str:
  """The ``task`` of the dataset's first episode ('' when it has none)."""
  import tensorflow as tf
  from array_record.python import array_record_module
  for index, length in enumerate(lengths):
    if not length:
      continue
    reader = array_record_module.ArrayRecordReader(
        os.path.join(input_path, writer_lib.shard_name(name, index)))
    try:
      example = tf.train.Example.FromString(reader.read([0])[0])
    finally:
      reader.close()
    values = example.features.feature['episode_metadata/task'].bytes_list.value
    return values[0].decode() if values else ''
  return ''


def drop_last_step(record: bytes) -> bytes:
  """One serialized episode without its final (zero-action) step; see the module docstring."""
  import tensorflow as tf
  example = tf.train.Example.FromString(record)
  features = example.features.feature
  num_steps = len(features['steps/is_last'].int64_list.value)
  if num_steps < 2:
    return record
  last = {key: _values(features[key])[-1] for key in
          ('steps/is_terminal', 'steps/reward', 'steps/discount') if key in features}
  for key, feature in features.items():
    if not key.startswith('steps/'):
      continue
    values = _values(feature)
    per_step, rest = divmod(len(values), num_steps)
    if rest:
      raise ValueError(f'{key}: {len(values)} values for {num_steps} steps.')
    del values[(num_steps - 1) * per_step:]
  _values(features['steps/is_last'])[-1] = 1
  for key, value in last.items():
    _values(features[key])[-1] = value
  return example.SerializeToString()


def _values(feature):
  return getattr(feature, feature.WhichOneof('kind')).value


def export_tfrecord(input_path: str, data_dir: str, *, name: str, version: str = '1.0.0',
                    episodes_per_shard: int = 64, last_step: str = 'drop',
                    control_hz: float | None = None, state_description: str | None = None
                    ) -> tuple[int, str]:
  """Writes a TFRecord copy of the dataset at ``input_path`` to ``<data_dir>/<name>/<version>/``.

  Args:
    input_path: an array_record RLDS dataset (habc's working format).
    data_dir: the tfds data directory (``tfds.builder(name, data_dir=data_dir)`` reads it); may
      hold other datasets.
    name: the dataset's name (snake_case: lower-case letters, digits, underscores).
    version: its version directory (x.y.z).
    episodes_per_shard: episodes per TFRecord file.
    last_step: 'drop' (default) or 'keep' the final zero-action step (module docstring).
    control_hz, state_description: recorded in the metadata; default for habc's own tasks.

  Returns:
    (episodes exported, the directory written). Written under a temporary name, then renamed, so
    a failed export leaves nothing half-written.
  """
  import tensorflow as tf  # Only here: this process must not render.
  from array_record.python import array_record_module
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_info, file_adapters, naming
  from tensorflow_datasets.core import splits as splits_lib

  if not NAME_PATTERN.match(name or ''):
    raise ValueError(f'--name={name!r}: a dataset name is snake_case (lower-case letters, '
                     'digits and underscores, starting with a letter), e.g. fold_teleop_2024.')
  if not re.match(r'^\d+\.\d+\.\d+$', version):
    raise ValueError(f'--version={version!r}: a dataset version looks like 1.0.0.')
  if last_step not in LAST_STEP_CHOICES:
    raise ValueError(f'last_step must be one of {LAST_STEP_CHOICES}, got {last_step!r}.')
  output_path = os.path.join(data_dir, name, version)
  if os.path.exists(output_path):
    raise FileExistsError(f'{output_path} exists; export under another --name or --version, or '
                          'remove it first.')
  with open(os.path.join(input_path, 'dataset_info.json')) as f:
    info_json = json.load(f)
  source_name = info_json['name']
  lengths, _ = writer_lib.existing_shards(info_json)
  task = _first_task(input_path, source_name, lengths)
  habc_task = task in HABC_TASKS
  if control_hz is None and habc_task:
    control_hz = HABC_CONTROL_HZ
  if state_description is None and habc_task:
    state_description = HABC_STATE
  metadata = {'control_hz': control_hz, 'state': state_description,
              'action': HABC_ACTION if habc_task else None, 'last_step': last_step,
              'source_dataset': os.path.abspath(input_path), 'task': task}
  os.makedirs(os.path.dirname(output_path), exist_ok=True)
  tmp = f'{output_path.rstrip(os.sep)}.tmp-{os.getpid()}'
  os.makedirs(tmp)
  try:
    features = tfds.features.FeatureConnector.from_config(input_path)
    template = naming.ShardedFileTemplate(
        data_dir=tmp, dataset_name=name, split=writer_lib.SPLIT, filetype_suffix='tfrecord',
        template=naming.DEFAULT_FILENAME_TEMPLATE)

    def records():
      for index, length in enumerate(lengths):
        if not length:
          continue
        reader = array_record_module.ArrayRecordReader(
            os.path.join(input_path, writer_lib.shard_name(source_name, index)))
        try:
          for record in reader.read(list(range(length))):
            yield drop_last_step(record) if last_step == 'drop' else record
        finally:
          reader.close()

    total = int(sum(lengths))
    num_shards = max(1, -(-total // episodes_per_shard))
    shard_lengths, num_bytes, shard, out = [], 0, -1, None
    for i, record in enumerate(records()):
      if i % episodes_per_shard == 0:
        if out is not None:
          out.close()
        shard += 1
        shard_lengths.append(0)
        out = tf.io.TFRecordWriter(os.fspath(template.sharded_filepath(
            shard_index=shard, num_shards=num_shards)))
      out.write(record)
      shard_lengths[-1] += 1
      num_bytes += len(record)
    if out is not None:
      out.close()
    described = [info_json.get('description', '') or 'habc episodes (RLDS).']
    described.append(f'Control rate: {control_hz} Hz.' if control_hz else
                     'Control rate: not recorded (export with --control_hz).')
    described.append(f'observation/state: {state_description}.' if state_description else
                     'observation/state: not described (export with --state_description).')
    described.append('The final step (zero action) was dropped; the last step is the last '
                     'executed action.' if last_step == 'drop' else
                     'The final step holds the final observation and an all-zero action '
                     '(is_last).')
    info = dataset_info.DatasetInfo(
        builder=dataset_info.DatasetIdentity(name=name, version=version, data_dir=tmp,
                                             module_name=''),
        description=' '.join(described), features=features,
        metadata=dataset_info.MetadataDict(metadata))
    info.set_file_format(file_adapters.FileFormat.TFRECORD)
    info.set_splits(splits_lib.SplitDict([splits_lib.SplitInfo(
        name=writer_lib.SPLIT, shard_lengths=shard_lengths, num_bytes=num_bytes,
        filename_template=template)]))
    info.write_to_directory(tmp)
    for extra in os.listdir(input_path):  # Normalisation statistics and the like travel along.
      if extra.endswith('.json') and extra not in ('dataset_info.json', 'features.json'):
        shutil.copy(os.path.join(input_path, extra), tmp)
    os.replace(tmp, output_path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return int(sum(shard_lengths)), output_path
