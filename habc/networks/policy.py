"""Sampling action chunks from the flow-matching policy (jitted), one PRNG key per row.

Each row's initial noise is drawn from that row's own key, so a row's sample does not depend on
which other rows share its batch, on its position in the batch, or on padding. Rollouts derive
the row keys from the policy's base key and per-episode noise ids with ``noise_keys``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _is_typed_key(keys) -> bool:
  return jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)


def check_row_keys(keys, batch: int, where: str = 'sample_actions') -> None:
  """Raises ValueError unless ``keys`` is one PRNG key per row: typed [B] or raw uint32 [B, 2]."""
  typed = _is_typed_key(keys)
  shape = tuple(keys.shape)
  if (typed and shape != (batch,)) or (not typed and (len(shape) != 2 or shape[0] != batch)):
    raise ValueError(
        f'{where}: expected one PRNG key per row of the batch of {batch} (a typed key array '
        f'[{batch}] or raw uint32 keys [{batch}, 2]), got {"typed" if typed else "raw"} keys of '
        f'shape {shape}. Split a single key with jax.random.split(key, {batch}), or derive '
        'per-episode keys with habc.networks.policy.noise_keys(base_key, noise_ids).')


def initial_noise(keys, horizon: int, action_dim: int, dtype=jnp.float32):
  """Per-row standard normal noise: row i is drawn from keys[i] alone.

  Args:
    keys: typed keys [B] or raw uint32 keys [B, 2].
    horizon: H, the chunk length.
    action_dim: A.
    dtype: the noise's dtype.

  Returns:
    f32 [B, H, A].
  """
  return jax.vmap(lambda k: jax.random.normal(k, (horizon, action_dim), dtype))(keys)


def noise_keys(base_key, noise_ids):
  """One key per row from a base key and integer noise ids, by successive ``fold_in``.

  Row i's key is ``fold_in(...fold_in(base_key, ids[i, 0])..., ids[i, K-1])``: a pure function of
  the base key and that row's ids (for rollouts: episode seed, decision index).

  Args:
    base_key: a single key, typed [] or raw uint32 [2].
    noise_ids: uint32 [B, K] (values below 2**32; larger ones would wrap).

  Returns:
    Keys [B] (typed) or [B, 2] (raw), like ``base_key``.
  """
  noise_ids = jnp.asarray(noise_ids, jnp.uint32)
  if noise_ids.ndim != 2:
    raise ValueError(f'noise_keys: noise_ids must be [B, K], got shape {noise_ids.shape}.')

  def row_key(ids):
    key = base_key
    for j in range(ids.shape[0]):  # K is static: one fold per id column.
      key = jax.random.fold_in(key, ids[j])
    return key

  return jax.vmap(row_key)(noise_ids)


noise_keys_jit = jax.jit(noise_keys)


def sample_actions(model, params, obs, keys, num_steps: int):
  """Euler integration of the velocity field from noise (tau = 0) to actions (tau = 1).

  Args:
    model: an ``HABCModel``.
    params: its parameters.
    obs: a batch of observations (docs/interfaces.md, section 3), leading dimension B.
    keys: one PRNG key per row, typed [B] or raw uint32 [B, 2]; row i's noise [H, A] is drawn
      from keys[i] only.
    num_steps: integration steps.

  Returns:
    Normalised action chunks f32 [B, H, A]; un-normalise with the dataset statistics.
  """
  phi = model.apply(params, obs, method=model.encode)
  batch = phi.shape[0]
  check_row_keys(keys, batch)
  x = initial_noise(keys, model.horizon, model.action_dim, phi.dtype)
  dt = 1.0 / num_steps

  def euler_step(i, x):
    tau = jnp.full((batch,), i * dt, phi.dtype)
    return x + dt * model.apply(params, phi, x, tau, method=model.velocity)

  return jax.lax.fori_loop(0, num_steps, euler_step, x)


def make_policy_fn(model, config):
  """The jitted sampler with the config's number of integration steps.

  Returns:
    ``fn(params, obs, keys) -> f32 [B, H, A]`` (normalised): obs with leading dimension B, keys
    typed [B] or raw uint32 [B, 2] (one per row, e.g. from ``noise_keys``).
  """
  return jax.jit(functools.partial(sample_actions, model, num_steps=config.model.flow_steps))
