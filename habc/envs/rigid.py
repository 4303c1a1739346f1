"""Pieces the rigid-object tasks (``pouch``, ``insert``) share: yaw arithmetic, grasps by
equality ``weld`` switched by the (dead-banded) gripper state, and the teleop-like scripted expert
(``TeleopExpert``: speed limits, pauses, smoothed noise, misjudged targets, the odd regrasp) with
its goal helpers ``approach`` and ``release``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import mujoco
import numpy as np

from habc.envs import base

# ----- yaw arithmetic ---------------------------------------------------------

def wrap(angle: float, period: float = 2 * np.pi) -> float:
  """``angle`` wrapped into ``[-period / 2, period / 2)``."""
  return float((angle + period / 2) % period - period / 2)


def reachable_yaw(cmd_yaw: float, err: float, period: float) -> float:
  """The gripper yaw command that turns a part by ``err`` (mod ``period``) within the yaw limits.

  A part symmetric under a turn by ``period`` (pi for a marker or a square peg held across)
  can be turned by ``err + k * period``; this picks the smallest such turn that keeps the command
  in ``[-pi/2, pi/2]`` (the base class's yaw range).
  """
  best = None
  for k in (0, -1, 1, -2, 2):
    y = cmd_yaw + err + k * period
    if -np.pi / 2 - 1e-6 <= y <= np.pi / 2 + 1e-6 and (best is None or abs(y - cmd_yaw) <
                                                         abs(best - cmd_yaw)):
      best = y
  return float(np.clip(best if best is not None else cmd_yaw + err, -np.pi / 2, np.pi / 2))


def grasp_yaw(part_yaw: float, cmd_yaw: float, period: float = np.pi) -> float:
  """Gripper yaw in ``[-pi/2, pi/2]`` that matches ``part_yaw`` modulo ``period``, nearest to
  ``cmd_yaw`` (so that a part lying near the limit does not make the target flip sides)."""
  cands = [float(np.clip(part_yaw + k * period, -np.pi / 2, np.pi / 2)) for k in range(-3, 4)]
  cands = [c for c in cands if abs(wrap(c - part_yaw, period)) < 0.1]
  return min(cands, key=lambda c: abs(c - cmd_yaw))


def body_axis(data: mujoco.MjData, body: int, axis: int) -> np.ndarray:
  """World direction [3] of a body's local axis (0 = x, 1 = y, 2 = z)."""
  return data.xmat[body].reshape(3, 3)[:, axis].copy()


def axis_yaw(direction: np.ndarray) -> float:
  """Yaw that turns the world +y axis onto the horizontal part of ``direction`` [3]."""
  return float(np.arctan2(-direction[0], direction[1]))


def closeness(a: np.ndarray, b: np.ndarray, scale: float = 0.4) -> float:
  """1 where points ``a`` and ``b`` [3] meet, falling linearly to 0 at ``scale`` metres apart."""
  return float(np.clip(1.0 - np.linalg.norm(np.asarray(a) - np.asarray(b)) / scale, 0.0, 1.0))


def segment_distance(p: np.ndarray, center: np.ndarray, direction: np.ndarray,
                     half_len: float) -> float:
  """Distance from point ``p`` [3] to the segment ``center +- half_len * direction``."""
  t = float(np.clip(np.dot(p - center, direction), -half_len, half_len))
  return float(np.linalg.norm(p - (center + t * direction)))


# ----- weld grasps ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Graspable:
  """A part a gripper can weld to: the segment ``site +- half_len * (body axis ``axis``)``."""

  name: str
  body: str
  site: str  # Centre of the graspable segment (a site on the body).
  axis: int = 1  # Local axis of the segment.
  half_len: float = 0.0


class WeldGrasps:
  """Grasps by equality ``weld`` (palm to part), switched on the gripper's closing edge.

  ``xml()`` gives one inactive weld per (side, part); ``bind(model)`` finds them; ``update(env)``
  runs once per control step (in ``_after_control``).
  """

  def __init__(self, parts, radius: float):
    self.parts = tuple(parts)
    self.radius = radius
    self.held = {s: None for s in base.SIDES}
    self._prev_closing = {s: False for s in base.SIDES}

  def xml(self) -> str:
    return ''.join(
        f'<weld name="grasp_{s}_{p.name}" body1="{s}_palm" body2="{p.body}" active="false" '
        'solref="0.01 1"/>' for s in base.SIDES for p in self.parts)

  def bind(self, model: mujoco.MjModel) -> None:
    self._eq = {(s, p.name): model.equality(f'grasp_{s}_{p.name}').id
                for s in base.SIDES for p in self.parts}
    self._body = {p.name: model.body(p.body).id for p in self.parts}
    self._site = {p.name: model.site(p.site).id for p in self.parts}
    self._palm = {s: model.body(f'{s}_palm').id for s in base.SIDES}

  def distance(self, env: base.TaskEnv, side: str, part: Graspable) -> float:
    """Distance from the grasp point of ``side`` to the graspable segment of ``part``."""
    c = env.data.site_xpos[self._site[part.name]]
    d = body_axis(env.data, self._body[part.name], part.axis)
    return segment_distance(env.ee_pos(side), c, d, part.half_len)

  def grasp(self, env: base.TaskEnv, side: str, name) -> None:
    """Welds ``side``'s palm to part ``name`` at the current relative pose (None releases)."""
    m, d = env.model, env.data
    for p in self.parts:
      eq = self._eq[(side, p.name)]
      if p.name == name:
        palm, body = self._palm[side], self._body[p.name]
        qinv = np.zeros(4)
        mujoco.mju_negQuat(qinv, d.xquat[palm])
        pos, quat = np.zeros(3), np.zeros(4)
        mujoco.mju_rotVecQuat(pos, d.xpos[body] - d.xpos[palm], qinv)
        mujoco.mju_mulQuat(quat, qinv, d.xquat[body])
        m.eq_data[eq, 0:3] = 0.0
        m.eq_data[eq, 3:6] = pos
        m.eq_data[eq, 6:10] = quat
        m.eq_data[eq, 10] = 1.0
      d.eq_active[eq] = int(p.name == name)
    self.held[side] = name

  def release_all(self, env: base.TaskEnv) -> None:
    for s in base.SIDES:
      self.grasp(env, s, None)
      self._prev_closing[s] = False

  def update(self, env: base.TaskEnv) -> None:
    """Opening releases; a closing edge near a part not held by the other side grasps it."""
    for s in base.SIDES:
      closing = env.gripper_closing(s)
      if not closing and self.held[s] is not None:
        self.grasp(env, s, None)
      elif closing and not self._prev_closing[s] and self.held[s] is None:
        taken = {self.held[o] for o in base.SIDES if o != s}
        dist = {p.name: self.distance(env, s, p) for p in self.parts if p.name not in taken}
        if dist:
          name = min(dist, key=dist.get)
          if dist[name] < self.radius:
            self.grasp(env, s, name)
      self._prev_closing[s] = closing

  def flags(self) -> np.ndarray:
    """[2 * len(parts)]: per side (SIDES order), one-hot of the part held (all zero: none)."""
    return np.array([float(self.held[s] == p.name) for s in base.SIDES for p in self.parts],
                    np.float32)


# ----- the teleop-like scripted expert ----------------------------------------

class ArmGoal(NamedTuple):
  """What one arm should do now: a command target (grasp point [3], yaw), a gripper command,
  the name of the phase it is in, and whether the phase needs precision (slower, less noise)."""

  pos: np.ndarray
  yaw: float
  grip: float
  phase: str
  precise: bool = False


@dataclasses.dataclass(frozen=True)
class TeleopStyle:
  """Per-episode habits of the simulated teleoperator (drawn by ``sample_style``)."""

  speed: float  # Fraction of the largest step per control step, in free motion.
  precise_speed: float  # The same in precise phases.
  pause_prob: float  # Chance of a pause when an arm enters a new phase.
  pause_steps: tuple  # (min, max) control steps of a pause.
  noise: float  # Std of the (smoothed) action noise, in action units.
  aim_error: float  # Std (metres) of a misjudged target that is corrected over ``aim_steps``.
  aim_prob: float  # Chance that a new phase starts with a misjudged target.
  aim_steps: int
  regrasp_prob: float  # Chance per episode and arm of letting go once and grasping again.
  grip: float  # Magnitude of the gripper command.


def sample_style(rng: np.random.Generator) -> TeleopStyle:
  return TeleopStyle(
      speed=float(rng.uniform(0.45, 1.0)), precise_speed=float(rng.uniform(0.25, 0.45)),
      pause_prob=float(rng.uniform(0.05, 0.3)), pause_steps=(1, int(rng.integers(3, 8))),
      noise=float(rng.uniform(0.02, 0.08)), aim_error=float(rng.uniform(0.005, 0.02)),
      aim_prob=float(rng.uniform(0.1, 0.4)), aim_steps=int(rng.integers(4, 10)),
      regrasp_prob=float(rng.uniform(0.0, 0.3)), grip=float(rng.uniform(0.6, 1.0)))


class TeleopExpert(base.Expert):
  """A closed-loop scripted expert that moves like a human teleoperator.

  A subclass implements ``goals(env) -> {side: ArmGoal}`` from the current privileged state (so
  it can take over from any state). This class turns goals into actions: speed limits, pauses on
  entering a phase, smoothed noise, misjudged targets that get corrected, and (through
  ``maybe_regrasp``) the odd deliberate release and regrasp.
  """

  def __init__(self, seed: int):
    self._rng = np.random.default_rng(seed)
    self.reset()

  def reset(self) -> None:
    r = self._rng
    self.style = sample_style(r)
    self._phase = {s: None for s in base.SIDES}
    self._steps = {s: 0 for s in base.SIDES}
    self._pause = {s: int(r.integers(0, 3)) for s in base.SIDES}
    self._aim = {s: np.zeros(3) for s in base.SIDES}
    self._noise = np.zeros(base.ACTION_DIM)
    self._regrasp = {s: bool(r.random() < self.style.regrasp_prob) for s in base.SIDES}
    self._regrasp_left = {s: 0 for s in base.SIDES}
    self._anchor = {s: (None, None) for s in base.SIDES}

  def anchored(self, side: str, phase: str, pos) -> np.ndarray:
    """A fixed target [3] for a holding-still phase: ``pos`` when ``side`` enters ``phase``,
    the same point for as long as it stays in it (so noise does not random-walk the hand)."""
    held_phase, point = self._anchor[side]
    if self._phase[side] != phase or held_phase != phase:
      point = np.array(pos, float)
      self._anchor[side] = (phase, point)
    return point

  def goals(self, env: base.TaskEnv) -> dict:
    raise NotImplementedError

  def phase_steps(self, side: str) -> int:
    """Control steps ``side`` has spent in its current phase."""
    return self._steps[side]

  def maybe_regrasp(self, env: base.TaskEnv, side: str, goal: ArmGoal) -> ArmGoal:
    """With the episode's regrasp habit, right after a grasp (``goal`` is the first phase of
    holding): open and back off for a few steps; the closed loop then grasps again."""
    if self._regrasp[side] and self._steps[side] == 2:
      self._regrasp[side] = False
      self._regrasp_left[side] = int(self._rng.integers(2, 5))
    return goal

  def act(self, env: base.TaskEnv) -> np.ndarray:
    r, st = self._rng, self.style
    goals = self.goals(env)
    a = np.zeros(base.ACTION_DIM, np.float32)
    self._noise = 0.7 * self._noise + r.normal(0.0, st.noise, base.ACTION_DIM)
    for i, s in enumerate(base.SIDES):
      g = goals[s]
      j = i * base.ARM_ACTION_DIM
      cmd = env.command(s)
      if g.phase == 'close' and self._phase[s] == 'close' and self._steps[s] >= 5:
        self._regrasp_left[s] = 2  # Closed on nothing: open, back off, try again.
      if self._regrasp_left[s] > 0:
        self._regrasp_left[s] -= 1
        g = ArmGoal(cmd.pos + np.array([0, 0, 0.01]), cmd.yaw, -st.grip, 'regrasp')
      if g.phase != self._phase[s]:
        self._phase[s], self._steps[s] = g.phase, 0
        if r.random() < st.pause_prob and g.phase != 'regrasp':
          self._pause[s] = int(r.integers(st.pause_steps[0], st.pause_steps[1] + 1))
        aim = r.normal(0.0, st.aim_error, 3) * np.array([1.0, 1.0, 0.3])
        self._aim[s] = aim if r.random() < st.aim_prob else np.zeros(3)
      self._steps[s] += 1
      if self._pause[s] > 0 and g.phase != 'regrasp':
        self._pause[s] -= 1
        a[j + 4] = cmd.grip  # Hold still, keep the hand as it is.
        continue
      fade = max(0.0, 1.0 - self._steps[s] / st.aim_steps)
      v = (np.asarray(g.pos) + fade * self._aim[s] - cmd.pos) / env.max_delta_pos
      speed = st.precise_speed if g.precise else st.speed
      n = np.linalg.norm(v)
      if n > speed:
        v *= speed / n
      dyaw = wrap(g.yaw - cmd.yaw) / env.max_delta_yaw
      dyaw = float(np.clip(dyaw, -speed * 2, speed * 2))
      scale = 0.25 if g.precise else 1.0
      v = v + scale * self._noise[j:j + 3]
      dyaw += scale * self._noise[j + 3]
      a[j:j + 5] = np.clip([*v, dyaw, g.grip], -1.0, 1.0)
    return a


def approach(env: base.TaskEnv, side: str, point, yaw: float, grip: float, hover: float = 0.06,
             travel: float = 0.14, tol: float = 0.006) -> ArmGoal:
  """Goal that brings ``side``'s grasp point onto ``point`` [3] at ``yaw`` and then closes.

  Far away it travels at a safe height, hovers ``hover`` above the point while turning, descends
  and finally closes (``grip`` > 0). Targets are corrected by the gripper's tracking error, so the
  grasp point (not just the command) reaches ``point``.
  """
  point = np.asarray(point, float)
  ee, cmd = env.ee_pos(side), env.command(side)
  offset = cmd.pos - ee
  dxy = float(np.linalg.norm(ee[:2] - point[:2]))
  dyaw = abs(wrap(yaw - env.ee_yaw(side)))
  if dxy > 0.012 or dyaw > 0.08:
    z = point[2] + hover
    if dxy > 0.05:
      z = max(z, min(travel, ee[2]))
      if ee[2] < point[2] + hover - 0.02:
        return ArmGoal(np.array([cmd.pos[0], cmd.pos[1], z]), yaw, -grip, 'lift')
    return ArmGoal(np.array([point[0], point[1], z]) + offset * [1, 1, 0], yaw, -grip, 'reach')
  if ee[2] - point[2] > tol:
    target = point + offset * [1, 1, 0] - [0, 0, tol / 2]
    return ArmGoal(target, yaw, -grip, 'descend', precise=True)
  return ArmGoal(cmd.pos, yaw, grip, 'close', precise=True)


def release(env: base.TaskEnv, side: str, grip: float, up: float = 0.0) -> ArmGoal:
  """Goal: open the gripper (and move up by ``up``)."""
  cmd = env.command(side)
  return ArmGoal(cmd.pos + np.array([0.0, 0.0, up]), cmd.yaw, -grip, 'release')
