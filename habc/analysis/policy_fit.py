r"""How well a run's policy fits its own demonstrations: R^2 per action dimension.

  python -m habc.policy_fit --workdir=workdirs/pouch_sft_0 [--windows=512] [--samples=4]

Loads the newest checkpoint of the workdir, draws demonstration windows through the same reader
the learner uses, samples action chunks from the policy and prints, per action dimension, the R^2
of the mean sampled action against the recorded one at chunk step 0 and at the middle of the chunk.
Beside it stands a linear least-squares fit from the same state vector to the first action (fitted
on other draws of the same demonstrations). Both numbers are in-sample: this measures fit, not
generalisation. A policy whose R^2 is no better than the linear fit's is underfitting; a gap
between both and 1 on a deterministic expert is error the network could still remove; on the
human-like expert part of it is the operator's unpredictable speed, pauses and noise.
``spread`` is the standard deviation over samples, in normalised action units.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np


def r2_per_dim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Coefficient of determination per column. pred, target [N, A] -> [A] (1 is a perfect fit,
  0 the fit of the column mean; a column of constant target gives nan)."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  if pred.shape != target.shape or pred.ndim != 2:
    raise ValueError(f'r2_per_dim needs two [N, A] arrays of one shape, got {pred.shape} and '
                     f'{target.shape}.')
  resid = ((pred - target) ** 2).mean(axis=0)
  var = target.var(axis=0)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(var > 1e-12, 1.0 - resid / var, np.nan)


def linear_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
  """Least-squares affine map fitted on (x_train [N, D], y_train [N, A]), applied to x_test [M, D]
  -> [M, A]."""
  def affine(x):
    x = np.asarray(x, np.float64)
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)

  coef, *_ = np.linalg.lstsq(affine(x_train), np.asarray(y_train, np.float64), rcond=None)
  return affine(x_test) @ coef


def _flat_state(obs) -> np.ndarray:
  return np.asarray(obs['state'], np.float32).reshape(len(obs['state']), -1)


def fit_report(workdir: str, *, windows: int = 512, samples: int = 4, seed: int = 0) -> dict:
  """Per-dimension fit of the workdir's newest checkpoint on its demonstration windows.

  Returns a dict: ``dims`` (action names), ``step`` (checkpoint step), ``windows``, ``samples``,
  ``policy_r2_first`` and ``policy_r2_mid`` ([A], mean sampled action vs recorded, at chunk
  steps 0 and H // 2), ``linear_r2_first`` ([A]), ``spread`` ([A], std over samples at step 0).
  """
  import jax
  import ml_collections

  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  from habc.networks import policy as policy_lib

  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(f'{config_path} does not exist: give the workdir of a run '
                            '(launch.py --workdir) whose SFT stage has finished.')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(workdir))
  step = backend.load_latest(backend.paths.checkpoints)
  sample = jax.jit(lambda params, obs, keys: policy_lib.sample_actions(
      backend.model, params, obs, keys, config.model.flow_steps))

  def draws(stream_seed: int, count: int):
    stream = backend.batches([(backend.paths.demo_data, 1.0)], seed=stream_seed, batch_size=256)
    out = []
    try:
      while sum(int(np.sum(b['valid'])) for b in out) < count:
        out.append(next(stream))
    finally:
      if hasattr(stream, 'close'):
        stream.close()
    return out

  first, mid, recorded_first, recorded_mid, spread, states = [], [], [], [], [], []
  key = jax.random.PRNGKey(seed)
  for batch in draws(seed + 1, windows):
    valid = np.asarray(batch['valid'], bool) & np.asarray(batch['action_mask'])[:, 0]
    chunks = []
    for _ in range(samples):
      key, sub = jax.random.split(key)
      keys = jax.random.split(sub, len(valid))
      chunks.append(np.asarray(sample(backend.learner.params, batch['obs'], keys)))
    chunks = np.stack(chunks)  # [S, B, H, A]
    h = chunks.shape[2] // 2
    mid_valid = valid & np.asarray(batch['action_mask'])[:, h]
    actions = np.asarray(batch['actions'])
    first.append(chunks.mean(0)[valid, 0])
    recorded_first.append(actions[valid, 0])
    mid.append(chunks.mean(0)[mid_valid, h])
    recorded_mid.append(actions[mid_valid, h])
    spread.append(chunks[:, valid, 0].std(0))
    states.append(_flat_state(batch['obs'])[valid])
  train_x, train_y = [], []
  for batch in draws(seed + 2, 4 * windows):
    valid = np.asarray(batch['valid'], bool) & np.asarray(batch['action_mask'])[:, 0]
    train_x.append(_flat_state(batch['obs'])[valid])
    train_y.append(np.asarray(batch['actions'])[valid, 0])
  recorded_first = np.concatenate(recorded_first)
  linear = linear_fit_predict(np.concatenate(train_x), np.concatenate(train_y),
                              np.concatenate(states))
  action_dim = recorded_first.shape[1]
  return {
      'workdir': workdir, 'step': step, 'windows': int(len(recorded_first)), 'samples': samples,
      'dims': _action_names(action_dim),
      'policy_r2_first': r2_per_dim(np.concatenate(first), recorded_first),
      'policy_r2_mid': r2_per_dim(np.concatenate(mid), np.concatenate(recorded_mid)),
      'linear_r2_first': r2_per_dim(linear, recorded_first),
      'spread': np.concatenate(spread).mean(axis=0),
  }


def _action_names(action_dim: int) -> list[str]:
  from habc.envs.base import ACTION_NAMES
  if len(ACTION_NAMES) == action_dim:
    return list(ACTION_NAMES)
  return [f'a{i}' for i in range(action_dim)]


def format_report(report: dict) -> str:
  """The report as a markdown table, one row per action dimension plus the mean."""
  def cell(x):
    return 'n/a' if not np.isfinite(x) else f'{x:.2f}'

  cols = ('policy_r2_first', 'policy_r2_mid', 'linear_r2_first', 'spread')
  lines = [f'policy fit: {report["workdir"]}, checkpoint step {report["step"]}, '
           f'{report["windows"]} demonstration windows, mean of {report["samples"]} samples',
           '| action | policy R2, step 0 | policy R2, mid-chunk | linear R2, step 0 | spread |',
           '|---|---|---|---|---|']
  for i, name in enumerate(report['dims']):
    lines.append(f'| {name} | ' + ' | '.join(cell(report[c][i]) for c in cols) + ' |')
  lines.append('| mean | ' + ' | '.join(cell(float(np.nanmean(report[c]))) for c in cols) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  import argparse
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True, help='A run\'s workdir (its newest checkpoint).')
  p.add_argument('--windows', type=int, default=512, help='Demonstration windows to score.')
  p.add_argument('--samples', type=int, default=4, help='Chunks sampled per window.')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  print(format_report(fit_report(args.workdir, windows=args.windows, samples=args.samples,
                                 seed=args.seed)))


if __name__ == '__main__':
  main()
