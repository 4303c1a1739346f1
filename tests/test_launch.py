"""launch.py: start-up errors before any work, refusal of a mismatched workdir, flag plumbing."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, env_extra=None, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.update(env_extra or {})
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('args, message', [
    (['--experiment=experiments/nope.py'], "Unknown experiment file 'experiments/nope.py'"),
    (['--task=nope', '--preset=smoke'], "Unknown task 'nope'; simulated tasks: fold, pouch, "
                                        'insert; hardware tasks (the dm-robotics station): '
                                        'hw_fold, hw_pouch, hw_insert'),
    (['--preset=smoke', '--config.learner.nope=3'], "no 'nope' under learner"),
    (['--preset=smoke', '--config.pipline.rounds=3'], "no 'pipline' under <top level>"),
    (['--preset=smoke', '--config=experiments/habc.py'], 'Choose the experiment with'),
])
def test_config_errors_fail_at_start_up(tmp_path, args, message):
  workdir = tmp_path / 'run'
  result = launch(*args, f'--workdir={workdir}')
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert not workdir.exists()  # Nothing ran.


def test_batch_size_not_divisible_by_devices(tmp_path):
  workdir = tmp_path / 'run'
  result = launch('--task=insert', '--preset=smoke', '--config.learner.batch_size=7',
                  f'--workdir={workdir}',
                  env_extra={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  assert result.returncode != 0
  assert 'batch_size=7 is not divisible by the 2 devices' in result.stderr, result.stderr[-2000:]
  assert not workdir.exists()


def test_mismatched_workdir_is_refused_and_stage_order_is_checked(tmp_path):
  workdir = tmp_path / 'run'
  # --mode=report on a new workdir runs nothing but the report (of nothing) and saves the config.
  first = launch('--task=insert', '--preset=smoke', '--mode=report', f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr[-2000:]
  saved = json.load(open(workdir / 'config.json'))
  assert saved['task'] == 'insert' and saved['preset'] == 'smoke'
  assert saved['learner']['batch_size'] == 8
  refused = launch('--task=insert', '--preset=smoke', '--mode=report', f'--workdir={workdir}',
                   '--config.learner.batch_size=16', '--seed=3')
  assert refused.returncode != 0
  assert 'learner.batch_size: workdir=8 now=16' in refused.stderr
  assert 'seed: workdir=0 now=3' in refused.stderr and '--overwrite' in refused.stderr
  order = launch('--task=insert', '--preset=smoke', '--mode=sft', f'--workdir={workdir}')
  assert order.returncode != 0 and '--mode=demos' in order.stderr


def test_config_argv_and_default_workdir():
  # In a subprocess: launch.py defines absl flags, which must not collide with other tests'.
  code = """
import os, launch, ml_collections
argv = launch.config_argv(['launch.py', '--experiment=experiments/sft.py', '--preset=smoke'])
assert argv[1].endswith(os.path.join('experiments', 'sft.py') + ':smoke'), argv
argv = launch.config_argv(['launch.py'])
assert argv[1].endswith(os.path.join('experiments', 'habc.py') + ':default'), argv
config = ml_collections.ConfigDict({'task': 'pouch', 'seed': 2})
assert launch.default_workdir(config, 'experiments/habc_v.py') == os.path.join(
    'workdirs', 'pouch_habc_v_2')
print('ok')
"""
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=60)
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-2000:]


def test_actor_without_a_learner_checkpoint_times_out(tmp_path):
  workdir = tmp_path / 'shared'
  result = launch('--task=insert', '--preset=smoke', '--mode=actor', '--station_id=3',
                  '--wait_timeout=0.5', f'--workdir={workdir}')
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.startswith('launch.py: actor 3: no learner checkpoint in'), result.stderr
  assert '--mode=learner' in result.stderr


def test_inconsistent_multi_host_flags_fail_at_start_up(tmp_path):
  result = launch('--task=insert', '--preset=smoke', '--num_processes=2', '--process_id=2',
                  '--coordinator_address=localhost:1', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 1 and result.stderr.startswith('launch.py: '), result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()


def test_pipeline_mode_is_refused_on_several_processes(tmp_path):
  """Two real JAX processes (a local coordinator): --mode=pipeline stops in both, before work."""
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workdir = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'launch.py'), '--task=insert', '--preset=smoke',
       f'--workdir={workdir}', f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}'], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=180) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode != 0
    assert '--mode=pipeline runs on one host only' in err and '--mode=learner' in err, err[-2000:]
  assert not workdir.exists()
