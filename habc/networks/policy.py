"""Sampling action chunks from the flow-matching policy (jitted)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def sample_actions(model, params, obs, rng, num_steps: int):
  """Euler integration of the velocity field from noise (tau = 0) to actions (tau = 1).

  Args:
    model: an ``HABCModel``.
    params: its parameters.
    obs: a batch of observations (docs/interfaces.md, section 3), leading dimension B.
    rng: a PRNG key.
    num_steps: integration steps.

  Returns:
    Normalised action chunks [B, H, A]; un-normalise with the dataset statistics.
  """
  phi = model.apply(params, obs, method=model.encode)
  batch = phi.shape[0]
  x = jax.random.normal(rng, (batch, model.horizon, model.action_dim), phi.dtype)
  dt = 1.0 / num_steps

  def euler_step(i, x):
    tau = jnp.full((batch,), i * dt, phi.dtype)
    return x + dt * model.apply(params, phi, x, tau, method=model.velocity)

  return jax.lax.fori_loop(0, num_steps, euler_step, x)


def make_policy_fn(model, config):
  """A jitted ``fn(params, obs, rng) -> [B, H, A]`` with the config's number of integration steps."""
  return jax.jit(functools.partial(sample_actions, model, num_steps=config.model.flow_steps))
