"""Rollout workers with a fake environment: the recorded episode, interventions, ordering."""

import sys

import numpy as np
import pytest

from habc.run import rollout

FAKE_ENV = 'tests.test_pipeline_fakes:make_fake_env'
OPERATOR = 'tests.test_pipeline_fakes:TakeoverOperator'


def _config(**kw):
  base = dict(task='fake', image_size=8, cameras=(), time_limit=30, execute_steps=3,
              env_factory=FAKE_ENV, operator_factory=OPERATOR)
  base.update(kw)
  return rollout.WorkerConfig(**base)


def _policy(speed):
  def act(observations, noise_ids):
    assert np.shape(noise_ids) == (len(observations), 2)
    assert all('instruction' in o for o in observations)
    return np.tile(np.array([[speed, 0.5]], np.float32), (len(observations), 4, 1))
  return act


@pytest.fixture(scope='module')
def pool():
  with rollout.WorkerPool(_config(operator={'after': 5, 'takeover_prob': 1.0}), 2) as p:
    yield p


def test_autonomous_episode_follows_rlds_convention(pool):
  results = []
  requests = [rollout.EpisodeRequest(episode_id=f'ep-{i}', seed=i, kind='eval', record=True)
              for i in range(3)]
  rollout.run_episodes(pool, requests, _policy(1.0), results.append)
  assert sorted(r['episode_id'] for r in results) == ['ep-0', 'ep-1', 'ep-2']
  for r in results:
    ep = r['episode']
    steps = ep['steps']
    num = len(steps['action'])
    assert r['success'] and ep['episode_metadata']['success']
    assert num == r['length'] + 1  # The last step holds the final observation.
    assert steps['is_first'][0] and steps['is_first'].sum() == 1
    assert steps['is_last'][-1] and steps['is_last'].sum() == 1
    assert steps['is_terminal'][-1] and steps['discount'][-1] == 0.0
    assert steps['reward'][-1] == 1.0 and steps['reward'][:-1].sum() == 0.0
    np.testing.assert_array_equal(steps['action'][-1], 0.0)
    np.testing.assert_array_equal(steps['action'], steps['policy_action'])
    assert not steps['is_intervention'].any()
    assert steps['observation']['state'].shape == (num, 2)
    assert steps['language_instruction'] == 'reach one'


def test_operator_takeover_keeps_policy_action(pool):
  results = []
  # The policy barely moves (fails alone); the operator takes over after 5 steps and succeeds.
  requests = [rollout.EpisodeRequest(episode_id='ep-0', seed=0, kind='rollout', policy_version=7)]
  rollout.run_episodes(pool, requests, _policy(0.05), results.append)
  (r,) = results
  steps = r['episode']['steps']
  flags = steps['is_intervention']
  assert not flags[:5].any() and flags[5:-1].all() and not flags[-1]
  assert r['intervention_steps'] == int(flags.sum())
  np.testing.assert_allclose(steps['policy_action'][:-1, 0], 0.05)  # What the policy proposed.
  np.testing.assert_allclose(steps['action'][5:-1, 0], 1.0)  # What the operator executed.
  assert r['success'] and r['episode']['episode_metadata']['policy_version'] == 7


def test_timeout_is_failure_not_terminal(pool):
  results = []
  requests = [rollout.EpisodeRequest(episode_id='ep-0', seed=0, kind='eval', record=True,
                                     video_camera='top', video_every=5)]
  rollout.run_episodes(pool, requests, _policy(0.0), results.append)
  (r,) = results
  steps = r['episode']['steps']
  assert not r['success'] and r['length'] == 30
  assert not steps['is_terminal'].any() and steps['discount'][-1] == 1.0
  assert r['frames'].shape[1:] == (64, 64, 3) or r['frames'].shape[1:] == (8, 8, 3)
  assert len(r['frames']) >= 6


def test_demo_recording_round_trip(tmp_path):
  config = _config()
  request = rollout.EpisodeRequest(episode_id='demo-0', seed=3, kind='demo',
                                   demo_path=str(tmp_path / 'episode_00000.hdf5'))
  with rollout.WorkerPool(config, 1) as pool:
    results = []
    rollout.run_episodes(pool, [request], None, results.append)
  (r,) = results
  assert r['success'] and (tmp_path / 'episode_00000.hdf5').exists()
  # The data layer's converter reads the recording like any teleop file.
  from habc.data import converters
  from habc.data import episodes as episodes_lib
  converters.convert('aloha_hdf5', str(tmp_path), str(tmp_path / 'rlds'), progress=False,
                     source='demo')
  source = episodes_lib.EpisodeSource(str(tmp_path / 'rlds'))
  assert len(source) == 1
  episode = source[0]
  steps = episode['steps']
  assert len(steps['action']) == r['length'] + 1
  assert episode['episode_metadata']['source'] == 'demo'
  assert episode['episode_metadata']['task'] == 'fake'
  assert steps['is_terminal'][-1] and 'privileged' in steps['observation']
  assert 'tensorflow' not in sys.modules


def test_worker_error_is_reported_with_traceback():
  config = _config(env_factory='tests.test_pipeline_fakes:no_such_factory')
  with rollout.WorkerPool(config, 1) as pool:
    with pytest.raises(rollout.WorkerError, match='no_such_factory'):
      rollout.run_episodes(pool, [rollout.EpisodeRequest('e', 0, kind='eval')], _policy(1.0),
                           lambda r: None)


def test_seeds_are_deterministic_and_distinct():
  a = [rollout.seed_for(0, 'collect', 1, i) for i in range(50)]
  assert a == [rollout.seed_for(0, 'collect', 1, i) for i in range(50)]
  assert len(set(a)) == 50
  assert rollout.seed_for(0, 'collect', 1, 0) != rollout.seed_for(0, 'eval', 1, 0)
  assert rollout.seed_for(0, 'collect', 1, 0) != rollout.seed_for(1, 'collect', 1, 0)


def test_executed_action_and_invalid_episode_from_the_environment():
  config = _config(env_factory='tests.test_pipeline_fakes:make_station_like_env')
  results = []
  with rollout.WorkerPool(config, 1) as pool:
    rollout.run_episodes(pool, [rollout.EpisodeRequest('e', 0, kind='rollout')], _policy(0.8),
                         results.append)
  (r,) = results
  # A safety stop has no outcome: reported as invalid, never recorded as a failure.
  assert r['invalid'] and not r['success'] and r['episode'] is None and r['length'] == 5
  config = _config(env_factory='tests.test_pipeline_fakes:make_station_like_env', time_limit=3)
  results = []
  with rollout.WorkerPool(config, 1) as pool:
    rollout.run_episodes(pool, [rollout.EpisodeRequest('e', 0, kind='rollout')], _policy(0.8),
                         results.append)
  steps = results[0]['episode']['steps']
  np.testing.assert_allclose(steps['action'][:-1, 0], 0.4)  # What the environment executed.
  np.testing.assert_allclose(steps['policy_action'][:-1, 0], 0.8)
