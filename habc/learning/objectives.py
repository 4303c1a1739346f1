"""Per-method critic losses and actor weights, assembled from the pure maths in habc.losses.

The method is chosen by config (Python, at trace time); everything that depends on data is a mask.
  habc    two heads and the gate
  habc_v  viability head only: g = 1 + tanh(A_v)
  bc      weight 1 (SFT and Imit-DAgger)
  recap   one distributional value head, online weight 1[A >= eps]
  awr     one scalar critic of a discounted sparse reward, weight min(exp(A / beta), max)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from habc import losses
from habc.labeling import SampleKind

WEIGHTINGS = ('habc', 'habc_v', 'bc', 'recap', 'awr')


def uses_critic(method: Any) -> bool:
  return method.weighting != 'bc'


EFFICIENCY_TARGETS = ('td', 'monte_carlo')


def critic_loss_and_online_weight(method: Any, heads, heads_next, batch, huber_delta: float,
                                  efficiency_target: str = 'td'):
  """The critic loss of the method and the weight it gives autonomous windows.

  Args:
    method: config.method.
    heads, heads_next: critic head outputs (habc.networks.model.CriticHeads) at s_t and s_{t+k};
      ``heads_next`` must already be held constant.
    batch: the training batch (docs/interfaces.md, section 3).
    huber_delta: delta of the efficiency head's Huber loss.
    efficiency_target: 'td' (y_e = -1 + V_e(s_{t+k}), DESIGN.md) or 'monte_carlo' (minus the
      decisions left in the successful episode; see config.critic.efficiency_target).

  Returns:
    (critic_loss scalar, online_weight [B] (held constant), metrics dict).
  """
  valid = batch['valid']
  term = batch['next_is_terminal']
  # Importance weights of a stratified sampler (habc.data.sampler): they keep each loss an
  # unbiased estimate of its mean over the dataset's windows. 1 without one.
  sample_weight = batch.get('sample_weight', jnp.ones(valid.shape, jnp.float32))
  if method.weighting in ('habc', 'habc_v'):
    v_mask = valid & batch['viability_mask']
    e_mask = valid & batch['efficiency_mask']
    loss_v = losses.viability_loss(heads['viability_logit'], batch['outcome'],
                                   v_mask * sample_weight)
    if efficiency_target == 'monte_carlo':
      target_e = losses.efficiency_monte_carlo_targets(batch['steps_to_end'])
    elif efficiency_target == 'td':
      target_e = losses.efficiency_targets(heads_next['efficiency'], term)
    else:
      raise ValueError(f'config.critic.efficiency_target={efficiency_target!r}; choose one of '
                       f'{", ".join(EFFICIENCY_TARGETS)}.')
    loss_e = losses.efficiency_loss(heads['efficiency'], target_e, e_mask * sample_weight,
                                    huber_delta)
    signal = habc_signal(method, heads, heads_next, batch)
    critic_loss = loss_v if method.weighting == 'habc_v' else loss_v + loss_e
    p_v = signal['p_v']
    metrics = {
        'critic/viability_loss': loss_v, 'critic/efficiency_loss': loss_e,
        'critic/p_v_mean': losses.masked_mean(p_v, valid),
        'critic/viability_accuracy': losses.masked_mean(
            ((p_v > 0.5) == (batch['outcome'] > 0.5)).astype(jnp.float32), v_mask),
        'critic/efficiency_mean': losses.masked_mean(heads['efficiency'], e_mask),
        'advantage/viability_mean': losses.masked_mean(signal['a_v'], valid),
        'advantage/efficiency_mean': losses.masked_mean(signal['a_e'], valid),
        'advantage/scale': signal['advantage_scale'],
    }
    return critic_loss, signal['gate'], metrics

  online = valid & (batch['kind'] != SampleKind.SFT)
  if method.weighting == 'recap':
    v_min, v_max = losses.recap_value_range(method.recap_gamma, method.recap_failure_cost)
    value = losses.categorical_mean(heads['value_logits'], v_min, v_max)
    value_next = losses.categorical_mean(heads_next['value_logits'], v_min, v_max)
    target = losses.recap_targets(value_next, batch['steps_to_end'], batch['episode_success'],
                                  term, gamma=method.recap_gamma,
                                  failure_cost=method.recap_failure_cost, mc_mix=method.recap_mc_mix)
    probs = losses.two_hot(target, v_min, v_max, heads['value_logits'].shape[-1])
    xent = -(probs * jax.nn.log_softmax(heads['value_logits'], axis=-1)).sum(axis=-1)
    critic_loss = losses.masked_mean(xent, online * sample_weight)
    advantage = jax.lax.stop_gradient(target - value)
    weight = (advantage >= method.recap_eps).astype(jnp.float32)
  elif method.weighting == 'awr':
    gamma = method.awr_gamma
    mc = jnp.where(batch['episode_success'], gamma ** batch['steps_to_end'], 0.0)
    critic_loss = losses.masked_mean((heads['value'] - mc) ** 2, online * sample_weight)
    next_value = jnp.where(term, 1.0,
                           jnp.where(batch['steps_to_end'] <= 1.0, 0.0, heads_next['value']))
    advantage = jax.lax.stop_gradient(gamma * next_value - heads['value'])
    weight = jnp.minimum(jnp.exp(advantage / method.awr_beta), method.awr_max_weight)
  else:
    raise ValueError(f'config.method.weighting must be one of {WEIGHTINGS}, '
                     f'got {method.weighting!r}.')
  metrics = {'critic/value_loss': critic_loss,
             'advantage/value_mean': losses.masked_mean(advantage, online)}
  return critic_loss, weight, metrics


ADVANTAGE_NORMS = ('none', 'batch_std', 'batch_iqr')
# A normal distribution's interquartile range in units of its standard deviation.
IQR_PER_STD = 1.349


def habc_signal(method: Any, heads, heads_next, batch) -> dict:
  """HABC's per-window signal from detached head outputs: p_v, the one-step advantages A_v and
  A_e, the merged advantage inside the gate's tanh, and the gate g_t (all [B]).

  habc_v uses the viability advantage alone: g = 1 + tanh(A_v).

  ``method.advantage_norm``:
    'none'       g = 1 + tanh(A), the paper's gate.
    'batch_std'  g = 1 + tanh(A / (T * std(A))), std over the batch's valid non-SFT windows
                 (importance-weighted), T = ``method.advantage_temperature``. A_v lives in logit
                 space, where a confident critic's one-step changes are several units: without a
                 scale tanh saturates on a third to a half of the windows (results/notes.md,
                 session 15), and the weight only says which side of zero A fell on.
    'batch_iqr'  (default) the same with a robust spread: sigma = IQR(A) / 1.349 over the same
                 windows and weights. A few windows with extreme advantages (a logit of hundreds
                 where the critic extrapolates) inflate the std until every other window's g is
                 ~1; the interquartile range ignores them (results/notes.md, session 16).
  """
  a_v, a_e = losses.advantages(heads['viability_logit'], heads_next['viability_logit'],
                               heads['efficiency'], heads_next['efficiency'],
                               batch['next_is_terminal'])
  p_v = jax.nn.sigmoid(jax.lax.stop_gradient(heads['viability_logit']))
  mix = jnp.zeros_like(p_v) if method.weighting == 'habc_v' else p_v
  a_e_used = jnp.zeros_like(a_e) if method.weighting == 'habc_v' else a_e
  advantage = (1.0 - mix) * a_v + mix * a_e_used
  norm = method.get('advantage_norm', 'none')
  if norm not in ADVANTAGE_NORMS:
    raise ValueError(f'config.method.advantage_norm must be one of {ADVANTAGE_NORMS}, got '
                     f'{norm!r}.')
  scale = jnp.ones(())
  if norm != 'none':
    weight = ((batch['valid'] & (batch['kind'] != SampleKind.SFT))
              * batch.get('sample_weight', jnp.ones(p_v.shape, jnp.float32)))
    if norm == 'batch_std':
      mean = losses.masked_mean(advantage, weight)
      spread = jnp.sqrt(losses.masked_mean((advantage - mean) ** 2, weight))
    else:
      quartiles = losses.weighted_quantiles(advantage, weight, (0.25, 0.75))
      spread = (quartiles[1] - quartiles[0]) / IQR_PER_STD
    scale = method.get('advantage_temperature', 2.0) * spread + 1e-3
  scaled = advantage / scale
  return {'p_v': p_v, 'a_v': a_v, 'a_e': a_e, 'advantage': advantage, 'scaled_advantage': scaled,
          'advantage_scale': scale, 'gate': 1.0 + jnp.tanh(scaled)}


def actor_weights(method: Any, kind, valid, online_weight, warmup, intervention_reweighting,
                  sample_weight=None):
  """Normalised per-sample actor weights [B] (constants), and the online weight after warm-up.

  Args:
    method: config.method.
    kind: int32 [B]; valid: bool [B].
    online_weight: [B] the method's weight of autonomous windows (g_t for HABC), or None (bc).
    warmup: bool scalar or [B]: still in the warm-up, where g = 1.
    intervention_reweighting: bool scalar or [B]: intervention windows get g_t instead of 1.
    sample_weight: [B] importance weights of a stratified sampler (None: 1), multiplied into the
      raw weights before normalisation.
  """
  if online_weight is None:
    online_weight = jnp.ones(kind.shape)
  online_weight = jnp.where(warmup, 1.0, online_weight)
  habc_like = method.weighting in ('habc', 'habc_v')
  # HABC: failures get 0 and pre-intervention windows their configured weight. The baselines have
  # no credit split: their value function weighs every autonomous window.
  failure = 0.0 if habc_like else online_weight
  unlabelled = method.pre_intervention_weight if habc_like else online_weight
  intervention = jnp.where(intervention_reweighting, online_weight, 1.0)
  raw = losses.kind_weights(kind, online_weight, failure_weight=failure,
                            intervention_weight=intervention, unlabelled_weight=unlabelled,
                            use_autonomous=method.use_autonomous)
  if sample_weight is not None:
    raw = raw * sample_weight
  return jax.lax.stop_gradient(losses.normalise_weights(raw, kind, valid, method.weight_eps)), \
      online_weight
