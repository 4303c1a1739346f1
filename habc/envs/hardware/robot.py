"""The bimanual station as a dm-robotics (moma) task: two arms, grippers, sensors, effectors.

``build_station(config, cameras, image_size) -> Station`` returns a ``SubTaskEnvironment`` whose
agent-facing action is moma's own: per arm a Cartesian twist (6, world orientation, about the
tool centre point) and a gripper speed (1), routed to the effectors by an agentflow
``CompositeActionSpace``; its observations are moma's sensor readings plus ``state`` (added by an
agentflow preprocessor, in the project's layout) and the cameras renamed to the project's names.

Hardware interface (what a real station replaces, see docs/hardware.md):
  * ``_sim_arm``: the arm and gripper models and the *joint-velocity* and *gripper* effectors. The
    MJCF models stay (moma uses them as the kinematic model for the Cartesian QP controller); the
    two MuJoCo actuator effectors become the station's drivers (an effector with the same
    ``action_spec``/``set_control``), and the sensors read the hardware.
  * ``_camera_sensors``: MuJoCo cameras become the station's camera drivers (moma ``Sensor``s
    that emit ``{camera}_rgb_img``).
  * ``_base_env``: with a real robot, moma's ``ComposerEnvironmentForRealMoMaSetup`` (no physics
    stepping) instead of a simulated ``composer.Environment``.
  * reset: the simulated arms are put at the home joints instantly (``JointsInitializer``); a real
    station drives them there with a moma reset option (``SubtaskEnvBuilder.set_reset_option``).
Everything else (Cartesian effectors, action space, preprocessors, safety) is shared.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from dm_control import composer
from dm_robotics import agentflow as af
from dm_robotics.agentflow.preprocessors import observation_transforms
from dm_robotics.geometry import geometry
from dm_robotics.moma import action_spaces
from dm_robotics.moma import base_task
from dm_robotics.moma import entity_initializer
from dm_robotics.moma import robot as moma_robot
from dm_robotics.moma import subtask_env_builder
from dm_robotics.moma.effectors import arm_effector
from dm_robotics.moma.effectors import cartesian_6d_velocity_effector as cartesian
from dm_robotics.moma.effectors import default_gripper_effector
from dm_robotics.moma.models.arenas import empty
from dm_robotics.moma.models.end_effectors.robot_hands import robotiq_2f85
from dm_robotics.moma.models.robots.robot_arms import sawyer
from dm_robotics.moma.sensors import camera_sensor
from dm_robotics.moma.sensors import robot_arm_sensor
from dm_robotics.moma.sensors import robot_tcp_sensor
from dm_robotics.moma.sensors import robotiq_gripper_sensor
from dm_robotics.moma.utils import ik_solver

from habc.envs.base import CAMERAS, SIDES, STATE_DIM
from habc.envs.hardware import actions

# The simulated tasks' top camera (habc.envs.base.TaskEnv.build_xml), so views roughly agree.
_TOP_CAMERA = {'pos': (0.0, -0.62, 0.78), 'xyaxes': (1, 0, 0, 0, 0.74, 0.67)}
# Wrist camera in the Robotiq base frame (z points from the wrist toward the fingertips): beside
# the gripper, looking along the fingers.
_WRIST_CAMERA = {'pos': (0.0, -0.09, 0.03), 'xyaxes': (1, 0, 0, 0, -0.8, 0.6)}


@dataclasses.dataclass
class Arm:
  """One arm of the station and the handles the environment needs to stop it."""
  side: str
  robot: moma_robot.StandardRobot
  joint_effector: object  # moma Effector on the arm's joint velocities.
  gripper_effector: object  # moma Effector on the gripper speed.
  home_joints: np.ndarray  # [7]


@dataclasses.dataclass
class Station:
  """A built station: the moma environment and its arms."""
  env: object  # dm_robotics.moma.subtask_env.SubTaskEnvironment
  arms: dict  # side -> Arm
  cameras: tuple

  def stop(self) -> dict:
    """Sends zero joint velocities and zero gripper speeds straight to the joint and gripper
    effectors (bypassing the Cartesian QP), lets one control period pass, and returns the raw
    sensor readings (a dict keyed like the moma observations, without ``state``)."""
    physics = self.env.physics
    for arm in self.arms.values():
      arm.joint_effector.set_control(physics, np.zeros(len(arm.home_joints), np.float32))
      arm.gripper_effector.set_control(physics, np.zeros(1, np.float32))
    base = self.env.base_env
    return dict(base.step(np.zeros_like(base.action_spec().generate_value())).observation)

  def close(self) -> None:
    """Closes the task (moma: sensors and effectors), then the composer environment (physics and
    its rendering contexts, so that none is left to be freed at interpreter exit)."""
    self.env.close()
    self.env.base_env.close()


def obs_keys(side: str) -> dict:
  """Names of the moma observations of one arm that the project layout is built from."""
  return {'pos': f'{side}_tcp_pos', 'quat': f'{side}_tcp_quat', 'closure': f'{side}_gripper_pos',
          'joint_pos': f'{side}_joint_pos', 'joint_vel': f'{side}_joint_vel'}


def arm_states(observation: dict) -> dict:
  """side -> actions.ArmState from a moma observation dict."""
  out = {}
  for side in SIDES:
    k = obs_keys(side)
    out[side] = actions.ArmState(pos=np.asarray(observation[k['pos']], float),
                                 quat=np.asarray(observation[k['quat']], float),
                                 closure=float(np.asarray(observation[k['closure']]).ravel()[0]))
  return out


def state_vector(observation: dict, down_quat: np.ndarray) -> np.ndarray:
  """The project's ``state`` [STATE_DIM] float32 from moma sensor readings.

  Per arm in SIDES order: grasp-point position [3], sin and cos of the tool yaw, gripper opening
  in [0, 1] (1 = fully open), as in ``habc.envs.base.TaskEnv.state``.
  """
  out = []
  for side in SIDES:
    k = obs_keys(side)
    quat = np.asarray(observation[k['quat']], float)
    yaw = actions.tool_yaw(quat, down_quat) if np.any(quat) else 0.0
    closure = float(np.asarray(observation[k['closure']]).ravel()[0])
    opening = 1.0 - np.clip(closure / actions.GRIPPER_CLOSED, 0.0, 1.0)
    out += [*np.asarray(observation[k['pos']], float), np.sin(yaw), np.cos(yaw), opening]
  state = np.asarray(out, np.float32)
  assert state.shape == (STATE_DIM,), state.shape
  return state


# ----- hardware interface: these builders are what a real station replaces ----------------------

def _sim_arm(side: str, c):
  """Simulated Sawyer + Robotiq 2F-85 with MuJoCo joint-velocity and gripper effectors."""
  arm = sawyer.Sawyer(name=side)
  gripper = robotiq_2f85.Robotiq2F85(name=f'{side}_gripper')
  moma_robot.standard_compose(arm=arm, gripper=gripper)
  joint_effector = arm_effector.ArmEffector(arm=arm, action_range_override=None, robot_name=side)
  gripper_effector = default_gripper_effector.DefaultGripperEffector(gripper, side)
  sensors = [
      robot_arm_sensor.RobotArmSensor(arm=arm, name=side, have_torque_sensors=False),
      robot_tcp_sensor.RobotTCPSensor(gripper=gripper, name=side),
      robotiq_gripper_sensor.RobotiqGripperSensor(gripper=gripper, name=f'{side}_gripper'),
  ]
  return arm, gripper, joint_effector, gripper_effector, sensors


def _camera_sensors(arena, grippers: dict, cameras, image_size: int, c) -> list:
  """MuJoCo cameras ``top`` (arena) and ``wrist_<side>`` (on each gripper) as moma sensors."""
  if not cameras:
    return []
  identifiers, configs = {}, {}
  for name in cameras:
    if name == 'top':
      el = arena.mjcf_model.worldbody.add('camera', name='top', fovy=c.camera_fovy, **_TOP_CAMERA)
      fovy = c.camera_fovy
    else:
      side = name.split('_', 1)[1]
      body = grippers[side].mjcf_model.find('body', 'base')
      el = body.add('camera', name=name, fovy=c.wrist_camera_fovy, **_WRIST_CAMERA)
      fovy = c.wrist_camera_fovy
    identifiers[name] = el.full_identifier
    configs[name] = camera_sensor.CameraConfig(width=image_size, height=image_size, fovy=fovy,
                                               has_rgb=True, render_shadows=False)
  sensors = camera_sensor.build_camera_sensors(configs, arena.mjcf_model, identifiers)
  return [s for s in sensors if isinstance(s, camera_sensor.CameraImageSensor)]


class _Builder(subtask_env_builder.SubtaskEnvBuilder):
  """moma's builder, with a base environment that compiles the MJCF once, not every episode."""

  def build_base_env(self, real_env: bool = False) -> composer.Environment:
    if self._base_env is None:
      if real_env:
        return super().build_base_env(real_env=True)
      self._base_env = composer.Environment(
          self._task, strip_singleton_obs_buffer_dim=True, recompile_mjcf_every_episode=False,
          raise_exception_on_physics_error=True)
    return self._base_env


# -----------------------------------------------------------------------------------------------

def _arena(c):
  arena = empty.Arena('station')
  model = arena.mjcf_model
  model.option.timestep = float(c.physics_timestep)
  model.visual.quality.shadowsize = 0
  model.visual.quality.offsamples = 0
  return arena


# (side, base pose, home, down quaternion) -> home joints: the IK (~1 s per arm) runs once per
# process for a given geometry.
_HOME_JOINTS_CACHE = {}


def _home_joints(arena, robot, home, down_quat, base_pose) -> np.ndarray:
  """Arm joint angles [7] that put the tool point at ``home`` [3], pointing down (IK, once)."""
  key = (robot.name, tuple(np.round(base_pose, 9)), tuple(np.round(home, 9)),
         tuple(np.round(down_quat, 9)))
  if key not in _HOME_JOINTS_CACHE:
    solver = ik_solver.IkSolver(arena.mjcf_model, robot.arm.joints,
                                robot.gripper.tool_center_point)
    q = solver.solve(ref_pose=geometry.Pose(np.asarray(home, float), np.asarray(down_quat, float)),
                     random_state=np.random.RandomState(0), stop_on_first_successful_attempt=True)
    if q is None:
      raise ValueError(f'config.hardware.home.{robot.name} = {tuple(home)} is out of reach of '
                       f'the arm based at config.hardware.base_pose.{robot.name}; move one of '
                       'them.')
    _HOME_JOINTS_CACHE[key] = np.asarray(q, float)
  return _HOME_JOINTS_CACHE[key].copy()


def build_station(c, cameras=(), image_size: int = 64) -> Station:
  """Builds the station from the ``hardware`` config section ``c``.

  Args:
    c: the ``hardware`` section (``habc.envs.hardware.config``).
    cameras: camera names among ``habc.envs.base.CAMERAS`` to render; ``()`` for state only.
    image_size: side of the square camera images (pixels).
  """
  unknown = set(cameras) - set(CAMERAS)
  if unknown:
    raise ValueError(f'build_station: unknown cameras {sorted(unknown)}; choose from {CAMERAS}.')
  if c.rig != 'moma_sim':
    raise NotImplementedError(
        f'config.hardware.rig = {c.rig!r}: only the simulated rig (moma_sim) is built here. A real '
        'station replaces the builders marked "hardware interface" in habc/envs/hardware/robot.py '
        '(docs/hardware.md).')
  arena = _arena(c)
  down_quat = np.asarray(c.down_quat, float)
  parts, robots, grippers = {}, [], {}
  # Active avoidance between the two arms (moma's QP keeps their collision geoms apart); the
  # geom pairs are filled in below, once both arms are in the arena and names are final.
  collisions = cartesian.CollisionParams(
      minimum_distance_from_collisions=c.min_arm_distance) if c.avoid_arm_collisions else None
  for side in SIDES:
    arm, gripper, joint_effector, gripper_effector, sensors = _sim_arm(side, c)
    twist_effector = cartesian.Cartesian6dVelocityEffector(
        robot_name=side, joint_velocity_effector=joint_effector,
        model_params=cartesian.ModelParams(element=gripper.tool_center_point, joints=arm.joints),
        control_params=cartesian.ControlParams(
            control_timestep_seconds=1.0 / c.control_hz, max_lin_vel=c.max_lin_vel,
            max_rot_vel=c.max_rot_vel, nullspace_gain=c.nullspace_gain),
        collision_params=collisions,
        # The model is compiled once (no per-episode recompilation, see _Builder), so the QP can
        # use the physics' own MjModel instead of compiling another copy.
        compile_mjcf=False)
    robot = moma_robot.StandardRobot(
        arm=arm, arm_base_site_name='pedestal_attachment', gripper=gripper,
        robot_sensors=sensors, arm_effector=twist_effector, gripper_effector=gripper_effector,
        name=side)
    arena.attach(arm)
    pose = geometry.Pose.from_poseuler(np.asarray(c.base_pose[side], float))
    robot.arm_frame.pos = pose.position
    robot.arm_frame.quat = pose.quaternion
    parts[side] = (robot, joint_effector, gripper_effector)
    robots.append(robot)
    grippers[side] = gripper
  if collisions is not None:
    geoms = {s: tuple(parts[s][0].arm.collision_geom_group
                      + parts[s][0].gripper.collision_geom_group) for s in SIDES}
    collisions.collision_pairs = [(geoms['left'], geoms['right'])]
  extra_sensors = _camera_sensors(arena, grippers, cameras, image_size, c)

  arms = {}
  for side in SIDES:
    robot, joint_effector, gripper_effector = parts[side]
    arms[side] = Arm(side, robot, joint_effector, gripper_effector,
                     _home_joints(arena, robot, c.home[side], down_quat, c.base_pose[side]))
  initializer = entity_initializer.TaskEntitiesInitializer([
      entity_initializer.JointsInitializer(arms[s].robot.position_arm_joints,
                                           _ConstantJoints(arms[s].home_joints))
      for s in SIDES])
  task = base_task.BaseTask(
      task_name='habc_station', arena=arena, robots=robots, props=[], extra_sensors=extra_sensors,
      extra_effectors=[], scene_initializer=_no_scene_change, episode_initializer=initializer,
      control_timestep=1.0 / c.control_hz)

  builder = _Builder()
  builder.set_task(task)
  base_env = builder.build_base_env()
  parent_spec = task.effectors_action_spec(physics=base_env.physics)
  spaces = []
  for side in SIDES:
    robot = arms[side].robot
    spaces.append(action_spaces.CartesianTwistActionSpace(
        af.prefix_slicer(parent_spec, robot.arm_effector.prefix)))
    spaces.append(action_spaces.GripperActionSpace(
        af.prefix_slicer(parent_spec, robot.gripper_effector.prefix)))
  builder.set_action_space(af.CompositeActionSpace(spaces))

  # Observation preprocessing into the project's layout (the raw readings stay alongside: the
  # safety rules need the full tool orientation). ``privileged`` is the environment's (zeros).
  builder.add_preprocessor(observation_transforms.AddObservation(
      'state', lambda ts: state_vector(ts.observation, down_quat)))
  if cameras:
    builder.add_preprocessor(observation_transforms.RenameObservations(
        {f'{name}_rgb_img': name for name in cameras}))
  return Station(env=builder.build(), arms=arms, cameras=tuple(cameras))


@dataclasses.dataclass(frozen=True)
class _ConstantJoints:
  """A moma joints sampler that always returns the same joint angles."""
  joints: np.ndarray

  def __call__(self, random_state, physics) -> np.ndarray:
    del random_state, physics
    return self.joints


def _no_scene_change(random_state) -> None:
  del random_state
