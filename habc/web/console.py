"""The operator console: a web page for the person at the robot (and at the simulator).

What runs where
---------------
The environment, and with it the operator, lives in a rollout worker process (``habc.run.rollout``).
``ConsoleOperator`` is an operator (``act(env, policy_action) -> (action, is_intervention)``,
the protocol of ``habc.envs.hardware.TeleopOperator``), so it runs there too. The first one built
in a process starts that process's ``Console``: a Starlette app served by uvicorn in a background
thread, with one WebSocket per open page. The control loop never waits on the network: pages'
commands land in the operator under a lock, and each control step publishes the camera frames and
the step's state to the pages through the server's event loop.

* In simulation (``launch.py --task=fold --operator=console``) the console replaces the simulated
  operator: ``rollout.operator_factory`` is ``ConsoleOperator`` and ``rollout.env_factory`` is
  ``simulated_env``, which lets the person's verdict end an episode as on a station.
* On a station (``hw_<task>``) it is the default ``config.hardware.operator``: built inside each
  environment, as the station's other operators.

Settings reach the worker in the environment variable ``HABC_CONSOLE`` (JSON of
``ConsoleSettings``), set by launch.py before the workers start; they are runtime settings, not
part of a run's config identity, and the access token never lands in config.json.

Safety (docs/console.md)
------------------------
* Bound to 127.0.0.1 by default. Any other address needs the access token printed at start;
  without it a page may view but not control, and a wrong token is refused.
* One controlling page at a time; the others are view-only and say so.
* Deadman: during a takeover, a command older than ``deadman_s`` (default three control periods),
  no command yet, or a controlling page that went away, means the hold action (the arms stay
  where they are, the grippers as they are). A stale command is never executed. Each episode's
  holds, takeovers and rejected messages are written to the console log (``log_path``).
* Malformed, wrong-shape, out-of-range, NaN or inf commands are rejected at the server, with a
  message on the page. The environment's own safety stop stays the last line.
* If the web server stops while an episode runs, the operator returns a non-finite action, which
  the station's safety stop (and ``simulated_env``) turns into an invalid episode: never
  committed. The next episode then fails to start with ``ConsoleError``, which stops the run;
  everything committed before is intact, and re-running the command resumes.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import math
import os
import re
import sys
import threading
import time
from typing import Any

import numpy as np

from habc.web import server_common

ENV_VAR = 'HABC_CONSOLE'
OPERATOR = 'habc.web.console:ConsoleOperator'
SIM_ENV_FACTORY = 'habc.web.console:simulated_env'
# The project's action layout (habc.envs.base, not imported here: it loads MuJoCo).
SIDES = ('left', 'right')
ARM_FIELDS = ('dx', 'dy', 'dz', 'dyaw', 'grip')
ACTION_NAMES = tuple(f'{s}_{f}' for s in SIDES for f in ARM_FIELDS)
SIM_CAMERAS = ('top', 'wrist_left', 'wrist_right')
MAX_MESSAGE_CHARS = 4096
PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'console_page.html')


class ConsoleError(RuntimeError):
  """The console cannot serve (could not start, or its server stopped); the run stops here."""


# ------------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class ConsoleSettings:
  """How the console serves and behaves (runtime settings; ``HABC_CONSOLE`` holds them as JSON).

  host, port: where to listen (port 0: any free port, see ``url_file``).
  token: the access token; required to control when set. Made at start when ``host`` is not
    loopback and none is given.
  deadman_s: a takeover command older than this is not executed (the hold action is); 0:
    ``deadman_periods`` control periods of the environment.
  wait_for_start: between episodes, wait for the person's "scene reset, start next episode".
  realtime: run the control loop no faster than the environment's control rate (a simulator
    would otherwise run as fast as it computes, too fast for a person).
  camera_size: size of the frames rendered for the page when the observation has no cameras
    (simulation with state observations).
  log_path: the console log, one JSON line per episode ('' for none).
  url_file: written with the page URL once the server listens ('' for none).
  workdir: the run directory, for the learner's step shown on the page ('' to skip).
  episodes_per_round: shown as "episode i of N" ('0': not shown).
  speed: the page's initial teleop speed scale (0..1].
  """

  host: str = '127.0.0.1'
  port: int = 8765
  token: str = ''
  deadman_s: float = 0.0
  deadman_periods: float = 3.0
  wait_for_start: bool = True
  realtime: bool = True
  camera_size: int = 128
  jpeg_quality: int = 85
  log_path: str = ''
  url_file: str = ''
  workdir: str = ''
  episodes_per_round: int = 0
  speed: float = 0.5

  def resolved(self) -> 'ConsoleSettings':
    """With the token made when the address needs one and has none."""
    return dataclasses.replace(self, token=server_common.resolve_token(self.host, self.token))

  def to_env(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_env(cls, environ=None) -> 'ConsoleSettings':
    """From ``HABC_CONSOLE`` (defaults when unset); unknown keys are an error naming them."""
    text = (os.environ if environ is None else environ).get(ENV_VAR, '')
    if not text:
      return cls()
    values = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f'{ENV_VAR}: unknown console settings {unknown}; known: {sorted(known)}.')
    return cls(**values)

  def url(self, port: int | None = None, with_token: bool = True) -> str:
    return server_common.page_url(self.host, self.port if port is None else port,
                                  self.token if with_token else '')

  def check(self) -> None:
    """Raises ValueError naming the setting that is out of range."""
    if not 0 <= int(self.port) <= 65535:
      raise ValueError(f'console port {self.port} is not in 0..65535.')
    if self.deadman_s < 0 or self.deadman_periods <= 0:
      raise ValueError('console deadman time must be positive (deadman_s >= 0, 0: '
                       f'deadman_periods > 0); got {self.deadman_s}, {self.deadman_periods}.')
    if not 0 < self.speed <= 1:
      raise ValueError(f'console speed {self.speed} must be in (0, 1].')
    if not server_common.is_loopback(self.host) and not self.token:
      raise ValueError(f'console host {self.host} is not loopback: it needs an access token '
                       '(ConsoleSettings.resolved() makes one).')


# ------------------------------------------------------------------------------------------------
# Helpers on environments (duck-typed: the station, the simulated tasks, test stand-ins).


def hold_action(env, dim: int) -> np.ndarray:
  """The action that keeps the arms where they are and the grippers as they are."""
  fn = getattr(env, 'hold_action', None)
  if callable(fn):
    return np.asarray(fn(), np.float32).reshape(dim)
  a = np.zeros(dim, np.float32)
  command = getattr(env, 'command', None)  # A simulated task: its commanded gripper state.
  if callable(command) and dim == len(ACTION_NAMES):
    for i, side in enumerate(SIDES):
      a[(i + 1) * len(ARM_FIELDS) - 1] = 1.0 if command(side).closed else -1.0
  return a


def camera_images(env, size: int) -> dict:
  """The current frame of every camera the environment shows: {name: uint8 [H, W, 3]}."""
  fn = getattr(env, 'camera_images', None)
  if callable(fn):
    return dict(fn())
  render = getattr(env, 'render', None)
  if callable(render):
    cameras = tuple(getattr(env, 'cameras', ()) or ()) or SIM_CAMERAS
    return {c: render(c, size) for c in cameras}
  return {}


def encode_jpeg(image: np.ndarray, quality: int) -> str:
  import simplejpeg
  data = simplejpeg.encode_jpeg(np.ascontiguousarray(np.asarray(image, np.uint8)[..., :3]),
                                quality=int(quality), colorspace='RGB')
  return base64.b64encode(data).decode('ascii')


def describe_episode(episode_id: str, kind: str) -> dict:
  """'round001-00003' -> {'group': 'round001', 'index': 3, 'label': 'round 1, episode 4'}."""
  match = re.match(r'^(.*?)[-_]?(\d+)$', str(episode_id))
  group, index = (match.group(1), int(match.group(2))) if match else (str(episode_id), 0)
  label = str(episode_id)
  m = re.match(r'^round(\d+)$', group)
  if m:
    label = f'round {int(m.group(1))}, episode {index + 1}'
  m = re.match(r'^eval(\d+)$', group)
  if m:
    label = f'evaluation after round {int(m.group(1))}, episode {index + 1}'
  m = re.match(r'^station(\d+)$', group)
  if m:
    label = f'station {int(m.group(1))}, episode {index + 1}'
  return {'group': group, 'index': index, 'label': label, 'kind': kind}


def learner_step(workdir: str) -> int | None:
  """The newest learner step a run directory shows: logs/learner.jsonl's last row (actor/learner
  split), else the newest checkpoint directory; None when neither is there."""
  if not workdir or not os.path.isdir(workdir):
    return None
  step = None
  log = os.path.join(workdir, 'logs', 'learner.jsonl')
  try:
    with open(log, 'rb') as f:
      f.seek(max(0, os.path.getsize(log) - 4096))
      for line in f.read().decode(errors='replace').splitlines()[::-1]:
        try:
          step = int(json.loads(line)['step'])
          break
        except (ValueError, KeyError, TypeError):
          continue
  except OSError:
    pass
  try:
    steps = [int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.isdigit()]
    if steps:
      step = max(steps) if step is None else max(step, max(steps))
  except OSError:
    pass
  return step


def _ranges(steps: list[tuple[int, str]]) -> list[list]:
  """[(step, reason)] (sorted) -> [[first, last, reason]] runs."""
  out: list[list] = []
  for step, reason in steps:
    if out and out[-1][2] == reason and out[-1][1] == step - 1:
      out[-1][1] = step
    else:
      out.append([step, step, reason])
  return out


# ------------------------------------------------------------------------------------------------
# Validation of a page's messages.


class BadMessage(ValueError):
  """A page's message was rejected; the text goes back to the page."""


def parse_message(text: Any, action_dim: int) -> dict:
  """A page's message -> a checked dict, or BadMessage saying what is wrong with it.

  Messages: {'type': 'control', 'takeover': bool, 'action': [action_dim numbers in [-1, 1]]
  (required with takeover), 'seq': int, 't': ms, 'key': bool}; {'type': 'outcome',
  'success': bool}; {'type': 'start'}; {'type': 'claim'}; {'type': 'release'}; {'type': 'ping'}.
  """
  if not isinstance(text, str):
    raise BadMessage('binary messages are not accepted; send JSON text')
  if len(text) > MAX_MESSAGE_CHARS:
    raise BadMessage(f'message of {len(text)} characters rejected (at most {MAX_MESSAGE_CHARS})')
  try:
    msg = json.loads(text)
  except ValueError:
    raise BadMessage('malformed message rejected: not JSON') from None
  if not isinstance(msg, dict) or not isinstance(msg.get('type'), str):
    raise BadMessage('malformed message rejected: expected an object with a "type"')
  kind = msg['type']
  if kind == 'control':
    takeover = msg.get('takeover')
    if not isinstance(takeover, bool):
      raise BadMessage('control message rejected: "takeover" must be true or false')
    out = {'type': kind, 'takeover': takeover, 'action': None, 'seq': None, 't': None,
           'key': bool(msg.get('key', False) is True)}
    action = msg.get('action')
    if takeover or action is not None:
      if not isinstance(action, list):
        raise BadMessage(f'command rejected: "action" must be a list of {action_dim} numbers')
      if len(action) != action_dim:
        raise BadMessage(f'command rejected: wrong shape, {len(action)} values for an action of '
                         f'{action_dim} ({", ".join(ACTION_NAMES) if action_dim == 10 else ""})')
      if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in action):
        raise BadMessage('command rejected: every action value must be a number')
      values = np.asarray(action, np.float64)
      if not np.all(np.isfinite(values)):
        raise BadMessage('command rejected: NaN or infinite value')
      if np.any(np.abs(values) > 1.0):
        raise BadMessage('command rejected: values must lie in [-1, 1]')
      out['action'] = values.astype(np.float32)
    for name in ('seq', 't'):
      value = msg.get(name)
      if value is not None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            not math.isfinite(value):
          raise BadMessage(f'control message rejected: "{name}" must be a number')
        out[name] = value
    return out
  if kind == 'outcome':
    if not isinstance(msg.get('success'), bool):
      raise BadMessage('outcome rejected: "success" must be true or false')
    return {'type': kind, 'success': msg['success']}
  if kind in ('start', 'claim', 'release', 'ping'):
    return {'type': kind}
  raise BadMessage(f'unknown message type {kind[:40]!r} rejected')


# ------------------------------------------------------------------------------------------------
# The console: one per process, shared by that process's episodes.


class _Client:
  """One open page (lives in the server's event loop)."""

  def __init__(self, client_id: int, ws, authorised: bool):
    import asyncio
    self.id = client_id
    self.ws = ws
    self.authorised = authorised
    self.role = 'viewer'
    self.reason = ''
    self.outbox: collections.deque = collections.deque(maxlen=64)
    self.event = asyncio.Event()
    self.sent_version = -1


class Console:
  """The server and the state shared between it and the control loop (thread-safe)."""

  def __init__(self, settings: ConsoleSettings | None = None, log=None):
    settings = (settings or ConsoleSettings()).resolved()
    settings.check()
    self.settings = settings
    self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    self._lock = threading.RLock()
    self._started = threading.Condition(self._lock)
    self.server: server_common.ServerThread | None = None
    self.port = None
    self._clients: dict[int, _Client] = {}
    self._next_id = 0
    self.controller: int | None = None
    self.operator: 'ConsoleOperator | None' = None
    self.phase = 'idle'  # 'idle' (no episode), 'waiting' (for the person's start), 'running'.
    self._start_requested = False
    self._closing = False
    self.episode: dict = {}
    self.episodes: list[dict] = []
    self.group = ''
    self.rejected = 0
    self._state: dict = {}
    self._frames: dict = {}
    self._version = 0
    self._text_cache = (-1, '')
    self._learner = (0.0, None)
    self.latency = {'key_to_applied_ms': collections.deque(maxlen=5000),
                    'key_to_server_ms': collections.deque(maxlen=5000)}

  # ----- server lifetime ----------------------------------------------------------------------

  def start(self) -> 'Console':
    app = build_app(self)
    self.server = server_common.ServerThread(app, self.settings.host, self.settings.port,
                                             name='habc-console')
    self.server.on_exit(self._server_ended)
    try:
      self.server.start()
    except server_common.ServerError as e:
      raise ConsoleError(f'the operator console could not start: {e}') from None
    self.port = self.server.port
    url = self.url()
    if self.settings.url_file:
      tmp = f'{self.settings.url_file}.tmp-{os.getpid()}'
      with open(tmp, 'w') as f:
        f.write(url + '\n')
      os.replace(tmp, self.settings.url_file)
    note = '' if not self.settings.token else (
        ' (control needs this token; without it the page is view-only)')
    self.log(f'console: serving the operator console at {url}{note}')
    return self

  def url(self, with_token: bool = True) -> str:
    return self.settings.url(self.port, with_token)

  @property
  def alive(self) -> bool:
    return self.server is not None and self.server.alive and not self._closing

  def failure(self) -> str:
    if self.server is None:
      return 'not started'
    return self.server.failure or ('stopped' if not self.server.alive else '')

  def _server_ended(self) -> None:
    with self._lock:
      self._clients.clear()
      self.controller = None
      self._started.notify_all()
    if not self._closing:
      self.log(f'console: the web server stopped ({self.failure() or "no reason given"}); '
               'the episode in progress will not be committed')

  def close(self) -> None:
    self._closing = True
    if self.server is not None:
      self.server.stop()

  def check_alive(self) -> None:
    if not self.alive:
      raise ConsoleError(
          f'the operator console\'s web server is not running ({self.failure() or "closed"}). '
          'Nothing after the last committed episode was written; re-run the same command to '
          'resume.')

  # ----- publishing (control loop -> pages) ---------------------------------------------------

  def _changed(self) -> None:
    """Marks the state changed and wakes every page's sender (any thread)."""
    with self._lock:
      self._version += 1
    if self.server is not None:
      self.server.call(self._wake_all)

  def _wake_all(self) -> None:  # In the server's loop.
    for client in list(self._clients.values()):
      client.event.set()

  def _send_to(self, client: _Client, message: dict) -> None:  # In the server's loop.
    client.outbox.append(json.dumps(message))
    client.event.set()

  def _snapshot_text(self) -> tuple[int, str]:
    """The state message of the current version (built once per version)."""
    with self._lock:
      version = self._version
      if self._text_cache[0] == version:
        return self._text_cache
      now = time.monotonic()
      if now - self._learner[0] > 2.0:
        self._learner = (now, learner_step(self.settings.workdir))
      op = self.operator
      state = dict(self._state)
      state.update(type='state', version=version, phase=self.phase, episode=dict(self.episode),
                   episodes=list(self.episodes[-200:]), learner_step=self._learner[1],
                   frames=self._frames, controller_present=self.controller is not None,
                   wait_for_start=bool(self.settings.wait_for_start),
                   action_names=list(ACTION_NAMES), speed=self.settings.speed,
                   server_time=time.time())
      if op is not None:
        state.update(op.live_state())
      self._text_cache = (version, json.dumps(state))
      return self._text_cache

  def publish_step(self, state: dict, frames: dict, frame_time: float) -> None:
    """One control step's state and camera frames (from the control loop)."""
    encoded = {name: encode_jpeg(image, self.settings.jpeg_quality)
               for name, image in frames.items()}
    with self._lock:
      self._state = dict(state)
      if encoded:
        self._frames = {'t': frame_time, 'images': encoded,
                        'shapes': {k: list(np.shape(v)[:2]) for k, v in frames.items()}}
    self._changed()

  # ----- episodes -----------------------------------------------------------------------------

  def begin_episode(self, operator: 'ConsoleOperator', info: dict) -> None:
    self.check_alive()
    with self._lock:
      if info.get('group') != self.group:
        self.group = info.get('group', '')
        self.episodes = []
      self.operator = operator
      operator._controller = self.controller is not None  # pylint: disable=protected-access
      self.episode = dict(info)
      self.phase = 'idle'
      self._start_requested = False
    self._changed()

  def wait_for_start(self, env, size: int) -> None:
    """Blocks until the controlling page says the scene is reset (when the settings ask for it)."""
    self.check_alive()
    if not self.settings.wait_for_start:
      with self._lock:
        self.phase = 'running'
      self._changed()
      return
    with self._lock:
      self.phase = 'waiting'
      self._start_requested = False
    self.log('console: waiting for "scene reset, start next episode" on the page '
             f'({self.url(with_token=False)})')
    next_frames = 0.0
    while True:
      with self._lock:
        if self._start_requested:
          self.phase = 'running'
          break
        self._started.wait(0.1)
        if self._start_requested:
          self.phase = 'running'
          break
      self.check_alive()
      if time.monotonic() >= next_frames:  # The scene as the person resets it.
        next_frames = time.monotonic() + 0.5
        frames = camera_images(env, size)
        if frames:
          with self._lock:
            state = dict(self._state)
          self.publish_step(state, frames, time.time())
        else:
          self._changed()
    self._changed()

  def end_episode(self, operator: 'ConsoleOperator', row: dict, record: dict) -> None:
    with self._lock:
      self.episodes.append(row)
      if self.operator is operator:
        self.operator = None
      self.phase = 'idle'
    if self.settings.log_path:
      os.makedirs(os.path.dirname(os.path.abspath(self.settings.log_path)), exist_ok=True)
      with open(self.settings.log_path, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
    self._changed()

  # ----- pages (in the server's loop) ---------------------------------------------------------

  def admit(self, ws, token: str | None) -> _Client | None:
    """A new page: None when its token is wrong; else a client with its role."""
    need = bool(self.settings.token)
    if token and need and not server_common.token_matches(token, self.settings.token):
      return None
    with self._lock:
      self._next_id += 1
      client = _Client(self._next_id, ws, authorised=(not need) or bool(token))
      self._clients[client.id] = client
      self._assign(client)
    return client

  def _assign(self, client: _Client) -> None:
    if not client.authorised:
      client.role, client.reason = 'viewer', (
          'view only: this console needs its access token to control; open the URL printed '
          'at start')
    elif self.controller is None:
      client.role, client.reason = 'controller', ''
      self.controller = client.id
      if self.operator is not None:
        self.operator.controller_changed(True)
    else:
      client.role, client.reason = 'viewer', 'view only: another page is in control'
    self._send_role(client)

  def _send_role(self, client: _Client) -> None:
    self._send_to(client, {'type': 'role', 'role': client.role, 'reason': client.reason,
                           'can_claim': client.authorised and self.controller is None})

  def leave(self, client: _Client) -> None:
    with self._lock:
      self._clients.pop(client.id, None)
      if self.controller == client.id:
        self._release()

  def _release(self) -> None:
    self.controller = None
    if self.operator is not None:
      self.operator.controller_changed(False)
    for other in self._clients.values():
      if other.authorised:
        self._send_to(other, {'type': 'role', 'role': other.role,
                              'reason': 'control is free: press "Take control"',
                              'can_claim': True})
    self._changed()

  def reject(self, client: _Client, text: str) -> None:
    with self._lock:
      self.rejected += 1
      if self.operator is not None:
        self.operator.rejected += 1
    self._send_to(client, {'type': 'error', 'message': text})

  def handle(self, client: _Client, text: Any) -> None:
    """One message from a page."""
    op = self.operator
    dim = op.action_dim if op is not None else len(ACTION_NAMES)
    try:
      msg = parse_message(text, dim)
    except BadMessage as e:
      self.reject(client, str(e))
      return
    kind = msg['type']
    if kind == 'ping':
      self._send_to(client, {'type': 'pong', 'server_time': time.time()})
      return
    if kind == 'claim':
      with self._lock:
        if not client.authorised:
          self.reject(client, client.reason or 'view only')
        elif self.controller is None:
          self._assign(client)
          self._changed()
        elif self.controller != client.id:
          self.reject(client, 'another page is in control')
      return
    if kind == 'release':
      with self._lock:
        if self.controller == client.id:
          client.role, client.reason = 'viewer', 'you released control'
          self._send_role(client)
          self._release()
      return
    if self.controller != client.id:
      self.reject(client, f'{kind} rejected: {client.reason or "this page does not control"}')
      return
    with self._lock:
      op, phase = self.operator, self.phase
    if kind == 'start':
      if phase != 'waiting':
        self.reject(client, 'no episode is waiting to start')
        return
      with self._lock:
        self._start_requested = True
        self._started.notify_all()
      self._changed()
      return
    if op is None or phase != 'running':
      if kind == 'outcome' or msg.get('takeover'):
        self.reject(client, f'{kind} rejected: no episode is running')
      return
    if kind == 'outcome':
      if not callable(getattr(op.env, 'report_outcome', None)):
        self.reject(client, 'outcome rejected: this environment takes no verdicts (simulated '
                    'runs take them through habc.web.console:simulated_env)')
        return
      op.report_outcome(msg['success'])
      self._send_to(client, {'type': 'info', 'message': 'outcome: ' + (
          'success' if msg['success'] else 'failure') + '; the episode ends at the next step'})
      self._changed()
      return
    received_ms = time.time() * 1000.0
    if msg['key'] and msg['t'] is not None:
      self.latency['key_to_server_ms'].append(received_ms - float(msg['t']))
    if msg['takeover']:
      op.control(msg['action'], seq=msg['seq'], t_key=msg['t'] if msg['key'] else None)
    else:
      op.hand_back()

  def status(self) -> dict:
    """What /api/status shows (no secrets)."""
    with self._lock:
      lat = {k: list(v)[-200:] for k, v in self.latency.items()}
      return {'phase': self.phase, 'episode': dict(self.episode),
              'episodes': list(self.episodes), 'controller_present': self.controller is not None,
              'pages': len(self._clients), 'rejected': self.rejected,
              'control': (self.operator.live_state()['control'] if self.operator else 'policy'),
              'latency_ms': lat, 'token_required': bool(self.settings.token),
              'deadman_s': (self.operator.deadman_s if self.operator else None)}


_CONSOLE: Console | None = None
_CONSOLE_LOCK = threading.Lock()


def get_console(settings: ConsoleSettings | None = None) -> Console:
  """This process's console, started on first use (settings: given, else ``HABC_CONSOLE``)."""
  global _CONSOLE
  with _CONSOLE_LOCK:
    if _CONSOLE is None:
      console = Console(settings or ConsoleSettings.from_env())
      console.start()
      _CONSOLE = console
    _CONSOLE.check_alive()
    return _CONSOLE


def close_console() -> None:
  """Stops this process's console (tests; a worker's ends with its process)."""
  global _CONSOLE
  with _CONSOLE_LOCK:
    if _CONSOLE is not None:
      _CONSOLE.close()
      _CONSOLE = None


# ------------------------------------------------------------------------------------------------
# The operator.


class ConsoleOperator:
  """The page's person as the episode's operator: takeovers, teleop commands and verdicts.

  The protocol of ``habc.envs.hardware.TeleopOperator`` (``take_over``, ``command``,
  ``hand_back``, ``report_outcome``, ``reset``, ``act``), fed by the console's pages, plus the
  deadman, real-time pacing and the episode hooks of ``habc.run.rollout`` (``begin_episode``,
  ``end_episode``). Built as ``Class(config, seed)``: ``config`` (the operator or hardware
  section) is not read; the settings come from ``HABC_CONSOLE``.
  """

  name = 'console'

  def __init__(self, config=None, seed=None, *, console: Console | None = None):
    del config
    self.seed = seed
    self.console = console or get_console()
    settings = self.console.settings
    self._lock = threading.Lock()
    self._active = False
    self._latest = None
    self._latest_at = 0.0
    self._latest_seq = None
    self._key_time = None  # Time (ms) of the newest key event not yet reflected in a step.
    self._applied_seq = None
    self._outcome = None
    self._controller = self.console.controller is not None
    self.takeovers = 0
    self.rejected = 0
    self.env = None
    self.action_dim = len(ACTION_NAMES)
    self.control_hz = 10.0
    self.deadman_s = settings.deadman_s or settings.deadman_periods / self.control_hz
    self._next_tick = None
    self._began = False
    self._waited = False
    self._new_episode_record()

  def _new_episode_record(self) -> None:
    self.steps = 0
    self.human_steps = 0
    self.holds: list[tuple[int, str]] = []
    self.events: list[list] = []
    self.verdict = None
    self._live = {'control': 'policy', 'hold_reason': '', 'step': 0}

  # ----- the TeleopOperator protocol (any thread) ---------------------------------------------

  def take_over(self, action=None) -> None:
    with self._lock:
      self._start_takeover()
      if action is not None:
        self._set_command(np.asarray(action, np.float32), None, None)

  def command(self, action) -> None:
    with self._lock:
      self._set_command(np.asarray(action, np.float32), None, None)

  def control(self, action, seq=None, t_key=None) -> None:
    """A page's command during a takeover (checked by ``parse_message``)."""
    with self._lock:
      self._start_takeover()
      self._set_command(np.asarray(action, np.float32), seq, t_key)

  def hand_back(self) -> None:
    with self._lock:
      if self._active:
        self.events.append([self.steps, 'hand_back'])
      self._active = False
      self._latest = None

  def report_outcome(self, success: bool) -> None:
    with self._lock:
      self._outcome = bool(success)
      self.verdict = bool(success)
      self.events.append([self.steps, 'verdict', 'success' if success else 'failure'])

  def controller_changed(self, present: bool) -> None:
    with self._lock:
      if self._controller and not present:
        self.events.append([self.steps, 'page_lost'])
      self._controller = bool(present)
      if not present:
        self._latest = None  # A reconnecting page must send a fresh command.

  @property
  def active(self) -> bool:
    with self._lock:
      return self._active

  def _start_takeover(self) -> None:
    if not self._active:
      self.takeovers += 1
      self.events.append([self.steps, 'take_over'])
      self._latest = None
    self._active = True

  def _set_command(self, action, seq, t_key) -> None:
    if action.shape != (self.action_dim,):
      raise ValueError(f'ConsoleOperator: action of shape {action.shape}; expected '
                       f'[{self.action_dim}].')
    self._latest = action.copy()
    self._latest_at = time.monotonic()
    self._latest_seq = seq
    if t_key is not None:
      self._key_time = t_key

  # ----- episode hooks (the control loop) -----------------------------------------------------

  def begin_episode(self, request, env) -> None:
    """Called by the rollout worker when the episode's environment is built, before reset."""
    self.env = env
    spec = env.action_spec()
    self.action_dim = int(spec.shape[0])
    self.control_hz = float(getattr(env, 'control_hz', 0.0) or 10.0)
    s = self.console.settings
    self.deadman_s = s.deadman_s or s.deadman_periods / self.control_hz
    info = describe_episode(request.episode_id, request.kind)
    info.update(id=str(request.episode_id), seed=int(request.seed),
                checkpoint=int(request.policy_version),
                task=str(getattr(env, 'task_name', '')),
                instruction=str(getattr(env, 'instruction', '')),
                time_limit=int(getattr(env, 'time_limit', 0) or 0), control_hz=self.control_hz,
                of=int(s.episodes_per_round) if info['group'].startswith('round') else 0,
                evaluation=request.kind == 'eval', deadman_s=self.deadman_s)
    self.request = request
    self._began = True
    self.console.begin_episode(self, info)

  def reset(self) -> None:
    """A new episode under policy control; waits for the person's start (once per episode)."""
    with self._lock:
      self._active = False
      self._latest = None
      self._outcome = None
    if self._began and not self._waited:
      self._waited = True
      self.console.wait_for_start(self.env, self.console.settings.camera_size)
      self._next_tick = None

  def end_episode(self, summary: dict) -> None:
    """Called by the rollout worker with the episode's result (no arrays)."""
    outcome = ('invalid' if summary.get('invalid') else
               'success' if summary.get('success') else 'failure')
    row = {'id': str(summary.get('episode_id', '')), 'kind': summary.get('kind', ''),
           'outcome': outcome, 'length': int(summary.get('length', self.steps)),
           'takeovers': int(self.takeovers), 'operator_steps': int(summary.get(
               'intervention_steps', self.human_steps)),
           'hold_steps': len(self.holds), 'verdict': self.verdict}
    record = dict(row, time=time.time(), seed=self.seed, events=self.events,
                  holds=_ranges(self.holds), rejected_messages=self.rejected,
                  deadman_s=self.deadman_s, checkpoint=getattr(self, 'request', None)
                  and int(self.request.policy_version))
    self.console.end_episode(self, row, record)

  # ----- the control step ---------------------------------------------------------------------

  def _pace(self) -> None:
    if not self.console.settings.realtime:
      return
    period = 1.0 / self.control_hz
    now = time.monotonic()
    if self._next_tick is not None and now < self._next_tick:
      time.sleep(self._next_tick - now)
      now = time.monotonic()
    behind = self._next_tick is None or now - self._next_tick > period
    self._next_tick = (now if behind else self._next_tick) + period

  def act(self, env, policy_action):
    """The executed action and whether the person produced it (one call per control step)."""
    if self.env is None:  # Used without the rollout's hooks (e.g. a bare HardwareEnv).
      self.env, self.action_dim = env, int(np.size(policy_action))
    self._pace()
    policy_action = np.asarray(policy_action, np.float32)
    step = self.steps
    if not self.console.alive:
      # The page can no longer reach the robot: stop it (non-finite -> the environment's safety
      # stop), and the episode is invalid, never committed.
      self.events.append([step, 'server_stopped'])
      self._live = {'control': 'stopped', 'hold_reason': 'server stopped', 'step': step}
      self.steps += 1
      return np.full(self.action_dim, np.nan, np.float32), True
    now = time.monotonic()
    with self._lock:
      active, latest, at = self._active, self._latest, self._latest_at
      seq, controller = self._latest_seq, self._controller
      outcome, self._outcome = self._outcome, None
      t_key = self._key_time if active and latest is not None and controller and \
          now - at <= self.deadman_s else None
      if t_key is not None:
        self._key_time = None
    if outcome is not None:
      report = getattr(env, 'report_outcome', None)
      if callable(report):
        report(outcome)
    hold = hold_action(env, self.action_dim)
    reason = ''
    if not active:
      action, intervention, control = policy_action, False, 'policy'
    else:
      intervention = True
      if not controller:
        reason = 'disconnected'
      elif latest is None:
        reason = 'no_command'
      elif now - at > self.deadman_s:
        reason = 'deadman'
      if reason:
        action, control = hold, 'hold'
        self.holds.append((step, reason))
      else:
        action, control = latest, 'human'
        self._applied_seq = seq
        if t_key is not None:  # The first step that executes a command sent after a key event.
          self.console.latency['key_to_applied_ms'].append(time.time() * 1000.0 - t_key)
      self.human_steps += 1
    executed = getattr(env, 'last_action', None)
    self._live = {'control': control, 'hold_reason': reason, 'step': step}
    state = {
        'step': step, 'control': control, 'hold_reason': reason,
        'proposed': [round(float(v), 4) for v in policy_action],
        'executed': [round(float(v), 4) for v in action],
        'last_executed': (None if executed is None or step == 0 else
                          [round(float(v), 4) for v in np.asarray(executed).reshape(-1)]),
        'clipped': bool(getattr(env, 'last_clipped', False)),
        'hold': [round(float(v), 4) for v in hold],
        'applied_seq': self._applied_seq, 'takeovers': self.takeovers,
        'human_steps': self.human_steps, 'hold_steps': len(self.holds),
        'verdict': self.verdict,
    }
    frames = camera_images(env, self.console.settings.camera_size)
    self.console.publish_step(state, frames, time.time())
    self.steps += 1
    return np.asarray(action, np.float32).copy(), intervention

  def live_state(self) -> dict:
    return dict(self._live, takeovers=self.takeovers, human_steps=self.human_steps,
                deadman_s=self.deadman_s, rejected=self.rejected)


# ------------------------------------------------------------------------------------------------
# Simulation: the person's verdict ends an episode, as on a station.


class ConsoleSimEnv:
  """A simulated task whose episodes the operator's verdict can end (``report_outcome``), with
  the station's hold action and a safety stop for non-finite actions (an invalid episode).

  A verdict ends the episode at the next step: success as a terminal (LAST, discount 0, reward
  1), failure as a truncation. The task's own predicate and time limit still end it as before.
  Everything else is the wrapped task's (attributes are forwarded).
  """

  def __init__(self, env, camera_size: int = 128):
    self._env = env
    self._camera_size = int(camera_size)
    self._outcome = None
    self._last_obs: dict = {}
    self.episode_invalid = False
    self.invalid_reason = ''

  def __getattr__(self, name):
    return getattr(self._env, name)

  def reset(self):
    self._outcome = None
    self.episode_invalid = False
    self.invalid_reason = ''
    ts = self._env.reset()
    self._last_obs = ts.observation
    return ts

  def step(self, action):
    import dm_env
    a = np.asarray(action, np.float32)
    if not np.all(np.isfinite(a)):
      # The station's safety stop: nothing executed, the episode ends without a label.
      self.episode_invalid = True
      self.invalid_reason = f'non-finite action at step {self._env.step_count}'
      self._env._needs_reset = True  # pylint: disable=protected-access
      return dm_env.truncation(0.0, self._last_obs, discount=1.0)
    ts = self._env.step(a)
    self._last_obs = ts.observation
    if self._outcome is not None and not ts.last():
      success, self._outcome = self._outcome, None
      self._env._needs_reset = True  # pylint: disable=protected-access
      if success:
        return dm_env.termination(1.0, ts.observation)
      return dm_env.truncation(0.0, ts.observation, discount=1.0)
    return ts

  def report_outcome(self, success: bool) -> None:
    self._outcome = bool(success)

  def hold_action(self) -> np.ndarray:
    return hold_action(self._env, len(ACTION_NAMES))

  def camera_images(self) -> dict:
    cameras = tuple(self._env.cameras)
    if cameras and all(c in self._last_obs for c in cameras):
      return {c: self._last_obs[c] for c in cameras}
    return {c: self._env.render(c, self._camera_size) for c in SIM_CAMERAS}


def simulated_env(task: str, *, seed: int, image_size: int = 64, cameras=SIM_CAMERAS,
                  time_limit=None) -> ConsoleSimEnv:
  """``rollout.env_factory`` of a simulated run with the console (signature of habc.envs.make)."""
  import habc.envs
  settings = ConsoleSettings.from_env()
  if os.environ.get(ENV_VAR):
    get_console(settings)  # Live from the first environment of the run's workers on.
  env = habc.envs.make(task, seed=seed, image_size=image_size, cameras=cameras,
                       time_limit=time_limit)
  return ConsoleSimEnv(env, settings.camera_size)


# ------------------------------------------------------------------------------------------------
# The web app.


def page_html() -> str:
  with open(PAGE_FILE, encoding='utf-8') as f:
    return f.read()


SECURITY_HEADERS = {
    'Cache-Control': 'no-store',
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Content-Security-Policy': ("default-src 'none'; img-src 'self' data:; style-src "
                                "'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
}


def build_app(console: Console):
  """The Starlette app: ``/`` (the page), ``/ws`` (its WebSocket), ``/api/status``."""
  import asyncio
  from starlette.applications import Starlette
  from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
  from starlette.routing import Route, WebSocketRoute

  bound = console.settings.host
  html = page_html()

  def refused(request) -> PlainTextResponse | None:
    if not server_common.host_allowed(request.headers.get('host', ''), bound):
      return PlainTextResponse('Host not allowed for this console.', 403, headers=SECURITY_HEADERS)
    token = request.query_params.get('token')
    if token and not (console.settings.token and
                      server_common.token_matches(token, console.settings.token)):
      if console.settings.token:
        return PlainTextResponse('Refused: wrong access token.', 403, headers=SECURITY_HEADERS)
    return None

  async def page(request):
    return refused(request) or HTMLResponse(html, headers=SECURITY_HEADERS)

  async def status(request):
    return refused(request) or JSONResponse(console.status(), headers=SECURITY_HEADERS)

  async def socket(websocket):
    host = websocket.headers.get('host', '')
    if not (server_common.host_allowed(host, bound) and
            server_common.origin_allowed(websocket.headers.get('origin'), host)):
      await websocket.close(code=4403)  # Before accept: the handshake gets HTTP 403.
      return
    await websocket.accept()
    client = console.admit(websocket, websocket.query_params.get('token'))
    if client is None:
      await websocket.send_text(json.dumps({'type': 'refused',
                                            'message': 'Refused: wrong access token.'}))
      await websocket.close(code=4401, reason='wrong access token')
      return

    async def sender():
      while True:
        await client.event.wait()
        client.event.clear()
        while client.outbox:
          await websocket.send_text(client.outbox.popleft())
        version, text = console._snapshot_text()  # pylint: disable=protected-access
        if version != client.sent_version:
          client.sent_version = version
          await websocket.send_text(text)

    client.event.set()
    task = asyncio.create_task(sender())
    try:
      while True:
        message = await websocket.receive()
        if message['type'] == 'websocket.disconnect':
          break
        text = message.get('text')
        console.handle(client, text if text is not None else message.get('bytes'))
    except Exception:  # pylint: disable=broad-except
      pass  # A dropped connection: the page is gone.
    finally:
      task.cancel()
      console.leave(client)

  async def favicon(request):
    return Response(status_code=204)

  return Starlette(routes=[Route('/', page), Route('/api/status', status),
                           Route('/favicon.ico', favicon), WebSocketRoute('/ws', socket)])
