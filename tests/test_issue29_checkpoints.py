"""Issue 29: a cut checkpoint is reported in one line, set aside, and the run falls back to the
newest readable one with its stage bookkeeping rolled back; a full disk during a save leaves no
orbax temporary directory and gives one clear message."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from habc.run import checkpoints, pipeline
from habc.run import paths as paths_lib
from habc.run import storage_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value=1.0):
  noise = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)  # Incompressible.
  noise[0, 0] = value
  return {'params': {'w': jnp.asarray(noise)}, 'step': jnp.zeros((), jnp.int32)}


def _cut_largest_file(step_dir):
  files = []
  for root, _, names in os.walk(os.path.join(step_dir, 'state')):
    if 'ocdbt.process_' in root and os.path.basename(root) == 'd':  # Array data.
      files += [os.path.join(root, n) for n in names]
  biggest = max(files, key=os.path.getsize)
  size = os.path.getsize(biggest)
  with open(biggest, 'r+b') as f:
    f.truncate(size // 2)


def test_cut_checkpoint_is_one_line_error_and_newest_readable_falls_back(tmp_path):
  directory = str(tmp_path / 'ck')
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=3)
  for step in (3, 6):
    ckpt.save(step, _state(step), config={}, stats={'x': np.zeros(1)})
  _cut_largest_file(os.path.join(directory, '6'))
  with pytest.raises(checkpoints.CheckpointReadError) as info:
    ckpt.restore(_state())
  message = str(info.value)
  assert message.startswith(f'Checkpoint 6 in {directory} is unreadable: ')
  assert '\n' not in message and 'OUT_OF_RANGE' in message, message
  assert info.value.__cause__ is None  # No chain of orbax tracebacks behind it.
  step, skipped = ckpt.newest_readable()
  assert step == 3 and [s for s, _, _ in skipped] == [6]
  assert skipped[0][2] == os.path.join(directory + '.unreadable', '6')
  assert os.path.isdir(skipped[0][2]) and ckpt.all_steps() == [3]
  restored = ckpt.restore(_state())
  assert restored.step == 3 and float(restored.state['params']['w'][0, 0]) == 3.0
  ckpt.close()


def _smoke_config():
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  return config


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write('{}')


def test_fall_back_rolls_the_stage_bookkeeping_back(tmp_path):
  """The newest checkpoint (end of round 2) is cut: the run resumes from the one before it
  (mid round 2), with round 2's training, evaluation and the report to redo, and round 2's
  collected episodes kept (they came from the end-of-round-1 policy)."""
  config = _smoke_config()
  sft, per_round = config.pipeline.sft_steps, config.pipeline.steps_per_round
  end2 = sft + 2 * per_round
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  paths = paths_lib.Paths(workdir)
  ckpt = checkpoints.Checkpointer(paths.checkpoints, max_to_keep=2)
  for step in (end2 - 1, end2):
    ckpt.save(step, _state(step), config={}, stats={'x': np.zeros(1)})
  ckpt.close()
  _cut_largest_file(os.path.join(paths.checkpoints, str(end2)))
  done = ['demos', 'sft', 'eval_000', 'collect_001', 'train_001', 'eval_001', 'round_001',
          'collect_002', 'train_002', 'eval_002', 'round_002', 'report']
  pipeline._write_json(os.path.join(workdir, 'progress.json'), {k: True for k in done})  # pylint: disable=protected-access
  kept = [paths.eval_results(1), paths.gates(1), paths.collect_log(2),
          os.path.join(paths.round_data(2), 'dataset_info.json'),
          os.path.join(paths.logs, 'critic_round_001.json')]
  # Round 2's held-out critic diagnostics measured the cut checkpoint: redone with the round.
  redone = [paths.eval_results(2), paths.eval_frames(2), paths.gates(2),
            os.path.join(paths.logs, 'train_round_002.json'),
            os.path.join(paths.logs, 'critic_round_002.json'),
            os.path.join(paths.logs, 'critic_round_002_holdout.npz')]
  for path in kept + redone:
    _touch(path)
  lines = []
  p = pipeline.Pipeline(config, workdir, log=lines.append)
  p.close()
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  assert sorted(progress) == sorted(done[:8])
  assert all(os.path.exists(f) for f in kept)
  assert not any(os.path.exists(f) for f in redone)
  aside = os.listdir(os.path.join(workdir, 'rolled_back'))
  assert len(aside) == 1
  assert os.path.exists(os.path.join(workdir, 'rolled_back', aside[0], 'eval', 'round_002.jsonl'))
  assert len(lines) == 2, lines
  assert lines[0].startswith(f'checkpoint {end2} in {paths.checkpoints} is unreadable (')
  assert f'newest readable checkpoint is {end2 - 1}' in lines[1]
  assert 'train_002, eval_002, round_002, report' in lines[1]
  assert os.listdir(paths.checkpoints + '.unreadable') == [str(end2)]


def test_deleted_checkpoint_no_longer_leaves_the_run_stuck(tmp_path):
  """The newest checkpoint deleted by hand: the stages after the newest left are redone (before
  the fix: 'needs the checkpoint of step N' until --overwrite)."""
  config = _smoke_config()
  sft, per_round = config.pipeline.sft_steps, config.pipeline.steps_per_round
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  paths = paths_lib.Paths(workdir)
  ckpt = checkpoints.Checkpointer(paths.checkpoints)
  ckpt.save(sft, _state(), config={}, stats={'x': np.zeros(1)})
  ckpt.close()
  done = ['demos', 'sft', 'eval_000', 'collect_001', 'train_001', 'eval_001', 'round_001',
          'collect_002']
  pipeline._write_json(os.path.join(workdir, 'progress.json'), {k: True for k in done})  # pylint: disable=protected-access
  for path in (paths.collect_log(1), paths.collect_log(2),
               os.path.join(paths.round_data(2), 'dataset_info.json')):
    _touch(path)
  lines = []
  pipeline.Pipeline(config, workdir, log=lines.append).close()
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  assert sorted(progress) == sorted(['demos', 'sft', 'eval_000', 'collect_001'])
  assert os.path.exists(paths.collect_log(1))
  assert not os.path.exists(paths.collect_log(2)) and not os.path.exists(paths.round_data(2))
  assert len(lines) == 1 and f'newest readable checkpoint is {sft}' in lines[0]
  assert sft + per_round > sft  # (Round 1's training restarts from the SFT checkpoint.)
  # Nothing to undo on the next start: no line at all.
  lines.clear()
  pipeline.Pipeline(config, workdir, log=lines.append).close()
  assert lines == []


def _mount_tmpfs(path, size='3m'):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path],
                          capture_output=True, text=True)
  return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
  path = str(tmp_path / 'disk')
  if os.geteuid() != 0 or not _mount_tmpfs(path):
    pytest.skip('needs root to mount a small tmpfs (a real full disk)')
  yield path
  subprocess.run(['umount', '-l', path], check=False)


def test_disk_full_during_a_save_leaves_no_temporary_directory(small_disk):
  directory = os.path.join(small_disk, 'ck')
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=5)
  ckpt.save(1, _state(), config={}, stats={'x': np.zeros(1)})
  big = {'params': {'w': jnp.asarray(np.random.default_rng(1).normal(size=(1024, 1024)),
                                     jnp.float32)}, 'step': jnp.zeros((), jnp.int32)}  # 4 MB.
  with pytest.raises(storage_errors.StorageError) as info:
    ckpt.save(2, big, config={}, stats={'x': np.zeros(1)})
  assert 'the disk is full' in str(info.value) and 'run the same command again' in str(info.value)
  assert info.value.__cause__ is None
  assert sorted(os.listdir(directory)) == ['1']  # No orbax tmp directory, no step 2.
  assert ckpt.restore(_state()).step == 1
  ckpt.close()
