"""TaskEnv base class: specs, control loop, endings, workspace, cameras, registry."""

import numpy as np
import pytest

from habc import envs
from habc.envs import base


class _Box(base.TaskEnv):
  """A cheap task: one block on the table; success is a flag the test sets."""

  task_name = 'box'
  instruction = 'touch the box'
  default_time_limit = 6
  success_hold = 2
  timestep = 0.005

  def _task_xml(self):
    return {'worldbody': '<body name="box" pos="0 0.1 0.03"><freejoint/>'
                         '<geom type="box" size="0.03 0.03 0.03" rgba="0.9 0.1 0.1 1"/></body>'}

  def _initialize_episode(self, rng):
    self.done = False
    box = self.model.jnt_qposadr[self.model.body('box').jntadr[0]]
    self.data.qpos[box:box + 2] = rng.uniform(-0.1, 0.1, 2)

  def _privileged(self):
    return self.data.body('box').xpos.copy()

  def success(self):
    return bool(getattr(self, 'done', False))

  def make_expert(self, seed):
    return None


def test_specs_match_observations():
  env = _Box(seed=0, image_size=32)
  ts = env.reset()
  spec = env.observation_spec()
  assert set(spec) == {'top', 'wrist_left', 'wrist_right', 'state', 'privileged'}
  for k, s in spec.items():
    s.validate(ts.observation[k])
  a = env.action_spec()
  assert a.shape == (base.ACTION_DIM,) and a.dtype == np.float32
  assert np.all(a.minimum == -1) and np.all(a.maximum == 1)
  assert ts.first()
  ts = env.step(np.zeros(base.ACTION_DIM))
  for k, s in spec.items():
    s.validate(ts.observation[k])


def test_no_cameras_renders_nothing():
  env = _Box(seed=0, cameras=())
  ts = env.reset()
  assert set(ts.observation) == {'state', 'privileged'}
  env.step(np.zeros(base.ACTION_DIM))
  assert env._renderers == {}


def test_unknown_camera_is_an_error():
  with pytest.raises(ValueError, match='unknown cameras'):
    _Box(seed=0, cameras=('side',))


def test_frames_not_blank():
  env = _Box(seed=0, image_size=48)
  ts = env.reset()
  for c in base.CAMERAS:
    f = ts.observation[c]
    assert f.std() > 5, c
  red = (ts.observation['top'][..., 0] > 150) & (ts.observation['top'][..., 1] < 80)
  assert red.sum() > 3  # The red box is in the top view.


def test_time_limit_is_a_failure_not_a_terminal():
  env = _Box(seed=0, cameras=())
  ts = env.reset()
  n = 0
  while not ts.last():
    ts = env.step(np.zeros(base.ACTION_DIM))
    n += 1
  assert n == env.time_limit == 6
  assert ts.discount == 1.0 and ts.reward == 0.0
  assert env.reset().first()


def test_success_needs_the_hold_and_ends_with_discount_zero():
  env = _Box(seed=0, cameras=(), time_limit=50)
  env.reset()
  env.step(np.zeros(base.ACTION_DIM))
  env.done = True
  ts = env.step(np.zeros(base.ACTION_DIM))
  assert ts.mid()  # Held for one step only.
  ts = env.step(np.zeros(base.ACTION_DIM))
  assert ts.last() and ts.discount == 0.0 and ts.reward == 1.0


def test_actions_move_the_gripper_and_stay_in_the_workspace():
  env = _Box(seed=0, cameras=(), time_limit=200)
  env.reset()
  start = env.ee_pos('left')
  a = np.zeros(base.ACTION_DIM)
  a[0] = 1.0  # Left arm +x at full speed.
  env.step(a)
  moved = env.ee_pos('left') - start
  assert moved[0] == pytest.approx(env.max_delta_pos, abs=0.006)
  a[:3] = [-5.0, -5.0, -5.0]  # Clipped to the action limits.
  for _ in range(40):
    env.step(a)
  lo = np.asarray(env.workspace[0])
  assert np.allclose(env.command('left').pos, lo)
  assert np.all(env.ee_pos('left') > lo - 0.01)


def test_gripper_command_opens_and_closes():
  env = _Box(seed=0, cameras=())
  env.reset()
  a = np.zeros(base.ACTION_DIM)
  a[4], a[9] = 1.0, -1.0
  ts = env.step(a)
  state = ts.observation['state'].reshape(2, base.ARM_STATE_DIM)
  assert state[0, 5] < 0.1 and state[1, 5] > 0.9


@pytest.mark.parametrize('closed, grip, after', [
    (False, 0.4, False), (False, 0.6, True), (True, -0.4, True), (True, -0.6, False),
    (True, 0.0, True), (False, 0.0, False), (False, -1.0, False), (True, 1.0, True)])
def test_gripper_state_has_a_dead_band(closed, grip, after):
  assert base.gripper_state(closed, grip, 0.5) is after


def test_hesitant_gripper_commands_keep_the_gripper_as_it_is():
  env = _Box(seed=0, cameras=())
  env.reset()
  a = np.zeros(base.ACTION_DIM)
  for grip, closed in [(0.3, False), (0.9, True), (-0.2, True), (0.1, True), (-0.7, False),
                       (0.4, False)]:
    a[4] = grip
    ts = env.step(a)
    assert env.gripper_closing('left') is closed, grip
  for _ in range(3):  # The fingers follow the gripper's state, not the raw command.
    a[4] = 0.9
    env.step(a)
    a[4] = -0.3
    ts = env.step(a)
  assert ts.observation['state'][5] < 0.1


def test_seeds_are_reproducible():
  def run(seed):
    env = _Box(seed=seed, cameras=())
    out = [env.reset().observation['privileged']]
    for _ in range(3):
      out.append(env.step(np.full(base.ACTION_DIM, 0.3)).observation['privileged'])
    out.append(env.reset().observation['privileged'])  # Second episode of the same stream.
    return np.stack(out)
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.allclose(run(3)[0], run(4)[0])


def test_registry():
  assert envs.list_tasks()[:1] == ['fold']
  assert {'fold', 'pouch', 'insert'} <= set(envs.list_tasks())
  with pytest.raises(ValueError, match='Unknown task'):
    envs.make('nope', seed=0)


def test_registered_task_with_missing_module_fails_only_when_used(monkeypatch):
  monkeypatch.setitem(envs._REGISTRY, 'ghost', 'habc.envs.no_such_module:Ghost')
  assert 'ghost' in envs.list_tasks()
  with pytest.raises(ValueError, match='cannot be imported'):
    envs.make('ghost', seed=0)


def test_video_writer_mp4_gif_and_errors(tmp_path):
  from habc.envs import video
  frames = np.random.default_rng(0).integers(0, 255, (6, 33, 40, 3), dtype=np.uint8)
  import av
  path = video.write_video(str(tmp_path / 'a.mp4'), frames, fps=10)
  with av.open(path) as c:
    decoded = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
  assert len(decoded) == 6 and decoded[0].shape == (34, 40, 3)  # Padded to even sides.
  from PIL import Image
  frames[1:] = 0
  frames[3] = 255
  with Image.open(video.write_video(str(tmp_path / 'a.gif'), frames)) as im:
    assert im.size == (40, 33) and im.n_frames >= 3
  with pytest.raises(ValueError, match='unsupported suffix'):
    video.write_video(str(tmp_path / 'a.avi'), frames)
  with pytest.raises(ValueError, match='uint8'):
    video.write_video(str(tmp_path / 'a.gif'), frames.astype(np.float32))


def test_env_benchmark_prints_a_row_per_task(capsys):
  from habc.bench import envs as bench
  assert bench.main(['prog', '--tasks', 'fold,ghost', '--steps', '2', '--physics_steps', '20']) == 0
  out = capsys.readouterr().out.splitlines()
  row = next(line for line in out if line.startswith('fold'))
  assert len(row.split()) == 5 and all(float(x) > 0 for x in row.split()[1:])
  assert any(line.startswith('ghost') and 'unavailable' in line for line in out)
