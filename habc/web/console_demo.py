"""A light two-arm stand-in environment for the operator console, and a demo loop.

``DemoEnv`` has the project's layout (action [10] per arm ``dx, dy, dz, dyaw, grip``, state [12]
per arm ``x, y, z, sin yaw, cos yaw, opening``) and a station's operator hooks
(``report_outcome``, ``hold_action``, ``camera_images``), but no physics: the grippers move
kinematically and the cameras are drawn with numpy. Like a station, it has no success predicate:
the person's verdict ends an episode. It builds in microseconds and never loads MuJoCo, so the
console's tests and its latency benchmark run on it.

``python -m habc.web.console_demo`` serves the console on it (the policy drifts both arms
toward a target; take over and steer them back): a way to try the page without a robot or a
simulator.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

SIDES = ('left', 'right')
WORKSPACE = np.array([[-0.45, -0.45, 0.03], [0.45, 0.3, 0.45]], np.float32)
HOME = {'left': (-0.2, -0.25, 0.25), 'right': (0.2, -0.25, 0.25)}


class DemoEnv:
  """dm_env-like; see the module docstring. ``control_hz`` paces the console (not the env)."""

  task_name = 'console_demo'
  instruction = 'steer both grippers to the marks'
  max_delta_pos = 0.03
  max_delta_yaw = 0.2

  def __init__(self, seed: int = 0, image_size: int = 64, cameras=('top',), time_limit=None,
               control_hz: float = 10.0):
    import dm_env
    from dm_env import specs
    self._dm_env, self._specs = dm_env, specs
    self.seed = int(seed)
    self.image_size = int(image_size)
    self.cameras = tuple(c for c in cameras if c in ('top', 'front'))
    self.time_limit = int(time_limit or 200)
    self.control_hz = float(control_hz)
    self.step_count = 0
    self.episode_invalid = False
    self._outcome = None
    self._needs_reset = True
    self.last_action = np.zeros(10, np.float32)
    self.last_clipped = False
    self.pos = {s: np.array(HOME[s], np.float32) for s in SIDES}
    self.yaw = {s: 0.0 for s in SIDES}
    self.closed = {s: False for s in SIDES}
    rng = np.random.default_rng(self.seed)
    self.targets = {s: np.array([HOME[s][0] + rng.uniform(-0.1, 0.1),
                                 HOME[s][1] + rng.uniform(0.1, 0.3)], np.float32) for s in SIDES}

  def observation_spec(self):
    spec = {'state': self._specs.Array((12,), np.float32, name='state'),
            'privileged': self._specs.Array((4,), np.float32, name='privileged')}
    for c in self.cameras:
      spec[c] = self._specs.Array((self.image_size, self.image_size, 3), np.uint8, name=c)
    return spec

  def action_spec(self):
    return self._specs.BoundedArray((10,), np.float32, -1.0, 1.0, name='action')

  def state(self) -> np.ndarray:
    out = []
    for s in SIDES:
      out += [*self.pos[s], np.sin(self.yaw[s]), np.cos(self.yaw[s]),
              0.0 if self.closed[s] else 1.0]
    return np.asarray(out, np.float32)

  def _obs(self) -> dict:
    obs = {'state': self.state(),
           'privileged': np.concatenate([self.targets[s] for s in SIDES]).astype(np.float32)}
    for c in self.cameras:
      obs[c] = self.render(c)
    return obs

  def reset(self):
    self.__init__(self.seed, self.image_size, self.cameras, self.time_limit, self.control_hz)
    self._needs_reset = False
    return self._dm_env.restart(self._obs())

  def step(self, action):
    if self._needs_reset:
      return self.reset()
    a = np.asarray(action, np.float32).reshape(10)
    if not np.all(np.isfinite(a)):  # A station's safety stop: the episode ends unlabelled.
      self.episode_invalid = True
      self._needs_reset = True
      return self._dm_env.truncation(0.0, self._obs(), discount=1.0)
    clipped = np.clip(a, -1.0, 1.0)
    for i, s in enumerate(SIDES):
      d = clipped[5 * i:5 * i + 5]
      self.pos[s] = np.clip(self.pos[s] + d[:3] * self.max_delta_pos, WORKSPACE[0], WORKSPACE[1])
      self.yaw[s] = float(np.clip(self.yaw[s] + d[3] * self.max_delta_yaw, -1.57, 1.57))
      self.closed[s] = bool(d[4] > 0.5 or (self.closed[s] and d[4] >= -0.5))
    self.last_action = clipped
    self.last_clipped = bool(np.any(clipped != a))
    self.step_count += 1
    obs = self._obs()
    if self._outcome is not None:
      self._needs_reset = True
      if self._outcome:
        return self._dm_env.termination(1.0, obs)
      return self._dm_env.truncation(0.0, obs, discount=1.0)
    if self.step_count >= self.time_limit:
      self._needs_reset = True
      return self._dm_env.truncation(0.0, obs, discount=1.0)
    return self._dm_env.transition(0.0, obs)

  # Operator hooks, as on a station.
  def report_outcome(self, success: bool) -> None:
    self._outcome = bool(success)

  def success(self) -> bool:
    return bool(self._outcome)

  def hold_action(self) -> np.ndarray:
    a = np.zeros(10, np.float32)
    for i, s in enumerate(SIDES):
      a[5 * i + 4] = 1.0 if self.closed[s] else -1.0
    return a

  def camera_images(self) -> dict:
    return {c: self.render(c, 128) for c in (self.cameras or ('top',))}

  def render(self, camera: str = 'top', size: int | None = None) -> np.ndarray:
    """A top view: the table, the marks, the grippers (ring: open, disc: closed; size: height)."""
    n = int(size or self.image_size)
    img = np.full((n, n, 3), (58, 62, 70), np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]

    def to_px(x, y):
      u = (x - WORKSPACE[0, 0]) / (WORKSPACE[1, 0] - WORKSPACE[0, 0])
      v = (y - WORKSPACE[0, 1]) / (WORKSPACE[1, 1] - WORKSPACE[0, 1])
      return u * (n - 1), (1 - v) * (n - 1)

    colours = {'left': (61, 139, 253), 'right': (240, 147, 43)}
    for s in SIDES:
      tx, ty = to_px(*self.targets[s])
      mark = (np.abs(xx - tx) < n / 40 + 1) & (np.abs(yy - ty) < n / 40 + 1)
      img[mark] = (200, 200, 200)
    for s in SIDES:
      px, py = to_px(self.pos[s][0], self.pos[s][1])
      radius = n * (0.04 + 0.08 * float(self.pos[s][2]))
      d = np.hypot(xx - px, yy - py)
      ring = d < radius if self.closed[s] else (d < radius) & (d > radius * 0.6)
      img[ring] = colours[s]
      for t in np.linspace(0, radius * 1.6, int(radius * 2) + 2):  # Yaw pointer.
        x = int(round(px + t * np.sin(self.yaw[s])))
        y = int(round(py - t * np.cos(self.yaw[s])))
        if 0 <= x < n and 0 <= y < n:
          img[y, x] = (255, 255, 255)
    if camera != 'top':
      img = img[::-1].copy()
    return img

  def close(self) -> None:
    pass


def make_env(task: str = 'console_demo', *, seed: int = 0, image_size: int = 64,
             cameras=('top',), time_limit=None, control_hz: float = 10.0) -> DemoEnv:
  """``rollout.env_factory`` of the demo (signature of habc.envs.make)."""
  del task
  return DemoEnv(seed, image_size=image_size, cameras=cameras or ('top',),
                 time_limit=time_limit, control_hz=control_hz)


def drift_policy(observations, noise_ids, horizon: int = 8) -> np.ndarray:
  """A stand-in policy: both arms drift slowly to +x (away from their marks); grippers open."""
  del noise_ids
  chunk = np.zeros((len(observations), horizon, 10), np.float32)
  chunk[:, :, 0] = chunk[:, :, 5] = 0.3
  chunk[:, :, 4] = chunk[:, :, 9] = -1.0
  return chunk


def run_demo_episodes(count: int, *, out: str = '', time_limit: int = 200,
                      log=print) -> list[dict]:
  """``count`` episodes of the demo through the rollout worker's episode code, in this process,
  with the console as the operator; with ``out``, commits each labelled one to an RLDS dataset."""
  from habc.run import rollout
  from habc.web import console
  config = rollout.WorkerConfig(task='console_demo', cameras=('top',), time_limit=time_limit,
                                execute_steps=8, operator={},
                                env_factory='habc.web.console_demo:make_env',
                                operator_factory=console.OPERATOR)
  writer = None
  results = []
  try:
    for i in range(count):
      request = rollout.EpisodeRequest(f'demo-{i:05d}', seed=i, kind='rollout', record=bool(out))
      episode = rollout._Episode(config, request)  # pylint: disable=protected-access
      while not episode.run_chunk(drift_policy([None], None)[0]):
        pass
      result = episode.result()
      results.append(result)
      log(f'console_demo: {request.episode_id}: '
          f'{"invalid" if result["invalid"] else "success" if result["success"] else "failure"}'
          f' in {result["length"]} steps ({result["intervention_steps"]} operator steps)')
      if out and result['episode'] is not None:
        from habc.data import schema
        from habc.data import writer as writer_lib
        if writer is None:
          writer = writer_lib.EpisodeWriter(out, schema.spec_of_episode(result['episode']))
        writer.append(result['episode'])
  finally:
    if writer is not None:
      writer.close()
  return results


def main(argv=None) -> int:
  from habc.web import console
  p = argparse.ArgumentParser(prog='python -m habc.web.console_demo', description=__doc__.split(
      '\n')[0])
  p.add_argument('--episodes', type=int, default=3)
  p.add_argument('--host', default='127.0.0.1')
  p.add_argument('--port', type=int, default=8765)
  p.add_argument('--token', default='')
  p.add_argument('--out', default='', help='RLDS dataset directory for the labelled episodes')
  p.add_argument('--no_wait', action='store_true', help='start each episode without the button')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  settings = console.ConsoleSettings(host=args.host, port=args.port, token=args.token,
                                     wait_for_start=not args.no_wait)
  console.get_console(settings)
  try:
    run_demo_episodes(args.episodes, out=args.out)
  except KeyboardInterrupt:
    return 130
  finally:
    console.close_console()
  return 0


if __name__ == '__main__':
  sys.exit(main())
