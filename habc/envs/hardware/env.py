"""``HardwareEnv``: the dm-robotics station behind the simulated tasks' dm_env interface.

Same observation and action specs as ``habc.envs.base.TaskEnv`` (docs/interfaces.md section 1):
cameras ``uint8 [H, W, 3]``, ``state`` f32 [STATE_DIM], ``privileged`` f32 [P] (zeros: the
station tracks no objects), action BoundedArray f32 [ACTION_DIM] in [-1, 1]. Each ``step``:

  1. the operator (if any) sees the policy's action and may override it (``TeleopOperator``);
  2. a NaN/inf in the proposed or the executed action stops the robot (zero joint velocities,
     grippers held where they are) and ends the episode as *invalid*: an ``InvalidTimeStep``
     (LAST, reward 0, discount 1, ``timestep.invalid``), ``env.episode_invalid`` set, and
     neither ``success()`` nor a terminal; the rollout must drop the episode (``is_invalid``);
  3. the action is clipped to the workspace and velocity limits (``actions``) and sent as
     Cartesian twists and gripper speeds through moma's agentflow action space.

The episode ends on the time limit (LAST, discount 1: a failure, not a terminal), or when the
operator reports the outcome (``report_outcome``): success -> LAST with discount 0.
What was executed is kept for the rollout: ``last_action`` (normalised, after clipping),
``last_policy_action``, ``last_is_intervention``, ``last_clipped``.
"""

from __future__ import annotations

import dm_env
import numpy as np
from dm_env import specs

from habc.envs.base import ACTION_DIM, ARM_ACTION_DIM, ARM_STATE_DIM, SIDES, STATE_DIM
from habc.envs.hardware import actions
from habc.envs.hardware import robot as station_lib


class InvalidTimeStep(dm_env.TimeStep):
  """A LAST timestep that ends an invalid episode (safety stop): no outcome label."""
  __slots__ = ()
  invalid = True


class _CallableOperator:
  """Adapts ``fn(env, policy_action) -> (action, is_intervention)`` to the operator protocol."""

  def __init__(self, fn):
    self.fn = fn

  def act(self, env, policy_action):
    return self.fn(env, policy_action)


def is_invalid(timestep) -> bool:
  """True for the timestep that ended an episode by a safety stop."""
  return bool(getattr(timestep, 'invalid', False))


class HardwareEnv(dm_env.Environment):
  """The station (``robot.Station``) as a project task environment.

  Args:
    station: the built moma station.
    config: the ``hardware`` config section it was built from.
    task_name, instruction, time_limit: as the simulated task of the same name.
    privileged_dim: P, the simulated task's privileged size (the station fills zeros).
    image_size: camera image side (pixels).
    operator: optional object with ``act(env, policy_action) -> (action, is_intervention)``
      (e.g. ``TeleopOperator``), or a plain callable with that signature.
  """

  def __init__(self, station, config, *, task_name: str, instruction: str, time_limit: int,
               privileged_dim: int, image_size: int = 64, operator=None):
    self.station = station
    self.config = config
    self.task_name = task_name
    self.instruction = instruction
    self.time_limit = int(time_limit)
    self.control_hz = float(config.control_hz)
    self.cameras = tuple(station.cameras)
    self.image_size = int(image_size)
    if operator is not None and not hasattr(operator, 'act'):
      if not callable(operator):
        raise TypeError(f'HardwareEnv: operator {operator!r} has no act(env, policy_action) and '
                        'is not callable.')
      operator = _CallableOperator(operator)
    self.operator = operator
    self.limits = actions.Limits.from_config(config)
    self._down = np.asarray(config.down_quat, float)
    self._privileged_dim = int(privileged_dim)
    self._raw = None
    self._needs_reset = True
    self._outcome = None
    self.step_count = 0
    self.episode_invalid = False
    self.invalid_reason = ''
    self._clear_last()

  # ----- specs (identical to habc.envs.base.TaskEnv) ------------------------------------------

  def observation_spec(self):
    obs = {c: specs.Array((self.image_size, self.image_size, 3), np.uint8, name=c)
           for c in self.cameras}
    obs['state'] = specs.Array((STATE_DIM,), np.float32, name='state')
    obs['privileged'] = specs.Array((self._privileged_dim,), np.float32, name='privileged')
    return obs

  def action_spec(self):
    return specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0, name='action')

  # ----- episode ------------------------------------------------------------------------------

  def reset(self) -> dm_env.TimeStep:
    ts = self.station.env.reset()
    self._raw = ts.observation
    self._needs_reset = False
    self._outcome = None
    self.step_count = 0
    self.episode_invalid = False
    self.invalid_reason = ''
    self._clear_last()
    if self.operator is not None and hasattr(self.operator, 'reset'):
      self.operator.reset()
    return dm_env.restart(self._observation(self._raw))

  def step(self, action) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    policy_action = np.asarray(action, np.float32).reshape(-1)
    executed, intervention = policy_action, False
    if self.operator is not None:
      executed, intervention = self.operator.act(self, policy_action)
      executed = np.asarray(executed, np.float32).reshape(-1)
    self.last_policy_action = policy_action.copy()
    self.last_is_intervention = bool(intervention)
    for name, a in (('policy', policy_action), ('executed', executed)):
      if a.shape != (ACTION_DIM,):
        raise ValueError(f'HardwareEnv.step: {name} action of shape {a.shape}; expected '
                         f'[{ACTION_DIM}] (habc.envs.base.ACTION_NAMES).')
    if not (actions.is_finite(policy_action) and actions.is_finite(executed)):
      which = 'operator' if intervention and not actions.is_finite(executed) else 'policy'
      return self._safety_stop(f'non-finite {which} action at step {self.step_count}: '
                               f'{executed if which == "operator" else policy_action}')

    states = station_lib.arm_states(self._raw)
    commands = actions.safe_commands(executed, states, self._down, self.limits)
    moma_action = np.concatenate([
        part for side in SIDES for part in (
            actions.arm_twist(commands[side], states[side], self._down, self.limits),
            actions.gripper_speed(commands[side].grip, states[side].closure, self.limits))])
    self.last_action = actions.executed_action(commands, states, self._down, self.limits)
    self.last_clipped = any(commands[s].clipped for s in SIDES)

    ts = self.station.env.step(moma_action)
    self._raw = ts.observation
    self.step_count += 1
    obs = self._observation(self._raw)
    if self._outcome is not None:
      self._needs_reset = True
      if self._outcome:
        return dm_env.termination(1.0, obs)
      return dm_env.truncation(0.0, obs, discount=1.0)
    if self.step_count >= self.time_limit:
      self._needs_reset = True
      return dm_env.truncation(0.0, obs, discount=1.0)
    return dm_env.transition(0.0, obs)

  def _safety_stop(self, reason: str) -> InvalidTimeStep:
    """Zero velocity now, grippers held; the episode ends without an outcome label."""
    self._raw = self.station.stop()
    self._needs_reset = True
    self.episode_invalid = True
    self.invalid_reason = reason
    self.last_action = self.hold_action()
    self.last_clipped = True
    return InvalidTimeStep(dm_env.StepType.LAST, 0.0, 1.0, self._observation(self._raw))

  # ----- outcome and operator helpers ---------------------------------------------------------

  def report_outcome(self, success: bool) -> None:
    """The operator's verdict; the episode ends at the next step (success: a terminal)."""
    self._outcome = bool(success)

  def success(self) -> bool:
    """The reported outcome (a station has no checked predicate); False if none or invalid."""
    return bool(self._outcome) and not self.episode_invalid

  def hold_action(self) -> np.ndarray:
    """Action [ACTION_DIM] that keeps both arms where they are and the grippers as they are."""
    a = np.zeros(ACTION_DIM, np.float32)
    state = station_lib.state_vector(self._raw, self._down)
    for i in range(len(SIDES)):
      opening = state[(i + 1) * ARM_STATE_DIM - 1]
      a[(i + 1) * ARM_ACTION_DIM - 1] = 1.0 - 2.0 * opening  # Grip command of that opening.
    return a

  def camera_images(self) -> dict:
    """The current image of every camera, {name: uint8 [H, W, 3]} ({} before the first reset):
    what an operator's display shows (habc.web.console)."""
    if self._raw is None:
      return {}
    obs = self._observation(self._raw)
    return {c: obs[c] for c in self.cameras}

  def make_expert(self, seed: int):
    raise NotImplementedError(
        f'{self.task_name} on the station has no scripted expert (it needs privileged object '
        'state); takeovers come from a human through habc.envs.hardware.TeleopOperator.')

  def close(self) -> None:
    self.station.close()

  # ----- observations -------------------------------------------------------------------------

  def _observation(self, raw: dict) -> dict:
    """The project layout from a moma observation (preprocessed, or raw after a stop)."""
    obs = {}
    for c in self.cameras:
      obs[c] = np.asarray(raw[c] if c in raw else raw[f'{c}_rgb_img'], np.uint8)
    # The agentflow preprocessor adds ``state`` on every normal step; a safety stop reads the
    # sensors straight from the composer environment, so it is made here in the same way.
    obs['state'] = np.asarray(raw['state'] if 'state' in raw
                              else station_lib.state_vector(raw, self._down), np.float32)
    obs['privileged'] = np.zeros(self._privileged_dim, np.float32)
    return obs

  def _clear_last(self) -> None:
    self.last_action = np.zeros(ACTION_DIM, np.float32)
    self.last_policy_action = np.zeros(ACTION_DIM, np.float32)
    self.last_is_intervention = False
    self.last_clipped = False
