"""The statistics of RESULTS.md: runs grouped into cells (task, method, setting), pooled
success with Wilson intervals, paired comparisons on shared seeds, trajectory lengths, the gate."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from scipy import stats

from habc.run import evaluation
from habc.analysis.summaries import METHODS, ORDER, SUCCESS_KIND, TASKS, _read_json


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


def final_row(run: dict) -> dict | None:
  """The round a run is compared on: round 0 for SFT, else its last evaluated round."""
  if not run['rounds']:
    return None
  return _round(run, 0) if run['method'] == 'sft' else max(run['rounds'], key=lambda r: r['round'])


def final_cell(runs: list[dict]) -> dict | None:
  """The cell of the paper's table: ``final_row`` of each run, pooled."""
  chosen = [(run, final_row(run)) for run in runs]
  chosen = [(run, row) for run, row in chosen if row is not None]
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
