"""Crash and resume: launch.py is SIGKILLed (with its environment workers) at seeded random points
across demonstrations, SFT, evaluation, collection, training and the report, re-run each time, and
the finished workdir is checked: every episode in each dataset exactly once and whole, every
dataset readable by plain tfds, no uncommitted shard left behind, the checkpoint restores with its
optimiser state, and the run compared with an uninterrupted one of the same seed.

Default: two kills in a one-round smoke run. ``--runslow``: six kills over two rounds, and the
comparison with an uninterrupted run.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from habc.run import pipeline
from habc.run import backend as backend_lib
from habc.run import paths as paths_lib
from habc.run import rollout
from tests import tfds_plain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One environment worker: with two, which rollouts share a batched policy call depends on timing,
# so even two uninterrupted runs differ in their rollouts (see docs/robustness.md).
BASE_ARGS = ['--task=insert', '--preset=smoke', '--config.runtime.num_workers=1']


def launch_env():
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=os.path.join(
      os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))


def progress(workdir):
  try:
    with open(os.path.join(workdir, 'progress.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def count_files(path, suffix):
  return len([f for f in os.listdir(path) if f.endswith(suffix)]) if os.path.isdir(path) else 0


# Where a kill may land: a predicate on the workdir (polled every 20 ms) that holds while the run
# is inside that stage.
STAGES = {
    'demos': lambda w, p: not p.get('demos') and count_files(os.path.join(w, 'demos', 'hdf5'),
                                                              '.hdf5') >= 1,
    'sft': lambda w, p: p.get('demos') and not p.get('sft'),
    'eval_0': lambda w, p: p.get('sft') and not p.get('eval_000'),
    'collect': lambda w, p: any(p.get(f'eval_{r - 1:03d}') and not p.get(f'collect_{r:03d}')
                                for r in (1, 2)),
    'train': lambda w, p: any(p.get(f'collect_{r:03d}') and not p.get(f'train_{r:03d}')
                              for r in (1, 2)),
    'eval': lambda w, p: any(p.get(f'train_{r:03d}') and not p.get(f'eval_{r:03d}')
                             for r in (1, 2)),
    'report': lambda w, p: p.get('eval_001') and not p.get('report'),
}


def run_launch(workdir, extra, log_path, kill_when=None, delay=0.0, timeout=300):
  """Runs launch.py; with ``kill_when``, SIGKILLs its process group ``delay`` s after the predicate
  first holds. Returns (returncode, killed)."""
  with open(log_path, 'a') as log:
    proc = subprocess.Popen([sys.executable, 'launch.py', *BASE_ARGS, *extra,
                             f'--workdir={workdir}'], cwd=ROOT, env=launch_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    fired = None
    try:
      while proc.poll() is None and time.monotonic() < deadline:
        if kill_when is not None and fired is None and kill_when(workdir, progress(workdir)):
          fired = time.monotonic()
        if fired is not None and time.monotonic() - fired >= delay:
          os.killpg(proc.pid, signal.SIGKILL)  # The run and its environment workers.
          proc.wait()
          return proc.returncode, True
        time.sleep(0.02)
    finally:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
  return proc.returncode, False


def crash_and_resume(workdir, extra, kills, log_path):
  """Runs with the given (stage, delay) kills, then to the end; returns the stages hit."""
  hit = []
  for stage, delay in kills:
    before = progress(workdir)
    code, killed = run_launch(workdir, extra, log_path, STAGES[stage], delay)
    if killed:
      hit.append((stage, sorted(k for k in progress(workdir) if k not in before),
                  partial_progress(workdir)))
    else:
      assert code == 0, open(log_path).read()[-3000:]
  code, killed = run_launch(workdir, extra, log_path)
  assert code == 0 and not killed, open(log_path).read()[-3000:]
  return hit


def partial_progress(workdir):
  """What a kill cut in the middle of, with progress kept that changes the rest of the run: a
  training stage with a checkpoint between its start and target step (the resumed batch stream
  is seeded from that step), or a collection with some but not all episodes committed (the
  resumed policy's sampling RNG is seeded from the first missing episode). None otherwise: the
  resumed run then redoes exactly what an uninterrupted one does."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  from habc.data import writer
  config = json.load(open(path))
  p = progress(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  sft, per = config['pipeline']['sft_steps'], config['pipeline']['steps_per_round']
  if p.get('demos') and not p.get('sft') and any(0 < s < sft for s in steps):
    return 'sft'
  for r in range(1, config['pipeline']['rounds'] + 1):
    start = sft + (r - 1) * per
    if p.get(f'collect_{r:03d}') and not p.get(f'train_{r:03d}') and any(
        start < s < start + per for s in steps):
      return f'train_{r:03d}'
    if p.get(f'eval_{r - 1:03d}') and not p.get(f'collect_{r:03d}'):
      n = writer.num_episodes(os.path.join(workdir, 'data', f'round_{r:03d}'))
      if 0 < n < config['rollout']['episodes_per_round']:
        return f'collect_{r:03d}'
  return None


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def check_workdir(workdir, config):
  """The invariants of a finished run, whatever crashed on the way."""
  rounds = config['pipeline']['rounds']
  per_round = config['rollout']['episodes_per_round']
  p = progress(workdir)
  assert all(p.get(k) for k in ['demos', 'sft', 'report'] + [f'eval_{r:03d}' for r in range(
      rounds + 1)] + [f'{s}_{r:03d}' for r in range(1, rounds + 1) for s in (
          'collect', 'train', 'round')]), p
  data = os.path.join(workdir, 'data')
  names = ['demos'] + [f'round_{r:03d}' for r in range(1, rounds + 1)]
  found = dict(zip(names, tfds_plain.read_episodes(*[os.path.join(data, n) for n in names])))
  demo_ids = [row['episode_id'] for row in found['demos']]
  assert len(demo_ids) == config['data']['num_demos'] == len(set(demo_ids))
  assert count_files(os.path.join(workdir, 'demos', 'hdf5'), '.hdf5') == len(demo_ids)
  for r in range(1, rounds + 1):
    rows = found[f'round_{r:03d}']
    assert [row['episode_id'] for row in rows] == [
        f'round{r:03d}-{i:05d}' for i in range(per_round)]
    logged = read_jsonl(os.path.join(workdir, 'logs', f'collect_round_{r:03d}.jsonl'))
    assert [x['episode_id'] for x in logged] == [row['episode_id'] for row in rows]
    # Whole episodes only: length + 1 steps (the final observation), first and last flags right.
    assert [row['steps'] for row in rows] == [x['length'] + 1 for x in logged]
  assert all(row['whole'] for rows in found.values() for row in rows), found
  for name in names:  # No uncommitted shard or temp file left behind.
    path = os.path.join(data, name)
    info = json.load(open(os.path.join(path, 'dataset_info.json')))
    listed = sum(len(s['shardLengths']) for s in info['splits'])
    shards = [f for f in os.listdir(path) if re.search(r'\.array_record-\d+$', f)]
    assert len(shards) == listed and not os.path.exists(os.path.join(path, '.tmp')), name
  for r in range(rounds + 1):
    rows = read_jsonl(os.path.join(workdir, 'eval', f'round_{r:03d}.jsonl'))
    assert [x['episode_id'] for x in rows] == [
        f'eval{r:03d}-{i:05d}' for i in range(config['eval']['episodes'])]
  assert not [d for d in os.listdir(os.path.join(workdir, 'checkpoints')) if 'tmp' in d]


def restored_state(workdir, config_dict):
  """Restores the final checkpoint; checks its optimiser step counters. Returns the TrainState."""
  import jax
  import ml_collections
  config = ml_collections.ConfigDict(config_dict)
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(workdir))
  final = config.pipeline.sft_steps + config.pipeline.rounds * config.pipeline.steps_per_round
  try:
    assert backend.load_latest(os.path.join(workdir, 'checkpoints')) == final == backend.step
    state = jax.device_get(backend.learner.state)
  finally:
    backend.close()
  def counts(label):
    return [int(np.asarray(x)) for x in jax.tree.leaves(state.opt_state.inner_states[label])
            if np.asarray(x).dtype == np.int32 and np.asarray(x).shape == ()]
  # Adam state survived every resume; the actor's skips the critic phase's critic-only updates.
  phase = config.get('critic', {}).get('phase_steps', 0)
  assert counts('critic') and all(c == final for c in counts('critic')), counts('critic')
  actor = final - config.pipeline.rounds * phase
  assert counts('actor') and all(c == actor for c in counts('actor')), counts('actor')
  return state


def demo_actions(workdir):
  from habc.data import episodes as episodes_lib
  source = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', 'demos'), cameras=())
  return [source[i]['steps']['action'] for i in range(len(source))]


def pick_kills(rng, stages, count):
  """``count`` kills in stage order (a stage may be hit twice), each after a random delay."""
  chosen = sorted(rng.choices(range(len(stages)), k=count))
  return [(stages[i], rng.uniform(0.0, 1.5)) for i in chosen]


def test_killed_twice_resumes_to_a_complete_run(tmp_path):
  workdir = str(tmp_path / 'run')
  extra = ['--config.pipeline.rounds=1']
  rng = random.Random(8)
  kills = [(rng.choice(['demos', 'sft']), rng.uniform(0, 1.0)),
           (rng.choice(['collect', 'train', 'eval']), rng.uniform(0, 1.0))]
  hit = crash_and_resume(workdir, extra, kills, str(tmp_path / 'log.txt'))
  print('kills', kills, 'hit', hit)
  assert hit, 'no kill landed'
  config = json.load(open(os.path.join(workdir, 'config.json')))
  check_workdir(workdir, config)
  restored_state(workdir, config)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1])
def test_random_kills_match_an_uninterrupted_run(tmp_path, seed):
  rng = random.Random(seed)
  stages = list(STAGES)
  kills = pick_kills(rng, stages, 6)
  crashed, reference = str(tmp_path / 'crashed'), str(tmp_path / 'reference')
  hit = crash_and_resume(crashed, [], kills, str(tmp_path / 'crashed.txt'))
  print('kills', kills, 'hit', hit)
  assert len(hit) >= 3, hit
  code, _ = run_launch(reference, [], str(tmp_path / 'reference.txt'))
  assert code == 0
  config = json.load(open(os.path.join(crashed, 'config.json')))
  check_workdir(crashed, config)
  check_workdir(reference, config)
  # Demonstrations are fixed by their seeds: identical whatever crashed.
  for a, b in zip(demo_actions(crashed), demo_actions(reference)):
    np.testing.assert_array_equal(a, b)
  # Evaluation seeds are the same episode by episode.
  for r in range(config['pipeline']['rounds'] + 1):
    seeds = [[x['seed'] for x in read_jsonl(os.path.join(w, 'eval', f'round_{r:03d}.jsonl'))]
             for w in (crashed, reference)]
    assert seeds[0] == seeds[1]
  import jax
  a, b = restored_state(crashed, config), restored_state(reference, config)
  assert int(a.step) == int(b.step)
  # Parameters: bit-identical to the uninterrupted run unless a kill cut a training stage after
  # one of its checkpoints or a collection after some of its episodes (the batch stream and the
  # policy's sampling RNG are then re-seeded from the resume point, by design;
  # docs/robustness.md). Either way they are finite.
  partial = [cut for _, _, cut in hit if cut]
  same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                   jax.tree.leaves(b.params)))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(a.params))
  print('resumed mid-stage:', partial, 'params equal:', same)
  assert same == (not partial), (partial, same)


# ---- Crashes at exact points, with stand-ins for the learner and the environment. ---------------
# These pin down two ways a kill loses or duplicates data (bugs in habc/run/pipeline.py, reported;
# the tests turn green once fixed).

INVALID_SEED_ENV = 'HABC_TEST_INVALID_SEED'


def make_sometimes_invalid_env(task, *, seed, image_size=8, cameras=(), time_limit=None):
  """The fake reaching task; the episode whose seed is $HABC_TEST_INVALID_SEED ends in a safety
  stop (invalid: logged, not written), like a hardware station."""
  from tests import test_pipeline_fakes as fakes
  cls = fakes.StationLikeEnv if str(seed) == os.environ.get(INVALID_SEED_ENV) else fakes.FakeEnv
  return cls(seed, image_size=image_size, cameras=cameras, time_limit=time_limit)


class FakeBackend:
  """The pipeline's backend calls, without a model: a step counter and a zero policy."""

  def __init__(self, config, step=0):
    self.config = config
    self._step = step
    self.policy_seconds = []
    self.wrap_writer = lambda w: w
    self.warmups = []  # gate_warmup of every update.
    self.critic_only = []  # critic_only of every update.

  def bind(self, paths):
    self.paths = paths

  def close(self):
    pass

  @property
  def step(self):
    return self._step

  def worker_config(self):
    return rollout.WorkerConfig(task='fake', time_limit=10, execute_steps=4,
                                env_factory='tests.test_crash_resume:make_sometimes_invalid_env')

  def load_latest(self, directory, allow_fresh=False):
    return self._step

  def checkpointer(self, directory, keep):
    return None

  def save(self, ckpt, meta):
    pass

  def batches(self, datasets, seed):
    return iter(lambda: {}, None)

  def update(self, batch, intervention_reweighting, gate_warmup=None, critic_only=None):
    self.warmups.append(gate_warmup)
    self.critic_only.append(critic_only)
    self._step += 1
    return {'loss': 1.0}

  def gate_samples(self, datasets, seed):
    return {'gate': np.linspace(0, 1, 16), 'kind': np.zeros(16, np.int32)}

  def critic_outputs(self, datasets, seed, max_windows=4096):
    return None  # No critic to measure.

  def actor_batch_weights(self, datasets, seed, num_batches=8):
    return None

  def open_writer(self, path):
    return self.wrap_writer(backend_lib._LazyWriter(path))  # pylint: disable=protected-access

  def policy(self, rng_seed):
    return lambda observations, noise_ids: np.zeros((len(observations), 8, 2), np.float32)


def smoke_config():
  from experiments import habc as habc_experiment
  config = habc_experiment.get_config('smoke')
  config.task = 'insert'
  return config


def test_kill_while_saving_gate_samples(tmp_path, monkeypatch):
  config = smoke_config()
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  backend = FakeBackend(config, step=config.pipeline.sft_steps)
  real_savez = np.savez

  def killed_savez(path, **arrays):
    real_savez(path, **arrays)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])  # What a kill mid-write leaves.
    raise pipeline.Stop('killed while writing the gate samples')

  target = config.pipeline.sft_steps + config.pipeline.steps_per_round
  datasets = [(os.path.join(workdir, 'data', 'demos'), 1.0)]
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  monkeypatch.setattr(np, 'savez', killed_savez)
  with pytest.raises(pipeline.Stop):
    p._train_to(target, stage='round_001', round_index=1, datasets=datasets)  # pylint: disable=protected-access
  p.close()
  monkeypatch.setattr(np, 'savez', real_savez)
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  p._train_to(target, stage='round_001', round_index=1, datasets=datasets)  # pylint: disable=protected-access
  p.close()
  gates = os.path.join(workdir, 'logs', 'gates_round_001.npz')
  with np.load(gates) as data:  # Recomputed on resume: the cut write left no file behind.
    assert set(data.files) == {'gate', 'kind'}
  assert not [f for f in os.listdir(os.path.dirname(gates)) if '.tmp-' in f]


def test_kill_between_commit_and_log_after_an_invalid_episode(tmp_path, monkeypatch):
  config = smoke_config()
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  monkeypatch.setenv(INVALID_SEED_ENV, str(rollout.seed_for(config.seed, 'collect', 1, 1)))
  backend = FakeBackend(config, step=config.pipeline.sft_steps)

  class KillAfterSecondCommit:
    def __init__(self, inner):
      self.inner = inner

    def __getattr__(self, name):
      return getattr(self.inner, name)

    def append(self, episode):
      self.inner.append(episode)
      if self.inner.num_episodes == 2:
        raise pipeline.Stop('killed after the commit, before the log line')

  backend.wrap_writer = KillAfterSecondCommit
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  try:
    with pytest.raises(pipeline.Stop):
      p.collect(1)
  finally:
    p.close()
  backend.wrap_writer = lambda w: w
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  try:
    p.collect(1)
  finally:
    p.close()
  from habc.data import episodes as episodes_lib
  source = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', 'round_001'), cameras=())
  ids = [str(source[i]['episode_metadata']['episode_id']) for i in range(len(source))]
  assert len(ids) == len(set(ids)), ids
  assert ids == [f'round001-{i:05d}' for i in (0, 2, 3)]


def test_gate_warmup_counts_from_the_end_of_sft(tmp_path):
  config = smoke_config()
  config.method.warmup_steps = 3
  sft, per_round = config.pipeline.sft_steps, config.pipeline.steps_per_round
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  backend = FakeBackend(config, step=0)
  datasets = [(os.path.join(workdir, 'data', 'demos'), 1.0)]
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  train_to = p._train_to  # pylint: disable=protected-access
  try:
    train_to(sft, stage='sft', round_index=0, datasets=datasets)
    assert backend.warmups == [None] * sft  # SFT: the learner's own default.
    backend.warmups.clear()
    for r in (1, 2):
      train_to(sft + r * per_round, stage=f'round_{r:03d}', round_index=r, datasets=datasets)
  finally:
    p.close()
  assert backend.warmups == [i < 3 for i in range(2 * per_round)]


def test_a_stop_inside_the_critic_phase_resumes_it_where_it_was(tmp_path):
  """A round's first critic.phase_steps updates are critic-only, counted from the round's start
  step: a run stopped inside the phase finishes it after the resume, then trains the actor."""
  config = smoke_config()
  config.critic.phase_steps = 3
  config.critic.holdout_fraction = 0.0
  sft, per_round = config.pipeline.sft_steps, config.pipeline.steps_per_round
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  datasets = [(os.path.join(workdir, 'data', 'demos'), 1.0)]

  def stop_after_two(event, info):
    if event == 'train_step' and info['step'] == sft + 2:
      raise pipeline.Stop()

  backend = FakeBackend(config, step=sft)
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None,
                        on_event=stop_after_two)
  try:
    with pytest.raises(pipeline.Stop):
      p._train_to(sft + per_round, stage='round_001', round_index=1, datasets=datasets)  # pylint: disable=protected-access
  finally:
    p.close()
  assert backend.critic_only == [True, True]
  resumed = FakeBackend(config, step=sft + 2)  # What the checkpoint of step sft + 2 restores.
  p = pipeline.Pipeline(config, workdir, backend=resumed, log=lambda line: None)
  try:
    p._train_to(sft + per_round, stage='round_001', round_index=1, datasets=datasets)  # pylint: disable=protected-access
    p._train_to(sft + 2 * per_round, stage='round_002', round_index=2, datasets=datasets)  # pylint: disable=protected-access
  finally:
    p.close()
  assert resumed.critic_only == [True, False] + [True, True, True, False]
