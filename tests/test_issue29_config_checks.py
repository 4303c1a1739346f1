"""Issue 29: config values with a range or a set of choices are checked at start-up, before any
workdir is written; a failed first run does not lock the workdir; Ctrl-C prints one line;
--help and --print_config exit 0."""

import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import presets

from habc import config_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(preset='smoke'):
  from experiments import habc as habc_experiment
  return habc_experiment.get_config(preset)


def launch(*args, timeout=180, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


# Each value the issue reported (passed start-up, then hung or crashed), and a few more.
CASES = [
    ('rollout.execute_steps', 0, 'config.rollout.execute_steps=0 must be an integer >= 1'),
    ('rollout.episodes_per_round', -1, 'config.rollout.episodes_per_round=-1 must be an integer'),
    ('model.critic_encoder', 'sepa', "config.model.critic_encoder='sepa' must be one of "
                                     "'separate', 'detached', 'shared'"),
    ('learner.batch_size', 0, 'config.learner.batch_size=0 must be an integer >= 1'),
    ('data.num_demos', 0, 'config.data.num_demos=0 must be an integer >= 1'),
    ('eval.episodes', 0, 'config.eval.episodes=0 must be an integer >= 1'),
    ('seed', -1, 'seed=-1 must be an integer from 0 to 2147483647'),
    ('operator.takeover_prob', 1.5, 'config.operator.takeover_prob=1.5 must be a number >= 0'),
    ('data.demo_fraction', -0.1, 'config.data.demo_fraction=-0.1 must be a number >= 0'),
    ('learner.actor_lr', 0.0, 'config.learner.actor_lr=0.0 must be a number > 0'),
    ('model.frozen', ('encoderr',), "config.model.frozen=('encoderr',) names ['encoderr']"),
    ('pipeline.keep_checkpoints', 0, 'config.pipeline.keep_checkpoints=0 must be an integer'),
    ('pipeline.intervention_reweighting_from_round', 0, 'must be -1 (never switch)'),
]


@pytest.mark.parametrize('key, value, message', CASES, ids=[c[0] for c in CASES])
def test_each_bad_value_is_named_with_what_is_allowed(key, value, message):
  config = _config()
  node = config
  *parents, last = key.split('.')
  for part in parents:
    node = node[part]
  node[last] = value
  found = config_checks.problems(config)
  assert len(found) == 1, found
  assert message in found[0], found[0]
  flag = '--seed=<n>' if key == 'seed' else f'--config.{key}=<value>'
  assert found[0].endswith(f'Set {flag}.'), found[0]


def test_every_shipped_config_passes():
  import glob
  import importlib
  for path in sorted(glob.glob(os.path.join(ROOT, 'experiments', '*.py'))):
    name = os.path.splitext(os.path.basename(path))[0]
    if name in ('__init__', 'base', 'presets', 'sweep'):
      continue
    module = importlib.import_module(f'experiments.{name}')
    for preset in presets.PRESETS:
      assert config_checks.problems(module.get_config(preset)) == [], (name, preset)


def test_several_bad_values_are_listed_together():
  config = _config()
  config.eval.episodes = 0
  config.learner.batch_size = 0
  with pytest.raises(config_checks.ConfigError) as info:
    config_checks.check(config)
  text = str(info.value)
  assert text.startswith('2 config values are out of range (nothing was run or written)')
  assert 'eval.episodes=0' in text and 'learner.batch_size=0' in text


def test_embed_dim_must_divide_into_heads():
  config = _config()
  config.model.num_heads = 3
  assert 'must be a multiple of config.model.num_heads=3' in config_checks.problems(config)[0]


def test_teleop_dir_must_hold_episodes(tmp_path):
  config = _config()
  config.data.teleop_dir = str(tmp_path)  # An empty folder.
  assert config_checks.problems(config) == []  # Values only: the folder is checked apart.
  found = config_checks.path_problems(config)
  assert len(found) == 1 and 'holds no episode_*.hdf5 files' in found[0], found
  config.data.teleop_dir = str(tmp_path / 'nope')
  assert 'is not a folder' in config_checks.path_problems(config)[0]
  config.data.teleop_dir = '   '
  assert 'give a folder of recorded teleop episodes' in config_checks.path_problems(config)[0]
  config.data.num_demos = 0  # The teleop episodes are the demonstrations: not checked.
  config.data.teleop_dir = ''
  assert len(config_checks.problems(config)) == 1  # Without teleop: num_demos=0 is refused.


@pytest.mark.parametrize('args, message', [
    (['--seed=-1'], 'seed=-1 must be an integer from 0 to'),
    (['--config.rollout.execute_steps=0'], 'config.rollout.execute_steps=0 must be'),
    (['--config.model.critic_encoder=sepa'], "config.model.critic_encoder='sepa' must be one"),
    (['--config.data.teleop_dir=EMPTY'], 'holds no episode_*.hdf5 files'),
])
def test_launch_refuses_bad_values_before_any_work(tmp_path, args, message):
  empty = tmp_path / 'empty'
  empty.mkdir()
  args = [a.replace('EMPTY', str(empty)) for a in args]
  workdir = tmp_path / 'run'
  result = launch('--task=insert', '--preset=smoke', f'--workdir={workdir}', *args)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.startswith('launch.py: a config value is out of range'), result.stderr
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert not workdir.exists()


def test_a_failed_first_run_does_not_lock_the_workdir(tmp_path):
  """A run that stops before it produced anything (here: an unreadable teleop file, found in the
  demos stage) leaves no config.json, so the corrected command is not refused."""
  teleop = tmp_path / 'teleop'
  teleop.mkdir()
  (teleop / 'episode_0.hdf5').write_bytes(b'not an hdf5 file' * 10)
  workdir = tmp_path / 'run'
  failed = launch('--task=insert', '--preset=smoke', f'--workdir={workdir}',
                  f'--config.data.teleop_dir={teleop}')
  assert failed.returncode == 1 and 'unreadable HDF5 file' in failed.stderr, failed.stderr[-2000:]
  assert not (workdir / 'config.json').exists()
  corrected = launch('--task=insert', '--preset=smoke', f'--workdir={workdir}', '--mode=report')
  assert corrected.returncode == 0, corrected.stderr[-2000:]


def test_help_and_print_config_exit_0(tmp_path):
  helped = launch('--help')
  assert helped.returncode == 0 and '--[no]print_config' in helped.stdout, helped.stderr[-2000:]
  printed = launch('--preset=smoke', '--config.eval.episodes=7', '--print_config',
                   f'--workdir={tmp_path / "run"}')
  assert printed.returncode == 0, printed.stderr[-2000:]
  lines = printed.stdout.splitlines()
  assert 'eval.episodes = 7' in lines and 'rollout.execute_steps = 8' in lines
  assert "model.critic_encoder = 'separate'" in lines and 'seed = 0' in lines
  assert not (tmp_path / 'run').exists()
  for script in ('data/convert_teleop.py', 'data/export_rlds.py'):
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), '--help'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (script, result.stderr[-2000:])


def test_ctrl_c_prints_one_line(tmp_path):
  """SIGINT to the whole process group (what a terminal's Ctrl-C does) in the demos stage."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'launch.py'), '--task=insert',
                           '--preset=smoke', f'--workdir={workdir}'], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  try:
    deadline = time.time() + 240
    hdf5 = workdir / 'demos' / 'hdf5'
    while time.time() < deadline and not (hdf5.exists() and any(
        f.endswith('.hdf5') for f in os.listdir(hdf5))):
      time.sleep(0.05)
    assert hdf5.exists(), 'the run never reached the demos stage'
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 1, err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  assert err.strip().splitlines() == ['stopped; re-run the same command to resume'], err[-3000:]
  assert out.startswith('habc: habc on insert')
