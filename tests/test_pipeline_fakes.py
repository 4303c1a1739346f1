"""Small stand-ins used by the pipeline tests (loaded by worker processes through
``config.rollout.*_factory``), and tests of the stand-ins themselves."""

import numpy as np


class TakeoverOperator:
  """A minimal operator: after ``after`` steps, on a seeded coin flip, the expert takes over."""

  def __init__(self, config, seed):
    self.config = dict(config or {})
    self.rng = np.random.default_rng(seed)
    self.seed = seed
    self.after = int(self.config.get('after', 12))
    self.prob = float(self.config.get('takeover_prob', 0.5))

  def reset(self):
    self.steps = 0
    self.expert = None
    self.takes_over = bool(self.rng.random() < self.prob)

  def act(self, env, policy_action):
    self.steps += 1
    if self.takes_over and self.steps > self.after:
      if self.expert is None:
        self.expert = env.make_expert(self.seed)
      return np.asarray(self.expert.act(env), np.float32), True
    return policy_action, False


def test_takeover_operator_flags_steps_after_threshold():
  class Env:
    def make_expert(self, seed):
      class Expert:
        def act(self, env):
          return np.ones(3)
      return Expert()

  op = TakeoverOperator({'after': 2, 'takeover_prob': 1.0}, 0)
  op.reset()
  flags = [op.act(Env(), np.zeros(3))[1] for _ in range(4)]
  assert flags == [False, False, True, True]


class FakeEnv:
  """A dm_env-like 1-D reaching task: the state moves by the action; success at x >= 1.

  Observation: 'state' f32 [2] (x, t), 'privileged' f32 [1], and one tiny camera 'top' when asked.
  Action: f32 [2] in [-1, 1]; x += 0.1 * action[0]. Time limit 30 steps.
  """

  task_name = 'fake'
  instruction = 'reach one'

  def __init__(self, seed, image_size=8, cameras=(), time_limit=None):
    import dm_env
    from dm_env import specs
    self._dm_env, self._specs = dm_env, specs
    self.seed, self.image_size, self.cameras = seed, image_size, tuple(cameras)
    self.time_limit = time_limit or 30
    self.x, self.t = 0.0, 0

  def observation_spec(self):
    spec = {'state': self._specs.Array((2,), np.float32),
            'privileged': self._specs.Array((1,), np.float32)}
    for c in self.cameras:
      spec[c] = self._specs.Array((self.image_size, self.image_size, 3), np.uint8)
    return spec

  def action_spec(self):
    return self._specs.BoundedArray((2,), np.float32, -1.0, 1.0)

  def _obs(self):
    obs = {'state': np.array([self.x, self.t], np.float32),
           'privileged': np.array([1.0 - self.x], np.float32)}
    for c in self.cameras:
      obs[c] = self.render(c)
    return obs

  def render(self, camera, size=None):
    return np.full((self.image_size, self.image_size, 3), min(255, self.t * 8), np.uint8)

  def reset(self):
    self.x = 0.01 * (self.seed % 7)
    self.t = 0
    return self._dm_env.restart(self._obs())

  def success(self):
    return self.x >= 1.0

  def step(self, action):
    self.x += 0.1 * float(np.clip(action[0], -1, 1))
    self.t += 1
    if self.success():
      return self._dm_env.termination(0.0, self._obs())
    if self.t >= self.time_limit:
      return self._dm_env.truncation(0.0, self._obs())
    return self._dm_env.transition(0.0, self._obs())

  def make_expert(self, seed):
    class Expert:
      def act(self, env):
        return np.array([1.0, 0.0], np.float32)
    return Expert()

  def close(self):
    pass


def make_fake_env(task, *, seed, image_size=8, cameras=(), time_limit=None):
  return FakeEnv(seed, image_size=image_size, cameras=cameras, time_limit=time_limit)


class StationLikeEnv(FakeEnv):
  """Like a hardware station: reports the executed action (halved by a 'safety rule') and ends
  the episode with a safety stop (LAST, discount 1, ``invalid``) at step ``stop_at``."""

  stop_at = 5

  def step(self, action):
    self.last_action = 0.5 * np.asarray(action, np.float32)
    timestep = super().step(self.last_action)
    if self.t >= self.stop_at:
      self.episode_invalid = True
      return timestep._replace(step_type=self._dm_env.StepType.LAST, discount=1.0)
    return timestep


def make_station_like_env(task, *, seed, image_size=8, cameras=(), time_limit=None):
  return StationLikeEnv(seed, image_size=image_size, cameras=cameras, time_limit=time_limit)


def test_live_observations_match_the_training_inputs():
  """The policy's inputs in the environment and the reader's training inputs: one code path."""
  from habc.data import reader
  from habc.data import stats as stats_lib
  from habc.data import synthetic
  rng = np.random.default_rng(0)
  for obs, cameras in (('vision', ('top', 'wrist')), ('state', ())):
    episode = synthetic.synthetic_episode(rng, num_steps=5, cameras=('top', 'wrist'),
                                          image_size=8, privileged_dim=3, instruction='fold it')
    stats = stats_lib.NormStats({'state': np.full(6, 0.5), 'action': np.zeros(4),
                                 'privileged': np.ones(3)},
                                {'state': np.full(6, 2.0), 'action': np.ones(4),
                                 'privileged': np.full(3, 4.0)})
    make_pack = reader.EpisodePack(horizon=2, next_offset=1, min_human_steps=1, naive=False,
                                   cameras=cameras, obs=obs, stats=stats, max_instruction_len=12)
    pack = make_pack(episode)
    steps = episode['steps']['observation']
    live = [dict({k: v[t] for k, v in steps.items()}, instruction='fold it') for t in range(5)]
    inputs = reader.env_model_inputs(live, stats, cameras=cameras, obs=obs, max_len=12)
    np.testing.assert_allclose(inputs['state'], pack['state'], rtol=1e-6)
    assert inputs['state'].shape == (5, 9 if obs == 'state' else 6)
    assert inputs['instruction'].shape == (5, 12)
    assert (inputs['instruction'] == pack['instruction']).all()
    if obs == 'vision':
      assert inputs['images'].shape == (5, 2, 8, 8, 3)
      assert (inputs['images'] == pack['images']).all()
    else:
      assert 'images' not in inputs
