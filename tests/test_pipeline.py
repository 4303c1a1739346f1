"""End to end: the smoke preset of the whole pipeline for two methods, with stops and resumes.

A stop is an exception raised from the pipeline's event hook (what a crash at that point leaves
on disk, minus the process dying); the re-run must finish the run without recollecting or losing
anything. The simulated task is ``insert`` (the fastest to simulate); observations are state only.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

from habc.run import pipeline
from habc.run import backend as backend_lib
from habc.run import paths as paths_lib

# Reuse compiled programs across the runs of this module (and across test sessions).
jax.config.update('jax_compilation_cache_dir',
                  os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)

TASK = 'insert'


def smoke_config(method: str):
  import importlib
  config = importlib.import_module(f'experiments.{method}').get_config('smoke')
  config.task = TASK
  return config


def stop_at(predicate):
  def hook(event, info):
    if predicate(event, info):
      raise pipeline.Stop(f'stopped at {event} {info}')
  return hook


def episode_ids(path):
  from habc.data import episodes as episodes_lib
  source = episodes_lib.EpisodeSource(path, cameras=())
  return [str(source[i]['episode_metadata']['episode_id']) for i in range(len(source))]


def check_finished_run(workdir, config):
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  rounds = config.pipeline.rounds
  for key in ['demos', 'sft', 'report'] + [f'eval_{r:03d}' for r in range(rounds + 1)] + [
      f'{p}_{r:03d}' for r in range(1, rounds + 1) for p in ('collect', 'train', 'round')]:
    assert progress.get(key), f'{key} not complete: {progress}'
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert [r['round'] for r in summary['rounds']] == list(range(rounds + 1))
  for r in summary['rounds']:
    ev = r['eval']
    assert ev['episodes'] == config.eval.episodes
    assert 0.0 <= ev['ci_low'] <= ev['success_rate'] <= ev['ci_high'] <= 1.0
  # Every round's rollouts are in its dataset exactly once, in order.
  for r in range(1, rounds + 1):
    ids = episode_ids(os.path.join(workdir, 'data', f'round_{r:03d}'))
    assert ids == [f'round{r:03d}-{i:05d}' for i in range(config.rollout.episodes_per_round)]
  assert len(episode_ids(os.path.join(workdir, 'data', 'demos'))) == config.data.num_demos
  # The final checkpoint is at the last step, with the config beside it.
  from habc.run import checkpoints
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
  final = config.pipeline.sft_steps + rounds * config.pipeline.steps_per_round
  assert ckpt.latest_step() == final
  ckpt.close()
  assert os.path.exists(os.path.join(workdir, 'report.md'))
  assert os.path.exists(os.path.join(workdir, 'plots', 'success.png'))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(os.path.join(workdir, 'logs')))
  assert 'tensorflow' not in sys.modules
  return summary


def check_restored_learner(workdir, config):
  """The run's last checkpoint restores params, optimiser state, step, config and statistics."""
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(workdir))
  final = config.pipeline.sft_steps + config.pipeline.rounds * config.pipeline.steps_per_round
  assert backend.load_latest(os.path.join(workdir, 'checkpoints')) == final == backend.step
  from habc.run import checkpoints
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
  restored = ckpt.restore(backend.learner.state)
  assert restored.meta['stage'] == f'round_{config.pipeline.rounds:03d}'
  assert restored.config['name'] == config.name
  assert set(restored.stats['mean']) >= {'state', 'action'}
  # Adam's step counters hold every update since SFT began (a dropped state would restart them);
  # the actor's skip the critic phase's critic-only updates.
  def counts(label):
    return [int(np.asarray(x)) for x in jax.tree.leaves(restored.state.opt_state.inner_states[label])
            if np.asarray(x).dtype == np.int32 and np.asarray(x).shape == ()]
  actor_updates = final - config.pipeline.rounds * config.critic.phase_steps
  assert counts('critic') and all(c == final for c in counts('critic'))
  assert counts('actor') and all(c == actor_updates for c in counts('actor'))
  ckpt.close()
  backend.close()


def test_smoke_habc_resumes_between_stages(tmp_path):
  config = smoke_config('habc')
  config.critic.curve_every = 2  # Points at 0, 2 and 4 of a round's 4 updates.
  workdir = str(tmp_path / 'run')
  log = []
  with pytest.raises(pipeline.Stop):
    pipeline.run(config, workdir, on_event=stop_at(lambda e, i: e == 'done:sft'),
                 log=log.append)
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  assert progress == {'demos': True, 'sft': True}
  demos_before = sorted(os.listdir(os.path.join(workdir, 'demos', 'hdf5')))

  events = []
  summary = pipeline.run(config, workdir, on_event=lambda e, i: events.append(e), log=log.append)
  assert 'demo' not in events and 'train_step' in events  # Nothing redone before the stop.
  assert sorted(os.listdir(os.path.join(workdir, 'demos', 'hdf5'))) == demos_before
  check_finished_run(workdir, config)
  # One summary line per round, with the learner's numbers.
  lines = [line for line in log if line.startswith('round ')]
  assert len(lines) == config.pipeline.rounds + 1
  assert 'success' in lines[-1] and 'gate' in lines[-1] and 'collected' in lines[-1]
  assert os.path.exists(os.path.join(workdir, 'plots', 'gates.png'))
  assert summary['rounds'][1]['train']['critic/loss'] > 0
  # Held-out critic diagnostics: round 1's critic on its held-out episode and on round 2's
  # rollouts; round 2's (the last) on its held-out episode only.
  from habc.run import critic_diagnostics
  runs = critic_diagnostics.load_run(workdir)
  assert [d['round'] for d in runs] == [1, 2]
  assert set(runs[0]) == {'round', 'holdout', 'next_round'} and 'next_round' not in runs[1]
  for split in ('holdout', 'next_round'):
    diag = runs[0][split]
    assert diag['windows'] > 0 and 'viability' in diag and 'efficiency' in diag
    assert 0 <= diag['gate']['saturated_fraction'] <= 1
    assert diag['actor_batches']['batches'] == 8
  assert any(line.startswith('critic of round 1 on next_round') for line in log)
  assert os.path.exists(os.path.join(workdir, 'logs', 'critic_round_001_next_round.npz'))
  from habc.analysis import credit
  collected = [json.loads(line) for r in (1, 2) for line in
               open(os.path.join(workdir, 'logs', f'collect_round_{r:03d}.jsonl'))]
  rows = credit.workdir_credit(workdir, config.to_dict(), [1, 2])
  assert [row['episodes'] for row in rows] == [config.rollout.episodes_per_round] * 2
  assert sum(row['with_intervention'] for row in rows) == sum(
      c['intervention_steps'] > 0 for c in collected)
  assert sum(row['rescued'] for row in rows) == sum(
      c['intervention_steps'] > 0 and c['success'] for c in collected)
  for r in (1, 2):  # The held-out critic's curve inside each round.
    curve = json.load(open(os.path.join(workdir, 'logs', f'critic_curve_round_{r:03d}.json')))
    assert list(curve) == ['0', '2', '4'] and set(curve['2']) == {'auc', 'brier', 'r2', 'mae',
                                                            'saturated'}
  report_text = open(os.path.join(workdir, 'report.md')).read()
  assert '## Critic on held-out data' in report_text and '| 1 | next_round |' in report_text
  assert os.path.exists(os.path.join(workdir, 'plots', 'critic_reliability_holdout.png'))
  assert '![critic curve](plots/critic_curve.png)' in report_text

  check_restored_learner(workdir, config)

  # A third run finds everything done and changes nothing.
  events.clear()
  pipeline.run(config, workdir, on_event=lambda e, i: events.append(e), log=log.append)
  assert not [e for e in events if not e.startswith('done:report')]


def test_single_stage_mode_needs_earlier_stages(tmp_path):
  config = smoke_config('habc')
  with pytest.raises(pipeline.StageOrderError, match='--mode=demos'):
    pipeline.run(config, str(tmp_path / 'run'), mode='sft', backend=_NoBackend(),
                 log=lambda line: None)


def test_mismatched_workdir_is_refused_with_differences(tmp_path):
  config = smoke_config('habc')
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  pipeline.prepare_workdir(config, workdir)  # Same config: fine (resume).
  other = smoke_config('habc')
  other.learner.batch_size = 16
  other.runtime.num_workers = 1  # Runtime settings do not count.
  with pytest.raises(pipeline.ConfigMismatchError) as err:
    pipeline.prepare_workdir(other, workdir)
  message = str(err.value)
  assert 'learner.batch_size: workdir=8 now=16' in message and 'num_workers' not in message
  assert '--overwrite' in message
  pipeline.prepare_workdir(other, workdir, overwrite=True)
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['learner']['batch_size'] == 16


def test_round_config_switches_intervention_reweighting():
  config = smoke_config('habc_ir')
  start = config.pipeline.intervention_reweighting_from_round
  assert start == config.pipeline.rounds >= 2
  assert not pipeline.intervention_reweighting_at(config, 0)
  assert not pipeline.intervention_reweighting_at(config, start - 1)
  assert pipeline.intervention_reweighting_at(config, start)
  assert not pipeline.intervention_reweighting_at(smoke_config('habc'), config.pipeline.rounds)


class _NoBackend:
  def bind(self, paths):
    pass

  def close(self):
    pass


def test_smoke_imit_dagger_resumes_mid_round(tmp_path):
  config = smoke_config('imit_dagger')
  workdir = str(tmp_path / 'run')
  quiet = lambda line: None
  # Stop 1: in round 1's collection, after two episodes were committed.
  with pytest.raises(pipeline.Stop):
    pipeline.run(config, workdir, log=quiet, on_event=stop_at(
        lambda e, i: e == 'collect' and i['round'] == 1 and i['index'] == 1))
  assert episode_ids(os.path.join(workdir, 'data', 'round_001')) == [
      'round001-00000', 'round001-00001']
  # Stop 2: in round 1's training, between checkpoints.
  sft = config.pipeline.sft_steps
  stop_step = sft + 2
  assert stop_step % config.pipeline.checkpoint_every
  with pytest.raises(pipeline.Stop):
    pipeline.run(config, workdir, log=quiet, on_event=stop_at(
        lambda e, i: e == 'train_step' and i['step'] == stop_step))
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  assert progress.get('collect_001') and not progress.get('train_001')

  from habc.run import checkpoints
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
  resume_from = ckpt.latest_step()
  ckpt.close()
  assert sft <= resume_from < stop_step

  steps = []
  pipeline.run(config, workdir, log=quiet,
               on_event=lambda e, i: steps.append(i['step']) if e == 'train_step' else None)
  # Training went on from the checkpoint, not from scratch and not from SFT's first step.
  assert steps[0] == resume_from + 1
  summary = check_finished_run(workdir, config)
  assert summary['method'] == 'imit_dagger'


def test_smoke_vision_observations(tmp_path):
  """Camera images go the whole way: rendered in workers, HDF5, RLDS, batches, the policy."""
  config = smoke_config('habc_v')
  config.obs = 'vision'
  config.cameras = ('top', 'wrist_left', 'wrist_right')
  config.pipeline.rounds = 1
  config.rollout.episodes_per_round = 2
  config.eval.episodes = 2
  config.eval.video_camera = 'top'
  workdir = str(tmp_path / 'run')
  summary = pipeline.run(config, workdir, log=lambda line: None)
  assert [r['round'] for r in summary['rounds']] == [0, 1]
  from habc.data import episodes as episodes_lib
  episode = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', 'round_001'))[0]
  size = config.image_size
  for camera in config.cameras:
    images = episode['steps']['observation'][camera]
    assert images.shape[1:] == (size, size, 3) and images.std() > 0  # Rendered, not blank.
  frames = np.load(os.path.join(workdir, 'eval', 'round_001_frames.npz'))
  assert any(name in frames for name in ('success', 'failure'))
  assert any(f.endswith('_strip.png') for f in os.listdir(os.path.join(workdir, 'plots')))
