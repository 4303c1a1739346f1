"""Issue 29 through launch.py: a cut newest checkpoint and a disk that fills mid-run each give a
few clear lines (no traceback), leave nothing half-written, and the same command then resumes
to a complete run."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ['--task=insert', '--preset=smoke', '--config.pipeline.rounds=1']


def launch(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu', HABC_MIN_FREE_GB='0')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def _leftovers(workdir):
  found = []
  for root, dirs, files in os.walk(workdir):
    found += [os.path.join(root, n) for n in dirs + files
              if 'orbax-checkpoint-tmp' in n or n == '.tmp' or '.tmp-' in n]
  return found


def _cut_newest_checkpoint(workdir):
  ckpts = os.path.join(workdir, 'checkpoints')
  newest = max(int(n) for n in os.listdir(ckpts) if n.isdigit())
  files = []
  for root, _, names in os.walk(os.path.join(ckpts, str(newest), 'state')):
    if 'ocdbt.process_' in root and os.path.basename(root) == 'd':
      files += [os.path.join(root, n) for n in names]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)
  return newest


def test_cut_newest_checkpoint_falls_back_and_completes(tmp_path):
  workdir = str(tmp_path / 'run')
  first = launch(*SMOKE, f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr[-3000:]
  newest = _cut_newest_checkpoint(workdir)
  resumed = launch(*SMOKE, f'--workdir={workdir}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Traceback' not in resumed.stderr, resumed.stderr[-3000:]
  lines = resumed.stdout.splitlines()
  assert len(lines) <= 8, resumed.stdout
  assert any(l.startswith(f'checkpoint {newest} in ') and 'is unreadable (' in l for l in lines)
  assert any('these stages are redone from it: train_001, eval_001, round_001, report' in l
             for l in lines), resumed.stdout
  progress = json.load(open(os.path.join(workdir, 'progress.json')))
  assert all(progress.get(k) for k in ('train_001', 'eval_001', 'round_001', 'report'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints.unreadable', str(newest)))
  assert str(newest) in os.listdir(os.path.join(workdir, 'checkpoints'))  # Retrained, saved.
  # TensorBoard: the retrained steps replace the first run's (each step once), and evaluation
  # shares the learner-step axis (SFT's checkpoint, then round 1's).
  from tests.test_issue29_tensorboard import tensorboard_scalars
  shown = tensorboard_scalars(os.path.join(workdir, 'logs'))
  for tag, points in shown.items():
    steps = [s for s, _ in points]
    assert steps == sorted(set(steps)), (tag, steps)
  assert [s for s, _ in shown['train/critic/loss']][-1] == newest
  assert [s for s, _ in shown['eval/success_rate']] == [newest - 4, newest]


@pytest.fixture
def small_disk(tmp_path):
  path = str(tmp_path / 'disk')
  os.makedirs(path)
  if os.geteuid() != 0 or subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=1500k', 'tmpfs', path],
      capture_output=True).returncode != 0:
    pytest.skip('needs root to mount a small tmpfs (a real full disk)')
  yield path
  subprocess.run(['umount', '-l', path], check=False)


WRITER_ON_A_FULL_DISK = """
import errno, sys
sys.path.insert(0, {root!r})
from habc.run import metrics_writer
w = metrics_writer.MetricsWriter({logdir!r})
try:
  for step in range(1, 100000):
    w.scalars(step, {{'loss': 1.0, 'gate': 0.5}}, prefix='train')
    w.histogram(step, 'gate/success', [0.5, 1.0, 1.5])
except OSError as e:
  assert e.errno == errno.ENOSPC, e
  print('full at', step)
w.close()
w.close()
"""


def test_metrics_writer_on_a_full_disk_raises_once_and_exits_quietly(small_disk):
  """The writer's part of the disk-full run: tensorboardX's SummaryWriter wrote from a thread and
  flushed again at exit, so a full disk gave extra tracebacks after the run's one line, more or
  fewer depending on timing (the test below once saw 4 lines under load). Now the failed write
  raises in the caller, close() is quiet and nothing is printed at exit."""
  logdir = os.path.join(small_disk, 'logs')
  result = subprocess.run(
      [sys.executable, '-c', WRITER_ON_A_FULL_DISK.format(root=ROOT, logdir=logdir)],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith('full at '), result.stdout
  assert result.stderr == '', result.stderr[-3000:]


def test_unretrieved_futures_of_a_failed_save_are_not_logged(tmp_path):
  """Seen under load after a checkpoint save met the full disk: asyncio logged "Future exception
  was never retrieved" with RESOURCE_EXHAUSTED for each tensorstore write the garbage collector
  reached (12 lines after the one-line error). Orbax's own failure logs were filtered, these
  were not: they come through asyncio's logger."""
  import logging
  from habc.run import checkpoints
  checkpoints.Checkpointer(str(tmp_path / 'ckpt')).close()  # Installs the filters.
  seen = []

  class Keep(logging.Handler):
    def emit(self, record):
      seen.append(record.getMessage())

  handler = Keep()
  logging.getLogger().addHandler(handler)
  try:
    logging.getLogger('asyncio').error(
        'Future exception was never retrieved\nfuture: <Future finished exception=ValueError('
        '\'RESOURCE_EXHAUSTED: Error writing "step/.zarray" in OCDBT database\')>')
    logging.getLogger('asyncio').error('an unrelated asyncio error')
  finally:
    logging.getLogger().removeHandler(handler)
  assert seen == ['an unrelated asyncio error']


# On a loaded 2-core machine this printed 4 lines, not 1, once (session 15; it passed alone): a
# race between tensorboardX's writer thread and the run's own writes (see the test above).
def test_disk_full_mid_run_is_one_line_and_resumes(small_disk):
  workdir = os.path.join(small_disk, 'run')
  # Without progress lines (stderr is not a terminal here: a stage longer than
  # PROGRESS_LINE_EVERY_S under load would add one), stderr holds the errors alone.
  quiet = '--config.runtime.progress=False'
  full = launch(*SMOKE, quiet, f'--workdir={workdir}')
  assert full.returncode == 1, full.stderr[-3000:]
  assert 'Traceback' not in full.stderr, full.stderr[-3000:]
  errors = full.stderr.strip().splitlines()
  assert len(errors) == 1 and errors[0].startswith('launch.py: '), full.stderr[-3000:]
  assert 'the disk is full' in errors[0] and 'run the same command again' in errors[0]
  assert _leftovers(workdir) == []
  subprocess.run(['mount', '-o', 'remount,size=40m', small_disk], check=True)
  resumed = launch(*SMOKE, quiet, f'--workdir={workdir}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, 'progress.json'))).get('report')
  assert _leftovers(workdir) == []
