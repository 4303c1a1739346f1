"""Pluggable observation backbones, and loading pretrained backbone weights.

The built-in backbones map an observation batch to phi(s) [B, D]. A larger pretrained VLA plugs in
by registering a factory under a name and setting ``config.model.backbone`` to it; its weights come
in through ``load_pretrained`` (``config.model.pretrained_checkpoint``), and
``config.model.frozen = ('encoder',)`` keeps them fixed with no optimiser state.

The contract of a backbone module: ``__call__(obs) -> phi [B, D]`` where ``obs`` is the batch's
observation dict (docs/interfaces.md, section 3) and D = ``config.model.embed_dim``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from habc.networks import encoders

_BACKBONES: dict[str, Callable[[Any], nn.Module]] = {}


def register_backbone(name: str, factory: Callable[[Any], nn.Module]) -> None:
  """Makes ``config.model.backbone = name`` build ``factory(config)``."""
  _BACKBONES[name] = factory


def make_backbone(config) -> nn.Module:
  """The backbone module a config names."""
  name = config.model.get('backbone', 'builtin')
  if name not in _BACKBONES:
    raise ValueError(f'config.model.backbone={name!r} is not registered; known: '
                     f'{sorted(_BACKBONES)}. Register one with habc.networks.register_backbone.')
  return _BACKBONES[name](config)


def _builtin(config) -> nn.Module:
  m = config.model
  if config.obs == 'vision':
    return encoders.VisionLanguageEncoder(m.embed_dim, m.num_layers, m.num_heads, m.mlp_dim,
                                          m.patch_size)
  return encoders.StateEncoder(m.embed_dim, (m.mlp_dim, m.mlp_dim))


register_backbone('builtin', _builtin)


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _flatten(value, prefix + (str(key),))
  else:
    yield '/'.join(prefix), tree


def load_pretrained(params: dict, checkpoint: str, subtree: str = 'encoder') -> dict:
  """Replaces ``params['params'][subtree]`` with the arrays of a pretrained checkpoint.

  Args:
    params: the model's parameters ({'params': {...}}).
    checkpoint: an orbax PyTree checkpoint directory, or an ``.npz`` file whose keys are
      '/'-joined parameter paths; either holding the subtree at its root or under
      ``params/<subtree>``.
    subtree: the top-level parameter subtree to replace.

  Returns:
    New parameters. Raises ValueError naming every missing, unexpected or mis-shaped path.
  """
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f'Pretrained checkpoint {checkpoint!r} does not exist.')
  target = params['params'][subtree]
  if checkpoint.endswith('.npz'):
    with np.load(checkpoint) as f:
      loaded = {k: f[k] for k in f.files}
  else:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    with ocp.PyTreeCheckpointer() as ckpt:
      tree = ckpt.restore(os.path.abspath(checkpoint))
    loaded = dict(_flatten(tree))
  for prefix in (f'params/{subtree}/', f'{subtree}/'):
    if any(k.startswith(prefix) for k in loaded):
      loaded = {k[len(prefix):]: v for k, v in loaded.items() if k.startswith(prefix)}
      break
  expected = dict(_flatten(target))
  problems = [f'missing {k} {np.shape(v)}' for k, v in expected.items() if k not in loaded]
  problems += [f'unexpected {k}' for k in loaded if k not in expected]
  problems += [f'shape of {k}: checkpoint {np.shape(loaded[k])}, model {np.shape(v)}'
               for k, v in expected.items() if k in loaded and np.shape(loaded[k]) != np.shape(v)]
  if problems:
    raise ValueError(f'Pretrained checkpoint {checkpoint!r} does not fit the {subtree!r} subtree '
                     f'of this model ({len(problems)} problems): ' + '; '.join(problems[:10]))

  def rebuild(tree, prefix=()):
    if isinstance(tree, dict):
      return {k: rebuild(v, prefix + (str(k),)) for k, v in tree.items()}
    value = loaded['/'.join(prefix)]
    return jax.numpy.asarray(value, dtype=tree.dtype)

  new = dict(params['params'])
  new[subtree] = rebuild(target)
  return {'params': new}
