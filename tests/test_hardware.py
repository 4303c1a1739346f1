"""The dm-robotics hardware path against moma's simulated Sawyers (no robot attached here).

One state-only station is built per module (~4 s: the scene plus a one-off IK for the home pose)
and shared; every test starts with ``reset()``. One test builds a second station with cameras.
"""

import dataclasses

import dm_env
import numpy as np
import pytest

from habc.envs import base
from habc.envs import hardware
from habc.envs.hardware import actions
from habc.envs.hardware import config as hw_config

# moma's quaternion helpers warn about numpy's `where` without `out`; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:'where' used without 'out':UserWarning")

# Slack for the velocity controller's tracking (it lags and overshoots slightly): metres.
TRACKING_SLACK = 0.004


@pytest.fixture(scope='module')
def env():
  e = hardware.make(None, cameras=(), time_limit=50, operator=hardware.TeleopOperator())
  yield e
  e.close()


def _positions(ts):
  s = ts.observation['state']
  return {side: s[i * base.ARM_STATE_DIM:i * base.ARM_STATE_DIM + 3].astype(float)
          for i, side in enumerate(base.SIDES)}


def _action(**arms):
  """Project action [ACTION_DIM] from per-side 5-vectors, e.g. _action(left=[0, 0, 1, 0, -1])."""
  a = np.zeros(base.ACTION_DIM, np.float32)
  a[base.ARM_ACTION_DIM - 1::base.ARM_ACTION_DIM] = -1.0  # Grippers open unless given.
  for i, side in enumerate(base.SIDES):
    if side in arms:
      a[i * base.ARM_ACTION_DIM:(i + 1) * base.ARM_ACTION_DIM] = arms[side]
  return a


class _Probe(base.TaskEnv):
  """The smallest simulated task: the reference for the observation/action layout."""
  task_name = 'probe'
  instruction = 'do nothing'

  def _task_xml(self):
    return {}

  def _initialize_episode(self, rng):
    pass

  def _privileged(self):
    return np.zeros(0)

  def success(self):
    return False

  def make_expert(self, seed):
    raise NotImplementedError


# ----- pure safety rules (no robot) -----------------------------------------------------------

def test_safe_arm_command_limits_speed_workspace_and_yaw():
  c = hw_config.default_config()
  limits = actions.Limits.from_config(c)
  lo, hi = limits.workspace['left']
  state = actions.ArmState(pos=np.array(c.home.left), quat=np.array(c.down_quat), closure=0.0)
  cmd = actions.safe_arm_command(np.array([1e6, -1e6, 1e6, 1e6, 5.0]), state, 0.0, lo, hi,
                                 limits)
  assert cmd.clipped
  assert np.linalg.norm(cmd.delta_pos) <= limits.max_step + 1e-12
  assert cmd.grip == 1.0
  assert abs(cmd.target_yaw) <= limits.max_rot_vel / limits.control_hz + 1e-12
  # Near a face the arm brakes: a fixed fraction of the distance left per step, never past it.
  near_top = dataclasses.replace(state, pos=np.array([-0.2, -0.25, hi[2] - 0.005]))
  cmd = actions.safe_arm_command(np.array([0, 0, 1, 0, 0]), near_top, 0.0, lo, hi, limits)
  assert cmd.clipped
  assert cmd.delta_pos[2] == pytest.approx(0.005 * c.workspace_approach_gain)
  # An arm already outside the box is brought back toward it, no faster than the speed limit.
  outside = dataclasses.replace(state, pos=np.array([-0.2, -0.25, hi[2] + 0.1]))
  cmd = actions.safe_arm_command(np.zeros(5), outside, 0.0, lo, hi, limits)
  assert cmd.delta_pos[2] == pytest.approx(-limits.max_step)
  # Yaw stops at its limit.
  cmd = actions.safe_arm_command(np.array([0, 0, 0, 1, 0]), state, limits.yaw_limits[1] - 0.01,
                                 lo, hi, limits)
  assert cmd.target_yaw == pytest.approx(limits.yaw_limits[1])
  # An in-range request passes unchanged.
  cmd = actions.safe_arm_command(np.array([0.1, 0, 0, 0, -1]), state, 0.0, lo, hi, limits)
  assert not cmd.clipped
  np.testing.assert_allclose(cmd.delta_pos, [0.1 * c.max_delta_pos, 0, 0])


def test_twist_and_gripper_speed_are_capped():
  limits = actions.Limits.from_config(hw_config.default_config())
  down = np.array([0.0, 1.0, 0.0, 0.0])
  state = actions.ArmState(pos=np.zeros(3), quat=down, closure=100.0)
  cmd = actions.ArmCommand(delta_pos=np.array([1.0, 0, 0]), target_yaw=3.0, grip=1.0,
                           clipped=False)
  twist = actions.arm_twist(cmd, state, down, limits)
  assert np.linalg.norm(twist[:3]) == pytest.approx(limits.max_lin_vel, rel=1e-5)
  assert np.linalg.norm(twist[3:]) == pytest.approx(limits.max_rot_vel, rel=1e-5)
  assert twist[5] > 0  # Positive yaw: about +z.
  assert actions.gripper_speed(1.0, 100.0, limits)[0] == limits.max_gripper_speed
  assert actions.gripper_speed(-1.0, 100.0, limits)[0] == -limits.max_gripper_speed
  assert actions.gripper_speed(-1.0, 0.0, limits)[0] == 0.0
  for bad in ([np.nan], [0.0, np.inf], [-np.inf], []):
    assert not actions.is_finite(bad)
  assert actions.is_finite(np.zeros(10))


def test_config_errors_name_the_field():
  c = hw_config.default_config()
  c.workspace.left = ((0.0, 0.0, 0.0), (-0.1, 0.1, 0.1))
  with pytest.raises(ValueError, match='workspace.left'):
    hw_config.validate(c)
  c = hw_config.default_config()
  c.home.right = (5.0, 0.0, 0.2)
  with pytest.raises(ValueError, match='home.right'):
    hw_config.validate(c)
  c = hw_config.default_config()
  c.rig = 'real_sawyers'
  with pytest.raises(NotImplementedError, match='hardware interface'):
    hardware.make(None, cameras=(), config=c)


# ----- the station (moma's simulated arms) ----------------------------------------------------

def test_specs_match_the_simulated_layout(env):
  probe = _Probe(seed=0, cameras=())
  try:
    hw, sim = env.observation_spec(), probe.observation_spec()
    assert set(hw) == set(sim) == {'state', 'privileged'}
    for key in hw:
      assert (hw[key].shape, hw[key].dtype, hw[key].name) == (
          sim[key].shape, sim[key].dtype, sim[key].name)
    assert env.action_spec() == probe.action_spec()
    assert env.control_hz == probe.control_hz
    assert (env.config.max_delta_pos, env.config.max_delta_yaw) == (
        probe.max_delta_pos, probe.max_delta_yaw)
  finally:
    probe.close()


def test_twin_of_a_simulated_task_has_its_exact_specs(env):
  import habc.envs
  checked = []
  for task in habc.envs.list_tasks():
    try:
      sim = habc.envs.make(task, seed=0, cameras=())
    except (ValueError, ImportError):
      continue  # That task's module is not written yet.
    spec = hardware.task_spec(task)
    twin = hardware.HardwareEnv(env.station, env.config, task_name=spec['task_name'],
                                instruction=spec['instruction'], time_limit=spec['time_limit'],
                                privileged_dim=spec['privileged_dim'])
    assert twin.observation_spec() == sim.observation_spec(), task
    assert twin.action_spec() == sim.action_spec(), task
    assert (twin.task_name, twin.instruction, twin.time_limit) == (
        sim.task_name, sim.instruction, sim.time_limit)
    ts = twin.reset()
    for key, s in twin.observation_spec().items():
      s.validate(ts.observation[key])
    sim.close()
    checked.append(task)
  if not checked:
    pytest.skip('no simulated task module importable yet')


def test_reset_and_step_in_project_layout(env):
  c = env.config
  ts = env.reset()
  assert ts.first()
  for key, s in env.observation_spec().items():
    s.validate(ts.observation[key])
  pos = _positions(ts)
  for side in base.SIDES:
    np.testing.assert_allclose(pos[side], c.home[side], atol=0.005)
  state = ts.observation['state'].reshape(len(base.SIDES), base.ARM_STATE_DIM)
  np.testing.assert_allclose(state[:, 3:5], [[0, 1], [0, 1]], atol=0.01)  # sin, cos of yaw 0.
  np.testing.assert_allclose(state[:, 5], 1.0, atol=0.01)  # Grippers open.
  ts = env.step(_action())
  assert ts.mid() and ts.reward == 0.0 and ts.discount == 1.0
  for side, p in _positions(ts).items():
    assert np.linalg.norm(p - c.home[side]) < 0.005
  # A small in-range move: up 0.5 -> 1.5 cm per step, in the commanded direction.
  before = _positions(ts)
  for _ in range(3):
    ts = env.step(_action(left=[0, 0, 0.5, 0, -1], right=[0, 0, 0.5, 0, -1]))
  assert not env.last_clipped
  for side, p in _positions(ts).items():
    assert 0.02 < p[2] - before[side][2] < 0.05
    assert np.linalg.norm(p[:2] - before[side][:2]) < 0.01


def test_huge_actions_respect_velocity_limit_and_workspace(env):
  # A small workspace around home (the same rules, read from env.limits) so that the arms meet
  # its faces within a few steps.
  default_limits = env.limits
  c = env.config
  box = {s: (np.asarray(c.home[s]) - 0.05, np.asarray(c.home[s]) + 0.05) for s in base.SIDES}
  env.limits = dataclasses.replace(default_limits, workspace=box)
  try:
    ts = env.reset()
    prev = _positions(ts)
    huge = _action(left=[-1e6, -1e6, 1e6, 0, 1e6], right=[1e6, 1e3, -1e6, 0, -1e6])
    for _ in range(12):
      ts = env.step(huge)
      assert env.last_clipped
      assert np.all(np.abs(env.last_action) <= 1.0)
      pos = _positions(ts)
      for side in base.SIDES:
        moved = np.linalg.norm(pos[side] - prev[side])
        assert moved <= env.limits.max_step + TRACKING_SLACK, (side, moved)
        lo, hi = box[side]
        assert np.all(pos[side] >= lo - TRACKING_SLACK), (side, pos[side], lo)
        assert np.all(pos[side] <= hi + TRACKING_SLACK), (side, pos[side], hi)
      prev = pos
    # They did get to the corners the actions pushed toward.
    np.testing.assert_allclose(pos['left'], [box['left'][0][0], box['left'][0][1],
                                             box['left'][1][2]], atol=0.01)
    np.testing.assert_allclose(pos['right'], [box['right'][1][0], box['right'][1][1],
                                              box['right'][0][2]], atol=0.01)
  finally:
    env.limits = default_limits


def test_nan_action_stops_the_robot_and_invalidates_the_episode(env):
  for bad in (np.nan, np.inf):
    ts = env.reset()
    physics = env.station.env.physics  # After reset: the first reset recompiles the model.
    # Moving fast and closing the left gripper when the bad action arrives.
    for _ in range(3):
      ts = env.step(_action(left=[0, 0, 1, 0, 1], right=[0, -1, 0, 0, -1]))
    assert np.linalg.norm(physics.data.qvel) > 0.05
    action = _action(left=[0, 0, 1, 0, 1])
    action[7] = bad
    ts = env.step(action)
    assert ts.last() and hardware.is_invalid(ts) and isinstance(ts, dm_env.TimeStep)
    assert env.episode_invalid and not env.success()
    assert 'non-finite policy action' in env.invalid_reason
    assert ts.discount == 1.0 and ts.reward == 0.0  # Not a terminal, not a success.
    for arm in env.station.arms.values():
      assert np.all(physics.bind(arm.robot.arm.actuators).ctrl == 0)  # Zero joint velocity.
      assert np.all(physics.bind(arm.robot.gripper.actuators).ctrl == 0)  # Gripper held.
    # The arms come to rest: let the (simulated) world run on with no new command. They brake
    # within about one more control period (the velocity loop lags) and then stand still.
    down = np.asarray(env.config.down_quat)
    states = [ts.observation['state'].astype(float)]
    for _ in range(4):
      raw = env.station.env.base_env.step(np.zeros(0)).observation
      states.append(hardware.robot.state_vector(raw, down).astype(float))
    states = np.stack(states).reshape(5, len(base.SIDES), base.ARM_STATE_DIM)
    drift = np.linalg.norm(states[-1, :, :3] - states[0, :, :3], axis=-1)
    last = np.linalg.norm(states[-1, :, :3] - states[-2, :, :3], axis=-1)
    assert np.all(drift < env.limits.max_step) and np.all(last < 0.002), (drift, last)
    assert np.all(np.abs(states[-1, :, 5] - states[0, :, 5]) < 0.03)  # Grippers held.
    # The next step starts a fresh, valid episode.
    ts = env.step(_action())
    assert ts.first() and not env.episode_invalid


def test_operator_takeover_is_honoured_at_the_next_step(env):
  op = env.operator
  ts = env.reset()
  up = _action(left=[0, 0, 1, 0, -1])
  down = _action(left=[0, 0, -1, 0, -1])
  for _ in range(2):
    ts = env.step(up)
    assert not env.last_is_intervention
  z0 = _positions(ts)['left'][2]
  op.take_over()
  op.command(down)
  ts = env.step(up)  # The policy still proposes "up".
  assert env.last_is_intervention
  np.testing.assert_array_equal(env.last_policy_action, up)
  assert env.last_action[2] < 0  # What ran was the operator's "down".
  z1 = _positions(ts)['left'][2]
  ts = env.step(up)
  z2 = _positions(ts)['left'][2]
  # The command switched at the first step; the arm's velocity loop lags about one step (it was
  # rising at full speed), so by the end of the second step it is going down.
  assert z1 - z0 < 0.025 and z2 < z1 - 0.005
  # Taken over without a command yet: the arms brake (about two steps from full speed), then
  # hold still.
  op.take_over()
  op.hand_back()
  op.take_over()
  for _ in range(2):
    ts = env.step(up)
    assert env.last_is_intervention
  before = _positions(ts)
  for _ in range(2):
    ts = env.step(up)
    assert env.last_is_intervention
    np.testing.assert_allclose(env.last_action[:3], 0, atol=0.15)
  for side, p in _positions(ts).items():
    assert np.linalg.norm(p - before[side]) < 0.004
  op.hand_back()
  gentle = _action(left=[0, 0, 0.5, 0, -1])  # Within every limit: executed as proposed.
  ts = env.step(gentle)
  assert not env.last_is_intervention and not env.last_clipped
  np.testing.assert_allclose(env.last_action, gentle, atol=1e-6)
  # A NaN from the operator's device also stops the robot.
  op.take_over(np.full(base.ACTION_DIM, np.nan))
  ts = env.step(up)
  assert hardware.is_invalid(ts) and 'operator' in env.invalid_reason
  ts = env.reset()
  assert not op.active  # A new episode starts under policy control.
  # A plain callable works as an operator too (same protocol); here one that always takes over.
  take_all = hardware.HardwareEnv(env.station, env.config, task_name='station', instruction='',
                                  time_limit=5, privileged_dim=0,
                                  operator=lambda e, a: (e.hold_action(), True))
  take_all.reset()
  take_all.step(up)
  assert take_all.last_is_intervention and take_all.last_action[2] == 0


def test_time_limit_and_reported_outcome(env):
  env.reset()
  env.time_limit, default = 2, env.time_limit
  try:
    assert env.step(_action()).mid()
    ts = env.step(_action())
    assert ts.last() and ts.discount == 1.0 and not env.success()
    env.reset()
    env.report_outcome(True)
    ts = env.step(_action())
    assert ts.last() and ts.discount == 0.0 and env.success() and not hardware.is_invalid(ts)
    assert env.step(_action()).first()
  finally:
    env.time_limit = default
  with pytest.raises(NotImplementedError, match='TeleopOperator'):
    env.make_expert(0)
  with pytest.raises(ValueError, match='shape'):
    env.step(np.zeros(3, np.float32))


def test_operator_reports_the_outcome_within_one_step(env):
  op = env.operator
  env.reset()
  op.report_outcome(False)
  env.reset()  # A verdict left pending from before a reset does not end the new episode.
  assert env.step(_action()).mid()
  op.report_outcome(True)  # E.g. from the teleop device's thread, between two steps.
  ts = env.step(_action())
  assert ts.last() and ts.discount == 0.0 and env.success() and not hardware.is_invalid(ts)
  env.reset()
  env.step(_action())
  op.report_outcome(False)
  ts = env.step(_action())
  assert ts.last() and ts.discount == 1.0 and not env.success()


def test_cameras_render_in_the_project_layout():
  cams = hardware.make(None, cameras=base.CAMERAS, image_size=32, time_limit=5)
  try:
    ts = cams.reset()
    ts = cams.step(_action())
    assert set(ts.observation) == set(base.CAMERAS) | {'state', 'privileged'}
    for cam in base.CAMERAS:
      cams.observation_spec()[cam].validate(ts.observation[cam])
      assert ts.observation[cam].std() > 5, cam  # Not blank.
  finally:
    cams.close()
