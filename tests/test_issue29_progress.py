"""Issue 29, progress: a smoke run shows the progress of its long work as a default run does; a
tqdm bar at a terminal, and where the output is not a terminal (a log file) a plain line at most
every ``PROGRESS_LINE_EVERY_S`` seconds instead of tqdm's redraws."""

import io
import os

from experiments import presets
from habc.run import pipeline
from tests.test_crash_resume import FakeBackend


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_smoke_preset_shows_progress_like_the_default():
  assert presets.make_config('smoke').runtime.progress
  assert presets.make_config('default').runtime.progress


def test_progress_lines_come_at_most_every_interval():
  clock, out = FakeClock(), io.StringIO()
  bar = pipeline.ProgressLines(100, 'train sft', initial=10, every_s=15.0, out=out, clock=clock)
  for _ in range(90):  # One unit a second for 90 s.
    clock.now += 1.0
    bar.update(1)
  bar.close()
  bar.close()
  lines = out.getvalue().splitlines(keepends=True)
  assert '\r' not in out.getvalue() and all(line.endswith('\n') for line in lines)
  assert [line.split(',')[0] for line in lines] == [
      f'train sft: {n}/100 (%d%%)' % n for n in (25, 40, 55, 70, 85, 100, 100)]
  assert lines[0] == 'train sft: 25/100 (25%), 15 s, ~75 s left\n'
  assert lines[-1] == 'train sft: 100/100 (100%), 90 s\n'


def test_short_work_prints_nothing():
  clock, out = FakeClock(), io.StringIO()
  bar = pipeline.ProgressLines(4, 'eval round 0', every_s=15.0, out=out, clock=clock)
  for _ in range(4):
    clock.now += 3.0
    bar.update(1)
  bar.close()
  assert out.getvalue() == ''


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _pipeline(tmp_path, progress=True):
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  config.runtime.progress = progress
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  return pipeline.Pipeline(config, workdir, backend=FakeBackend(config, config.pipeline.sft_steps),
                           log=lambda line: None)


def test_bar_is_tqdm_at_a_terminal_and_lines_otherwise(tmp_path, monkeypatch):
  from tqdm import tqdm
  p = _pipeline(tmp_path)
  monkeypatch.setattr('sys.stderr', io.StringIO())
  assert isinstance(p._bar(10, 'x'), pipeline.ProgressLines)  # pylint: disable=protected-access
  monkeypatch.setattr('sys.stderr', _Terminal())
  bar = p._bar(10, 'x')  # pylint: disable=protected-access
  assert isinstance(bar, tqdm) and not bar.disable
  bar.close()
  p.config.runtime.progress = False
  bar = p._bar(10, 'x')  # pylint: disable=protected-access
  assert isinstance(bar, tqdm) and bar.disable
  p.close()


def test_smoke_training_prints_progress_lines_to_a_log(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(pipeline, 'PROGRESS_LINE_EVERY_S', 0.0)  # A line at every update.
  p = _pipeline(tmp_path)
  for key in ('demos', 'sft', 'collect_001'):
    p.mark(key)
  p.run('train')
  p.close()
  err = capsys.readouterr().err
  sft, per_round = p.config.pipeline.sft_steps, p.config.pipeline.steps_per_round
  steps = [line.split(':')[1].split('/')[0].strip() for line in err.splitlines()
           if line.startswith('train round_001: ')]
  # One line per update, then the closing line.
  assert steps == [str(s) for s in range(sft + 1, sft + per_round + 1)] + [str(sft + per_round)]
  assert '\r' not in err
