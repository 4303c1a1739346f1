"""What the dataset and run viewer shows, as plain Python data (no web framework, no TensorFlow).

``open_catalog(path)`` finds what PATH is: a run's workdir (``config.json`` and ``data/``), one
RLDS dataset (``dataset_info.json``; a round's dataset of a workdir also brings that run's credit
settings and checkpoints), or a folder holding datasets (converted teleop data, exports of
several runs...). Anything else is a ``ViewerError`` whose message says what was expected.

Memory is bounded by:

* ``DatasetView`` keeps one small summary per episode (outcome, length, operator steps, policy
  version, operator segments: about 200 bytes), filled by a background scan that parses only the
  flags and the metadata of each record, never its images;
* ``EpisodeCache`` keeps whole episodes with their images still encoded (as stored), the most
  recently used first, up to ``max_episodes`` and ``max_bytes`` (both configurable), shared by
  every dataset. Frames are served as the stored JPEG/PNG bytes, never decoded here.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from habc import labeling
from habc.data import reader
from habc.data import episodes as episodes_lib
from habc.run.paths import load_npz

# Credit settings when neither a run's config nor a checkpoint gives them (experiments/base.py).
DEFAULT_CREDIT = {'horizon': 16, 'next_offset': 8, 'min_human_steps': 10, 'naive': False}
KIND_NAMES = [k.name for k in labeling.SampleKind]
DATASET_SEARCH_DEPTH = 3
# Gate values this close to the ends of (0, 2) count as saturated.
SATURATION_MARGIN = 0.05
_ROUND_FILE = re.compile(r'round_(\d{3})(?!\d)')


class ViewerError(Exception):
  """Bad input the viewer explains to its user (a page or a JSON message, never a traceback)."""


# ------------------------------------------------------------------------------------------------
# Small helpers.


def read_json(path: str, default=None):
  """A JSON file's content; ``default`` when it is missing or unreadable (cut by a stop)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def read_jsonl(path: str) -> list[dict]:
  """The rows of a JSON-lines file up to the first cut line (never rewrites it)."""
  rows = []
  try:
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:
          break
  except OSError:
    pass
  return rows


def finite_list(values, digits: int = 6) -> list:
  """A numeric array as a JSON-safe list: rounded, NaN and inf as None."""
  arr = np.asarray(values, np.float64)
  out = np.round(arr, digits).tolist()
  if np.isfinite(arr).all():
    return out

  def clean(x):
    if isinstance(x, list):
      return [clean(v) for v in x]
    return x if math.isfinite(x) else None

  return clean(out)


def flatten_numbers(d: Mapping, prefix: str = '') -> dict[str, float]:
  """Nested dict -> {'a/b': number} of its finite numeric leaves (lists of numbers skipped)."""
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, Mapping):
      out.update(flatten_numbers(v, key + '/'))
    elif isinstance(v, bool):
      out[key] = float(v)
    elif isinstance(v, (int, float)) and math.isfinite(v):
      out[key] = float(v)
  return out


def credit_from_config(config: Mapping | None) -> dict | None:
  """The credit settings of a run's config (a dict as saved in config.json), or None."""
  if not config:
    return None
  try:
    return {'horizon': int(config['model']['action_horizon']),
            'next_offset': int(config['credit']['next_offset']),
            'min_human_steps': int(config['credit']['min_human_steps']),
            'naive': bool(config['credit'].get('naive', False))}
  except (KeyError, TypeError, ValueError):
    return None


def check_credit(credit: Mapping) -> dict:
  """Validated credit settings (ints >= 1 and a bool) or ViewerError."""
  try:
    out = {'horizon': int(credit['horizon']), 'next_offset': int(credit['next_offset']),
           'min_human_steps': int(credit['min_human_steps']), 'naive': bool(credit['naive'])}
  except (KeyError, TypeError, ValueError) as e:
    raise ViewerError(f'Credit settings need integer horizon, next_offset and min_human_steps '
                      f'({e}).') from e
  for key in ('horizon', 'next_offset', 'min_human_steps'):
    if not 1 <= out[key] <= 100_000:
      raise ViewerError(f'Credit setting {key}={out[key]} must be between 1 and 100000.')
  return out


# ------------------------------------------------------------------------------------------------
# Episodes: a bounded cache of encoded episodes, per-episode summaries.


class EpisodeCache:
  """Least-recently-used episodes (images encoded), bounded in count and in bytes."""

  def __init__(self, max_episodes: int = 16, max_bytes: int = 256 * 2**20):
    self.max_episodes, self.max_bytes = max(1, int(max_episodes)), int(max_bytes)
    self._items: collections.OrderedDict = collections.OrderedDict()
    self._sizes: dict = {}
    self._lock = threading.Lock()

  @property
  def nbytes(self) -> int:
    return sum(self._sizes.values())

  def __len__(self) -> int:
    return len(self._items)

  def get(self, key, load):
    with self._lock:
      if key in self._items:
        self._items.move_to_end(key)
        return self._items[key]
    value = load()
    size = episode_nbytes(value)
    with self._lock:
      self._items[key] = value
      self._sizes[key] = size
      self._items.move_to_end(key)
      # The newest stays even when it alone is over the limit (it is being shown).
      while len(self._items) > 1 and (len(self._items) > self.max_episodes
                                      or self.nbytes > self.max_bytes):
        old, _ = self._items.popitem(last=False)
        self._sizes.pop(old, None)
    return value


def episode_nbytes(episode: Mapping) -> int:
  """Bytes held by an episode's arrays (encoded images counted by their byte strings)."""
  total = 0

  def add(x):
    nonlocal total
    if isinstance(x, Mapping):
      for v in x.values():
        add(v)
    elif isinstance(x, np.ndarray):
      if x.dtype == object:
        total += sum(len(b) for b in x.ravel() if isinstance(b, (bytes, bytearray)))
      total += x.nbytes
    elif isinstance(x, (bytes, str)):
      total += len(x)

  add(episode)
  return total


def summarize_episode(index: int, parsed: Mapping) -> dict:
  """One row of the episode list from the flags and metadata of a parsed record."""
  steps, meta = parsed['steps'], parsed['episode_metadata']
  flags = np.asarray(steps['is_intervention'], bool)
  terminal = np.asarray(steps.get('is_terminal', np.zeros(0, bool)), bool)
  text = episodes_lib._text  # pylint: disable=protected-access
  return {
      'index': int(index), 'episode_id': text(meta['episode_id']), 'task': text(meta['task']),
      'source': text(meta['source']), 'operator': text(meta['operator']),
      'success': bool(meta['success']), 'policy_version': int(meta['policy_version']),
      'steps': int(flags.size), 'length': max(int(flags.size) - 1, 0),
      'operator_steps': int(flags.sum()),
      'terminal': bool(terminal[-1]) if terminal.size else False,
      'human_segments': [[a, b] for a, b, human in labeling.segments(flags) if human],
  }


class DatasetView:
  """One RLDS dataset as the viewer sees it: lazy episode summaries, episodes through the cache."""

  def __init__(self, name: str, path: str, cache: EpisodeCache):
    self.name, self.path, self.cache = name, os.path.abspath(path), cache
    self.error: str | None = None
    self.source: episodes_lib.EpisodeSource | None = None
    self._summaries: list = []
    self._lock = threading.Lock()
    self._parser = None
    self._scan_thread: threading.Thread | None = None
    self._stop = threading.Event()
    self.scan_seconds: float | None = None
    self.camera_order: tuple[str, ...] = ()
    try:
      self.source = episodes_lib.EpisodeSource(self.path, decode=False)
      self._summaries = [None] * len(self.source)
    except (OSError, ValueError) as e:
      self.error = str(e)

  # -- facts ----------------------------------------------------------------------------------
  def __len__(self) -> int:
    return len(self._summaries)

  @property
  def spec(self):
    return None if self.source is None else self.source.spec

  @property
  def cameras(self) -> tuple[str, ...]:
    """Camera names: in the run's config order where it names them, the rest sorted."""
    if self.source is None:
      return ()
    names = set(self.source.spec.camera_names)
    first = [c for c in self.camera_order if c in names]
    return tuple(first + sorted(names - set(first)))

  def camera_shapes(self) -> dict:
    if self.source is None:
      return {}
    return {name: list(shape) for name, shape in self.source.spec.cameras}

  def require(self) -> episodes_lib.EpisodeSource:
    if self.source is None:
      raise ViewerError(f'Dataset {self.name!r} cannot be read: {self.error}')
    return self.source

  def check_index(self, index) -> int:
    self.require()
    try:
      index = int(index)
    except (TypeError, ValueError) as e:
      raise ViewerError(f'Episode index {index!r} is not a number.') from e
    if not 0 <= index < len(self):
      raise ViewerError(f'Dataset {self.name!r} has {len(self)} episodes (0 to {len(self) - 1}); '
                        f'there is no episode {index}.')
    return index

  # -- summaries ------------------------------------------------------------------------------
  def _summary_parser(self):
    if self._parser is None:
      from tensorflow_datasets.core import example_parser
      info = self.source._features().get_serialized_info()  # pylint: disable=protected-access
      subset = {'steps': {k: info['steps'][k] for k in ('is_intervention', 'is_terminal')
                          if k in info['steps']},
                'episode_metadata': dict(info['episode_metadata'])}
      self._parser = example_parser.ExampleParserNp(subset)
    return self._parser

  def summary(self, index: int) -> dict:
    """The list row of episode ``index`` (computed once, from flags and metadata only)."""
    index = self.check_index(index)
    row = self._summaries[index]
    if row is None:
      try:
        parsed = self._summary_parser().parse_example(self.source.raw(index))
        row = summarize_episode(index, parsed)
      except Exception as e:  # pylint: disable=broad-except
        row = {'index': index, 'episode_id': '?', 'error': f'{type(e).__name__}: {e}',
               'task': '', 'source': '', 'operator': '', 'success': False, 'policy_version': 0,
               'steps': 0, 'length': 0, 'operator_steps': 0, 'terminal': False,
               'human_segments': []}
      self._summaries[index] = row
    return row

  @property
  def indexed(self) -> int:
    return sum(s is not None for s in self._summaries)

  def start_scan(self) -> None:
    """Summarises every episode in a background thread (the list's filters need them all)."""
    with self._lock:
      if self.source is None or self._scan_thread is not None:
        return
      self._scan_thread = threading.Thread(target=self._scan, daemon=True,
                                           name=f'habc-view-scan-{self.name}')
      self._scan_thread.start()

  def _scan(self):
    start = time.perf_counter()
    for i in range(len(self)):
      if self._stop.is_set():
        return
      if self._summaries[i] is None:
        self.summary(i)
        time.sleep(0)  # Let request threads in between records.
    self.scan_seconds = time.perf_counter() - start

  def stop(self):
    self._stop.set()

  def index_until(self, deadline: float) -> None:
    """Summarises episodes not yet summarised, in this thread, until ``time.monotonic()`` passes
    ``deadline`` (the background scan goes on after)."""
    if self.source is None:
      return
    for i in range(len(self)):
      if time.monotonic() > deadline:
        return
      if self._summaries[i] is None:
        self.summary(i)

  def wait_indexed(self, timeout_s: float = 60.0) -> bool:
    """Waits for the scan (started here if it was not) to summarise every episode."""
    self.start_scan()
    deadline = time.monotonic() + timeout_s
    while self.indexed < len(self) and time.monotonic() < deadline:
      time.sleep(0.02)
    return self.indexed >= len(self)

  def summaries(self) -> list[dict]:
    """The summaries computed so far."""
    return [s for s in self._summaries if s is not None]

  # -- episodes -------------------------------------------------------------------------------
  def episode(self, index: int) -> dict:
    """The whole episode, images encoded (through the shared cache)."""
    index = self.check_index(index)
    try:
      return self.cache.get((self.path, index), lambda: self.source[index])
    except ValueError as e:
      raise ViewerError(str(e)) from e

  def frame(self, index: int, camera: str, t) -> tuple[bytes, str]:
    """The stored bytes of one camera frame and their media type."""
    if camera not in self.cameras:
      raise ViewerError(f'Dataset {self.name!r} has no camera {camera!r} (it has '
                        f'{list(self.cameras) or "none"}).')
    frames = self.episode(index)['steps']['observation'][camera]
    try:
      t = int(t)
    except (TypeError, ValueError) as e:
      raise ViewerError(f'Step {t!r} is not a number.') from e
    if not 0 <= t < len(frames):
      raise ViewerError(f'Episode {index} has {len(frames)} steps; there is no step {t}.')
    data = bytes(frames[t])
    return data, image_media_type(data)


def image_media_type(data: bytes) -> str:
  if data[:8] == b'\x89PNG\r\n\x1a\n':
    return 'image/png'
  return 'image/jpeg'


# ------------------------------------------------------------------------------------------------
# Filters and pages of the episode list.

OUTCOMES = ('any', 'success', 'failure')
INTERVENTIONS = ('any', 'yes', 'no')
SORTS = ('index', 'length', '-length', 'operator_steps', '-operator_steps')


def filter_rows(rows: Iterable[dict], *, outcome: str = 'any', intervention: str = 'any',
                min_length: int | None = None, max_length: int | None = None,
                source: str = '', sort: str = 'index') -> list[dict]:
  """Rows of the episode list that pass the filters, sorted."""
  if outcome not in OUTCOMES:
    raise ViewerError(f'outcome must be one of {OUTCOMES}, got {outcome!r}.')
  if intervention not in INTERVENTIONS:
    raise ViewerError(f'intervention must be one of {INTERVENTIONS}, got {intervention!r}.')
  if sort not in SORTS:
    raise ViewerError(f'sort must be one of {SORTS}, got {sort!r}.')
  out = []
  for row in rows:
    if outcome != 'any' and row['success'] != (outcome == 'success'):
      continue
    if intervention != 'any' and (row['operator_steps'] > 0) != (intervention == 'yes'):
      continue
    if min_length is not None and row['length'] < min_length:
      continue
    if max_length is not None and row['length'] > max_length:
      continue
    if source and row['source'] != source:
      continue
    out.append(row)
  if sort != 'index':
    key, sign = sort.lstrip('-'), -1 if sort.startswith('-') else 1
    out.sort(key=lambda r: (sign * r[key], _dataset_order(r.get('dataset', '')), r['index']))
  return out


# ------------------------------------------------------------------------------------------------
# What PATH is.


def _find_datasets(root: str, depth: int) -> list[str]:
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    rel_depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
    if 'dataset_info.json' in filenames:
      found.append(dirpath)
      dirnames[:] = []
      continue
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    if rel_depth >= depth:
      dirnames[:] = []
  return sorted(found)


def _dataset_order(name: str):
  return (0 if name == 'demos' else 1, name)


class Catalog:
  """Everything PATH holds: datasets by name, and the run around them when there is one."""

  def __init__(self, path: str, *, kind: str, datasets: Mapping[str, str],
               workdir: str | None = None, cache: EpisodeCache | None = None,
               extra_checkpoints: Sequence[str] = ()):
    self.path, self.kind, self.workdir = path, kind, workdir
    self.cache = cache or EpisodeCache()
    names = sorted(datasets, key=_dataset_order)
    self.datasets = {n: DatasetView(n, datasets[n], self.cache) for n in names}
    self.config = read_json(os.path.join(workdir, 'config.json')) if workdir else None
    order = tuple((self.config or {}).get('cameras') or ())
    for view in self.datasets.values():
      view.camera_order = order
    self.extra_checkpoints = [os.path.abspath(os.path.expanduser(p)) for p in extra_checkpoints]

  @property
  def credit(self) -> dict:
    """The credit settings the window kinds are computed with (the run's own when known)."""
    return credit_from_config(self.config) or dict(DEFAULT_CREDIT)

  @property
  def credit_source(self) -> str:
    if credit_from_config(self.config):
      return f'the run\'s config ({os.path.join(self.workdir, "config.json")})'
    return 'defaults (experiments/base.py): no run config found'

  def dataset(self, name: str | None) -> DatasetView:
    if not name:
      if len(self.datasets) == 1:
        return next(iter(self.datasets.values()))
      raise ViewerError(f'Choose a dataset: {", ".join(self.datasets)}.')
    if name not in self.datasets:
      raise ViewerError(f'No dataset {name!r} here; there are: {", ".join(self.datasets)}.')
    return self.datasets[name]

  def checkpoint_dirs(self) -> list[str]:
    dirs = []
    if self.workdir:
      dirs.append(os.path.join(self.workdir, 'checkpoints'))
    dirs.extend(self.extra_checkpoints)
    return dirs

  def start_scans(self) -> None:
    for view in self.datasets.values():
      view.start_scan()

  def stop(self) -> None:
    for view in self.datasets.values():
      view.stop()


def is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, 'config.json')) and os.path.isdir(
      os.path.join(path, 'data'))


def open_catalog(path: str, *, cache: EpisodeCache | None = None,
                 extra_checkpoints: Sequence[str] = ()) -> Catalog:
  """What PATH is: a workdir, one dataset, or a folder of datasets (ViewerError otherwise)."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.exists(path):
    raise ViewerError(f'{path} does not exist.')
  if not os.path.isdir(path):
    raise ViewerError(f'{path} is a file. Give a run\'s workdir, an RLDS dataset folder (one with '
                      'dataset_info.json) or a folder that holds datasets.')
  common = dict(cache=cache, extra_checkpoints=extra_checkpoints)
  if is_workdir(path):
    data = os.path.join(path, 'data')
    found = {os.path.relpath(d, data): d for d in _find_datasets(data, 1)}
    return Catalog(path, kind='workdir', datasets=found, workdir=path, **common)
  if os.path.isfile(os.path.join(path, 'dataset_info.json')):
    parent = os.path.dirname(path)
    workdir = os.path.dirname(parent) if os.path.basename(parent) == 'data' else None
    if workdir and not is_workdir(workdir):
      workdir = None
    return Catalog(path, kind='dataset', datasets={os.path.basename(path): path},
                   workdir=workdir, **common)
  found = _find_datasets(path, DATASET_SEARCH_DEPTH)
  if not found:
    raise ViewerError(
        f'{path} is not a dataset: it has no dataset_info.json, nor has any of its subfolders '
        f'(searched {DATASET_SEARCH_DEPTH} levels deep). Give a run\'s workdir (config.json and '
        'data/), an RLDS dataset folder, or a folder of them. Teleop recordings (ALOHA HDF5, '
        'LeRobot, npz) are converted first: python data/convert_teleop.py (docs/data.md).')
  return Catalog(path, kind='folder', datasets={os.path.relpath(d, path): d for d in found},
                 **common)


# ------------------------------------------------------------------------------------------------
# One episode, as the episode page needs it.


def step_kinds(episode: Mapping, credit: Mapping) -> tuple[list, labeling.Windows | None]:
  """SampleKind per step (the window anchored there; None for the final step) and the windows."""
  steps = episode['steps']
  num_steps = len(steps['is_intervention'])
  if num_steps < 2:
    return [None] * num_steps, None
  windows = reader.episode_windows(episode, horizon=credit['horizon'],
                                   next_offset=credit['next_offset'],
                                   min_human_steps=credit['min_human_steps'],
                                   naive=credit['naive'])
  return [int(k) for k in windows.kind] + [None], windows


def episode_detail(view: DatasetView, index: int, credit: Mapping) -> dict:
  """Everything the episode page plots (images excepted: they are fetched one frame at a time)."""
  index = view.check_index(index)
  episode = view.episode(index)
  steps, meta = episode['steps'], episode['episode_metadata']
  flags = np.asarray(steps['is_intervention'], bool)
  credit = check_credit(credit)
  kinds, windows = step_kinds(episode, credit)
  obs = steps['observation']
  out = {
      'dataset': view.name, 'index': index, 'num_episodes': len(view),
      'metadata': meta, 'instruction': steps['language_instruction'],
      'num_steps': int(flags.size), 'length': max(int(flags.size) - 1, 0),
      'cameras': [{'name': c, 'shape': view.camera_shapes().get(c)} for c in view.cameras],
      'action': finite_list(steps['action']), 'policy_action': finite_list(steps['policy_action']),
      'state': finite_list(obs['state']) if 'state' in obs else None,
      'privileged': finite_list(obs['privileged']) if 'privileged' in obs else None,
      'reward': finite_list(steps['reward']), 'discount': finite_list(steps['discount']),
      'is_intervention': flags.astype(int).tolist(),
      'is_terminal': np.asarray(steps['is_terminal'], bool).astype(int).tolist(),
      'segments': [{'start': a, 'stop': b, 'controller': 'human' if h else 'policy'}
                   for a, b, h in labeling.segments(flags)],
      'kinds': kinds, 'kind_names': KIND_NAMES, 'credit': credit,
      'human_steps': windows.human_steps.tolist() if windows is not None else [],
  }
  return out


# ------------------------------------------------------------------------------------------------
# The run: per-round figures from what the pipeline wrote.


def gate_histograms(gate: np.ndarray, kind: np.ndarray, bins: int = 40) -> dict:
  """Histogram of g_t in (0, 2) per sample kind present, with means and saturated fractions."""
  edges = np.linspace(0.0, 2.0, bins + 1)
  out = {'edges': finite_list(edges, 4), 'kinds': {}}
  gate, kind = np.asarray(gate, np.float64), np.asarray(kind)
  for k in labeling.SampleKind:
    values = gate[kind == k]
    if values.size:
      counts, _ = np.histogram(np.clip(values, 0.0, 2.0), edges)
      saturated = (values < SATURATION_MARGIN) | (values > 2.0 - SATURATION_MARGIN)
      out['kinds'][k.name] = {'count': int(values.size), 'mean': float(values.mean()),
                              'saturated': float(saturated.mean()), 'hist': counts.tolist()}
  return out


def _collect_summary(rows: list[dict]) -> dict | None:
  from habc.run import evaluation
  rows = [r for r in rows if not r.get('invalid')]
  if not rows:
    return None
  return evaluation.summarize([bool(r.get('success')) for r in rows],
                              [int(r.get('length', 0)) for r in rows],
                              [int(r.get('intervention_steps') or 0) for r in rows])


def run_summary(catalog: Catalog) -> dict:
  """Per-round evaluation, collection, learner and critic figures of the catalog's workdir."""
  workdir = catalog.workdir
  if not workdir:
    raise ViewerError(f'{catalog.path} is not a run\'s workdir (no config.json and data/ here or '
                      'two levels up); there is no run page. The episodes are listed instead.')
  config = catalog.config or {}
  progress = read_json(os.path.join(workdir, 'progress.json'), {}) or {}
  logs, evals = os.path.join(workdir, 'logs'), os.path.join(workdir, 'eval')
  planned = int(((config.get('pipeline') or {}).get('rounds')) or 0)
  present = set()
  for folder in (logs, evals, os.path.join(workdir, 'data')):
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        match = _ROUND_FILE.search(name)
        if match:
          present.add(int(match.group(1)))
  rounds = []
  for r in sorted(set(range(planned + 1)) | present):
    tag = f'round_{r:03d}'
    row: dict[str, Any] = {'round': r, 'dataset': tag if tag in catalog.datasets else None}
    ev = read_json(os.path.join(evals, f'{tag}.json'))
    if ev:
      row['eval'] = ev
    if r >= 1:
      collect = _collect_summary(read_jsonl(os.path.join(logs, f'collect_{tag}.jsonl')))
      if collect:
        row['collect'] = collect
    train = read_json(os.path.join(logs, f'train_{tag}.json' if r else 'train_sft.json'))
    if isinstance(train, dict):
      row['train'] = flatten_numbers(train)
    critic = read_json(os.path.join(logs, f'critic_{tag}.json'))
    if isinstance(critic, dict):
      row['critic'] = flatten_numbers(critic)
    resources = read_json(os.path.join(logs, f'resources_{tag}.json'))
    if isinstance(resources, dict):
      row['resources'] = flatten_numbers(resources)
    gates = load_npz(os.path.join(logs, f'gates_{tag}.npz'))
    if 'gate' in gates and 'kind' in gates:
      row['gates'] = gate_histograms(gates['gate'], gates['kind'])
    if len(row) > 2 or r <= planned:
      rounds.append(row)
  plots = sorted(f for f in os.listdir(os.path.join(workdir, 'plots'))
                 if f.endswith('.png')) if os.path.isdir(os.path.join(workdir, 'plots')) else []
  return {
      'workdir': workdir, 'method': config.get('name', ''), 'task': config.get('task', ''),
      'seed': config.get('seed'), 'preset': config.get('preset', ''), 'obs': config.get('obs', ''),
      'planned_rounds': planned, 'progress': progress, 'rounds': rounds,
      'datasets': {n: {'episodes': len(v), 'error': v.error} for n, v in catalog.datasets.items()},
      'report': os.path.exists(os.path.join(workdir, 'report.md')), 'plots': plots,
      'credit': catalog.credit,
  }
