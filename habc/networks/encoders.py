"""Observation encoders: cameras, language, proprioception, and the transformer trunk."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

VOCAB_SIZE = 257  # UTF-8 bytes shifted by one; id 0 is padding (habc.data.text.tokenize).


class ImageTokens(nn.Module):
  """A small strided CNN shared over cameras; each camera becomes a grid of tokens.

  Input uint8 [B, C, H, W, 3]; output float [B, C * h * w, dim] with a learned camera embedding.
  """

  features: Sequence[int]
  dim: int

  @nn.compact
  def __call__(self, images):
    batch, cams, height, width, _ = images.shape
    x = images.reshape(batch * cams, height, width, 3).astype(jnp.float32) / 127.5 - 1.0
    for i, feat in enumerate(self.features):
      x = nn.Conv(feat, (3, 3), strides=(2, 2), name=f'conv{i}')(x)
      x = nn.gelu(x)
    grid = x.shape[1] * x.shape[2]
    x = nn.Dense(self.dim, name='proj')(x.reshape(batch, cams, grid, x.shape[-1]))
    camera = self.param('camera_embed', nn.initializers.normal(0.02), (cams, 1, self.dim))
    position = self.param('position_embed', nn.initializers.normal(0.02), (1, grid, self.dim))
    return (x + camera + position).reshape(batch, cams * grid, self.dim)


class TextToken(nn.Module):
  """Bag of byte embeddings, masked mean: int32 [B, L] -> [B, 1, dim]."""

  dim: int

  @nn.compact
  def __call__(self, tokens):
    emb = nn.Embed(VOCAB_SIZE, self.dim, name='embed')(tokens)
    mask = (tokens > 0)[..., None].astype(emb.dtype)
    pooled = (emb * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
    return nn.Dense(self.dim, name='proj')(pooled)[:, None, :]


class MLP(nn.Module):
  """Dense layers with GELU in between and layer norm at the input."""

  hidden: Sequence[int]
  out: int

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm()(x)
    for width in self.hidden:
      x = nn.gelu(nn.Dense(width)(x))
    return nn.Dense(self.out)(x)


class TransformerBlock(nn.Module):
  """Pre-norm self-attention block over [B, N, dim]."""

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(y)))
    return x + y


class VisionLanguageEncoder(nn.Module):
  """Cameras + instruction + proprioception -> transformer trunk -> phi(s) [B, dim].

  A readout token attends over all image, language and state tokens; its output is phi(s).
  """

  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  cnn_features: Sequence[int]

  @nn.compact
  def __call__(self, obs):
    batch = obs['state'].shape[0]
    state = nn.Dense(self.dim, name='state_proj')(obs['state'])[:, None, :]
    tokens = [state, TextToken(self.dim, name='text')(obs['instruction'])]
    if 'images' in obs:
      tokens.append(ImageTokens(self.cnn_features, self.dim, name='images')(obs['images']))
    readout = self.param('readout', nn.initializers.normal(0.02), (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(readout, (batch, 1, self.dim))] + tokens, axis=1)
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, name=f'block{i}')(x)
    return nn.LayerNorm(name='out_norm')(x[:, 0])


class StateEncoder(nn.Module):
  """obs=state: proprioception (+ privileged object state) and instruction -> phi(s) [B, dim]."""

  dim: int
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, obs):
    text = TextToken(self.dim, name='text')(obs['instruction'])[:, 0]
    x = jnp.concatenate([obs['state'], text], axis=-1)
    return nn.LayerNorm(name='out_norm')(MLP(self.hidden, self.dim, name='mlp')(x))


class SmallCriticEncoder(nn.Module):
  """The critic's own cheap encoder: a tiny CNN with global pooling + state + instruction."""

  dim: int
  cnn_features: Sequence[int] = (8, 16)

  @nn.compact
  def __call__(self, obs):
    parts = [obs['state'], TextToken(16, name='text')(obs['instruction'])[:, 0]]
    if 'images' in obs:
      images = obs['images']
      batch, cams, height, width, _ = images.shape
      x = images.reshape(batch * cams, height, width, 3).astype(jnp.float32) / 127.5 - 1.0
      for i, feat in enumerate(self.cnn_features):
        x = nn.gelu(nn.Conv(feat, (4, 4), strides=(4, 4), name=f'conv{i}')(x))
      parts.append(x.mean(axis=(1, 2)).reshape(batch, cams * x.shape[-1]))
    return MLP((self.dim,), self.dim, name='mlp')(jnp.concatenate(parts, axis=-1))
