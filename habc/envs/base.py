"""The common simulated bimanual task: a MuJoCo scene with two mocap-driven grippers.

``TaskEnv`` is a ``dm_env.Environment`` (docs/interfaces.md section 1). The base class owns
everything that is the same across tasks: the two grippers, cameras and OSMesa rendering, the
action/observation specs, the control loop (``control_hz`` with physics substeps), the workspace
box, the time limit and the success-hold ending. A task subclass provides only the scene and its
rules.

A subclass must provide (class attributes):
  ``task_name`` (str), ``instruction`` (str), ``default_time_limit`` (control steps),
  optionally ``timestep``, ``control_hz``, ``success_hold`` (control steps the predicate must hold),
  ``workspace`` (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``, metres), ``home`` (gripper start
  positions per side), ``gripper_collides`` (False: grippers pass through objects, e.g. cloth that
  is grasped by a constraint), ``option_xml`` (attributes of ``<option>``).
and methods:
  ``_task_xml(self) -> dict``: MJCF fragments, keys among ``assets``, ``worldbody``, ``equality``,
    ``contact``, ``extension`` (each a string placed inside that section; missing keys = empty).
  ``_initialize_episode(self, rng)``: place objects (and grippers, through ``set_gripper``) for a
    new episode from the numpy Generator ``rng``; ``mj_forward`` is called afterwards.
  ``_privileged(self) -> np.ndarray [P]``: object state for the expert and the operator.
  ``success(self) -> bool``: the checked predicate on the current state.
  ``make_expert(self, seed) -> Expert``.
and optionally:
  ``_after_control(self, action)``: called once per control step after the action is applied and
    before physics runs (e.g. switch grasp constraints on/off from the gripper commands).
  ``failure_signals(self) -> dict``: see ``TaskEnv.failure_signals``.

Action layout (``ACTION_DIM = 10``, all in ``[-1, 1]``), per arm in ``SIDES`` order:
  ``[dx, dy, dz, dyaw, grip]``: end-effector position delta in the world frame (scaled by
  ``max_delta_pos`` metres per control step), yaw delta (``max_delta_yaw`` rad per control step),
  and the gripper command in [-1, 1]. The gripper is binary with hysteresis, like a teleop rig's
  trigger: a command above ``+grip_deadband`` closes it, one below ``-grip_deadband`` opens it, and
  anything between keeps its state (so a policy's hesitant sample near 0 neither drops a held part
  nor half-opens the fingers).
State layout (``STATE_DIM = 12``), per arm: ``[x, y, z, sin(yaw), cos(yaw), opening]`` with the
  opening in ``[0, 1]`` (1 = fully open), measured on the simulated gripper (not the mocap target).
"""

from __future__ import annotations

import abc
import dataclasses
import time

import dm_env
from dm_env import specs
import mujoco
import numpy as np

SIDES = ('left', 'right')
CAMERAS = ('top', 'wrist_left', 'wrist_right')
ARM_ACTION_DIM = 5
ACTION_DIM = 2 * ARM_ACTION_DIM
ARM_STATE_DIM = 6
STATE_DIM = 2 * ARM_STATE_DIM
ACTION_NAMES = tuple(f'{s}_{n}' for s in SIDES for n in ('dx', 'dy', 'dz', 'dyaw', 'grip'))
FINGER_TRAVEL = 0.04  # Metres each finger slides from closed to open.


def gripper_xml(side: str, pos, collides: bool = True) -> str:
  """MJCF of one gripper: a mocap target and a free palm welded to it, with two slide fingers.

  The palm points down; the grasp point (site ``{side}_grasp``) is between the fingertips. The wrist
  camera ``wrist_{side}`` rides on the palm and looks down past the fingers.
  """
  c = '' if collides else ' contype="0" conaffinity="0"'
  x, y, z = pos
  t = FINGER_TRAVEL
  return f"""
    <body name="{side}_mocap" mocap="true" pos="{x} {y} {z}"/>
    <body name="{side}_palm" pos="{x} {y} {z}">
      <freejoint name="{side}_free"/>
      <inertial pos="0 0 0" mass="0.5" diaginertia="0.002 0.002 0.002"/>
      <geom name="{side}_palm" type="box" size="0.05 0.02 0.015" pos="0 0 0.03"
            rgba="0.25 0.27 0.3 1"{c}/>
      <geom name="{side}_wrist" type="cylinder" size="0.018 0.04" pos="0 0 0.085"
            rgba="0.35 0.37 0.4 1" contype="0" conaffinity="0"/>
      <site name="{side}_grasp" pos="0 0 -0.035" size="0.006" rgba="1 0.6 0 0.6" group="5"/>
      <camera name="wrist_{side}" pos="0 -0.08 0.025" xyaxes="1 0 0 0 0.68 0.73" fovy="80"/>
      <body name="{side}_finger_a" pos="0 0 0">
        <joint name="{side}_finger_a" type="slide" axis="1 0 0" range="0 {t}" damping="2"/>
        <geom type="box" size="0.006 0.012 0.03" pos="0.006 0 -0.015" rgba="0.8 0.5 0.2 1"
              friction="1.5 0.01 0.001" mass="0.05"{c}/>
      </body>
      <body name="{side}_finger_b" pos="0 0 0">
        <joint name="{side}_finger_b" type="slide" axis="-1 0 0" range="0 {t}" damping="2"/>
        <geom type="box" size="0.006 0.012 0.03" pos="-0.006 0 -0.015" rgba="0.8 0.5 0.2 1"
              friction="1.5 0.01 0.001" mass="0.05"{c}/>
      </body>
    </body>"""


def gripper_equality_xml(side: str) -> str:
  return (f'<weld name="{side}_mocap_weld" body1="{side}_mocap" body2="{side}_palm" '
          'solref="0.01 1" solimp="0.95 0.99 0.001"/>'
          f'<joint joint1="{side}_finger_a" joint2="{side}_finger_b" polycoef="0 1 0 0 0"/>')


def gripper_actuator_xml(side: str) -> str:
  return (f'<position name="{side}_fingers" joint="{side}_finger_a" kp="200" '
          f'ctrlrange="0 {FINGER_TRAVEL}" forcerange="-20 20"/>')


def yaw_quat(yaw: float) -> np.ndarray:
  """Quaternion [4] (w, x, y, z) of a rotation by ``yaw`` about the world z axis."""
  return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def mocap_path(p0: np.ndarray, p1: np.ndarray, y0: np.ndarray, y1: np.ndarray, n: int,
               offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mocap targets of the ``n`` substeps of one control step for G grippers, each moving
  linearly from the grasp point ``p0`` [G, 3] at yaw ``y0`` [G] to ``p1`` [G, 3] at ``y1`` [G];
  the palm sits at ``offset`` [3] from the grasp point. Returns positions [n, G, 3] and
  quaternions [n, G, 4]; substep k (1..n) is at fraction f = k / n, computed with the same float
  operations as ``p0 + f * (p1 - p0) - offset`` and ``yaw_quat(y0 + f * (y1 - y0))`` one
  substep and one gripper at a time (bit for bit)."""
  f = np.arange(1, n + 1, dtype=np.float64) / n
  pos = p0 + f[:, None, None] * (p1 - p0) - offset
  yaw = y0 + f[:, None] * (y1 - y0)
  quat = np.zeros(yaw.shape + (4,))
  quat[..., 0] = np.cos(yaw / 2)
  quat[..., 3] = np.sin(yaw / 2)
  return pos, quat


def _clip(x, lo, hi):
  """``np.clip(x, lo, hi)`` (the same values, NaN included) without its Python-level dispatch."""
  return np.minimum(np.maximum(x, lo), hi)


def quat_yaw(q: np.ndarray) -> float:
  """Yaw (rad) of a quaternion [4] (w, x, y, z), assuming rotation mostly about z."""
  w, x, y, z = q
  return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def gripper_state(closed: bool, grip: float, deadband: float) -> bool:
  """The binary gripper after command ``grip``: closes above +deadband, opens below -deadband."""
  return bool(grip > deadband or (closed and grip >= -deadband))


def finger_target(closed: bool) -> float:
  """Finger actuator target (metres of opening) of a closed or open gripper."""
  return 0.0 if closed else FINGER_TRAVEL


class Substeps:
  """Runs the physics substeps of one control step in C (``mujoco.rollout``), with the mocap
  targets of each substep given: the same ``mj_step`` calls, in the same order, on the same
  ``MjData`` as a Python loop that sets ``mocap_pos``/``mocap_quat`` and calls ``mj_step`` per
  substep (bit for bit: tests/test_rollout_speed_invariance.py), without its per-substep Python.

  ``ctrl``, ``qfrc_applied``, ``xfrc_applied`` and ``eq_active`` keep the values they have when
  ``run`` is called, as in the Python loop.
  """

  _HELD = int(mujoco.mjtState.mjSTATE_CTRL | mujoco.mjtState.mjSTATE_QFRC_APPLIED
              | mujoco.mjtState.mjSTATE_XFRC_APPLIED | mujoco.mjtState.mjSTATE_EQ_ACTIVE)
  # A control row: the held inputs, then mocap_pos, then mocap_quat (mjtState order).
  _CONTROL = _HELD | int(mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT)
  _STATE = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
  _runner = None  # One mujoco.rollout.Rollout per process (no threads), made on first use.

  def __init__(self, model: mujoco.MjModel, n: int):
    self.n = int(n)
    self._mocap = mujoco.mj_stateSize(model, self._HELD)  # Offset of mocap_pos in a row.
    self._control = np.zeros((1, self.n, mujoco.mj_stateSize(model, self._CONTROL)))
    self._initial = np.zeros((1, mujoco.mj_stateSize(model, self._STATE)))
    self._warmstart = np.zeros((1, model.nv))
    self._states = np.zeros((1, self.n, self._initial.shape[1]))
    self._sensors = np.zeros((1, self.n, model.nsensordata))

  def run(self, model: mujoco.MjModel, data: mujoco.MjData, pos: np.ndarray,
          quat: np.ndarray) -> bool:
    """``n`` substeps with mocap targets ``pos`` [n, nmocap, 3] and ``quat`` [n, nmocap, 4];
    True if MuJoCo flagged bad accelerations (the simulation diverged)."""
    if Substeps._runner is None:
      from mujoco import rollout as mj_rollout
      Substeps._runner = mj_rollout.Rollout(nthread=0)
    control, m = self._control[0], self._mocap
    mujoco.mj_getState(model, data, control[0], self._CONTROL)
    control[1:] = control[0]
    control[:, m:m + pos[0].size] = pos.reshape(self.n, -1)
    control[:, m + pos[0].size:] = quat.reshape(self.n, -1)
    mujoco.mj_getState(model, data, self._initial[0], self._STATE)
    self._warmstart[0] = data.qacc_warmstart
    bad_before = data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number
    Substeps._runner.rollout([model], [data], self._initial, self._control,
                             control_spec=self._CONTROL, skip_checks=True, nstep=self.n,
                             initial_warmstart=self._warmstart, state=self._states,
                             sensordata=self._sensors, chunk_size=1)
    return data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > bad_before


@dataclasses.dataclass
class _ArmCommand:
  pos: np.ndarray  # [3] mocap target at the end of the control step.
  yaw: float
  grip: float  # Gripper command in [-1, 1], as last sent.
  closed: bool = False  # The gripper's state after the deadband (see ``TaskEnv.grip_deadband``).


class Expert(abc.ABC):
  """A scripted controller from privileged state: ``act(env) -> action [ACTION_DIM]``.

  Closed-loop: it reads the environment's current state on every call, so it can take over from
  any state (the simulated operator relies on this). ``reset()`` forgets per-episode memory.
  """

  @abc.abstractmethod
  def act(self, env: 'TaskEnv') -> np.ndarray:
    ...

  def reset(self) -> None:
    pass


class TaskEnv(dm_env.Environment, abc.ABC):
  """A simulated bimanual task. See the module docstring for what a subclass provides."""

  task_name: str = ''
  instruction: str = ''
  default_time_limit: int = 100
  timestep: float = 0.002
  control_hz: float = 10.0
  success_hold: int = 3
  max_delta_pos: float = 0.03
  max_delta_yaw: float = 0.2
  workspace = ((-0.45, -0.45, 0.01), (0.45, 0.45, 0.5))
  home = {'left': (-0.2, -0.25, 0.25), 'right': (0.2, -0.25, 0.25)}
  gripper_collides: bool = True
  # Half width of the gripper command's dead band: |grip| must exceed it to change the gripper.
  grip_deadband: float = 0.5
  option_xml: str = 'integrator="implicitfast" solver="Newton" iterations="50"'

  def __init__(self, seed: int, image_size: int = 64, cameras=CAMERAS, time_limit=None):
    unknown = set(cameras) - set(CAMERAS)
    if unknown:
      raise ValueError(f'{type(self).__name__}: unknown cameras {sorted(unknown)}; '
                       f'choose from {CAMERAS}.')
    self.seed = int(seed)
    self.image_size = int(image_size)
    self.cameras = tuple(cameras)
    self.time_limit = int(time_limit or self.default_time_limit)
    self.n_substeps = max(1, int(round(1.0 / (self.control_hz * self.timestep))))
    self._rng = np.random.default_rng(self.seed)
    self.model = mujoco.MjModel.from_xml_string(self.build_xml())
    self.data = mujoco.MjData(self.model)
    self._renderers = {}
    self._substeps = Substeps(self.model, self.n_substeps)
    # Wall time spent rendering observations and in the substep loop (for the benchmarks).
    self.render_seconds = 0.0
    self.physics_seconds = 0.0
    self._ids()
    mujoco.mj_forward(self.model, self.data)
    self._privileged_size = int(np.asarray(self._privileged()).shape[0])
    self.step_count = 0
    self.episode_seed = None
    self._hold = 0
    self._needs_reset = True
    self._cmd = {s: _ArmCommand(np.array(self.home[s], float), 0.0, -1.0) for s in SIDES}
    self.last_action = np.zeros(ACTION_DIM, np.float32)

  # ----- scene -----------------------------------------------------------------------------

  @abc.abstractmethod
  def _task_xml(self) -> dict:
    ...

  def build_xml(self) -> str:
    """The whole MJCF: table, lights, top camera, both grippers, and the task's fragments."""
    t = self._task_xml()
    size = max(self.image_size, 512)
    grippers = ''.join(gripper_xml(s, self.home[s], self.gripper_collides) for s in SIDES)
    return f"""
<mujoco model="habc_{self.task_name}">
  <option timestep="{self.timestep}" {self.option_xml}/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <extension>{t.get('extension', '')}</extension>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.45 0.35" rgb2="0.5 0.4 0.3"
             width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="6 6"/>
    {t.get('assets', '')}
  </asset>
  <worldbody>
    <light pos="0 -0.3 1.5" dir="0 0.2 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="table" type="plane" size="1 1 0.02" material="table"/>
    <camera name="top" pos="0 -0.52 0.62" xyaxes="1 0 0 0 0.77 0.64" fovy="60"/>
    {grippers}
    {t.get('worldbody', '')}
  </worldbody>
  <equality>
    {''.join(gripper_equality_xml(s) for s in SIDES)}
    {t.get('equality', '')}
  </equality>
  <contact>{t.get('contact', '')}</contact>
  <actuator>{''.join(gripper_actuator_xml(s) for s in SIDES)}</actuator>
</mujoco>"""

  def _ids(self) -> None:
    m = self.model
    self._mocap = {s: m.body_mocapid[m.body(f'{s}_mocap').id] for s in SIDES}
    self._palm = {s: m.body(f'{s}_palm').id for s in SIDES}
    self._grasp_site = {s: m.site(f'{s}_grasp').id for s in SIDES}
    self._free_qpos = {s: m.jnt_qposadr[m.joint(f'{s}_free').id] for s in SIDES}
    self._free_qvel = {s: m.jnt_dofadr[m.joint(f'{s}_free').id] for s in SIDES}
    self._finger_qpos = {s: m.jnt_qposadr[m.joint(f'{s}_finger_a').id] for s in SIDES}
    self._finger_qpos_b = {s: m.jnt_qposadr[m.joint(f'{s}_finger_b').id] for s in SIDES}
    self._actuator = {s: m.actuator(f'{s}_fingers').id for s in SIDES}

  # ----- grippers --------------------------------------------------------------------------

  def set_gripper(self, side: str, pos, yaw: float = 0.0, grip: float = -1.0) -> None:
    """Teleports a gripper (mocap target and palm) to ``pos`` [3] with ``yaw``; sets the command."""
    pos = np.asarray(pos, float)
    q = yaw_quat(yaw)
    self.data.mocap_quat[self._mocap[side]] = q
    a = self._free_qpos[side]
    self.data.qpos[a:a + 3] = pos - self._grasp_offset()
    self.data.qpos[a + 3:a + 7] = q
    self.data.qvel[self._free_qvel[side]:self._free_qvel[side] + 6] = 0
    closed = bool(grip > 0)
    opening = finger_target(closed)
    self.data.qpos[self._finger_qpos[side]] = opening
    self.data.qpos[self._finger_qpos_b[side]] = opening
    self.data.ctrl[self._actuator[side]] = opening
    self._cmd[side] = _ArmCommand(pos.copy(), float(yaw), float(grip), closed)
    self.data.mocap_pos[self._mocap[side]] = pos - self._grasp_offset()
    mujoco.mj_forward(self.model, self.data)

  @staticmethod
  def _grasp_offset() -> np.ndarray:
    # The command and the state refer to the grasp point; the palm body sits above it.
    return np.array([0.0, 0.0, -0.035])

  def ee_pos(self, side: str) -> np.ndarray:
    """Grasp-point position [3] of the simulated gripper (world frame, metres)."""
    return self.data.site_xpos[self._grasp_site[side]].copy()

  def ee_yaw(self, side: str) -> float:
    return quat_yaw(self.data.xquat[self._palm[side]])

  def gripper_opening(self, side: str) -> float:
    """Finger opening in [0, 1], 1 = fully open."""
    return float(np.clip(self.data.qpos[self._finger_qpos[side]] / FINGER_TRAVEL, 0, 1))

  def command(self, side: str) -> _ArmCommand:
    """The current commanded target of one arm (grasp point, yaw, gripper command)."""
    return self._cmd[side]

  def gripper_closing(self, side: str) -> bool:
    """Whether the gripper is closed/closing (its state after the dead band)."""
    return self._cmd[side].closed

  def action_for(self, targets: dict) -> np.ndarray:
    """Action [ACTION_DIM] that moves each arm toward ``targets[side] = (pos [3], yaw, grip)``.

    The step is clipped to the action limits (one control step's worth); used by the experts.
    """
    a = np.zeros(ACTION_DIM, np.float32)
    for i, s in enumerate(SIDES):
      pos, yaw, grip = targets[s]
      cmd = self._cmd[s]
      d = (np.asarray(pos, float) - cmd.pos) / self.max_delta_pos
      dy = np.angle(np.exp(1j * (yaw - cmd.yaw))) / self.max_delta_yaw
      a[i * ARM_ACTION_DIM:(i + 1) * ARM_ACTION_DIM] = np.clip([*d, dy, grip], -1, 1)
    return a

  # ----- specs -----------------------------------------------------------------------------

  def observation_spec(self):
    obs = {c: specs.Array((self.image_size, self.image_size, 3), np.uint8, name=c)
           for c in self.cameras}
    obs['state'] = specs.Array((STATE_DIM,), np.float32, name='state')
    obs['privileged'] = specs.Array((self._privileged_size,), np.float32, name='privileged')
    return obs

  def action_spec(self):
    return specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0, name='action')

  # ----- episode ---------------------------------------------------------------------------

  @abc.abstractmethod
  def _initialize_episode(self, rng: np.random.Generator) -> None:
    ...

  @abc.abstractmethod
  def _privileged(self) -> np.ndarray:
    ...

  @abc.abstractmethod
  def success(self) -> bool:
    ...

  @abc.abstractmethod
  def make_expert(self, seed: int) -> Expert:
    ...

  def _after_control(self, action: np.ndarray) -> None:
    pass

  def failure_signals(self) -> dict:
    """Signals the simulated operator watches. Keys every task returns:

    ``progress`` (float in [0, 1], task completion measured from privileged state; the operator
    calls a run of steps without progress a stall), ``lost`` (bool: an object dropped or out of
    reach, visibly heading to failure), ``time_left`` (fraction of the time limit left).
    """
    return {'progress': 0.0, 'lost': False, 'time_left': self.time_left_fraction()}

  def time_left_fraction(self) -> float:
    return max(0.0, 1.0 - self.step_count / self.time_limit)

  def reset(self) -> dm_env.TimeStep:
    """New episode; its initial conditions come from the constructor seed's stream."""
    self.episode_seed = int(self._rng.integers(2**31 - 1))
    mujoco.mj_resetData(self.model, self.data)
    for s in SIDES:
      self.set_gripper(s, self.home[s])
    self._initialize_episode(np.random.default_rng(self.episode_seed))
    mujoco.mj_forward(self.model, self.data)
    self.step_count = 0
    self._hold = 0
    self._needs_reset = False
    self.last_action = np.zeros(ACTION_DIM, np.float32)
    return dm_env.restart(self._observation())

  def apply_action(self, action) -> None:
    """Turns an action [ACTION_DIM] into new mocap/gripper targets and runs one control step."""
    # _clip (np.minimum of np.maximum, as np.clip computes it) skips np.clip's Python overhead.
    a = _clip(np.asarray(action, np.float32).reshape(ACTION_DIM), -1.0, 1.0)
    if not np.isfinite(a).all():
      raise ValueError(f'{self.task_name}: non-finite action {a} at step {self.step_count}.')
    self.last_action = a
    lo, hi = np.asarray(self.workspace[0]), np.asarray(self.workspace[1])
    start = {}
    for i, s in enumerate(SIDES):
      d = a[i * ARM_ACTION_DIM:(i + 1) * ARM_ACTION_DIM]
      cmd = self._cmd[s]
      start[s] = (cmd.pos.copy(), cmd.yaw)
      cmd.pos = _clip(cmd.pos + d[:3] * self.max_delta_pos, lo, hi)
      cmd.yaw = float(_clip(cmd.yaw + d[3] * self.max_delta_yaw, -np.pi / 2, np.pi / 2))
      cmd.grip = float(d[4])
      cmd.closed = gripper_state(cmd.closed, cmd.grip, self.grip_deadband)
      self.data.ctrl[self._actuator[s]] = finger_target(cmd.closed)
    self._after_control(a)
    # Mocap targets move smoothly through the control step: every substep's targets computed at
    # once (the same float operations as one substep at a time), then the substeps run in C.
    pos = np.repeat(self.data.mocap_pos[None], self.n_substeps, axis=0)
    quat = np.repeat(self.data.mocap_quat[None], self.n_substeps, axis=0)
    ids = [self._mocap[s] for s in SIDES]
    pos[:, ids], quat[:, ids] = mocap_path(
        np.array([start[s][0] for s in SIDES]), np.array([self._cmd[s].pos for s in SIDES]),
        np.array([start[s][1] for s in SIDES]), np.array([self._cmd[s].yaw for s in SIDES]),
        self.n_substeps, self._grasp_offset())
    begin = time.perf_counter()
    diverged = self._substeps.run(self.model, self.data, pos, quat)
    self.physics_seconds += time.perf_counter() - begin
    if diverged or not np.all(np.isfinite(self.data.qacc)):
      raise FloatingPointError(f'{self.task_name}: simulation diverged at step {self.step_count} '
                               f'(episode seed {self.episode_seed}).')

  def step(self, action) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    self.apply_action(action)
    self.step_count += 1
    self._hold = self._hold + 1 if self.success() else 0
    obs = self._observation()
    if self._hold >= self.success_hold:
      self._needs_reset = True
      return dm_env.termination(1.0, obs)
    if self.step_count >= self.time_limit:
      self._needs_reset = True
      return dm_env.truncation(0.0, obs, discount=1.0)
    return dm_env.transition(0.0, obs)

  # ----- observations ----------------------------------------------------------------------

  def state(self) -> np.ndarray:
    """Proprioception [STATE_DIM] (see the module docstring for the layout)."""
    # The same float64 operations as ``ee_pos``, ``ee_yaw`` and ``gripper_opening`` per side,
    # with Python floats instead of numpy scalars (cheaper, the same values).
    out = []
    site_xpos, xquat, qpos = self.data.site_xpos, self.data.xquat, self.data.qpos
    for s in SIDES:
      w, x, y, z = xquat[self._palm[s]].tolist()
      yaw = float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
      opening = qpos[self._finger_qpos[s]] / FINGER_TRAVEL
      out += site_xpos[self._grasp_site[s]].tolist()
      out += [np.sin(yaw), np.cos(yaw), min(max(float(opening), 0.0), 1.0)]
    return np.asarray(out, np.float32)

  def privileged(self) -> np.ndarray:
    return np.asarray(self._privileged(), np.float32)

  def render(self, camera: str, size: int | None = None) -> np.ndarray:
    """One RGB frame uint8 [size, size, 3] of ``camera`` (default size: ``image_size``)."""
    size = int(size or self.image_size)
    r = self._renderers.get(size)
    if r is None:
      r = self._renderers[size] = mujoco.Renderer(self.model, size, size)
    r.update_scene(self.data, camera=camera)
    return r.render()

  def _observation(self) -> dict:
    if self.cameras:
      start = time.perf_counter()
      obs = {c: self.render(c) for c in self.cameras}
      self.render_seconds += time.perf_counter() - start
    else:
      obs = {}
    obs['state'] = self.state()
    obs['privileged'] = self.privileged()
    return obs

  def close(self) -> None:
    for r in self._renderers.values():
      r.close()
    self._renderers = {}
