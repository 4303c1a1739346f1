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

Damage (issue 29): a checkpoint whose files were cut or garbled raises ``CheckpointReadError``, one
line naming the step and the file system's complaint, not orbax's pages of tracebacks.
``newest_readable`` reads the checkpoints newest first, moves each unreadable one aside to
``<directory>.unreadable/<step>`` (kept for inspection, never deleted) and returns the newest that
reads back; ``habc.run.pipeline`` then rolls its stage bookkeeping back to that step. A save that
fails (a full disk) removes orbax's half-written temporary directory and raises a ``StorageError``
for ENOSPC-like causes, the earlier checkpoints intact.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ('state', 'config', 'stats', 'meta')
UNREADABLE_SUFFIX = '.unreadable'
_TMP_MARK = '.orbax-checkpoint-tmp'


class CheckpointReadError(ValueError):
  """A checkpoint's files cannot be read back (cut, garbled or missing). A ValueError, as
  orbax's own read errors were: callers that retry on those (habc.fleet.stations) still do."""

  def __init__(self, directory: str, step: int, reason: str):
    self.directory, self.step, self.reason = directory, int(step), reason
    super().__init__(f'Checkpoint {step} in {directory} is unreadable: {reason}')


def short_reason(error: BaseException, limit: int = 500) -> str:
  """The innermost message of an exception chain, first line, at most ``limit`` characters."""
  messages = []
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    text = str(error).strip().splitlines()
    if text:
      messages.append(f'{type(error).__name__}: {text[0]}' if not text[0].startswith(
          ('OUT_OF_RANGE', 'DATA_LOSS', 'NOT_FOUND', 'INVALID_ARGUMENT', 'FAILED_PRECONDITION'))
                      else text[0])
    error = error.__cause__ or error.__context__
  # The file system's own words are the most specific: prefer a tensorstore status line.
  for message in reversed(messages):
    if message.split(':', 1)[0].isupper():
      return message[:limit]
  return (messages[-1] if messages else 'unknown error')[:limit]


def _quiet_closed_loop_reports() -> None:
  """Silences the 'Event loop is closed' reports that tensorstore reads left pending by a failed
  restore print once orbax has closed its event loop (one traceback per pending read)."""
  previous = sys.unraisablehook
  if getattr(previous, '_habc_quiet', False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    text = str(value)
    if 'Event loop is closed' in text or 'while reading array index' in text:
      return
    previous(unraisable)

  hook._habc_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


_STORAGE_NOISE = ('RESOURCE_EXHAUSTED', 'No space left on device', 'Disk quota exceeded',
                  'Event loop is closed', 'while reading array index')


class _StorageNoiseFilter:
  """Drops orbax's background-thread error logs of a failed read or save (each with a full
  traceback); the failure itself reaches the caller as one exception."""

  def filter(self, record) -> bool:
    try:
      text = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not any(mark in text for mark in _STORAGE_NOISE)


def _quiet_orbax_failure_logs() -> None:
  """On orbax's logger ('absl') and asyncio's: tensorstore writes of a failed save whose futures
  are collected unread log "Future exception was never retrieved" there, when the garbage
  collector gets to them (a filter on a logger does not see records propagated from another)."""
  import logging
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _StorageNoiseFilter) for f in logger.filters):
      logger.addFilter(_StorageNoiseFilter())


def is_storage_full(error: BaseException) -> bool:
  """True when an error (or one in its chain) says the disk or quota is full."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(error)
    if 'No space left on device' in text or 'Disk quota exceeded' in text:
      return True
    error = error.__cause__ or error.__context__
  return False


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
    _quiet_closed_loop_reports()
    _quiet_orbax_failure_logs()
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
    try:
      self._manager.save(step, args=args, force=True)
      self._manager.wait_until_finished()
    except BaseException as e:
      self._clean_after_failed_save()
      if is_storage_full(e):
        from habc.run import storage_errors
        raise storage_errors.StorageError(
            f'Saving checkpoint {step} in {self.directory} failed: the disk is full. The earlier '
            'checkpoints and every committed episode are intact and the half-written checkpoint '
            'was removed; free space (or move the workdir to a larger disk) and run the same '
            'command again to resume.') from None
      raise

  def _clean_after_failed_save(self) -> None:
    """Waits for orbax's writer threads of the failed save, then removes its temporary
    directories (a thread still running could otherwise recreate one after the removal)."""
    try:
      self._manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except
      pass
    quiet_since = time.monotonic()
    deadline = quiet_since + 10.0
    while time.monotonic() < deadline:
      if self.remove_temporary():
        quiet_since = time.monotonic()
      elif time.monotonic() - quiet_since > 0.3:
        break
      time.sleep(0.05)
    try:
      self._manager.reload()
    except Exception:  # pylint: disable=broad-except
      pass

  def remove_temporary(self) -> list[str]:
    """Removes orbax's temporary (half-written) checkpoint directories; returns their names."""
    removed = []
    if os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        if _TMP_MARK in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
          removed.append(name)
    return removed

  def read_error(self, step: int) -> str | None:
    """Reads every item of checkpoint ``step`` as saved (no target); None when it reads back,
    else the reason (one line)."""
    try:
      self._manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), config=ocp.args.JsonRestore(),
          stats=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      _quiet_closed_loop_reports()
      return short_reason(e)
    return None

  def move_aside(self, step: int) -> str:
    """Moves checkpoint ``step`` to ``<directory>.unreadable/<step>[-<time>]``; returns the path."""
    aside = self.directory.rstrip(os.sep) + UNREADABLE_SUFFIX
    os.makedirs(aside, exist_ok=True)
    target = os.path.join(aside, str(step))
    if os.path.exists(target):
      target = f'{target}-{int(time.time())}'
    shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target

  def newest_readable(self) -> tuple[int | None, list[tuple[int, str, str]]]:
    """The newest checkpoint that reads back, moving unreadable newer ones aside.

    Returns:
      (step or None when none reads back, [(unreadable step, reason, where it was moved)]).
    """
    skipped = []
    for step in sorted(self.all_steps(), reverse=True):
      reason = self.read_error(step)
      if reason is None:
        return step, skipped
      skipped.append((step, reason, self.move_aside(step)))
    return None, skipped

  def restore(self, target_state, step: int | None = None) -> Restored:
    """Restores checkpoint ``step`` (default: the latest) against ``target_state``'s structure.

    Args:
      target_state: a TrainState of the right structure (e.g. a freshly initialised one, or its
        ShapeDtypeStructs); only shapes and dtypes are used.
      step: which checkpoint; None for the latest.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      CheckpointReadError: its files do not read back (see ``newest_readable``).
      ValueError: it reads back but does not match ``target_state``.
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
    except Exception as e:  # pylint: disable=broad-except
      reason = self.read_error(step)
      if reason is not None:
        raise CheckpointReadError(self.directory, step, reason) from None
      if not isinstance(e, (ValueError, KeyError)):
        raise
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
