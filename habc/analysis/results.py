r"""RESULTS.md from whatever sweep summaries are in ``results/``: ``python -m habc.results``.

  python -m habc.results                        # results/ -> RESULTS.md and results/plots/*.png
  python -m habc.results --results=results --out=RESULTS.md --workdirs=workdirs/sweep
  python -m habc.results --run_benchmarks       # first: every python -m habc.bench NAME

Inputs (all optional; zero, some or all runs may be present):
  results/[<folder>/]<task>_<method>_<seed>.json   one small summary per run (experiments/sweep.py)
  results/bench/*.txt                       benchmark output: line 1 ``$ <command>``, line 2
                                            ``# measured <date> ...`` (``--run_benchmarks``)
  results/notes.md                          hand-written interpretation, included verbatim
  <workdirs>/[<folder>/]<task>_<method>_<seed>/   with ``--workdirs``: the run's ``config.json``
                                            (observation mode) and ``logs/gates_round_*.npz``

Cells are grouped by (task, method, observation mode, setting); the setting is the preset plus
any config keys the run changed from its experiment file (the summary's ``settings``, e.g.
``default; learner.sft_anneal_steps=2000``), and runs of different modes or settings are never
pooled. Pooling adds successes and trials over seeds (treats every trial as independent;
the seed-to-seed spread is shown by the per-seed rates next to it). Where the summaries carry
per-trial outcomes (``eval_outcomes``), two methods are also compared paired on the (seed, initial
state), since every evaluation draws the same initial states.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import textwrap
import time

import numpy as np
from scipy import stats

from habc.run import evaluation

METHODS = ('sft', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir', 'habc_naive_credit',
           'awr_single_scalar')
# Diagnostic runs that are not in the paper's comparison: listed after the methods where they
# were run, never counted as missing.
CONTROLS = ('sft_continued',)
ORDER = METHODS + CONTROLS  # Row order and colours of every table and figure.
TASKS = ('fold', 'pouch', 'insert')
BENCHMARKS = ('learner', 'data', 'envs')
SKIP_DIRS = ('plots', 'bench', 'superseded', 'diagnostics')  # Not read as comparison cells.
# Methods whose actor weight is a learned gate g_t (HABC's gate, or a variant of it).
GATED = ('habc', 'habc_ir', 'habc_v', 'habc_naive_credit')
SUCCESS_KIND = 1  # habc.labeling.SampleKind.SUCCESS (not imported: that pulls in jax).

# The paper's real-robot numbers (success %, fold / pouch / insert).
PAPER_SUCCESS = {
    'sft': (36, 44, 12),
    'imit_dagger': (20, 62, 8),
    'imit_recap': (38, 66, 14),
    'habc_v': (50, 70, 18),
    'habc': (60, 78, 22),
    'habc_ir': (92, 88, 38),
}
PAPER_APPROX = ('imit_dagger', 'imit_recap', 'habc_v')  # Approximate ("~") in the reference.
PAPER_GATE = (0.76, 0.68, 0.86)  # Mean g_t on successful autonomous transitions.
# Orderings to check, as (better, worse): the paper's numbers have better > worse on every task;
# the last two are ablations the paper's table does not report (expected from the design).
CLAIMS = (('habc', 'sft'), ('habc', 'imit_dagger'), ('habc', 'imit_recap'), ('habc', 'habc_v'),
          ('habc_ir', 'habc'), ('habc_v', 'sft'), ('habc', 'habc_naive_credit'),
          ('habc', 'awr_single_scalar'),
          # Against the control: does the online data, not just more updates, make the gain?
          ('habc', 'sft_continued'), ('habc_v', 'sft_continued'))


# Loading ..........................................................................................
def load_summaries(results: str) -> tuple[list[dict], list[str]]:
  """Reads every run summary under ``results`` (top level and one folder down, not plots/bench).

  Returns:
    (summaries, problems): each summary gets ``_path`` (relative to ``results``); problems are
    one line per file that was skipped and why.
  """
  paths = sorted(glob.glob(os.path.join(results, '*.json')) +
                 [p for p in glob.glob(os.path.join(results, '*', '*.json'))
                  if os.path.basename(os.path.dirname(p)) not in SKIP_DIRS])
  summaries, problems = [], []
  for path in paths:
    rel = os.path.relpath(path, results)
    try:
      with open(path) as f:
        s = json.load(f)
    except (OSError, ValueError) as e:
      problems.append(f'{rel}: not readable JSON ({e}); delete it or rerun the sweep for it')
      continue
    missing = [k for k in ('task', 'method', 'seed', 'rounds')
               if not isinstance(s, dict) or k not in s]
    if missing:
      problems.append(f'{rel}: not a run summary (no {", ".join(missing)}); skipped')
      continue
    bad = [r for r in s['rounds'] if r.get('episodes') is None or r.get('successes') is None]
    if bad:
      problems.append(f'{rel}: rounds {[r.get("round") for r in bad]} have no evaluation counts; '
                      'those rounds are left out')
    s = dict(s, rounds=[r for r in s['rounds'] if r not in bad], _path=rel)
    summaries.append(s)
  return summaries, problems


def attach_workdir(summary: dict, workdirs: str | None) -> dict:
  """Adds ``obs`` (and ``obs_source``) and, where the run's workdir exists, ``_workdir``.

  The run's workdir is ``<workdirs>/<folder>/<name>`` for a summary in ``results/<folder>/`` (a
  sweep run with ``--results=results/<folder> --root=<workdirs>/<folder>``), else
  ``<workdirs>/<name>``. The observation mode comes from the summary if it has one, else from the
  workdir's config.json, else from the folder's name if it is ``state`` or ``vision``, else from
  the preset (``paper`` is vision, ``smoke``/``default`` are state), marked as inferred.
  """
  s = dict(summary)
  folder = os.path.dirname(s.get('_path', ''))
  workdir = None
  if workdirs:
    workdir = os.path.join(workdirs, folder, f'{s["task"]}_{s["method"]}_{s["seed"]}')
  if s.get('obs'):
    s['obs_source'] = 'summary'
  else:
    config = _read_json(os.path.join(workdir, 'config.json')) if workdir else None
    if config and config.get('obs'):
      s['obs'], s['obs_source'] = config['obs'], 'workdir config'
    elif folder in ('state', 'vision'):
      s['obs'], s['obs_source'] = folder, 'folder name'
    else:
      s['obs'] = 'vision' if s.get('preset') == 'paper' else 'state'
      s['obs_source'] = 'inferred from preset'
  if workdir and os.path.isdir(workdir):
    s['_workdir'] = workdir
  return s


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# Statistics .......................................................................................
def setting_label(summary: dict) -> str:
  """The preset, then the keys the run changed from its experiment file: 'default' or
  'default; learner.sft_anneal_steps=2000'. A summary without ``settings`` (written before
  sweep.py recorded them; ``sweep.py --add_outcomes`` adds them from the workdirs) reads as the
  experiment file as written."""
  changed = summary.get('settings') or {}
  return '; '.join([str(summary.get('preset'))] +
                   [f'{k}={v if isinstance(v, str) else json.dumps(v)}'
                    for k, v in sorted(changed.items())])


def group_runs(summaries: list[dict]) -> tuple[dict[tuple, list[dict]], list[str]]:
  """Groups runs by (task, method, obs, setting), runs sorted by seed (``setting_label``).

  A seed is never pooled twice: a second run of the same seed in a group (e.g. a vision run in a
  subfolder whose mode could not be told apart) is left out and reported.

  Returns:
    ({(task, method, obs, setting): runs}, problems).
  """
  groups: dict[tuple, list[dict]] = {}
  problems = []
  for s in summaries:
    key = (s['task'], s['method'], s.get('obs', 'state'), setting_label(s))
    same = [r for r in groups.get(key, []) if r['seed'] == s['seed']]
    if same:
      problems.append(
          f'{s["_path"]}: same task, method, seed, obs ({key[2]}, {s.get("obs_source")}) and '
          f'setting as {same[0]["_path"]}; left out. If it is another configuration, pass '
          '--workdirs (the sweep\'s --root) or put it in results/state/ or results/vision/')
      continue
    groups.setdefault(key, []).append(s)
  ordered = sorted(groups.items(), key=_group_order)
  return {k: sorted(v, key=lambda s: s['seed']) for k, v in ordered}, problems


def _group_order(item):
  task, method, obs, setting = item[0]
  return (_index(TASKS, task), _index(ORDER, method), obs, setting)


def _index(seq, value):
  return seq.index(value) if value in seq else len(seq)


def add_sft_fallback(groups: dict) -> tuple[dict, list[str]]:
  """Where a (task, obs, setting) has no ``sft`` runs, an SFT cell from the other runs' round 0.

  Every method's run starts from an SFT stage of its seed, so its round-0 evaluation measures an
  SFT checkpoint; one run per seed is used (methods in METHODS order), never several of one seed.

  Returns:
    (groups with the added cells, in order; one note per added cell).
  """
  out, notes = dict(groups), []
  for task, obs, setting in _settings(groups):
    if (task, 'sft', obs, setting) in groups:
      continue
    chosen = {}
    for key in sorted((k for k in groups if (k[0], k[2], k[3]) == (task, obs, setting)),
                      key=lambda k: _index(METHODS, k[1])):
      for run in groups[key]:
        row = _round(run, 0)
        if row is not None and run['seed'] not in chosen:
          chosen[run['seed']] = dict(run, method='sft', rounds=[row], seconds=None,
                                     _path=f'{run["_path"]} (round 0)', _from=run['method'])
    if chosen:
      runs = [chosen[seed] for seed in sorted(chosen)]
      out[(task, 'sft', obs, setting)] = runs
      sources = ', '.join(f'{r["_from"]} seed {r["seed"]}' for r in runs)
      notes.append(f'{task}/sft ({obs}, {setting}): no sft runs; taken from round 0 of {sources}')
  return dict(sorted(out.items(), key=_group_order)), notes


def round0_disagreements(groups: dict) -> list[str]:
  """Seeds whose round-0 evaluation differs between methods (the SFT checkpoint should be one).

  Returns:
    One line per (task, obs, setting, seed) with differing successes/episodes at round 0.
  """
  lines = []
  for task, obs, setting in _settings(groups):
    by_seed: dict[int, list[tuple[str, int, int]]] = {}
    for key, runs in groups.items():
      if (key[0], key[2], key[3]) != (task, obs, setting):
        continue
      for run in runs:
        row = _round(run, 0)
        if row is not None and not run.get('_from'):
          by_seed.setdefault(run['seed'], []).append((key[1], row['successes'], row['episodes']))
    for seed, rows in sorted(by_seed.items()):
      if len({(k, n) for _, k, n in rows}) > 1:
        lines.append(f'{task} ({obs}, {setting}) seed {seed}: round 0 is '
                     + ', '.join(f'{m} {k}/{n}' for m, k, n in rows))
  return lines


def _round(run: dict, r: int) -> dict | None:
  for row in run['rounds']:
    if row['round'] == r:
      return row
  return None


def pool(rows: list[dict]) -> dict:
  """Pools evaluation rows of several seeds.

  Args:
    rows: dicts with episodes, successes, mean_success_length (None without successes).

  Returns:
    successes, trials, rate, ci_low, ci_high (Wilson 95%), per_seed rates [len(rows)], and
    mean_success_length over all successful episodes (None without any).
  """
  k = int(sum(r['successes'] for r in rows))
  n = int(sum(r['episodes'] for r in rows))
  low, high = evaluation.wilson_interval(k, n)
  weighted = [(r['mean_success_length'], r['successes']) for r in rows
              if r.get('mean_success_length') is not None and r['successes']]
  length = (sum(m * c for m, c in weighted) / sum(c for _, c in weighted)) if weighted else None
  return {'successes': k, 'trials': n, 'rate': k / n if n else float('nan'), 'ci_low': low,
          'ci_high': high, 'per_seed': [r['successes'] / r['episodes'] if r['episodes'] else None
                                        for r in rows],
          'mean_success_length': length, 'success_length_sd': _pooled_length_sd(rows, length)}


def _pooled_length_sd(rows: list[dict], mean: float | None) -> float | None:
  """Sample SD (ddof 1) of the lengths of all successful episodes of ``rows``.

  Rebuilt from each row's count, mean and population SD (``std_success_length``, ddof 0), so the
  spread between seeds' means counts too. None with fewer than 2 successes or a row without SD.
  """
  parts = [(r['successes'], r['mean_success_length'], r.get('std_success_length'))
           for r in rows if r['successes'] and r.get('mean_success_length') is not None]
  count = sum(c for c, _, _ in parts)
  if mean is None or count < 2 or any(sd is None for _, _, sd in parts):
    return None
  second = sum(c * (sd * sd + m * m) for c, m, sd in parts) / count
  return float(np.sqrt(max(second - mean * mean, 0.0) * count / (count - 1)))


def length_difference(a: dict, b: dict) -> tuple[float, float, float] | None:
  """Mean length of successful episodes, a minus b, with a Welch 95% interval.

  Args:
    a, b: pooled cells (``pool``): mean_success_length, success_length_sd, successes.

  Returns:
    (difference, low, high) in control steps, or None when either side lacks 2 successes or SDs.
  """
  if None in (a['mean_success_length'], b['mean_success_length'], a['success_length_sd'],
              b['success_length_sd']):
    return None
  va = a['success_length_sd'] ** 2 / a['successes']
  vb = b['success_length_sd'] ** 2 / b['successes']
  diff = a['mean_success_length'] - b['mean_success_length']
  se = float(np.sqrt(va + vb))
  if se == 0.0:
    return diff, diff, diff
  df = (va + vb) ** 2 / (va ** 2 / (a['successes'] - 1) + vb ** 2 / (b['successes'] - 1))
  half = float(stats.t.ppf(0.975, df)) * se
  return diff, diff - half, diff + half


def final_cell(runs: list[dict]) -> dict | None:
  """The cell of the paper's table: round 0 for SFT, else each run's last evaluated round."""
  chosen = []
  for run in runs:
    if not run['rounds']:
      continue
    row = _round(run, 0) if run['method'] == 'sft' else max(run['rounds'], key=lambda r: r['round'])
    if row is not None:
      chosen.append((run, row))
  if not chosen:
    return None
  cell = pool([row for _, row in chosen])
  cell['outcomes'] = trial_outcomes(chosen)
  cell['seeds'] = [run['seed'] for run, _ in chosen]
  cell['rounds'] = sorted({row['round'] for _, row in chosen})
  cell['minutes'] = [run['seconds'] / 60 if run.get('seconds') else None for run, _ in chosen]
  return cell


def trial_outcomes(chosen: list[tuple[dict, dict]]) -> dict | None:
  """{(run seed, initial-state seed): success} over the chosen (run, round row) pairs.

  None when any row lacks ``eval_outcomes`` (summaries written before they were recorded, not
  backfilled with ``sweep.py --add_outcomes``) or repeats an initial state: such a cell can only
  be compared unpaired.
  """
  out = {}
  for run, row in chosen:
    trials = row.get('eval_outcomes')
    if not trials or len(trials['seeds']) != len(trials['success']):
      return None
    for env_seed, ok in zip(trials['seeds'], trials['success']):
      key = (run['seed'], env_seed)
      if key in out:
        return None
      out[key] = ok == '1'
  return out


def paired_compare(a: dict | None, b: dict | None) -> tuple[tuple[float, float, float], int] | None:
  """Success of a minus b paired on the initial state (Newcombe's paired method 10).

  Every evaluation draws its initial states from the same seeds (``eval.seed_offset``), so two
  cells of the same run seeds hold the same initial states; an initial state hard for one method
  tends to be hard for the other, and pairing removes that shared part of the spread.

  Returns:
    ((difference, low, high), number of pairs), or None when either cell lacks per-trial
    outcomes or the two cells do not hold the same initial states.
  """
  if a is None or b is None or not a.get('outcomes') or not b.get('outcomes'):
    return None
  if a['outcomes'].keys() != b['outcomes'].keys():
    return None
  table = [0, 0, 0, 0]  # both, only a, only b, neither
  for key, ok_a in a['outcomes'].items():
    ok_b = b['outcomes'][key]
    table[0 if ok_a and ok_b else 1 if ok_a else 2 if ok_b else 3] += 1
  return evaluation.paired_difference_interval(*table), len(a['outcomes'])


def per_round(runs: list[dict]) -> list[tuple[int, dict]]:
  """[(round, pooled cell over the seeds that have that round)], rounds ascending."""
  rounds = sorted({row['round'] for run in runs for row in run['rounds']})
  out = []
  for r in rounds:
    rows = [row for row in (_round(run, r) for run in runs) if row is not None]
    cell = pool(rows)
    cell['seeds'] = len(rows)
    interventions = [row.get('episodes_with_intervention') for row in rows]
    cell['episodes_with_intervention'] = (sum(interventions) if interventions and
                                          None not in interventions else None)
    out.append((r, cell))
  return out


def logged_gate(workdir: str, r: int) -> tuple[float, float]:
  """(sum of g * windows, windows) of SUCCESS windows over round ``r``'s logged learner steps.

  Reads ``logs/metrics.jsonl`` (every ``pipeline.log_every`` steps: the batch's
  ``gate/success_mean`` and ``count/success``) for steps in round ``r`` (from ``config.json``'s
  ``pipeline.sft_steps`` and ``steps_per_round``); batches without such windows do not count.
  """
  config = _read_json(os.path.join(workdir, 'config.json')) or {}
  pipeline = config.get('pipeline', {})
  if r < 1 or 'sft_steps' not in pipeline or 'steps_per_round' not in pipeline:
    return 0.0, 0.0
  first = pipeline['sft_steps'] + (r - 1) * pipeline['steps_per_round']
  last = first + pipeline['steps_per_round']
  total, windows = 0.0, 0.0
  try:
    with open(os.path.join(workdir, 'logs', 'metrics.jsonl')) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # A line cut by a stop.
        if row.get('prefix') != 'train' or not first < row.get('step', -1) <= last:
          continue
        g, n = row.get('gate/success_mean'), row.get('count/success')
        if g is not None and n and np.isfinite(g):
          total += g * n
          windows += n
  except OSError:
    pass
  return total, windows


def workdir_gate(workdir: str, rounds: list[int]) -> dict | None:
  """The run's last-round gate readings that only its workdir holds, to keep in its summary.

  Args:
    workdir: the run's workdir.
    rounds: the round numbers of its summary; the last one is read.

  Returns:
    {'round': r, 'logged_sum', 'logged_windows': ``logged_gate`` of round r, 'sample_sum',
     'sample_windows': sum and count of g_t over the SUCCESS windows of the newest
     ``logs/gates_round_*.npz``}, or None when the workdir has neither (or r is 0).
  """
  last = max(rounds, default=0)
  if last < 1:
    return None
  logged_sum, logged_windows = logged_gate(workdir, last)
  sample_sum, sample_windows = 0.0, 0
  files = sorted(glob.glob(os.path.join(workdir, 'logs', 'gates_round_*.npz')))
  if files:
    try:
      data = np.load(files[-1])
      gate = np.asarray(data['gate'])[np.asarray(data['kind']) == SUCCESS_KIND]
      sample_sum, sample_windows = float(gate.sum()), int(gate.size)
    except (OSError, KeyError, ValueError):
      pass
  if not logged_windows and not sample_windows:
    return None
  return {'round': last, 'logged_sum': float(logged_sum), 'logged_windows': int(logged_windows),
          'sample_sum': sample_sum, 'sample_windows': sample_windows}


def gate_on_successes(runs: list[dict]) -> dict | None:
  """Mean g_t on successful autonomous windows, final round, over the cell's seeds.

  The two workdir readings come from the run's workdir where it is attached (``_workdir``), else
  from the ``workdir_gate`` its summary kept (``experiments/sweep.py`` writes it), else the run
  adds nothing to them.

  Returns:
    {'train': mean of the summaries' gate_success_mean (None if absent), 'train_seeds': count,
     'samples': mean over the gate samples of SUCCESS windows (None if absent),
     'sample_windows': count, 'logged': count-weighted mean over the logged learner steps of the
     last round (None if absent), 'logged_windows': count, 'workdir_seeds': runs that gave either
     reading}, or None when no source has a value.
  """
  train = []
  for run in runs:
    rows = [r for r in run['rounds'] if r.get('gate_success_mean') is not None]
    if rows:
      value = max(rows, key=lambda r: r['round'])['gate_success_mean']
      if np.isfinite(value):
        train.append(float(value))
  sums = np.zeros(4)  # logged sum, logged windows, sample sum, sample windows
  workdir_seeds = 0
  for run in runs:
    rounds = [row['round'] for row in run['rounds']]
    kept = ((workdir_gate(run['_workdir'], rounds) if run.get('_workdir') else None)
            or run.get('workdir_gate'))
    if kept:
      sums += [kept['logged_sum'], kept['logged_windows'], kept['sample_sum'],
               kept['sample_windows']]
      workdir_seeds += 1
  if not train and not sums[1] and not sums[3]:
    return None
  return {'train': float(np.mean(train)) if train else None, 'train_seeds': len(train),
          'samples': float(sums[2] / sums[3]) if sums[3] else None,
          'sample_windows': int(sums[3]),
          'logged': float(sums[0] / sums[1]) if sums[1] else None,
          'logged_windows': int(sums[1]), 'workdir_seeds': workdir_seeds}


def on_shared_seeds(a_runs: list[dict] | None,
                    b_runs: list[dict] | None) -> tuple[dict | None, dict | None, list[int]]:
  """Final cells of two groups, each pooled over only the seeds both groups have.

  A comparison of cells with different seed sets mixes the spread between seeds into the
  difference between methods (seed 2's SFT policy may be much better than seed 0's), so the
  gains and orderings in the reading use only the seeds the two methods share.

  Returns:
    (cell of a, cell of b, shared seeds ascending); the cells are None without a shared seed.
  """
  if not a_runs or not b_runs:
    return None, None, []
  seeds = sorted({r['seed'] for r in a_runs} & {r['seed'] for r in b_runs})
  if not seeds:
    return None, None, []
  a = final_cell([r for r in a_runs if r['seed'] in seeds])
  b = final_cell([r for r in b_runs if r['seed'] in seeds])
  return a, b, seeds


def _seed_list(seeds: list[int]) -> str:
  return f'seed{"s" if len(seeds) != 1 else ""} {",".join(str(s) for s in seeds)}'


def compare(a: dict | None, b: dict | None) -> tuple[str, tuple[float, float, float] | None,
                                                  tuple[tuple[float, float, float], int] | None]:
  """Success of a minus b with Newcombe's 95% intervals, unpaired and paired, and the verdict.

  Returns:
    ('higher' / 'lower' when the difference interval excludes 0, else 'overlap'; 'no data'
    without both cells or trials; judged by the paired interval where there is one, else by the
    unpaired one), unpaired (difference, low, high) or None, ``paired_compare``'s result or None.
  """
  if a is None or b is None or not a['trials'] or not b['trials']:
    return 'no data', None, None
  diff = evaluation.difference_interval(a['successes'], a['trials'], b['successes'], b['trials'])
  paired = paired_compare(a, b)
  judged = paired[0] if paired else diff
  if judged[1] > 0:
    return 'higher', diff, paired
  if judged[2] < 0:
    return 'lower', diff, paired
  return 'overlap', diff, paired


def _bounds_text(diff: tuple[float, float, float]) -> str:
  return f'[{100 * diff[1]:+.1f}, {100 * diff[2]:+.1f}]'


def _interval_text(diff: tuple[float, float, float]) -> str:
  return f'{100 * diff[0]:+.1f} {_bounds_text(diff)}'


def _settings(groups: dict) -> list[tuple[str, str, str]]:
  """The (task, obs, setting) combinations present, tasks in the paper's order."""
  return sorted({(k[0], k[2], k[3]) for k in groups}, key=lambda t: (_index(TASKS, t[0]), t[1:]))


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


# Benchmarks .......................................................................................
def benchmark_names() -> list[str]:
  """The benchmarks ``python -m habc.bench`` knows (its BENCHMARKS), else learner, data, envs."""
  try:
    from habc.bench import __main__ as dispatcher
    return list(dispatcher.BENCHMARKS)
  except (ImportError, AttributeError):
    return list(BENCHMARKS)


def benchmark_command(name: str) -> list[str]:
  return [sys.executable, '-m', 'habc.bench', name]


def run_benchmark(name: str, argv: list[str], bench_dir: str, cwd: str | None = None) -> str:
  """Runs one benchmark command and saves its stdout as ``<bench_dir>/<name>.txt``.

  Line 1 is ``$ <command>`` (as one would type it), line 2 ``# measured <UTC time> ...``; a failed
  command's stderr tail is kept under its output. Returns the file's path.
  """
  os.makedirs(bench_dir, exist_ok=True)
  is_python = os.path.basename(argv[0]).startswith('python')
  shown = ' '.join(['python'] + argv[1:] if is_python else argv)
  load = os.getloadavg()[0]  # Other work on the machine slows every benchmark: keep it on record.
  start = time.time()
  when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
  seconds = time.time() - start
  text = [f'$ {shown}',
          f'# measured {when} on {platform.node() or "?"} ({os.cpu_count()} cores, load average '
          f'{load:.1f} at start), {seconds:.0f} s, exit code {proc.returncode}',
          proc.stdout.rstrip('\n')]
  if proc.returncode:
    text += ['# stderr (last 40 lines):'] + proc.stderr.rstrip('\n').splitlines()[-40:]
  path = os.path.join(bench_dir, f'{name}.txt')
  with open(path, 'w') as f:
    f.write('\n'.join(text) + '\n')
  return path


def read_benchmark(path: str) -> dict:
  """{'name', 'command', 'measured', 'body'} of a saved benchmark text file."""
  with open(path) as f:
    lines = f.read().rstrip('\n').split('\n')
  command = lines[0][2:] if lines and lines[0].startswith('$ ') else None
  body = lines[1:] if command else lines
  measured = None
  if body and body[0].startswith('# measured '):
    measured, body = body[0][len('# measured '):], body[1:]
  if measured is None:
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    measured = f'{mtime:%Y-%m-%d %H:%M} UTC (file time; the file does not say)'
  return {'name': os.path.splitext(os.path.basename(path))[0], 'command': command,
          'measured': measured, 'body': '\n'.join(body)}


def benchmark_section(bench_dir: str) -> list[str]:
  lines = ['## Benchmarks', '']
  paths = glob.glob(os.path.join(bench_dir, '*.txt'))
  names = benchmark_names()
  order = {f'{b}.txt': i for i, b in enumerate(names)}
  paths.sort(key=lambda p: (order.get(os.path.basename(p), len(order)), os.path.basename(p)))
  present = {os.path.basename(p) for p in paths}
  absent = [b for b in names if f'{b}.txt' not in present]
  if absent:
    lines += [f'Not measured yet: {", ".join(absent)} (`python -m habc.results --run_benchmarks` '
              f'saves them to `{bench_dir}/`).', '']
  for path in paths:
    b = read_benchmark(path)
    command = (f'Command: `{b["command"]}`' if b['command'] else
               'Command: not recorded (the first line of the file should be `$ <command>`)')
    lines += [f'### {b["name"]}', '', f'{command}, measured {b["measured"]}.', '', '```',
              b['body'], '```', '']
  return lines


def memory_section(groups: dict) -> list[str]:
  """Peak resident memory of each run's pipeline (main process + environment workers), from the
  ``peak_rss_mb`` the sweep copies out of the run's per-round resource logs."""
  rows = [(key, run) for key, runs in groups.items() for run in runs
          if run.get('peak_rss_mb') is not None]
  lines = ['### Peak memory of the pipeline', '']
  if not rows:
    return lines + ['No run summary records `peak_rss_mb` yet (sweeps from before it was added).',
                    '']
  lines += ['Resident memory of the main process and its environment workers, largest over the '
            "rounds (target: < 8 GB, not growing from round to round; per-round values are in each "
            "workdir's `logs/resources_round_*.json`).", '',
            '| task | method | obs | seed | peak RSS (MB) | rounds |', '|---|---|---|---|---|---|']
  for (task, method, obs, _), run in rows:
    lines.append(f'| {task} | {method} | {obs} | {run["seed"]} | {run["peak_rss_mb"]:.0f} | '
                 f'{len(run["rounds"]) - 1} |')
  return lines + ['']
  return lines


# Honest reading ...................................................................................
def paper_reference() -> list[str]:
  names = {'sft': 'SFT', 'imit_dagger': 'Imit-DAgger', 'imit_recap': 'Imit-Recap',
           'habc_v': 'HABC-V', 'habc': 'HABC (3 rounds)', 'habc_ir': 'HABC+IR'}
  lines = ['Reference (the paper, real robot; success %):', '',
           '| method | ' + ' | '.join(TASKS) + ' |', '|---|' + '---|' * len(TASKS)]
  for method, values in PAPER_SUCCESS.items():
    approx = '~' if method in PAPER_APPROX else ''
    lines.append(f'| {names[method]} | ' + ' | '.join(f'{approx}{v}' for v in values) + ' |')
  lines += ['| mean g_t on successful autonomous transitions (HABC) | ' +
            ' | '.join(f'{g:.2f}' for g in PAPER_GATE) + ' |', '']
  return lines


def gain_table(groups: dict) -> list[str]:
  """Change over SFT in percentage points, here and in the paper, on the seeds both have."""
  rows = []
  for task, obs, setting in _settings(groups):
    sft = groups.get((task, 'sft', obs, setting))
    if not sft:
      continue
    t = TASKS.index(task) if task in TASKS else None
    for method in METHODS[1:] + CONTROLS:
      cell, sft_cell, seeds = on_shared_seeds(groups.get((task, method, obs, setting)), sft)
      if cell is None or sft_cell is None:
        continue
      paper = (PAPER_SUCCESS[method][t] - PAPER_SUCCESS['sft'][t]
               if method in PAPER_SUCCESS and t is not None else None)
      mine = dict(zip(cell['seeds'], cell['per_seed']))
      base = dict(zip(sft_cell['seeds'], sft_cell['per_seed']))
      per_seed = ' / '.join(f'{100 * (mine[x] - base[x]):+.0f}' for x in seeds
                            if mine.get(x) is not None and base.get(x) is not None)
      paired = paired_compare(cell, sft_cell)
      rows.append(f'| {task} | {obs}, {setting} | {method} | {",".join(map(str, seeds))} | '
                  f'{100 * sft_cell["rate"]:.0f} -> {100 * cell["rate"]:.0f} | '
                  f'{100 * (cell["rate"] - sft_cell["rate"]):+.0f} | '
                  f'{"-" if paired is None else _bounds_text(paired[0])} | {per_seed} | '
                  f'{"-" if paper is None else f"{paper:+d}"} |')
  if not rows:
    return []
  return ['Change over SFT (final round minus round 0, percentage points), on the seeds the method '
          'and SFT share, pooled (with its 95% interval paired on the initial state, where the '
          'summaries have per-trial outcomes) and per seed:', '',
          '| task | obs, setting | method | seeds | SFT -> method % | here | paired 95% | per seed '
          '| paper |',
          '|---|---|---|---|---|---|---|---|---|'] + rows + ['']


def reading_lines(groups: dict) -> list[str]:
  """Each of the paper's orderings per task/obs/setting: difference interval, on shared seeds."""
  settings = _settings(groups)
  lines = []
  verdicts = {'higher': 'agrees (difference interval above 0)',
              'lower': '**contradicts** (difference interval below 0)',
              'overlap': 'not shown (difference interval includes 0)'}
  for task, obs, setting in settings:
    runs = {k[1]: groups[k] for k in groups if (k[0], k[2], k[3]) == (task, obs, setting)}
    for better, worse in CLAIMS:
      a, b, seeds = on_shared_seeds(runs.get(better), runs.get(worse))
      result, diff, paired = compare(a, b)
      if result == 'no data':
        continue
      source = ('paper' if better in PAPER_SUCCESS and worse in PAPER_SUCCESS else
                'control' if worse in CONTROLS else 'design')
      interval = (f'paired on {paired[1]} initial states {_interval_text(paired[0])}, unpaired '
                  f'{_interval_text(diff)}' if paired else f'unpaired {_interval_text(diff)}')
      lines.append(f'- {task} ({obs}, {setting}): {source}: {better} > {worse}; here, on '
                   f'{_seed_list(seeds)}, '
                   f'{100 * a["rate"]:.0f}% [{100 * a["ci_low"]:.0f}, {100 * a["ci_high"]:.0f}] vs '
                   f'{100 * b["rate"]:.0f}% [{100 * b["ci_low"]:.0f}, {100 * b["ci_high"]:.0f}], '
                   f'difference {interval} points: {verdicts[result]}.')
    for other, name in (('sft', 'SFT'), ('habc_v', 'HABC-V')):
      a, b, seeds = on_shared_seeds(runs.get('habc'), runs.get(other))
      if a is None or b is None or None in (a['mean_success_length'], b['mean_success_length']):
        continue
      line = (f'- {task} ({obs}, {setting}): successful episodes {a["mean_success_length"]:.1f} '
              f'control steps after HABC vs {b["mean_success_length"]:.1f} for {name}, on '
              f'{_seed_list(seeds)}')
      diff = length_difference(a, b)
      if diff is None:
        line += ' (means only: too few successes or no spread in the summaries).'
      else:
        shorter = ('HABC shorter (interval below 0)' if diff[2] < 0 else
                   'HABC longer (interval above 0)' if diff[1] > 0 else 'interval includes 0')
        line += (f': difference {diff[0]:+.1f} [{diff[1]:+.1f}, {diff[2]:+.1f}] (Welch 95%, '
                 f'{a["successes"]} and {b["successes"]} successful episodes): {shorter}.')
      lines.append(line)
  if not lines:
    return ['No comparison possible yet: no task has two of the compared methods.', '']
  return lines + ['', '"paper": the ordering of the paper\'s numbers; "design": an ablation the '
                  'paper\'s table does not report, expected from the method\'s design; '
                  '"control": against the same number of updates on the demonstrations alone '
                  '(not in the paper), which the method should beat if its gain comes from the '
                  'online data.', '',
                  'How to read this: each ordering is judged by the 95% interval of the '
                  'difference in success rate (Newcombe\'s hybrid score interval, built from the '
                  'two Wilson intervals); an interval that includes 0 does not show that the '
                  'methods are equal. Every evaluation uses the same initial states, so where '
                  'both cells have per-trial outcomes the difference is paired on the (seed, '
                  'initial state) and judged by Newcombe\'s interval for paired data, which '
                  'takes the agreement of the two methods on an initial state into account; the '
                  'unpaired interval is given next to it. The lengths of successful episodes '
                  'are compared with a Welch t interval. The intervals are not corrected for '
                  'the number of comparisons: among twenty true nulls about one interval '
                  'excludes 0 by chance. '
                  'Each comparison pools only the seeds both methods have (the paper-form '
                  'table above pools each cell over its own seeds). '
                  'Pooling treats trials of different seeds as independent, which understates the '
                  'uncertainty when seeds differ a lot (see the per-seed rates). Absolute rates '
                  'are not comparable with the real robot; the orderings and gains are.', '']


def gate_section(groups: dict) -> list[str]:
  lines = ['## Mean g_t on successful autonomous transitions', '']
  rows = []
  for key, runs in groups.items():
    if key[1] not in GATED:
      continue
    g = gate_on_successes(runs)
    if g is None:
      continue
    paper = PAPER_GATE[TASKS.index(key[0])] if key[0] in TASKS and key[1] == 'habc' else None
    seeds = f'{g["train_seeds"]} seed' + ('s' if g['train_seeds'] != 1 else '')
    train = '-' if g['train'] is None else f'{g["train"]:.3f} ({seeds})'
    of = (f', {g["workdir_seeds"]} of {len(runs)} seeds'
          if g['workdir_seeds'] and g['workdir_seeds'] < len(runs) else '')
    samples = ('-' if g['samples'] is None else
               f'{g["samples"]:.3f} ({g["sample_windows"]} windows{of})')
    logged = ('-' if g['logged'] is None else
              f'{g["logged"]:.3f} ({g["logged_windows"]} windows{of})')
    rows.append(f'| {key[0]} | {key[1]} | {key[2]}, {key[3]} | {train} | {logged} | {samples} | '
                f'{"-" if paper is None else f"{paper:.2f}"} |')
  if rows:
    lines += ['| task | method | obs, setting | summary (learner mean), last round | logged '
              'batches, last round | gate samples, last round | paper |',
              '|---|---|---|---|---|---|---|'] + rows + ['']
  else:
    lines += ['No gate values in the summaries present.', '']
  lines += ['Where the numbers come from: "learner mean" is `gate_success_mean` of the last round '
            'in the sweep summary (the pipeline\'s `train/gate/success_mean`: the mean over the '
            'round\'s learner steps of the gate on successful autonomous windows of the batch, '
            'including any warm-up steps (g fixed at 1), over the steps whose batch held such a '
            'window; summaries from runs before session 2 divided by every step and read low). '
            '"Logged batches" weighs the batch '
            'means in the workdir\'s `logs/metrics.jsonl` (every `log_every` steps of the last '
            'round) by their number of such windows, leaving empty batches out. "Gate samples" is '
            'the mean over the SUCCESS windows of the workdir\'s `logs/gates_round_<last>.npz` '
            '(g_t of a few batches after the round, before normalisation). The last two are read '
            'from the workdirs with `--workdirs`, else from the `workdir_gate` that '
            '`experiments/sweep.py` keeps in each summary (summaries written before session 10 '
            'lack it unless `sweep.py --add_outcomes` found the workdir); "k of n seeds" says how '
            'many of the cell\'s runs they cover.', '']
  return lines


def commands_section(results: str) -> list[str]:
  """How the summaries here are made (one sweep per task; resumable, one run per process)."""
  methods = ','.join(METHODS)
  return [
      '## Commands', '',
      'Each sweep runs (method, seed) pairs one `launch.py` process at a time and can be stopped '
      'and started again (finished runs are skipped, an unfinished one resumes); `--methods` and '
      '`--seeds` cut it into pieces of the length wanted.', '', '```',
      '# state observations, default preset, per task (fold, pouch, insert):',
      f'python experiments/sweep.py --task=fold --methods={methods} --seeds=0,1,2 '
      f'--results={results}',
      '# vision confirmation on fold (separate folders, so file names do not collide; on a '
      '2-core CPU one vision run of SFT took about 2.4 hours beside other runs):',
      f'python experiments/sweep.py --task=fold --methods=sft,habc_v,habc --seeds=0,1,2 '
      f'--results={results}/vision --root=workdirs/sweep/vision --config.obs=vision '
      '"--config.cameras=(\'top\',\'wrist_left\',\'wrist_right\')"',
      '# fold from an SFT stage whose rate falls to the online rate over its last 1,000 updates '
      '(its own cells: the summaries record the changed key):',
      f'python experiments/sweep.py --task=fold --methods={methods},sft_continued --seeds=0,1,2 '
      f'--results={results}/sft_anneal --root=workdirs/sweep/sft_anneal '
      '--config.learner.sft_anneal_steps=1000',
      '# paper scale (200 demos, 100 rollouts a round, 50 evaluation trials, vision):',
      f'python experiments/sweep.py --task=fold --preset=paper --methods={methods} '
      f'--seeds=0,1,2 --results={results}/paper --root=workdirs/sweep/paper',
      '# this document:',
      f'python -m habc.results --results={results} --workdirs=workdirs/sweep',
      '```', '']


# Document .........................................................................................
def build(results: str, out: str, workdirs: str | None = None, min_seeds: int = 3) -> str:
  """Writes ``out`` (and plots under ``<results>/plots``) from ``results``; returns the text."""
  raw, problems = load_summaries(results)
  summaries = [attach_workdir(s, workdirs) for s in raw]
  groups, duplicates = group_runs(summaries)
  problems += duplicates
  groups, sft_notes = add_sft_fallback(groups)
  out_dir = os.path.dirname(os.path.abspath(out))
  plots_dir = os.path.join(results, 'plots')
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  lines = ['# Results', '',
           f'Generated {now} by `python -m habc.results --results={results} --out={out}'
           f'{" --workdirs=" + workdirs if workdirs else ""}` from {len(summaries)} run '
           f'summar{"y" if len(summaries) == 1 else "ies"} in `{results}/`. Do not edit by hand: '
           f'write the interpretation in `{results}/notes.md`.', '']
  if not summaries:
    lines += ['**Nothing has been run yet**: no run summaries in '
              f'`{results}/`. Run e.g. `python experiments/sweep.py --task=fold '
              '--methods=sft,habc_v,habc --seeds=0,1,2`, then this command again.', '']
  if problems:
    lines += ['Files skipped or partly used:', ''] + [f'- {p}' for p in problems] + ['']

  table, missing, num_cells = paper_table(groups)
  lines += ['## Success rate (paper form)', '',
            'Final round of each run (the SFT row is the round-0 evaluation), pooled over the '
            'seeds of the cell: rate, Wilson 95% interval, number of seeds and of evaluation '
            'trials. Cells may hold different seeds; the gains and orderings in "Honest reading" '
            'compare methods on the seeds they share. Provenance and per-seed rates are in the '
            'table after it.', ''] + table + ['']
  if missing:
    lines += [f'Missing cells ({len(missing)} of {num_cells}): '
              f'{", ".join(missing)}.', '']
  if sft_notes:
    lines += ['SFT cells without sft runs:', ''] + [f'- {n}' for n in sft_notes] + ['']
  disagree = round0_disagreements(groups)
  if disagree:
    lines += ['Round 0 (the SFT checkpoint) differs between methods of the same seed, so the '
              'methods did not start from one checkpoint:', '']
    lines += [f'- {d}' for d in disagree] + ['']
  few = [f'{k[0]}/{k[1]} ({k[2]}, {k[3]}): {len(v)}' for k, v in groups.items()
         if len(v) < min_seeds]
  if few:
    lines += [f'Fewer than {min_seeds} seeds: {"; ".join(few)}.', '']
  if groups:
    lines += ['### Per cell: provenance and seeds', ''] + detail_table(groups) + [''] + [
        'obs marked "inferred from preset" is a guess (`paper` is vision, the others state): the '
        'summaries do not record the observation mode; pass `--workdirs` to read it from each '
        'run\'s config.json.', '']

  lines += ['## Per round', '']
  if groups:
    lines += ['Success pooled over the seeds that have the round, Wilson 95%; "len": mean control '
              'steps of successful evaluation episodes; "interv.": collected episodes with an '
              'operator intervention (all seeds).', ''] + round_tables(groups)
    for task in TASKS:
      for path in plot_task(groups, task, plots_dir):
        rel = os.path.relpath(path, out_dir)
        lines.append(f'![{os.path.splitext(os.path.basename(path))[0]}]({rel})')
    lines.append('')
  else:
    lines += ['No rounds to plot.', '']

  lines += gate_section(groups)
  lines += benchmark_section(os.path.join(results, 'bench'))
  lines += memory_section(groups)
  lines += commands_section(results)
  lines += ['## Honest reading', ''] + paper_reference() + [
      '### What the runs here show (generated)', ''] + gain_table(groups) + reading_lines(groups)
  notes = os.path.join(results, 'notes.md')
  lines += ['### Notes (hand-written, `' + notes + '`)', '']
  if os.path.exists(notes):
    with open(notes) as f:
      lines += [f.read().rstrip('\n'), '']
  else:
    lines += [f'None yet: write `{notes}`; it is included here verbatim.', '']
  text = '\n'.join(lines)
  os.makedirs(out_dir, exist_ok=True)
  with open(out, 'w') as f:
    f.write(text)
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m habc.results', description=__doc__.split('\n')[0])
  p.add_argument('--results', default='results',
                 help='folder of run summaries (and bench/, notes.md)')
  p.add_argument('--out', default='RESULTS.md')
  p.add_argument('--workdirs', default='',
                 help='root of the sweep workdirs (optional: observation mode, and gate '
                 'readings for summaries without workdir_gate)')
  p.add_argument('--min_seeds', type=int, default=3, help='cells with fewer seeds are listed')
  p.add_argument('--run_benchmarks', action='store_true',
                 help='first run every python -m habc.bench benchmark (minutes) into '
                 '<results>/bench')
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  if args.run_benchmarks:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in benchmark_names():
      print(f'results: running python -m habc.bench {name} ...', flush=True)
      path = run_benchmark(name, benchmark_command(name), os.path.join(args.results, 'bench'),
                           cwd=root)
      print(f'results: wrote {path}', flush=True)
  build(args.results, args.out, args.workdirs or None, args.min_seeds)
  print(f'results: wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
