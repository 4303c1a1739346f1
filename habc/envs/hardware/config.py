"""The ``hardware`` config section: station-specific values of the dm-robotics path, as plain data.

Everything here is numbers, strings and tuples (no callables, no serial numbers or IP addresses):
what differs between a simulated rig and a real station is code in ``habc.envs.hardware.robot``
(the marked hardware-interface builders), not values hidden in the config.

Frames: the world frame is the simulated tasks' frame (``habc.envs.base``): the table top is
``z = 0``, the top camera looks from ``-y``; the left arm works at ``x < 0``. Lengths in metres,
angles in radians, times in seconds.
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """The ``hardware`` section with the values used against moma's simulated Sawyers."""
  c = ml_collections.ConfigDict()
  # 'moma_sim': two simulated Sawyer arms with Robotiq 2F-85 grippers (dm-robotics-moma 0.10.0).
  # A real station adds its own value and builder in habc.envs.hardware.robot (docs/hardware.md).
  c.rig = 'moma_sim'
  c.control_hz = 10.0  # Must equal the simulated tasks' control rate.
  c.physics_timestep = 0.001  # moma scenes: 2 ms gave NaN accelerations.
  # Project action scale: a normalised action of 1 means this much per control step (the same as
  # the simulated tasks, habc.envs.base.TaskEnv.max_delta_pos / max_delta_yaw).
  c.max_delta_pos = 0.03
  c.max_delta_yaw = 0.2
  # Safety limits, applied to every action (policy or operator) before it reaches the robot.
  c.max_lin_vel = 0.25  # m/s, norm of the end-effector's linear velocity.
  c.max_rot_vel = 2.0  # rad/s, norm of the end-effector's angular velocity.
  c.max_gripper_speed = 255.0  # Robotiq position units (0 open ... 255 closed) per second.
  c.yaw_limits = (-1.5707963, 1.5707963)  # End-effector yaw about world z, from the home yaw.
  # Axis-aligned workspace box per arm, [[xmin, ymin, zmin], [xmax, ymax, zmax]] (world frame).
  # The end-effector target is clipped into it; chosen inside the simulated tasks' workspace and
  # within the Sawyers' reach from the bases below.
  c.workspace = ml_collections.ConfigDict()
  c.workspace.left = ((-0.45, -0.45, 0.03), (0.15, 0.3, 0.45))
  c.workspace.right = ((-0.15, -0.45, 0.03), (0.45, 0.3, 0.45))
  # Toward a face of the box the arm covers at most this fraction of the distance left per step,
  # so it brakes before the face instead of overshooting it (the velocity loop lags ~1 step).
  c.workspace_approach_gain = 0.3
  # Arm bases in the world frame: (x, y, z, roll, pitch, yaw).
  c.base_pose = ml_collections.ConfigDict()
  c.base_pose.left = (-0.75, -0.1, 0.0, 0.0, 0.0, 0.0)
  c.base_pose.right = (0.75, -0.1, 0.0, 0.0, 0.0, 3.14159265)
  # Home (episode start) grasp-point positions, the same as the simulated tasks' ``home``.
  c.home = ml_collections.ConfigDict()
  c.home.left = (-0.2, -0.25, 0.25)
  c.home.right = (0.2, -0.25, 0.25)
  # Orientation (w, x, y, z) of the tool frame at yaw 0: pointing straight down.
  c.down_quat = (0.0, 1.0, 0.0, 0.0)
  # Cameras: field of view (degrees). The image size comes from the task's ``image_size``.
  c.camera_fovy = 55.0
  c.wrist_camera_fovy = 75.0
  # Cartesian velocity controller (moma's QP mapper): nullspace pull toward mid-range joints.
  c.nullspace_gain = 0.025
  # Active collision avoidance between the two arms in the same QP (moma CollisionParams): the
  # arms slow down rather than come closer than ``min_arm_distance`` (metres between their
  # collision geoms). The workspace boxes alone do not keep the arms' links apart.
  c.avoid_arm_collisions = True
  c.min_arm_distance = 0.05
  # The takeover and outcome source of a station run ('module:Class', built as Class(config, seed)
  # inside each environment, see habc.envs.hardware.rollout_env): what the teleop device feeds.
  c.operator = 'habc.envs.hardware:TeleopOperator'
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when the ``hardware`` section is inconsistent."""
  for side in ('left', 'right'):
    for field in ('workspace', 'base_pose', 'home'):
      if side not in c[field]:
        raise ValueError(f'config.hardware.{field} has no entry {side!r}; give one per arm '
                         "('left', 'right').")
    lo, hi = c.workspace[side]
    if len(lo) != 3 or len(hi) != 3 or any(a >= b for a, b in zip(lo, hi)):
      raise ValueError(f'config.hardware.workspace.{side} = {c.workspace[side]} is not a box '
                       '[[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max.')
    if not all(a <= h <= b for a, h, b in zip(lo, c.home[side], hi)):
      raise ValueError(f'config.hardware.home.{side} = {c.home[side]} lies outside '
                       f'config.hardware.workspace.{side} = {c.workspace[side]}.')
  if not 0 < c.workspace_approach_gain <= 1:
    raise ValueError(f'config.hardware.workspace_approach_gain = {c.workspace_approach_gain} must '
                     'be in (0, 1].')
  for field in ('control_hz', 'physics_timestep', 'max_delta_pos', 'max_delta_yaw',
                'max_lin_vel', 'max_rot_vel', 'max_gripper_speed'):
    if not c[field] > 0:
      raise ValueError(f'config.hardware.{field} = {c[field]} must be positive.')
  operator = c.get('operator', '')
  if operator and (not isinstance(operator, str) or ':' not in operator):
    raise ValueError(f'config.hardware.operator = {operator!r} must be "module:Class" (e.g. '
                     '"habc.envs.hardware:TeleopOperator"), or empty for no operator.')
  substeps = 1.0 / (c.control_hz * c.physics_timestep)
  if abs(substeps - round(substeps)) > 1e-6:
    raise ValueError(f'config.hardware: 1 / (control_hz * physics_timestep) = {substeps} must be '
                     'a whole number of physics steps per control step.')
