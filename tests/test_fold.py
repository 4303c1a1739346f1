"""The fold task: specs, determinism, the success predicate, grasping, frames, the expert."""

import json

import numpy as np
import pytest

from habc import envs
from habc.envs import base, fold


def _folded(env, shift=0.0):
  """Vertices [N*N, 3] of the cloth folded in half (near half laid on the far half).

  ``shift`` moves the top layer back toward the robot (metres): a near miss.
  """
  v = env.vertices().reshape(fold.N, fold.N, 3).copy()  # [i (x), j (y), xyz]
  out = v.copy()
  for j in range(fold.N // 2):
    out[:, j] = v[:, fold.N - 1 - j] + np.array([0.0, -shift, 0.006])
  return out.reshape(-1, 3)


def _park_grippers(env):
  for s in base.SIDES:
    env.set_gripper(s, np.asarray(env.home[s]) + [0, 0, 0.05])


def test_specs_and_observations():
  env = envs.make('fold', seed=0, image_size=32)
  ts = env.reset()
  assert env.task_name == 'fold' and env.instruction and env.time_limit == 100
  for k, s in env.observation_spec().items():
    s.validate(ts.observation[k])
  assert ts.observation['privileged'].shape == (17,)
  ts = env.step(np.zeros(base.ACTION_DIM))
  for k, s in env.observation_spec().items():
    s.validate(ts.observation[k])


def test_seeds_are_reproducible_and_differ():
  def run(seed):
    env = envs.make('fold', seed=seed, cameras=())
    out = [env.reset().observation['privileged']]
    a = np.zeros(base.ACTION_DIM, np.float32)
    a[[2, 7]] = -0.5
    for _ in range(3):
      out.append(env.step(a).observation['privileged'])
    return np.stack(out)
  np.testing.assert_array_equal(run(5), run(5))
  assert np.abs(run(5)[0] - run(6)[0]).max() > 0.005


def test_predicate_on_constructed_success_and_near_misses():
  env = envs.make('fold', seed=1, cameras=())
  env.reset()
  assert not env.success()  # Flat, unfolded.
  flat = env.vertices()
  _park_grippers(env)
  env.set_vertices(_folded(env))
  assert env.success()
  # Near miss: top layer 5 cm short of the far corners.
  env.set_vertices(flat)
  env.set_vertices(_folded(env, shift=0.05))
  assert np.all(env.corner_errors() > env.corner_tol)
  assert not env.success()
  # Folded but a corner still held.
  env.set_vertices(flat)
  env.set_vertices(_folded(env))
  env.grasp('left', fold.NEAR['left'])
  assert not env.success()
  env.grasp('left', None)
  assert env.success()
  # Folded but not flat: a near corner lifted 10 cm.
  v = env.vertices()
  v[fold.NEAR['right'], 2] += 0.1
  env.set_vertices(v)
  assert not env.success()


def test_constructed_success_ends_the_episode_as_terminal():
  env = envs.make('fold', seed=2, cameras=())
  env.reset()
  _park_grippers(env)
  env.set_vertices(_folded(env))
  a = np.zeros(base.ACTION_DIM, np.float32)
  a[[4, 9]] = -1.0
  steps = []
  ts = env.step(a)
  steps.append(ts)
  while not ts.last():
    ts = env.step(a)
    steps.append(ts)
  # The top layer settles for a step or two before the hold starts.
  assert env.success_hold <= len(steps) <= env.success_hold + 3
  assert ts.discount == 0.0 and ts.reward == 1.0


def test_closing_grasps_only_a_nearby_corner():
  env = envs.make('fold', seed=3, cameras=())
  env.reset()
  corner = env.corner(fold.NEAR['left'])
  env.set_gripper('left', corner + [0, 0, 0.01])
  env.set_gripper('right', env.corner(fold.NEAR['right']) + [0, 0.1, 0.01])  # 10 cm off.
  a = np.zeros(base.ACTION_DIM, np.float32)
  a[[4, 9]] = 1.0
  env.step(a)
  assert env.held_corner('left') == fold.NEAR['left']
  assert env.held_corner('right') is None
  a[2] = 1.0  # Lift the left arm: the corner comes along.
  for _ in range(3):
    env.step(a)
  assert env.corner(fold.NEAR['left'])[2] > 0.05
  a[[2, 4]] = [0.0, -1.0]  # Open: released, it falls.
  env.step(a)
  env.step(a)
  assert env.held_corner('left') is None
  assert env.corner(fold.NEAR['left'])[2] < 0.05


def test_frames_show_the_cloth():
  env = envs.make('fold', seed=0, image_size=64)
  ts = env.reset()
  for c in base.CAMERAS:
    assert ts.observation[c].std() > 5, c
  top = ts.observation['top'].astype(int)
  blue = (top[..., 2] > top[..., 0] + 60)
  assert blue.sum() > 100  # The cloth covers a good part of the top view.


def test_failure_signals():
  env = envs.make('fold', seed=0, cameras=())
  env.reset()
  sig = env.failure_signals()
  assert sig['progress'] == pytest.approx(0.0, abs=0.05)
  assert sig['lost'] is False and sig['time_left'] == 1.0
  env.set_gripper('left', env.corner(fold.NEAR['left']) + [0, 0, 0.02])
  assert env.arm_progress('left') > 0.2  # Reaching the corner is progress.
  env.set_gripper('left', np.asarray(env.home['left']))
  _park_grippers(env)
  env.set_vertices(_folded(env))
  assert env.failure_signals()['progress'] > 0.95


@pytest.mark.parametrize('seed', [0, 1])
def test_expert_solves_the_task(seed):
  env = envs.make('fold', seed=seed, cameras=())
  expert = env.make_expert(seed)
  ts = env.reset()
  while not ts.last():
    ts = env.step(expert.act(env))
  assert ts.discount == 0.0, f'seed {seed}: {env.corner_errors()}'
  assert env.step_count < env.time_limit


@pytest.mark.slow
def test_expert_success_rate_on_many_seeds():
  ok = []
  for seed in range(20):
    env = envs.make('fold', seed=100 + seed, cameras=())
    expert = env.make_expert(seed)
    ts = env.reset()
    while not ts.last():
      ts = env.step(expert.act(env))
    ok.append(ts.discount == 0.0)
  assert np.mean(ok) >= 0.9


def test_viewer_command_list_and_json(tmp_path, capsys):
  from habc.envs import __main__ as viewer
  assert viewer.main(['--list']) == 0
  assert capsys.readouterr().out.split() == envs.list_tasks()
  gif = tmp_path / 'first.gif'
  assert viewer.main(['--task=fold', '--episodes=1', '--json', f'--video={gif}',
                      '--video_size=48']) == 0
  out = json.loads(capsys.readouterr().out)
  assert {'task', 'success_rate', 'mean_length', 'steps_per_s_render',
          'steps_per_s_norender'} <= set(out)
  assert out['task'] == 'fold' and out['success_rate'] == 1.0
  assert out['steps_per_s_render'] > 0 and out['steps_per_s_norender'] > 0
  from PIL import Image
  with Image.open(gif) as im:
    assert im.n_frames > 10 and im.size == (3 * 48, 48)
