"""Per-episode policy noise: an episode's samples depend on (base seed, episode seed, decision
index) only, not on which episodes share a batched policy call, padding or worker timing."""

import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

from habc.run import rollout
from habc.networks import policy as policy_lib

FAKE_ENV = 'tests.test_pipeline_fakes:make_fake_env'
OPERATOR = 'tests.test_pipeline_fakes:TakeoverOperator'


# ------------------------------------------------------------------------------------------------
# The sampler: one key per row.


@functools.lru_cache(maxsize=1)
def _smoke_policy():
  """(policy fn, params, obs of 4 rows) for the smoke network on state observations."""
  from experiments import presets
  from habc.learning.learner import create_train_state
  from habc.learning.synthetic import synthetic_batch
  from habc.networks import build_model
  c = presets.make_config('smoke')
  batch = synthetic_batch(4, action_dim=3, state_dim=5, horizon=c.model.action_horizon,
                          instruction_len=c.model.max_instruction_len, vision=False, seed=1)
  model = build_model(c, 3)
  params = create_train_state(c, model, batch, jax.random.PRNGKey(0)).params
  return policy_lib.make_policy_fn(model, c), params, batch['obs']


def _rows(obs, index):
  return jax.tree.map(lambda x: x[np.asarray(index)], obs)


def test_a_row_samples_the_same_alone_or_in_any_batch():
  fn, params, obs = _smoke_policy()
  ids = np.array([[11, 0], [11, 1], [12, 0], [7, 3]], np.uint32)
  keys = policy_lib.noise_keys(jax.random.PRNGKey(5), ids)
  batch = np.asarray(fn(params, obs, keys))
  for row in range(4):
    alone = np.asarray(fn(params, _rows(obs, [row]), keys[row:row + 1]))
    np.testing.assert_array_equal(alone[0], batch[row])  # Bit-identical on the CPU backend.
  # Another order, and a row repeated as padding: each row still gets its own sample.
  order = [2, 0, 3, 3]
  shuffled = np.asarray(fn(params, _rows(obs, order), keys[np.asarray(order)]))
  np.testing.assert_array_equal(shuffled, batch[order])


def test_different_keys_give_different_samples():
  fn, params, obs = _smoke_policy()
  same_obs = _rows(obs, [0, 0, 0])
  keys = policy_lib.noise_keys(jax.random.PRNGKey(5), np.array([[11, 0], [11, 1], [12, 0]]))
  out = np.asarray(fn(params, same_obs, keys))
  assert np.abs(out[0] - out[1]).max() > 1e-3 and np.abs(out[0] - out[2]).max() > 1e-3
  # The same ids under another base seed (another policy, e.g. another round) differ too.
  other_base = policy_lib.noise_keys(jax.random.PRNGKey(6), np.array([[11, 0]]))
  other = np.asarray(fn(params, _rows(obs, [0]), other_base))
  assert np.abs(other[0] - out[0]).max() > 1e-3


def test_noise_keys_are_a_function_of_base_and_ids_only():
  base = jax.random.PRNGKey(3)
  ids = np.array([[5, 0], [5, 1], [6, 0]], np.uint32)
  keys = np.asarray(policy_lib.noise_keys(base, ids))
  expect = [np.asarray(jax.random.fold_in(jax.random.fold_in(base, s), d)) for s, d in ids]
  np.testing.assert_array_equal(keys, np.stack(expect))
  np.testing.assert_array_equal(np.asarray(policy_lib.noise_keys(base, ids[2:])), keys[2:])
  assert len({tuple(k) for k in keys}) == 3
  typed = policy_lib.noise_keys(jax.random.key(3), ids)
  assert typed.shape == (3,)
  np.testing.assert_array_equal(np.asarray(jax.random.key_data(typed)), keys)


def test_sampler_refuses_a_single_key_for_a_batch():
  fn, params, obs = _smoke_policy()
  with pytest.raises(ValueError, match='one PRNG key per row'):
    fn(params, obs, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='one PRNG key per row'):
    fn(params, obs, jax.random.split(jax.random.PRNGKey(0), 3))


# ------------------------------------------------------------------------------------------------
# run_episodes: the noise ids an episode receives.


class _RecordingPolicy:
  """A stochastic fake keyed like the real one: row i's action is drawn from noise_ids[i]."""

  def __init__(self):
    self.calls = []

  def __call__(self, observations, noise_ids):
    ids = np.asarray(noise_ids)
    assert ids.shape == (len(observations), 2) and ids.dtype.kind in 'iu'
    self.calls.append(ids.copy())
    chunks = np.zeros((len(observations), 4, 2), np.float32)
    for i, (seed, decision) in enumerate(ids):
      chunks[i, :, 0] = np.random.default_rng([int(seed), int(decision)]).uniform(-0.2, 1.0, 4)
    return chunks


SEEDS = (3, 10, 11, 25, 40, 41)


def _run(num_workers, pad_to=None, lockstep=False):
  """Per episode seed: (decision ids received, per row of each call), length, success, actions."""
  config = rollout.WorkerConfig(task='fake', time_limit=30, execute_steps=3,
                                env_factory=FAKE_ENV, operator_factory=OPERATOR,
                                operator={'after': 8, 'takeover_prob': 0.5})
  requests = [rollout.EpisodeRequest(episode_id=f'ep-{i}', seed=s, kind='rollout', record=True)
              for i, s in enumerate(SEEDS)]
  policy, results = _RecordingPolicy(), []
  with rollout.WorkerPool(config, num_workers) as pool:
    rollout.run_episodes(pool, requests, policy, results.append, pad_to=pad_to,
                         lockstep=lockstep)
  decisions = {s: set() for s in SEEDS}
  for ids in policy.calls:
    for seed, decision in {tuple(map(int, row)) for row in ids}:  # Padding repeats a row.
      assert decision not in decisions[seed], f'seed {seed} got decision {decision} twice'
      decisions[seed].add(decision)
  out = {}
  for r in results:
    steps = r['episode']['steps']
    out[r['seed']] = (sorted(decisions[r['seed']]), r['length'], r['success'],
                      steps['policy_action'].tolist(), steps['action'].tolist())
  return out, len(policy.calls)


def test_episode_noise_ids_do_not_depend_on_workers_or_batching():
  alone, calls_alone = _run(1)
  two, _ = _run(2)  # Served as they become ready: which rows share a call depends on timing.
  lockstep, calls_lockstep = _run(2, lockstep=True)
  padded, _ = _run(3, pad_to=4)
  assert sorted(alone) == sorted(SEEDS)
  for seed, (decisions, length, *_rest) in alone.items():
    # Decision k of an episode is its k-th chunk: 0, 1, ... one per 3 executed steps.
    assert decisions == list(range(-(-length // 3))), (seed, decisions, length)
  assert two == alone and lockstep == alone and padded == alone
  assert calls_lockstep < calls_alone  # In lockstep the workers do share calls.
  lengths = {v[1] for v in alone.values()}
  assert len(lengths) > 1  # The noise matters: episodes differ.


def test_policy_calls_have_one_fixed_shape():
  """Rows are served in calls of exactly pad_to rows (the last padded by repeating its last row):
  more rows waiting means more calls, never a bigger batch (XLA's bits depend on the batch)."""
  shapes = []

  def policy(observations, noise_ids):
    shapes.append((len(observations), np.asarray(noise_ids).shape))
    return np.asarray(noise_ids, np.float32)[:, None, :] * np.ones((1, 4, 1), np.float32)

  ids = np.array([[7, 0], [8, 0], [9, 3]])
  call = rollout._call_policy  # pylint: disable=protected-access
  out = call(policy, [{}, {}, {}], ids, pad_to=1)
  assert shapes == [(1, (1, 2))] * 3
  np.testing.assert_array_equal(out[:, 0], ids)
  shapes.clear()
  out = call(policy, [{}, {}, {}], ids, pad_to=2)
  assert shapes == [(2, (2, 2))] * 2 and out.shape == (3, 4, 2)
  np.testing.assert_array_equal(out[:, 0], ids)
  shapes.clear()
  call(policy, [{}], ids[:1], pad_to=4)
  assert shapes == [(4, (4, 2))]


def test_noise_ids_must_fit_uint32():
  np.testing.assert_array_equal(rollout.noise_ids([1, 2**32 - 1], [0, 4]),
                                [[1, 0], [2**32 - 1, 4]])
  with pytest.raises(ValueError, match=r'outside \[0, 2\*\*32\)'):
    rollout.noise_ids([-1], [0])
  with pytest.raises(ValueError, match='seed 4294967296'):
    rollout.noise_ids([2**32], [0])


# ------------------------------------------------------------------------------------------------
# The smoke pipeline (simulated insert, state observations): demonstrations and SFT once, then the
# trained policy's episodes under different batchings, and a round's evaluation and collection run
# twice.

TIME_LIMIT = 40  # Control steps per episode after the demonstrations (5 decisions).


def _smoke_config(num_workers):
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  config.runtime.num_workers = num_workers
  return config


@pytest.fixture(scope='module')
def sft_workdir(tmp_path_factory):
  from habc.run import pipeline
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  config = _smoke_config(2)
  workdir = str(tmp_path_factory.mktemp('reproducible') / 'run')
  pipeline.prepare_workdir(config, workdir)
  p = pipeline.Pipeline(config, workdir, log=lambda line: None)
  try:
    p.demos()
    p.sft()
  finally:
    p.close()
  return workdir


def _episode_arrays(result):
  steps = result['episode']['steps']
  return (result['length'], result['success'], steps['policy_action'], steps['action'],
          steps['observation']['state'])


def _assert_same_episodes(a, b):
  assert sorted(a) == sorted(b)
  for key in a:
    length, success, *arrays = a[key]
    assert (length, success) == tuple(b[key][:2]), key
    for x, y in zip(arrays, b[key][2:]):
      np.testing.assert_array_equal(x, y, err_msg=str(key))


def test_trained_policy_episodes_do_not_depend_on_batching(sft_workdir):
  """The real policy (Backend.policy) in MuJoCo: one worker (each episode alone, padded) and two
  workers (episodes paired by timing, in either row) give bit-identical episodes; so do calls of
  one row (rollout.policy_batch=1) with one worker, and with two workers of two interleaved
  episodes each (up to four rows waiting at once, served one by one)."""
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  config = _smoke_config(1)
  config.rollout.time_limit = TIME_LIMIT
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(sft_workdir))
  backend.load_latest(os.path.join(sft_workdir, 'checkpoints'))
  policy = backend.policy(rng_seed=rollout.seed_for(config.seed, 'test-policy', 0, 0))
  requests = [rollout.EpisodeRequest(episode_id=f'ep-{i}', seed=rollout.seed_for(7, 'test', 0, i),
                                     kind='rollout', record=True) for i in range(3)]

  def run(num_workers, pad_to, per=1):
    results = {}
    with rollout.WorkerPool(backend.worker_config(), num_workers, episodes_per_worker=per) as pool:
      rollout.run_episodes(pool, requests, policy,
                           lambda r: results.update({r['episode_id']: _episode_arrays(r)}),
                           pad_to=pad_to)
    return results

  try:
    alone = run(1, pad_to=2)
    shared = run(2, pad_to=2)
    single_rows = run(1, pad_to=1)
    interleaved = run(2, pad_to=1, per=2)
  finally:
    backend.close()
  _assert_same_episodes(alone, shared)
  _assert_same_episodes(single_rows, interleaved)
  # The noise matters: the episodes' first chunks differ.
  firsts = [v[2][:config.rollout.execute_steps] for v in alone.values()]
  assert np.abs(firsts[0] - firsts[1]).max() > 1e-3


def test_smoke_round_evaluation_and_collection_repeat_exactly(sft_workdir, tmp_path):
  """Round 0's evaluation and round 1's collection, run twice from the same SFT checkpoint:
  the same evaluation rows and the same recorded episodes, bit for bit, in the same order."""
  from habc.run import pipeline
  from habc.data import episodes as episodes_lib
  outcomes = []
  for run in ('a', 'b'):
    workdir = str(tmp_path / run)
    shutil.copytree(sft_workdir, workdir)
    config = _smoke_config(2)
    config.rollout.time_limit = TIME_LIMIT
    p = pipeline.Pipeline(config, workdir, log=lambda line: None)
    try:
      p.evaluate(0)
      p.collect(1)
    finally:
      p.close()
    with open(os.path.join(workdir, 'eval', 'round_000.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    source = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', 'round_001'), cameras=())
    episodes = [source[i] for i in range(len(source))]
    outcomes.append((rows, episodes))
  (rows_a, episodes_a), (rows_b, episodes_b) = outcomes
  assert len(rows_a) == 4 and all(r['length'] <= TIME_LIMIT for r in rows_a)
  assert rows_a == rows_b
  assert len(episodes_a) == len(episodes_b) == 4
  for ea, eb in zip(episodes_a, episodes_b):
    assert ea['episode_metadata']['episode_id'] == eb['episode_metadata']['episode_id']
    for key in ('action', 'policy_action', 'is_intervention'):
      np.testing.assert_array_equal(ea['steps'][key], eb['steps'][key])
    np.testing.assert_array_equal(ea['steps']['observation']['state'],
                                  eb['steps']['observation']['state'])
