"""The figures of RESULTS.md: success and length per round for each task (matplotlib, Agg)."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from habc.analysis.summaries import ORDER
from habc.analysis.statistics import _index, per_round


# Plots ............................................................................................
def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_task(groups: dict, task: str, plots: str) -> list[str]:
  """Writes success_<task>.png and lengths_<task>.png.

  One panel per (obs, setting) of the task, one line per method in each, so runs from different
  SFT stages or observation modes are never drawn over each other; one legend beside the panels.
  """
  keys = [k for k in groups if k[0] == task]
  if not keys:
    return []
  plt = _plt()
  os.makedirs(plots, exist_ok=True)
  panels = sorted({(k[2], k[3]) for k in keys}, key=lambda p: (p[0] != 'state', p[1] != 'default', p))
  success = os.path.join(plots, f'success_{task}.png')
  lengths = os.path.join(plots, f'lengths_{task}.png')
  size = (3.6 * len(panels) + 1.8, 3.8)
  fig_s, axes_s = plt.subplots(1, len(panels), figsize=size, sharey=True, squeeze=False)
  fig_l, axes_l = plt.subplots(1, len(panels), figsize=size, sharey=True, squeeze=False)
  handles, top = {}, 0.0
  for p, panel in enumerate(panels):
    ax_s, ax_l = axes_s[0, p], axes_l[0, p]
    in_panel = sorted((k for k in keys if (k[2], k[3]) == panel), key=lambda k: _index(ORDER, k[1]))
    rounds_seen = set()
    for i, key in enumerate(in_panel):
      curve = per_round(groups[key])
      shift = 0.06 * (i - (len(in_panel) - 1) / 2)  # Keeps the error bars of methods apart.
      xs = np.array([r for r, _ in curve], float) + shift
      rate = np.array([c['rate'] for _, c in curve])
      low = np.array([c['ci_low'] for _, c in curve])
      high = np.array([c['ci_high'] for _, c in curve])
      err = np.maximum(np.stack([rate - low, high - rate]), 0.0)  # Older runs: rounding past rate.
      top = max([top, *high.tolist()])
      color = f'C{_index(ORDER, key[1]) % 10}'  # The same colour for a method in every figure.
      line = '-' if len(xs) > 1 else 'none'
      handles[key[1]] = ax_s.errorbar(xs, 100 * rate, yerr=100 * err, marker='o', capsize=3,
                                      color=color, linestyle=line, label=key[1])
      pts = [(x, c['mean_success_length']) for x, (_, c) in zip(xs, curve)
             if c['mean_success_length'] is not None]
      if pts:
        ax_l.plot(*zip(*pts), marker='s', color=color, linestyle='-' if len(pts) > 1 else 'none')
      rounds_seen.update(r for r, _ in curve)
    title = f'{panel[0]}, {panel[1]}'
    for ax in (ax_s, ax_l):
      ax.set_title(textwrap.fill(title, 40), fontsize=8)
      ax.set_xticks(sorted(rounds_seen))
      ax.set_xlabel('round (0 = SFT)')
      ax.grid(alpha=0.3)
    if not ax_l.lines:
      ax_l.text(0.5, 0.5, 'no successful episodes', ha='center', va='center',
                transform=ax_l.transAxes)
  # Room above the highest interval, so rates of a few tens of per cent are not squashed.
  axes_s[0, 0].set(ylabel='success rate (%)', ylim=(-2, min(102.0, 10 * np.ceil(10 * top) + 5)))
  axes_l[0, 0].set(ylabel='control steps')
  fig_s.suptitle(f'{task}: success per round, pooled over seeds (Wilson 95%)', fontsize=10)
  fig_l.suptitle(f'{task}: mean length of successful evaluation episodes', fontsize=10)
  names = sorted(handles, key=lambda m: _index(ORDER, m))
  for fig, path in ((fig_s, success), (fig_l, lengths)):
    # Legend handles come from the success figure; the colours are the same in both.
    fig.legend([handles[m] for m in names], names, loc='center right', fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / size[0], 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return [success, lengths]
