"""``pouch``: put a marker into a pencil pouch and zip it shut (two arms, contact-rich).

Scene (world frame of ``habc.envs.base``: table top at z = 0, robot at -y, left arm at x < 0):
a closed box "pouch" lies on the table, its long axis along y, with a narrow slot along the top
(``slot_half_width`` = 15 mm each side of the centre, for a marker of radius 9 mm: 6 mm of
clearance each side, and about 5 degrees of yaw error before the marker no longer fits). The
pouch slides on the table (two slide joints, x and y, with damping and dry friction) and has a
strap handle sticking out of its left side. A zipper slider runs along the
slot on a slide joint with more dry friction than the pouch's: pulled while the pouch is not held,
it drags the pouch along instead of closing. Where the slider has passed, the slot is closed
(zipper teeth: geoms that become visible and solid to the marker). A marker (a capsule) lies on
the table to the right, at a random place and yaw.

What an expert does: the left gripper holds the pouch by its handle; the right gripper picks the
marker, turns it along the slot, drops it through the slot into the pouch, then grasps the zipper
tab and pulls it toward the robot (-y) until the pouch is closed.

Grasping: closing a gripper (its binary state going from open to closed; ``habc.envs.base``:
commands inside the dead band change nothing) with its grasp point within
``grasp_radius`` of a graspable part (the marker's axis, the handle, the zipper tab) switches on an
equality ``weld`` between the palm and that part at their current relative pose; opening the
gripper switches it off. The grippers also collide with the scene.

Success (``success()``): the whole marker (both ends of its axis, with its radius) lies inside the
pouch cavity and the zipper is closed (``zip_closed_fraction`` of its travel); held for
``success_hold`` control steps.

Measured here (2 shared cores, under load): the expert solved 100/100 seeds (0-99), mean length
90.9 control steps (67-136), ``python -m habc.envs --task=pouch --episodes=100``.

This module also holds the helpers the rigid tasks share (weld grasps, yaw arithmetic and the
teleop-like scripted expert ``TeleopExpert``); ``habc.envs.insert`` imports them from here.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import mujoco
import numpy as np

from habc.envs import base

# ----- geometry of the pouch scene (metres) ----------------------------------------------------
HALF_X = 0.045  # Pouch half width (x).
HALF_Y = 0.11  # Pouch half length (y, along the slot).
HEIGHT = 0.05  # Pouch height (z).
WALL = 0.006  # Wall and floor thickness.
SLOT_HALF_LEN = 0.085  # Slot half length (y).
SLOT_HALF_WIDTH = 0.015  # Slot half width (x): 6 mm clearance each side of the marker.
TEETH = 10  # Zipper teeth segments along the slot.
ZIP_START = SLOT_HALF_LEN + 0.008  # Slider's pouch-frame y when open (far end).
ZIP_TRAVEL = 2 * ZIP_START  # Slide range: the slider closes toward -y.
TAB_HEIGHT = 0.016  # Zipper tab centre above the pouch top.
HANDLE_OUT = 0.06  # Handle post distance from the left wall (x).
HANDLE_Z = 0.03  # Handle grasp height.
MARKER_RADIUS = 0.009
MARKER_HALF_LEN = 0.055  # Half length of the marker's straight part (along its local y).

# Contact groups: bit 1 = ordinary solids; bit 2 = zipper parts, which touch only the marker.
_SOLID = 'contype="1" conaffinity="1"'
_ZIP = 'contype="2" conaffinity="2"'
_MARKER = 'contype="3" conaffinity="3"'


# ----- shared helpers: yaw arithmetic ---------------------------------------------------------

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


# ----- shared helpers: weld grasps ------------------------------------------------------------

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


# ----- shared helpers: the teleop-like scripted expert ----------------------------------------

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


# ----- the pouch task ---------------------------------------------------------------------------

def _box(name: str, pos, size, rgba: str, extra: str = _SOLID) -> str:
  return (f'<geom name="{name}" type="box" pos="{pos[0]:.4f} {pos[1]:.4f} {pos[2]:.4f}" '
          f'size="{size[0]:.4f} {size[1]:.4f} {size[2]:.4f}" rgba="{rgba}" {extra}/>')


def pouch_xml(slot_half_width: float = SLOT_HALF_WIDTH) -> str:
  """MJCF of the pouch body (pouch frame: origin at the floor centre), its handle and zipper."""
  sw = slot_half_width
  if not MARKER_RADIUS < sw < HALF_X - 0.005:
    raise ValueError(f'pouch_xml: slot_half_width={sw} must lie between the marker radius '
                     f'{MARKER_RADIUS} and {HALF_X - 0.005} (the pouch half width minus 5 mm).')
  c = '0.2 0.35 0.7 1'
  top = HEIGHT - WALL / 2
  side = (HALF_X - sw) / 2
  end = (HALF_Y - SLOT_HALF_LEN) / 2
  wall_h = (HEIGHT - WALL) / 2
  wz = WALL + wall_h
  g = [
      _box('pouch_floor', (0, 0, WALL / 2), (HALF_X, HALF_Y, WALL / 2), '0.05 0.08 0.2 1'),
      _box('pouch_wall_left', (-HALF_X + WALL / 2, 0, wz), (WALL / 2, HALF_Y, wall_h), c),
      _box('pouch_wall_right', (HALF_X - WALL / 2, 0, wz), (WALL / 2, HALF_Y, wall_h), c),
      _box('pouch_wall_near', (0, -HALF_Y + WALL / 2, wz), (HALF_X, WALL / 2, wall_h), c),
      _box('pouch_wall_far', (0, HALF_Y - WALL / 2, wz), (HALF_X, WALL / 2, wall_h), c),
      _box('pouch_top_left', (-sw - side, 0, top), (side, HALF_Y, WALL / 2), c),
      _box('pouch_top_right', (sw + side, 0, top), (side, HALF_Y, WALL / 2), c),
      _box('pouch_top_near', (0, -SLOT_HALF_LEN - end, top), (sw, end, WALL / 2), c),
      _box('pouch_top_far', (0, SLOT_HALF_LEN + end, top), (sw, end, WALL / 2), c),
      _box('pouch_strap', (-HALF_X - HANDLE_OUT / 2, 0, 0.008), (HANDLE_OUT / 2, 0.008, 0.004),
           '0.1 0.15 0.4 1'),
      _box('pouch_handle', (-HALF_X - HANDLE_OUT, 0, 0.022), (0.006, 0.01, 0.018),
           '0.1 0.15 0.4 1'),
  ]
  seg = SLOT_HALF_LEN / TEETH
  teeth = [_box(f'zip_tooth{i}', (0, -SLOT_HALF_LEN + seg * (2 * i + 1), top),
                (sw, seg, WALL / 2 * 0.9), '0.85 0.75 0.15 0',
                'contype="0" conaffinity="0"') for i in range(TEETH)]
  return f"""
    <body name="pouch" pos="0 0 0.001">
      <joint name="pouch_x" type="slide" axis="1 0 0" damping="3" frictionloss="0.5"/>
      <joint name="pouch_y" type="slide" axis="0 1 0" damping="3" frictionloss="0.5"/>
      <inertial pos="0 0 0.02" mass="0.3" diaginertia="0.002 0.002 0.002"/>
      {''.join(g)}{''.join(teeth)}
      <site name="pouch_handle" pos="{-HALF_X - HANDLE_OUT} 0 {HANDLE_Z}" size="0.004"
            rgba="0 0 0 0"/>
      <site name="pouch_center" pos="0 0 {HEIGHT / 2}" size="0.004" rgba="0 0 0 0"/>
      <body name="zipper" pos="0 {ZIP_START} {HEIGHT}">
        <joint name="zipper" type="slide" axis="0 -1 0" range="0 {ZIP_TRAVEL}" damping="2"
               frictionloss="2.5"/>
        <inertial pos="0 0 0" mass="0.02" diaginertia="1e-5 1e-5 1e-5"/>
        {_box('zip_slider', (0, 0, 0.002), (sw + 0.003, 0.008, 0.003),
              '0.85 0.75 0.15 1', _ZIP)}
        {_box('zip_block', (0, 0, -WALL / 2), (sw - 0.001, 0.006, WALL / 2),
              '0.85 0.75 0.15 1', _ZIP)}
        {_box('zip_tab', (0, 0, TAB_HEIGHT), (0.003, 0.007, 0.011), '0.95 0.85 0.25 1',
              'contype="0" conaffinity="0"')}
        <site name="zip_tab" pos="0 0 {TAB_HEIGHT}" size="0.004" rgba="0 0 0 0"/>
      </body>
    </body>"""


def marker_xml() -> str:
  h, r = MARKER_HALF_LEN, MARKER_RADIUS
  return f"""
    <body name="marker" pos="0.2 0 {r}">
      <freejoint name="marker"/>
      <geom name="marker" type="capsule" fromto="0 {-h} 0 0 {h} 0" size="{r}" mass="0.02"
            rgba="0.85 0.1 0.1 1" condim="6" friction="0.8 0.02 0.01" {_MARKER}/>
      <geom name="marker_cap" type="cylinder" fromto="0 {h - 0.02} 0 0 {h + 0.004} 0"
            size="{r + 0.001}" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0" mass="0"/>
      <site name="marker_center" pos="0 0 0" size="0.004" rgba="0 0 0 0"/>
    </body>"""


class PouchEnv(base.TaskEnv):
  """Marker into the pencil pouch, then zip it shut."""

  task_name = 'pouch'
  instruction = 'put the marker into the pencil pouch and zip it closed'
  default_time_limit = 220
  success_hold = 5
  grasp_radius = 0.02
  zip_closed_fraction = 0.97
  inside_tol = 0.002  # Metres the marker may poke past the cavity walls.
  # Difficulty and initial conditions (metres, radians), as data: a subclass may change them.
  slot_half_width = SLOT_HALF_WIDTH
  pouch_region = ((-0.07, -0.02), (0.01, 0.08))  # [[xmin, ymin], [xmax, ymax]] of its centre.
  marker_region = ((0.14, -0.14), (0.26, 0.1))  # The same for the marker's centre.
  marker_yaw_range = (-np.pi, np.pi)
  option_xml = 'integrator="implicitfast" solver="Newton" iterations="50"'

  parts = (Graspable('marker', 'marker', 'marker_center', axis=1, half_len=0.045),
           Graspable('handle', 'pouch', 'pouch_handle'),
           Graspable('zipper', 'zipper', 'zip_tab'))

  def __init__(self, *args, **kwargs):
    self.grasps = WeldGrasps(self.parts, self.grasp_radius)
    self._was_held = {}
    super().__init__(*args, **kwargs)

  def _task_xml(self) -> dict:
    return {'worldbody': pouch_xml(self.slot_half_width) + marker_xml(),
            'equality': self.grasps.xml(),
            'contact': '<exclude body1="world" body2="pouch"/>'}

  def _ids(self) -> None:
    super()._ids()
    m = self.model
    self.grasps.bind(m)
    self._pouch = m.body('pouch').id
    self._marker = m.body('marker').id
    self._pouch_qpos = [m.jnt_qposadr[m.joint(f'pouch_{k}').id] for k in 'xy']
    self._zip_qpos = m.jnt_qposadr[m.joint('zipper').id]
    self._marker_qpos = m.jnt_qposadr[m.joint('marker').id]
    self._marker_qvel = m.jnt_dofadr[m.joint('marker').id]
    self._teeth = np.array([m.geom(f'zip_tooth{i}').id for i in range(TEETH)])
    self._tab_site = m.site('zip_tab').id
    self._handle_site = m.site('pouch_handle').id

  # ----- state --------------------------------------------------------------------------------

  def held(self, side: str):
    """Name of the part ``side`` holds ('marker', 'handle', 'zipper') or None."""
    return self.grasps.held[side]

  def pouch_pos(self) -> np.ndarray:
    """Pouch frame origin [3] (floor centre; the pouch only translates)."""
    return self.data.xpos[self._pouch].copy()

  def zip_fraction(self) -> float:
    """How far the zipper is closed, in [0, 1]."""
    return float(np.clip(self.data.qpos[self._zip_qpos] / ZIP_TRAVEL, 0.0, 1.0))

  def marker_pos(self) -> np.ndarray:
    return self.data.xpos[self._marker].copy()

  def marker_axis(self) -> np.ndarray:
    return body_axis(self.data, self._marker, 1)

  def marker_ends(self) -> np.ndarray:
    """World positions [2, 3] of the two ends of the marker's axis."""
    p, d = self.marker_pos(), self.marker_axis()
    return np.stack([p - MARKER_HALF_LEN * d, p + MARKER_HALF_LEN * d])

  def tab_pos(self) -> np.ndarray:
    return self.data.site_xpos[self._tab_site].copy()

  def handle_pos(self) -> np.ndarray:
    return self.data.site_xpos[self._handle_site].copy()

  def slot_center(self) -> np.ndarray:
    """World position [3] of the centre of the slot, on the pouch's top surface."""
    return self.pouch_pos() + np.array([0.0, 0.0, HEIGHT])

  def marker_inside(self) -> bool:
    """Both ends of the marker (with its radius) inside the cavity, to ``inside_tol``."""
    local = self.marker_ends() - self.pouch_pos()
    lo = np.array([-HALF_X + WALL, -HALF_Y + WALL, WALL]) + MARKER_RADIUS - self.inside_tol
    hi = np.array([HALF_X - WALL, HALF_Y - WALL, HEIGHT - WALL]) - MARKER_RADIUS + self.inside_tol
    return bool(np.all(local >= lo) and np.all(local <= hi))

  def zip_closed(self) -> bool:
    return self.zip_fraction() >= self.zip_closed_fraction

  def set_marker(self, pos, yaw: float = 0.0, axis_tilt: float = 0.0) -> None:
    """Places the marker (centre ``pos`` [3], yaw about z, tilt of its axis about x), at rest."""
    q = np.zeros(4)
    mujoco.mju_mulQuat(q, base.yaw_quat(yaw), [np.cos(axis_tilt / 2), np.sin(axis_tilt / 2), 0, 0])
    a = self._marker_qpos
    self.data.qpos[a:a + 3] = pos
    self.data.qpos[a + 3:a + 7] = q
    self.data.qvel[self._marker_qvel:self._marker_qvel + 6] = 0.0
    mujoco.mj_forward(self.model, self.data)

  def set_pouch(self, xy, zip_fraction: float = 0.0) -> None:
    """Moves the pouch to ``xy`` [2] (its floor centre) with the zipper at ``zip_fraction``."""
    for k in range(2):
      self.data.qpos[self._pouch_qpos[k]] = xy[k]
    self.data.qpos[self._zip_qpos] = zip_fraction * ZIP_TRAVEL
    self._update_teeth()
    mujoco.mj_forward(self.model, self.data)

  def _update_teeth(self) -> None:
    """Teeth behind the slider are closed: visible and solid to the marker."""
    slider_y = ZIP_START - self.data.qpos[self._zip_qpos]
    seg = SLOT_HALF_LEN / TEETH
    centers = -SLOT_HALF_LEN + seg * (2 * np.arange(TEETH) + 1)
    closed = centers > slider_y + 0.002
    self.model.geom_contype[self._teeth] = np.where(closed, 2, 0)
    self.model.geom_conaffinity[self._teeth] = np.where(closed, 2, 0)
    self.model.geom_rgba[self._teeth, 3] = np.where(closed, 1.0, 0.0)

  # ----- TaskEnv ------------------------------------------------------------------------------

  def _initialize_episode(self, rng: np.random.Generator) -> None:
    self.grasps.release_all(self)
    self._was_held = {s: None for s in base.SIDES}
    for s in base.SIDES:
      self.set_gripper(s, np.asarray(self.home[s]) + rng.uniform(-0.03, 0.03, 3))
    self.set_pouch(rng.uniform(*self.pouch_region), 0.0)
    self.set_marker([*rng.uniform(*self.marker_region), MARKER_RADIUS],
                    rng.uniform(*self.marker_yaw_range))

  def _after_control(self, action: np.ndarray) -> None:
    self._was_held = dict(self.grasps.held)
    self.grasps.update(self)
    self._update_teeth()

  def _privileged(self) -> np.ndarray:
    """[18]: pouch origin [3], zipper fraction [1], marker centre [3], marker axis [3],
    zipper tab [2] (xy), per side the one-hot of the part held (marker, handle, zipper) [6]."""
    return np.concatenate([self.pouch_pos(), [self.zip_fraction()], self.marker_pos(),
                           self.marker_axis(), self.tab_pos()[:2],
                           self.grasps.flags()]).astype(np.float32)

  def success(self) -> bool:
    return self.marker_inside() and self.zip_closed()

  def progress(self) -> float:
    """Task completion in [0, 1] from privileged state (for the operator's stall check).

    Graded so that steady expert-like motion keeps raising it: hands closing in on their parts,
    parts held, the marker nearing the slot (below 0.5 while it is outside the pouch), then the
    zipper closing (0.5 to 1).
    """
    left = 0.1 if self.held('left') == 'handle' else 0.05 * closeness(
        self.ee_pos('left'), self.handle_pos())
    if not self.marker_inside():
      if self.held('right') == 'marker':
        m, c = self.marker_pos(), self.slot_center()
        lifted = np.clip((m[2] - MARKER_RADIUS) / 0.1, 0.0, 1.0)
        right = 0.15 + 0.05 * lifted + 0.15 * closeness(m[:2], c[:2], 0.3)
      else:
        right = 0.1 * closeness(self.ee_pos('right'), self.marker_pos())
      return float(left + right)
    if self.held('right') == 'zipper':
      right = 0.1
    else:
      right = 0.1 * closeness(self.ee_pos('right'), self.tab_pos())
    return float(0.5 + left + right + 0.3 * self.zip_fraction())

  def failure_signals(self) -> dict:
    """Adds ``dropped``, ``zipped_empty`` and ``tipped`` (see ``TaskEnv.failure_signals``).

    ``dropped``: the marker was let go this control step away from the slot (a setback the
    policy may recover from; information only). ``zipped_empty``: the zipper more than half
    closed with the marker outside the pouch. ``tipped``: the marker stands on end at rest
    (grippers that only turn about z cannot lay it down again). ``lost`` (what the simulated
    operator watches): zipped_empty, tipped, or the marker or the pouch out of reach, or the
    marker off the table.
    """
    p, lo, hi = self.marker_pos(), np.asarray(self.workspace[0]), np.asarray(self.workspace[1])
    off = bool(np.any(p[:2] < lo[:2]) or np.any(p[:2] > hi[:2]) or p[2] < -0.005)
    off = off or bool(np.any(np.abs(self.pouch_pos()[:2]) > 0.35))
    inside = self.marker_inside()
    let_go = any(self._was_held.get(s) == 'marker' and self.held(s) != 'marker'
                 for s in base.SIDES)
    away = np.linalg.norm((p - self.slot_center())[:2]) > 0.02
    dropped = bool(let_go and away and not inside)
    zipped_empty = bool(self.zip_fraction() > 0.5 and not inside)
    speed = np.linalg.norm(self.data.qvel[self._marker_qvel:self._marker_qvel + 3])
    tipped = bool(abs(self.marker_axis()[2]) > 0.8 and speed < 0.05)
    return {'progress': self.progress(), 'lost': off or zipped_empty or tipped,
            'dropped': dropped, 'zipped_empty': zipped_empty, 'tipped': tipped,
            'time_left': self.time_left_fraction()}

  def make_expert(self, seed: int) -> 'PouchExpert':
    return PouchExpert(seed)


class PouchExpert(TeleopExpert):
  """Closed-loop pouch expert from privileged state (see the module docstring for the plan).

  Left arm: grasp the handle and hold the pouch still. Right arm, from whatever the state is:
  marker outside the pouch -> pick it (at its centre, fingers across it), lift, turn it along the
  slot, hold it just above the slot, and open when it is aligned; marker inside -> grasp the zipper
  tab and pull it toward the robot (only while the pouch is held), then open and retreat.
  """

  def goals(self, env: PouchEnv) -> dict:
    return {'left': self._left(env), 'right': self._right(env)}

  def _left(self, env: PouchEnv) -> ArmGoal:
    g, held = self.style.grip, env.held('left')
    if held == 'handle':
      cmd = env.command('left')
      hold = self.anchored('left', 'hold', cmd.pos)
      return self.maybe_regrasp(env, 'left', ArmGoal(hold, 0.0, g, 'hold', precise=True))
    if held is not None:
      return release(env, 'left', g, up=0.01)
    return approach(env, 'left', env.handle_pos(), 0.0, g, hover=0.05)

  def _right(self, env: PouchEnv) -> ArmGoal:
    g, held = self.style.grip, env.held('right')
    cmd = env.command('right')
    if not env.marker_inside():
      m = env.marker_pos()
      over_slot = np.linalg.norm((m - env.slot_center())[:2]) < 0.03 and m[2] > 0.02
      speed = np.linalg.norm(env.data.qvel[env._marker_qvel:env._marker_qvel + 3])
      if held is None and over_slot and (speed > 0.02 or self._phase['right'] == 'release'
                                         and self.phase_steps('right') < 4):
        return ArmGoal(cmd.pos + [0, 0, 0.01], cmd.yaw, -g, 'release')  # Let it fall in.
      if env.zip_fraction() > 0.05:
        return self._unzip(env)  # Zipped (partly) too early: open it again first.
      if held == 'marker':
        return self.maybe_regrasp(env, 'right', self._carry(env))
      if held is not None:
        return release(env, 'right', g, up=0.01)
      yaw = grasp_yaw(axis_yaw(env.marker_axis()), cmd.yaw)
      return approach(env, 'right', m + [0, 0, 0.004], yaw, g, hover=0.05)
    if env.zip_closed():
      if held is not None:
        return release(env, 'right', g)
      return ArmGoal(np.array([cmd.pos[0], cmd.pos[1], 0.16]), cmd.yaw, -g, 'retreat')
    return self._zip(env, closing=True)

  def _zip(self, env: PouchEnv, closing: bool) -> ArmGoal:
    """Right arm: grasp the zipper tab and slide it to the closed (or the open) end; the pull
    waits while the left hand is not holding the pouch."""
    g, held = self.style.grip, env.held('right')
    cmd, ee = env.command('right'), env.ee_pos('right')
    if held == 'zipper':
      if env.held('left') != 'handle':
        return ArmGoal(self.anchored('right', 'wait', cmd.pos), cmd.yaw, g, 'wait', precise=True)
      tab = env.tab_pos()
      y = -ZIP_START - 0.01 if closing else ZIP_START + 0.01
      end = env.pouch_pos() + np.array([0.0, y, HEIGHT + TAB_HEIGHT])
      phase = 'pull' if closing else 'unzip'
      return ArmGoal(cmd.pos + (end - tab) * [0.3, 1.0, 0.3], 0.0, g, phase, precise=True)
    if held is not None:
      return release(env, 'right', g, up=0.01)
    if ee[2] < HEIGHT + 0.04 and np.linalg.norm((ee - env.tab_pos())[:2]) > 0.03:
      return ArmGoal(np.array([cmd.pos[0], cmd.pos[1], 0.13]), cmd.yaw, -g, 'lift')
    return approach(env, 'right', env.tab_pos(), 0.0, g, hover=0.04)

  def _unzip(self, env: PouchEnv) -> ArmGoal:
    """The zipper is partly closed with the marker outside: set a held marker down beside the
    pouch, then slide the zipper back open."""
    g, held, cmd = self.style.grip, env.held('right'), env.command('right')
    if held != 'marker':
      if env.zip_fraction() < 0.02 and held == 'zipper':
        return release(env, 'right', g, up=0.01)
      return self._zip(env, closing=False)
    m = env.marker_pos()
    spot = env.pouch_pos() + np.array([HALF_X + 0.08, 0.0, MARKER_RADIUS + 0.015])
    d = spot - m
    if np.linalg.norm(d[:2]) > 0.03:
      return ArmGoal(cmd.pos + d * [1, 1, 0] + [0, 0, 0.1 - m[2]], cmd.yaw, g, 'set_aside')
    if d[2] < -0.01:
      return ArmGoal(cmd.pos + d, cmd.yaw, g, 'set_down', precise=True)
    return release(env, 'right', g, up=0.01)

  def _carry(self, env: PouchEnv) -> ArmGoal:
    """Marker held: bring it over the slot, aligned, and open when it is ready to drop."""
    g, cmd = self.style.grip, env.command('right')
    m = env.marker_pos()
    err_yaw = wrap(0.0 - axis_yaw(env.marker_axis()), np.pi)
    yaw = reachable_yaw(cmd.yaw, err_yaw, np.pi)
    above = env.slot_center() + np.array([0.0, 0.0, MARKER_RADIUS + 0.014])
    d = above - m
    dxy = float(np.linalg.norm(d[:2]))
    if dxy > 0.02:
      if m[2] < above[2] + 0.03 and dxy > 0.05:
        return ArmGoal(cmd.pos + [0, 0, 0.13 - m[2]], yaw, g, 'lift')
      return ArmGoal(cmd.pos + d * [1, 1, 0] + [0, 0, above[2] + 0.05 - m[2]], yaw, g, 'carry')
    aligned = dxy < 0.003 and abs(err_yaw) < 0.03 and abs(d[2]) < 0.006
    releasing = self._phase['right'] == 'release' and dxy < 0.008
    if releasing or (aligned and self._phase['right'] == 'align' and self.phase_steps('right') > 1):
      return ArmGoal(cmd.pos, cmd.yaw, -g, 'release', precise=True)
    return ArmGoal(cmd.pos + d, yaw, g, 'align', precise=True)
