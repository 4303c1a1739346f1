"""The critic of a checkpoint on one episode, per window: p_v, V_e, A_v, A_e, g_t, actor weight.

Evaluated on demand (JAX is imported on the first request, never TensorFlow) and cached. The
numbers are the learner's own: each window becomes a training-batch row through the reader
(``EpisodePack`` + ``gather_batch``, with the checkpoint's normalisation statistics and credit
settings), g_t is ``habc.learning.learner.make_online_weight_fn``, the heads and advantages are
``critic_pass`` and ``habc.losses.advantages``, and the actor weight before normalisation is
``habc.losses.kind_weights`` with the arguments ``habc.learning.objectives.actor_weights`` gives it
(after the warm-up, where g_t is in force).

A checkpoint is a step directory under a run's ``checkpoints/`` (orbax: ``state``, ``config``,
``stats``, ``meta``). Only its parameters are used; the model is rebuilt from its own config.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from typing import Any, Mapping

import numpy as np

from habc.web.viewer_data import ViewerError, finite_list

BATCH = 64  # Windows per critic call (one compiled shape; the last batch is padded).


def _read_item_json(step_dir: str, item: str) -> dict:
  path = os.path.join(step_dir, item, 'metadata')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ViewerError(f'{step_dir} is not a readable habc checkpoint: cannot read {item}/metadata '
                      f'({type(e).__name__}: {e}).') from e


def list_checkpoints(directory: str) -> list[dict]:
  """Finished checkpoints of a ``checkpoints/`` folder, oldest first: step, path, meta."""
  if not os.path.isdir(directory):
    return []
  out = []
  for name in os.listdir(directory):
    step_dir = os.path.join(directory, name)
    if not (name.isdigit() and os.path.isdir(step_dir)):
      continue
    if not os.path.exists(os.path.join(step_dir, 'commit_success.txt')) and not os.path.exists(
        os.path.join(step_dir, '_CHECKPOINT_METADATA')):
      continue  # Being written, or cut by a stop.
    try:
      meta = _read_item_json(step_dir, 'meta')
    except ViewerError:
      meta = {}
    out.append({'step': int(name), 'path': step_dir, 'meta': meta})
  return sorted(out, key=lambda c: c['step'])


def resolve_checkpoint(path: str) -> str:
  """A step directory from a step directory or a ``checkpoints/`` folder (its newest)."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise ViewerError(f'Checkpoint {path} does not exist (give a checkpoint step directory, e.g. '
                      'WORKDIR/checkpoints/1200, or a checkpoints folder for its newest).')
  if os.path.isdir(os.path.join(path, 'state')):
    return path
  found = list_checkpoints(path)
  if not found:
    raise ViewerError(f'{path} holds no habc checkpoint (no step directory with state/, config/ '
                      'and stats/ in it).')
  return found[-1]['path']


class LoadedCheckpoint:
  """A checkpoint's config, statistics, parameters and the jitted critic functions."""

  def __init__(self, step_dir: str):
    import jax
    import ml_collections
    import orbax.checkpoint as ocp
    from habc.data import stats as stats_lib
    from habc.learning import learner as learner_lib
    from habc.learning import objectives
    from habc.networks import build_model

    self.path = step_dir
    self.step = int(os.path.basename(step_dir)) if os.path.basename(step_dir).isdigit() else None
    config = _read_item_json(step_dir, 'config')
    self.meta = _read_item_json(step_dir, 'meta') if os.path.isdir(
        os.path.join(step_dir, 'meta')) else {}
    try:
      self.config = ml_collections.ConfigDict(config)
      checkpointer = ocp.StandardCheckpointer()
      raw_stats = checkpointer.restore(os.path.join(step_dir, 'stats'))
      state = checkpointer.restore(os.path.join(step_dir, 'state'))
      params = state['params'] if isinstance(state, Mapping) else state[0]
    except ViewerError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise ViewerError(f'Checkpoint {step_dir} cannot be read ({type(e).__name__}: {e}).') from e
    self.stats = stats_lib.NormStats(
        {k: np.asarray(v, np.float32) for k, v in raw_stats['mean'].items()},
        {k: np.asarray(v, np.float32) for k, v in raw_stats['std'].items()})
    self.params = jax.device_put(params)
    c = self.config
    self.method = c.method
    self.weighting = str(c.method.weighting)
    self.uses_critic = objectives.uses_critic(c.method)
    self.credit = {'horizon': int(c.model.action_horizon),
                   'next_offset': int(c.credit.next_offset),
                   'min_human_steps': int(c.credit.min_human_steps),
                   'naive': bool(c.credit.naive)}
    self.cameras = tuple(c.cameras) if c.obs == 'vision' else ()
    try:
      self.model = build_model(c, int(np.asarray(self.stats.mean['action']).shape[0]))
    except Exception as e:  # pylint: disable=broad-except
      raise ViewerError(f'Checkpoint {step_dir}: cannot build its model ({e}).') from e
    self.gate_fn = None
    self.heads_fn = None
    if self.uses_critic:
      self.gate_fn = jax.jit(learner_lib.make_online_weight_fn(c, self.model))
      self.heads_fn = jax.jit(_make_heads_fn(c, self.model))

  def describe(self) -> dict:
    c = self.config
    return {'path': self.path, 'step': self.step, 'meta': self.meta, 'method': self.weighting,
            'name': c.get('name', ''), 'obs': c.obs, 'cameras': list(self.cameras),
            'credit': self.credit,
            'intervention_reweighting': self.intervention_reweighting()}

  def intervention_reweighting(self) -> bool:
    """In force for the round this checkpoint ends (``pipeline.round_config``'s switch)."""
    c = self.config
    value = bool(c.method.intervention_reweighting)
    start = c.get('pipeline', {}).get('intervention_reweighting_from_round', -1) \
        if 'pipeline' in c else -1
    round_index = int(self.meta.get('round', 0) or 0)
    if start is not None and start >= 1 and round_index >= start:
      value = True
    return value

  def check_fits(self, spec, dataset_name: str) -> None:
    """ViewerError naming what differs when the dataset's episodes cannot go into this model."""
    problems = []
    action_dim = int(np.asarray(self.stats.mean['action']).shape[0])
    state_dim = int(np.asarray(self.stats.mean['state']).shape[0])
    if spec.action_dim != action_dim:
      problems.append(f'actions have {spec.action_dim} dimensions, the checkpoint {action_dim}')
    if spec.state_dim != state_dim:
      problems.append(f'states have {spec.state_dim} dimensions, the checkpoint {state_dim}')
    if self.config.obs == 'state' and 'privileged' in self.stats.mean:
      p = int(np.asarray(self.stats.mean['privileged']).shape[0])
      if spec.privileged_dim != p:
        problems.append(f'the privileged state has {spec.privileged_dim} dimensions, the '
                        f'checkpoint (obs=state) reads {p}')
    missing = [c for c in self.cameras if c not in spec.camera_names]
    if missing:
      problems.append(f'cameras {missing} of the checkpoint (obs=vision) are not in the dataset '
                      f'(it has {list(spec.camera_names) or "none"})')
    else:
      size = int(self.config.image_size)
      shapes = dict(spec.cameras)
      wrong = {c: tuple(shapes[c]) for c in self.cameras if tuple(shapes[c])[:2] != (size, size)}
      if wrong:
        problems.append(f'images are {wrong}, the checkpoint was trained on {size}x{size}')
    if problems:
      raise ViewerError(f'Checkpoint {self.path} does not fit dataset {dataset_name!r}: '
                        + '; '.join(problems) + '.')

  def evaluate(self, episode: Mapping) -> dict:
    """Per-window critic outputs and weights of one (encoded or decoded) episode."""
    from habc.data import reader
    c = self.config
    pack_fn = reader.EpisodePack(
        horizon=self.credit['horizon'], next_offset=self.credit['next_offset'],
        min_human_steps=self.credit['min_human_steps'], naive=self.credit['naive'],
        cameras=self.cameras, obs=c.obs, stats=self.stats,
        max_instruction_len=int(c.model.max_instruction_len))
    pack = pack_fn(episode)
    num = len(pack['anchor'])
    kind = np.asarray(pack['kind'], np.int32)
    out: dict[str, Any] = {'anchor': pack['anchor'].tolist(), 'kind': kind.tolist(),
                           'next_index': pack['next_index'].tolist()}
    columns: dict[str, list] = collections.defaultdict(list)
    if self.uses_critic:
      for start in range(0, num, BATCH):
        idx = np.arange(start, min(start + BATCH, num))
        batch = reader.gather_batch([(pack, idx)], BATCH, obs=c.obs)
        n = len(idx)
        columns['gate'].append(np.asarray(self.gate_fn(self.params, batch))[:n])
        for key, value in self.heads_fn(self.params, batch).items():
          columns[key].append(np.asarray(value)[:n])
      values = {k: np.concatenate(v).astype(np.float64) for k, v in columns.items()}
      online = values['gate']
    else:
      values = {}
      online = np.ones(num)
    raw = np.asarray(raw_actor_weights(self.method, kind, online.astype(np.float32),
                                       self.intervention_reweighting()), np.float64)
    for key, value in values.items():
      out[key] = finite_list(value)
    out['weight'] = finite_list(raw)
    out['online_weight'] = finite_list(online)
    out['checkpoint'] = self.describe()
    out['series'] = [k for k in SERIES.get(self.weighting, ()) if k in out] + ['weight']
    return out


# Which per-window series each method has (in plotting order); 'weight' is always there.
SERIES = {
    'habc': ('p_v', 'v_e', 'a_v', 'a_e', 'gate'),
    'habc_v': ('p_v', 'v_e', 'a_v', 'a_e', 'gate'),
    'recap': ('value', 'advantage', 'gate'),
    'awr': ('value', 'advantage', 'gate'),
    'bc': (),
}


def _make_heads_fn(config, model):
  """``fn(params, batch) -> {p_v, v_e, a_v, a_e}`` (habc heads) or {value, advantage} (baselines),
  exactly as the learner's critic pass computes them."""
  import jax
  import jax.numpy as jnp
  from habc import losses
  from habc.learning import learner as learner_lib
  from habc.learning import objectives
  method = config.method

  def fn(params, batch):
    obs, next_obs = batch['obs'], batch['next_obs']
    phi = model.apply(params, obs, method=model.encode)
    heads, heads_next = learner_lib.critic_pass(model, config.model.critic_encoder, params, obs,
                                                next_obs, phi)
    term = batch['next_is_terminal']
    if method.weighting in ('habc', 'habc_v'):
      signal = objectives.habc_signal(method, heads, heads_next, batch)  # The learner's own.
      return {'p_v': signal['p_v'], 'v_e': heads['efficiency'], 'a_v': signal['a_v'],
              'a_e': signal['a_e']}
    if method.weighting == 'recap':
      v_min, v_max = losses.recap_value_range(method.recap_gamma, method.recap_failure_cost)
      value = losses.categorical_mean(heads['value_logits'], v_min, v_max)
      value_next = losses.categorical_mean(heads_next['value_logits'], v_min, v_max)
      target = losses.recap_targets(value_next, batch['steps_to_end'], batch['episode_success'],
                                    term, gamma=method.recap_gamma,
                                    failure_cost=method.recap_failure_cost,
                                    mc_mix=method.recap_mc_mix)
      return {'value': value, 'advantage': target - value}
    gamma = method.awr_gamma
    next_value = jnp.where(term, 1.0,
                           jnp.where(batch['steps_to_end'] <= 1.0, 0.0, heads_next['value']))
    return {'value': heads['value'], 'advantage': gamma * next_value - heads['value']}

  return fn


def raw_actor_weights(method, kind, online_weight, intervention_reweighting: bool):
  """Per-window actor weight before normalisation, after the warm-up: ``losses.kind_weights``
  with the arguments of ``objectives.actor_weights``."""
  import jax.numpy as jnp
  from habc import losses
  online_weight = jnp.asarray(online_weight, jnp.float32)
  habc_like = method.weighting in ('habc', 'habc_v')
  failure = 0.0 if habc_like else online_weight
  unlabelled = method.pre_intervention_weight if habc_like else online_weight
  intervention = online_weight if intervention_reweighting else 1.0
  return losses.kind_weights(jnp.asarray(kind, jnp.int32), online_weight, failure_weight=failure,
                             intervention_weight=intervention, unlabelled_weight=unlabelled,
                             use_autonomous=method.use_autonomous)


class CriticService:
  """Loaded checkpoints (the last ``max_models``) and evaluated episodes (``max_results``)."""

  def __init__(self, max_models: int = 2, max_results: int = 256):
    self.max_models, self.max_results = max(1, max_models), max(1, max_results)
    self._models: collections.OrderedDict = collections.OrderedDict()
    self._results: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()  # One evaluation at a time: JAX work is not shared anyway.
    self.evaluations = 0  # Episodes evaluated (not served from the cache); for tests.

  def model(self, step_dir: str) -> LoadedCheckpoint:
    if step_dir in self._models:
      self._models.move_to_end(step_dir)
      return self._models[step_dir]
    loaded = LoadedCheckpoint(step_dir)
    self._models[step_dir] = loaded
    while len(self._models) > self.max_models:
      self._models.popitem(last=False)
    return loaded

  def evaluate(self, view, index: int, checkpoint: str) -> dict:
    step_dir = resolve_checkpoint(checkpoint)
    index = view.check_index(index)
    key = (step_dir, os.path.getmtime(os.path.join(step_dir, 'state')), view.path, index)
    with self._lock:
      if key in self._results:
        self._results.move_to_end(key)
        return dict(self._results[key], cached=True)
      loaded = self.model(step_dir)
      loaded.check_fits(view.require().spec, view.name)
      episode = view.episode(index)
      if len(episode['steps']['is_intervention']) < 2:
        raise ViewerError(f'Episode {index} has fewer than 2 steps: it has no window to evaluate.')
      try:
        result = loaded.evaluate(episode)
      except ViewerError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        raise ViewerError(f'Checkpoint {step_dir} does not fit episode {index} of '
                          f'{view.name!r}: {type(e).__name__}: {e}') from e
      self.evaluations += 1
      self._results[key] = result
      while len(self._results) > self.max_results:
        self._results.popitem(last=False)
      return dict(result, cached=False)
