"""Episodes with the policy in the loop: environment worker processes, batched policy in the main.

Shape of a collection
---------------------
Each worker process owns one environment at a time (built per episode from the episode's seed, so
an episode does not depend on which worker ran it) and, for online rollouts, a simulated operator.
The main process holds the policy. Whenever workers wait for an action chunk, the main process
gathers the observations of all workers waiting at that moment, runs the policy on them in calls
of one fixed size (``pad_to`` rows, the last call padded; ``rollout.policy_batch``), and sends
each worker its chunk; the other workers keep stepping meanwhile (``run_episodes(...,
lockstep=True)``: one call per decision point for all workers instead). Each row of the call
carries its noise id (episode seed, decision index), from
which the policy draws that row's noise: an episode's actions do not depend on which other
episodes shared its calls, so neither serving order changes an episode. A worker executes
``execute_steps`` control steps of its chunk, asking the operator at every step whether it takes
over (``act(env, policy_action) -> (action, is_intervention)``), and records both the executed
action and the policy's proposal. A finished episode goes back to the main process as the episode
dict of docs/interfaces.md section 2, which the caller writes to RLDS.

Worker processes never import TensorFlow (MuJoCo's software rendering crashes next to it): they
are started with the ``spawn`` method and import only numpy and the environment package; each
checks ``sys.modules`` after its imports and reports a violation as an error.

Demonstrations run entirely inside a worker (``habc.run.recorder``: the scripted expert, no policy).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from multiprocessing.connection import wait as wait_connections
import os
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from habc.symbols import load_symbol


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
  """What every worker needs to build its environments (picklable)."""

  task: str
  image_size: int = 64
  cameras: tuple[str, ...] = ()
  time_limit: int | None = None  # Control steps; None: the task's own limit.
  execute_steps: int = 8  # Control steps run from each action chunk.
  operator: dict | None = None  # Config of the simulated operator (None: no operator).
  # 'module:function' building an environment: fn(task, seed=, image_size=, cameras=, time_limit=).
  # Tests point this at a fake environment.
  env_factory: str = 'habc.envs:make'
  # 'module:Class' of the simulated operator: Class(config, seed) with reset() and act().
  operator_factory: str = 'habc.envs.operator:SimulatedOperator'
  # Extra keyword arguments of env_factory (plain data), e.g. the station's ``hardware`` section
  # for habc.envs.hardware:rollout_env. None: none.
  env_options: dict | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeRequest:
  """One episode to run."""

  episode_id: str
  seed: int
  kind: str = 'rollout'  # 'rollout' (policy + operator, recorded), 'eval' (policy only) or 'demo'.
  policy_version: int = -1
  record: bool = True  # Return the full episode dict (otherwise only its summary).
  video_camera: str = ''  # Camera whose frames are kept for the report ('' for none).
  video_every: int = 4  # Keep a frame every this many control steps.
  demo_path: str = ''  # For 'demo': the ALOHA-style HDF5 file to write.


def seed_for(base_seed: int, stage: str, round_index: int, index: int) -> int:
  """A deterministic 31-bit seed for episode ``index`` of a stage; independent of worker order."""
  stage_code = int.from_bytes(stage.encode()[:8].ljust(8, b'\0'), 'little')
  seq = np.random.SeedSequence([int(base_seed), stage_code, int(round_index), int(index)])
  return int(seq.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


# ------------------------------------------------------------------------------------------------
# Inside a worker process.


class _EpisodeRecorder:
  """Accumulates the steps of one episode (RLDS convention: the last step holds s_T, zero action)."""

  def __init__(self, record: bool):
    self.record = record
    self.observations: list[dict] = []
    self.actions: list[np.ndarray] = []
    self.policy_actions: list[np.ndarray] = []
    self.interventions: list[bool] = []

  def add(self, observation: dict, action, policy_action, is_intervention: bool) -> None:
    if self.record:  # Copies: an environment may reuse its observation buffers.
      self.observations.append({k: np.array(v) for k, v in observation.items()})
      self.actions.append(np.asarray(action, np.float32))
      self.policy_actions.append(np.asarray(policy_action, np.float32))
    self.interventions.append(bool(is_intervention))

  def finish(self, final_observation: dict, success: bool, metadata: dict,
             instruction: str) -> dict | None:
    """The episode dict of docs/interfaces.md section 2 (None when not recording)."""
    if not self.record:
      return None
    self.observations.append({k: np.array(v) for k, v in final_observation.items()})
    num = len(self.observations)
    zero = np.zeros_like(self.actions[0])
    observation = {k: np.stack([o[k] for o in self.observations]) for k in self.observations[0]}
    last = np.zeros(num, bool)
    last[-1] = True
    first = np.zeros(num, bool)
    first[0] = True
    terminal = last & bool(success)
    reward = np.where(terminal, 1.0, 0.0).astype(np.float32)
    steps = {
        'observation': observation,
        'action': np.stack(self.actions + [zero]).astype(np.float32),
        'policy_action': np.stack(self.policy_actions + [zero]).astype(np.float32),
        'is_intervention': np.asarray(self.interventions + [False], bool),
        'reward': reward,
        'discount': np.where(terminal, 0.0, 1.0).astype(np.float32),
        'is_first': first,
        'is_last': last,
        'is_terminal': terminal,
        'language_instruction': instruction,
    }
    return {'steps': steps, 'episode_metadata': dict(metadata, success=bool(success))}


class _Episode:
  """One running episode inside a worker: environment, operator, recorder, frames."""

  def __init__(self, config: WorkerConfig, request: EpisodeRequest):
    make_env = load_symbol(config.env_factory)
    self.config, self.request = config, request
    self.env = make_env(config.task, seed=request.seed, image_size=config.image_size,
                        cameras=config.cameras, time_limit=config.time_limit,
                        **(config.env_options or {}))
    self.operator = None
    if request.kind == 'rollout' and config.operator is not None:
      operator_cls = load_symbol(config.operator_factory)
      self.operator = operator_cls(config.operator, request.seed)
    self._notify('begin_episode', request, self.env)
    if self.operator is not None:
      self.operator.reset()
    self.recorder = _EpisodeRecorder(request.record)
    self.frames: list[np.ndarray] = []
    # Seconds spent per part of the worker's time (see ``WORKER_TIMINGS``); the worker loop adds
    # 'send' and 'wait'.
    self.timings = dict.fromkeys(WORKER_TIMINGS, 0.0)
    start = time.perf_counter()
    spec = self.env.action_spec()
    self._low = getattr(spec, 'minimum', -np.inf)
    self._high = getattr(spec, 'maximum', np.inf)
    self.timestep = self.env.reset()
    self.length = 0
    self._maybe_frame(force=True)
    self.timings['reset'] += time.perf_counter() - start
    # The environment's own counters so far belong to the reset (e.g. creating the renderer).
    self._counted_at_reset = {k: float(getattr(self.env, f'{k}_seconds', 0.0))
                              for k in ('physics', 'render')}

  def _notify(self, hook: str, *args) -> None:
    """Calls ``hook`` on the operator that has it (the rollout's, else the environment's own,
    e.g. a station's): ``begin_episode(request, env)`` before the first reset and
    ``end_episode(summary)`` with the result (no arrays). Operators that show the episode to a
    person use them (habc.web.console); others need not define them."""
    for operator in (self.operator, getattr(self.env, 'operator', None)):
      fn = getattr(operator, hook, None)
      if callable(fn):
        fn(*args)
        return

  def policy_observation(self) -> dict:
    """The current observation with the episode's instruction (what the policy reads)."""
    return dict(self.timestep.observation, instruction=str(getattr(self.env, 'instruction', '')))

  def _maybe_frame(self, force: bool = False) -> None:
    camera = self.request.video_camera
    if camera and (force or self.length % max(1, self.request.video_every) == 0):
      obs = self.timestep.observation
      frame = obs[camera] if camera in obs else self.env.render(camera)
      self.frames.append(np.asarray(frame, np.uint8))

  def run_chunk(self, chunk: np.ndarray) -> bool:
    """Executes up to ``execute_steps`` actions of ``chunk`` [H, A]; True when the episode ended."""
    timings, clock = self.timings, time.perf_counter
    for policy_action in chunk[:self.config.execute_steps]:
      if self.timestep.last():
        break
      t0 = clock()
      # The policy's proposal, clipped to the action bounds (as it would be executed).
      policy_action = np.clip(np.asarray(policy_action, np.float32), self._low, self._high)
      if self.operator is not None:
        action, is_intervention = self.operator.act(self.env, policy_action)
      else:
        action, is_intervention = policy_action, False
      observation = self.timestep.observation
      t1 = clock()
      self.timestep = self.env.step(np.asarray(action, np.float32))
      t2 = clock()
      timings['operator'] += t1 - t0
      timings['env_step'] += t2 - t1
      # What the environment reports it executed (after its clipping and safety rules), and, for
      # environments that run their own operator (the hardware station), who was in control.
      executed = getattr(self.env, 'last_action', None)
      action = np.asarray(action if executed is None else executed, np.float32)
      if self.operator is None and hasattr(self.env, 'last_is_intervention'):
        is_intervention = bool(self.env.last_is_intervention)
      self.recorder.add(observation, action, policy_action, is_intervention)
      self.length += 1
      self._maybe_frame()
      timings['record'] += clock() - t2
    return self.timestep.last()

  def result(self) -> dict:
    # An episode ended by a safety stop (hardware) has no outcome: it is reported, not recorded.
    invalid = bool(getattr(self.timestep, 'invalid', False) or
                   getattr(self.env, 'episode_invalid', False))
    success = bool(self.timestep.last() and self.timestep.discount == 0) and not invalid
    if self.request.video_camera and self.length % max(1, self.request.video_every):
      self._maybe_frame(force=True)
    metadata = {
        'episode_id': self.request.episode_id,
        'task': str(getattr(self.env, 'task_name', self.config.task)),
        'policy_version': int(self.request.policy_version),
        'source': 'rollout',
        'operator': (str(getattr(self.operator, 'name', type(self.operator).__name__))
                     if self.operator is not None else 'none'),
    }
    episode = None if invalid else self.recorder.finish(
        self.timestep.observation, success, metadata, str(getattr(self.env, 'instruction', '')))
    flags = np.asarray(self.recorder.interventions, bool)
    out = {
        'episode_id': self.request.episode_id,
        'seed': self.request.seed,
        'kind': self.request.kind,
        'success': success,
        'invalid': invalid,
        'length': int(self.length),
        'control_hz': float(getattr(self.env, 'control_hz', 0.0) or 0.0),
        'intervention_steps': int(flags.sum()),
        'episode': episode,
        'frames': np.stack(self.frames) if self.frames else None,
        'timings': self.timings,
    }
    self._notify('end_episode', {k: v for k, v in out.items()
                                 if k not in ('episode', 'frames', 'timings')})
    self.env.close()
    for k, at_reset in self._counted_at_reset.items():
      self.timings[k] = float(getattr(self.env, f'{k}_seconds', 0.0)) - at_reset
    return out


# Parts of an environment worker's time, in seconds per episode (``result['timings']``):
#   reset     building the environment (and operator) and its first reset;
#   operator  clipping the policy's action and the operator's decision (its expert when in control);
#   env_step  ``env.step``: physics, the environment's own Python, observations (rendering included);
#   physics   the part of env_step in the physics substeps (``env.physics_seconds``, if it counts);
#   render    the part of env_step spent rendering cameras (``env.render_seconds``, if it counts);
#   record    keeping the step for the episode dict (copies) and video frames;
#   send      sending observations to the main process (pickling and the pipe);
#   wait      blocked until the next chunk arrives: the policy, the main process's IPC and, when
#             chunks are served in lockstep, the slower workers.
WORKER_TIMINGS = ('reset', 'operator', 'env_step', 'physics', 'render', 'record', 'send', 'wait')


def _check_no_tensorflow(where: str) -> None:
  if 'tensorflow' in sys.modules:
    raise RuntimeError(
        f'TensorFlow was imported in {where} (pid {os.getpid()}); it crashes MuJoCo software '
        'rendering. Find the import (python -X importtime) and move it out of this process.')


def _worker_main(conn, config: WorkerConfig) -> None:
  """Loop of a worker process: serves 'start', 'chunk', 'demo' and 'close' messages.

  A worker may run several episodes at once, interleaved (``WorkerPool(...,
  episodes_per_worker=k)``): 'start', 'chunk' and 'demo' carry ``(slot, payload)`` and the
  replies ``('obs' | 'done', (slot, payload))``; each slot holds one episode. While one episode
  waits for its chunk, the worker steps another whose chunk has arrived.
  """
  episodes: dict[int, _Episode] = {}
  try:
    load_symbol(config.env_factory)  # Import the environment package up front.
    _check_no_tensorflow('an environment worker')
  except Exception:  # pylint: disable=broad-except
    conn.send(('error', traceback.format_exc()))
    return
  clock = time.perf_counter

  def reply(kind, slot, value, timings):
    start = clock()
    conn.send((kind, (slot, value)))
    timings['send'] += clock() - start

  def finish(slot):
    conn.send(('done', (slot, episodes.pop(slot).result())))

  while True:
    try:
      start = clock()
      message, payload = conn.recv()
      if episodes:  # Every running episode waits for its chunk: split the idle time among them.
        idle = (clock() - start) / len(episodes)
        for episode in episodes.values():
          episode.timings['wait'] += idle
    except (EOFError, KeyboardInterrupt):
      return
    try:
      if message == 'close':
        return
      slot, payload = payload
      if message == 'start':
        if slot in episodes:
          raise RuntimeError(f'Slot {slot} of this worker already runs episode '
                             f'{episodes[slot].request.episode_id}.')
        episode = episodes[slot] = _Episode(config, payload)
        if episode.timestep.last():
          finish(slot)
        else:
          reply('obs', slot, episode.policy_observation(), episode.timings)
      elif message == 'chunk':
        episode = episodes.get(slot)
        if episode is None:
          raise RuntimeError(f'Received an action chunk for slot {slot} with no episode running.')
        if episode.run_chunk(np.asarray(payload, np.float32)):
          finish(slot)
        else:
          reply('obs', slot, episode.policy_observation(), episode.timings)
      elif message == 'demo':
        from habc.run import recorder  # Imported here: the recorder writes HDF5 in this process.
        conn.send(('done', (slot, recorder.record_demo(config, payload))))
      else:
        raise ValueError(f'Unknown worker message {message!r}.')
      _check_no_tensorflow('an environment worker')
    except Exception:  # pylint: disable=broad-except
      episodes.clear()
      conn.send(('error', traceback.format_exc()))


# ------------------------------------------------------------------------------------------------
# In the main process.


class WorkerError(RuntimeError):
  """A worker process failed; the message carries its traceback."""


class WorkerPool:
  """``num_workers`` environment processes (spawned, TensorFlow-free). Use as a context manager.

  Each process runs up to ``episodes_per_worker`` episodes at once, interleaved: it steps one
  while the others wait for their chunks, which hides the policy's latency behind stepping where
  the main process has a core of its own (on 2 cores shared with 2 workers it did not pay off:
  results/bench/rollout_issue25.md). Never more than 1 for hardware: one robot, one episode.
  """

  def __init__(self, config: WorkerConfig, num_workers: int, episodes_per_worker: int = 1):
    if num_workers < 1:
      raise ValueError(f'num_workers must be >= 1, got {num_workers}.')
    if episodes_per_worker < 1:
      raise ValueError(f'episodes_per_worker must be >= 1, got {episodes_per_worker}.')
    self.config = config
    self.num_workers = num_workers
    self.episodes_per_worker = int(episodes_per_worker)
    ctx = mp.get_context('spawn')
    self._conns, self._procs = [], []
    for i in range(num_workers):
      parent, child = ctx.Pipe()
      proc = ctx.Process(target=_worker_main, args=(child, config), daemon=True,
                         name=f'habc-env-worker-{i}')
      proc.start()
      child.close()
      self._conns.append(parent)
      self._procs.append(proc)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    for conn in self._conns:
      try:
        conn.send(('close', None))
      except (BrokenPipeError, OSError):
        pass
    for proc in self._procs:
      proc.join(timeout=5)
      if proc.is_alive():
        proc.terminate()
        proc.join(timeout=5)
    for conn in self._conns:
      conn.close()
    self._conns, self._procs = [], []

  def send(self, worker: int, message: str, payload: Any) -> None:
    self._conns[worker].send((message, payload))

  def receive(self, worker: int):
    """The next reply of ``worker``: ('obs', (slot, observation)) or ('done', (slot, result))."""
    try:
      kind, payload = self._conns[worker].recv()
    except EOFError as e:
      code = self._procs[worker].exitcode
      raise WorkerError(f'Environment worker {worker} died (exit code {code}); if the code is '
                        'negative it was killed by a signal, e.g. -11 for a crash in MuJoCo.') from e
    if kind == 'error':
      raise WorkerError(f'Environment worker {worker} failed:\n{payload}')
    return kind, payload

  def ready(self, workers: Sequence[int], timeout: float | None = None) -> list[int]:
    """The subset of ``workers`` with a reply waiting."""
    conns = {self._conns[w]: w for w in workers}
    return sorted(conns[c] for c in wait_connections(list(conns), timeout=timeout))


# A policy maps N raw observations (dicts as the environment returns them) and their noise ids to
# action chunks in the environment's units: ``policy(observations, noise_ids) -> f32 [N, H, A]``.
# noise_ids is int64 [N, 2] = (episode seed, decision index within the episode), see
# ``noise_ids``; a stochastic policy must draw row i's noise from (its base seed, noise_ids[i])
# alone, so that an episode's actions do not depend on which episodes share a call, on padding
# or on worker timing. ``habc.run.pipeline`` builds one from the network and
# ``habc.data.reader.env_model_inputs`` (the reader's normalisation and tokenizer).
Policy = Callable[[Sequence[dict], np.ndarray], np.ndarray]

NOISE_ID_LIMIT = 2**32  # Noise ids are folded into PRNG keys as uint32.


def noise_ids(seeds: Sequence[int], decisions: Sequence[int]) -> np.ndarray:
  """(episode seed, decision index) per row -> int64 [N, 2], checked to lie in [0, 2**32)."""
  ids = np.stack([np.asarray(seeds, np.int64).reshape(-1),
                  np.asarray(decisions, np.int64).reshape(-1)], axis=1)
  bad = (ids < 0) | (ids >= NOISE_ID_LIMIT)
  if bad.any():
    row = int(np.argwhere(bad)[0, 0])
    raise ValueError(
        f'Noise id (seed {ids[row, 0]}, decision {ids[row, 1]}) is outside [0, 2**32): the '
        'policy folds it into its PRNG key as uint32. Give episodes seeds in that range '
        '(rollout.seed_for gives 31-bit seeds).')
  return ids


# Parts of the main process's time in ``run_episodes``, in seconds (its ``stats`` argument):
#   policy    batched policy calls (padding included);
#   wait      blocked until some worker replies (the workers are stepping);
#   receive   taking replies off the pipes (unpickling);
#   send      sending chunks and requests (pickling and the pipe);
#   wall      the whole call; calls, rows: policy calls and the real rows they served.
MAIN_TIMINGS = ('policy', 'wait', 'receive', 'send', 'wall')


def run_episodes(pool: WorkerPool, requests: Iterable[EpisodeRequest], policy: Policy | None,
                 on_result: Callable[[dict], None], *, pad_to: int | None = None,
                 lockstep: bool = False, stats: dict | None = None) -> None:
  """Runs every request on the pool; calls ``on_result(result)`` in the main process as each ends.

  Workers are served as they become ready: all episodes that wait for an action at that moment
  are served at once, in policy calls of exactly ``pad_to`` rows (the last call padded; default
  the pool's number of episode slots, one call), so the jitted policy compiles once and a row's
  result does not depend on how many rows waited with it (XLA's last bits do depend on the batch
  size), while the other workers keep stepping (and a worker that runs several episodes,
  ``WorkerPool(episodes_per_worker=k)``, steps its other episodes). With ``lockstep`` the call
  instead waits until every running episode waits (one call per decision point; the fast workers
  wait for the slowest). Each row carries its noise id (episode seed, decision index): which
  episodes share a call changes with the number of workers and their timing, an
  episode's noise ids, and so its actions and results, do not.

  Args:
    pool: the worker processes.
    requests: episodes to run ('rollout', 'eval' or 'demo'; demos need no policy).
    policy: ``policy(observations, noise_ids) -> chunks [N, H, A]`` (see ``Policy``); may be None
      when every request is a demo.
    on_result: receives each finished episode's result (see ``_Episode.result``).
    pad_to: rows per policy call (the policy's fixed batch size).
    lockstep: serve all running workers together, once all of them wait (see above).
    stats: if given, seconds per part of this call's time are added to it (``MAIN_TIMINGS``,
      plus 'calls' and 'rows').
  """
  clock = time.perf_counter
  timing = dict.fromkeys(MAIN_TIMINGS + ('calls', 'rows'), 0.0)
  begin = clock()
  pending = list(requests)
  pending.reverse()  # pop() from the end keeps the given order.
  # An episode runs in a slot (worker, index within the worker); slots are numbered
  # worker * per + index, and filled one per worker first.
  per = getattr(pool, 'episodes_per_worker', 1)
  pad_to = pad_to or pool.num_workers * per
  busy: set[int] = set()
  waiting: dict[int, dict] = {}  # slot -> observation awaiting a chunk.
  seeds: dict[int, int] = {}  # slot -> seed of the episode it runs.
  decisions: dict[int, int] = {}  # slot -> chunks its episode has received so far.
  idle = [w * per + i for i in range(per) for w in range(pool.num_workers)]
  while pending or busy:
    start = clock()
    while idle and pending:
      slot, request = idle.pop(0), pending.pop()
      worker = slot // per
      if request.kind == 'demo':
        pool.send(worker, 'demo', (slot % per, request))
      else:
        if policy is None:
          raise ValueError(f'Episode {request.episode_id} ({request.kind}) needs a policy.')
        noise_ids([request.seed], [0])  # Fails now, naming the seed, if it cannot key noise.
        seeds[slot], decisions[slot] = int(request.seed), 0
        pool.send(worker, 'start', (slot % per, request))
      busy.add(slot)
    timing['send'] += clock() - start
    # Replies of running episodes that do not already wait for a chunk: block for the first one
    # when nothing can be served yet, then take every other reply that is already there.
    running = sorted({slot // per for slot in busy if slot not in waiting})
    if running:
      block = not waiting or (lockstep and len(waiting) < len(busy))
      start = clock()
      ready = pool.ready(running, timeout=None if block else 0.0)
      timing['wait'] += clock() - start
      start = clock()
      while ready:
        for worker in ready:
          kind, (index, payload) = pool.receive(worker)
          slot = worker * per + index
          if kind == 'done':
            busy.discard(slot)
            idle.append(slot)
            on_result(payload)
          else:
            waiting[slot] = payload
        ready = pool.ready(ready, timeout=0.0)  # A worker may have queued several replies.
      timing['receive'] += clock() - start
    if waiting and (not lockstep or all(slot in waiting for slot in busy)):
      slots = sorted(waiting)
      observations = [waiting.pop(slot) for slot in slots]
      ids = noise_ids([seeds[slot] for slot in slots], [decisions[slot] for slot in slots])
      start = clock()
      chunks = _call_policy(policy, observations, ids, pad_to)
      timing['policy'] += clock() - start
      timing['calls'] += 1
      timing['rows'] += len(slots)
      start = clock()
      for slot, chunk in zip(slots, chunks):
        decisions[slot] += 1
        pool.send(slot // per, 'chunk', (slot % per, chunk))
      timing['send'] += clock() - start
  timing['wall'] += clock() - begin
  if stats is not None:
    for key, value in timing.items():
      stats[key] = stats.get(key, 0.0) + value


def _call_policy(policy: Policy, observations: list[dict], ids: np.ndarray,
                 pad_to: int) -> np.ndarray:
  """Runs ``policy`` on the observations and noise ids int64 [N, 2] in calls of exactly
  ``pad_to`` rows each (the last one padded by repeating its last row), so that every call has
  the same shape; returns the N real rows' chunks [N, H, A]."""
  n = len(observations)
  if ids.shape != (n, 2):
    raise ValueError(f'Expected noise ids [{n}, 2] for {n} observations, got {ids.shape}.')
  out = []
  for begin in range(0, n, pad_to):
    rows, row_ids = observations[begin:begin + pad_to], ids[begin:begin + pad_to]
    fill = pad_to - len(rows)
    padded = rows + [rows[-1]] * fill
    padded_ids = np.concatenate([row_ids, np.repeat(row_ids[-1:], fill, axis=0)])
    chunks = np.asarray(policy(padded, padded_ids), np.float32)
    if chunks.ndim != 3 or chunks.shape[0] != pad_to:
      raise ValueError(f'The policy returned shape {chunks.shape}; expected [{pad_to}, H, A].')
    out.append(chunks[:len(rows)])
  return np.concatenate(out)
