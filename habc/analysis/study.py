"""RESULTS.md's section on issue 26's study (``--preset=study``): each method against the control
and against HABC-V, paired on the initial state; the efficiency mechanism (lengths of successful
episodes, paired); the credit mechanism (rescues and the labels of pre-intervention windows); the
held-out critic and the gate.

Cells come from ``habc.analysis.statistics.group_runs``: one per (task, method, obs, setting),
and a study cell is one whose setting starts with ``study``.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import stats

from habc.analysis.summaries import GATED, PAPER_GATE, TASKS
from habc.analysis.statistics import (
    _bounds_text, final_row, gate_on_successes, on_shared_seeds, paired_compare)
from habc.run import critic_diagnostics

STUDY_METHODS = ('sft', 'sft_continued', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir',
                 'habc_naive_credit', 'awr_single_scalar', 'habc_mc', 'habc_extra_round')


def is_study(setting: str) -> bool:
  return setting == 'study' or setting.startswith('study;')


def final_rows(runs: list[dict]) -> dict[int, dict]:
  """{run seed: the round row compared (``statistics.final_row``)}."""
  rows = {run['seed']: final_row(run) for run in runs}
  return {seed: row for seed, row in rows.items() if row is not None}


def paired_lengths(a_runs: list[dict], b_runs: list[dict]) -> dict | None:
  """Length of successful evaluation episodes, a minus b, paired on (run seed, initial state)
  over the trials both succeeded on (final rounds; per-trial ``eval_outcomes`` with lengths).

  Returns:
    {'pairs', 'mean' (control steps), 'low', 'high' (t 95% interval of the mean difference),
    'a_mean', 'b_mean' (over those pairs), 'per_seed' ({seed: (mean difference, pairs)})}, or
    None with fewer than 2 pairs or without per-trial lengths.
  """
  a_rows, b_rows = final_rows(a_runs), final_rows(b_runs)
  diffs, a_len, b_len, per_seed = [], [], [], {}
  for seed in sorted(set(a_rows) & set(b_rows)):
    ta, tb = a_rows[seed].get('eval_outcomes'), b_rows[seed].get('eval_outcomes')
    if not ta or not tb or 'length' not in ta or 'length' not in tb:
      return None
    b_by_state = {s: (ok, n) for s, ok, n in zip(tb['seeds'], tb['success'], tb['length'])}
    seed_diffs = []
    for s, ok, n in zip(ta['seeds'], ta['success'], ta['length']):
      if ok == '1' and s in b_by_state and b_by_state[s][0] == '1':
        seed_diffs.append(n - b_by_state[s][1])
        a_len.append(n)
        b_len.append(b_by_state[s][1])
    diffs += seed_diffs
    if seed_diffs:
      per_seed[seed] = (float(np.mean(seed_diffs)), len(seed_diffs))
  if len(diffs) < 2:
    return None
  d = np.asarray(diffs, np.float64)
  mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))
  half = float(stats.t.ppf(0.975, d.size - 1)) * se
  return {'pairs': int(d.size), 'mean': mean, 'low': mean - half, 'high': mean + half,
          'a_mean': float(np.mean(a_len)), 'b_mean': float(np.mean(b_len)), 'per_seed': per_seed}


def _paired_text(a_runs, b_runs) -> str:
  a, b, seeds = on_shared_seeds(a_runs, b_runs)
  paired = paired_compare(a, b)
  if paired is None:
    return '-'
  (diff, low, high), n = paired
  return f'{100 * diff:+.1f} {_bounds_text((diff, low, high))} ({n})'


def comparison_table(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  """Per method: final success pooled over seeds, and paired differences against sft_continued
  (the control) and habc_v."""
  rows = []
  control = groups.get((task, 'sft_continued', obs, setting))
  habc_v = groups.get((task, 'habc_v', obs, setting))
  for method in STUDY_METHODS:
    runs = groups.get((task, method, obs, setting))
    if not runs:
      continue
    finals = final_rows(runs)
    wins = sum(r['successes'] for r in finals.values())
    trials = sum(r['episodes'] for r in finals.values())
    seeds = ','.join(str(s) for s in sorted(finals))
    per_seed = ' / '.join(f'{100 * finals[s]["success_rate"]:.0f}' for s in sorted(finals))
    minutes = [run['seconds'] / 60 for run in runs if run.get('seconds')]
    minutes_text = f'{np.mean(minutes):.0f}' if minutes else '-'
    if any(run.get('rounds_source') for run in runs):
      # Its first rounds were another method's run (experiments/sweep.py, --share_rounds).
      minutes_text += ' after the shared rounds'
    versus_control = _paired_text(runs, control) if control and method != 'sft_continued' else '-'
    versus_habc_v = _paired_text(runs, habc_v) if habc_v and method != 'habc_v' else '-'
    rows.append(f'| {method} | {seeds} | {100 * wins / max(trials, 1):.1f}% ({wins}/{trials}) | '
                f'{per_seed} | {versus_control} | {versus_habc_v} | {minutes_text} |')
  if not rows:
    return []
  return ['| method | seeds | success, final round (pooled) | per seed (%) | minus sft_continued, '
          'paired 95% (pairs) | minus habc_v, paired 95% (pairs) | minutes per run |',
          '|---|---|---|---|---|---|---|'] + rows + ['']


def seed_differences(a_runs: list[dict], b_runs: list[dict]) -> dict | None:
  """Final success of a minus b per run seed, and a t 95% interval of their mean over seeds.

  The paired interval of ``comparison_table`` pools trials, so it is over initial states of
  these training runs; this one treats each seed as one draw of the whole method (SFT, rollouts,
  updates), the spread a second lab would see. With 3 seeds it is wide (t(0.975, 2) = 4.30).

  Returns:
    {'seeds', 'per_seed' (points), 'mean', 'low', 'high' (None with fewer than 2 seeds)}, or None
    without a shared seed.
  """
  a_rows, b_rows = final_rows(a_runs), final_rows(b_runs)
  seeds = sorted(set(a_rows) & set(b_rows))
  if not seeds:
    return None
  d = np.asarray([100 * (a_rows[s]['success_rate'] - b_rows[s]['success_rate']) for s in seeds])
  mean, low, high = float(d.mean()), None, None
  if d.size >= 2:
    half = float(stats.t.ppf(0.975, d.size - 1)) * float(d.std(ddof=1)) / np.sqrt(d.size)
    low, high = mean - half, mean + half
  return {'seeds': seeds, 'per_seed': [float(x) for x in d], 'mean': mean, 'low': low,
          'high': high}


def seed_table(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  """HABC's comparisons per run seed, with an interval over seeds (``seed_differences``)."""
  pairs = (('habc', 'sft_continued'), ('habc', 'habc_v'), ('habc', 'habc_naive_credit'),
           ('habc_v', 'sft_continued'), ('habc_ir', 'habc'), ('habc_mc', 'habc'),
           # The reweighting on its own: the same extra round (same rollouts) without it.
           ('habc_ir', 'habc_extra_round'), ('habc_extra_round', 'habc'))
  rows = []
  for a, b in pairs:
    a_runs, b_runs = (groups.get((task, m, obs, setting)) for m in (a, b))
    result = seed_differences(a_runs, b_runs) if a_runs and b_runs else None
    if result is None:
      continue
    per_seed = ' / '.join(f'{x:+.0f}' for x in result['per_seed'])
    interval = ('-' if result['low'] is None
                else f'{result["mean"]:+.1f} [{result["low"]:+.1f}, {result["high"]:+.1f}]')
    rows.append(f'| {a} minus {b} | {",".join(map(str, result["seeds"]))} | {per_seed} | '
                f'{interval} |')
  if not rows:
    return []
  return ['| comparison (final round) | seeds | per seed (points) | mean over seeds, t 95% |',
          '|---|---|---|---|'] + rows + ['']


def efficiency_lines(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  habc, habc_v = (groups.get((task, m, obs, setting)) for m in ('habc', 'habc_v'))
  if not habc or not habc_v:
    return []
  result = paired_lengths(habc, habc_v)
  if result is None:
    return ['Efficiency (HABC minus HABC-V, length of successful episodes): too few initial '
            'states on which both succeeded.', '']
  return [f'Efficiency: on the {result["pairs"]} initial states where both succeeded (final '
          f'rounds), HABC\'s successful episodes took {result["a_mean"]:.1f} control steps and '
          f'HABC-V\'s {result["b_mean"]:.1f}: HABC minus HABC-V {result["mean"]:+.1f} '
          f'[{result["low"]:+.1f}, {result["high"]:+.1f}] (paired t, 95%); per seed '
          + ', '.join(f'{seed}: {mean:+.1f} ({n})' for seed, (mean, n) in
                      sorted(result['per_seed'].items()))
          + '. The paper: HABC shortens them.', '']


def credit_table(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  """Collected episodes over all rounds and seeds: interventions, rescues, and what the policy
  windows before an intervention were labelled, for the credit methods."""
  rows = []
  for method in ('habc', 'habc_naive_credit', 'habc_v', 'habc_ir'):
    runs = groups.get((task, method, obs, setting)) or []
    credit = [row for run in runs for row in run.get('credit', [])]
    if not credit:
      continue
    total = {k: sum(row[k] for row in credit) for k in
             ('episodes', 'with_intervention', 'rescued', 'pre_windows', 'pre_windows_rescued')}
    labels: dict[str, int] = {}
    for row in credit:
      for name, n in row['pre_labels'].items():
        labels[name] = labels.get(name, 0) + n
    text = ', '.join(f'{name} {n}' for name, n in sorted(labels.items())) or '-'
    rows.append(f'| {method} | {total["episodes"]} | {total["with_intervention"]} | '
                f'{total["rescued"]} | {total["pre_windows"]} ({total["pre_windows_rescued"]} in '
                f'rescues) | {text} |')
  if not rows:
    return []
  lines = ['| method | collected episodes | with an intervention | rescued (operator took over, '
           'then success) | policy windows before the first intervention | their labels |',
           '|---|---|---|---|---|---|'] + rows + ['']
  aware, naive = (groups.get((task, m, obs, setting)) for m in ('habc', 'habc_naive_credit'))
  if aware and naive:
    lines += [f'Final success, intervention-aware (habc) minus naive credit (habc_naive_credit), '
              f'paired 95% (pairs): {_paired_text(aware, naive)}.', '']
  return lines


def critic_table(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  """Held-out critic numbers of each method's last round, median over seeds (one runaway
  efficiency head, R^2 in the -1,000s on insert seed 0, would swamp a mean)."""
  rows = []
  num, share = critic_diagnostics.format_number, critic_diagnostics.format_share
  for method in [m for m in STUDY_METHODS if m in GATED]:  # Those with HABC's two heads.
    runs = groups.get((task, method, obs, setting)) or []
    per_split: dict[str, list[dict]] = {}
    for run in runs:
      if not run.get('critic'):
        continue
      last = max(run['critic'], key=lambda row: row['round'])
      for split in ('holdout', 'next_round'):
        if split in last:
          per_split.setdefault(split, []).append(last[split])
      # The last round has no next round; its predecessor's is the latest.
      earlier = [row for row in run['critic'] if 'next_round' in row]
      if earlier and 'next_round' not in last:
        per_split.setdefault('next_round', []).append(
            max(earlier, key=lambda row: row['round'])['next_round'])
    for split, values in per_split.items():
      middle = {k: _median([v.get(k, np.nan) for v in values])
                for k in ('auc', 'brier', 'r2', 'mae', 'saturated')}
      rows.append(f'| {method} | {split} | {len(values)} | {num(middle["auc"])} | '
                  f'{num(middle["brier"])} | {num(middle["r2"])} | {num(middle["mae"], 2)} | '
                  f'{share(middle["saturated"])} |')
  if not rows:
    return []
  return ['| method | split | seeds | AUC | Brier | V_e R^2 | V_e MAE | saturated g |',
          '|---|---|---|---|---|---|---|---|'] + rows + ['']


def _median(values: list[float]) -> float:
  """Median of the finite values; NaN when there are none (an AUC of a split with one class)."""
  finite = [v for v in values if v is not None and np.isfinite(v)]
  return float(np.median(finite)) if finite else float('nan')


def gate_line(groups: dict, task: str, obs: str, setting: str) -> list[str]:
  runs = groups.get((task, 'habc', obs, setting))
  g = gate_on_successes(runs) if runs else None
  if g is None or g['train'] is None:
    return []
  paper = PAPER_GATE[TASKS.index(task)] if task in TASKS else None
  seeds = g['train_seeds']
  return [f'Mean g_t on successful autonomous windows (HABC, last round, learner mean over '
          f'{seeds} seed{"" if seeds == 1 else "s"}): {g["train"]:.3f}'
          + (f'; the paper: {paper:.2f}.' if paper is not None else '.'), '']


def critic_curves(groups: dict, task: str, obs: str, setting: str) -> dict[str, dict]:
  """HABC's held-out critic curves inside each round, {'seed S, round R': {updates: numbers}}."""
  out = {}
  for run in groups.get((task, 'habc', obs, setting)) or []:
    for r, points in sorted((run.get('critic_curve') or {}).items(), key=lambda kv: int(kv[0])):
      out[f'seed {run["seed"]}, round {r}'] = points
  return out


def study_section(groups: dict, plots_dir: str, out_dir: str) -> list[str]:
  """Markdown lines of the study's section ([] when no study run is present)."""
  settings = sorted({(k[0], k[2], k[3]) for k in groups if is_study(k[3])},
                    key=lambda k: (TASKS.index(k[0]) if k[0] in TASKS else 99, k[1], k[2]))
  if not settings:
    return []
  lines = ['## Study at the paper\'s per-round scale (issue 26, `--preset=study`)', '',
           'Final round of each run (round 0 for sft). Differences are in percentage points, '
           'paired on (run seed, initial state): every method of a seed is evaluated on the same '
           'initial states (Newcombe\'s paired interval). `sft_continued` is the control: as many '
           'updates on the demonstrations alone.', '']
  for task, obs, setting in settings:
    lines += [f'### {task} ({obs}, {setting})', '']
    lines += comparison_table(groups, task, obs, setting)
    per_seed = seed_table(groups, task, obs, setting)
    if per_seed:
      lines += ['The same comparisons with the seed as the unit (each seed is one SFT policy, its '
                'rollouts and its updates; with a few seeds the interval is wide):', ''] + per_seed
    lines += efficiency_lines(groups, task, obs, setting)
    credit = credit_table(groups, task, obs, setting)
    if credit:
      lines += ['Credit assignment, over every collected episode of the runs:', ''] + credit
    critic = critic_table(groups, task, obs, setting)
    if critic:
      lines += ['The critic on rollouts it never trained on (last round; median over seeds):',
                ''] + critic
    lines += gate_line(groups, task, obs, setting)
    name = f'study_critic_curve_{task}_{setting.replace(";", "").replace(" ", "_")}.png'
    path = os.path.join(plots_dir, name)
    if critic_diagnostics.plot_curves(
        critic_curves(groups, task, obs, setting), path,
        f'{task}: HABC\'s critic on each round\'s held-out rollouts'):
      lines += [f'![critic curve, {task}]({os.path.relpath(path, out_dir)})', '']
  return lines
