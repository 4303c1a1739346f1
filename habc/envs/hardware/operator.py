"""Operator takeover on the station: a teleop device overrides the policy from the next step.

An operator is anything with ``act(env, policy_action) -> (action, is_intervention)`` (and
optionally ``reset()``), the same protocol as ``habc.envs.operator.SimulatedOperator``.
``HardwareEnv.step`` asks it on every control step, so a takeover signalled at any moment is
honoured at the next step: within one control period.

``TeleopOperator`` is the one a real teleop device feeds, from its own thread:
``take_over()``, then ``command(action)`` as often as it reads the device, then ``hand_back()``.
The operator also judges the episode: ``report_outcome(success)`` (from any thread) is applied to
the environment (``env.report_outcome``) at the next control step, which then ends the episode.
"""

from __future__ import annotations

import threading

import numpy as np

from habc.envs.base import ACTION_DIM


class TeleopOperator:
  """Takeover state shared between a teleop device thread and the control loop (thread-safe).

  Between ``take_over()`` and ``hand_back()`` every control step executes the device's latest
  ``command`` (project action layout [ACTION_DIM], normalised); before the first command arrives
  it holds the arms still (``env.hold_action()``). The policy's proposal is still recorded by the
  environment (``env.last_policy_action``).

  ``report_outcome(success)`` passes the operator's verdict on the running episode to the
  environment at the next ``act`` (the next control step), which ends the episode there: a success
  as a terminal, a failure as a truncation. Without a report the time limit ends it as a failure.
  """

  def __init__(self, config=None, seed=None):
    del config, seed  # Accepted for the rollout's operator factory, ``Class(config, seed)``.
    self._lock = threading.Lock()
    self._active = False
    self._latest = None
    self._outcome = None  # A reported verdict not yet passed to the environment.
    self.takeovers = 0

  def take_over(self, action=None) -> None:
    with self._lock:
      if not self._active:
        self.takeovers += 1
      self._active = True
      self._latest = None if action is None else self._checked(action)

  def command(self, action) -> None:
    """The device's current action; ignored while the policy is in control."""
    with self._lock:
      self._latest = self._checked(action)

  def hand_back(self) -> None:
    with self._lock:
      self._active = False
      self._latest = None

  @property
  def active(self) -> bool:
    with self._lock:
      return self._active

  def report_outcome(self, success: bool) -> None:
    """The operator's verdict on the running episode; it ends at the next control step."""
    with self._lock:
      self._outcome = bool(success)

  def reset(self) -> None:
    """A new episode starts under policy control, with no verdict pending."""
    with self._lock:
      self._active = False
      self._latest = None
      self._outcome = None

  def act(self, env, policy_action):
    with self._lock:
      active, latest, outcome = self._active, self._latest, self._outcome
      self._outcome = None
    if outcome is not None:
      env.report_outcome(outcome)
    if not active:
      return policy_action, False
    return (env.hold_action() if latest is None else latest.copy()), True

  @staticmethod
  def _checked(action) -> np.ndarray:
    # Shape errors fail here, in the device thread; NaN/inf pass on so that the environment's
    # safety stop sees them and ends the episode as invalid.
    a = np.asarray(action, np.float32)
    if a.shape != (ACTION_DIM,):
      raise ValueError(f'TeleopOperator: action of shape {a.shape}; the project layout is '
                       f'[{ACTION_DIM}] (habc.envs.base.ACTION_NAMES).')
    return a.copy()
