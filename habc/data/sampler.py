"""Window samplers over a whole dataset: uniform, or stratified by sample kind.

``reader.WindowPool`` draws from a buffer of a few episodes at a time: cheap in memory (images),
but the windows of a batch come from few episodes and the batch's make-up swings. With state
observations a whole dataset fits in memory, so ``WholeDatasetPool`` holds every episode pack of
one dataset and draws windows with replacement:

  uniform      every window of the dataset equally likely;
  stratified   the sample kind first, by target fractions f_k (renormalised over the kinds the
               dataset has), then a window of that kind uniformly. Each window then carries the
               importance weight  iw_k = (n_k / N) / f_k,  which makes every weighted mean over a
               batch an unbiased estimate of the uniform one (E[iw] = 1). The batch gets more of
               the windows that carry an actor weight (successes, interventions) and fewer of the
               weight-0 failures, without changing what the losses estimate.

A pool has the interface ``BatchStream`` uses: ``empty`` and ``take(n) -> [(pack, indices)]``;
its packs carry 'sample_weight' [N] per window (gathered into the batch).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from habc.labeling import NUM_KINDS, SampleKind

SAMPLERS = ('pool', 'uniform')


def kind_fraction_vector(fractions: Mapping[str, float] | None) -> np.ndarray | None:
  """{'success': f, ...} (names of ``SampleKind``, lower case) -> f32 [NUM_KINDS], or None when
  no fraction is given (all zero or None): no stratification.

  Raises ValueError on an unknown kind or a negative fraction.
  """
  if not fractions:
    return None
  names = {k.name.lower(): int(k) for k in SampleKind}
  vec = np.zeros(NUM_KINDS, np.float64)
  for name, value in dict(fractions).items():
    if name not in names:
      raise ValueError(f'data.kind_fractions names {name!r}; sample kinds are {sorted(names)}.')
    if value is None or float(value) < 0:
      raise ValueError(f'data.kind_fractions.{name}={value} must be >= 0.')
    vec[names[name]] = float(value)
  return None if vec.sum() == 0 else vec


def importance_weights(counts: np.ndarray, fractions: np.ndarray | None) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
  """Draw probabilities of each kind and the importance weight of a window of each kind.

  Args:
    counts: int [NUM_KINDS], windows of each kind in the dataset.
    fractions: [NUM_KINDS] target fractions, or None (uniform over windows).

  Returns:
    (p_kind [NUM_KINDS], iw [NUM_KINDS]): p_kind sums to 1 over the kinds present; iw_k =
    (n_k / N) / p_kind_k (1 everywhere when uniform; 0 for absent kinds).
  """
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  if total <= 0:
    raise ValueError('The dataset has no windows to sample.')
  base = counts / total
  if fractions is None:
    return base, np.where(counts > 0, 1.0, 0.0)
  present = counts > 0
  p = np.where(present, fractions, 0.0)
  if p.sum() <= 0:
    # None of the kinds with a fraction is in this dataset: fall back to uniform.
    return base, np.where(present, 1.0, 0.0)
  missing = present & (p == 0)
  if missing.any():
    names = [SampleKind(k).name.lower() for k in np.flatnonzero(missing)]
    raise ValueError(f'data.kind_fractions gives 0 to {names}, which the dataset holds: every '
                     'kind present needs a fraction > 0 (or give none for uniform sampling).')
  p = p / p.sum()
  with np.errstate(divide='ignore', invalid='ignore'):
    iw = np.where(present, base / np.where(p > 0, p, 1.0), 0.0)
  return p, iw


class WholeDatasetPool:
  """Every episode pack of one dataset in memory; windows drawn with replacement, uniformly or
  stratified by kind (see the module docstring).

  Args:
    packs: an iterator over the dataset's episode packs, one pass (read on first use).
    rng: the generator of the draws.
    fractions: [NUM_KINDS] target kind fractions, or None (uniform).
  """

  def __init__(self, packs: Iterator[dict], rng: np.random.Generator,
               fractions: np.ndarray | None = None):
    self._packs_iter = packs
    self._rng = rng
    self._fractions = fractions
    self._packs: list[dict] | None = None
    self.kind_probs: np.ndarray | None = None
    self.kind_weights: np.ndarray | None = None

  def _load(self) -> None:
    if self._packs is not None:
      return
    packs = [p for p in self._packs_iter if len(p['anchor'])]
    self._packs = packs
    if not packs:
      return
    kinds = np.concatenate([p['kind'] for p in packs])
    counts = np.bincount(kinds, minlength=NUM_KINDS)
    self.kind_probs, self.kind_weights = importance_weights(counts, self._fractions)
    # Per kind, the (pack, window) pairs that hold it.
    pack_of = np.concatenate([np.full(len(p['kind']), i) for i, p in enumerate(packs)])
    window_of = np.concatenate([np.arange(len(p['kind'])) for p in packs])
    self._by_kind = [(pack_of[kinds == k], window_of[kinds == k]) for k in range(NUM_KINDS)]
    for p in packs:
      p['sample_weight'] = self.kind_weights[p['kind']].astype(np.float32)

  @property
  def empty(self) -> bool:
    self._load()
    return not self._packs

  def take(self, n: int) -> list[tuple[dict, np.ndarray]]:
    """n windows as (pack, indices) pairs (never fewer: draws are with replacement)."""
    self._load()
    if not self._packs or n <= 0:
      return []
    per_kind = self._rng.multinomial(n, self.kind_probs)
    chosen_pack, chosen_window = [], []
    for k, count in enumerate(per_kind):
      if count:
        packs, windows = self._by_kind[k]
        pick = self._rng.integers(0, len(packs), size=count)
        chosen_pack.append(packs[pick])
        chosen_window.append(windows[pick])
    packs_idx = np.concatenate(chosen_pack)
    windows_idx = np.concatenate(chosen_window)
    parts = []
    for i in np.unique(packs_idx):
      parts.append((self._packs[int(i)], windows_idx[packs_idx == i]))
    return parts


# ----------------------------------------------------------------------------- held-out episodes

SPLITS = (None, 'all', 'train', 'holdout')
_GOLDEN = 0.6180339887498949


def holdout_mask(num_episodes: int, fraction: float) -> np.ndarray:
  """bool [num_episodes]: the episodes of a dataset held out from training.

  Episode i is held out when frac((i + 1) * golden ratio) < fraction: about ``fraction`` of any
  run of episodes, spread over the dataset, and an episode's side never changes when more
  episodes are appended (a resumed collection). fraction 0: none.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'holdout fraction {fraction} must lie in [0, 1).')
  i = np.arange(1, num_episodes + 1, dtype=np.float64)
  return np.mod(i * _GOLDEN, 1.0) < fraction


def split_indices(num_episodes: int, split: str | None, fraction: float) -> np.ndarray:
  """Episode indices of one split: None/'all' every episode, 'train' those not held out,
  'holdout' the held-out ones."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  everything = np.arange(num_episodes)
  if split in (None, 'all'):
    return everything
  held = holdout_mask(num_episodes, fraction)
  return everything[held] if split == 'holdout' else everything[~held]


class EpisodeSubset:
  """A random-access view of some episodes of a source (``len`` and ``[i]``; picklable)."""

  def __init__(self, source, indices: np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    return self.source[int(self.indices[int(i)])]
