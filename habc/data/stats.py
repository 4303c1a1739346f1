"""Normalisation statistics of state and action: computed once (over demonstrations), saved as
JSON beside the data, and the normalise / unnormalise functions that use them."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Mapping

import numpy as np

STATS_FILE = 'habc_stats.json'
MIN_STD = 1e-2  # A dimension that never moved in the data is scaled by this, not by ~0.
KEYS = ('state', 'privileged', 'action')


@dataclasses.dataclass(frozen=True)
class NormStats:
  """Per-dimension mean and std. Keys: 'state' [S], 'action' [A], optionally 'privileged' [P]."""

  mean: Mapping[str, np.ndarray]
  std: Mapping[str, np.ndarray]
  num_steps: int = 0

  def to_json(self) -> dict:
    return {'mean': {k: np.asarray(v).tolist() for k, v in self.mean.items()},
            'std': {k: np.asarray(v).tolist() for k, v in self.std.items()},
            'num_steps': int(self.num_steps), 'min_std': MIN_STD}

  @classmethod
  def from_json(cls, data: Mapping) -> 'NormStats':
    return cls({k: np.asarray(v, np.float32) for k, v in data['mean'].items()},
               {k: np.asarray(v, np.float32) for k, v in data['std'].items()},
               int(data.get('num_steps', 0)))

  def normalise(self, key: str, x: np.ndarray) -> np.ndarray:
    """x [..., D] -> (x - mean) / std, float32."""
    return normalise(x, self.mean[key], self.std[key])

  def unnormalise(self, key: str, x: np.ndarray) -> np.ndarray:
    """Inverse of ``normalise``; e.g. policy actions [B, H, A] back to the robot's units."""
    return unnormalise(x, self.mean[key], self.std[key])


def normalise(x, mean, std):
  """(x - mean) / std over the last axis; float32. Works on numpy and jax arrays."""
  return ((x - mean) / std).astype(np.float32)


def unnormalise(x, mean, std):
  """x * std + mean over the last axis; float32."""
  return (x * std + mean).astype(np.float32)


class _Moments:
  """Streaming mean/variance (Chan et al. parallel update), float64."""

  def __init__(self):
    self.n, self.mean, self.m2 = 0, None, None

  def add(self, x: np.ndarray) -> None:
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    if not len(x):
      return
    n_b, mean_b = len(x), x.mean(0)
    m2_b = ((x - mean_b) ** 2).sum(0)
    if self.n == 0:
      self.n, self.mean, self.m2 = n_b, mean_b, m2_b
      return
    n = self.n + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * n_b / n
    self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
    self.n = n

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    std = np.sqrt(self.m2 / max(self.n, 1))
    return self.mean.astype(np.float32), np.maximum(std, MIN_STD).astype(np.float32)


def compute_stats(episodes) -> NormStats:
  """Statistics over every step's state (and privileged state) and every executed action.

  Args:
    episodes: iterable of episode dicts (images not needed). The dummy action of each last step
      is left out.
  """
  moments = {}
  num_steps = 0
  for episode in episodes:
    steps = episode['steps']
    num_steps += len(steps['action'])
    for key in ('state', 'privileged'):
      if key in steps['observation']:
        moments.setdefault(key, _Moments()).add(steps['observation'][key])
    moments.setdefault('action', _Moments()).add(steps['action'][:-1])
  if not num_steps:
    raise ValueError('compute_stats: no episodes; statistics need at least one.')
  results = {k: m.result() for k, m in moments.items()}
  return NormStats({k: r[0] for k, r in results.items()}, {k: r[1] for k, r in results.items()},
                   num_steps)


def compute_dataset_stats(path: str) -> NormStats:
  """Statistics of a dataset directory (reads states and actions only, no images)."""
  from habc.data import episodes as episodes_lib
  source = episodes_lib.EpisodeSource(path, cameras=())
  if not len(source):
    raise ValueError(f'compute_dataset_stats: {path} holds no episodes.')
  return compute_stats(source[i] for i in range(len(source)))


def stats_path(dataset_dir: str) -> str:
  return os.path.join(dataset_dir, STATS_FILE)


def save_stats(stats: NormStats, path: str) -> None:
  """Writes the statistics as JSON (atomically). ``path``: a .json file or a dataset dir."""
  if os.path.isdir(path):
    path = stats_path(path)
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(stats.to_json(), f, indent=1)
  os.replace(tmp, path)


def load_stats(path: str) -> NormStats:
  """Reads statistics saved by ``save_stats`` (a .json file or a dataset dir)."""
  if os.path.isdir(path):
    path = stats_path(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No normalisation statistics at {path}; compute them with '
                            'habc.data.stats.load_or_compute_stats(<demo dataset dir>).')
  with open(path) as f:
    return NormStats.from_json(json.load(f))


def load_or_compute_stats(dataset_dir: str) -> NormStats:
  """The statistics saved beside a dataset, computed and saved on first use."""
  path = stats_path(dataset_dir)
  if os.path.exists(path):
    return load_stats(path)
  stats = compute_dataset_stats(dataset_dir)
  save_stats(stats, path)
  return stats


def describe(path: str) -> str:
  """A few lines on a dataset: episodes, steps, and per key the dimension, mean and std (from
  the saved ``habc_stats.json`` when there is one, else computed now)."""
  from habc.data import writer
  episodes = writer.num_episodes(path)
  saved = os.path.exists(stats_path(path))
  stats = load_stats(path) if saved else compute_dataset_stats(path)
  where = 'saved ' + STATS_FILE if saved else 'computed now; not saved'
  lines = [f'{path}: {episodes} episode{"s" if episodes != 1 else ""}, {stats.num_steps} steps '
           f'(statistics {where})']
  with np.printoptions(precision=3, suppress=True, linewidth=120):
    for key in KEYS:
      if key in stats.mean:
        mean, std = np.asarray(stats.mean[key]), np.asarray(stats.std[key])
        lines.append(f'  {key} [{mean.shape[0]}]: mean {mean}')
        lines.append(f'  {" " * len(key)} {" " * (len(str(mean.shape[0])) + 2)}  std  {std}')
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  """``python -m habc.data.stats DIR [DIR ...] [--save]``: prints ``describe`` of each dataset;
  ``--save`` also writes the statistics beside a dataset that has none."""
  args = [a for a in argv[1:] if a != '--save']
  if not args or any(a in ('-h', '--help') for a in args):
    print('usage: python -m habc.data.stats DATASET_DIR [DATASET_DIR ...] [--save]\n'
          'Prints the episodes, steps and per-dimension mean and std of state, privileged and '
          'action of each RLDS dataset; --save writes them as habc_stats.json beside it.')
    return 0 if args else 2
  code = 0
  for path in args:
    if not os.path.exists(os.path.join(path, 'dataset_info.json')):
      print(f'error: {path} is not an RLDS dataset (no dataset_info.json)', file=sys.stderr)
      code = 1
      continue
    try:
      print(describe(path))
    except (ValueError, OSError) as e:
      print(f'error: {path}: {e}', file=sys.stderr)
      code = 1
      continue
    if '--save' in argv and not os.path.exists(stats_path(path)):
      save_stats(compute_dataset_stats(path), path)
      print(f'  saved {stats_path(path)}')
  return code


if __name__ == '__main__':
  sys.exit(main(sys.argv))
