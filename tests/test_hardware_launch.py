"""A hardware task name (hw_<task>) through the rollout worker and launch.py, on moma's simulated
Sawyers: the station's environment factory, its operator inside the environment (takeovers and
outcome reports), and demonstrations from recorded teleop episodes.

``ScriptedStationOperator`` stands in for the teleop device: it is built inside each station
environment (``config.hardware.operator``), takes over on the first episode of a worker process,
and reports every outcome.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from habc.run import rollout
from habc.envs import hardware

# moma's quaternion helpers warn about numpy's `where` without `out`; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:'where' used without 'out':UserWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATOR = 'tests.test_hardware_launch:ScriptedStationOperator'
# Control steps of an episode of ScriptedStationOperator: it takes over on steps [3, 7) of the
# first episode in a process and reports the outcome at step REPORT_AT (executed, then LAST).
TAKEOVER = (3, 7)
REPORT_AT = 9


class ScriptedStationOperator(hardware.TeleopOperator):
  """A teleop device by script: one instance per episode (``Class(config, seed)``).

  The first episode of a process: takeover on TAKEOVER steps (arms held), then a reported success
  at step REPORT_AT. Later episodes: no takeover; at step REPORT_AT a reported failure (odd
  episodes) or success (even ones).
  """
  episodes = 0  # Episodes built in this process.

  def __init__(self, config=None, seed=None):
    super().__init__(config, seed)
    self.index = ScriptedStationOperator.episodes
    ScriptedStationOperator.episodes += 1
    self.steps = 0

  def act(self, env, policy_action):
    step, self.steps = self.steps, self.steps + 1
    if self.index == 0 and step == TAKEOVER[0]:
      self.take_over()  # No command: the arms are held.
    if self.index == 0 and step == TAKEOVER[1]:
      self.hand_back()
    if step == REPORT_AT:
      self.report_outcome(self.index % 2 == 0)
    return super().act(env, policy_action)


def test_hardware_task_names():
  assert hardware.list_tasks() == ['hw_fold', 'hw_pouch', 'hw_insert']
  assert hardware.is_hardware_task('hw_fold') and not hardware.is_hardware_task('fold')
  assert not hardware.is_hardware_task(None)
  assert hardware.simulated_task('hw_insert') == 'insert'
  with pytest.raises(ValueError, match='hw_fold, hw_pouch, hw_insert'):
    hardware.simulated_task('hw_nope')


def test_station_episodes_through_the_rollout_worker_code():
  """The worker's episode loop with the station factory: the operator inside the environment
  flags its takeover steps, and its reports end the episodes (success: a terminal), evaluation
  episodes included."""
  import habc.envs
  section = hardware.default_config().to_dict()
  section.update(operator=OPERATOR, max_lin_vel=0.2)
  config = rollout.WorkerConfig(task='hw_fold', cameras=(), time_limit=30, execute_steps=4,
                                env_factory='habc.envs.hardware:rollout_env',
                                env_options={'hardware': section})
  ScriptedStationOperator.episodes = 0
  chunk = np.zeros((8, 10), np.float32)
  results = []
  for i, kind in enumerate(('rollout', 'rollout', 'eval')):
    request = rollout.EpisodeRequest(f'{kind}-{i:05d}', seed=i, kind=kind, record=kind != 'eval')
    episode = rollout._Episode(config, request)
    if i == 0:  # The factory: hardware name, the run's section, its operator inside, sim specs.
      env = episode.env
      assert env.task_name == 'hw_fold' and env.config.max_lin_vel == 0.2
      assert isinstance(env.operator, ScriptedStationOperator)
      sim = habc.envs.make('fold', seed=0, cameras=(), time_limit=30)
      assert env.observation_spec() == sim.observation_spec()
      assert env.action_spec() == sim.action_spec()
      assert env.instruction == sim.instruction and env.time_limit == 30
      sim.close()
    assert episode.operator is None  # No simulated operator in the rollout on the station.
    while not episode.run_chunk(chunk):
      pass
    results.append(episode.result())
  first, second, evaluation = results
  steps = first['episode']['steps']
  flags = steps['is_intervention']
  expected = np.zeros(REPORT_AT + 2, bool)  # REPORT_AT + 1 executed steps and the final one.
  expected[TAKEOVER[0]:TAKEOVER[1]] = True
  np.testing.assert_array_equal(flags, expected)
  assert first['success'] and first['length'] == REPORT_AT + 1
  assert steps['is_terminal'][-1] and steps['reward'][-1] == 1.0
  assert first['episode']['episode_metadata']['task'] == 'hw_fold'
  np.testing.assert_array_equal(steps['policy_action'][:-1], 0.0)
  assert not second['success'] and second['length'] == REPORT_AT + 1
  assert second['intervention_steps'] == 0 and not second['episode']['steps']['is_terminal'][-1]
  # Evaluation: the same loop without recording; the outcome is the operator's report.
  assert evaluation['episode'] is None and evaluation['success']
  assert evaluation['length'] == REPORT_AT + 1 and evaluation['intervention_steps'] == 0


# ----- launch.py ---------------------------------------------------------------------------------

def launch(*args, timeout=900):  # Generous: the suite may share a loaded machine.
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_build_config_for_a_hardware_task():
  # In a subprocess: launch.py defines absl flags, which must not collide with other tests'.
  code = f"""
import launch
from experiments import habc
from habc.run import backend as backend_lib
base = habc.get_config('smoke')
base.data.teleop_dir = '/recordings'
c = launch.build_config(base, task='hw_fold', seed=None, experiment='experiments/habc.py',
                        hardware_overrides=['max_lin_vel=0.2', 'avoid_arm_collisions=false',
                                            'workspace.left=((-0.4,-0.4,0.05),(0.1,0.2,0.4))',
                                            'operator={OPERATOR}'])
assert c.rollout.env_factory == 'habc.envs.hardware:rollout_env'
assert not c.operator.enabled and c.runtime.num_workers == 1 and c.runtime.episodes_per_worker == 1
assert c.hardware.max_lin_vel == 0.2 and c.hardware.avoid_arm_collisions is False
assert c.hardware.workspace.left == ((-0.4, -0.4, 0.05), (0.1, 0.2, 0.4))
wc = backend_lib.Backend(c).worker_config()
assert wc.task == 'hw_fold' and wc.operator is None
assert wc.env_options['hardware']['operator'] == '{OPERATOR}'
assert wc.env_options['hardware']['max_lin_vel'] == 0.2
import pickle; pickle.loads(pickle.dumps(wc))
sim = launch.build_config(base, task='fold', seed=None, experiment='experiments/habc.py')
assert 'hardware' not in sim and sim.operator.enabled
assert backend_lib.Backend(sim).worker_config().env_options is None
for task, overrides, message in [
    ('fold', ['max_lin_vel=0.2'], 'applies to a hardware task (hw_fold, hw_pouch, hw_insert)'),
    ('hw_fold', ['nope=1'], "no 'nope' under hardware"),
    ('hw_fold', ['max_lin_vel=fast'], '--config.hardware.max_lin_vel=fast: not a value'),
    ('hw_fold', ['max_lin_vel=-1'], 'config.hardware.max_lin_vel = -1.0 must be positive'),
    ('hw_fold', ['workspace=1'], 'is a section'),
    ('hw_fold', ['operator=TeleopOperator'], 'must be "module:Class"'),
]:
  try:
    launch.build_config(base, task=task, seed=None, experiment='e', hardware_overrides=overrides)
  except launch.UsageError as e:
    assert message in str(e), (message, str(e))
  else:
    raise AssertionError(f'no error for {{task}} {{overrides}}')
base.data.teleop_dir = ''
try:
  launch.build_config(base, task='hw_insert', seed=None, experiment='e')
except launch.UsageError as e:
  assert '--config.data.teleop_dir=' in str(e), str(e)
else:
  raise AssertionError('no error without teleop_dir')
print('ok')
"""
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=120)
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-3000:]


def test_hardware_task_without_teleop_dir_fails_at_start_up(tmp_path):
  workdir = tmp_path / 'run'
  result = launch('--task=hw_fold', '--preset=smoke', f'--workdir={workdir}')
  assert result.returncode != 0
  assert '--config.data.teleop_dir=' in result.stderr and 'hw_fold' in result.stderr, \
      result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()


def write_teleop_episodes(folder, count: int, task: str = 'fold') -> None:
  """ALOHA-style HDF5 'teleop' episodes, driven by the simulated task's scripted expert."""
  import habc.envs
  from habc.run import recorder
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    env = habc.envs.make(task, seed=100 + i, cameras=(), time_limit=90)
    try:
      run = recorder.run_expert_episode(env, env.make_expert(100 + i))
      assert run['success']
      # What a teleop recorder writes: no task name; the converter fills in the instruction.
      recorder.write_demo(os.path.join(folder, f'episode_{i}.hdf5'), run, (), instruction='',
                          task='')
    finally:
      env.close()


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def run_station(tmp_path, modes):
  """launch.py --task=hw_fold --preset=smoke, one --mode at a time, with 2 teleop episodes made
  by the simulated fold expert and the scripted operator; returns the workdir."""
  teleop = tmp_path / 'teleop'
  write_teleop_episodes(teleop, 2)
  workdir = tmp_path / 'run'
  common = ['--task=hw_fold', '--preset=smoke', f'--workdir={workdir}',
            f'--config.data.teleop_dir={teleop}', f'--config.hardware.operator={OPERATOR}',
            '--config.rollout.episodes_per_round=2', '--config.rollout.time_limit=30',
            '--config.eval.episodes=1', '--config.pipeline.rounds=1']
  for mode in modes:
    result = launch(*common, f'--mode={mode}')
    assert result.returncode == 0, (mode, result.stderr[-3000:])
  return workdir


def test_launch_hw_fold_demos_sft_and_one_station_round(tmp_path):
  workdir = run_station(tmp_path, ('demos', 'sft', 'collect'))
  config = json.load(open(workdir / 'config.json'))
  assert config['task'] == 'hw_fold' and config['hardware']['operator'] == OPERATOR
  assert config['runtime']['num_workers'] == 1 and not config['operator']['enabled']
  assert config['runtime']['episodes_per_worker'] == 1
  from habc.data import episodes as episodes_lib
  demos = episodes_lib.EpisodeSource(str(workdir / 'data' / 'demos'), cameras=())
  assert len(demos) == 2
  demo = demos[0]
  assert demo['episode_metadata']['operator'] == 'teleop'
  assert demo['episode_metadata']['source'] == 'demo'
  assert demo['steps']['language_instruction'].startswith('fold the cloth')
  rollouts = episodes_lib.EpisodeSource(str(workdir / 'data' / 'round_001'), cameras=())
  assert len(rollouts) == 2
  first, second = rollouts[0], rollouts[1]
  expected = np.zeros(REPORT_AT + 2, bool)
  expected[TAKEOVER[0]:TAKEOVER[1]] = True
  np.testing.assert_array_equal(first['steps']['is_intervention'], expected)
  assert first['episode_metadata']['success'] and first['steps']['is_terminal'][-1]
  assert not second['episode_metadata']['success'] and not second['steps']['is_intervention'].any()
  assert first['episode_metadata']['task'] == 'hw_fold'
  # The station's data has the simulated task's layout (state, privileged, action).
  for key in ('state', 'privileged'):
    shape = demo['steps']['observation'][key].shape[1:]
    assert first['steps']['observation'][key].shape[1:] == shape, key
  assert first['steps']['action'].shape[1:] == demo['steps']['action'].shape[1:] == (10,)
  log = _rows(workdir / 'logs' / 'collect_round_001.jsonl')
  assert [(r['success'], r['intervention_steps']) for r in log] == [(True, 4), (False, 0)]
  assert 'tensorflow' not in sys.modules


@pytest.mark.slow
def test_launch_hw_fold_evaluates_on_the_station(tmp_path):
  workdir = run_station(tmp_path, ('demos', 'sft', 'eval'))
  # Evaluation of the SFT policy on the station. The worker's first episode has a takeover and
  # then a reported success at step REPORT_AT: evaluation measures the policy alone, so it counts
  # as a failure, with the report and the takeover kept in the row.
  evals = _rows(workdir / 'eval' / 'round_000.jsonl')
  assert [(r['success'], r['length']) for r in evals] == [(False, REPORT_AT + 1)]
  assert evals[0]['reported_success'] and evals[0]['intervention_steps'] == TAKEOVER[1] - TAKEOVER[0]
  summary = json.load(open(workdir / 'eval' / 'round_000.json'))
  assert summary['success_rate'] == 0.0 and summary['episodes'] == 1


# ----- the demos stage from recorded teleop episodes (simulated task) ---------------------------

def test_teleop_demos_in_simulation_and_their_errors(tmp_path):
  from experiments import habc as habc_experiment
  from habc.run import pipeline
  from habc.data import episodes as episodes_lib
  from habc.data.converters import ConversionError
  from habc.data.converters import aloha_hdf5

  def demos(teleop_dir, name, obs='state'):
    config = habc_experiment.get_config('smoke')
    config.task, config.obs = 'insert', obs
    config.data.teleop_dir = str(teleop_dir)
    run = pipeline.Pipeline(config, str(tmp_path / name), log=lambda line: None)
    try:
      run.demos()
    finally:
      run.close()
    return run

  teleop = tmp_path / 'teleop'
  write_teleop_episodes(teleop, 2, task='insert')
  run = demos(teleop, 'ok')
  assert run.done('demos') and not os.path.exists(run.paths.demo_hdf5)  # No expert ran.
  source = episodes_lib.EpisodeSource(run.paths.demo_data, cameras=())
  assert len(source) == 2
  episode = source[1]
  assert episode['episode_metadata']['operator'] == 'teleop'
  assert episode['episode_metadata']['task'] == 'insert'
  assert episode['steps']['language_instruction'].startswith('pick up the socket')
  from habc.data import stats as stats_lib
  assert 'privileged' in stats_lib.load_stats(run.paths.demo_data).mean

  with pytest.raises(pipeline.TeleopDataError, match='--config.data.teleop_dir=.*is not a folder'):
    demos(tmp_path / 'missing', 'missing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(pipeline.TeleopDataError, match='holds no episode_'):
    demos(tmp_path / 'empty', 'empty')
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'episode_0.hdf5').write_bytes(b'not an hdf5 file')
  with pytest.raises(ConversionError, match='episode_0.hdf5'):
    demos(bad, 'bad')
  # obs=state reads the environment's privileged vector: episodes without one are refused.
  bare = tmp_path / 'bare'
  bare.mkdir()
  aloha_hdf5.write_aloha_hdf5(str(bare / 'episode_0.hdf5'), qpos=np.zeros((5, 12), np.float32),
                              action=np.zeros((5, 10), np.float32), images={}, success=True)
  with pytest.raises(pipeline.TeleopDataError, match='no /observations/privileged'):
    demos(bare, 'bare')
