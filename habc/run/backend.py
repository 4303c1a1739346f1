"""The machinery the pipeline drives: model, learner, data, checkpoints and the policy, behind the
few calls the pipeline makes (``Backend``). The stations' actors and learner use it too.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from habc.run import rollout
from habc.run.paths import Paths

# Storage of camera images in every dataset of a run (demos and rollouts alike): the data layer's
# default, decoded fastest by the reader.
IMAGE_FORMAT = 'jpeg'


class TeleopDataError(ValueError):
  """``data.teleop_dir`` does not hold usable teleop episodes (the message says what to fix)."""


# ------------------------------------------------------------------------------------------------
# The real backend: model, learner, data layer, checkpoints. Tests may pass a fake with the same
# methods to exercise the pipeline's bookkeeping alone.


class _LazyWriter:
  """An RLDS episode writer whose dataset is created (with the first episode's spec) on demand."""

  def __init__(self, path: str):
    from habc.data import writer as writer_lib
    self._lib = writer_lib
    self.path = path
    self._writer = None
    if os.path.exists(os.path.join(path, 'dataset_info.json')):
      self._writer = writer_lib.EpisodeWriter(path)

  @property
  def num_episodes(self) -> int:
    return self._writer.num_episodes if self._writer is not None else 0

  def append(self, episode: dict) -> None:
    if self._writer is None:
      from habc.data import schema
      self._writer = self._lib.EpisodeWriter(
          self.path, schema.spec_of_episode(episode, image_format=IMAGE_FORMAT))
    self._writer.append(episode)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class Backend:
  """Model, learner, data and checkpoints behind the few calls the pipeline makes."""

  def __init__(self, config):
    self.config = config
    self.paths: Paths | None = None
    self.model = None
    self.learner = None
    self.stats = None
    self._policy_fn = None
    self._gate_fn = None
    self._diag_fn = None
    self._checkpointer = None
    self._loaded_step = None
    self.policy_seconds: list[float] = []  # Wall time of each batched policy call.

  def bind(self, paths: Paths) -> None:
    self.paths = paths

  # environments ..................................................................................
  def worker_config(self) -> rollout.WorkerConfig:
    c = self.config
    cameras = tuple(c.cameras) if c.obs == 'vision' else ()
    operator = None
    if c.operator.enabled:
      operator = {k: v for k, v in c.operator.to_dict().items() if k != 'enabled'}
    # A hardware task's station takes its ``hardware`` section (as plain data); its operator runs
    # inside the environment (config.hardware.operator), not as the rollout's simulated operator.
    env_options = {'hardware': c.hardware.to_dict()} if 'hardware' in c else None
    return rollout.WorkerConfig(task=c.task, image_size=c.image_size, cameras=cameras,
                                time_limit=c.rollout.time_limit or None,
                                execute_steps=c.rollout.execute_steps, operator=operator,
                                env_factory=c.rollout.env_factory,
                                operator_factory=c.rollout.operator_factory,
                                env_options=env_options)

  # data ........................................................................................
  def convert_demos(self, hdf5_dir: str, out_dir: str) -> None:
    """ALOHA-style HDF5 files -> an RLDS dataset, through the data layer's converter."""
    from habc.data import stats as stats_lib
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)  # A conversion cut short: redo it from the raw files.
    _convert_aloha(hdf5_dir, out_dir, task=self.config.task)
    stats_lib.save_stats(stats_lib.compute_dataset_stats(out_dir), out_dir)

  def convert_teleop(self, teleop_dir: str, out_dir: str) -> None:
    """Recorded teleop episodes (ALOHA-style HDF5) -> the demos dataset, with statistics.

    The instruction is the task's own (what the policy reads in the environment), whatever the
    files say; files that record no outcome count as successes; with vision observations the
    config's cameras are kept (a missing one is an error naming the file), resized to image_size.
    """
    from habc.data import stats as stats_lib
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)  # A conversion cut short: redo it from the raw files.
    c = self.config
    vision = c.obs == 'vision'
    _convert_aloha(teleop_dir, out_dir, task=c.task, operator='teleop',
                   instruction=_task_instruction(c.task), success=True,
                   cameras=tuple(c.cameras) if vision else None,
                   resize=(c.image_size, c.image_size) if vision else None)
    stats = stats_lib.compute_dataset_stats(out_dir)
    _check_teleop_privileged(c, stats, teleop_dir)
    stats_lib.save_stats(stats, out_dir)

  def open_writer(self, path: str) -> _LazyWriter:
    return _LazyWriter(path)

  def _load_stats(self):
    if self.stats is None:
      from habc.data import stats as stats_lib
      self.stats = stats_lib.load_stats(self.paths.demo_data)
    return self.stats

  def batches(self, datasets, seed: int, batch_size: int | None = None,
              num_epochs: int | None = None):
    """Training batches from ``datasets`` [(path, ratio)] or [(path, ratio, split)] (split: 'all',
    'train' or 'holdout', see ``Pipeline.training_datasets``); ``batch_size`` default: the
    learner's (a multi-process learner draws its per-process share). With ``num_epochs`` the
    stream ends after that many passes, drawn from the episode pool (every window once a pass)."""
    from habc.data import reader
    c = self.config
    datasets = [tuple(d) + ('all',) * (3 - len(d)) for d in datasets]
    sampler, fractions = _sampler(c)
    if num_epochs is not None:
      sampler, fractions = 'pool', None  # One pass over the data: every window once.
    return reader.make_batches(
        [p for p, _, _ in datasets], ratios=[r for _, r, _ in datasets],
        splits=[s for _, _, s in datasets], holdout_fraction=_holdout_fraction(c),
        horizon=c.model.action_horizon, next_offset=c.credit.next_offset,
        min_human_steps=c.credit.min_human_steps, naive=c.credit.naive,
        batch_size=int(batch_size or c.learner.batch_size), cameras=tuple(c.cameras), obs=c.obs,
        max_instruction_len=c.model.max_instruction_len, stats=self._load_stats(),
        seed=int(seed) % (2**31 - 1), sampler=sampler, kind_fractions=fractions,
        num_epochs=num_epochs)

  # learner ........................................................................................
  def _build(self) -> None:
    if self.learner is not None:
      return
    from habc.learning import learner as learner_lib
    from habc.networks import build_model
    stats = self._load_stats()
    action_dim = int(np.asarray(stats.mean['action']).shape[0])
    self.model = build_model(self.config, action_dim)
    stream = self.batches([(self.paths.demo_data, 1.0)], seed=self.config.seed)
    try:
      example = next(stream)
    finally:
      if hasattr(stream, 'close'):
        stream.close()
    self.learner = learner_lib.Learner(self.config, self.model, example, seed=self.config.seed)

  def checkpointer(self, directory: str, keep: int):
    if self._checkpointer is None:
      from habc.run import checkpoints
      self._checkpointer = checkpoints.Checkpointer(directory, max_to_keep=keep)
    return self._checkpointer

  def load_latest(self, directory: str, allow_fresh: bool = False):
    """Builds the learner and restores the newest checkpoint; returns its step (None: fresh)."""
    self._build()
    ckpt = self.checkpointer(directory, self.config.pipeline.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is None:
      if not allow_fresh:
        raise FileNotFoundError(f'No checkpoint in {directory}: run the SFT stage first.')
      return None
    if latest != self._loaded_step or latest != self.step:
      restored = ckpt.restore(self.learner.state, latest)
      self.learner.restore(restored.state)
      self._loaded_step = latest
    return latest

  @property
  def step(self) -> int:
    return self.learner.step if self.learner is not None else 0

  def update(self, batch, intervention_reweighting: bool, gate_warmup: bool | None = None,
             critic_only: bool | None = None) -> dict:
    """One learner update, queued (``Learner.dispatch``): returns its metrics as device scalars
    at once (``float(v)`` waits for one). ``gate_warmup`` None: the learner's own count (see
    Learner.update); ``critic_only``: the critic alone (the critic phase)."""
    return self.learner.dispatch(batch, intervention_reweighting=intervention_reweighting,
                                 gate_warmup=gate_warmup, critic_only=critic_only)

  def update_many(self, batches: list, intervention_reweighting: bool,
                  gate_warmup: list | None = None, critic_only: list | None = None) -> dict:
    """len(batches) updates in one device call (``Learner.dispatch_many``), flags per update;
    returns metrics stacked [K] on the device."""
    return self.learner.dispatch_many(batches, intervention_reweighting=intervention_reweighting,
                                      gate_warmup=gate_warmup, critic_only=critic_only)

  def save(self, ckpt, meta: dict) -> None:
    import jax
    state = jax.device_get(self.learner.state)
    ckpt.save(self.step, state, config=self.config, stats=_stats_tree(self._load_stats()),
              meta=meta)
    self._loaded_step = self.step

  # policy .....................................................................................
  def policy(self, rng_seed: int) -> rollout.Policy:
    """Raw observations and noise ids -> action chunks in environment units, from the current
    parameters (``rollout.Policy``).

    Row i's noise is drawn from ``fold_in(fold_in(PRNGKey(rng_seed), seed_i), decision_i)`` with
    ``noise_ids[i] = (seed_i, decision_i)``: an episode's samples depend on the base seed and its
    own ids only, not on the batch it was served in.
    """
    import jax
    from habc.data import reader
    from habc.networks import policy as policy_lib
    self._build()
    if self._policy_fn is None:
      self._policy_fn = policy_lib.make_policy_fn(self.model, self.config)
    params = self.learner.params
    stats = self._load_stats()
    base_key = jax.random.PRNGKey(int(rng_seed) % (2**31 - 1))
    c = self.config

    def act(observations, noise_ids):
      start = time.perf_counter()
      ids = np.asarray(noise_ids, np.int64)
      if ids.shape != (len(observations), 2):
        raise ValueError(f'The policy got {len(observations)} observations and noise ids of '
                         f'shape {ids.shape}; give one (episode seed, decision index) per '
                         'observation, int [N, 2] (rollout.noise_ids).')
      ids = rollout.noise_ids(ids[:, 0], ids[:, 1])  # Checks the uint32 range.
      keys = policy_lib.noise_keys_jit(base_key, ids.astype(np.uint32))
      obs = reader.env_model_inputs(observations, stats, cameras=tuple(c.cameras), obs=c.obs,
                                    max_len=c.model.max_instruction_len)
      chunk = np.asarray(self._policy_fn(params, obs, keys), np.float32)
      self.policy_seconds.append(time.perf_counter() - start)
      return stats.unnormalise('action', chunk)

    return act

  def gate_samples(self, datasets, seed: int, num_batches: int = 4):
    """Per-sample gate g_t and sample kind over a few batches ({'gate', 'kind'}), or None."""
    import jax
    from habc.learning import learner as learner_lib
    from habc.learning import objectives
    c = self.config
    if not objectives.uses_critic(c.method):
      return None
    if self._gate_fn is None:
      self._gate_fn = jax.jit(learner_lib.make_online_weight_fn(c, self.model))
    stream = self.batches(datasets, seed)
    gates, kinds = [], []
    try:
      for _ in range(num_batches):
        batch = next(stream)
        g = np.asarray(self._gate_fn(self.learner.params, batch))
        valid = np.asarray(batch['valid'], bool)
        gates.append(g[valid])
        kinds.append(np.asarray(batch['kind'])[valid])
    finally:
      if hasattr(stream, 'close'):
        stream.close()
    return {'gate': np.concatenate(gates), 'kind': np.concatenate(kinds)}

  def _diagnostic_fn(self):
    import jax
    from habc.learning import learner as learner_lib
    if self._diag_fn is None:
      self._diag_fn = jax.jit(learner_lib.make_diagnostic_fn(self.config, self.model))
    return self._diag_fn

  def critic_outputs(self, datasets, seed: int, max_windows: int = 4096):
    """Per-window critic outputs (``learner.make_diagnostic_fn``) over every window of
    ``datasets`` [(path, ratio, split)], one pass, at most ``max_windows``: numpy arrays [N] of
    the valid windows. None for a method without a critic."""
    from habc.learning import objectives
    if not objectives.uses_critic(self.config.method):
      return None
    self._build()
    fn = self._diagnostic_fn()
    stream = self.batches(datasets, seed, num_epochs=1)
    parts: list[dict] = []
    seen = 0
    try:
      for batch in stream:
        out = {k: np.asarray(v) for k, v in fn(self.learner.params, batch).items()}
        valid = out.pop('valid').astype(bool)
        out.pop('weights')
        parts.append({k: v[valid] for k, v in out.items()})
        seen += int(valid.sum())
        if seen >= max_windows:
          break
    finally:
      if hasattr(stream, 'close'):
        stream.close()
    if not parts:
      return None
    return {k: np.concatenate([p[k] for p in parts])[:max_windows] for k in parts[0]}

  def actor_batch_weights(self, datasets, seed: int, num_batches: int = 8):
    """The normalised actor weights of ``num_batches`` training batches as the training sampler
    draws them from ``datasets``: (weights [M, B], valid [M, B], kind [M, B]); None without a
    critic."""
    from habc.learning import objectives
    if not objectives.uses_critic(self.config.method):
      return None
    self._build()
    fn = self._diagnostic_fn()
    stream = self.batches(datasets, seed)
    weights, valid, kinds = [], [], []
    try:
      for _ in range(num_batches):
        out = fn(self.learner.params, next(stream))
        weights.append(np.asarray(out['weights']))
        valid.append(np.asarray(out['valid'], bool))
        kinds.append(np.asarray(out['kind']))
    finally:
      if hasattr(stream, 'close'):
        stream.close()
    return np.stack(weights), np.stack(valid), np.stack(kinds)

  def close(self) -> None:
    if self._checkpointer is not None:
      self._checkpointer.close()
      self._checkpointer = None


def _holdout_fraction(config) -> float:
  """critic.holdout_fraction (0 when the config has no critic section)."""
  return float(config.get('critic', {}).get('holdout_fraction', 0.0) or 0.0)


def _sampler(config) -> tuple[str, dict | None]:
  """(sampler, kind fractions) of the training batches from config.data: 'auto' is 'uniform'
  over the whole dataset with state observations (it fits in memory) and the episode 'pool' with
  images. Kind fractions only apply to the uniform sampler."""
  data = config.get('data', {})
  sampler = data.get('sampler', 'pool')
  if sampler == 'auto':
    sampler = 'uniform' if config.obs == 'state' else 'pool'
  fractions = data.get('kind_fractions', None)
  fractions = dict(fractions) if fractions else None
  if fractions and not any(float(v) for v in fractions.values()):
    fractions = None
  if fractions and sampler != 'uniform':
    raise ValueError(f'config.data.kind_fractions={fractions} stratifies the uniform sampler, but '
                     f'data.sampler={data.get("sampler")!r} draws from the episode pool (images); '
                     "set data.sampler='uniform' (memory: every episode in RAM) or the fractions "
                     'to 0.')
  return sampler, fractions


def _stats_tree(stats) -> dict:
  """NormStats -> a nested dict of arrays (what a checkpoint stores)."""
  return {'mean': {k: np.asarray(v) for k, v in stats.mean.items()},
          'std': {k: np.asarray(v) for k, v in stats.std.items()}}


def _convert_aloha(hdf5_dir: str, out_dir: str, *, task: str, operator: str = 'scripted_expert',
                   **options) -> None:
  """ALOHA-style HDF5 demonstrations (the recorder's, or recorded teleop) -> RLDS (source 'demo'),
  by the data layer's converter; ``options`` as ``habc.data.converters.Options``."""
  from habc.data import converters
  converters.convert('aloha_hdf5', hdf5_dir, out_dir, progress=False, task=task, source='demo',
                     operator=operator, image_format=IMAGE_FORMAT, **options)


def _task_instruction(task: str) -> str:
  """The language instruction of a simulated or hardware task (its class attribute; no build)."""
  from habc import envs
  from habc.envs import hardware
  name = hardware.simulated_task(task) if hardware.is_hardware_task(task) else task
  return str(envs.task_class(name).instruction)


def _check_teleop_privileged(config, stats, teleop_dir: str) -> None:
  """With state observations, the demos must carry the environment's ``privileged`` vector (the
  station's is zeros [P]): the policy reads state ++ privileged in training and in the
  environment alike. Raises TeleopDataError saying what to record otherwise."""
  if config.obs != 'state' or 'privileged' in stats.mean:
    return
  raise TeleopDataError(
      f'The teleop episodes in {teleop_dir} have no /observations/privileged, but obs=state reads '
      'the environment\'s privileged vector (the simulated task\'s size; zeros on a station). '
      'Record it (write_aloha_hdf5(privileged=...), zeros f32 [T, P] on a station) or run with '
      '--config.obs=vision.')
