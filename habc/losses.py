"""HABC's maths: critic losses, advantages, the gate, per-sample weights, the weighted actor loss.

Pure ``jnp`` functions with shapes in their docstrings; masks, never Python branches on data.
B is the batch, H the chunk horizon, A the action dimension. See shared/DESIGN.md, section 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from habc.labeling import NUM_KINDS, SampleKind


def masked_mean(x, mask):
  """Mean of x [B] over mask [B] (0 when the mask is empty).

  A float mask is a weight per sample: the weighted mean sum(w x) / sum(w).
  """
  mask = mask.astype(x.dtype)
  total = mask.sum()
  return (x * mask).sum() / jnp.where(total > 0, total, 1.0)


def weighted_quantiles(x, weight, qs):
  """Quantiles of x [B] under per-sample weights [B] (0: excluded), at the levels qs [Q] in [0, 1].

  The lower weighted quantile: the smallest x whose cumulative weight share reaches q. Returns [Q]
  (0 where every weight is 0).
  """
  weight = weight.astype(x.dtype)
  order = jnp.argsort(jnp.where(weight > 0, x, jnp.inf))
  sorted_x, sorted_w = x[order], weight[order]
  total = sorted_w.sum()
  share = jnp.cumsum(sorted_w) / jnp.where(total > 0, total, 1.0)
  index = jnp.clip(jnp.searchsorted(share, jnp.asarray(qs, x.dtype), side='left'), 0,
                   x.shape[0] - 1)
  return jnp.where(total > 0, sorted_x[index], 0.0)


# ----------------------------------------------------------------------------- critic losses


def viability_loss(logit, outcome, mask):
  """Monte-Carlo binary cross-entropy of the viability head.

  Args:
    logit: z_v(s_t) [B].
    outcome: the episode outcome y [B] in {0, 1}.
    mask: bool [B], outcome-labelled policy windows.

  Returns:
    Scalar mean over the mask.
  """
  bce = jnp.maximum(logit, 0.0) - logit * outcome + jnp.log1p(jnp.exp(-jnp.abs(logit)))
  return masked_mean(bce, mask)


def efficiency_targets(efficiency_next, next_is_terminal):
  """TD targets of the efficiency head: y_e = -1 + stopgrad(V_e(s_{t+k})), with V_e = 0 at a
  terminal success.

  Args:
    efficiency_next: V_e(s_{t+k}) [B].
    next_is_terminal: bool [B], s_{t+k} is the real success ending.

  Returns:
    y_e [B].
  """
  bootstrap = jnp.where(next_is_terminal, 0.0, jax.lax.stop_gradient(efficiency_next))
  return -1.0 + bootstrap


def efficiency_monte_carlo_targets(steps_to_end):
  """Monte-Carlo targets of the efficiency head: y_e = -(decisions from s_t to the episode's end).

  The head is trained on successful episodes only, which end at their success, so the number of
  decisions left is the number of decisions to success that this episode took: the target the
  TD chain y_e = -1 + V_e(s_{t+k}) converges to, without bootstrapping on the head itself.

  Args:
    steps_to_end: f32 [B], (T - 1 - t) / k (habc.labeling.Windows.steps_to_end).

  Returns:
    y_e [B].
  """
  return -steps_to_end


def huber(x, delta: float = 1.0):
  """Elementwise Huber loss of residual x."""
  ax = jnp.abs(x)
  return jnp.where(ax <= delta, 0.5 * x**2, delta * (ax - 0.5 * delta))


def efficiency_loss(efficiency, target, mask, delta: float = 1.0):
  """Huber TD loss of the efficiency head. efficiency, target [B]; mask bool [B] -> scalar."""
  return masked_mean(huber(efficiency - target, delta), mask)


# ----------------------------------------------------------------------------- advantages, gate


def advantages(logit, logit_next, efficiency, efficiency_next, next_is_terminal):
  """One-step advantages of both heads, from detached head outputs.

  A_v = z_v(s_{t+k}) - z_v(s_t) (logit space: keeps resolution near p_v = 1);
  A_e = -1 + V_e(s_{t+k}) - V_e(s_t), with V_e = 0 at a terminal success.

  All inputs [B]; returns (A_v [B], A_e [B]).
  """
  logit, logit_next, efficiency, efficiency_next = jax.lax.stop_gradient(
      (logit, logit_next, efficiency, efficiency_next))
  a_v = logit_next - logit
  a_e = -1.0 + jnp.where(next_is_terminal, 0.0, efficiency_next) - efficiency
  return a_v, a_e


def gate(p_v, a_v, a_e):
  """The state-adaptive gate g = 1 + tanh((1 - p_v) * A_v + p_v * A_e), in (0, 2).

  Elementwise over arrays of any (broadcastable) shape. Where viability is uncertain (p_v near 0)
  the viability advantage dominates; where success is likely (p_v near 1), efficiency does.
  """
  return 1.0 + jnp.tanh((1.0 - p_v) * a_v + p_v * a_e)


# ----------------------------------------------------------------------------- weights


def kind_weights(kind, online_weight, *, failure_weight, intervention_weight,
                 unlabelled_weight, use_autonomous: bool):
  """Raw per-sample actor weights w~ by sample kind.

  Args:
    kind: int32 [B], ``SampleKind``.
    online_weight: [B], the method's weight of an autonomous window (g_t for HABC).
    failure_weight: [B] or scalar, weight of failed autonomous windows (0 for HABC).
    intervention_weight: [B] or scalar, weight of intervention windows (1, or g_t with IR).
    unlabelled_weight: [B] or scalar, weight of unlabelled pre-intervention windows.
    use_autonomous: False zeroes every autonomous window (imitation-only baselines).

  Returns:
    w~ [B].
  """
  shape = online_weight.shape
  per_kind = [
      jnp.ones(shape),  # SFT
      online_weight,  # SUCCESS
      jnp.broadcast_to(failure_weight, shape),  # FAILURE
      jnp.broadcast_to(intervention_weight, shape),  # INTERVENTION
      jnp.broadcast_to(unlabelled_weight, shape),  # UNLABELLED
  ]
  if not use_autonomous:
    for k in (SampleKind.SUCCESS, SampleKind.FAILURE, SampleKind.UNLABELLED):
      per_kind[k] = jnp.zeros(shape)
  stacked = jnp.stack(per_kind, axis=0)  # [NUM_KINDS, B]
  return jnp.take_along_axis(stacked, kind[None, :], axis=0)[0]


def normalise_weights(raw, kind, valid, eps: float = 1e-6):
  """Unit-mean normalisation of the non-SFT weights over the batch's valid samples.

  w = w~ / max(mean(w~), eps) on non-SFT samples; SFT samples keep their weight; invalid rows 0.
  raw [B], kind int32 [B], valid bool [B] -> w [B].
  """
  online = valid & (kind != SampleKind.SFT)
  mean = masked_mean(raw, online)
  w = jnp.where(online, raw / jnp.maximum(mean, eps), raw)
  return jnp.where(valid, w, 0.0)


# ----------------------------------------------------------------------------- actor


def flow_matching_errors(velocity, target, action_mask):
  """Per-sample flow-matching error, averaged over valid chunk steps and action dimensions.

  velocity, target [B, H, A]; action_mask bool [B, H] -> [B].
  """
  sq = ((velocity - target) ** 2).mean(axis=-1)
  mask = action_mask.astype(sq.dtype)
  return (sq * mask).sum(axis=-1) / jnp.maximum(mask.sum(axis=-1), 1.0)


def weighted_actor_loss(errors, weights, valid):
  """L = mean_i w_i * err_i over valid samples, weights held constant. [B], [B], [B] -> scalar."""
  return masked_mean(jax.lax.stop_gradient(weights) * errors, valid)


def flow_interpolation(actions, noise, tau):
  """Point on the straight path from noise (tau = 0) to actions (tau = 1), and its velocity.

  actions, noise [B, H, A]; tau [B] -> (x_tau [B, H, A], u [B, H, A]).
  """
  t = tau[:, None, None]
  return (1.0 - t) * noise + t * actions, actions - noise


# ----------------------------------------------------------------------------- baselines


def two_hot(values, v_min: float, v_max: float, bins: int):
  """Projects scalars [B] onto a categorical distribution over ``bins`` atoms -> [B, bins]."""
  pos = (jnp.clip(values, v_min, v_max) - v_min) / (v_max - v_min) * (bins - 1)
  lower = jnp.floor(pos)
  upper_w = pos - lower
  lower_idx = lower.astype(jnp.int32)
  upper_idx = jnp.minimum(lower_idx + 1, bins - 1)
  return (jax.nn.one_hot(lower_idx, bins) * (1.0 - upper_w)[:, None]
          + jax.nn.one_hot(upper_idx, bins) * upper_w[:, None])


def categorical_mean(logits, v_min: float, v_max: float):
  """Expected value of a categorical over evenly spaced atoms. logits [B, bins] -> [B]."""
  atoms = jnp.linspace(v_min, v_max, logits.shape[-1])
  return (jax.nn.softmax(logits, axis=-1) * atoms).sum(axis=-1)


def recap_targets(value_next, steps_to_end, episode_success, next_is_terminal, *, gamma,
                  failure_cost, mc_mix):
  """Imit-Recap's value target: a mix of TD(0) and the discounted Monte-Carlo return.

  Reward -1 per decision, -failure_cost when a failed episode ends; 0 at a success.
  value_next, steps_to_end [B] (decisions left), episode_success, next_is_terminal bool [B].
  Returns the target [B].
  """
  discount_to_end = gamma ** steps_to_end
  end_value = jnp.where(episode_success, 0.0, -failure_cost)
  mc = -(1.0 - discount_to_end) / (1.0 - gamma) + discount_to_end * end_value
  next_is_end = steps_to_end <= 1.0
  bootstrap = jnp.where(next_is_end, jnp.where(next_is_terminal, 0.0, end_value),
                        jax.lax.stop_gradient(value_next))
  td = -1.0 + gamma * bootstrap
  return mc_mix * mc + (1.0 - mc_mix) * td


def recap_value_range(gamma, failure_cost):
  """(v_min, v_max) of Imit-Recap's value support."""
  return -(failure_cost + 1.0 / (1.0 - gamma)), 0.0


def kind_statistics(values, kind, valid, prefix: str):
  """Mean/min/max of values [B] per sample kind, as a flat metrics dict (NaN where empty)."""
  metrics = {}
  for k in range(NUM_KINDS):
    mask = valid & (kind == k)
    count = mask.sum()
    empty = count == 0
    name = SampleKind(k).name.lower()
    metrics[f'{prefix}/{name}_mean'] = jnp.where(empty, jnp.nan, masked_mean(values, mask))
    metrics[f'{prefix}/{name}_min'] = jnp.where(empty, jnp.nan,
                                                jnp.min(jnp.where(mask, values, jnp.inf)))
    metrics[f'{prefix}/{name}_max'] = jnp.where(empty, jnp.nan,
                                                jnp.max(jnp.where(mask, values, -jnp.inf)))
    metrics[f'count/{name}'] = count
  return metrics
