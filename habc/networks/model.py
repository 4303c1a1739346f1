"""The VLA policy with its flow-matching action expert, and the critic heads.

Parameters live under three top-level subtrees, the unit of freezing and of optimiser choice:
``encoder`` (phi(s): cameras + language + proprioception), ``action_expert`` (the flow-matching
velocity field over action chunks) and ``critic`` (the viability and efficiency heads, the
single-value heads of the baselines, and, by default, a small encoder of their own).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from habc.networks import backbones, encoders

CRITIC_ENCODERS = ('separate', 'detached', 'shared')


def timestep_embedding(tau, dim: int):
  """Sinusoidal embedding of flow time. tau [B] in [0, 1] -> [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(1000.0) * jnp.arange(half) / half)
  angles = tau[:, None] * 1000.0 * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class FlowActionExpert(nn.Module):
  """Velocity field v(s, x_tau, tau) over an action chunk.

  Action tokens (one per chunk step) and one conditioning token (phi(s) + flow time) go through
  a small transformer. x [B, H, A], tau [B], phi [B, D] -> velocity [B, H, A].
  """

  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, phi, x, tau):
    batch, horizon, action_dim = x.shape
    cond = nn.Dense(self.dim, name='cond')(
        jnp.concatenate([phi, timestep_embedding(tau, 64)], axis=-1))
    position = self.param('position_embed', nn.initializers.normal(0.02), (1, horizon, self.dim))
    tokens = nn.Dense(self.dim, name='action_in')(x) + position + cond[:, None, :]
    h = jnp.concatenate([cond[:, None, :], tokens], axis=1)
    for i in range(self.num_layers):
      h = encoders.TransformerBlock(self.num_heads, self.mlp_dim, name=f'block{i}')(h)
    h = nn.LayerNorm(name='out_norm')(h[:, 1:])
    return nn.Dense(action_dim, name='action_out', kernel_init=nn.initializers.zeros)(h)


class CriticHeads(nn.Module):
  """Critic heads on features [B, D].

  Returns a dict: ``viability_logit`` z_v [B]; ``efficiency`` V_e [B] (<= 0: minus the expected
  number of decisions to success, ``efficiency_scale`` sets its range); ``value`` [B] (the single
  scalar critic of ``awr``); ``value_logits`` [B, bins] (the distributional head of ``recap``).
  """

  hidden: Sequence[int]
  value_bins: int
  efficiency_scale: float

  @nn.compact
  def __call__(self, features):
    def head(name, out):
      return encoders.MLP(self.hidden, out, name=name)(features)

    raw_efficiency = head('efficiency', 1)[:, 0]
    return {
        'viability_logit': head('viability', 1)[:, 0],
        'efficiency': -self.efficiency_scale * nn.softplus(raw_efficiency),
        'value': head('value', 1)[:, 0],
        'value_logits': head('value_bins', self.value_bins),
    }


class HABCModel(nn.Module):
  """Policy (encoder + action expert) and critic in one module.

  Attributes:
    backbone: the observation backbone, obs -> phi [B, dim] (habc.networks.backbones).
    critic_encoder: 'separate' | 'detached' | 'shared' (see experiments/base.py).
  """

  backbone: nn.Module
  action_dim: int
  horizon: int
  dim: int
  num_heads: int
  mlp_dim: int
  critic_encoder: str
  critic_hidden: Sequence[int]
  value_bins: int
  efficiency_scale: float

  def setup(self):
    self.encoder = self.backbone.clone(name='encoder')
    self.action_expert = FlowActionExpert(self.dim, 2, self.num_heads, self.mlp_dim)
    self.critic = Critic(self.critic_encoder, self.critic_hidden, self.value_bins,
                         self.efficiency_scale)

  def encode(self, obs):
    """obs (docs/interfaces.md, section 3) -> phi(s) [B, D]."""
    return self.encoder(obs)

  def velocity(self, phi, x, tau):
    """phi [B, D], x [B, H, A], tau [B] -> velocity [B, H, A]."""
    return self.action_expert(phi, x, tau)

  def critic_outputs(self, obs, phi):
    """Critic heads for obs; phi [B, D] is used unless the critic has its own encoder."""
    return self.critic(obs, phi)

  def __call__(self, obs, x, tau):
    phi = self.encode(obs)
    return self.velocity(phi, x, tau), self.critic_outputs(obs, phi)


class Critic(nn.Module):
  """Critic features (own encoder, detached or shared trunk features) and the heads."""

  encoder_mode: str
  hidden: Sequence[int]
  value_bins: int
  efficiency_scale: float

  @nn.compact
  def __call__(self, obs, phi):
    if self.encoder_mode == 'separate':
      features = encoders.SmallCriticEncoder(self.hidden[0], name='encoder')(obs)
    elif self.encoder_mode == 'detached':
      features = jax.lax.stop_gradient(phi)
    else:
      features = phi
    return CriticHeads(self.hidden, self.value_bins, self.efficiency_scale, name='heads')(features)


def build_model(config: Any, action_dim: int) -> HABCModel:
  """The model an experiment config describes, for an action space of ``action_dim``."""
  m = config.model
  if config.obs not in ('vision', 'state'):
    raise ValueError(f"config.obs must be 'vision' or 'state', got {config.obs!r}.")
  if m.critic_encoder not in CRITIC_ENCODERS:
    raise ValueError(
        f'config.model.critic_encoder must be one of {CRITIC_ENCODERS}, got {m.critic_encoder!r}.')
  return HABCModel(
      backbone=backbones.make_backbone(config), action_dim=action_dim, horizon=m.action_horizon,
      dim=m.embed_dim, num_heads=m.num_heads, mlp_dim=m.mlp_dim, critic_encoder=m.critic_encoder,
      critic_hidden=tuple(m.critic_hidden), value_bins=config.method.recap_bins,
      efficiency_scale=m.efficiency_scale)
