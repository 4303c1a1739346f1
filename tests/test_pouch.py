"""The ``pouch`` task: the success predicate, the zipper, the expert's regrasp, failure signals,
the slot knob (what every rigid task must do: tests/test_tasks.py)."""

import mujoco
import numpy as np
import pytest

from habc import envs
from habc.envs import base
from habc.envs import pouch as P
from habc.envs import rigid


def _env(seed=0, **kw):
  kw.setdefault('cameras', ())
  return envs.make('pouch', seed=seed, **kw)


def _closed_with_marker_inside(env):
  env.reset()
  xy = env.pouch_pos()[:2]
  env.set_pouch(xy, zip_fraction=1.0)
  env.set_marker([xy[0], xy[1], P.WALL + P.MARKER_RADIUS + 0.001], yaw=0.02)
  return xy


def test_success_predicate_on_constructed_states():
  env = _env()
  xy = _closed_with_marker_inside(env)
  assert env.marker_inside() and env.zip_closed() and env.success()
  # Near misses: the zipper not quite closed; the marker poking out of the slot; the marker lying
  # beside the pouch.
  env.set_pouch(xy, zip_fraction=env.zip_closed_fraction - 0.05)
  assert env.marker_inside() and not env.success()
  env.set_pouch(xy, zip_fraction=1.0)
  env.set_marker([xy[0], xy[1], P.HEIGHT - P.WALL], yaw=0.0, axis_tilt=0.3)
  assert not env.marker_inside() and not env.success()
  env.set_marker([xy[0] + P.HALF_X + 0.03, xy[1], P.MARKER_RADIUS], yaw=0.0)
  assert not env.success()


def test_success_ends_the_episode_as_a_terminal():
  env = _env()
  _closed_with_marker_inside(env)
  for s in base.SIDES:  # Hands away from the pouch, open.
    env.set_gripper(s, env.home[s])
  ts = None
  for _ in range(env.success_hold):
    ts = env.step(np.zeros(base.ACTION_DIM, np.float32))
  assert ts.last() and ts.discount == 0.0 and ts.reward == 1.0


def test_zipper_drags_an_unheld_pouch_but_closes_a_held_one():
  """Both arms are needed: pulling the tab alone slides the pouch instead of closing it."""
  moved, closed = {}, {}
  for hold in (False, True):
    env = _env()
    _closed_with_marker_inside(env)
    xy = env.pouch_pos()[:2]
    env.set_pouch(xy, zip_fraction=0.0)
    env.set_gripper('right', env.tab_pos(), grip=-1.0)
    env.set_gripper('left', env.handle_pos() if hold else env.home['left'], grip=-1.0)
    mujoco.mj_forward(env.model, env.data)
    env.step(env.action_for({'left': (env.command('left').pos, 0.0, 1.0),
                             'right': (env.command('right').pos, 0.0, 1.0)}))
    assert env.held('right') == 'zipper'
    assert (env.held('left') == 'handle') == hold
    start = env.pouch_pos()
    for _ in range(10):
      cmd = env.command('right')
      env.step(env.action_for({'left': (env.command('left').pos, 0.0, 1.0),
                               'right': (cmd.pos + [0, -0.02, 0], 0.0, 1.0)}))
    moved[hold] = np.linalg.norm(env.pouch_pos() - start)
    closed[hold] = env.zip_fraction()
  assert moved[False] > 0.1 and closed[False] < 0.3
  assert moved[True] < 0.01 and closed[True] > 0.9


def test_expert_reopens_a_zipper_closed_too_early():
  env = _env(4)
  env.reset()
  env.set_pouch(env.pouch_pos()[:2], zip_fraction=0.7)  # Zipped before the marker went in.
  expert = env.make_expert(4)
  ts, fractions = None, []
  for _ in range(env.time_limit):
    ts = env.step(expert.act(env))
    fractions.append(env.zip_fraction())
    if ts.last():
      break
  assert min(fractions) < 0.05  # It was opened again ...
  assert ts.last() and ts.discount == 0.0  # ... and then the task was done.


def test_slot_width_is_a_checked_knob():
  class Narrow(P.PouchEnv):
    slot_half_width = 0.012

  env = Narrow(seed=0, cameras=())
  top = env.model.geom('pouch_top_left')
  assert np.isclose(-env.model.geom_pos[top.id][0] - env.model.geom_size[top.id][0], 0.012)
  with pytest.raises(ValueError, match='slot_half_width'):
    P.pouch_xml(P.MARKER_RADIUS - 0.001)


def test_failure_signals():
  env = _env()
  env.reset()
  sig = env.failure_signals()
  assert {'progress', 'lost', 'time_left'} <= set(sig)
  assert 0.0 <= sig['progress'] < 0.5 and not sig['lost']
  assert not sig['dropped'] and not sig['zipped_empty']
  env.set_pouch(env.pouch_pos()[:2], zip_fraction=0.6)  # Zipping up an empty pouch.
  assert env.failure_signals()['zipped_empty'] and env.failure_signals()['lost']
  env.set_marker([0.6, 0.0, 0.3])  # Off the table.
  assert env.failure_signals()['lost']
  _closed_with_marker_inside(env)
  assert env.failure_signals()['progress'] > 0.8
  env.set_marker([0.2, 0.0, 0.07], axis_tilt=np.pi / 2)  # Standing on end.
  assert env.failure_signals()['tipped'] and env.failure_signals()['lost']


def test_yaw_helpers_stay_in_the_gripper_range():
  assert np.isclose(rigid.wrap(3 * np.pi / 2), -np.pi / 2)
  assert np.isclose(rigid.wrap(0.75 * np.pi, np.pi), -0.25 * np.pi)
  # A part lying at the limit: the target stays on the side the command is on.
  for cmd in (-1.4, 1.4):
    y = rigid.grasp_yaw(np.pi / 2 + 0.01, cmd)
    assert abs(y) <= np.pi / 2 and np.sign(y) == np.sign(cmd)
  # Turning by err (mod pi) takes the smallest turn that stays in range.
  assert np.isclose(rigid.reachable_yaw(1.2, 0.8, np.pi), 1.2 + 0.8 - np.pi)
  assert np.isclose(rigid.reachable_yaw(0.0, 0.3, np.pi), 0.3)
  assert np.isclose(rigid.axis_yaw(np.array([-1.0, 0.0, 0.0])), np.pi / 2)


if __name__ == '__main__':
  pytest.main([__file__, '-q'])
