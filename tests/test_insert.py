"""The ``insert`` task: the success predicate, grasping, the hole knob, failure signals (what every
rigid task must do: tests/test_tasks.py)."""

import mujoco
import numpy as np
import pytest

from habc import envs
from habc.envs import base
from habc.envs import insert as I


def _env(seed=0, **kw):
  kw.setdefault('cameras', ())
  return envs.make('insert', seed=seed, **kw)


def _assembly(env, depth, socket_z=0.15, lateral=0.0, tilt=0.0):
  """Socket in the air at yaw GOAL_YAW, peg along its axis with its tip ``depth`` inside."""
  env.reset()
  center = np.array([-0.05, 0.03, socket_z])
  env.set_part('socket', center, I.GOAL_YAW)
  a = env.socket_axis()
  side = np.cross(a, [0.0, 0.0, 1.0])
  mouth = center - I.SOCKET_HALF[1] * a
  peg = mouth + (depth - I.PEG_HALF_LEN) * a + lateral * side
  q = np.zeros(4)
  mujoco.mju_mulQuat(q, base.yaw_quat(I.GOAL_YAW), [np.cos(tilt / 2), np.sin(tilt / 2), 0, 0])
  env.set_part('peg', peg, quat=q)


def test_success_predicate_on_constructed_states():
  env = _env()
  _assembly(env, depth=0.04)
  ins = env.insertion()
  assert abs(ins['depth'] - 0.04) < 1e-6 and ins['lateral'] < 1e-6 and ins['tilt'] < 1e-6
  assert env.success()
  # Near misses: not deep enough; beside the hole; tilted; the socket left on the table.
  _assembly(env, depth=env.min_depth - 0.005)
  assert not env.success()
  _assembly(env, depth=0.04, lateral=I.HOLE_HALF + 0.004)
  assert not env.success()
  _assembly(env, depth=0.04, tilt=env.max_tilt + 0.05)
  assert not env.success()
  _assembly(env, depth=0.04, socket_z=I.SOCKET_HALF[2])
  assert not env.success()


def test_closing_near_a_part_grasps_it_and_opening_lets_go():
  env = _env()
  env.reset()
  env.set_gripper('right', env.peg_pos() + [0, 0, 0.004], grip=-1.0)
  mujoco.mj_forward(env.model, env.data)
  hold = {'left': (env.command('left').pos, 0.0, -1.0)}
  env.step(env.action_for({**hold, 'right': (env.command('right').pos, 0.0, 1.0)}))
  assert env.held('right') == 'peg' and env.held('left') is None
  for _ in range(4):  # Lift: the peg comes along.
    env.step(env.action_for({**hold, 'right': (env.command('right').pos + [0, 0, 0.03], 0.0,
                                               1.0)}))
  assert env.peg_pos()[2] > 0.08
  env.step(env.action_for({**hold, 'right': (env.command('right').pos, 0.0, -1.0)}))
  assert env.held('right') is None
  for _ in range(5):
    env.step(env.action_for({**hold, 'right': (env.command('right').pos, 0.0, -1.0)}))
  assert env.peg_pos()[2] < 0.03  # Dropped back on the table.


def test_hole_size_is_a_checked_knob():
  class Tight(I.InsertEnv):
    hole_half = 0.010

  env = Tight(seed=0, cameras=())
  right = env.model.geom('socket_right')
  assert np.isclose(env.model.geom_pos[right.id][0] - env.model.geom_size[right.id][0], 0.010)
  with pytest.raises(ValueError, match='hole_half'):
    I.socket_xml(I.PEG_HALF)


def test_failure_signals():
  env = _env()
  env.reset()
  sig = env.failure_signals()
  assert {'progress', 'lost', 'time_left'} <= set(sig)
  assert sig['progress'] < 0.5 and not sig['lost']
  env.set_part('peg', [0.0, 0.7, 0.2])  # Out of reach.
  assert env.failure_signals()['lost']
  _assembly(env, depth=0.04)
  assert env.failure_signals()['progress'] > sig['progress'] + 0.3
  env.reset()
  on_its_face = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0, 0]  # Hole axis straight up.
  env.set_part('socket', [-0.2, 0.0, I.SOCKET_HALF[1]], quat=on_its_face)
  assert env.failure_signals()['tipped'] and env.failure_signals()['lost']


if __name__ == '__main__':
  pytest.main([__file__, '-q'])
