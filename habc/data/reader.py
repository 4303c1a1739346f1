"""From RLDS datasets to training batches: episodes -> credit labels and windows -> batches.

Pipeline (each step a small function; grain runs the per-episode part in worker processes):

  EpisodeSource[i]            one episode, random access over the dataset's array_record shards,
                              parsed with numpy (no TensorFlow), images decoded to uint8
                              (``habc.data.episodes``)
  -> episode_pack             credit labels and windows (``habc.labeling.make_windows``), states
                              and actions normalised, instruction tokenised; images kept once
                              per step (windows hold indices, not copies)
  -> WindowPool               a buffer of a few episode packs per dataset; windows are drawn
                              from it without replacement, in random order
  -> gather_batch             the batch of docs/interfaces.md section 3

Several datasets are mixed with given ratios: each batch draws its rows from the datasets'
pools by a multinomial over the ratios. Episodes are shuffled each epoch; with
``num_epochs=None`` the stream is endless.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from habc import labeling
from habc.data import episodes as episodes_lib
from habc.data import images as images_lib
from habc.data import sampler as sampler_lib
from habc.data import stats as stats_lib
from habc.data import text

OBS_MODES = ('vision', 'state')


def episode_windows(episode: Mapping[str, Any], *, horizon: int, next_offset: int = 1,
                    min_human_steps: int = 10, naive: bool = False) -> labeling.Windows:
  """Credit labels and windows of one episode (``habc.labeling.make_windows``).

  A demonstration (metadata ``source == 'demo'``) gives SFT windows; the end is a real success
  when the last step ``is_terminal``.
  """
  steps, meta = episode['steps'], episode['episode_metadata']
  return labeling.make_windows(
      steps['is_intervention'], meta['success'], horizon=horizon, next_offset=next_offset,
      min_human_steps=min_human_steps, is_terminal_end=bool(steps['is_terminal'][-1]),
      is_demo=meta['source'] == 'demo', naive=naive)


def model_inputs(observation: Mapping[str, np.ndarray], instruction: str | Sequence[str],
                 stats: stats_lib.NormStats, *, cameras: Sequence[str], obs: str, max_len: int,
                 episode_id: str = '') -> dict:
  """Raw observations (an episode's steps, or a batch of live ones) -> the model's inputs.

  The one place where states are normalised and instructions tokenised, for training batches
  (``EpisodePack``) and for the policy in the environment (``env_model_inputs``) alike.

  Args:
    observation: arrays with a leading axis N: 'state' [N, S], 'privileged' [N, P] (appended to
      the state with obs='state' when present), and with obs='vision' each of ``cameras``
      (decoded uint8 [N, H, W, 3], or encoded bytes [N]).
    instruction: one string for every row, or N strings.
    stats: the dataset's normalisation statistics.
    cameras: camera order of 'images'.
    obs: 'vision' or 'state'.
    max_len: L, the instruction length in tokens.
    episode_id: named in errors.

  Returns:
    {'state': f32 [N, S'], 'instruction': int32 [L] (one string) or [N, L], and with
    obs='vision' 'images': uint8 [N, C, H, W, 3]}.
  """
  if obs not in OBS_MODES:
    raise ValueError(f'obs must be one of {OBS_MODES}, got {obs!r}.')
  state = stats.normalise('state', observation['state'])
  if obs == 'state' and 'privileged' in observation:
    state = np.concatenate([state, stats.normalise('privileged', observation['privileged'])], -1)
  if isinstance(instruction, (str, bytes)):
    tokens = text.tokenize(instruction, max_len)
  else:
    tokens = np.stack([text.tokenize(t, max_len) for t in instruction])
  out = {'state': np.asarray(state, np.float32), 'instruction': tokens}
  if obs == 'vision':
    out['images'] = stack_cameras(observation, cameras, episode_id)
  return out


def env_model_inputs(observations: Sequence[Mapping[str, Any]], stats: stats_lib.NormStats, *,
                     cameras: Sequence[str], obs: str, max_len: int) -> dict:
  """N observation dicts as an environment returns them (each with its episode's 'instruction'
  string added by the rollout worker) -> ``model_inputs`` with instruction int32 [N, L]."""
  keys = ['state'] + (['privileged'] if obs == 'state' else []) + (
      list(cameras) if obs == 'vision' else [])
  columns = {k: np.stack([o[k] for o in observations]) for k in keys if k in observations[0]}
  return model_inputs(columns, [o.get('instruction', '') for o in observations], stats,
                      cameras=cameras, obs=obs, max_len=max_len)


class EpisodePack:
  """Callable (picklable) episode -> pack: everything a batch needs from one episode.

  The pack: images uint8 [T, C, H, W, 3] ('vision' only), state f32 [T, S'], actions f32 [T, A]
  (normalised), instruction int32 [L], and the ``Windows`` fields (N = T - 1 windows).
  """

  def __init__(self, *, horizon, next_offset, min_human_steps, naive, cameras, obs, stats,
               max_instruction_len):
    if obs not in OBS_MODES:
      raise ValueError(f'obs must be one of {OBS_MODES}, got {obs!r}.')
    self.horizon, self.next_offset = horizon, next_offset
    self.min_human_steps, self.naive = min_human_steps, naive
    self.cameras, self.obs, self.stats = tuple(cameras), obs, stats
    self.max_instruction_len = max_instruction_len

  def __call__(self, episode: Mapping[str, Any]) -> dict:
    windows = episode_windows(episode, horizon=self.horizon, next_offset=self.next_offset,
                              min_human_steps=self.min_human_steps, naive=self.naive)
    steps = episode['steps']
    pack = {name: np.asarray(value) for name, value in windows._asdict().items()}
    pack.update(model_inputs(steps['observation'], steps['language_instruction'], self.stats,
                             cameras=self.cameras, obs=self.obs,
                             max_len=self.max_instruction_len,
                             episode_id=episode['episode_metadata']['episode_id']))
    pack['actions'] = self.stats.normalise('action', steps['action'])
    return pack


def stack_cameras(observation: Mapping[str, np.ndarray], cameras: Sequence[str],
                  episode_id: str = '') -> np.ndarray:
  """Cameras (decoded uint8 [T, H, W, 3], or encoded bytes [T]) -> uint8 [T, C, H, W, 3]."""
  frames = [observation[c] for c in cameras]
  num_steps = len(frames[0])
  if all(f.dtype == np.uint8 and f.ndim == 4 for f in frames):
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) != 1:
      raise ValueError(f'Episode {episode_id!r}: cameras {tuple(cameras)} have different image '
                       f'shapes {shapes}; convert with --resize to one size.')
    return np.stack(frames, axis=1)
  first = images_lib.decode_images(frames[0][:1])
  out = np.empty((num_steps, len(cameras)) + first.shape[1:], np.uint8)
  for c, encoded in enumerate(frames):  # Decoded straight into place: no extra copy.
    try:
      images_lib.decode_images(encoded, out=out[:, c])
    except ValueError as e:
      raise ValueError(f'Episode {episode_id!r}: cameras {tuple(cameras)} have different image '
                       f'shapes; convert with --resize to one size ({e}).') from e
  return out


def gather_batch(parts: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]], batch_size: int,
                 *, obs: str) -> dict:
  """Windows drawn from episode packs -> one batch (docs/interfaces.md section 3).

  Args:
    parts: (pack, window indices [n_j]) pairs; sum n_j <= batch_size (the rest is padding with
      ``valid`` False).
    batch_size: B.
    obs: 'vision' or 'state'.
  """
  if not parts:
    raise ValueError('gather_batch: no windows to gather.')
  first = parts[0][0]
  horizon = first['action_index'].shape[1]

  def empty(shape, dtype):
    return np.zeros((batch_size,) + tuple(shape), dtype)

  out = {
      'state': empty(first['state'].shape[1:], np.float32),
      'next_state': empty(first['state'].shape[1:], np.float32),
      'instruction': empty(first['instruction'].shape, np.int32),
      'actions': empty((horizon,) + first['actions'].shape[1:], np.float32),
      'action_mask': empty((horizon,), bool),
      'kind': np.full((batch_size,), int(labeling.SampleKind.UNLABELLED), np.int32),
      'outcome': empty((), np.float32), 'viability_mask': empty((), bool),
      'efficiency_mask': empty((), bool), 'next_is_terminal': empty((), bool),
      'steps_to_end': empty((), np.float32), 'episode_success': empty((), bool),
      'sample_weight': empty((), np.float32)}
  if obs == 'vision':  # Not zero-filled (large); padding rows are zeroed below.
    out['images'] = np.empty((batch_size,) + first['images'].shape[1:], np.uint8)
    out['next_images'] = np.empty_like(out['images'])
  row = 0
  for pack, idx in parts:
    rows = slice(row, row + len(idx))
    anchor, nxt = pack['anchor'][idx], pack['next_index'][idx]
    mask = pack['action_mask'][idx]
    if obs == 'vision':
      out['images'][rows] = pack['images'][anchor]
      out['next_images'][rows] = pack['images'][nxt]
    out['state'][rows] = pack['state'][anchor]
    out['next_state'][rows] = pack['state'][nxt]
    out['instruction'][rows] = pack['instruction']
    out['actions'][rows] = pack['actions'][pack['action_index'][idx]] * mask[..., None]
    out['action_mask'][rows] = mask
    for key in ('kind', 'outcome', 'viability_mask', 'efficiency_mask', 'next_is_terminal',
                'steps_to_end', 'episode_success'):
      out[key][rows] = pack[key][idx]
    # Importance weights of a stratified sampler (habc.data.sampler); 1 otherwise.
    out['sample_weight'][rows] = pack['sample_weight'][idx] if 'sample_weight' in pack else 1.0
    row += len(idx)
  if obs == 'vision':
    out['images'][row:] = 0
    out['next_images'][row:] = 0
  obs_now = {'state': out['state'], 'instruction': out['instruction']}
  obs_next = {'state': out['next_state'], 'instruction': out['instruction']}
  if obs == 'vision':
    obs_now['images'], obs_next['images'] = out['images'], out['next_images']
  return {'obs': obs_now, 'next_obs': obs_next, 'actions': out['actions'],
          'action_mask': out['action_mask'], 'kind': out['kind'], 'outcome': out['outcome'],
          'viability_mask': out['viability_mask'], 'efficiency_mask': out['efficiency_mask'],
          'next_is_terminal': out['next_is_terminal'], 'steps_to_end': out['steps_to_end'],
          'episode_success': out['episode_success'], 'sample_weight': out['sample_weight'],
          'valid': np.arange(batch_size) < row}


class WindowPool:
  """Draws windows without replacement from a buffer of up to ``size`` episode packs."""

  def __init__(self, packs: Iterator[dict], size: int, rng: np.random.Generator):
    self._packs, self._size, self._rng = packs, max(1, size), rng
    self._buffer: list[list] = []  # [pack, shuffled window order, next position]
    self.exhausted = False

  def _fill(self):
    while not self.exhausted and len(self._buffer) < self._size:
      try:
        pack = next(self._packs)
      except StopIteration:
        self.exhausted = True
        break
      order = self._rng.permutation(len(pack['anchor']))
      if len(order):
        self._buffer.append([pack, order, 0])

  @property
  def empty(self) -> bool:
    self._fill()
    return not self._buffer

  def take(self, n: int) -> list[tuple[dict, np.ndarray]]:
    """Up to n windows as (pack, indices) pairs; fewer only when the stream has ended."""
    parts = []
    while n > 0:
      self._fill()
      if not self._buffer:
        break
      remaining = np.array([len(o) - p for _, o, p in self._buffer], np.float64)
      counts = self._rng.multinomial(n, remaining / remaining.sum())
      counts = np.minimum(counts, remaining.astype(np.int64))
      for entry, count in zip(self._buffer, counts):
        if count:
          pack, order, pos = entry
          parts.append((pack, order[pos:pos + count]))
          entry[2] = pos + count
          n -= int(count)
      self._buffer = [e for e in self._buffer if e[2] < len(e[1])]
    return parts


def episode_stream(path: str, pack_fn: EpisodePack, *, cameras, seed: int, num_epochs,
                   num_workers: int, read_threads: int = 2, split: str | None = None,
                   holdout_fraction: float = 0.0) -> Iterator[dict]:
  """Shuffled episode packs of one dataset (grain; worker processes when num_workers > 0);
  ``split`` 'train' / 'holdout' reads one side of ``sampler.holdout_mask`` only."""
  import grain
  # EpisodePack decodes in place.
  source = episodes_lib.EpisodeSource(path, cameras=cameras, decode=False)
  if not len(source):
    raise ValueError(f'{path} holds no episodes; nothing to read.')
  if split not in (None, 'all'):
    indices = sampler_lib.split_indices(len(source), split, holdout_fraction)
    if not len(indices):
      raise ValueError(f'{path}: the {split!r} split of its {len(source)} episodes (holdout '
                       f'fraction {holdout_fraction}) is empty; collect more episodes or change '
                       'critic.holdout_fraction.')
    source = sampler_lib.EpisodeSubset(source, indices)
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs).map(pack_fn)
  # Small buffers: a pack holds a whole episode's images; grain's defaults (500) would hold GBs.
  # Threads decode episodes concurrently (JPEG decoding releases the GIL).
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=read_threads))
  if num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller has none.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=1))
  return iter(it)


class BatchStream:
  """An iterator of training batches mixed from several datasets (see ``make_batches``)."""

  def __init__(self, streams, ratios, *, batch_size, obs, pool_episodes, seed,
               sampler: str = 'pool', kind_fractions=None):
    self._rng = np.random.default_rng(seed)
    self._streams = streams
    if sampler == 'uniform':
      self._pools = [sampler_lib.WholeDatasetPool(s, np.random.default_rng([seed, i]),
                                                  kind_fractions)
                     for i, s in enumerate(streams)]
    else:
      self._pools = [WindowPool(s, pool_episodes, np.random.default_rng([seed, i]))
                     for i, s in enumerate(streams)]
    self._ratios = np.asarray(ratios, np.float64)
    self.batch_size, self.obs = batch_size, obs

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts, needed = [], self.batch_size
    while needed > 0:
      active = np.array([not p.empty for p in self._pools])
      if not active.any():
        break
      p = np.where(active, self._ratios, 0.0)
      counts = self._rng.multinomial(needed, p / p.sum())
      for pool, count in zip(self._pools, counts):
        if count:
          got = pool.take(int(count))
          parts.extend(got)
          needed -= sum(len(idx) for _, idx in got)
    if not parts:
      raise StopIteration
    return gather_batch(parts, self.batch_size, obs=self.obs)

  def close(self):
    for stream in self._streams:
      close = getattr(stream, 'close', None)
      if close is not None:
        close()


class ThreadPrefetch:
  """Assembles the next ``size`` batches in a background thread while the caller trains.

  JPEG decoding and numpy copies release the GIL, so this overlaps with a jitted update.
  """

  _END = object()

  def __init__(self, stream: BatchStream, size: int = 2):
    self._stream = stream
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name='habc-batches')
    self._thread.start()

  def _run(self):
    try:
      for batch in self._stream:
        while not self._stop.is_set():
          try:
            self._queue.put(batch, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put(self._END)
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    item = self._queue.get()
    if item is self._END:
      self._queue.put(item)
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
    self._stream.close()


def make_batches(datasets: Sequence[str] | str, *, horizon: int, ratios: Sequence[float] | None = None,
                 next_offset: int = 1, min_human_steps: int = 10, naive: bool = False,
                 batch_size: int = 64, cameras: Sequence[str] = ('top', 'wrist_left', 'wrist_right'),
                 obs: str = 'vision', max_instruction_len: int = 32,
                 stats: stats_lib.NormStats | None = None, seed: int = 0,
                 num_epochs: int | None = None, num_workers: int = 0,
                 pool_episodes: int = 8, prefetch: int = 2,
                 read_threads: int = 2, sampler: str = 'pool',
                 kind_fractions=None, splits: Sequence[str | None] | None = None,
                 holdout_fraction: float = 0.0) -> BatchStream | ThreadPrefetch:
  """Training batches from one or several RLDS datasets.

  Args:
    datasets: dataset directories (e.g. the demonstrations and each round's rollouts).
    horizon: H, the action-chunk length.
    ratios: sampling weight of each dataset (default: equal); e.g. (1, 1) draws half of each
      batch from each, whatever their sizes.
    next_offset, min_human_steps, naive: credit assignment (``habc.labeling.make_windows``).
    batch_size: B.
    cameras: camera names in model order (ignored with obs='state').
    obs: 'vision' (images + state) or 'state' (state ++ privileged, no images).
    max_instruction_len: L.
    stats: normalisation statistics; default: those saved beside the first dataset (computed
      and saved there on first use).
    seed: shuffling seed.
    num_epochs: passes over each dataset (None: endless). At the end, the last batch is padded
      (``valid`` False).
    num_workers: grain worker processes decoding episodes (0: in this process).
    pool_episodes: episodes buffered per dataset to draw windows from (more: better mixing,
      more memory).
    prefetch: batches assembled ahead in a background thread (0: none, assembled on ``next``).
    read_threads: threads decoding episodes (per process).
    sampler: 'pool' (windows without replacement from ``pool_episodes`` buffered episodes per
      dataset) or 'uniform' (every episode of each dataset in memory, windows drawn with
      replacement over the whole dataset; endless, so ``num_epochs`` must be None). See
      ``habc.data.sampler``.
    kind_fractions: with sampler='uniform', target fractions of the sample kinds in each
      dataset's draws ({'success': 0.4, ...}); the batch then carries importance weights
      'sample_weight'. None: uniform over windows.
    splits: per dataset, which of its episodes to read: None or 'all' (every one), 'train' (those
      not held out) or 'holdout' (``habc.data.sampler.holdout_mask`` with ``holdout_fraction``).

  Returns:
    An iterator (call ``close()`` when done): ``next(it)`` is a dict of numpy arrays
    (docs/interfaces.md section 3).
  """
  datasets = [datasets] if isinstance(datasets, (str, os.PathLike)) else list(datasets)
  if not datasets:
    raise ValueError('make_batches: no datasets given.')
  ratios = [1.0] * len(datasets) if ratios is None else list(ratios)
  if len(ratios) != len(datasets) or min(ratios) < 0 or sum(ratios) <= 0:
    raise ValueError(f'ratios {ratios} must be one non-negative weight per dataset '
                     f'({len(datasets)}), not all zero.')
  if stats is None:
    stats = stats_lib.load_or_compute_stats(datasets[0])
  cameras = tuple(cameras) if obs == 'vision' else ()
  if sampler not in sampler_lib.SAMPLERS:
    raise ValueError(f'sampler must be one of {sampler_lib.SAMPLERS}, got {sampler!r}.')
  fractions = sampler_lib.kind_fraction_vector(kind_fractions)
  if sampler == 'uniform':
    if num_epochs is not None:
      raise ValueError("sampler='uniform' draws with replacement and never ends; pass "
                       "num_epochs=None (or sampler='pool' for passes over the data).")
    num_epochs = 1  # Each dataset is read once into memory.
  elif fractions is not None:
    raise ValueError("kind_fractions needs sampler='uniform' (data.sampler): the episode pool "
                     'cannot stratify its few buffered episodes.')
  pack_fn = EpisodePack(horizon=horizon, next_offset=next_offset, min_human_steps=min_human_steps,
                        naive=naive, cameras=cameras, obs=obs, stats=stats,
                        max_instruction_len=max_instruction_len)
  splits = [None] * len(datasets) if splits is None else list(splits)
  if len(splits) != len(datasets):
    raise ValueError(f'splits {splits} must name one split per dataset ({len(datasets)}).')
  streams = [episode_stream(path, pack_fn, cameras=cameras, seed=seed + 1000 * i,
                            num_epochs=num_epochs, num_workers=num_workers,
                            read_threads=read_threads, split=split,
                            holdout_fraction=holdout_fraction)
             for i, (path, r, split) in enumerate(zip(datasets, ratios, splits)) if r > 0]
  ratios = [r for r in ratios if r > 0]
  stream = BatchStream(streams, ratios, batch_size=batch_size, obs=obs,
                       pool_episodes=pool_episodes, seed=seed, sampler=sampler,
                       kind_fractions=fractions)
  return ThreadPrefetch(stream, prefetch) if prefetch > 0 else stream
