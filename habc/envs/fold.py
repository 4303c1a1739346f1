"""``fold``: a half fold of a square cloth with two grippers.

Scene: a square cloth (2D flexcomp, ``N x N`` vertices, bending stiffness, no self-collision) lies
on the table in front of the robot, shifted and rotated per seed. The two near corners (toward the
robot, -y) must be lifted and laid onto the two far corners.

Grasping: closing a gripper (its binary state going from open to closed; ``habc.envs.base``:
commands inside the dead band change nothing) with its grasp point within
``grasp_radius`` of a cloth corner switches on an equality ``connect`` between the palm and that
corner vertex (``eq_active``); opening the gripper switches it off. The grippers do not collide
with the cloth, so the grasp is the constraint alone (a rigid pinch, as with a real gripper).

Success (``success()``): both near corners within ``corner_tol`` (xy) of their far corners, no
corner held, the cloth flat (every vertex below ``flat_height``) and nearly at rest; held for
``success_hold`` control steps.
"""

from __future__ import annotations

import mujoco
import numpy as np

from habc.envs import base

N = 8  # Vertices per cloth side.
SPACING = 0.04  # Metres between neighbouring vertices: a 0.28 m cloth.
# Corner vertex indices (vertex (i, j) is i * N + j with i along x, j along y before rotation).
NEAR = {'left': 0, 'right': (N - 1) * N}
FAR = {'left': N - 1, 'right': N * N - 1}
CORNERS = (NEAR['left'], NEAR['right'], FAR['left'], FAR['right'])


class FoldEnv(base.TaskEnv):
  """Half fold of a cloth: near corners onto far corners."""

  task_name = 'fold'
  instruction = 'fold the cloth in half, bringing the near corners onto the far corners'
  default_time_limit = 100
  timestep = 0.002
  control_hz = 10.0
  success_hold = 3
  gripper_collides = False
  workspace = ((-0.45, -0.45, 0.004), (0.45, 0.45, 0.4))
  # Elliptic friction cones and a sparse Jacobian: ~3x faster than the defaults with the 64 cloth
  # contacts on the table.
  option_xml = ('integrator="implicitfast" solver="Newton" iterations="30" tolerance="1e-6" '
                'cone="elliptic" jacobian="sparse"')
  young = 500.0  # Cloth stiffness (Pa): low enough that a fold stays folded once released.
  thickness = 0.003
  grasp_radius = 0.03
  corner_tol = 0.035
  flat_height = 0.05
  rest_speed = 0.05

  def _task_xml(self) -> dict:
    worldbody = f"""
    <flexcomp name="cloth" type="grid" count="{N} {N} 1" spacing="{SPACING} {SPACING} {SPACING}"
              pos="0 0 0.005" radius="0.004" dim="2" mass="0.08" rgba="0.15 0.45 0.85 1">
      <edge equality="true" damping="0.002"/>
      <elasticity young="{self.young}" poisson="0.2" thickness="{self.thickness}"
                  elastic2d="bend"/>
      <contact selfcollide="none" condim="3" friction="0.9" solref="0.005 1"/>
    </flexcomp>"""
    equality = ''.join(
        f'<connect name="grasp_{s}_{c}" body1="{s}_palm" body2="cloth_{c}" anchor="0 0 -0.035" '
        'active="false" solref="0.01 1"/>' for s in base.SIDES for c in CORNERS)
    return {'worldbody': worldbody, 'equality': equality}

  def _ids(self) -> None:
    super()._ids()
    m = self.model
    self._vertex_body = np.array([m.body(f'cloth_{k}').id for k in range(N * N)])
    self._vertex_qpos = np.array([m.jnt_qposadr[m.body_jntadr[b]] for b in self._vertex_body])
    self._vertex_qvel = np.array([m.jnt_dofadr[m.body_jntadr[b]] for b in self._vertex_body])
    self._grasp_eq = {(s, c): m.equality(f'grasp_{s}_{c}').id for s in base.SIDES for c in CORNERS}
    for eq in self._grasp_eq.values():
      m.eq_data[eq, 3:6] = 0.0  # The corner vertex itself meets the grasp point.
    self._prev_closing = {s: False for s in base.SIDES}
    self._held = {s: None for s in base.SIDES}

  # ----- cloth state -----------------------------------------------------------------------

  def vertices(self) -> np.ndarray:
    """Cloth vertex positions [N*N, 3] (world frame)."""
    return self.data.xpos[self._vertex_body].copy()

  def corner(self, k: int) -> np.ndarray:
    return self.data.xpos[self._vertex_body[k]].copy()

  def set_vertices(self, pos: np.ndarray) -> None:
    """Places the cloth vertices at ``pos`` [N*N, 3] at rest (for resets and constructed states)."""
    pos = np.asarray(pos, float).reshape(N * N, 3)
    rest = self.model.body_pos[self._vertex_body]
    for k in range(3):
      self.data.qpos[self._vertex_qpos + k] = pos[:, k] - rest[:, k]
      self.data.qvel[self._vertex_qvel + k] = 0.0
    mujoco.mj_forward(self.model, self.data)

  def flat_grid(self, center, yaw: float) -> np.ndarray:
    """Vertex positions [N*N, 3] of the flat cloth centred at ``center`` [2], rotated by ``yaw``."""
    g = (np.arange(N) - (N - 1) / 2) * SPACING
    xy = np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2)
    c, s = np.cos(yaw), np.sin(yaw)
    xy = xy @ np.array([[c, s], [-s, c]]) + np.asarray(center)
    return np.concatenate([xy, np.full((N * N, 1), 0.004)], 1)

  def held_corner(self, side: str):
    """Index of the corner ``side`` holds, or None."""
    return self._held[side]

  def grasp(self, side: str, corner) -> None:
    """Switches the grasp constraint of ``side`` to ``corner`` (None releases)."""
    for c in CORNERS:
      self.data.eq_active[self._grasp_eq[(side, c)]] = int(c == corner)
    self._held[side] = corner

  # ----- TaskEnv ---------------------------------------------------------------------------

  def _initialize_episode(self, rng: np.random.Generator) -> None:
    center = rng.uniform([-0.04, -0.02], [0.04, 0.05])
    yaw = rng.uniform(-0.3, 0.3)
    for s in base.SIDES:
      self.grasp(s, None)
      self._prev_closing[s] = False
      home = np.asarray(self.home[s]) + rng.uniform(-0.03, 0.03, 3)
      self.set_gripper(s, home)
    self.set_vertices(self.flat_grid(center, yaw))

  def _after_control(self, action: np.ndarray) -> None:
    for s in base.SIDES:
      closing = self.gripper_closing(s)
      if not closing and self._held[s] is not None:
        self.grasp(s, None)
      elif closing and not self._prev_closing[s] and self._held[s] is None:
        other = {self._held[o] for o in base.SIDES if o != s}
        p = self.ee_pos(s)
        d = {c: np.linalg.norm(self.corner(c) - p) for c in CORNERS if c not in other}
        c = min(d, key=d.get)
        if d[c] < self.grasp_radius:
          self.grasp(s, c)
      self._prev_closing[s] = closing

  def _privileged(self) -> np.ndarray:
    """[17]: the four corners (near left, near right, far left, far right) xyz [12], the cloth
    centroid [3], and per side whether it holds a corner [2]."""
    v = self.vertices()
    corners = v[list(CORNERS)].reshape(-1)
    held = [float(self._held[s] is not None) for s in base.SIDES]
    return np.concatenate([corners, v.mean(0), held]).astype(np.float32)

  def corner_errors(self) -> np.ndarray:
    """xy distance [2] of each near corner to its far corner (left, right)."""
    return np.array([np.linalg.norm((self.corner(NEAR[s]) - self.corner(FAR[s]))[:2])
                     for s in base.SIDES])

  def success(self) -> bool:
    if any(self._held[s] is not None for s in base.SIDES):
      return False
    if np.any(self.corner_errors() > self.corner_tol):
      return False
    if np.max(self.vertices()[:, 2]) > self.flat_height:
      return False
    speed = np.abs(self.data.qvel[self._vertex_qvel[:, None] + np.arange(3)]).max()
    return bool(speed < self.rest_speed)

  def arm_progress(self, side: str) -> float:
    """Completion in [0, 1] of one arm's half of the fold, from privileged state.

    Reaching its near corner counts up to 0.25, carrying it toward the far corner up to 1 (a
    corner lying released on its far corner is done).
    """
    d0 = (N - 1) * SPACING
    near, far = self.corner(NEAR[side]), self.corner(FAR[side])
    carried = float(np.clip(1 - np.linalg.norm((near - far)[:2]) / d0, 0, 1))
    if self._held[side] == NEAR[side]:
      return 0.25 + 0.75 * carried
    if carried > 1 - self.corner_tol / d0 and near[2] < self.flat_height:
      return 1.0
    reach = float(np.clip(1 - np.linalg.norm(self.ee_pos(side) - near) / 0.3, 0, 1))
    return 0.25 * reach

  def failure_signals(self) -> dict:
    """``progress``: mean of ``arm_progress``; ``lost``: cloth out of the workspace, or a near
    corner lying released midway (dropped on the way over)."""
    d0 = (N - 1) * SPACING
    err = self.corner_errors()
    lo, hi = np.asarray(self.workspace[0]), np.asarray(self.workspace[1])
    v = self.vertices()
    out_of_reach = bool(np.any(v[:, :2] < lo[:2]) or np.any(v[:, :2] > hi[:2]))
    dropped = any(self._held[s] is None and 0.3 < 1 - e / d0 < 0.85
                  and self.corner(NEAR[s])[2] < 0.03 for s, e in zip(base.SIDES, err))
    progress = float(np.mean([self.arm_progress(s) for s in base.SIDES]))
    return {'progress': progress, 'lost': out_of_reach or dropped,
            'time_left': self.time_left_fraction()}

  def make_expert(self, seed: int) -> 'FoldExpert':
    return FoldExpert(seed)


class FoldExpert(base.Expert):
  """Closed-loop scripted fold from privileged state, driven like a human teleoperator.

  Each arm, from whatever the state is: not holding its near corner -> hover over it (aiming with
  a small error that is corrected on the way down), descend, close; holding it -> lift, carry it
  over the far corner, lower, open; corner placed -> retreat upward. Human-like variation per
  episode: speed, lift height, a staggered start, pauses, action noise and, sometimes, a deliberate
  early release followed by a regrasp.
  """

  def __init__(self, seed: int, noise: float = 0.04, pause_prob: float = 0.03,
               regrasp_prob: float = 0.15, speed_range=(0.5, 1.0)):
    self._rng = np.random.default_rng(seed)
    self.noise = noise
    self.pause_prob = pause_prob
    self.regrasp_prob = regrasp_prob
    self.speed_range = speed_range
    self.reset()

  def reset(self) -> None:
    r = self._rng
    self.speed = r.uniform(*self.speed_range)
    self.lift = r.uniform(0.08, 0.13)
    self.aim_err = {s: r.normal(0.0, 0.015, 2) for s in base.SIDES}
    self.delay = {s: int(r.integers(0, 4)) for s in base.SIDES}
    self.regrasp = {s: bool(r.random() < self.regrasp_prob) for s in base.SIDES}
    self.grip_mag = r.uniform(0.6, 1.0)
    self.pause = 0

  def _arm_target(self, env: FoldEnv, s: str):
    """(grasp-point target [3], yaw, grip command) for arm ``s``."""
    p = env.ee_pos(s)
    near, far = env.corner(NEAR[s]), env.corner(FAR[s])
    held = env.held_corner(s)
    g = self.grip_mag
    if held is not None and held != NEAR[s]:
      return p, 0.0, -g  # Wrong corner: let go.
    if held == NEAR[s]:
      dist = np.linalg.norm(far[:2] - near[:2])
      if self.regrasp[s] and near[2] > 0.04 and dist > 0.15:
        self.regrasp[s] = False
        return p, 0.0, -g  # A deliberate early release; the approach branch regrasps.
      # Carry along a half circle about the fold line, so the cloth is never pulled taut.
      v = env.vertices()
      u = v[FAR[s]] - v[FAR[s] - N // 2 + 1]
      u[2] = 0.0
      u /= max(np.linalg.norm(u), 1e-6)
      radius = (N - 1) * SPACING / 2
      c = far - u * radius
      x = float((near - c)[:2] @ u[:2])
      theta = np.arctan2(max(near[2] - 0.004, 0.0) / self.lift, -x / radius)
      if theta < np.pi - 0.2 and dist > 0.03:
        if not self._partner_ready(env, s):  # Bimanual: wait at a low lift for the other arm.
          th = min(theta + 0.6, 0.5)
        else:
          th = min(theta + 0.6, np.pi)
        xy = c[:2] - u[:2] * radius * 0.97 * np.cos(th)
        return np.array([xy[0], xy[1], 0.012 + self.lift * np.sin(th)]), 0.0, g
      if dist > 0.012 or p[2] > 0.014:
        z = 0.006 if dist < 0.02 else max(p[2], 0.03)  # Press the corner down before letting go.
        return np.array([far[0], far[1], z]), 0.0, g
      return p, 0.0, -g  # Placed: open.
    placed = np.linalg.norm(near[:2] - far[:2]) < 0.6 * env.corner_tol and near[2] < 0.03
    if placed:
      return np.array([p[0], p[1], 0.15]), 0.0, -g
    dxy = np.linalg.norm(p[:2] - near[:2])
    aim = near[:2] + self.aim_err[s] * np.clip((dxy - 0.02) / 0.1, 0.0, 1.0)
    if dxy > 0.015:
      z = max(near[2] + 0.06, min(p[2], 0.15)) if dxy > 0.05 else near[2] + 0.04
      return np.array([aim[0], aim[1], z]), 0.0, -g
    if p[2] - near[2] > 0.01:
      return np.array([aim[0], aim[1], near[2]]), 0.0, -g
    return p, 0.0, g  # At the corner: close.

  @staticmethod
  def _partner_ready(env: FoldEnv, s: str) -> bool:
    """Whether the other arm holds its near corner or has placed it."""
    o = base.SIDES[1 - base.SIDES.index(s)]
    return env.held_corner(o) == NEAR[o] or env.arm_progress(o) >= 1.0

  def act(self, env: FoldEnv) -> np.ndarray:
    r = self._rng
    a = np.zeros(base.ACTION_DIM, np.float32)
    if self.pause > 0 or r.random() < self.pause_prob:
      self.pause = self.pause - 1 if self.pause > 0 else int(r.integers(1, 5))
      for i, s in enumerate(base.SIDES):
        a[i * base.ARM_ACTION_DIM + 4] = env.command(s).grip
      return a
    for i, s in enumerate(base.SIDES):
      j = i * base.ARM_ACTION_DIM
      if self.delay[s] > 0:
        self.delay[s] -= 1
        a[j + 4] = env.command(s).grip
        continue
      target, yaw, grip = self._arm_target(env, s)
      cmd = env.command(s)
      v = (target - cmd.pos) / env.max_delta_pos
      n = np.linalg.norm(v)
      if n > self.speed:
        v *= self.speed / n
      v += r.normal(0.0, self.noise, 3)
      dyaw = np.angle(np.exp(1j * (yaw - cmd.yaw))) / env.max_delta_yaw + r.normal(0, self.noise)
      a[j:j + 5] = np.clip([*v, dyaw, grip], -1.0, 1.0)
    return a
