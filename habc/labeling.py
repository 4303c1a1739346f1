"""Intervention-aware credit assignment and training windows (numpy, pure).

This is the one place where HABC decides which steps of an episode an outcome label belongs to.

Vocabulary
----------
An episode has T steps in the RLDS convention: step t holds the observation s_t and the action a_t
executed from it; the last step (t = T - 1) holds the final observation and a dummy action.
``is_intervention[t]`` is True where a human operator controlled the robot. A *segment* is a
maximal run of steps under one controller. A *window* is a training sample anchored at step t:
the action chunk a_{t:t+H} (padded with a mask past the last action) and the observations s_t and
s_{t+k} (k = ``next_offset``: what "the next state" means when actions come in chunks).

Rules (see shared/DESIGN.md, section 1)
---------------------------------------
* No intervention: every policy step is labelled with the outcome y.
* With interventions: only the policy suffix after the *last* intervention is labelled with y.
  Earlier policy segments stay in the data unlabelled (actor weight 0 by default).
* Operator steps never carry an outcome label; they are imitation data, and efficiency-head
  targets when the episode succeeded.
* ``naive=True`` (the ablation) labels every policy step of the episode with y, across
  intervention boundaries.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np


class SampleKind(enum.IntEnum):
  """What a training window is; decides its actor weight (see ``habc.losses.sample_weights``)."""

  SFT = 0  # Demonstration data (the supervised starting point).
  SUCCESS = 1  # Outcome-labelled autonomous window of a successful episode.
  FAILURE = 2  # Outcome-labelled autonomous window of a failed episode.
  INTERVENTION = 3  # Operator-controlled window (>= min_human_steps operator steps).
  UNLABELLED = 4  # Autonomous window whose outcome is not its own (before an intervention).


NUM_KINDS = len(SampleKind)


class Credit(NamedTuple):
  """Per-step credit of one episode; every field has shape [T]."""

  outcome: np.ndarray  # float32: the label 0/1, NaN where the step carries no outcome label.
  viability_mask: np.ndarray  # bool: the step trains the viability head.
  efficiency_mask: np.ndarray  # bool: the step trains the efficiency head.
  is_intervention: np.ndarray  # bool: operator-controlled step.


def _as_flags(is_intervention) -> np.ndarray:
  flags = np.asarray(is_intervention)
  if flags.ndim != 1:
    raise ValueError(
        f'is_intervention must be a 1-D array of per-step flags, got shape {flags.shape}.')
  if flags.dtype != np.bool_:
    if not np.isin(flags, (0, 1)).all():
      raise ValueError('is_intervention must hold booleans (or 0/1); got other values.')
    flags = flags.astype(bool)
  return flags


def segments(is_intervention) -> list[tuple[int, int, bool]]:
  """Maximal runs of steps under one controller.

  Args:
    is_intervention: bool [T].

  Returns:
    A list of (start, stop, is_operator) with stop exclusive, in time order.
  """
  flags = _as_flags(is_intervention)
  if flags.size == 0:
    return []
  change = np.flatnonzero(flags[1:] != flags[:-1]) + 1
  starts = np.concatenate([[0], change])
  stops = np.concatenate([change, [flags.size]])
  return [(int(a), int(b), bool(flags[a])) for a, b in zip(starts, stops)]


def assign_credit(is_intervention, success, naive: bool = False) -> Credit:
  """Intervention-aware credit assignment for one episode.

  Args:
    is_intervention: bool [T], True where the operator controlled the step.
    success: the episode's binary outcome (bool or 0/1).
    naive: label every policy step with the outcome (the leaking ablation).

  Returns:
    ``Credit`` with per-step arrays of shape [T].
  """
  flags = _as_flags(is_intervention)
  if success not in (0, 1, True, False) and not isinstance(success, np.bool_):
    raise ValueError(f'success must be a binary outcome (bool or 0/1), got {success!r}.')
  y = float(bool(success))
  policy = ~flags
  if naive or not flags.any():
    labelled = policy.copy()
  else:
    last_operator_step = int(np.flatnonzero(flags)[-1])
    labelled = policy & (np.arange(flags.size) > last_operator_step)
  outcome = np.where(labelled, np.float32(y), np.float32(np.nan)).astype(np.float32)
  efficiency = (labelled | flags) & bool(success)
  return Credit(outcome=outcome, viability_mask=labelled, efficiency_mask=efficiency,
                is_intervention=flags)


class Windows(NamedTuple):
  """Training windows of one episode; N anchors (one per step that holds an action).

  Index arrays point into the episode's steps, so observations are gathered once per window.
  """

  anchor: np.ndarray  # int32 [N]: the step t of s_t.
  action_index: np.ndarray  # int32 [N, H]: steps of the action chunk (clipped to the last action).
  action_mask: np.ndarray  # bool [N, H]: False on padding past the last action.
  next_index: np.ndarray  # int32 [N]: the step of s_{t+k}, clipped to the final step.
  next_is_terminal: np.ndarray  # bool [N]: s_{t+k} is a real success ending (V_e there is 0).
  kind: np.ndarray  # int32 [N]: SampleKind.
  outcome: np.ndarray  # float32 [N]: the label where viability_mask, else 0.
  viability_mask: np.ndarray  # bool [N]: trains the viability head.
  efficiency_mask: np.ndarray  # bool [N]: trains the efficiency head.
  human_steps: np.ndarray  # int32 [N]: operator-controlled steps among the chunk's valid steps.
  steps_to_end: np.ndarray  # float32 [N]: (T - 1 - t) / k, decisions left to the episode's end.
  episode_success: np.ndarray  # bool [N]: the episode's outcome (for the single-value baselines).


def make_windows(is_intervention, success, *, horizon: int, next_offset: int = 1,
                 min_human_steps: int = 10, is_terminal_end: bool | None = None,
                 is_demo: bool = False, naive: bool = False) -> Windows:
  """Cuts an episode into labelled training windows.

  A window is an intervention window when at least ``min(min_human_steps, valid)`` of its valid
  action steps are operator-controlled (``valid`` is smaller than the horizon only at the end of
  an episode). An autonomous window is outcome-labelled only when its anchor step is labelled and
  it is not an intervention window, so no label crosses an intervention boundary.

  Args:
    is_intervention: bool [T] (T >= 2: at least one action and the final observation).
    success: the episode's outcome.
    horizon: H, the action-chunk length.
    next_offset: k, the step offset of the "next state" s_{t+k}.
    min_human_steps: operator steps that make a window an intervention window.
    is_terminal_end: whether the episode ended on a real success (RLDS ``is_terminal`` on the last
      step); defaults to ``success``.
    is_demo: the episode is a demonstration: every window is ``SampleKind.SFT``.
    naive: the leaking ablation of credit assignment (see ``assign_credit``).

  Returns:
    ``Windows`` with N = T - 1 anchors.
  """
  flags = _as_flags(is_intervention)
  num_steps = flags.size
  if num_steps < 2:
    raise ValueError(
        f'An episode needs at least 2 steps (one action and the final observation), got {num_steps}.')
  if horizon < 1 or next_offset < 1 or min_human_steps < 1:
    raise ValueError(f'horizon, next_offset and min_human_steps must be >= 1, got '
                     f'{horizon}, {next_offset}, {min_human_steps}.')
  if is_terminal_end is None:
    is_terminal_end = bool(success)
  credit = assign_credit(flags, success, naive=naive)
  last_action = num_steps - 2
  anchor = np.arange(num_steps - 1, dtype=np.int32)
  raw = anchor[:, None] + np.arange(horizon, dtype=np.int32)[None, :]
  action_mask = raw <= last_action
  action_index = np.minimum(raw, last_action).astype(np.int32)
  next_index = np.minimum(anchor + next_offset, num_steps - 1).astype(np.int32)
  next_is_terminal = (next_index == num_steps - 1) & bool(is_terminal_end)

  human_steps = (flags[action_index] & action_mask).sum(axis=1).astype(np.int32)
  valid_steps = action_mask.sum(axis=1)
  is_operator_window = human_steps >= np.minimum(min_human_steps, valid_steps)
  # Windows whose chunk is entirely autonomous have human_steps 0 < threshold, so they never count.
  labelled = credit.viability_mask[anchor] & ~is_operator_window

  y = bool(success)
  kind = np.full(anchor.shape, SampleKind.UNLABELLED, np.int32)
  kind[labelled] = SampleKind.SUCCESS if y else SampleKind.FAILURE
  kind[is_operator_window] = SampleKind.INTERVENTION
  if is_demo:
    kind[:] = SampleKind.SFT
    labelled = np.zeros_like(labelled)
  viability_mask = labelled
  efficiency_mask = y & (labelled | (kind == SampleKind.INTERVENTION))
  outcome = np.where(viability_mask, np.float32(y), np.float32(0.0)).astype(np.float32)
  return Windows(anchor=anchor, action_index=action_index, action_mask=action_mask,
                 next_index=next_index, next_is_terminal=next_is_terminal, kind=kind,
                 outcome=outcome, viability_mask=viability_mask,
                 efficiency_mask=np.asarray(efficiency_mask, bool), human_steps=human_steps,
                 steps_to_end=((num_steps - 1 - anchor) / next_offset).astype(np.float32),
                 episode_success=np.full(anchor.shape, y, bool))
