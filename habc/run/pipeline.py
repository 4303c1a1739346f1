"""The main job: demonstrations -> SFT -> rounds of (collect, train, evaluate, checkpoint) -> report.

``run(config, workdir, mode='pipeline')`` runs every stage that is not yet complete and returns
the summary. Each stage records its completion in ``progress.json``; within a stage, progress is
read back from what is on disk, so a re-run continues where a stop left it:

* demos: one HDF5 file per demonstration (written atomically); existing files are kept; the RLDS
  conversion runs once all are there.
* collection: episodes are committed to the round's RLDS dataset in index order (out-of-order
  finishes are held back until the ones before them are written), so the dataset always holds
  episodes 0..n-1 and a resume collects n..N-1 with the same seeds. Nothing is recollected.
* training: checkpoints every ``pipeline.checkpoint_every`` steps hold params, optimiser state,
  step and RNG; a resume restores the latest and trains up to the stage's target step.
* evaluation: per-episode results are appended to ``eval/round_XXX.jsonl`` in index order.

Workdir layout::

  config.json               the run's config (a re-run with a different one is refused)
  progress.json             completed stages
  demos/hdf5/               ALOHA-style HDF5 demonstrations (the raw teleop format)
  data/demos/, data/round_001/, ...   RLDS datasets (tfds array_record)
  checkpoints/              orbax checkpoints (with config and normalisation statistics)
  eval/                     per-round evaluation results, frames of a success and a failure
  logs/                     TensorBoard event files and metrics.jsonl
  report.md, plots/         the report

Round 0 is the SFT checkpoint; online rounds are numbered from 1.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from habc.run import evaluation
from habc.run import rollout
from habc.run.backend import Backend, TeleopDataError, _holdout_fraction
from habc.run.paths import Paths, load_npz

MODES = ('pipeline', 'demos', 'sft', 'collect', 'train', 'eval', 'report')
CONFIG_FILE = 'config.json'
PROGRESS_FILE = 'progress.json'


class ConfigMismatchError(ValueError):
  """The workdir was made with another config."""


class StageOrderError(RuntimeError):
  """A single stage was asked for before the stages it needs."""


class Stop(Exception):
  """Raised by an ``on_event`` hook to stop the pipeline (tests use it to simulate a crash)."""


# ------------------------------------------------------------------------------------------------
# Config identity of a workdir.


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


# Config keys added after workdirs were made, each with the value every earlier run had in
# effect. A saved config without the key reads as having that value, so those workdirs still
# resume (``prepare_workdir``) and their SFT checkpoints are still shared (``habc.run.sft_share``).
ADDED_KEYS = {'learner.sft_anneal_steps': 0, 'learner.critic_weight_decay': -1.0,
              'method.advantage_norm': 'none', 'method.advantage_temperature': 2.0,
              'critic.phase_steps': 0, 'critic.holdout_fraction': 0.0, 'critic.diagnostics': False,
              'critic.diagnostic_windows': 4096, 'data.sampler': 'pool',
              'data.kind_fractions.success': 0.0, 'data.kind_fractions.failure': 0.0,
              'data.kind_fractions.intervention': 0.0, 'data.kind_fractions.unlabelled': 0.0,
              'critic.efficiency_target': 'td', 'critic.curve_every': 0, 'rollout.policy_batch': 0,
              'operator.reaction_steps': 2}


def config_identity(config) -> dict:
  """The config as flat JSON values, without the sections that do not change results; keys of
  ``ADDED_KEYS`` that it lacks get their earlier value."""
  from experiments import presets
  d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  d = json.loads(json.dumps(d, default=list))
  for section in presets.RUNTIME_SECTIONS:
    d.pop(section, None)
  return {**ADDED_KEYS, **_flatten(d)}


def config_differences(saved: dict, current: dict) -> list[str]:
  """Lines 'key: workdir=<a> now=<b>' for every key whose value differs."""
  lines = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key, '<absent>'), current.get(key, '<absent>')
    if a != b:
      lines.append(f'  {key}: workdir={a!r} now={b!r}')
  return lines


def prepare_workdir(config, workdir: str, overwrite: bool = False) -> None:
  """Creates the workdir, or checks that an existing one was made with the same config.

  Raises:
    ConfigMismatchError: the workdir's config.json differs (and ``overwrite`` is False).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = config_identity(config)
  if os.path.exists(path) and overwrite:
    shutil.rmtree(workdir)
  elif os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved_identity = config_identity(saved)
    diff = config_differences(saved_identity, current)
    if diff:
      new_keys = sorted(set(current) - set(saved_identity))
      note = (f'\n({len(new_keys)} of these keys did not exist when the workdir was made: the '
              'code has changed since; a resume would mix two versions.)' if new_keys else '')
      raise ConfigMismatchError(
          f'The workdir {workdir} was made with a different config:\n' + '\n'.join(diff) + note +
          '\nUse another --workdir, run with the same config to resume, or pass --overwrite to '
          'delete it and start again.')
    return
  os.makedirs(workdir, exist_ok=True)
  _write_json(path, config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)


def _write_json(path: str, data) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(data, f, indent=1, default=lambda x: x.tolist() if hasattr(x, 'tolist') else list(x))
  os.replace(tmp, path)


def _read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


# ------------------------------------------------------------------------------------------------
# Per-round configuration.


def round_config(config, round_index: int):
  """The config that holds in online round ``round_index`` (>= 1): applies scheduled switches."""
  c = ml_collections.ConfigDict(config.to_dict())
  start = config.pipeline.get('intervention_reweighting_from_round', -1)
  if start is not None and start >= 1 and round_index >= start:
    c.method.intervention_reweighting = True
  return c


def intervention_reweighting_at(config, round_index: int) -> bool:
  return bool(round_config(config, round_index).method.intervention_reweighting) if round_index \
      else bool(config.method.intervention_reweighting)


# ------------------------------------------------------------------------------------------------
# The run.


class Pipeline:
  """One run in one workdir. ``run_stage`` methods are idempotent (resumable)."""

  def __init__(self, config, workdir: str, *, on_event: Callable[[str, dict], None] | None = None,
               backend=None, log: Callable[[str], None] = print):
    self.config = config
    self.paths = Paths(workdir)
    self.on_event = on_event or (lambda event, info: None)
    self.log = log
    self._pool = None
    self._writer = None
    self._progress = _read_json(os.path.join(self.paths.root, PROGRESS_FILE), {})
    if backend is None:
      backend = Backend(config)
    self.backend = backend
    backend.bind(self.paths)
    if isinstance(backend, Backend):  # Fakes in tests keep no checkpoints on disk.
      recover_workdir(self)

  # -- bookkeeping -------------------------------------------------------------------------------
  def done(self, key: str) -> bool:
    return bool(self._progress.get(key))

  def mark(self, key: str, value: Any = True) -> None:
    self._progress[key] = value
    _write_json(os.path.join(self.paths.root, PROGRESS_FILE), self._progress)
    self.on_event(f'done:{key}', {'value': value})

  def _event(self, name: str, **info) -> None:
    self.on_event(name, info)

  @property
  def metrics(self):
    """The run's metrics writer (logs/: TensorBoard events and metrics.jsonl), opened once.

    Opened at the start of ``run`` (before any stage trains or saves), so that what an earlier
    attempt logged after the checkpoint this run goes on from is discarded: it is logged again
    (``habc.run.metrics_writer``)."""
    if self._writer is None:
      from habc.run import metrics_writer
      self._writer = metrics_writer.MetricsWriter(self.paths.logs,
                                                  resume_step=self.resume_step())
    return self._writer

  def resume_step(self) -> int:
    """The learner step this run goes on from: its newest checkpoint's (unreadable ones were set
    aside at start-up), 0 without one. A stand-in backend without checkpoints: its step."""
    if not isinstance(self.backend, Backend):
      return int(self.backend.step)
    if not os.path.isdir(self.paths.checkpoints):
      return 0
    ckpt = self.backend.checkpointer(self.paths.checkpoints, self.config.pipeline.keep_checkpoints)
    return int(ckpt.latest_step() or 0)

  def pool(self) -> rollout.WorkerPool:
    if self._pool is None:
      self._pool = rollout.WorkerPool(
          self.backend.worker_config(), self.config.runtime.num_workers,
          episodes_per_worker=self.config.runtime.get('episodes_per_worker', 1))
    return self._pool

  def _run_policy_episodes(self, requests, policy, on_result) -> None:
    """``rollout.run_episodes`` with the config's policy batch (``rollout.policy_batch``)."""
    rollout.run_episodes(self.pool(), requests, policy, on_result,
                         pad_to=self.config.rollout.get('policy_batch', 0) or None)

  def close(self) -> None:
    if self._pool is not None:
      self._pool.close()
      self._pool = None
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self.backend.close()

  def _bar(self, total: int, desc: str, initial: int = 0):
    """Progress of one long piece of work (``update(n)``, ``close()``), with
    ``runtime.progress`` on: a tqdm bar at a terminal; where stderr is not one (a log file, a
    pipe), a line at most every ``PROGRESS_LINE_EVERY_S`` seconds (``ProgressLines``)."""
    import sys
    from tqdm import tqdm
    if self.config.runtime.progress and not _is_terminal(sys.stderr):
      return ProgressLines(total, desc, initial=initial)
    return tqdm(total=total, initial=initial, desc=desc, disable=not self.config.runtime.progress,
                leave=False, dynamic_ncols=True)

  # -- stages ------------------------------------------------------------------------------------
  def run(self, mode: str = 'pipeline') -> dict:
    if mode not in MODES:
      raise ValueError(f'Unknown mode {mode!r}; choose one of {MODES}.')
    self._check_prerequisites(mode)
    if mode in ('pipeline', 'sft', 'train', 'eval'):
      _ = self.metrics  # Opened before any step is trained (see ``metrics``).
    if mode in ('pipeline', 'demos'):
      self.demos()
    if mode in ('pipeline', 'sft'):
      self.sft()
    if mode == 'pipeline':
      self.evaluate(0)
      for r in range(1, self.config.pipeline.rounds + 1):
        self.round(r)
    elif mode in ('collect', 'train', 'eval'):
      r = self.current_round(mode)
      if mode == 'collect':
        self.collect(r)
      elif mode == 'train':
        self.train(r)
      else:
        self.evaluate(r)
    if mode in ('pipeline', 'report'):
      self.report()
    return self.summary()

  def _check_prerequisites(self, mode: str) -> None:
    """A single-stage mode needs the stages before it; says which to run when one is missing."""
    needs = {'sft': ['demos'], 'collect': ['demos', 'sft'], 'train': ['demos', 'sft'],
             'eval': ['demos', 'sft']}.get(mode, [])
    missing = [stage for stage in needs if not self.done(stage)]
    if missing:
      raise StageOrderError(
          f'--mode={mode} needs the {", ".join(missing)} stage(s) of {self.paths.root} first: run '
          f'--mode={missing[0]} (or --mode=pipeline, which runs every stage in order).')
    if mode == 'train':
      r = self.current_round('train')
      if not self.done(f'collect_{r:03d}'):
        raise StageOrderError(f'--mode=train: round {r} has no collected rollouts yet; run '
                              '--mode=collect first.')

  def current_round(self, phase: str) -> int:
    """The first round whose ``phase`` is not complete (0 means the SFT evaluation for 'eval')."""
    if phase == 'eval' and not self.done('eval_000'):
      return 0
    for r in range(1, self.config.pipeline.rounds + 1):
      if not self.done(f'{phase}_{r:03d}'):
        return r
    rounds = self.config.pipeline.rounds
    raise StageOrderError(f'Every round of {phase} is complete ({rounds} round'
                          f'{"" if rounds == 1 else "s"}); '
                     'raise --config.pipeline.rounds in a new workdir to run more.')

  def round(self, r: int) -> None:
    self.collect(r)
    self.train(r)
    self.evaluate(r)
    if not self.done(f'round_{r:03d}'):
      self.log(self.round_line(r))
      self.mark(f'round_{r:03d}')

  # demonstrations ...............................................................................
  def demos(self) -> None:
    """Demonstrations as RLDS: recorded teleop episodes (``data.teleop_dir``) when given, else
    the scripted expert's (recorded to HDF5 by the workers, then converted the same way)."""
    if self.done('demos'):
      return
    if self.config.data.get('teleop_dir', ''):
      self.teleop_demos()
      return
    c = self.config
    os.makedirs(self.paths.demo_hdf5, exist_ok=True)
    os.makedirs(self.paths.demo_failed, exist_ok=True)
    target = c.data.num_demos
    max_attempts = 2 * target + 2

    def existing():
      ok = sorted(f for f in os.listdir(self.paths.demo_hdf5) if f.endswith('.hdf5'))
      failed = sorted(f for f in os.listdir(self.paths.demo_failed) if f.endswith('.hdf5'))
      return ok, failed

    ok, failed = existing()
    bar = self._bar(target, 'demos', initial=min(len(ok), target))
    attempt = len(ok) + len(failed)
    while len(ok) < target:
      if attempt >= max_attempts:
        raise RuntimeError(
            f'The scripted expert of {c.task} succeeded on only {len(ok)} of {attempt} '
            f'demonstrations; check the task with `python -m habc.envs --task={c.task}`.')
      count = min(target - len(ok), max_attempts - attempt)
      requests = []
      for i in range(attempt, attempt + count):
        name = f'episode_{i:05d}.hdf5'
        requests.append(rollout.EpisodeRequest(
            episode_id=f'demo-{i:05d}', seed=rollout.seed_for(c.seed, 'demo', 0, i), kind='demo',
            demo_path=os.path.join(self.paths.demo_hdf5, name)))

      def on_result(result):
        if not result['success']:
          os.replace(result['path'], os.path.join(self.paths.demo_failed,
                                                  os.path.basename(result['path'])))
        else:
          bar.update(1)
        self._event('demo', **{k: result[k] for k in ('episode_id', 'success', 'length')})

      rollout.run_episodes(self.pool(), requests, None, on_result)
      attempt += count
      ok, failed = existing()
    bar.close()
    self.log(f'demos: {len(ok)} successful expert demonstrations ({len(failed)} failed, set '
             f'aside), converting to RLDS')
    self.backend.convert_demos(self.paths.demo_hdf5, self.paths.demo_data)
    self.mark('demos')

  def teleop_demos(self) -> None:
    """Converts the ALOHA-style HDF5 teleop episodes of ``data.teleop_dir`` into the demos
    dataset (a hardware task has no scripted expert; in simulation this replaces the expert).

    Raises:
      TeleopDataError: the folder is missing, holds no ``episode_*.hdf5``, or (obs=state) its
        episodes lack ``privileged``.
      habc.data.converters.ConversionError: a bad file (named, with the field).
    """
    from habc.data.converters import aloha_hdf5
    folder = os.path.abspath(os.path.expanduser(self.config.data.teleop_dir))
    flag = f'--config.data.teleop_dir={self.config.data.teleop_dir}'
    if not os.path.isdir(folder):
      raise TeleopDataError(f'{flag}: {folder} is not a folder. Give a folder of recorded '
                              'teleop episodes (ALOHA-style episode_*.hdf5, docs/hardware.md).')
    files = aloha_hdf5.list_episodes(folder)
    if not files:
      raise TeleopDataError(f'{flag}: {folder} holds no episode_*.hdf5 files (ALOHA-style '
                              'teleop episodes, docs/data.md and docs/hardware.md).')
    self.log(f'demos: converting {len(files)} teleop episodes from {folder} to RLDS')
    self.backend.convert_teleop(folder, self.paths.demo_data)
    self._event('teleop_demos', episodes=len(files), folder=folder)
    self.mark('demos')

  # SFT ...........................................................................................
  def sft(self) -> None:
    if self.done('sft'):
      return
    self._train_to(self.config.pipeline.sft_steps, stage='sft', round_index=0,
                   datasets=[(self.paths.demo_data, 1.0)])
    self.mark('sft')

  # collection .......................................................................................
  def collect(self, r: int) -> None:
    key = f'collect_{r:03d}'
    if self.done(key):
      return
    c = round_config(self.config, r)
    self._load_round_checkpoint(r - 1, 'collect')
    path = self.paths.round_data(r)
    os.makedirs(self.paths.logs, exist_ok=True)
    writer = self.backend.open_writer(path)
    total = c.rollout.episodes_per_round
    try:
      # Episodes 0..start-1 are done: committed, or invalid (safety stop, not written) and logged.
      # A stop between a commit and its log line leaves the dataset one episode ahead of the log.
      start = _next_episode_index(_read_jsonl(self.paths.collect_log(r)), path,
                                  writer.num_episodes)
      bar = self._bar(total, f'collect round {r}', initial=start)
      version = self.backend.step
      requests = [rollout.EpisodeRequest(
          episode_id=f'round{r:03d}-{i:05d}', seed=rollout.seed_for(c.seed, 'collect', r, i),
          kind='rollout', policy_version=version, record=True) for i in range(start, total)]
      held: dict[int, dict] = {}
      next_index = [start]

      def on_result(result):
        index = int(result['episode_id'].rsplit('-', 1)[1])
        held[index] = result
        while next_index[0] in held:
          res = held.pop(next_index[0])
          if res['episode'] is not None:
            writer.append(res['episode'])
          with open(self.paths.collect_log(r), 'a') as log:
            log.write(json.dumps({k: res.get(k) for k in (
                'episode_id', 'seed', 'success', 'invalid', 'length', 'intervention_steps')})
                      + '\n')
          next_index[0] += 1
          bar.update(1)
          self._event('collect', round=r, index=next_index[0] - 1, success=res['success'],
                      intervention_steps=res['intervention_steps'])

      control_hz = []
      self.backend.policy_seconds.clear()
      # The base key is the round's alone (not the resume point): with per-episode noise ids, a
      # resumed round draws for its remaining episodes what an uninterrupted one would have.
      self._run_policy_episodes(requests, self.backend.policy(rng_seed=rollout.seed_for(
          c.seed, 'policy', r, 0)), lambda res: (control_hz.append(res.get('control_hz', 0.0)),
                                                     on_result(res)))
      bar.close()
    finally:
      writer.close()
    self._write_resources(r, control_hz)
    self.mark(key)

  def _write_resources(self, r: int, control_hz: list[float]) -> None:
    """Policy latency per chunk (against the time a chunk takes to execute) and memory."""
    times = list(getattr(self.backend, 'policy_seconds', []))[1:]  # The first call compiles.
    hz = max(control_hz) if control_hz else 0.0
    out = {'policy_ms_mean': 1000 * float(np.mean(times)) if times else None,
           'policy_ms_p95': 1000 * float(np.percentile(times, 95)) if times else None,
           'chunk_budget_ms': 1000 * self.config.rollout.execute_steps / hz if hz else None}
    out.update(_memory_mb())
    _write_json(os.path.join(self.paths.logs, f'resources_round_{r:03d}.json'), out)

  # training .........................................................................................
  def train(self, r: int) -> None:
    key = f'train_{r:03d}'
    if self.done(key):
      return
    c = self.config
    if r > 1 and self.backend.step == self.round_end_step(r - 1):
      # Round r-1's critic, before any update of round r, on round r's fresh rollouts.
      self._critic_diagnostics(r - 1, 'next_round', [(self.paths.round_data(r), 1.0, 'all')])
    self._train_to(c.pipeline.sft_steps + r * c.pipeline.steps_per_round, stage=f'round_{r:03d}',
                   round_index=r, datasets=self.training_datasets(r))
    self.mark(key)

  def training_datasets(self, r: int) -> list[tuple[str, float, str]]:
    """(path, ratio, split) of round r's training mix: the demonstrations, every earlier round's
    rollouts, and round r's own without its held-out split (``critic.holdout_fraction``). A
    round's held-out episodes are trained on from the next round on, once they have measured the
    critic that never saw them."""
    c = self.config
    datasets = [(self.paths.demo_data, c.data.demo_fraction, 'all')]
    share = (1.0 - c.data.demo_fraction) / r
    for i in range(1, r + 1):
      split = 'train' if i == r and _holdout_fraction(c) > 0 else 'all'
      datasets.append((self.paths.round_data(i), share, split))
    return datasets

  def _critic_diagnostics(self, r: int, split: str, eval_datasets) -> None:
    """Round r's critic on data it never trained on -> logs/critic_round_XXX.json (+ .npz of the
    per-window values, TensorBoard ``critic_eval/``). Skipped for methods without a critic, with
    ``critic.diagnostics`` off, or when a split is already written (a resumed run)."""
    from habc.run import critic_diagnostics as cd
    c = self.config
    settings = c.get('critic', {})
    if not settings.get('diagnostics', True):
      return
    existing = cd.load_file(cd.path_for(self.paths.logs, r)) or {}
    if split in existing:
      return
    try:
      outputs = self.backend.critic_outputs(
          eval_datasets, seed=rollout.seed_for(c.seed, f'critic-{split}', r, 0),
          max_windows=int(settings.get('diagnostic_windows', 4096)))
    except ValueError as e:  # An empty held-out split: say so, train on.
      self.log(f'critic diagnostics, round {r} {split}: skipped ({e})')
      return
    if outputs is None:
      return
    diag = cd.summarize(outputs)
    batches = self.backend.actor_batch_weights(
        self.training_datasets(r), seed=rollout.seed_for(c.seed, 'critic-batches', r, 0))
    if batches is not None:
      diag['actor_batches'] = cd.batch_weight_stats(*batches)
    os.makedirs(self.paths.logs, exist_ok=True)
    cd.update_file(self.paths.logs, r, split, diag)
    _savez_atomic(os.path.join(self.paths.logs, f'critic_round_{r:03d}_{split}.npz'), outputs)
    self.metrics.scalars(self.round_end_step(r), cd.scalars(diag, split), prefix='critic_eval')
    h = cd.headline(diag)
    self.log(f'critic of round {r} on {split} ({diag["windows"]} windows): AUC {h["auc"]:.3f} '
             f'Brier {h["brier"]:.3f} | V_e R^2 {h["r2"]:.3f} MAE {h["mae"]:.2f} | saturated g '
             f'{100 * h["saturated"]:.0f}% | non-zero weights on '
             f'{100 * h["online_nonzero_fraction"]:.0f}% of an actor batch\'s online windows')

  def _critic_curve_point(self, r: int, updates: int, diag: dict | None = None) -> None:
    """One point of round r's learning curve of the critic on its held-out split, after
    ``updates`` of the round's updates -> logs/critic_curve_round_XXX.json (keyed by the update
    count, so a resumed round rewrites its points) and TensorBoard ``critic_curve/``. ``diag``:
    the split's diagnostics when already measured (the round's last point is its ``holdout``)."""
    from habc.run import critic_diagnostics as cd
    c = self.config
    if _holdout_fraction(c) <= 0:
      return
    if diag is None:
      try:
        outputs = self.backend.critic_outputs(
            [(self.paths.round_data(r), 1.0, 'holdout')],
            seed=rollout.seed_for(c.seed, 'critic-holdout', r, 0),
            max_windows=int(c.critic.get('diagnostic_windows', 4096)))
      except ValueError:  # An empty held-out split.
        return
      if outputs is None:
        return
      diag = cd.summarize(outputs)
    point = cd.headline(diag)
    point = {k: point[k] for k in ('auc', 'brier', 'r2', 'mae', 'saturated')}
    path = os.path.join(self.paths.logs, f'critic_curve_round_{r:03d}.json')
    curve = _read_json(path) or {}
    curve[str(updates)] = point
    os.makedirs(self.paths.logs, exist_ok=True)
    _write_json(path, dict(sorted(curve.items(), key=lambda kv: int(kv[0]))))
    self.metrics.scalars(self.round_end_step(r - 1) + updates, point, prefix='critic_curve')

  def _holdout_diagnostics(self, r: int) -> None:
    """Round r's critic on the held-out split of round r's rollouts (none held out: nothing)."""
    if _holdout_fraction(self.config) > 0:
      self._critic_diagnostics(r, 'holdout', [(self.paths.round_data(r), 1.0, 'holdout')])

  def _train_to(self, target: int, *, stage: str, round_index: int, datasets) -> None:
    c = self.config
    ckpt = self.backend.checkpointer(self.paths.checkpoints, c.pipeline.keep_checkpoints)
    resumed = self.backend.load_latest(self.paths.checkpoints, allow_fresh=True)
    step = self.backend.step
    if step >= target:
      if round_index and not _npz_readable(self.paths.gates(round_index)):
        self._save_gates(round_index, datasets, step)  # A stop before (or while) they were saved.
      if round_index and step == target:
        self._holdout_diagnostics(round_index)  # A stop before they were written.
      return
    from habc.learning import loop  # jax: imported where the learner runs.
    from habc.learning import profile as profile_lib
    ir = intervention_reweighting_at(c, round_index)
    # The critic phase: a round's first critic.phase_steps updates train the critic alone (the
    # actor's parameters and optimiser state are left exactly as they were).
    round_start = self.round_end_step(round_index - 1) if round_index else 0
    phase_steps = int(c.get('critic', {}).get('phase_steps', 0)) if round_index else 0
    batches = self.backend.batches(datasets, seed=rollout.seed_for(c.seed, stage, round_index,
                                                                    step))
    bar = self._bar(target, f'train {stage}', initial=step)

    def flags(at: int) -> dict:
      """The update that starts at learner step ``at``: online rounds hold g_t at 1 for their
      first method.warmup_steps updates after SFT (the learner's own count starts at its first
      update, so it would end during SFT); the critic phase opens each round."""
      return {'intervention_reweighting': ir,
              'gate_warmup': (at - c.pipeline.sft_steps) < c.method.warmup_steps
                             if round_index else None,
              'critic_only': (at - round_start) < phase_steps if phase_steps else None}

    def on_step(at: int) -> None:
      bar.update(1)
      self._event('train_step', stage=stage, step=at)

    runtime = c.get('runtime', {})
    plan = loop.StepPlan(target=target, log_every=c.pipeline.log_every,
                         checkpoint_every=c.pipeline.checkpoint_every, flags=flags,
                         steps_per_dispatch=int(runtime.get('steps_per_dispatch', 1)),
                         profile=profile_lib.parse_profile(runtime.get('profile', '')))
    curve_every = int(c.get('critic', {}).get('curve_every', 0)) if round_index else 0

    def on_log(at: int, metrics) -> None:
      self.metrics.scalars(at, metrics, prefix='train')
      if curve_every and (at - round_start) % curve_every == 0 and at < target:
        self._critic_curve_point(round_index, at - round_start)

    if curve_every and step == round_start:
      self._critic_curve_point(round_index, 0)  # The previous round's critic on these windows.
    hooks = loop.LoopHooks(
        on_log=on_log,
        on_checkpoint=lambda at: self.backend.save(
            ckpt, meta={'stage': stage, 'round': round_index, 'resumed_from': resumed}),
        on_step=on_step, profile_dir=os.path.join(self.paths.logs, profile_lib.PROFILE_DIR))
    try:
      # Per-metric means of the finite values (a metric of a sample kind absent from a batch is
      # NaN there), kept on the device and fetched at log points.
      means = loop.run_updates(self.backend, batches, plan, hooks)
      step = self.backend.step
    finally:
      bar.close()
      if hasattr(batches, 'close'):
        batches.close()
    os.makedirs(self.paths.logs, exist_ok=True)
    _write_json(os.path.join(self.paths.logs, f'train_{stage}.json'), means)
    if round_index:
      self._save_gates(round_index, datasets, step)
      self._holdout_diagnostics(round_index)
      if curve_every:  # The last point is the holdout diagnostics just measured.
        from habc.run import critic_diagnostics as cd
        holdout = (cd.load_file(cd.path_for(self.paths.logs, round_index)) or {}).get('holdout')
        if holdout:
          self._critic_curve_point(round_index, step - round_start, holdout)

  def _save_gates(self, round_index: int, datasets, step: int) -> None:
    """Samples g_t at the end of a round's training into logs/gates_round_XXX.npz (atomically)."""
    gates = self.backend.gate_samples(datasets, seed=rollout.seed_for(self.config.seed, 'gates',
                                                                       round_index, 0))
    if gates is None:
      return
    os.makedirs(self.paths.logs, exist_ok=True)
    _savez_atomic(self.paths.gates(round_index), gates)
    from habc.labeling import SampleKind
    for k in SampleKind:
      self.metrics.histogram(step, f'gate/{k.name.lower()}', gates['gate'][gates['kind'] == k])

  def round_end_step(self, r: int) -> int:
    """The learner step at which round ``r`` (0: SFT) ends."""
    return self.config.pipeline.sft_steps + r * self.config.pipeline.steps_per_round

  def _load_round_checkpoint(self, r: int, stage: str) -> None:
    """Loads the checkpoint that ends round ``r``; it must be the newest one."""
    step = self.backend.load_latest(self.paths.checkpoints)
    expected = self.round_end_step(r)
    if step != expected:
      raise StageOrderError(
          f'{stage} of round {r + (stage == "collect")} needs the checkpoint of step {expected} '
          f'(end of round {r}), but the newest in {self.paths.checkpoints} is {step}. Run the '
          'stages in order (--mode=pipeline).')

  # evaluation ...................................................................................
  def evaluate(self, r: int) -> None:
    key = f'eval_{r:03d}'
    if self.done(key):
      return
    c = self.config
    os.makedirs(self.paths.eval_dir, exist_ok=True)
    os.makedirs(self.paths.logs, exist_ok=True)
    self._load_round_checkpoint(r, 'eval')
    path = self.paths.eval_results(r)
    rows = _read_jsonl(path)
    start = len(rows)
    total = c.eval.episodes
    bar = self._bar(total, f'eval round {r}', initial=start)
    frames = load_npz(self.paths.eval_frames(r))  # {} when missing or cut by a stop.
    held: dict[int, dict] = {}
    next_index = [start]
    requests = [rollout.EpisodeRequest(
        episode_id=f'eval{r:03d}-{i:05d}', seed=rollout.seed_for(c.eval.seed_offset, 'eval', 0, i),
        kind='eval', policy_version=self.backend.step, record=False,
        video_camera=c.eval.video_camera) for i in range(start, total)]
    with open(path, 'a') as f:
      def on_result(result):
        index = int(result['episode_id'].rsplit('-', 1)[1])
        held[index] = result
        while next_index[0] in held:
          res = held.pop(next_index[0])
          # An evaluation measures the policy alone: an episode in which an operator took over
          # (possible on a station, whose operator runs inside the environment) is a failure.
          res['reported_success'] = bool(res['success'])
          res['success'] = bool(res['success']) and not res.get('intervention_steps', 0)
          name = 'success' if res['success'] else 'failure'
          if name not in frames and res['frames'] is not None:
            frames[name] = res['frames']
            _savez_atomic(self.paths.eval_frames(r), frames)
          row = {k: res[k] for k in ('episode_id', 'seed', 'success', 'length')}
          if res.get('intervention_steps'):
            row.update(intervention_steps=int(res['intervention_steps']),
                       reported_success=res['reported_success'])
          f.write(json.dumps(row) + '\n')
          f.flush()
          next_index[0] += 1
          bar.update(1)
          self._event('eval', round=r, index=next_index[0] - 1)

      self._run_policy_episodes(requests, self.backend.policy(rng_seed=rollout.seed_for(
          c.seed, 'eval-policy', r, 0)), on_result)
    bar.close()
    rows = _read_jsonl(path)
    stats = evaluation.summarize([row['success'] for row in rows], [row['length'] for row in rows])
    stats['round'] = r
    stats['step'] = self.backend.step
    _write_json(os.path.join(self.paths.eval_dir, f'round_{r:03d}.json'), stats)
    # At the learner step of the checkpoint evaluated, like the train scalars; eval/round says
    # which round's evaluation each point is.
    self.metrics.scalars(stats['step'], {
        'success_rate': stats['success_rate'], 'ci_low': stats['ci_low'],
        'ci_high': stats['ci_high'],
        'mean_success_length': stats['mean_success_length'] or np.nan, 'round': r},
                         prefix='eval')
    self.metrics.flush()
    if r == 0:
      self.log(f'round 0 (SFT): {evaluation.format_summary(stats)}')
    self.mark(key)

  # summaries ........................................................................................
  def round_stats(self, r: int) -> dict:
    """Evaluation, collection and learner figures of round ``r`` (what is available)."""
    out = {'round': r}
    ev = _read_json(os.path.join(self.paths.eval_dir, f'round_{r:03d}.json'))
    if ev:
      out['eval'] = ev
    if r >= 1:
      rows = [x for x in _read_jsonl(self.paths.collect_log(r), rewrite=False)
              if not x.get('invalid')]
      if rows:
        out['collect'] = evaluation.summarize(
            [x['success'] for x in rows], [x['length'] for x in rows],
            [x['intervention_steps'] for x in rows])
      train = _read_json(os.path.join(self.paths.logs, f'train_round_{r:03d}.json'))
      if train:
        out['train'] = train
      resources = _read_json(os.path.join(self.paths.logs, f'resources_round_{r:03d}.json'))
      if resources:
        out['resources'] = resources
    return out

  def round_line(self, r: int) -> str:
    s = self.round_stats(r)
    parts = [f'round {r}:']
    if 'eval' in s:
      parts.append(evaluation.format_summary(s['eval']))
    if 'collect' in s:
      cs = s['collect']
      parts.append(f'| collected {cs["episodes"]} ({cs["successes"]} succ, '
                   f'{cs["episodes_with_intervention"]} with interventions, '
                   f'{cs["intervention_steps"]} operator steps)')
    if 'train' in s:
      t = s['train']
      parts.append(f'| actor {t.get("actor/loss", np.nan):.4f} critic '
                   f'{t.get("critic/loss", np.nan):.4f} gate {evaluation.mean_gate(t):.3f} '
                   f'(successes {t.get("gate/success_mean", np.nan):.3f})')
    if 'resources' in s:
      res = s['resources']
      if res.get('policy_ms_mean') is not None:
        budget = (f' of {res["chunk_budget_ms"]:.0f} ms' if res.get('chunk_budget_ms') else '')
        parts.append(f'| policy {res["policy_ms_mean"]:.1f} ms/chunk{budget}')
      if res.get('rss_total_mb') is not None:
        parts.append(f'| RSS {res["rss_total_mb"] / 1024:.2f} GB')
    return ' '.join(parts)

  def summary(self) -> dict:
    rounds = [self.round_stats(r) for r in range(0, self.config.pipeline.rounds + 1)
              if self.done(f'eval_{r:03d}')]
    out = {'task': self.config.task, 'method': self.config.name, 'seed': self.config.seed,
           'preset': self.config.get('preset', ''), 'rounds': rounds, 'progress': self._progress}
    _write_json(self.paths.summary, out)
    return out

  def report(self) -> None:
    from habc.run import report
    summary = self.summary()
    report.write_report(self.paths.root, summary, config=self.config)
    self.mark('report')
    self.log(f'report: {os.path.join(self.paths.root, "report.md")}')


PROGRESS_LINE_EVERY_S = 15.0  # Progress without a terminal: one line per stage this often.


def _is_terminal(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # No isatty, or a closed stream.
    return False


class ProgressLines:
  """Progress as plain lines, for output that is not a terminal (tqdm's redraws would fill a
  log file): ``'<desc>: n/total (p%), e s, ~r s left'`` when an ``update`` comes at least
  ``every_s`` seconds after the bar opened or after the last line, and a closing line at
  ``close`` if any was printed. Work done in under ``every_s`` prints nothing.

  Args:
    total: units of work (episodes, learner steps).
    desc: what the work is ('train sft', 'collect round 1').
    initial: units already done (a resumed stage).
    every_s: seconds between lines (default ``PROGRESS_LINE_EVERY_S``).
    out: the stream (default: stderr at the time of each line, like tqdm).
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(self, total: int, desc: str, initial: int = 0, every_s: float | None = None,
               out=None, clock=time.monotonic):
    self.total, self.desc, self.n, self.initial = int(total), desc, int(initial), int(initial)
    self.every_s = float(PROGRESS_LINE_EVERY_S if every_s is None else every_s)
    self.out, self.clock = out, clock
    self.start = self.last = clock()
    self.lines = 0

  def line(self, now: float) -> str:
    elapsed = now - self.start
    text = f'{self.desc}: {self.n}/{self.total}'
    if self.total:
      text += f' ({100 * self.n / self.total:.0f}%)'
    text += f', {elapsed:.0f} s'
    done = self.n - self.initial
    if done > 0 and self.n < self.total:
      text += f', ~{elapsed / done * (self.total - self.n):.0f} s left'
    return text

  def _print(self, now: float) -> None:
    import sys
    out = self.out or sys.stderr
    out.write(self.line(now) + '\n')
    out.flush()
    self.last = now
    self.lines += 1

  def update(self, n: int = 1) -> None:
    self.n += n
    now = self.clock()
    if now - self.last >= self.every_s:
      self._print(now)

  def close(self) -> None:
    if self.lines:
      self._print(self.clock())
      self.lines = 0  # A second close prints nothing.


def _memory_mb() -> dict:
  """Resident memory of this process and of it with its children (worker processes), in MB."""
  try:
    import psutil
  except ImportError:
    return {}
  me = psutil.Process()
  main = me.memory_info().rss
  total = main
  for child in me.children(recursive=True):
    try:
      total += child.memory_info().rss
    except psutil.Error:
      pass
  return {'rss_main_mb': main / 2**20, 'rss_total_mb': total / 2**20}


def _next_episode_index(logged: list[dict], dataset: str, committed: int) -> int:
  """The index after the last logged and the last committed episode (ids end in '-<index>').

  Args:
    logged: the collect log's rows (each with 'episode_id'), invalid episodes included.
    dataset: the round's RLDS dataset directory.
    committed: how many episodes the dataset holds.
  """
  last = max([int(str(row['episode_id']).rsplit('-', 1)[1]) for row in logged], default=-1)
  if committed:
    from habc.data import episodes as episodes_lib
    episode = episodes_lib.EpisodeSource(dataset, cameras=())[committed - 1]
    last = max(last, int(str(episode['episode_metadata']['episode_id']).rsplit('-', 1)[1]))
  return last + 1


def _savez_atomic(path: str, arrays: dict) -> None:
  """np.savez to a temporary file renamed over ``path``: a stop never leaves a cut file."""
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _npz_readable(path: str) -> bool:
  return bool(load_npz(path))


def _read_jsonl(path: str, rewrite: bool = True) -> list[dict]:
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break  # A line cut by a crash: everything after it is recomputed.
  if not rewrite:
    return rows
  # Rewrite without the cut line so appends stay clean.
  with open(path, 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
  return rows


def run(config, workdir: str, *, mode: str = 'pipeline', overwrite: bool = False,
        on_event=None, backend=None, log: Callable[[str], None] = print) -> dict:
  """Runs (or resumes) the pipeline in ``workdir``; returns the run's summary dict."""
  prepare_workdir(config, workdir, overwrite=overwrite)
  pipeline = Pipeline(config, workdir, on_event=on_event, backend=backend, log=log)
  try:
    return pipeline.run(mode)
  finally:
    pipeline.close()


# ------------------------------------------------------------------------------------------------
# Recovery at start-up (issue 29): damaged checkpoints and dataset metadata.


def recover_workdir(pipeline: Pipeline) -> None:
  """Makes a workdir's bookkeeping match what is readable on disk, before any stage runs.

  * Checkpoints are read newest first; an unreadable one (cut, garbled) is moved aside to
    ``checkpoints.unreadable/`` (``habc.run.checkpoints.Checkpointer.newest_readable``).
  * Stages of progress.json that need a later checkpoint than the newest readable one are
    undone (``roll_back_to``), so a resume retrains from that checkpoint instead of stopping at
    "needs the checkpoint of step N".
  * A dataset under data/ whose dataset_info.json is missing or unreadable is rebuilt from its
    shards (``habc.data.writer.repair``); no shard is deleted.
  """
  progress = pipeline._progress  # pylint: disable=protected-access
  directory = pipeline.paths.checkpoints
  if os.path.isdir(directory) or progress.get('sft'):
    ckpt = pipeline.backend.checkpointer(directory, pipeline.config.pipeline.keep_checkpoints)
    ckpt.remove_temporary()  # Left by a save that died (killed, disk full).
    step, skipped = ckpt.newest_readable()
    for bad, reason, moved in skipped:
      pipeline.log(f'checkpoint {bad} in {directory} is unreadable ({reason}); moved it to '
                   f'{moved}')
    roll_back_to(pipeline, step)
  data = os.path.join(pipeline.paths.root, 'data')
  if os.path.isdir(data):
    from habc.data import writer as writer_lib
    for name in sorted(os.listdir(data)):
      path = os.path.join(data, name)
      if writer_lib.needs_repair(path):
        writer_lib.repair(path)
        pipeline.log(f'{path}: dataset_info.json was missing or unreadable; rebuilt it from its '
                     f'{writer_lib.num_episodes(path)} committed episodes')


def stale_after(pipeline: Pipeline, step: int | None) -> tuple[list[str], list[str]]:
  """Progress keys and workdir files that were made from checkpoints after ``step``.

  Round r's collection uses the checkpoint that ends round r - 1; its training, evaluation and
  round line the one that ends round r (round 0: SFT and its evaluation).

  Returns:
    (progress keys, paths), whether or not they exist.
  """
  paths, end = pipeline.paths, pipeline.round_end_step
  s = -1 if step is None else int(step)
  keys: list[str] = []
  files: list[str] = []

  def ended(r):
    files.extend([paths.eval_results(r), os.path.join(paths.eval_dir, f'round_{r:03d}.json'),
                  paths.eval_frames(r)])

  if s < end(0):
    keys += ['sft', 'eval_000']
    files.append(os.path.join(paths.logs, 'train_sft.json'))
    ended(0)
  for r in range(1, pipeline.config.pipeline.rounds + 1):
    if s < end(r - 1):
      keys.append(f'collect_{r:03d}')
      files += [paths.round_data(r), paths.collect_log(r),
                os.path.join(paths.logs, f'resources_round_{r:03d}.json')]
    if s < end(r):
      keys += [f'train_{r:03d}', f'eval_{r:03d}', f'round_{r:03d}']
      # Round r's critic diagnostics (both splits) measure the checkpoint that ends round r.
      files += [paths.gates(r), os.path.join(paths.logs, f'train_round_{r:03d}.json'),
                os.path.join(paths.logs, f'critic_round_{r:03d}.json')]
      files += [os.path.join(paths.logs, f'critic_round_{r:03d}_{split}.npz')
                for split in ('holdout', 'next_round')]
      ended(r)
  return keys, files


def roll_back_to(pipeline: Pipeline, step: int | None) -> list[str]:
  """Undoes the stages that need a checkpoint after ``step`` (the newest readable one; None:
  none). Their files are moved to ``rolled_back/<time>/`` (kept, never deleted) and their keys
  leave progress.json, so the run redoes them from ``step``. Returns the undone keys."""
  keys, files = stale_after(pipeline, step)
  progress = pipeline._progress  # pylint: disable=protected-access
  s, end = -1 if step is None else int(step), pipeline.round_end_step
  for key in progress:  # Other per-round stages ('<name>_<round>'): after the round's training.
    name, _, number = key.rpartition('_')
    if name and number.isdigit() and len(number) == 3 and key not in keys and name != 'collect' \
        and s < end(int(number)) and name != 'demos':
      keys.append(key)
  undone = [k for k in keys if progress.get(k)]
  present = [f for f in files if os.path.exists(f)]
  if not undone and not present:
    return []
  if progress.get('report'):
    undone.append('report')
  aside = os.path.join(pipeline.paths.root, 'rolled_back', time.strftime('%Y%m%d-%H%M%S'))
  for path in present:
    target = os.path.join(aside, os.path.relpath(path, pipeline.paths.root))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(path, target)
  for key in undone:
    progress.pop(key, None)
  _write_json(os.path.join(pipeline.paths.root, PROGRESS_FILE), progress)
  where = 'no readable checkpoint' if step is None else f'the newest readable checkpoint is {step}'
  moved = f'; their files are in {aside}' if present else ''
  pipeline.log(f'resuming: {where}, so these stages are redone from it: '
               f'{", ".join(undone) or "(partial ones)"}{moved}')
  return undone


def workdir_has_results(workdir: str) -> bool:
  """Whether a workdir holds anything a run made besides its config: a completed stage in
  progress.json, or any file outside logs/ (demonstrations, datasets, checkpoints, evaluation,
  a report). Temporary files of a write cut short do not count. launch.py removes the config of
  a workdir that its failed run left without results, so the corrected command is not refused
  as a config mismatch."""
  try:
    if _read_json(os.path.join(workdir, PROGRESS_FILE), {}):
      return True
  except ValueError:  # Unreadable: assume it records something.
    return True
  for root, dirs, files in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if rel == 'logs' or rel.startswith('logs' + os.sep):
      dirs[:] = []
      continue
    for name in files:
      if rel == '.' and name in (CONFIG_FILE, PROGRESS_FILE):
        continue
      if '.tmp-' in name:
        continue
      return True
  return False
