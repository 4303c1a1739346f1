"""A simulated human operator for online rollouts (docs/interfaces.md section 1).

It watches the policy through the task's ``failure_signals()`` and, when the episode is visibly
heading to failure (an object lost or a corner dropped, no progress for a while, or little time
left with the task far from done), takes over on a configurable fraction of such episodes and
runs the task's scripted expert from the current state. It may hand control back after a while.
Every step is flagged: ``act`` returns ``(action, is_intervention)``.

Generic across tasks: it uses only the TaskEnv interface (``failure_signals``, ``success``,
``make_expert``).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
  """When the simulated operator steps in and for how long.

  takeover_prob: chance that an episode seen heading to failure is taken over (decided once per
    trigger; the paper's operator completed about half of the failures).
  stall_steps: control steps without ``progress_eps`` of progress that count as a stall.
  late_time_left, late_progress: with less than ``late_time_left`` of the time limit left and
    progress below ``late_progress``, the episode is heading to a time-out.
  min_policy_steps: the policy always gets at least this many steps first.
  reaction_steps: steps between noticing the failure and taking the controls (human reaction).
  handback_prob: chance that a takeover hands control back to the policy after
    ``handback_steps`` operator steps (unless the task is already done).
  max_takeovers: takeovers per episode at most.
  """
  takeover_prob: float = 0.5
  stall_steps: int = 15
  progress_eps: float = 0.02
  late_time_left: float = 0.35
  late_progress: float = 0.6
  min_policy_steps: int = 5
  reaction_steps: int = 2
  handback_prob: float = 0.0
  handback_steps: int = 20
  max_takeovers: int = 1


def make_config(config=None, **overrides) -> OperatorConfig:
  """OperatorConfig from None, an OperatorConfig, a dict or an ml_collections ConfigDict."""
  if config is None:
    base = {}
  elif isinstance(config, OperatorConfig):
    base = dataclasses.asdict(config)
  elif hasattr(config, 'to_dict'):
    base = dict(config.to_dict())
  else:
    base = dict(config)
  base.update(overrides)
  known = {f.name for f in dataclasses.fields(OperatorConfig)}
  unknown = set(base) - known
  if unknown:
    raise ValueError(f'SimulatedOperator: unknown config keys {sorted(unknown)}; '
                     f'known keys: {sorted(known)}.')
  return OperatorConfig(**base)


class SimulatedOperator:
  """``reset()`` per episode, then ``act(env, policy_action) -> (action, is_intervention)``."""

  name = 'simulated'

  def __init__(self, config=None, seed: int = 0, **overrides):
    self.config = make_config(config, **overrides)
    self._rng = np.random.default_rng(seed)
    self.reset()

  def reset(self) -> None:
    self.in_control = False
    self.takeovers = 0
    self.reason = None  # Why the last takeover happened: 'lost', 'stall' or 'late'.
    self.events = []  # (step, 'takeover'|'declined'|'handback', reason).
    self._step = 0
    self._best = -np.inf
    self._since_progress = 0
    self._pending = None  # Steps left before a decided takeover.
    self._expert = None
    self._operator_steps = 0
    self._handback = False
    self._declined = False

  def _failing(self, env) -> str | None:
    """Why the episode looks like it is heading to failure, or None."""
    c = self.config
    sig = env.failure_signals()
    progress = float(sig.get('progress', 0.0))
    if progress > self._best + c.progress_eps:
      self._best = progress
      self._since_progress = 0
    else:
      self._since_progress += 1
    if self._step <= c.min_policy_steps or env.success():
      return None
    if sig.get('lost', False):
      return 'lost'
    if self._since_progress >= c.stall_steps:
      return 'stall'
    if sig.get('time_left', 1.0) < c.late_time_left and progress < c.late_progress:
      return 'late'
    return None

  def _take_over(self, env, reason: str) -> None:
    self.in_control = True
    self.takeovers += 1
    self.reason = reason
    self._operator_steps = 0
    self._handback = bool(self._rng.random() < self.config.handback_prob)
    self._expert = env.make_expert(int(self._rng.integers(2**31 - 1)))
    self.events.append((self._step, 'takeover', reason))

  def act(self, env, policy_action):
    """The executed action [A] and whether the operator produced it."""
    c = self.config
    self._step += 1
    if self.in_control:
      self._operator_steps += 1
      if self._handback and self._operator_steps >= c.handback_steps and not env.success():
        self.in_control = False
        self._best, self._since_progress = -np.inf, 0
        self.events.append((self._step, 'handback', self.reason))
      else:
        return np.asarray(self._expert.act(env), np.float32), True
    reason = self._failing(env)
    if self._pending is not None:
      self._pending -= 1
      if self._pending <= 0:
        self._pending = None
        self._take_over(env, self._pending_reason)
        return np.asarray(self._expert.act(env), np.float32), True
    elif reason is not None and not self._declined and self.takeovers < c.max_takeovers:
      if self._rng.random() < c.takeover_prob:
        self._pending, self._pending_reason = c.reaction_steps, reason
        if self._pending <= 0:
          self._pending = None
          self._take_over(env, reason)
          return np.asarray(self._expert.act(env), np.float32), True
      else:
        # Declined: this episode's failure runs its course.
        self.events.append((self._step, 'declined', reason))
        self._declined = True
    return np.asarray(policy_action, np.float32), False
