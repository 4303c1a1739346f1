"""The tables of RESULTS.md (paper layout, per-run details, per-round figures) as markdown lines."""

from __future__ import annotations

import numpy as np

from habc.analysis.summaries import CONTROLS, METHODS, ORDER, TASKS
from habc.analysis.statistics import _settings, final_cell, per_round


# Text .............................................................................................
def _pct(x) -> str:
  return '-' if x is None or not np.isfinite(x) else f'{100 * x:.0f}'


def format_cell(cell: dict | None) -> str:
  """'52.0% [38, 65], 3 seeds, n=75' or 'missing'."""
  if cell is None:
    return '**missing**'
  if not cell['trials']:
    return f'no trials, {len(cell["seeds"])} seed(s)'
  return (f'{100 * cell["rate"]:.1f}% [{100 * cell["ci_low"]:.0f}, {100 * cell["ci_high"]:.0f}], '
          f'{len(cell["seeds"])} seed{"s" if len(cell["seeds"]) != 1 else ""}, n={cell["trials"]}')


def paper_table(groups: dict) -> tuple[list[str], list[str], int]:
  """Markdown table method x task (final round): the paper's methods and tasks, then any others.

  Returns:
    (lines, missing '<task>/<method>' cells, number of cells).
  """
  tasks = list(TASKS) + sorted({k[0] for k in groups} - set(TASKS))
  run = {k[1] for k in groups}
  methods = (list(METHODS) + [m for m in CONTROLS if m in run] +
             sorted(run - set(ORDER)))
  lines = ['| method | ' + ' | '.join(tasks) + ' |', '|---|' + '---|' * len(tasks)]
  missing = []
  for method in methods:
    cells = []
    for task in tasks:
      found = [(k, final_cell(groups[k])) for k in groups if k[0] == task and k[1] == method]
      found = [(k, c) for k, c in found if c is not None]
      if not found and method in CONTROLS:
        cells.append('not run')
        continue
      if not found:
        missing.append(f'{task}/{method}')
        cells.append('**missing**')
        continue
      cells.append('<br>'.join(format_cell(c) + (f' ({k[2]}, {k[3]})' if len(found) > 1 else '')
                               for k, c in found))
    label = 'sft (round 0)' if method == 'sft' else method
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return lines, missing, len(tasks) * len([m for m in methods if m not in CONTROLS])


def detail_table(groups: dict) -> list[str]:
  """One row per (task, method, obs, setting): rounds, seeds, per-seed rates, counts, provenance."""
  lines = ['| task | method | obs | setting | round | seeds | per-seed success % '
           '| successes/trials | Wilson 95% | length (successes) | minutes per run | files |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for (task, method, obs, setting), runs in groups.items():
    cell = final_cell(runs)
    if cell is None:
      continue
    sources = sorted({r.get('obs_source', '') for r in runs})
    minutes = ', '.join('-' if m is None else f'{m:.0f}' for m in cell['minutes'])
    length = cell['mean_success_length']
    shown_obs = obs if sources == ['summary'] else f'{obs} ({", ".join(sources)})'
    lines.append(
        f'| {task} | {method} | {shown_obs} | {setting} | {",".join(map(str, cell["rounds"]))} | '
        f'{",".join(map(str, cell["seeds"]))} | '
        f'{" / ".join(_pct(p) for p in cell["per_seed"])} | {cell["successes"]}/{cell["trials"]} | '
        f'[{100 * cell["ci_low"]:.1f}, {100 * cell["ci_high"]:.1f}] | '
        f'{"-" if length is None else f"{length:.1f}"} | {minutes} | '
        f'{", ".join(r["_path"] for r in runs)} |')
  return lines


def round_tables(groups: dict) -> list[str]:
  """Per task/obs/setting: success, length of successes and interventions per round, per method."""
  lines = []
  settings = _settings(groups)
  for task, obs, setting in settings:
    keys = [k for k in groups if (k[0], k[2], k[3]) == (task, obs, setting)]
    curves = {k[1]: per_round(groups[k]) for k in keys}
    rounds = sorted({r for c in curves.values() for r, _ in c})
    lines += [f'#### {task} ({obs}, {setting})', '',
              '| method | ' + ' | '.join(f'round {r}' for r in rounds) + ' |',
              '|---|' + '---|' * len(rounds)]
    for method, curve in curves.items():
      by_round = dict(curve)
      cells = []
      for r in rounds:
        c = by_round.get(r)
        if c is None:
          cells.append('-')
          continue
        text = f'{100 * c["rate"]:.0f}% [{100 * c["ci_low"]:.0f}, {100 * c["ci_high"]:.0f}]'
        if c['mean_success_length'] is not None:
          text += f'<br>len {c["mean_success_length"]:.0f}'
        if c.get('episodes_with_intervention') is not None:
          text += f'<br>interv. {c["episodes_with_intervention"]}'
        cells.append(text)
      lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return lines
