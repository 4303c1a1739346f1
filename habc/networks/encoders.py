"""Observation encoders: cameras, language, proprioception, and the transformer trunk."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

VOCAB_SIZE = 257  # UTF-8 bytes shifted by one; id 0 is padding (habc.data.text.tokenize).


def patchify(images, patch: int):
  """uint8 [N, H, W, 3] -> float [N, (H/p) * (W/p), p * p * 3] in [-1, 1]."""
  n, height, width, ch = images.shape
  if height % patch or width % patch:
    raise ValueError(f'Image size {height}x{width} is not a multiple of the patch size {patch}.')
  x = images.astype(jnp.float32) / 127.5 - 1.0
  x = x.reshape(n, height // patch, patch, width // patch, patch, ch).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, (height // patch) * (width // patch), patch * patch * ch)


class ImageTokens(nn.Module):
  """Patch embedding shared over cameras (matmuls only: convolution gradients are slow on CPU).

  Input uint8 [B, C, H, W, 3]; output float [B, C * (H/p) * (W/p), dim], with learned camera and
  patch-position embeddings.
  """

  patch: int
  dim: int

  @nn.compact
  def __call__(self, images):
    batch, cams, height, width, _ = images.shape
    x = patchify(images.reshape(batch * cams, height, width, 3), self.patch)
    x = nn.Dense(self.dim, name='proj')(nn.gelu(nn.Dense(self.dim, name='patch_embed')(x)))
    grid = x.shape[1]
    x = x.reshape(batch, cams, grid, self.dim)
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
  patch_size: int

  @nn.compact
  def __call__(self, obs):
    batch = obs['state'].shape[0]
    state = nn.Dense(self.dim, name='state_proj')(obs['state'])[:, None, :]
    tokens = [state, TextToken(self.dim, name='text')(obs['instruction'])]
    if 'images' in obs:
      tokens.append(ImageTokens(self.patch_size, self.dim, name='images')(obs['images']))
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
  """The critic's own cheap encoder: images average-pooled to a coarse grid, state, instruction."""

  dim: int
  pooled_size: int = 8

  @nn.compact
  def __call__(self, obs):
    parts = [obs['state'], TextToken(16, name='text')(obs['instruction'])[:, 0]]
    if 'images' in obs:
      images = obs['images']
      batch, cams, height, width, _ = images.shape
      f = height // self.pooled_size
      x = images.astype(jnp.float32).reshape(batch, cams, self.pooled_size, f,
                                             width // f, f, 3).mean(axis=(3, 5))
      parts.append(x.reshape(batch, -1) / 127.5 - 1.0)
    return MLP((self.dim,), self.dim, name='mlp')(jnp.concatenate(parts, axis=-1))
