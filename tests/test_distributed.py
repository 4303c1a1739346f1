"""Multi-host settings: flag/env/config parsing, validation, the single-host no-op, and a real
two-process ``jax.distributed.initialize`` on this machine (CPU)."""

import os
import socket
import subprocess
import sys

import ml_collections
import pytest
from absl import flags

from habc.fleet import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeInitialize:
  def __init__(self):
    self.calls = []

  def __call__(self, **kwargs):
    self.calls.append(kwargs)


def test_single_host_does_not_initialize():
  fake = FakeInitialize()
  settings = distributed.maybe_initialize(distributed.Settings(), initialize=fake)
  assert not settings.multi_host and fake.calls == []
  settings = distributed.maybe_initialize(distributed.from_values('', 1, 0), initialize=fake)
  assert fake.calls == []


def test_multi_host_passes_the_settings_to_jax():
  fake = FakeInitialize()
  lines = []
  settings = distributed.maybe_initialize(distributed.from_values('10.0.0.2:1234', '4', '3'),
                                          initialize=fake, log=lines.append)
  assert settings.multi_host
  assert fake.calls == [{'coordinator_address': '10.0.0.2:1234', 'num_processes': 4,
                         'process_id': 3, 'initialization_timeout': 300}]
  assert 'process 3 of 4' in lines[0]


def test_auto_leaves_detection_to_jax():
  fake = FakeInitialize()
  distributed.maybe_initialize(distributed.from_values('auto'), initialize=fake)
  assert fake.calls == [{'initialization_timeout': 300}]


@pytest.mark.parametrize('values, message', [
    (('', 2, 0), 'needs --coordinator_address'),
    (('host:1234', 2, 2), 'out of range'),
    (('host:1234', 2, -1), 'out of range'),
    (('host', 2, 0), 'must look like host:port'),
    (('host:99999', 2, 0), 'must look like host:port'),
    (('host:1234', 1, 0), 'was given with --num_processes=1'),
    (('', 0, 0), 'must be >= 1'),
    (('', 'two', 0), 'not an integer'),
])
def test_inconsistent_settings_fail_before_jax(values, message):
  with pytest.raises(distributed.DistributedConfigError, match=message):
    distributed.from_values(*values)


def test_connection_failure_names_the_coordinator():
  def failing(**kwargs):
    raise ConnectionError('deadline exceeded')
  with pytest.raises(RuntimeError, match=r'coordinator h:1\): deadline exceeded'):
    distributed.maybe_initialize(distributed.from_values('h:1', 2, 1), initialize=failing)


def test_flag_parsing():
  fv = flags.FlagValues()
  distributed.define_flags(fv)
  fv(['prog', '--coordinator_address=host0:1234', '--num_processes=2', '--process_id=1'])
  assert distributed.from_flags(fv) == distributed.Settings('host0:1234', 2, 1)
  defaults = flags.FlagValues()
  distributed.define_flags(defaults)
  defaults(['prog'])
  assert not distributed.from_flags(defaults).multi_host
  bad = flags.FlagValues()
  distributed.define_flags(bad)
  with pytest.raises(flags.IllegalFlagValueError):
    bad(['prog', '--num_processes=0'])


def test_environment_and_config_and_precedence():
  env = {distributed.ENV_COORDINATOR: 'h:5', distributed.ENV_NUM_PROCESSES: '2',
         distributed.ENV_PROCESS_ID: '1'}
  assert distributed.from_env(env) == distributed.Settings('h:5', 2, 1)
  assert distributed.from_env({}) is None
  config = ml_collections.ConfigDict({'distributed': {
      'coordinator_address': 'c:7', 'num_processes': 3, 'process_id': 2}})
  assert distributed.from_config(config) == distributed.Settings('c:7', 3, 2)
  assert distributed.from_config(ml_collections.ConfigDict({'seed': 0})) is None
  fv = flags.FlagValues()
  distributed.define_flags(fv)
  fv(['prog'])
  # Flags that set nothing defer to the config, then to the environment, then to one host.
  assert distributed.resolve(fv, config, env).coordinator_address == 'c:7'
  assert distributed.resolve(fv, None, env).coordinator_address == 'h:5'
  assert not distributed.resolve(fv, None, {}).multi_host
  fv(['prog', '--coordinator_address=f:9', '--num_processes=2'])
  assert distributed.resolve(fv, config, env) == distributed.Settings('f:9', 2, 0)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_connect_on_this_machine():
  code = """
import sys
from habc.fleet import distributed
distributed.maybe_initialize(distributed.from_values(sys.argv[1], 2, int(sys.argv[2])))
import jax
print('ok', jax.process_index(), jax.process_count(), jax.device_count(), distributed.is_primary())
jax.distributed.shutdown()
"""
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, '-c', code, address, str(i)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, err[-2000:]
    assert f'ok {i} 2 2 {i == 0}' in out, out + err[-2000:]


@pytest.mark.parametrize('mode', ['pipeline', 'demos', 'collect', 'eval', 'actor', 'sft', 'train',
                                  'report'])
def test_only_the_learner_runs_under_several_processes(mode):
  distributed.check_mode(mode, 1)
  distributed.check_mode('learner', 4)
  with pytest.raises(distributed.DistributedConfigError, match='--mode=learner on the learner '
                     'hosts and --mode=actor') as err:
    distributed.check_mode(mode, 2)
  assert f'--mode={mode}' in str(err.value) and '2 processes' in str(err.value)


def test_single_process_helpers():
  assert distributed.check_mode('pipeline') is None  # This test process: one JAX process.
  assert distributed.process_count() == 1 and distributed.process_index() == 0
  distributed.barrier('nothing to wait for')
  assert distributed.agree(True) and not distributed.agree(False)


LEARNER = """
import json, sys
from habc.fleet import distributed, stations
distributed.maybe_initialize(distributed.from_values(sys.argv[1], 2, int(sys.argv[2])))
distributed.check_mode('learner')
config = stations.load_config('habc', 'smoke', task='insert')
config.pipeline.checkpoint_every = 2
out = stations.run_learner(config, sys.argv[3], max_steps=4, min_free_gb=0.0, rescan_every=2,
                           log=lambda line: print(line, flush=True))
print('result ' + json.dumps(out), flush=True)
"""


def tiny_demos(path: str) -> None:
  """A few synthetic demonstrations (state observations) and their statistics."""
  import numpy as np
  from habc.data import stats as stats_lib
  from habc.data import synthetic
  from habc.data import writer
  rng = np.random.default_rng(0)
  writer.write_episodes(path, [synthetic.synthetic_episode(
      rng, num_steps=24, cameras=(), state_dim=6, action_dim=4, source='demo',
      episode_id=f'demo-{i}', task='insert', instruction='insert the peg') for i in range(3)])
  stats_lib.save_stats(stats_lib.compute_dataset_stats(path), path)


@pytest.mark.slow  # 35-70 s on 2 cores: per-leaf cross-process checks in device_put/device_get.
def test_learner_on_two_processes(tmp_path):
  """Two learner processes (one CPU device each) share a workdir: identical parameters, each fed
  half of every batch, one log writer (process 0), and a checkpoint that restores."""
  import json
  shared = str(tmp_path / 'shared')
  tiny_demos(os.path.join(shared, 'data', 'demos'))
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=(
      os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax-tests')))
  procs = [subprocess.Popen([sys.executable, '-c', LEARNER, address, str(i), shared], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  results = []
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
    results.append(json.loads(out.split('result ', 1)[1].splitlines()[0]))
  a, b = results
  assert (a['process'], b['process']) == (0, 1) and a['processes'] == b['processes'] == 2
  assert a['step'] == b['step'] == 4 and a['checkpoints'] == b['checkpoints']
  assert a['params_digest'] == b['params_digest']
  assert a['rows_per_batch'] == b['rows_per_batch'] == 4  # Half of the smoke batch (8) each.
  assert not a['tensorflow_loaded'] and not b['tensorflow_loaded']
  # Only process 0 speaks and writes the log: one line per checkpoint (steps 2 and 4).
  assert 'saved the initial one' in outs[0][0] and 'learner:' not in outs[1][0]
  logged = [json.loads(line) for line in open(os.path.join(shared, 'logs', 'learner.jsonl'))]
  assert [row['step'] for row in logged] == [2, 4]
  # The last checkpoint (step 4) restores, in one process, to the parameters both ended with.
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  from habc.fleet import stations
  config = stations.load_config('habc', 'smoke', task='insert')
  config.pipeline.checkpoint_every = 2
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(shared))
  try:
    assert backend.load_latest(os.path.join(shared, 'checkpoints')) == 4
    assert stations.params_digest(backend.learner.params) == a['params_digest']
  finally:
    backend.close()


def test_processes_that_do_not_share_the_directory_are_refused(tmp_path):
  code = """
import sys
from habc.fleet import distributed
distributed.maybe_initialize(distributed.from_values(sys.argv[1], 2, int(sys.argv[2])))
try:
  distributed.check_shared_directory(sys.argv[3])
  print('shared', flush=True)
except distributed.DistributedConfigError as e:
  print('refused:', e, flush=True)
"""
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, '-c', code, address, str(i), str(tmp_path / f'h{i}')],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert 'shared' in outs[0], outs
  assert 'refused: Process 1 does not see process 0' in outs[1] and 'HABC_STATION_CACHE' in outs[1]
