"""Safe actions: the project's end-effector deltas -> clipped Cartesian twists and gripper speeds.

Pure numpy functions, no robot in sight, so each safety rule is testable on its own.

The project action (``habc.envs.base``, ``ACTION_DIM = 10``, in ``[-1, 1]``) is, per arm in
``SIDES`` order, ``[dx, dy, dz, dyaw, grip]``: a grasp-point position delta in the world frame
(``max_delta_pos`` metres per control step at 1), a yaw delta about world z (``max_delta_yaw``
rad per step at 1), and an absolute gripper command (-1 open ... +1 closed).

Safety, in this order, for every action that reaches the robot:
  1. a NaN or inf anywhere -> no motion at all; the caller stops the robot (``is_finite``);
  2. each entry clipped to the action spec ``[-1, 1]``;
  3. the position target (measured grasp point + delta) kept in the arm's workspace box: toward a
     face the step is at most ``workspace_approach_gain`` of the distance left (the arm brakes
     as it nears the face; from outside the box it is pulled back in);
  4. the resulting step scaled down to at most ``max_lin_vel / control_hz`` metres (norm), the yaw
     step to ``max_rot_vel / control_hz`` rad, and the yaw target into ``yaw_limits``;
  5. the twist sent to the Cartesian controller has its linear and angular norms capped again at
     ``max_lin_vel`` / ``max_rot_vel`` (moma's effector caps them a last time).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from dm_robotics.transformations import transformations as tr

from habc.envs.base import ARM_ACTION_DIM, SIDES

GRIPPER_CLOSED = 255.0  # Robotiq position units: 0 fully open, 255 fully closed.


@dataclasses.dataclass(frozen=True)
class Limits:
  """Action scale and safety limits of one station (from the ``hardware`` config section)."""
  control_hz: float
  max_delta_pos: float
  max_delta_yaw: float
  max_lin_vel: float
  max_rot_vel: float
  max_gripper_speed: float
  yaw_limits: tuple
  workspace: dict  # side -> (lo [3], hi [3]) numpy arrays.
  approach_gain: float  # in (0, 1]: fraction of the distance to a workspace face per step.

  @classmethod
  def from_config(cls, c) -> 'Limits':
    return cls(
        control_hz=float(c.control_hz), max_delta_pos=float(c.max_delta_pos),
        max_delta_yaw=float(c.max_delta_yaw), max_lin_vel=float(c.max_lin_vel),
        max_rot_vel=float(c.max_rot_vel), max_gripper_speed=float(c.max_gripper_speed),
        yaw_limits=(float(c.yaw_limits[0]), float(c.yaw_limits[1])),
        approach_gain=float(c.workspace_approach_gain),
        workspace={s: (np.asarray(c.workspace[s][0], float), np.asarray(c.workspace[s][1], float))
                   for s in SIDES})

  @property
  def max_step(self) -> float:
    """Largest grasp-point displacement commanded in one control step (metres)."""
    return self.max_lin_vel / self.control_hz


@dataclasses.dataclass(frozen=True)
class ArmState:
  """What the safety rules need to know about one arm, from its sensors."""
  pos: np.ndarray  # [3] grasp point (world frame).
  quat: np.ndarray  # [4] tool orientation (w, x, y, z), world frame.
  closure: float  # Gripper position, 0 (open) ... GRIPPER_CLOSED.


@dataclasses.dataclass(frozen=True)
class ArmCommand:
  """One arm's safe command for this control step."""
  delta_pos: np.ndarray  # [3] metres this step, after workspace and speed clipping.
  target_yaw: float  # rad, relative to the home (pointing-down) orientation.
  grip: float  # in [-1, 1].
  clipped: bool  # True when any safety rule changed the requested motion.


def is_finite(action) -> bool:
  """True when every entry of ``action`` is a finite number."""
  a = np.asarray(action, dtype=np.float64)
  return bool(a.size) and bool(np.all(np.isfinite(a)))


def yaw_quat(yaw: float) -> np.ndarray:
  """Quaternion [4] (w, x, y, z) of a rotation by ``yaw`` about world z."""
  return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def tool_yaw(quat: np.ndarray, down_quat: np.ndarray) -> float:
  """Yaw (rad) of the tool orientation ``quat`` [4] about world z, relative to ``down_quat`` [4].

  The tool is assumed to point (nearly) down; the yaw is that of ``quat * down_quat^-1``.
  """
  rel = tr.quat_mul(np.asarray(quat, float), tr.quat_inv(np.asarray(down_quat, float)))
  rmat = tr.quat_to_mat(rel)[:3, :3]
  return float(np.arctan2(rmat[1, 0], rmat[0, 0]))


def safe_arm_command(delta: np.ndarray, state: ArmState, yaw: float, lo: np.ndarray,
                     hi: np.ndarray, limits: Limits) -> ArmCommand:
  """Clips one arm's normalised action ``delta`` [ARM_ACTION_DIM] (finite) to the limits.

  ``yaw`` is the arm's current tool yaw; ``lo``/``hi`` [3] its workspace box.
  """
  d = np.clip(np.asarray(delta, float), -1.0, 1.0)
  clipped = bool(np.any(d != np.asarray(delta, float)))
  want = d[:3] * limits.max_delta_pos
  # Toward a face of the box, at most ``approach_gain`` of the distance left per step: the arm
  # slows down as it nears the face (the velocity controller lags about one step, and a full-speed
  # arrival would overshoot). From outside the box this pulls the arm back in.
  g = limits.approach_gain
  step = np.clip(want, (lo - state.pos) * g, (hi - state.pos) * g)
  norm = float(np.linalg.norm(step))
  if norm > limits.max_step:
    step = step * (limits.max_step / norm)
  clipped |= not np.allclose(step, want, atol=1e-9)
  want_yaw = d[3] * limits.max_delta_yaw
  dyaw = float(np.clip(want_yaw, -limits.max_rot_vel / limits.control_hz,
                       limits.max_rot_vel / limits.control_hz))
  target_yaw = float(np.clip(yaw + dyaw, *limits.yaw_limits))
  clipped |= abs((target_yaw - yaw) - want_yaw) > 1e-9
  return ArmCommand(delta_pos=step, target_yaw=target_yaw, grip=float(d[4]), clipped=clipped)


def safe_commands(action: np.ndarray, states: dict, down_quat: np.ndarray,
                  limits: Limits) -> dict:
  """Per-side ArmCommand for a finite project action [2 * ARM_ACTION_DIM]; ``states[side]``."""
  action = np.asarray(action, float).reshape(len(SIDES) * ARM_ACTION_DIM)
  out = {}
  for i, side in enumerate(SIDES):
    lo, hi = limits.workspace[side]
    yaw = tool_yaw(states[side].quat, down_quat)
    out[side] = safe_arm_command(action[i * ARM_ACTION_DIM:(i + 1) * ARM_ACTION_DIM],
                                 states[side], yaw, lo, hi, limits)
  return out


def executed_action(commands: dict, states: dict, down_quat: np.ndarray,
                    limits: Limits) -> np.ndarray:
  """The project action [2 * ARM_ACTION_DIM] (float32, normalised) that the commands amount to."""
  out = []
  for side in SIDES:
    c = commands[side]
    yaw = tool_yaw(states[side].quat, down_quat)
    out += [*(c.delta_pos / limits.max_delta_pos), (c.target_yaw - yaw) / limits.max_delta_yaw,
            c.grip]
  return np.asarray(out, np.float32)


def _cap_norm(v: np.ndarray, cap: float) -> np.ndarray:
  n = float(np.linalg.norm(v))
  return v * (cap / n) if n > cap else v


def arm_twist(command: ArmCommand, state: ArmState, down_quat: np.ndarray,
              limits: Limits) -> np.ndarray:
  """Cartesian twist [6] (linear m/s, angular rad/s; world orientation, about the tool point).

  The linear part covers ``delta_pos`` in one control step; the angular part turns the tool from
  its current orientation to ``yaw_quat(target_yaw) * down_quat`` in one step, which also corrects
  any tilt away from pointing down.
  """
  lin = _cap_norm(command.delta_pos * limits.control_hz, limits.max_lin_vel)
  target = tr.quat_mul(yaw_quat(command.target_yaw), np.asarray(down_quat, float))
  err = tr.quat_mul(target, tr.quat_inv(np.asarray(state.quat, float)))
  if err[0] < 0:  # The shorter way round.
    err = -err
  ang = _cap_norm(tr.quat_to_axisangle(err) * limits.control_hz, limits.max_rot_vel)
  return np.concatenate([lin, ang]).astype(np.float32)


def gripper_speed(grip: float, closure: float, limits: Limits) -> np.ndarray:
  """Gripper speed command [1] (position units/s, + closes) toward the closure that ``grip`` asks.

  ``grip`` -1 asks fully open (0), +1 fully closed (GRIPPER_CLOSED); the speed would reach it in
  one control step, capped at ``max_gripper_speed``.
  """
  target = GRIPPER_CLOSED * (1.0 + float(grip)) / 2.0
  speed = (target - float(closure)) * limits.control_hz
  return np.array([np.clip(speed, -limits.max_gripper_speed, limits.max_gripper_speed)],
                  np.float32)


def stop_command() -> dict:
  """Per-side (twist [6], gripper speed [1]) that stops the arms and holds the grippers."""
  return {s: (np.zeros(6, np.float32), np.zeros(1, np.float32)) for s in SIDES}
