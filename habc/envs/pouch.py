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

The helpers it shares with ``insert`` (weld grasps, yaw arithmetic, the teleop-like scripted
expert ``TeleopExpert``) are in ``habc.envs.rigid``.
"""

from __future__ import annotations

import mujoco
import numpy as np

from habc.envs import base
from habc.envs.rigid import (ArmGoal, Graspable, TeleopExpert, WeldGrasps, approach, axis_yaw,
                             body_axis, closeness, grasp_yaw, release, reachable_yaw, wrap)

# ----- geometry of the pouch scene (metres) ----------------------------------------------------
HALF_X = 0.045  # Pouch half width (x).
HALF_Y = 0.11  # Pouch half length (y, along the slot).
HEIGHT = 0.05  # Pouch height (z).
WALL = 0.006  # Wall and floor thickness.
SLOT_HALF_LEN = 0.085  # Slot half length (y).
SLOT_HALF_WIDTH = 0.025  # Slot half width (x): 16 mm clearance each side of the marker.
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
  # Calibrated (results/notes.md, sessions 3-4) so that SFT on the default demonstrations is
  # mediocre: a 4 cm grasp radius, a wide slot, small marker yaws, and the zipper counted closed
  # at 85% of its travel.
  grasp_radius = 0.04
  zip_closed_fraction = 0.85
  inside_tol = 0.002  # Metres the marker may poke past the cavity walls.
  # Difficulty and initial conditions (metres, radians), as data: a subclass may change them.
  slot_half_width = SLOT_HALF_WIDTH
  pouch_region = ((-0.07, -0.02), (0.01, 0.08))  # [[xmin, ymin], [xmax, ymax]] of its centre.
  marker_region = ((0.14, -0.14), (0.26, 0.1))  # The same for the marker's centre.
  marker_yaw_range = (-0.5, 0.5)
  option_xml = 'integrator="implicitfast" solver="Newton" iterations="50"'

  parts = (Graspable('marker', 'marker', 'marker_center', axis=1, half_len=0.045),
           Graspable('handle', 'pouch', 'pouch_handle'),
           Graspable('zipper', 'zipper', 'zip_tab'))

  def __init__(self, *args, **kwargs):
    self.grasps = WeldGrasps(self.parts, self.grasp_radius)
    self._was_held = {}
    self._teeth_closed = None  # What _update_teeth last wrote into the model.
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
    if self._teeth_closed is not None and np.array_equal(closed, self._teeth_closed):
      return  # The model already holds these values.
    self._teeth_closed = closed
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
