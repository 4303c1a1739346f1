"""What moves HABC's gate on successful autonomous windows.

The gate is g_t = 1 + tanh(s * ((1 - p_v) A_v + p_v A_e)), s the batch's advantage scale
(``habc.losses``). On successful autonomous windows it is the actor's weight, so the two terms of
its argument decide which of those windows are imitated more. This module reads the held-out
critic samples a run wrote for its last round (``logs/critic_round_XXX_{split}.npz``,
``habc.run.critic_diagnostics``) and reports, on the SUCCESS windows:

- mean p_v: the viability head's belief on windows of episodes that did succeed;
- efficiency share: mean over windows of |p_v A_e| / (|(1 - p_v) A_v| + |p_v A_e|);
- Spearman's rho of g_t with A_v and with A_e: which head's ordering the weights follow.

It describes the weights; it does not say why a method did better or worse.

  python -m habc.analysis.gate_composition --root=workdirs/sweep/study --tasks=insert,pouch
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
from scipy import stats

from habc.labeling import SampleKind

SPLITS = ('holdout', 'next_round')
FIELDS = ('p_v', 'a_v', 'a_e', 'gate', 'kind')


def composition(samples) -> dict | None:
  """The gate's make-up on SUCCESS windows of one sample file.

  Args:
    samples: mapping with 1-D arrays of equal length N: 'p_v', 'a_v', 'a_e', 'gate' (float) and
      'kind' (int, ``SampleKind``).

  Returns:
    {'windows', 'p_v' (mean), 'efficiency_share', 'rho_v', 'rho_e'}; None with fewer than 3
    SUCCESS windows. A rho is NaN where an input is constant (HABC-V's A_e, for example).
  """
  missing = [k for k in FIELDS if k not in samples]
  if missing:
    raise KeyError(f'gate samples lack {missing}; expected the arrays {FIELDS} '
                   '(habc.run.critic_diagnostics writes them)')
  success = np.asarray(samples['kind']) == SampleKind.SUCCESS
  if success.sum() < 3:
    return None
  p_v, a_v, a_e, gate = (np.asarray(samples[k], np.float64)[success]
                         for k in ('p_v', 'a_v', 'a_e', 'gate'))
  viability, efficiency = np.abs((1 - p_v) * a_v), np.abs(p_v * a_e)
  share = efficiency / np.maximum(viability + efficiency, 1e-12)
  return {'windows': int(success.sum()), 'p_v': float(p_v.mean()),
          'efficiency_share': float(share.mean()),
          'rho_v': _rho(gate, a_v), 'rho_e': _rho(gate, a_e)}


def _rho(x: np.ndarray, y: np.ndarray) -> float:
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return float('nan')
  return float(stats.spearmanr(x, y)[0])


def run_composition(workdir: str) -> dict[str, dict]:
  """{split: ``composition``} of the newest round that wrote each split's samples."""
  out = {}
  for split in SPLITS:
    files = sorted(glob.glob(os.path.join(workdir, 'logs', f'critic_round_*_{split}.npz')))
    if not files:
      continue
    with np.load(files[-1]) as data:
      result = composition({k: data[k] for k in data.files})
    if result is not None:
      out[split] = result
  return out


def table(root: str, tasks: list[str], methods: list[str], seeds: list[int]) -> list[str]:
  """Markdown rows, mean over the seeds whose workdir ``{root}/{task}_{method}_{seed}`` has
  samples; windows are summed."""
  rows = []
  for task in tasks:
    for method in methods:
      per_split: dict[str, list[dict]] = {}
      for seed in seeds:
        for split, c in run_composition(os.path.join(root, f'{task}_{method}_{seed}')).items():
          per_split.setdefault(split, []).append(c)
      for split in SPLITS:
        found = per_split.get(split)
        if not found:
          continue
        mean = {k: _finite_mean([c[k] for c in found])
                for k in ('p_v', 'efficiency_share', 'rho_v', 'rho_e')}
        rows.append(f'| {task} | {method} | {split} | {len(found)} | '
                    f'{sum(c["windows"] for c in found)} | {mean["p_v"]:.2f} | '
                    f'{mean["efficiency_share"]:.2f} | {_signed(mean["rho_v"])} | '
                    f'{_signed(mean["rho_e"])} |')
  if not rows:
    return []
  return ['| task | method | split | seeds | SUCCESS windows | mean p_v | efficiency share | '
          'rho(g, A_v) | rho(g, A_e) |', '|---|---|---|---|---|---|---|---|---|'] + rows


def _finite_mean(values: list[float]) -> float:
  """Mean of the finite values; NaN when there are none (a rho of a split with constant g)."""
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float('nan')


def _signed(v: float) -> str:
  return '-' if not np.isfinite(v) else f'{v:+.2f}'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m habc.analysis.gate_composition',
                              description=__doc__.split('\n')[0])
  p.add_argument('--root', default='workdirs/sweep/study', help='Folder of the runs\' workdirs.')
  p.add_argument('--tasks', default='insert,pouch')
  p.add_argument('--methods', default='habc,habc_mc,habc_ir')
  p.add_argument('--seeds', default='0,1,2')
  args = p.parse_args(argv)
  if not os.path.isdir(args.root):
    print(f'gate_composition: {args.root} is not a folder; pass --root=<the sweep\'s --root>',
          file=sys.stderr)
    return 2
  lines = table(args.root, args.tasks.split(','), args.methods.split(','),
                [int(s) for s in args.seeds.split(',')])
  if not lines:
    print(f'gate_composition: no critic samples (logs/critic_round_*_{{{",".join(SPLITS)}}}.npz) '
          f'under {args.root} for those tasks, methods and seeds', file=sys.stderr)
    return 1
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  sys.exit(main())
