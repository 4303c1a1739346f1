"""Issue 29: a dataset whose dataset_info.json is missing or cut keeps every shard.

Before the fix, a writer that opened such a dataset counted 0 committed shards and deleted every
one of them as "written but never committed" (seen with data/convert_teleop.py --output=<it>).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from habc.data import converters, episodes as episodes_lib, synthetic, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _episodes(n, start=0):
  rng = np.random.default_rng(start)
  return [synthetic.synthetic_episode(rng, num_steps=8 + i, cameras=('top',), image_size=16,
                                      episode_id=f'ep{start + i}') for i in range(n)]


def _ids(path):
  source = episodes_lib.EpisodeSource(path, cameras=())
  return [str(source[i]['episode_metadata']['episode_id']) for i in range(len(source))]


@pytest.mark.parametrize('damage', ['missing', 'cut'])
def test_writer_rebuilds_a_missing_or_cut_info_and_keeps_every_shard(tmp_path, damage):
  path = str(tmp_path / 'ds')
  writer.write_episodes(path, _episodes(3))
  info = os.path.join(path, 'dataset_info.json')
  if damage == 'missing':
    os.remove(info)
  else:
    data = open(info).read()
    open(info, 'w').write(data[:len(data) // 2])
  assert writer.needs_repair(path)
  writer.write_episodes(path, _episodes(1, start=7))
  assert _ids(path) == ['ep0', 'ep1', 'ep2', 'ep7']
  assert not writer.needs_repair(path)


def test_repair_without_features_json_stops_and_deletes_nothing(tmp_path):
  path = str(tmp_path / 'ds')
  writer.write_episodes(path, _episodes(2))
  os.remove(os.path.join(path, 'dataset_info.json'))
  os.remove(os.path.join(path, 'features.json'))
  shards = sorted(f for f in os.listdir(path) if '.array_record-' in f)
  with pytest.raises(writer.DatasetInfoError, match='Nothing was deleted'):
    writer.repair(path)
  from habc.data import schema
  with pytest.raises(writer.DatasetInfoError, match='neither dataset_info.json nor features.json'):
    writer.EpisodeWriter(path, schema.spec_of_episode(_episodes(1)[0]))
  assert sorted(f for f in os.listdir(path) if '.array_record-' in f) == shards


def test_gap_in_the_shards_is_refused(tmp_path):
  path = str(tmp_path / 'ds')
  writer.write_episodes(path, _episodes(3))
  os.remove(os.path.join(path, 'dataset_info.json'))
  os.remove(os.path.join(path, writer.shard_name(writer.DEFAULT_NAME, 1)))
  with pytest.raises(writer.DatasetInfoError, match=r'missing: \[1\]'):
    writer.repair(path)
  assert os.path.exists(os.path.join(path, writer.shard_name(writer.DEFAULT_NAME, 2)))


def test_convert_teleop_into_a_dataset_without_info_keeps_its_episodes(tmp_path):
  """The reported case: data/convert_teleop.py --output=<dataset without dataset_info.json>."""
  rng = np.random.default_rng(0)
  out = str(tmp_path / 'out')
  inp = tmp_path / 'in'
  inp.mkdir()
  for i in range(2):
    converters.write_aloha_hdf5(
        str(inp / f'episode_{i}.hdf5'), qpos=rng.normal(size=(6, 3)),
        action=rng.normal(size=(6, 2)), images={}, success=True, instruction='reach')
  cmd = [sys.executable, os.path.join(REPO, 'data', 'convert_teleop.py'), '--format=aloha_hdf5',
         f'--input={inp}', f'--output={out}', '--noprogress']
  first = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
  assert first.returncode == 0, first.stderr[-2000:]
  os.remove(os.path.join(out, 'dataset_info.json'))
  second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
  assert second.returncode == 0, second.stderr[-2000:]
  assert 'never committed' not in second.stderr
  assert 'rebuilt it from 2 shards' in second.stderr
  assert _ids(out) == ['episode_0', 'episode_1'] * 2


def test_pipeline_start_rebuilds_a_round_dataset_before_a_resumed_collection(tmp_path):
  """The resumed-collection path: the round's dataset lost its dataset_info.json; the pipeline
  rebuilds it at start-up, so the collection counts (and keeps) the committed episodes."""
  from experiments import habc as habc_experiment
  from habc.run import pipeline
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  round_data = paths_lib.Paths(workdir).round_data(1)
  writer.write_episodes(round_data, _episodes(2))
  os.remove(os.path.join(round_data, 'dataset_info.json'))
  lines = []
  pipeline.Pipeline(config, workdir, log=lines.append).close()
  assert lines == [f'{round_data}: dataset_info.json was missing or unreadable; rebuilt it from '
                   'its 2 committed episodes']
  assert _ids(round_data) == ['ep0', 'ep1']
  assert backend_lib.Backend(config).open_writer(round_data).num_episodes == 2
