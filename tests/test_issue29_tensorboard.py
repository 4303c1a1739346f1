"""Issue 29, TensorBoard: the documented viewer is installed, evaluation and training share the
learner-step x-axis, and a resumed run shows each step once.

Event files are read back with TensorBoard's own loader (EventAccumulator: it applies the purge
marker and its own restart detection) on TensorBoard's TensorFlow stub, so TensorFlow stays out
of the test process (it crashes MuJoCo's software rendering).
"""

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from habc.run import metrics_writer
from habc.run import pipeline
from tests.test_crash_resume import FakeBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensorboard_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} as TensorBoard shows the run in ``logdir``."""
  # The no-TensorFlow build of TensorBoard is told apart by this module; with it, TensorBoard's
  # compat layer uses its stub and never imports TensorFlow.
  sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={'scalars': 0})
  acc.Reload()
  assert 'tensorflow' not in sys.modules
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_tensorboard_is_installed_with_its_command():
  """The README's `tensorboard --logdir` works after setup.sh: pinned, installed, runnable."""
  pins = dict(line.strip().split('==') for line in open(os.path.join(ROOT, 'requirements.txt'))
              if '==' in line and not line.startswith('#'))
  assert 'tensorboard' in pins, 'tensorboard is not pinned in requirements.txt'
  from importlib import metadata
  assert metadata.version('tensorboard') == pins['tensorboard']
  exe = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
  assert os.path.exists(exe), exe
  out = subprocess.run([exe, '--version_tb'], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == pins['tensorboard'], out.stderr[-2000:]


def test_writer_resumed_at_a_step_discards_what_was_logged_after_it(tmp_path):
  logdir = str(tmp_path / 'logs')
  first = metrics_writer.MetricsWriter(logdir)
  for step in range(2, 15, 2):
    first.scalars(step, {'loss': 1.0}, prefix='train')
  first.scalars(14, {'success_rate': 0.5}, prefix='eval')
  first.close()
  # The run stopped after step 14; its newest checkpoint is 12. It goes on from there, logging
  # 14 again (a step equal to the newest logged one: TensorBoard's own restart detection, which
  # needs a smaller step, does not catch it).
  again = metrics_writer.MetricsWriter(logdir, resume_step=12)
  assert again.purge_step == 13
  for step in (14, 16):
    again.scalars(step, {'loss': 2.0}, prefix='train')
  again.close()

  shown = tensorboard_scalars(logdir)
  assert shown['train/loss'] == [(s, 1.0) for s in range(2, 13, 2)] + [(14, 2.0), (16, 2.0)]
  assert shown.get('eval/success_rate', []) == []  # Evaluated after step 12: to be redone.
  rows = metrics_writer.read_jsonl(logdir)
  assert [(r['prefix'], r['step']) for r in rows] == [('train', s) for s in range(2, 17, 2)]
  assert [r['loss'] for r in rows if r['step'] >= 14] == [2.0, 2.0]


def test_without_the_resume_step_tensorboard_shows_a_step_twice(tmp_path):
  """What the purge marker is for: TensorBoard's own restart detection misses this resume."""
  logdir = str(tmp_path / 'logs')
  for value, steps in ((1.0, (12, 14)), (2.0, (14, 16))):
    w = metrics_writer.MetricsWriter(logdir)
    for step in steps:
      w.scalars(step, {'loss': value}, prefix='train')
    w.close()
  assert [s for s, _ in tensorboard_scalars(logdir)['train/loss']] == [12, 14, 14, 16]


def test_fresh_writer_keeps_everything_and_writes_no_marker(tmp_path):
  logdir = str(tmp_path / 'logs')
  w = metrics_writer.MetricsWriter(logdir, resume_step=0)
  assert w.purge_step is None  # No event file yet: nothing to purge.
  w.scalars(1, {'loss': 1.0}, prefix='train')
  w.close()
  assert tensorboard_scalars(logdir)['train/loss'] == [(1, 1.0)]


def _smoke_config():
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  return config


def _stop_at_step(step):
  def hook(event, info):
    if event == 'train_step' and info['step'] == step:
      raise pipeline.Stop(f'stopped at step {step}')
  return hook


def test_pipeline_eval_on_learner_steps_and_resume_logs_each_step_once(tmp_path):
  config = _smoke_config()
  sft, per_round = config.pipeline.sft_steps, config.pipeline.steps_per_round
  assert config.pipeline.log_every == 2 and per_round == 4
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  quiet = lambda line: None

  def new(step, **kw):
    return pipeline.Pipeline(config, workdir, backend=FakeBackend(config, step=step), log=quiet,
                             **kw)

  p = new(sft)
  for key in ('demos', 'sft', 'collect_001'):
    p.mark(key)
  p.run('eval')  # Round 0 (SFT), at the SFT checkpoint's step.
  p.close()
  # Round 1's training stops at sft + 3, after logging sft + 2.
  p = new(sft, on_event=_stop_at_step(sft + 3))
  with pytest.raises(pipeline.Stop):
    p.run('train')
  p.close()
  # The newest checkpoint is SFT's: the run goes on from there and logs sft + 2 again.
  end = sft + per_round
  for mode, step in (('train', sft), ('eval', end)):
    p = new(step)
    p.run(mode)
    p.close()

  logs = os.path.join(workdir, 'logs')
  shown = tensorboard_scalars(logs)
  assert [s for s, _ in shown['train/loss']] == [sft + 2, sft + 4]
  assert [s for s, _ in shown['eval/success_rate']] == [sft, end]
  assert shown['eval/round'] == [(sft, 0.0), (end, 1.0)]
  train_rows = metrics_writer.read_jsonl(logs, 'train')
  assert [r['step'] for r in train_rows] == [sft + 2, sft + 4]
  assert [(r['step'], r['round']) for r in metrics_writer.read_jsonl(logs, 'eval')] == [
      (sft, 0), (end, 1)]
  for r in (0, 1):
    stats = json.load(open(os.path.join(workdir, 'eval', f'round_{r:03d}.json')))
    assert stats['step'] == shown['eval/success_rate'][r][0]
    assert np.isclose(stats['success_rate'], shown['eval/success_rate'][r][1])
