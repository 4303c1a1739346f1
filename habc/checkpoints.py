"""Checkpoints of the learner (orbax): params, optimiser state, step, RNG, config, normalisation.

One checkpoint is a step directory with four items:

``state``   the TrainState pytree (params, opt_state, step, rng), restored against an abstract
            target built from a freshly initialised state, so the optimiser state comes back with
            its exact structure and dtypes (resume never drops it).
``config``  the experiment config as JSON (also readable without habc).
``stats``   the normalisation statistics (a nested dict of arrays) the policy needs to turn its
            normalised actions into robot actions.
``meta``    a small JSON dict from the caller (e.g. which stage and round wrote it).

Typed PRNG keys (``jax.random.key``) are stored as their raw key data and rewrapped on restore.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ('state', 'config', 'stats', 'meta')


class Restored(NamedTuple):
  state: Any  # The TrainState, with the structure of the target.
  config: dict  # The config as a plain dict (ml_collections.ConfigDict(config) rebuilds it).
  stats: Any  # Normalisation statistics: nested dict of numpy arrays.
  meta: dict
  step: int  # The checkpoint's step.


def _is_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
  """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree, like):
  """Inverse of ``_keys_to_data``: rewraps raw key data where ``like`` holds typed keys."""
  return jax.tree.map(
      lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
      if _is_key(ref) else x, tree, like)


def _abstract(tree):
  """ShapeDtypeStructs of a (key-free) pytree: the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _to_numpy(tree):
  return jax.tree.map(np.asarray, tree)


class Checkpointer:
  """Saves and restores learner checkpoints under ``directory`` (created if missing)."""

  def __init__(self, directory: str, *, max_to_keep: int | None = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, *, config, stats, meta: dict | None = None) -> None:
    """Writes checkpoint ``step`` (replacing one of the same step if present).

    Args:
      step: the learner step.
      state: the TrainState pytree (unreplicated).
      config: the experiment config (ConfigDict or dict).
      stats: normalisation statistics, a nested dict of arrays.
      meta: JSON-serialisable extra information.
    """
    if isinstance(config, ml_collections.ConfigDict):
      config = config.to_dict()
    config = _jsonable(config)
    step = int(step)
    if step in self._manager.all_steps():
      self._manager.delete(step)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_to_numpy(_keys_to_data(state))),
        config=ocp.args.JsonSave(config),
        stats=ocp.args.StandardSave(_to_numpy(stats)),
        meta=ocp.args.JsonSave(_jsonable(meta or {})))
    self._manager.save(step, args=args, force=True)
    self._manager.wait_until_finished()

  def restore(self, target_state, step: int | None = None) -> Restored:
    """Restores checkpoint ``step`` (default: the latest) against ``target_state``'s structure.

    Args:
      target_state: a TrainState of the right structure (e.g. a freshly initialised one, or its
        ShapeDtypeStructs); only shapes and dtypes are used.
      step: which checkpoint; None for the latest.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    if step is None:
      step = self.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'No checkpoint in {self.directory}; run the SFT stage first (launch.py --mode=sft).')
    target = _abstract(_keys_to_data(target_state))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          config=ocp.args.JsonRestore(),
          stats=ocp.args.StandardRestore(),
          meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError) as e:
      raise ValueError(
          f'Checkpoint {step} in {self.directory} does not match the model being restored '
          f'(was the workdir made with another model config?): {e}') from e
    state = _data_to_keys(restored.state, target_state)
    return Restored(state=state, config=dict(restored.config), stats=restored.stats,
                    meta=dict(restored.meta or {}), step=int(step))

  def close(self) -> None:
    self._manager.close()


def _jsonable(x):
  """Tuples -> lists, numpy scalars -> Python numbers, recursively."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x
