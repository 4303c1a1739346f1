"""Evaluation statistics: success rate with a Wilson 95% interval, lengths of successful episodes,
and frame strips of single episodes for the report.

The episodes themselves are run by ``habc.run.rollout`` (autonomous, no operator); this module only
turns their summaries into numbers and pictures. Pure numpy (and PIL for writing PNGs).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z_95 = 1.959963984540054  # Two-sided 95% standard-normal quantile.


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion.

  Args:
    successes: number of successes k (0 <= k <= n).
    trials: number of trials n (0 gives the uninformative interval (0, 1)).
    z: the normal quantile (1.96 for 95%).

  Returns:
    (low, high), with 0 <= low <= k/n <= high <= 1 (exactly 0 / 1 at k = 0 / k = n, where
    rounding would otherwise leave a bound a hair on the wrong side of k/n).
  """
  if trials < 0 or successes < 0 or successes > trials:
    raise ValueError(f'Need 0 <= successes <= trials, got {successes} of {trials}.')
  if trials == 0:
    return 0.0, 1.0
  p = successes / trials
  z2 = z * z
  denom = 1.0 + z2 / trials
  centre = (p + z2 / (2 * trials)) / denom
  half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
  low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
  high = 1.0 if successes == trials else min(1.0, max(p, centre + half))
  return low, high


def difference_interval(k1: int, n1: int, k2: int, n2: int,
                        z: float = Z_95) -> tuple[float, float, float]:
  """Difference of two independent proportions k1/n1 - k2/n2 with Newcombe's hybrid score
  interval (his method 10: the two Wilson intervals combined).

  Returns:
    (difference, low, high), all in [-1, 1]. Raises ValueError on n = 0 or k outside [0, n].
  """
  if n1 <= 0 or n2 <= 0:
    raise ValueError(f'Need trials on both sides for a difference, got n1={n1}, n2={n2}.')
  p1, p2 = k1 / n1, k2 / n2
  l1, u1 = wilson_interval(k1, n1, z)
  l2, u2 = wilson_interval(k2, n2, z)
  d = p1 - p2
  low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
  high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
  return d, max(-1.0, low), min(1.0, high)


def paired_difference_interval(both: int, only_a: int, only_b: int, neither: int,
                               z: float = Z_95) -> tuple[float, float, float]:
  """Difference of two proportions measured on the same items, p_a - p_b, with Newcombe's score
  interval for paired data (his 1998 method 10, no continuity correction).

  Use it when both methods are evaluated on the same initial states: an initial state that is
  hard for one method tends to be hard for the other, and the independent interval
  (``difference_interval``) ignores that agreement.

  Args:
    both, only_a, only_b, neither: counts of pairs where both succeed, only a, only b, neither.

  Returns:
    (difference, low, high), all in [-1, 1]; with no correlation between the two outcomes
    (both * neither == only_a * only_b) the same as ``difference_interval`` on n pairs.
    Raises ValueError on a negative count or no pairs.
  """
  counts = (both, only_a, only_b, neither)
  if min(counts) < 0 or sum(counts) == 0:
    raise ValueError(f'Need non-negative pair counts with at least one pair, got {counts}.')
  n = sum(counts)
  k_a, k_b = both + only_a, both + only_b
  p_a, p_b = k_a / n, k_b / n
  l_a, u_a = wilson_interval(k_a, n, z)
  l_b, u_b = wilson_interval(k_b, n, z)
  margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
  phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
  d = p_a - p_b
  low2 = (p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2
  high2 = (u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2
  low = d - math.sqrt(max(0.0, low2))
  high = d + math.sqrt(max(0.0, high2))
  return d, max(-1.0, low), min(1.0, high)


def summarize(successes: Sequence[bool], lengths: Sequence[int],
              interventions: Sequence[int] | None = None) -> dict:
  """Summary of a set of episodes.

  Args:
    successes: bool [N], each episode's outcome.
    lengths: int [N], control steps of each episode.
    interventions: int [N], operator-controlled steps per episode (optional).

  Returns:
    A JSON-serialisable dict: episodes, successes, success_rate, ci_low, ci_high,
    mean_success_length (NaN-free: None when no success), std_success_length, and, with
    interventions, episodes_with_intervention and intervention_steps.
  """
  ok = np.asarray(successes, bool)
  lengths = np.asarray(lengths, np.int64)
  if ok.shape != lengths.shape:
    raise ValueError(f'successes {ok.shape} and lengths {lengths.shape} must have one entry per '
                     'episode.')
  n, k = int(ok.size), int(ok.sum())
  low, high = wilson_interval(k, n)
  succ_len = lengths[ok]
  out = {
      'episodes': n,
      'successes': k,
      'success_rate': k / n if n else 0.0,
      'ci_low': low,
      'ci_high': high,
      'mean_success_length': float(succ_len.mean()) if k else None,
      'std_success_length': float(succ_len.std()) if k else None,
      'mean_length': float(lengths.mean()) if n else None,
  }
  if interventions is not None:
    steps = np.asarray(interventions, np.int64)
    out['episodes_with_intervention'] = int((steps > 0).sum())
    out['intervention_steps'] = int(steps.sum())
  return out


def format_summary(s: dict) -> str:
  """One line: 'success 40.0% [25.1, 56.8] (12/30), length 87.5 on successes'."""
  text = (f'success {100 * s["success_rate"]:.1f}% [{100 * s["ci_low"]:.1f}, '
          f'{100 * s["ci_high"]:.1f}] ({s["successes"]}/{s["episodes"]})')
  if s.get('mean_success_length') is not None:
    text += f', length {s["mean_success_length"]:.1f} on successes'
  else:
    text += ', no successes'
  return text


def mean_gate(train_means: dict) -> float:
  """Mean gate over the online windows of the round's batches (count-weighted over kinds; SFT
  windows left out); NaN when the method has no gate."""
  total, weight = 0.0, 0.0
  for key, value in train_means.items():
    if key.startswith('gate/') and key.endswith('_mean') and key != 'gate/sft_mean':
      kind = key[len('gate/'):-len('_mean')]
      count = float(train_means.get(f'count/{kind}', 1.0))
      if np.isfinite(value) and count > 0:
        total += value * count
        weight += count
  return total / weight if weight else float('nan')


def pick_frames(num_steps: int, count: int) -> np.ndarray:
  """Indices of ``count`` frames spread evenly over ``num_steps`` (first and last included).

  Returns:
    int [min(count, num_steps)].
  """
  if num_steps <= 0 or count <= 0:
    return np.zeros((0,), np.int64)
  return np.unique(np.linspace(0, num_steps - 1, min(count, num_steps)).round().astype(np.int64))


def frame_strip(frames: np.ndarray, gap: int = 2) -> np.ndarray:
  """Lays frames side by side.

  Args:
    frames: uint8 [N, H, W, 3].
    gap: white pixels between frames.

  Returns:
    uint8 [H, N * W + (N - 1) * gap, 3].
  """
  frames = np.asarray(frames, np.uint8)
  if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f'frame_strip needs uint8 [N, H, W, 3] with N >= 1, got {frames.shape}.')
  n, h, w, _ = frames.shape
  strip = np.full((h, n * w + (n - 1) * gap, 3), 255, np.uint8)
  for i, f in enumerate(frames):
    strip[:, i * (w + gap):i * (w + gap) + w] = f
  return strip


def save_png(image: np.ndarray, path: str, scale: int = 1) -> None:
  """Writes uint8 [H, W, 3] as a PNG, optionally enlarged by an integer factor (nearest)."""
  from PIL import Image
  if scale > 1:
    image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
