"""TFRecord copy of an RLDS dataset, for tf.data-based Open X-Embodiment loaders.

The working format is array_record (readable without TensorFlow). Loaders built on tf.data read
TFRecord with ``tfds.builder_from_directory(path).as_dataset(split='train')``. Both formats hold
the same serialized tf.Example per episode, so the export copies records unchanged into TFRecord
shards and rewrites dataset_info.json. It needs TensorFlow: run it in its own process
(data/export_rlds.py), never in one that renders with MuJoCo.
"""

from __future__ import annotations

import json
import os
import shutil

from habc.data import writer as writer_lib


def export_tfrecord(input_path: str, output_path: str, *, episodes_per_shard: int = 64) -> int:
  """Writes a TFRecord copy of the dataset at ``input_path`` to ``output_path``.

  Args:
    input_path: an array_record RLDS dataset (habc's working format).
    output_path: the new dataset directory (must not exist; written under a temp name, then
      renamed, so a failed export leaves nothing half-written).
    episodes_per_shard: episodes per TFRecord file.

  Returns:
    The number of episodes exported.
  """
  import tensorflow as tf  # Only here: this process must not render.
  from array_record.python import array_record_module
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_info, file_adapters, naming
  from tensorflow_datasets.core import splits as splits_lib

  if os.path.exists(output_path):
    raise FileExistsError(f'{output_path} exists; export to a new directory.')
  with open(os.path.join(input_path, 'dataset_info.json')) as f:
    info_json = json.load(f)
  name = info_json['name']
  lengths, _ = writer_lib.existing_shards(info_json)
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
            os.path.join(input_path, writer_lib.shard_name(name, index)))
        try:
          for record in reader.read(list(range(length))):
            yield record
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
    info = dataset_info.DatasetInfo(
        builder=dataset_info.DatasetIdentity(name=name, version=info_json.get('version', '1.0.0'),
                                             data_dir=tmp, module_name=''),
        description=info_json.get('description', ''), features=features)
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
  return int(sum(shard_lengths))
