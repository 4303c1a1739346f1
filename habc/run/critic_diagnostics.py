"""Does the critic know the task, and do its weights reach the actor? Held-out critic diagnostics.

The critic of round r is measured on data it never trained on:
  ``holdout``     the held-out split of round r's own rollouts (``critic.holdout_fraction``),
  ``next_round``  round r+1's fresh rollouts (on-policy for round r's actor, and unseen).

What is measured (``summarize``):
  viability head   AUC and Brier score of p_v against the episode outcome on outcome-labelled
                   policy windows, and a reliability diagram (mean p_v against the observed
                   success rate per p_v bin);
  efficiency head  R^2 and MAE of V_e against the true decisions-to-success, -steps_to_end, on
                   windows of successful episodes (where the efficiency head is trained);
  signal           the merged advantage and g_t per sample kind, and the fraction of saturated
                   gates (g < 0.05 or g > 1.95);
  actor batches    non-zero-weight windows per actor batch and the effective sample size of the
                   batch's weights, as the training sampler draws them.

Written per round to ``logs/critic_round_XXX.json`` (and TensorBoard under ``critic_eval/``),
plotted in report.md. ``python -m habc.critic_diagnostics --workdir=W`` prints the table of a run
and redraws its plots.

The metric functions are small numpy functions (no JAX): they run on what a jitted pass returned.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Mapping, Sequence

import numpy as np

from habc.labeling import SampleKind

SATURATION_LOW, SATURATION_HIGH = 0.05, 1.95
SPLITS = ('holdout', 'next_round')

# ----------------------------------------------------------------------------- metrics


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve of ``scores`` [N] for binary ``labels`` [N] (ties count half).

  The Mann-Whitney statistic: the probability that a random positive scores above a random
  negative. NaN when either class is absent.
  """
  scores = np.asarray(scores, np.float64).ravel()
  labels = np.asarray(labels).ravel().astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(f'roc_auc: scores {scores.shape} and labels {labels.shape} differ in shape.')
  num_pos, num_neg = int(labels.sum()), int((~labels).sum())
  if not num_pos or not num_neg:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # Average ranks over ties (1-based).
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  mean_rank = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(mean_rank, counts)
  return float((ranks[labels].sum() - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def brier_score(probs, labels) -> float:
  """Mean squared error of probabilities [N] against binary labels [N] (NaN when empty)."""
  probs = np.asarray(probs, np.float64).ravel()
  labels = np.asarray(labels, np.float64).ravel()
  return float(np.mean((probs - labels) ** 2)) if probs.size else float('nan')


def reliability(probs, labels, num_bins: int = 10) -> dict:
  """Reliability diagram data: per equal-width p bin, the mean predicted p, the observed rate of
  positives and the count. probs, labels [N] -> {'bin_edges' [num_bins+1], 'mean_prob' [num_bins],
  'frac_positive' [num_bins], 'count' [num_bins]} (NaN in empty bins), plus 'ece', the
  count-weighted mean |mean_prob - frac_positive| (expected calibration error)."""
  probs = np.asarray(probs, np.float64).ravel()
  labels = np.asarray(labels, np.float64).ravel()
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  index = np.clip(np.digitize(probs, edges[1:-1]), 0, num_bins - 1)
  count = np.bincount(index, minlength=num_bins).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_prob = np.bincount(index, probs, num_bins) / count
    frac = np.bincount(index, labels, num_bins) / count
  filled = count > 0
  ece = (float(np.sum(count[filled] * np.abs(mean_prob[filled] - frac[filled])) / count.sum())
         if count.sum() else float('nan'))
  return {'bin_edges': edges.tolist(), 'mean_prob': _list(mean_prob), 'frac_positive': _list(frac),
          'count': count.astype(int).tolist(), 'ece': ece}


def r_squared(pred, target) -> float:
  """Coefficient of determination 1 - SS_res / SS_tot of pred [N] against target [N]; NaN with
  fewer than two targets or constant targets."""
  pred = np.asarray(pred, np.float64).ravel()
  target = np.asarray(target, np.float64).ravel()
  if target.size < 2:
    return float('nan')
  ss_tot = float(np.sum((target - target.mean()) ** 2))
  if ss_tot == 0.0:
    return float('nan')
  return 1.0 - float(np.sum((target - pred) ** 2)) / ss_tot


def mean_absolute_error(pred, target) -> float:
  pred = np.asarray(pred, np.float64).ravel()
  target = np.asarray(target, np.float64).ravel()
  return float(np.mean(np.abs(pred - target))) if pred.size else float('nan')


def saturated_fraction(gate, low: float = SATURATION_LOW, high: float = SATURATION_HIGH) -> float:
  """Share of gates g [N] with g < low or g > high (NaN when empty)."""
  gate = np.asarray(gate, np.float64).ravel()
  return float(np.mean((gate < low) | (gate > high))) if gate.size else float('nan')


def effective_sample_size(weights) -> float:
  """Kish's effective sample size (sum w)^2 / sum w^2 of non-negative weights [N] (0 if all 0)."""
  w = np.asarray(weights, np.float64).ravel()
  sq = float(np.sum(w**2))
  return float(np.sum(w) ** 2 / sq) if sq > 0 else 0.0


def batch_weight_stats(weights, valid, kind=None) -> dict:
  """Per actor batch: non-zero-weight windows and the ESS of the weights.

  weights [M, B] (normalised actor weights, SFT included), valid bool [M, B], kind int [M, B]
  (optional) -> means over the M batches, with the fractions of the B valid rows; with ``kind``
  also of the online (non-SFT) rows alone, where the method's weights act.
  """
  weights = np.asarray(weights, np.float64)
  valid = np.asarray(valid, bool)
  if weights.ndim != 2 or weights.shape != valid.shape:
    raise ValueError(f'batch_weight_stats: weights {weights.shape} and valid {valid.shape} must '
                     'both be [batches, rows].')
  w = np.where(valid, weights, 0.0)
  nonzero = ((w != 0) & valid).sum(axis=1).astype(np.float64)
  ess = np.array([effective_sample_size(row) for row in w])
  rows = np.maximum(valid.sum(axis=1), 1).astype(np.float64)
  out = {'batches': int(len(w)), 'rows_mean': float(rows.mean()),
         'nonzero_windows_mean': float(nonzero.mean()), 'nonzero_windows_min': float(nonzero.min()),
         'nonzero_fraction_mean': float((nonzero / rows).mean()),
         'ess_mean': float(ess.mean()), 'ess_fraction_mean': float((ess / rows).mean())}
  if kind is not None:
    online = valid & (np.asarray(kind) != SampleKind.SFT)
    w_on = np.where(online, weights, 0.0)
    n_on = online.sum(axis=1).astype(np.float64)
    nz_on = ((w_on != 0) & online).sum(axis=1).astype(np.float64)
    ess_on = np.array([effective_sample_size(row) for row in w_on])
    has = n_on > 0
    out.update(online_windows_mean=float(n_on.mean()),
               online_nonzero_windows_mean=float(nz_on.mean()),
               online_nonzero_fraction_mean=float((nz_on[has] / n_on[has]).mean())
               if has.any() else float('nan'),
               online_ess_fraction_mean=float((ess_on[has] / n_on[has]).mean())
               if has.any() else float('nan'))
  return out


def summarize(outputs: Mapping[str, np.ndarray], num_bins: int = 10) -> dict:
  """Held-out diagnostics of one split from per-window critic outputs.

  Args:
    outputs: numpy arrays [N] over valid windows: 'p_v', 'efficiency' (V_e), 'a_v', 'a_e',
      'advantage' (the merged advantage inside the gate's tanh), 'gate', 'kind', 'outcome',
      'viability_mask', 'efficiency_mask', 'steps_to_end', 'episode_success'. Heads a method does
      not have may be absent (then their section is missing).
    num_bins: bins of the reliability diagram.

  Returns:
    A JSON-ready dict: 'windows', 'viability', 'efficiency', 'gate', 'advantage' sections.
  """
  kind = np.asarray(outputs['kind'])
  out: dict = {'windows': int(kind.size),
               'windows_per_kind': {k.name.lower(): int((kind == k).sum()) for k in SampleKind}}
  if 'p_v' in outputs:
    mask = np.asarray(outputs['viability_mask'], bool)
    p, y = np.asarray(outputs['p_v'])[mask], np.asarray(outputs['outcome'])[mask]
    out['viability'] = {'windows': int(mask.sum()), 'positives': int((y > 0.5).sum()),
                        'auc': roc_auc(p, y > 0.5), 'brier': brier_score(p, y),
                        'brier_base_rate': brier_score(np.full_like(y, y.mean()), y)
                        if y.size else float('nan'),
                        'reliability': reliability(p, y, num_bins)}
  if 'efficiency' in outputs:
    # Windows of successful episodes that end in the real success: there V_e(s_t) should be
    # -(decisions to success) = -steps_to_end.
    mask = (np.asarray(outputs['episode_success'], bool)
            & np.asarray(outputs['efficiency_mask'], bool))
    pred = np.asarray(outputs['efficiency'])[mask]
    target = -np.asarray(outputs['steps_to_end'], np.float64)[mask]
    out['efficiency'] = {'windows': int(mask.sum()), 'r2': r_squared(pred, target),
                         'mae': mean_absolute_error(pred, target),
                         'target_mean': float(target.mean()) if target.size else float('nan')}
  if 'gate' in outputs:
    gate = np.asarray(outputs['gate'])
    per_kind = {}
    for k in SampleKind:
      sel = kind == k
      if not sel.any():
        continue
      entry = {'windows': int(sel.sum()), 'gate_mean': float(gate[sel].mean()),
               'gate_std': float(gate[sel].std()),
               'saturated_fraction': saturated_fraction(gate[sel])}
      if 'advantage' in outputs:
        adv = np.asarray(outputs['advantage'])[sel]
        entry['advantage_mean'] = float(adv.mean())
        entry['advantage_std'] = float(adv.std())
      per_kind[k.name.lower()] = entry
    online = kind != SampleKind.SFT
    out['gate'] = {'saturated_fraction': saturated_fraction(gate),
                   'saturated_fraction_online': saturated_fraction(gate[online]),
                   'per_kind': per_kind}
  return out


def headline(diag: Mapping) -> dict:
  """The few numbers of one split that the evidence table shows (NaN where absent)."""
  def get(*keys):
    d = diag
    for key in keys:
      if not isinstance(d, Mapping) or key not in d:
        return float('nan')
      d = d[key]
    return float(d) if d is not None else float('nan')
  return {'auc': get('viability', 'auc'), 'brier': get('viability', 'brier'),
          'r2': get('efficiency', 'r2'), 'mae': get('efficiency', 'mae'),
          'saturated': get('gate', 'saturated_fraction_online'),
          'nonzero_fraction': get('actor_batches', 'nonzero_fraction_mean'),
          'ess_fraction': get('actor_batches', 'ess_fraction_mean'),
          'online_nonzero_fraction': get('actor_batches', 'online_nonzero_fraction_mean'),
          'online_ess_fraction': get('actor_batches', 'online_ess_fraction_mean')}


# ----------------------------------------------------------------------------- files


def path_for(logs_dir: str, round_index: int) -> str:
  return os.path.join(logs_dir, f'critic_round_{round_index:03d}.json')


def update_file(logs_dir: str, round_index: int, split: str, diag: dict) -> str:
  """Merges one split's diagnostics into ``logs/critic_round_XXX.json`` (atomically)."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  path = path_for(logs_dir, round_index)
  data = load_file(path) or {'round': round_index}
  data[split] = diag
  os.makedirs(logs_dir, exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(_jsonable(data), f, indent=1, allow_nan=True)
  os.replace(tmp, path)
  return path


def load_file(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def load_run(workdir: str) -> list[dict]:
  """Every ``logs/critic_round_XXX.json`` of a run, by round."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, 'logs', 'critic_round_*.json'))):
    if re.fullmatch(r'critic_round_\d{3}\.json', os.path.basename(path)):
      data = load_file(path)
      if data is not None:
        out.append(data)
  return sorted(out, key=lambda d: d.get('round', 0))


def scalars(diag: Mapping, split: str) -> dict:
  """Flat TensorBoard scalars of one split (``critic_eval/<split>/<name>``)."""
  return {f'{split}/{k}': v for k, v in headline(diag).items() if np.isfinite(v)}


def table(runs: Sequence[dict]) -> str:
  """Markdown table: one row per (round, split) of a run's diagnostics."""
  lines = ['| round | split | windows | AUC | Brier | R^2 (V_e) | MAE | saturated g | '
           'non-zero w (all / online) | ESS/B (all / online) |',
           '|---|---|---|---|---|---|---|---|---|---|']
  num, share = format_number, format_share
  for data in runs:
    for split in SPLITS:
      if split not in data:
        continue
      d = data[split]
      h = headline(d)
      lines.append(f'| {data.get("round")} | {split} | {d.get("windows", 0)} | {num(h["auc"])} | '
                   f'{num(h["brier"])} | {num(h["r2"])} | {num(h["mae"], 2)} | '
                   f'{share(h["saturated"])} | {share(h["nonzero_fraction"])} / '
                   f'{share(h["online_nonzero_fraction"])} | {share(h["ess_fraction"])} / '
                   f'{share(h["online_ess_fraction"])} |')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- plots


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_reliability(runs: Sequence[dict], path: str, split: str = 'next_round') -> bool:
  """Reliability diagram of the viability head, one line per round (False: nothing to plot)."""
  curves = [(d['round'], d[split]['viability']['reliability']) for d in runs
            if split in d and 'viability' in d[split]]
  if not curves:
    return False
  plt = _plt()
  fig, ax = plt.subplots(figsize=(4.2, 4.0))
  ax.plot([0, 1], [0, 1], color='0.6', ls='--', lw=1, label='calibrated')
  for r, rel in curves:
    mp = np.array(rel['mean_prob'], np.float64)
    fp = np.array(rel['frac_positive'], np.float64)
    ok = np.isfinite(mp) & np.isfinite(fp)
    ax.plot(mp[ok], fp[ok], marker='o', label=f'round {r} (ECE {rel["ece"]:.2f})')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel('predicted p_v (bin mean)')
  ax.set_ylabel('observed success rate')
  ax.set_title(f'Viability reliability ({split})')
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_efficiency_scatter(pred, target, path: str, title: str = '') -> None:
  """V_e against the true -decisions-to-success on held-out successful windows."""
  plt = _plt()
  pred, target = np.asarray(pred), np.asarray(target)
  fig, ax = plt.subplots(figsize=(4.2, 4.0))
  ax.scatter(target, pred, s=6, alpha=0.4)
  if target.size:
    lo, hi = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color='0.6', ls='--', lw=1)
  ax.set_xlabel('true -(decisions to success)')
  ax.set_ylabel('V_e(s_t)')
  ax.set_title(title or 'Efficiency head on held-out successes')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def load_curves(workdir: str) -> dict[int, dict[int, dict]]:
  """{round: {updates into the round: headline numbers}} from logs/critic_curve_round_XXX.json
  (written with ``critic.curve_every``)."""
  out = {}
  for data in load_run(workdir):
    r = int(data['round'])
    curve = load_file(os.path.join(workdir, 'logs', f'critic_curve_round_{r:03d}.json'))
    if not curve:
      continue
    out[r] = dict(sorted((int(k), v) for k, v in curve.items()))
  return out


# Lowest R^2 drawn by plot_curves; lower points sit on it, marked.
R2_FLOOR = -2.0


def plot_curves(curves: dict[str, dict[int, dict]], path: str, title: str = '') -> bool:
  """AUC and V_e R^2 on a held-out split against updates into the round, one line per entry of
  ``curves`` ({label: {updates: headline numbers}}); False when there is nothing to plot.

  R^2 below ``R2_FLOOR`` is drawn at the floor with an open marker (a runaway efficiency head
  reaches -300 early in a round and would flatten every other line); the panel's title counts
  them.
  """
  if not curves:
    return False
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
  clipped = 0
  for ax, key, label in zip(axes, ('auc', 'r2'), ('viability AUC', 'efficiency R^2')):
    for name, points in curves.items():
      xs = np.array([int(k) for k in points], np.float64)
      ys = np.array([p.get(key, np.nan) for p in points.values()], np.float64)
      ok = np.isfinite(ys)
      xs, ys = xs[ok], ys[ok]
      floor = R2_FLOOR if key == 'r2' else -np.inf  # AUC is never clipped.
      low = ys < floor
      line, = ax.plot(xs, np.maximum(ys, floor), marker='o', ms=3, lw=1, label=name)
      if low.any():
        clipped += int(low.sum())
        ax.plot(xs[low], np.full(int(low.sum()), floor), 'o', ms=6, mfc='none',
                color=line.get_color())
    ax.set_xlabel('updates into the round')
    ax.set_ylabel(label)
    if key == 'r2' and clipped:
      ax.set_title(f'open: {clipped} points below {R2_FLOOR:g}, drawn at it', fontsize=7)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7 if len(curves) <= 4 else 6)
  fig.suptitle(title or 'Critic on each round\'s held-out split while the round trains',
               fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def report_section(workdir: str, plots_dir: str) -> list[str]:
  """Markdown lines of report.md's critic section (table, reliability diagram, V_e scatter of the
  latest split that has one), writing its plots into ``plots_dir``; [] when the run has none."""
  runs = load_run(workdir)
  if not runs:
    return []
  lines = ['## Critic on held-out data', '',
           "Each round's critic on the held-out split of its own rollouts and on the next round's "
           'fresh rollouts (never trained on). Targets: AUC >= 0.8, R^2 >= 0.6, saturated gates '
           '<= 5%, >= 50% of an actor batch with a non-zero weight.', '', table(runs), '']
  for split in SPLITS:
    name = f'critic_reliability_{split}.png'
    if plot_reliability(runs, os.path.join(plots_dir, name), split):
      lines += [f'![viability reliability, {split}](plots/{name})', '']
  curves = {f'round {r}': points for r, points in load_curves(workdir).items()}
  if plot_curves(curves, os.path.join(plots_dir, 'critic_curve.png')):
    lines += ['The critic on the held-out split while each round trains '
              '(`critic.curve_every`):', '', '![critic curve](plots/critic_curve.png)', '']
  for data in reversed(runs):
    for split in ('next_round', 'holdout'):
      npz = os.path.join(workdir, 'logs', f'critic_round_{data["round"]:03d}_{split}.npz')
      if split not in data or not os.path.exists(npz):
        continue
      arrays = np.load(npz)
      if 'efficiency' not in arrays:
        continue
      mask = arrays['episode_success'].astype(bool) & arrays['efficiency_mask'].astype(bool)
      if not mask.any():
        continue
      plot_efficiency_scatter(arrays['efficiency'][mask], -arrays['steps_to_end'][mask],
                              os.path.join(plots_dir, 'critic_efficiency.png'),
                              f'V_e, critic of round {data["round"]}, {split}')
      lines += [f'Efficiency head against the true decisions-to-success (critic of round '
                f'{data["round"]}, {split}):', '', '![efficiency scatter](plots/critic_efficiency.png)',
                '']
      return lines
  return lines


# ----------------------------------------------------------------------------- helpers


def _list(x: np.ndarray) -> list:
  return [float(v) for v in np.asarray(x, np.float64)]


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.floating, float)):
    return float(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  return x


def format_number(v: float, digits: int = 3) -> str:
  """v with ``digits`` decimals; '-' when it is not finite (a table cell)."""
  return f'{v:.{digits}f}' if np.isfinite(v) else '-'


def format_share(v: float) -> str:
  """A fraction as a whole percentage; '-' when it is not finite (a table cell)."""
  return f'{100 * v:.0f}%' if np.isfinite(v) else '-'


# ----------------------------------------------------------------------------- command line


def main(argv) -> None:
  from absl import flags
  del argv
  workdir = flags.FLAGS.workdir
  if not workdir or not os.path.isdir(workdir):
    raise SystemExit(f'--workdir={workdir!r} is not a run directory; pass the workdir of a '
                     'launch.py run.')
  runs = load_run(workdir)
  if not runs:
    raise SystemExit(f'{workdir} has no logs/critic_round_XXX.json yet: they are written after '
                     'each online round\'s training (methods with a critic only).')
  print(table(runs))
  plots = os.path.join(workdir, 'plots')
  os.makedirs(plots, exist_ok=True)
  for split in SPLITS:
    out = os.path.join(plots, f'critic_reliability_{split}.png')
    if plot_reliability(runs, out, split):
      print(f'wrote {out}')
