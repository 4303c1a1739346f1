"""Where the online data lies against the demonstrations: nearest-demonstration distances.

For each step of a set of query episodes (held-out demonstrations, the operator's steps of the
online rounds, the policy's steps), find the demonstration step with the nearest state and report

  * how far that state is (``state distance``: Euclidean, in units of the demonstrations' per-
    dimension std), a measure of whether the query is inside the demonstrations' state coverage;
  * how much the executed actions differ there (``action gap``: mean absolute difference per
    dimension, in units of the demonstrations' action std), a measure of whether the query acts
    as the demonstrations do in the same place.

Held-out demonstrations give the reference level of both (what a new demonstration looks like).
State observations only (``observation/state``); numpy, no jax.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Sequence

import numpy as np

from habc.data import episodes as episodes_lib
from habc.data import stats as stats_lib


@dataclasses.dataclass(frozen=True)
class Coverage:
  """Summary of one query set: ``count`` steps, medians (and mean) over them."""

  name: str
  count: int
  state_distance: float  # Median nearest-demonstration state distance.
  action_gap: float  # Median action gap at the nearest demonstration state.
  action_gap_mean: float


def scales(states: np.ndarray, actions: np.ndarray, min_std: float = stats_lib.MIN_STD):
  """Per-dimension (mean [S], std [S], action std [A]) of reference steps, std floored."""
  return (states.mean(0), np.maximum(states.std(0), min_std),
          np.maximum(actions.std(0), min_std))


def nearest(query: np.ndarray, ref: np.ndarray, chunk: int = 512):
  """Nearest reference row of every query row (Euclidean).

  Args:
    query: [N, D]; ref: [M, D] (M >= 1); chunk: query rows per distance block (memory N*M bound).

  Returns:
    (distance [N], index [N] into ref).
  """
  query, ref = np.asarray(query, np.float64), np.asarray(ref, np.float64)
  if ref.ndim != 2 or len(ref) == 0 or query.ndim != 2 or query.shape[1] != ref.shape[1]:
    raise ValueError(f'nearest: need query [N, D] and a non-empty ref [M, D]; got '
                     f'{query.shape} and {ref.shape}.')
  ref_sq = (ref ** 2).sum(1)
  dist, index = np.empty(len(query)), np.empty(len(query), np.int64)
  for start in range(0, len(query), chunk):
    q = query[start:start + chunk]
    d2 = (q ** 2).sum(1)[:, None] - 2.0 * q @ ref.T + ref_sq[None]
    j = d2.argmin(1)
    index[start:start + chunk] = j
    dist[start:start + chunk] = np.sqrt(np.maximum(d2[np.arange(len(q)), j], 0.0))
  return dist, index


def gaps(query_states, query_actions, ref_states, ref_actions, state_mean, state_std, action_std):
  """(state distance [N], action gap [N]) of each query step to its nearest reference step.

  Args:
    query_states [N, S], query_actions [N, A]; ref_states [M, S], ref_actions [M, A];
    state_mean, state_std [S] and action_std [A]: the units (see ``scales``).
  """
  dist, j = nearest((query_states - state_mean) / state_std, (ref_states - state_mean) / state_std)
  gap = np.abs((np.asarray(query_actions) - np.asarray(ref_actions)[j]) / action_std).mean(1)
  return dist, gap


def episode_steps(episodes: Sequence[dict], which: str):
  """(states [N, S], actions [N, A]) of the 'all', 'operator' or 'policy' steps of episodes."""
  if which not in ('all', 'operator', 'policy'):
    raise ValueError(f"episode_steps: which={which!r}; use 'all', 'operator' or 'policy'.")
  states, actions = [], []
  for ep in episodes:
    steps = ep['steps']
    if 'state' not in steps['observation']:
      raise ValueError(f'episode {ep["episode_metadata"].get("episode_id")!r} has no '
                       'observation/state; the coverage check needs state observations.')
    human = np.asarray(steps['is_intervention']).astype(bool)
    mask = {'all': np.ones_like(human), 'operator': human, 'policy': ~human}[which]
    states.append(np.asarray(steps['observation']['state'], np.float64)[mask])
    actions.append(np.asarray(steps['action'], np.float64)[mask])
  if not states:
    return np.zeros((0, 0)), np.zeros((0, 0))
  return np.concatenate(states), np.concatenate(actions)


def _summary(name, dist, gap) -> Coverage:
  if len(dist) == 0:
    return Coverage(name, 0, float('nan'), float('nan'), float('nan'))
  return Coverage(name, len(dist), float(np.median(dist)), float(np.median(gap)),
                  float(np.mean(gap)))


def _subsample(rng, states, actions, max_steps):
  if len(states) <= max_steps:
    return states, actions
  keep = np.sort(rng.choice(len(states), max_steps, replace=False))
  return states[keep], actions[keep]


def compare(demos: Sequence[dict], online: Sequence[dict], *, held_out_fraction: float = 0.2,
            max_steps: int = 2000, seed: int = 0) -> list[Coverage]:
  """Coverage of held-out demonstrations, the operator's and the policy's online steps.

  A ``held_out_fraction`` of the demonstration episodes (at least one) is the reference query;
  the rest is the reference set. Each query set is subsampled to ``max_steps`` steps.
  """
  if len(demos) < 2:
    raise ValueError(f'compare: need at least 2 demonstration episodes, got {len(demos)}.')
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(demos))
  k = min(len(demos) - 1, max(1, int(round(held_out_fraction * len(demos)))))
  held = [demos[i] for i in order[:k]]
  ref_s, ref_a = episode_steps([demos[i] for i in order[k:]], 'all')
  mean, std, action_std = scales(ref_s, ref_a)
  out = []
  for name, episodes, which in (('held-out demonstrations', held, 'all'),
                                ('operator steps', online, 'operator'),
                                ('policy steps', online, 'policy')):
    s, a = _subsample(rng, *episode_steps(episodes, which), max_steps)
    if len(s) == 0:
      out.append(_summary(name, [], []))
      continue
    out.append(_summary(name, *gaps(s, a, ref_s, ref_a, mean, std, action_std)))
  return out


def load_workdir(workdir: str):
  """(demonstration episodes, online episodes of every round) of a run's workdir."""
  demo_dir = os.path.join(workdir, 'data', 'demos')
  rounds = sorted(glob.glob(os.path.join(workdir, 'data', 'round_*')))
  if not os.path.isdir(demo_dir):
    raise FileNotFoundError(f'{workdir}: no data/demos; is this a habc run workdir?')

  def episodes(path):
    source = episodes_lib.EpisodeSource(path, cameras=())
    return [source[i] for i in range(len(source))]

  return episodes(demo_dir), [ep for path in rounds for ep in episodes(path)]


def table(rows: Sequence[Coverage]) -> str:
  """Markdown table of ``compare``'s rows."""
  lines = ['| steps | count | state distance (median) | action gap (median) | action gap (mean) |',
           '|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r.name} | {r.count} | {r.state_distance:.2f} | {r.action_gap:.2f} | '
                 f'{r.action_gap_mean:.2f} |')
  return '\n'.join(lines)
