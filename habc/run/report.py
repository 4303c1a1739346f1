"""The run's report: ``report.md`` and PNG plots in the workdir.

Plots (``plots/``): success rate per round with Wilson 95% intervals, length of successful
episodes per round, the gate distribution per sample kind (last round with gates), and frame
strips of one successful and one failed evaluation episode (last round that has them).
Reads only what the pipeline wrote (``summary`` dict, ``eval/``, ``logs/``).
"""

from __future__ import annotations

import os

import numpy as np

from habc.run import evaluation
from habc.labeling import SampleKind


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_success(rounds: list[dict], path: str, title: str = '') -> None:
  """Success rate per round with Wilson intervals as error bars."""
  plt = _plt()
  xs = [r['round'] for r in rounds if 'eval' in r]
  ev = [r['eval'] for r in rounds if 'eval' in r]
  rate = np.array([e['success_rate'] for e in ev])
  # Clipped: intervals saved by older runs may have a bound a rounding error past the rate.
  low = np.maximum(rate - np.array([e['ci_low'] for e in ev]), 0.0)
  high = np.maximum(np.array([e['ci_high'] for e in ev]) - rate, 0.0)
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.errorbar(xs, 100 * rate, yerr=100 * np.stack([low, high]), marker='o', capsize=4)
  ax.set_xlabel('round (0 = SFT)')
  ax.set_ylabel('success rate (%)')
  ax.set_ylim(-2, 102)
  ax.set_xticks(xs)
  ax.set_title(title or 'Success rate, Wilson 95% interval')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_lengths(rounds: list[dict], path: str) -> None:
  """Mean (+- std) length of successful evaluation episodes per round."""
  plt = _plt()
  pts = [(r['round'], r['eval']['mean_success_length'], r['eval']['std_success_length'] or 0.0)
         for r in rounds if 'eval' in r and r['eval'].get('mean_success_length') is not None]
  fig, ax = plt.subplots(figsize=(5, 3.2))
  if pts:
    xs, mean, std = map(np.array, zip(*pts))
    ax.errorbar(xs, mean, yerr=std, marker='s', capsize=4, color='tab:green')
    ax.set_xticks(xs)
  else:
    ax.text(0.5, 0.5, 'no successful episodes', ha='center', va='center', transform=ax.transAxes)
  ax.set_xlabel('round (0 = SFT)')
  ax.set_ylabel('control steps')
  ax.set_title('Length of successful episodes')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_gates(gate: np.ndarray, kind: np.ndarray, path: str, title: str = '') -> None:
  """Histogram of g_t (in (0, 2)) for each sample kind present."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.2))
  bins = np.linspace(0, 2, 41)
  for k in SampleKind:
    values = gate[kind == k]
    if values.size:
      ax.hist(values, bins=bins, alpha=0.5, label=f'{k.name.lower()} (n={values.size}, '
              f'mean {values.mean():.2f})')
  ax.set_xlabel('gate g_t')
  ax.set_ylabel('windows')
  ax.set_title(title or 'Gate per sample kind')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _latest(paths_by_round: dict[int, str]) -> tuple[int, str] | None:
  existing = {r: p for r, p in paths_by_round.items() if os.path.exists(p)}
  if not existing:
    return None
  r = max(existing)
  return r, existing[r]


def write_report(workdir: str, summary: dict, config=None) -> str:
  """Writes ``report.md`` and ``plots/*.png``; returns the report's path."""
  plots = os.path.join(workdir, 'plots')
  os.makedirs(plots, exist_ok=True)
  rounds = summary.get('rounds', [])
  title = f'{summary.get("method", "")} on {summary.get("task", "")} (seed {summary.get("seed")})'
  lines = [f'# Report: {title}', '']
  if config is not None:
    lines += [f'Preset `{config.get("preset", "")}`, obs `{config.obs}`, '
              f'{_count(config.pipeline.rounds, "round")} of '
              f'{_count(config.rollout.episodes_per_round, "rollout")}, '
              f'{config.pipeline.steps_per_round} learner steps a round at batch '
              f'{config.learner.batch_size}; {config.eval.episodes} evaluation episodes per '
              'checkpoint.', '']
  lines += ['| round | success | Wilson 95% | length (successes) | collected | with intervention '
            '| operator steps | actor loss | critic loss | mean gate | gate on successes |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rounds:
    ev, col, tr = r.get('eval', {}), r.get('collect', {}), r.get('train', {})
    rate = f'{100 * ev["success_rate"]:.1f}% ({ev["successes"]}/{ev["episodes"]})' if ev else '-'
    ci = f'[{100 * ev["ci_low"]:.1f}, {100 * ev["ci_high"]:.1f}]' if ev else '-'
    length = (f'{ev["mean_success_length"]:.1f}' if ev.get('mean_success_length') is not None
              else '-')
    gate = evaluation.mean_gate(tr) if tr else None
    lines.append(
        f'| {r["round"]} | {rate} | {ci} | {length} | {col.get("episodes", "-")} | '
        f'{col.get("episodes_with_intervention", "-")} | {col.get("intervention_steps", "-")} | '
        f'{_fmt(tr.get("actor/loss"))} | {_fmt(tr.get("critic/loss"))} | '
        f'{_fmt(gate)} | {_fmt(tr.get("gate/success_mean"))} |')
  lines.append('')
  resources = [(r['round'], r['resources']) for r in rounds if 'resources' in r]
  if resources:
    lines += ['| round | policy ms/chunk (mean, p95) | chunk execution time (ms) | RSS main (MB) '
              '| RSS with workers (MB) |', '|---|---|---|---|---|']
    for rnd, res in resources:
      lines.append(f'| {rnd} | {_fmt1(res.get("policy_ms_mean"))}, {_fmt1(res.get("policy_ms_p95"))}'
                   f' | {_fmt1(res.get("chunk_budget_ms"))} | {_fmt1(res.get("rss_main_mb"))} | '
                   f'{_fmt1(res.get("rss_total_mb"))} |')
    lines.append('')

  if any('eval' in r for r in rounds):
    plot_success(rounds, os.path.join(plots, 'success.png'), title)
    plot_lengths(rounds, os.path.join(plots, 'lengths.png'))
    lines += ['![success rate per round](plots/success.png)',
              '![length of successful episodes](plots/lengths.png)', '']

  gate_file = _latest({r['round']: os.path.join(workdir, 'logs', f'gates_round_{r["round"]:03d}.npz')
                       for r in rounds})
  if gate_file:
    r, path = gate_file
    data = np.load(path)
    plot_gates(data['gate'], data['kind'], os.path.join(plots, 'gates.png'),
               f'Gate per sample kind after round {r}')
    lines += [f'Gate g_t per sample kind after round {r} (per window, before normalisation):', '',
              '![gate distribution](plots/gates.png)', '']

  from habc.run import critic_diagnostics
  lines += critic_diagnostics.report_section(workdir, plots)

  frames_file = _latest({r['round']: os.path.join(workdir, 'eval', f'round_{r["round"]:03d}_frames.npz')
                         for r in rounds})
  if frames_file:
    r, path = frames_file
    data = np.load(path)
    for name in ('success', 'failure'):
      if name in data:
        frames = data[name]
        count = 8 if config is None else config.eval.strip_frames
        strip = evaluation.frame_strip(frames[evaluation.pick_frames(len(frames), count)])
        evaluation.save_png(strip, os.path.join(plots, f'{name}_strip.png'), scale=2)
        lines += [f'One {name} (round {r}, start to end):', '',
                  f'![{name}](plots/{name}_strip.png)', '']
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return path


def _count(n: int, noun: str) -> str:
  """'1 round', '3 rounds'."""
  return f'{n} {noun}' if int(n) == 1 else f'{n} {noun}s'


def _fmt(value) -> str:
  if value is None:
    return '-'
  try:
    v = float(value)
  except (TypeError, ValueError):
    return '-'
  return f'{v:.4f}' if np.isfinite(v) else '-'


def _fmt1(value) -> str:
  return '-' if value is None else f'{float(value):.1f}'
