"""TrainState, the partitioned optimiser, and the jitted data-parallel update step.

``update_step(state, batch, rng) -> (state, metrics)`` is one pure function: the critic and the
weighted actor losses in one step. Data parallelism is a sharded ``jit`` over a 1-D device mesh
(axis ``data``): parameters are replicated, the batch is split along its first dimension, and XLA
inserts the reductions. The maths is written for the global batch, so one device with the whole
batch and N devices with 1/N each compute the same update (tested), and the same code runs on one
CPU device, on 8 GPUs, and across hosts after ``jax.distributed.initialize``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from habc import losses
from habc.learning import objectives
from habc.networks.backbones import load_pretrained

SUBTREES = ('encoder', 'action_expert', 'critic')


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array  # int32 scalar: updates done.
  rng: jax.Array  # PRNG key for the next update.


def param_labels(params, frozen) -> dict:
  """Optimiser label per top-level subtree: 'frozen', 'critic' or 'actor'."""
  unknown = set(frozen) - set(params)
  if unknown:
    raise ValueError(f'config.model.frozen names {sorted(unknown)}, which are not parameter '
                     f'subtrees; choose from {sorted(params)}.')

  def label(name):
    if name in frozen:
      return 'frozen'
    return 'critic' if name == 'critic' else 'actor'

  return {name: jax.tree.map(lambda _: label(name), sub) for name, sub in params.items()}


def actor_learning_rate(config) -> float | optax.Schedule:
  """The actor's learning rate: ``learner.sft_actor_lr`` for the first ``pipeline.sft_steps``
  updates (the SFT stage), ``learner.actor_lr`` after them (the online rounds).

  With ``learner.sft_anneal_steps`` = N > 0 the rate falls linearly from ``sft_actor_lr`` to
  ``actor_lr`` over the SFT stage's last N updates, so SFT ends at the online rate.

  A plain ``actor_lr`` when ``sft_actor_lr`` is 0 or absent, or the config has no pipeline section.
  Otherwise always a schedule, even where the two rates are equal, so the optimiser's state has
  one structure whatever the online rate: runs with different ``actor_lr`` can start from one SFT
  checkpoint (``habc.run.sft_share``). The schedule counts the optimiser's own updates, which are
  saved in every checkpoint, so a resumed run (or a method run started from a shared SFT
  checkpoint) continues on the right side of the switch.
  """
  lc = config.learner
  sft_lr = float(lc.get('sft_actor_lr', 0.0) or 0.0)
  anneal = int(lc.get('sft_anneal_steps', 0) or 0)
  pipeline = config.get('pipeline')
  if sft_lr < 0 or lc.actor_lr <= 0:
    raise ValueError(f'config.learner: learning rates must be positive (actor_lr={lc.actor_lr}, '
                     f'sft_actor_lr={sft_lr}; 0 turns sft_actor_lr off).')
  if not sft_lr or pipeline is None:
    if anneal:
      raise ValueError(f'config.learner.sft_anneal_steps={anneal} needs an SFT rate of its own: '
                       'set learner.sft_actor_lr > 0 (and a pipeline section), or the steps to 0.')
    return lc.actor_lr
  sft_steps = int(pipeline.sft_steps)
  if not 0 <= anneal <= sft_steps:
    raise ValueError(f'config.learner.sft_anneal_steps={anneal} must lie in [0, '
                     f'pipeline.sft_steps={sft_steps}]: it counts the SFT stage\'s last updates.')
  return optax.join_schedules(
      [optax.constant_schedule(sft_lr),
       optax.linear_schedule(sft_lr, lc.actor_lr, transition_steps=max(anneal, 1)),
       optax.constant_schedule(lc.actor_lr)],
      boundaries=[sft_steps - anneal, sft_steps])


def make_optimizer(config, params) -> optax.GradientTransformation:
  """AdamW per group, partitioned by subtree; frozen subtrees get no updates and no state.

  The critic's weight decay is ``learner.critic_weight_decay`` (absent or negative: the actor's
  ``learner.weight_decay``): a stronger pull to zero keeps a small critic from memorising a few
  dozen episodes.
  """
  lc = config.learner

  def group(lr, weight_decay=lc.weight_decay):
    return optax.chain(optax.clip_by_global_norm(lc.grad_clip),
                       optax.adamw(lr, weight_decay=weight_decay))

  critic_decay = lc.get('critic_weight_decay', None)
  critic_decay = lc.weight_decay if critic_decay is None or critic_decay < 0 else critic_decay
  transforms = {'actor': group(actor_learning_rate(config)),
                'critic': group(lc.critic_lr, critic_decay),
                'frozen': optax.set_to_zero()}
  return optax.multi_transform(transforms, param_labels(params, tuple(config.model.frozen)))


def create_train_state(config, model, example_batch, rng) -> TrainState:
  """Initialises parameters from an example batch (only shapes matter) and the optimiser."""
  init_rng, state_rng = jax.random.split(rng)
  actions = jnp.asarray(example_batch['actions'][:1])
  obs = jax.tree.map(lambda x: jnp.asarray(x[:1]), example_batch['obs'])
  # Jitted: un-jitted initialisation compiles every small op on its own (tens of seconds).
  params = jax.jit(model.init)(init_rng, obs, actions, jnp.zeros((1,)))
  params = params['params'] if 'params' in params else params
  params = {'params': params}
  if config.model.get('pretrained_checkpoint'):
    params = load_pretrained(params, config.model.pretrained_checkpoint, subtree='encoder')
  tx = make_optimizer(config, params['params'])
  return TrainState(params=params, opt_state=tx.init(params['params']),
                    step=jnp.zeros((), jnp.int32), rng=state_rng)


def critic_pass(model, critic_encoder, params, obs, next_obs, phi):
  """Critic heads at s_t (with gradients) and s_{t+k} (constants)."""
  if critic_encoder == 'separate':
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), obs, next_obs)
    batch = phi.shape[0]
    heads = model.apply(params, both, jnp.zeros((2 * batch, 1)), method=model.critic_outputs)
    now = jax.tree.map(lambda x: x[:batch], heads)
    nxt = jax.tree.map(lambda x: jax.lax.stop_gradient(x[batch:]), heads)
    return now, nxt
  now = model.apply(params, obs, phi, method=model.critic_outputs)
  phi_next = model.apply(params, next_obs, method=model.encode)
  nxt = model.apply(params, next_obs, phi_next, method=model.critic_outputs)
  return now, jax.lax.stop_gradient(nxt)


def make_loss_fn(config, model):
  """``loss_fn(params, batch, rng, step) -> (total loss, metrics)``: critic + weighted actor."""
  method = config.method
  use_critic = objectives.uses_critic(method)
  efficiency_target = config.critic.get('efficiency_target', 'td')  # Older configs lack it.

  def loss_fn(params, batch, rng, step):
    obs, actions, valid = batch['obs'], batch['actions'], batch['valid']
    noise_rng, tau_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, actions.shape, actions.dtype)
    tau = jax.random.uniform(tau_rng, (actions.shape[0],), actions.dtype)
    x_tau, target = losses.flow_interpolation(actions, noise, tau)
    phi = model.apply(params, obs, method=model.encode)
    velocity = model.apply(params, phi, x_tau, tau, method=model.velocity)
    errors = losses.flow_matching_errors(velocity, target, batch['action_mask'])

    metrics = {}
    critic_loss = jnp.zeros(())
    online_weight = None
    if use_critic:
      heads, heads_next = critic_pass(model, config.model.critic_encoder, params, obs,
                                       batch['next_obs'], phi)
      critic_loss, online_weight, critic_metrics = objectives.critic_loss_and_online_weight(
          method, heads, heads_next, batch, config.learner.huber_delta, efficiency_target)
      metrics.update(critic_metrics)
    # The warm-up counts updates from the learner's first step unless the caller says where the
    # online phase began (batch['gate_warmup'], see Learner.update).
    warmup = batch.get('gate_warmup', step < method.warmup_steps)
    weights, online_weight = objectives.actor_weights(
        method, batch['kind'], valid, online_weight, warmup,
        batch.get('intervention_reweighting', jnp.asarray(method.intervention_reweighting)),
        batch.get('sample_weight'))
    actor_loss = losses.weighted_actor_loss(errors, weights, valid)
    # A critic-only update (the critic phase of a round) trains the critic alone: the actor's loss
    # drops out, and make_update_step keeps the actor's parameters and optimiser state as they were.
    actor_scale = 1.0 - critic_only_flag(batch).astype(actor_loss.dtype)
    total = actor_scale * actor_loss + config.learner.critic_loss_weight * critic_loss
    metrics.update(_weight_metrics(weights, online_weight, batch['kind'], valid))
    metrics['actor/loss'] = actor_loss
    metrics['actor/unweighted_error'] = losses.masked_mean(errors, valid)
    metrics['critic/loss'] = critic_loss
    return total, metrics

  return loss_fn


def critic_only_flag(batch):
  """The batch's critic-only flag as a bool scalar (``batch['critic_only']``, per-row bool [B],
  all rows equal); False when absent."""
  flag = batch.get('critic_only')
  return jnp.zeros((), bool) if flag is None else jnp.any(flag)


def keep_actor(critic_only, old: TrainState, params, opt_state):
  """Where ``critic_only`` (bool scalar), every subtree but 'critic' keeps its old parameters and
  optimiser state exactly (jnp.where selects, so they are bit-identical); otherwise the new ones.

  params: the new {'params': {subtree: ...}}; opt_state: the new optax.multi_transform state.
  """
  def pick(old_tree, new_tree):
    return jax.tree.map(lambda o, n: jnp.where(critic_only, o, n), old_tree, new_tree)

  kept = {name: (sub if name == 'critic' else pick(old.params['params'][name], sub))
          for name, sub in params['params'].items()}
  inner = {label: (st if label == 'critic' else pick(old.opt_state.inner_states[label], st))
           for label, st in opt_state.inner_states.items()}
  return {'params': kept}, opt_state._replace(inner_states=inner)


def make_diagnostic_fn(config, model):
  """``fn(params, batch) -> dict of [B] arrays``: what the critic diagnostics need per window
  (habc.run.critic_diagnostics.summarize): the signal of the method (for HABC p_v, V_e, A_v, A_e,
  the merged advantage and g_t; for a baseline its online weight as 'gate' and its advantage), the
  normalised actor weights after warm-up, and the batch's labels. None without a critic."""
  method = config.method
  if not objectives.uses_critic(method):
    return None
  efficiency_target = config.critic.get('efficiency_target', 'td')  # Older configs lack it.

  def diagnostics(params, batch):
    phi = model.apply(params, batch['obs'], method=model.encode)
    heads, heads_next = critic_pass(model, config.model.critic_encoder, params, batch['obs'],
                                    batch['next_obs'], phi)
    _, online_weight, _ = objectives.critic_loss_and_online_weight(
        method, heads, heads_next, batch, config.learner.huber_delta, efficiency_target)
    out = {'gate': online_weight}
    if method.weighting in ('habc', 'habc_v'):
      signal = objectives.habc_signal(method, heads, heads_next, batch)
      out.update(p_v=signal['p_v'], efficiency=heads['efficiency'], a_v=signal['a_v'],
                 a_e=signal['a_e'], advantage=signal['advantage'],
                 scaled_advantage=signal['scaled_advantage'])
    weights, _ = objectives.actor_weights(
        method, batch['kind'], batch['valid'], online_weight, jnp.zeros((), bool),
        jnp.asarray(method.intervention_reweighting), batch.get('sample_weight'))
    out['weights'] = weights
    for key in ('kind', 'outcome', 'viability_mask', 'efficiency_mask', 'steps_to_end',
                'episode_success', 'valid'):
      out[key] = batch[key]
    return out

  return diagnostics


def make_online_weight_fn(config, model):
  """``fn(params, batch) -> [B]``: the method's per-sample weight of autonomous windows (g_t for
  HABC) before warm-up and normalisation; for plots of the gate. None for methods without a
  critic."""
  diagnostics = make_diagnostic_fn(config, model)
  if diagnostics is None:
    return None
  return lambda params, batch: diagnostics(params, batch)['gate']


def make_update_step(config, model):
  """The pure update ``(state, batch, rng) -> (state, metrics)`` for this config (not jitted)."""
  loss_fn = make_loss_fn(config, model)

  def update_step(state: TrainState, batch, rng):
    # The optimiser's labels follow the parameters' structure; building it is free under jit.
    tx = make_optimizer(config, state.params['params'])
    grad_fn = jax.grad(loss_fn, has_aux=True)
    grads, metrics = grad_fn(state.params, batch, rng, state.step)
    updates, opt_state = tx.update(grads['params'], state.opt_state, state.params['params'])
    params = {'params': optax.apply_updates(state.params['params'], updates)}
    critic_only = critic_only_flag(batch)
    params, opt_state = keep_actor(critic_only, state, params, opt_state)
    metrics['learner/grad_norm'] = optax.tree.norm(grads['params'])
    metrics['learner/critic_only'] = critic_only.astype(jnp.float32)
    new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                           rng=state.rng)
    return new_state, metrics

  return update_step


def make_train_step(config, model):
  """``train_step(state, batch) -> (state, metrics)``: one update with the next key of the state's
  stream (``state.rng`` is split into the key kept for later updates and this update's key, as
  ``Learner.update`` always did). Not jitted; the body of ``make_multi_step``'s scan."""
  update_step = make_update_step(config, model)

  def train_step(state: TrainState, batch):
    rng, step_rng = jax.random.split(state.rng)
    return update_step(state._replace(rng=rng), batch, step_rng)

  return train_step


def make_multi_step(config, model):
  """``multi_step(state, batches) -> (state, metrics)``: K updates in one call, a ``lax.scan`` of
  ``make_train_step`` over batches stacked on a leading axis (every leaf [K, B, ...]); metrics
  [K] per name. The same parameters, optimiser state and step as K single updates (tested)."""
  train_step = make_train_step(config, model)

  def multi_step(state: TrainState, batches):
    return jax.lax.scan(train_step, state, batches)

  return multi_step


def with_step_flags(batch: dict, intervention_reweighting=None, gate_warmup=None,
                    critic_only=None) -> dict:
  """A copy of a host batch with the per-update flags as per-row bool columns [B] (a flag left
  None is not added: the update's default applies; see ``Learner.update``)."""
  batch = dict(batch)
  rows = (len(batch['valid']),)
  for key, value in (('intervention_reweighting', intervention_reweighting),
                     ('gate_warmup', gate_warmup), ('critic_only', critic_only)):
    if value is not None:
      batch[key] = np.full(rows, bool(value))
  return batch


def _weight_metrics(weights, online_weight, kind, valid):
  """What a researcher watches of the weights: g by kind, zero fraction, effective sample size."""
  metrics = losses.kind_statistics(online_weight, kind, valid, prefix='gate')
  n = jnp.maximum(valid.sum(), 1)
  w = jnp.where(valid, weights, 0.0)
  metrics['weights/zero_fraction'] = (valid & (weights == 0.0)).sum() / n
  metrics['weights/nonzero_count'] = (valid & (weights != 0.0)).sum()
  metrics['weights/ess'] = w.sum() ** 2 / jnp.maximum((w**2).sum(), 1e-12)
  metrics['weights/ess_fraction'] = metrics['weights/ess'] / n
  metrics['weights/mean'] = w.sum() / n
  return metrics


# ----------------------------------------------------------------------------- data parallel


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over the given devices (default: every device this process can see)."""
  devices = list(devices) if devices is not None else jax.devices()
  return Mesh(np.array(devices), ('data',))


class Learner:
  """Holds the TrainState on a device mesh and runs jitted data-parallel updates.

  Usage: ``learner = Learner(config, model, example_batch, seed)``;
  ``metrics = learner.update(batch)`` with a host batch of numpy arrays (global batch size), which
  waits for the update and returns floats. A training loop calls ``dispatch`` (one update) or
  ``dispatch_many`` (K updates in one call) instead: they return as soon as the update is queued,
  with metrics left on the device, so the host can prepare the next batch while it runs.
  """

  def __init__(self, config, model, example_batch, seed: int = 0, devices=None):
    self.config = config
    self.model = model
    self.mesh = make_mesh(devices)
    batch_size = config.learner.batch_size
    if batch_size % self.mesh.size:
      raise ValueError(
          f'config.learner.batch_size={batch_size} is not divisible by the {self.mesh.size} '
          f'devices of the mesh; use a multiple of {self.mesh.size}.')
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P('data'))
    self._stacked = NamedSharding(self.mesh, P(None, 'data'))  # [K, B, ...]: K updates.
    state = create_train_state(config, model, example_batch, jax.random.PRNGKey(seed))
    self.restore(state)
    shardings = dict(out_shardings=(self._replicated, self._replicated), donate_argnums=(0,))
    # The bare update (state, batch, rng): what habc.bench.learner times.
    self._update = jax.jit(make_update_step(config, model),
                           in_shardings=(self._replicated, self._sharded, self._replicated),
                           **shardings)
    self._train_step = jax.jit(make_train_step(config, model),
                               in_shardings=(self._replicated, self._sharded), **shardings)
    self._multi_step = jax.jit(make_multi_step(config, model),
                               in_shardings=(self._replicated, self._stacked), **shardings)

  def put_batch(self, batch):
    """Host numpy batch (this process's rows) -> global arrays split over the mesh."""
    return self._put(batch, self._sharded)

  def put_batches(self, batches: list):
    """K host batches (same keys and shapes) -> global arrays [K, B, ...], rows split over the
    mesh."""
    return self._put(jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches),
                     self._stacked)

  def _put(self, tree, sharding):
    if jax.process_count() == 1:  # One transfer call for the whole tree (the rows are all here).
      return jax.device_put(jax.tree.map(np.asarray, tree), sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)

  def dispatch(self, batch, intervention_reweighting: bool | None = None,
               gate_warmup: bool | None = None, critic_only: bool | None = None) -> dict:
    """Queues one update on a host batch and returns at once: metrics are device scalars
    (``float(v)`` or ``jax.device_get`` waits for them). Arguments as ``update``."""
    batch = with_step_flags(batch, intervention_reweighting, gate_warmup, critic_only)
    self.state, metrics = self._train_step(self.state, self.put_batch(batch))
    self._host_step += 1
    return metrics

  def dispatch_many(self, batches: list, intervention_reweighting: bool | None = None,
                    gate_warmup: list | None = None, critic_only: list | None = None) -> dict:
    """Queues K = len(batches) updates as one call (``make_multi_step``) and returns at once.

    Args:
      batches: K host batches.
      intervention_reweighting: as ``update``, the same for all K.
      gate_warmup, critic_only: None (the default for every update) or one bool per update.

    Returns:
      Device metrics [K] per name: row i is what the i-th single update would have returned.
    """
    k = len(batches)
    for name, flags in (('gate_warmup', gate_warmup), ('critic_only', critic_only)):
      if flags is not None and len(flags) != k:
        raise ValueError(f'Learner.dispatch_many: {name} has {len(flags)} flags for {k} '
                         'batches; give one per batch, or None.')
    host = [with_step_flags(b, intervention_reweighting,
                            None if gate_warmup is None else gate_warmup[i],
                            None if critic_only is None else critic_only[i])
            for i, b in enumerate(batches)]
    self.state, metrics = self._multi_step(self.state, self.put_batches(host))
    self._host_step += k
    return metrics

  def update(self, batch, intervention_reweighting: bool | None = None,
             gate_warmup: bool | None = None, critic_only: bool | None = None) -> dict:
    """One update on a host batch; waits for it and returns metrics as Python floats.

    Args:
      batch: numpy arrays (docs/interfaces.md, section 3), this process's rows.
      intervention_reweighting: overrides config.method.intervention_reweighting for this update.
      gate_warmup: whether g_t is still held at 1. By default, the first
        ``config.method.warmup_steps`` learner updates; a pipeline whose online phase starts
        after SFT passes its own count.
      critic_only: train the critic alone in this update; the actor's parameters and optimiser
        state stay bit-identical (the critic phase of a round).
    """
    metrics = self.dispatch(batch, intervention_reweighting, gate_warmup, critic_only)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}

  def restore(self, state: TrainState):
    self.state = jax.device_put(state, self._replicated)
    # The step on the host, kept in step with the device's: reading it does not wait for updates.
    self._host_step = int(jax.device_get(state.step))

  @property
  def params(self):
    return self.state.params

  @property
  def step(self) -> int:
    """Updates done, counting those queued (no wait)."""
    return self._host_step
