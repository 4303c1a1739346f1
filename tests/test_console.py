"""The operator console (habc/web/console.py): message checks, settings and access rules without a
browser; the simulated-task wrapper; the rollout hooks; launch.py's operator choice.

The browser tests (a real page in headless Chromium) are in tests/test_console_browser.py.
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from habc.run import rollout
from habc.web import console
from habc.web import console_demo
from habc.web import server_common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----- page messages -----------------------------------------------------------------------------

def good(**kw):
  msg = {'type': 'control', 'takeover': True, 'action': [0.1] * 10, 'seq': 1, 't': 5.0}
  msg.update(kw)
  return json.dumps(msg)


def test_parse_message_accepts_a_command():
  msg = console.parse_message(good(key=True), 10)
  assert msg['takeover'] and msg['key'] and msg['seq'] == 1
  np.testing.assert_allclose(msg['action'], 0.1)
  assert msg['action'].dtype == np.float32
  assert console.parse_message(json.dumps({'type': 'control', 'takeover': False}), 10)['action'] \
      is None
  assert console.parse_message('{"type": "outcome", "success": true}', 10)['success'] is True
  for kind in ('start', 'claim', 'release', 'ping'):
    assert console.parse_message(json.dumps({'type': kind}), 10) == {'type': kind}


@pytest.mark.parametrize('text, problem', [
    ('not json', 'not JSON'),
    (b'{"type": "control"}', 'binary'),
    ('[1, 2]', 'expected an object'),
    ('{"type": 3}', 'expected an object'),
    ('{"type": "launch"}', 'unknown message type'),
    (good(takeover='yes'), 'true or false'),
    (good(action=None), 'list of 10'),
    (good(action=[0.0] * 9), 'wrong shape, 9 values'),
    (good(action=[[0.0] * 10]), 'wrong shape, 1 values'),
    (good(action=['0.1'] * 10), 'must be a number'),
    (good(action=[True] * 10), 'must be a number'),
    (good(action=[0.0] * 9 + [1.5]), 'in [-1, 1]'),
    ('{"type": "control", "takeover": true, "action": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}',
     'NaN or infinite'),
    ('{"type": "control", "takeover": true, "action": [Infinity, 0, 0, 0, 0, 0, 0, 0, 0, 0]}',
     'NaN or infinite'),
    ('{"type": "control", "takeover": true, "action": [1e999, 0, 0, 0, 0, 0, 0, 0, 0, 0]}',
     'NaN or infinite'),
    (good(seq='x'), '"seq" must be a number'),
    ('{"type": "control", "takeover": true, "t": NaN, "action": [0,0,0,0,0,0,0,0,0,0]}',
     '"t" must be a number'),
    ('{"type": "outcome", "success": 1}', 'true or false'),
    ('x' * 5000, 'at most 4096'),
])
def test_parse_message_rejects(text, problem):
  with pytest.raises(console.BadMessage, match=problem.replace('[', r'\[').replace(']', r'\]')):
    console.parse_message(text, 10)


def test_action_layout_matches_the_project():
  from habc.envs import base
  assert console.ACTION_NAMES == base.ACTION_NAMES
  assert console.SIDES == base.SIDES and console.SIM_CAMERAS == base.CAMERAS


# ----- settings and access rules -----------------------------------------------------------------

def test_settings_travel_in_the_environment_and_need_a_token_off_loopback():
  s = console.ConsoleSettings(port=0, deadman_s=0.2, log_path='/x/console.jsonl')
  assert console.ConsoleSettings.from_env({console.ENV_VAR: s.to_env()}) == s
  assert console.ConsoleSettings.from_env({}) == console.ConsoleSettings()
  with pytest.raises(ValueError, match='unknown console settings'):
    console.ConsoleSettings.from_env({console.ENV_VAR: '{"colour": 1}'})
  assert console.ConsoleSettings().resolved().token == ''  # Loopback: no token needed.
  lan = console.ConsoleSettings(host='0.0.0.0').resolved()
  assert len(lan.token) >= 20 and lan.resolved().token == lan.token
  assert console.ConsoleSettings(host='10.1.2.3', token='abc').resolved().token == 'abc'
  with pytest.raises(ValueError, match='needs an access token'):
    console.ConsoleSettings(host='0.0.0.0').check()
  with pytest.raises(ValueError, match='speed'):
    console.ConsoleSettings(speed=0).check()
  assert 'token=' in lan.url(8765) and 'token' not in lan.url(8765, with_token=False)


def test_host_and_origin_rules():
  assert server_common.is_loopback('127.0.0.1') and server_common.is_loopback('127.0.0.2')
  assert server_common.is_loopback('::1') and server_common.is_loopback('localhost')
  assert not server_common.is_loopback('0.0.0.0') and not server_common.is_loopback('10.0.0.1')
  # Bound to loopback: loopback Host names only (DNS rebinding).
  assert server_common.host_allowed('127.0.0.1:8765', '127.0.0.1')
  assert server_common.host_allowed('localhost:8765', '127.0.0.1')
  assert not server_common.host_allowed('evil.example:8765', '127.0.0.1')
  assert not server_common.host_allowed('', '127.0.0.1')
  assert server_common.host_allowed('robot-pc:8765', '0.0.0.0')
  assert server_common.host_allowed('10.0.0.5:1', '10.0.0.5')
  assert not server_common.host_allowed('10.0.0.6:1', '10.0.0.5')
  # WebSockets only from the page's own origin.
  assert server_common.origin_allowed('http://127.0.0.1:8765', '127.0.0.1:8765')
  assert not server_common.origin_allowed('http://127.0.0.1:9999', '127.0.0.1:8765')
  assert not server_common.origin_allowed('https://evil.example', '127.0.0.1:8765')
  assert not server_common.origin_allowed('null', '127.0.0.1:8765')
  assert server_common.origin_allowed(None, '127.0.0.1:8765')  # Not a browser.
  assert server_common.token_matches('abc', 'abc')
  assert not server_common.token_matches('abd', 'abc') and not server_common.token_matches('', '')


def test_episode_labels_and_learner_step(tmp_path):
  assert console.describe_episode('round002-00004', 'rollout')['label'] == 'round 2, episode 5'
  assert console.describe_episode('station001-000010', 'rollout')['group'] == 'station001'
  assert console.describe_episode('eval001-00000', 'eval')['label'].startswith('evaluation')
  assert console.learner_step(str(tmp_path)) is None
  os.makedirs(tmp_path / 'checkpoints' / '300')
  os.makedirs(tmp_path / 'checkpoints' / '600')
  assert console.learner_step(str(tmp_path)) == 600
  os.makedirs(tmp_path / 'logs')
  (tmp_path / 'logs' / 'learner.jsonl').write_text('{"step": 900}\n{"step": 950}\n{"ste')
  assert console.learner_step(str(tmp_path)) == 950
  assert console._ranges([(1, 'a'), (2, 'a'), (3, 'b'), (7, 'b')]) == [[1, 2, 'a'], [3, 3, 'b'],
                                                                     [7, 7, 'b']]


# ----- the pipeline's collection stage with the console (a backend without a model) --------------

class FakeBackend:
  """The pipeline's backend without a model: the demo environment, the console as the operator,
  the demo's drifting policy."""

  def __init__(self, config, step, operator_factory=console.OPERATOR, time_limit=200):
    self.config, self._step, self.policy_seconds = config, step, []
    self.operator_factory, self.time_limit = operator_factory, time_limit

  def bind(self, paths):
    self.paths = paths

  def close(self):
    pass

  @property
  def step(self):
    return self._step

  def worker_config(self):
    from habc.run import rollout
    return rollout.WorkerConfig(task='console_demo', cameras=('top',), time_limit=self.time_limit,
                                execute_steps=4, operator={},
                                operator_factory=self.operator_factory,
                                env_factory='habc.web.console_demo:make_env',
                                env_options={'control_hz': 20.0})

  def load_latest(self, directory, allow_fresh=False):
    return self._step

  def open_writer(self, path):
    from habc.run import backend as backend_lib
    return backend_lib._LazyWriter(path)  # pylint: disable=protected-access

  def policy(self, rng_seed):
    return lambda observations, noise_ids: console_demo.drift_policy(observations, noise_ids, 8)


def smoke_config(episodes):
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.rollout.episodes_per_round = episodes
  config.runtime.num_workers = 1  # One person, one episode at a time (launch.py enforces it).
  config.runtime.episodes_per_worker = 1
  return config


def collect_in_thread(config, workdir, backend):
  from habc.run import pipeline
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  errors = []

  def body():
    try:
      p.collect(1)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
    finally:
      p.close()

  thread = threading.Thread(target=body, daemon=True)
  thread.start()
  return thread, errors


# ----- a console in this process, driven by a WebSocket client -----------------------------------

@pytest.fixture
def live(tmp_path):
  """A console in this process (port chosen by the system) and a helper to run demo episodes."""
  made = []

  def start(**settings):
    settings.setdefault('port', 0)
    settings.setdefault('wait_for_start', False)
    settings.setdefault('log_path', str(tmp_path / 'console.jsonl'))
    c = console.get_console(console.ConsoleSettings(**settings))
    made.append(c)
    return c

  yield start
  console.close_console()


def run_episodes_in_thread(count=1, time_limit=40, control_hz=20.0, record=True, kind='rollout'):
  """Demo episodes through the rollout worker's episode code, in a thread; returns (thread,
  results list)."""
  config = rollout.WorkerConfig(task='console_demo', cameras=('top',), time_limit=time_limit,
                                execute_steps=8, operator={},
                                env_factory='habc.web.console_demo:make_env',
                                operator_factory=console.OPERATOR,
                                env_options={'control_hz': control_hz})
  results = []

  def body():
    try:
      run()
    except Exception as e:  # pylint: disable=broad-except
      thread.error = e

  def run():
    for i in range(count):
      request = rollout.EpisodeRequest(f'round001-{i:05d}', seed=i, kind=kind, record=record,
                                       policy_version=42)
      episode = rollout._Episode(config, request)  # pylint: disable=protected-access
      while not episode.run_chunk(console_demo.drift_policy([None], None)[0]):
        pass
      results.append(episode.result())

  thread = threading.Thread(target=body, daemon=True)
  thread.error = None
  thread.start()
  return thread, results


def ws_url(c, token=None):
  url = c.url(with_token=False).replace('http://', 'ws://') + 'ws'
  return url + (f'?token={token}' if token else '')


def recv_until(ws, predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
    if predicate(msg):
      return msg
  raise AssertionError('no such message')


def test_tokens_decide_who_may_control(live):
  from websockets.sync.client import connect
  c = live(token='s3cret')
  with connect(ws_url(c, 'wrong')) as ws:  # A wrong token is refused.
    assert json.loads(ws.recv(timeout=5))['type'] == 'refused'
    with pytest.raises(Exception):
      ws.recv(timeout=5)
  assert ws.close_code == 4401
  with connect(ws_url(c)) as viewer:  # No token: view only.
    role = recv_until(viewer, lambda m: m['type'] == 'role')
    assert role['role'] == 'viewer' and 'access token' in role['reason']
    with connect(ws_url(c, 's3cret')) as controller:
      assert recv_until(controller, lambda m: m['type'] == 'role')['role'] == 'controller'
      viewer.send(json.dumps({'type': 'claim'}))
      assert 'access token' in recv_until(viewer, lambda m: m['type'] == 'error')['message']
      viewer.send(good())
      assert 'rejected' in recv_until(viewer, lambda m: m['type'] == 'error')['message']
  # Plain HTTP: the page with a wrong token is refused; with none it loads (view only).
  import urllib.error
  import urllib.request
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(c.url(with_token=False) + '?token=nope', timeout=5)
  assert e.value.code == 403
  assert b'operator console' in urllib.request.urlopen(c.url(with_token=False), timeout=5).read()


def test_foreign_hosts_and_origins_are_refused(live):
  import urllib.error
  import urllib.request
  from websockets.sync.client import connect
  c = live()
  request = urllib.request.Request(c.url(), headers={'Host': 'evil.example'})
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(request, timeout=5)
  assert e.value.code == 403
  with pytest.raises(Exception, match='403'):
    with connect(ws_url(c), origin='http://evil.example'):
      pass
  with connect(ws_url(c), origin=c.url().rstrip('/')) as ws:
    assert recv_until(ws, lambda m: m['type'] == 'role')['role'] == 'controller'


def test_deadman_and_disconnect_mean_hold_and_are_logged(live, tmp_path):
  from websockets.sync.client import connect
  c = live(deadman_s=0.15)
  thread, results = run_episodes_in_thread(time_limit=60)
  command = [0.5, 0, 0, 0, -1, 0, 0, 0, 0, -1]
  with connect(ws_url(c)) as ws:
    recv_until(ws, lambda m: m['type'] == 'state' and m['phase'] == 'running' and
               m.get('step', 0) >= 3)
    for _ in range(6):  # Fresh commands (every 20 ms): executed.
      ws.send(json.dumps({'type': 'control', 'takeover': True, 'action': command}))
      time.sleep(0.02)
    recv_until(ws, lambda m: m.get('control') == 'human')
    # No more commands: after the deadman time the arms are held.
    recv_until(ws, lambda m: m.get('control') == 'hold' and m['hold_reason'] == 'deadman')
    ws.send(json.dumps({'type': 'control', 'takeover': True, 'action': command}))
    recv_until(ws, lambda m: m.get('control') == 'human')
  # The page went away during the takeover: held at once.
  deadline = time.monotonic() + 10
  while c.status()['control'] != 'hold' and time.monotonic() < deadline:
    time.sleep(0.01)
  with connect(ws_url(c)) as ws:  # Control is free again; the next page must hand back.
    m = recv_until(ws, lambda m: m['type'] == 'state' and m.get('control') == 'hold')
    assert m['hold_reason'] == 'disconnected'
    ws.send(json.dumps({'type': 'control', 'takeover': False}))
    recv_until(ws, lambda m: m.get('control') == 'policy')
    ws.send(json.dumps({'type': 'outcome', 'success': False}))
    thread.join(20)
  assert not thread.is_alive()
  result = results[0]
  steps = result['episode']['steps']
  record = json.loads(open(tmp_path / 'console.jsonl').read().splitlines()[-1])
  reasons = {r[2] for r in record['holds']}
  assert {'deadman', 'disconnected'} <= reasons, record['holds']
  hold = np.array([0, 0, 0, 0, -1, 0, 0, 0, 0, -1], np.float32)
  for first, last, reason in record['holds']:
    for t in range(first, last + 1):  # A held step executed the hold action, flagged.
      np.testing.assert_array_equal(steps['action'][t], hold)
      assert steps['is_intervention'][t]
  human = [t for t in range(result['length']) if steps['is_intervention'][t] and
           not any(a <= t <= b for a, b, _ in record['holds'])]
  assert human and all(np.allclose(steps['action'][t], command) for t in human)
  assert record['outcome'] == 'failure' and record['verdict'] is False
  assert any(e[1] == 'page_lost' for e in record['events'])


def test_a_stale_command_is_never_executed(live):
  """Commands stop arriving mid-takeover: every executed command step lies within the deadman
  time of a received command (checked on the operator's own clock)."""
  c = live(deadman_s=0.1)
  thread, results = run_episodes_in_thread(time_limit=40)
  deadline = time.monotonic() + 10
  while c.operator is None or c.phase != 'running':
    assert time.monotonic() < deadline
    time.sleep(0.005)
  op = c.operator
  op.controller_changed(True)  # As if a page were in control.
  received = []
  for i in range(15):
    if i % 5 < 2:  # Two fresh commands, then a gap of three periods (150 ms at 20 Hz).
      action = np.full(10, 0.01 * (i + 1), np.float32)
      op.control(action)
      received.append((time.monotonic(), action))
    time.sleep(0.05)
  op.hand_back()
  op.report_outcome(True)
  thread.join(20)
  steps = results[0]['episode']['steps']
  executed = [t for t in range(results[0]['length']) if steps['is_intervention'][t] and
              not any(a <= t <= b for a, b, _ in console._ranges(op.holds))]
  assert executed and op.holds
  values = {round(float(a[0]), 4) for _, a in received}
  for t in executed:
    assert round(float(steps['action'][t][0]), 4) in values
  assert results[0]['success']


def test_the_server_stopping_mid_episode_stops_the_episode_uncommitted(live):
  c = live()
  thread, results = run_episodes_in_thread(count=2, time_limit=30)
  deadline = time.monotonic() + 10
  while c.status()['episode'].get('id') != 'round001-00000' or c.phase != 'running':
    assert time.monotonic() < deadline
    time.sleep(0.005)
  c.server.call(c.server.loop.stop)  # The server's loop dies (a crash, not a stop).
  thread.join(20)
  assert len(results) == 1 and results[0]['invalid'] and results[0]['episode'] is None
  assert isinstance(thread.error, console.ConsoleError)  # The next episode does not start.
  assert not c.alive and c.failure()
  with pytest.raises(console.ConsoleError, match='not running'):
    c.check_alive()


class CrashingOperator(console.ConsoleOperator):
  """The console's operator whose web server dies at step 5 of episode 1 (loaded by the worker)."""

  def act(self, env, policy_action):
    if self.request.episode_id.endswith('-00001') and self.steps == 5:
      server = self.console.server
      server.call(server.loop.stop)  # The server's loop dies: a crash, not a stop.
      deadline = time.monotonic() + 5
      while server.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    return super().act(env, policy_action)


def test_a_server_crash_in_the_worker_keeps_the_dataset_whole_and_resumes(tmp_path, monkeypatch):
  """Through the pipeline's collection stage: the console's server (in the spawned environment
  worker) crashes during episode 1. Episode 1 is not committed, episode 0 is intact, the stage
  stops with the console's error; run again, it collects the rest."""
  from habc.run import pipeline
  from habc.data import episodes as episodes_lib
  settings = console.ConsoleSettings(port=0, wait_for_start=False)
  monkeypatch.setenv(console.ENV_VAR, settings.to_env())
  config = smoke_config(3)
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  crashing = FakeBackend(config, config.pipeline.sft_steps, 'tests.test_console:CrashingOperator',
                         time_limit=12)
  thread, errors = collect_in_thread(config, workdir, crashing)
  thread.join(120)
  assert not thread.is_alive()
  assert len(errors) == 1 and isinstance(errors[0], rollout.WorkerError)
  assert 'ConsoleError' in str(errors[0]) and 'not running' in str(errors[0]), errors[0]
  data = os.path.join(workdir, 'data', 'round_001')
  assert len(episodes_lib.EpisodeSource(data, cameras=('top',))) == 1
  first = episodes_lib.EpisodeSource(data, cameras=('top',))[0]
  assert first['episode_metadata']['episode_id'] == 'round001-00000'
  assert first['steps']['action'].shape == (13, 10)  # Whole: 12 steps and the final one.
  log = [json.loads(line) for line in open(os.path.join(workdir, 'logs',
                                                        'collect_round_001.jsonl'))]
  assert [r['invalid'] for r in log] == [False, True]
  thread, errors = collect_in_thread(config, workdir, FakeBackend(
      config, config.pipeline.sft_steps, time_limit=12))
  thread.join(120)
  assert not errors, errors
  ids = [episodes_lib.EpisodeSource(data, cameras=())[i]['episode_metadata']['episode_id']
         for i in range(2)]
  assert ids == ['round001-00000', 'round001-00002']


@pytest.mark.filterwarnings("ignore:'where' used without 'out':UserWarning")
def test_the_console_drives_the_station(live):
  """moma's simulated station with the console as its operator (as launch.py sets it): the
  episode waits for the page's start inside HardwareEnv.reset, shows the station's camera, takes
  the page's command and its verdict."""
  from habc.envs import hardware
  c = live(wait_for_start=True, deadman_s=1.0)
  section = hardware.default_config().to_dict()
  section['operator'] = console.OPERATOR
  config = rollout.WorkerConfig(task='hw_insert', cameras=('top',), time_limit=40,
                                execute_steps=4, env_factory='habc.envs.hardware:rollout_env',
                                env_options={'hardware': section})
  results, errors = [], []

  def body():
    try:
      episode = rollout._Episode(config, rollout.EpisodeRequest('station000-000007', seed=0))  # pylint: disable=protected-access
      while not episode.run_chunk(np.zeros((4, 10), np.float32)):
        pass
      results.append(episode.result())
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  thread = threading.Thread(target=body, daemon=True)
  thread.start()
  from websockets.sync.client import connect
  command = [0, 0.5, 0, 0, -1, 0, 0, 0, 0, -1]
  with connect(ws_url(c)) as ws:
    m = recv_until(ws, lambda m: m['type'] == 'state' and m['phase'] == 'waiting', timeout=60)
    assert m['episode']['label'] == 'station 0, episode 8' and m['episode']['task'] == 'hw_insert'
    ws.send(json.dumps({'type': 'start'}))
    m = recv_until(ws, lambda m: m['type'] == 'state' and m.get('step', 0) >= 2, timeout=30)
    assert set(m['frames']['images']) == {'top'} and m['frames']['shapes']['top'] == [64, 64]
    hold = np.asarray(m['hold'])  # Arms still, grippers at their reading (open-ish at home).
    assert (hold[[0, 1, 2, 3, 5, 6, 7, 8]] == 0).all() and hold[4] < 0 and hold[9] < 0
    for _ in range(5):
      ws.send(json.dumps({'type': 'control', 'takeover': True, 'action': command}))
      recv_until(ws, lambda m: m.get('control') == 'human', timeout=10)
    ws.send(json.dumps({'type': 'control', 'takeover': False}))
    ws.send(json.dumps({'type': 'outcome', 'success': True}))
    thread.join(60)
  assert not errors, errors
  result = results[0]
  assert result['success'] and result['intervention_steps'] >= 5
  steps = result['episode']['steps']
  flags = steps['is_intervention'][:-1]
  assert (steps['policy_action'][:-1] == 0).all()
  # The station executes the command after its safety clipping: +y at 0.5 is inside the limits.
  np.testing.assert_allclose(steps['action'][:-1][flags][:, 1], 0.5, atol=1e-5)


# ----- the simulated task's wrapper --------------------------------------------------------------

def test_simulated_env_takes_verdicts_holds_and_stops():
  env = console.simulated_env('insert', seed=0, cameras=(), time_limit=50)
  try:
    ts = env.reset()
    assert ts.first() and env.task_name == 'insert' and env.time_limit == 50
    hold = env.hold_action()
    assert hold.shape == (10,) and hold[4] == -1 and hold[9] == -1  # Grippers open at home.
    before = env.state()
    for _ in range(3):
      env.step(hold)
    np.testing.assert_allclose(env.state()[:3], before[:3], atol=2e-3)
    frames = env.camera_images()
    assert set(frames) == {'top', 'wrist_left', 'wrist_right'}
    assert frames['top'].shape == (128, 128, 3) and frames['top'].dtype == np.uint8
    env.report_outcome(True)
    ts = env.step(np.zeros(10, np.float32))
    assert ts.last() and ts.discount == 0.0 and ts.reward == 1.0
    env.reset()
    env.report_outcome(False)
    ts = env.step(np.zeros(10, np.float32))
    assert ts.last() and ts.discount == 1.0 and not env.episode_invalid
    env.reset()
    ts = env.step(np.full(10, np.nan, np.float32))
    assert ts.last() and env.episode_invalid
    assert not env.reset().last() and not env.episode_invalid
  finally:
    env.close()


# ----- the rollout hooks -------------------------------------------------------------------------

def test_rollout_calls_the_episode_hooks_of_the_environments_operator():
  calls = []

  class Operator:
    def begin_episode(self, request, env):
      calls.append(('begin', request.episode_id, type(env).__name__))

    def end_episode(self, summary):
      calls.append(('end', summary['episode_id'], summary['length'], sorted(summary)))

  class Env(console_demo.DemoEnv):
    operator = Operator()

  import tests.test_console as me
  me.HookEnv = Env
  config = rollout.WorkerConfig(task='x', time_limit=5, execute_steps=8,
                                env_factory='tests.test_console:make_hook_env')
  episode = rollout._Episode(config, rollout.EpisodeRequest('e-1', seed=0))  # pylint: disable=protected-access
  while not episode.run_chunk(np.zeros((8, 10), np.float32)):
    pass
  episode.result()
  assert calls[0] == ('begin', 'e-1', 'Env')
  assert calls[1][:3] == ('end', 'e-1', 5) and 'episode' not in calls[1][3]


HookEnv = None


def make_hook_env(task, *, seed, image_size=64, cameras=(), time_limit=None):
  return HookEnv(seed, cameras=('top',), time_limit=time_limit)


# ----- launch.py ---------------------------------------------------------------------------------

def test_launch_chooses_the_operator():
  # In a subprocess: launch.py defines absl flags, which must not collide with other tests'.
  code = """
import launch
from experiments import habc
base = habc.get_config('smoke')
c = launch.build_config(base, task='fold', seed=None, experiment='x', operator='console')
assert c.rollout.operator_factory == launch.CONSOLE_OPERATOR and c.operator.enabled
assert c.rollout.env_factory == launch.CONSOLE_SIM_ENV_FACTORY and c.runtime.num_workers == 1
assert c.runtime.episodes_per_worker == 1
assert launch.uses_console(c)
c = launch.build_config(base, task='fold', seed=None, experiment='x')
assert not launch.uses_console(c) and c.rollout.env_factory == 'habc.envs:make'
base.data.teleop_dir = '/recordings'
c = launch.build_config(base, task='hw_fold', seed=None, experiment='x')
assert c.hardware.operator == launch.CONSOLE_OPERATOR and launch.uses_console(c)
c = launch.build_config(base, task='hw_fold', seed=None, experiment='x',
                        hardware_overrides=['operator=my_rig:SpaceMouse'])
assert c.hardware.operator == 'my_rig:SpaceMouse' and not launch.uses_console(c)
for kw, match in ((dict(task='hw_fold', operator='simulated'), 'no scripted expert'),
                  (dict(task='hw_fold', operator='console',
                        hardware_overrides=['operator=my_rig:SpaceMouse']), 'choose one')):
  try:
    launch.build_config(base, seed=None, experiment='x', **kw)
    raise SystemExit('not refused: %s' % kw)
  except launch.UsageError as e:
    assert match in str(e), e
s = launch.console_settings(c, '/tmp/w', host='0.0.0.0', mode='actor', station_id=2)
assert s.token and s.wait_for_start and s.log_path == '/tmp/w/logs/console_station_002.jsonl'
s = launch.console_settings(launch.build_config(base, task='fold', seed=None, experiment='x',
                                                operator='console'), '/tmp/w')
assert not s.token and not s.wait_for_start and s.episodes_per_round == base.rollout.episodes_per_round
print('ok')
"""
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-3000:]
