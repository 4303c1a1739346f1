r"""Runs several methods and seeds on one task and writes one comparison table.

  python experiments/sweep.py --task=fold --methods=sft,habc_v,habc --seeds=0,1,2
  python experiments/sweep.py --task=insert --preset=smoke --methods=habc,habc_v --seeds=0

Each (method, seed) is one ``launch.py`` run in its own process and workdir
(``<root>/<task>_<method>_<seed>``), so a sweep stopped at any point continues where it was when
started again: finished runs are skipped, an unfinished one resumes. With ``--share_sft`` (the
default) the ``sft`` run of each seed goes first, and every other method's workdir starts from its
demonstrations, SFT checkpoint and round-0 evaluation (``habc.run.sft_share``): all methods of a
seed start from the same policy, and the SFT stage runs once instead of once per method. With
``--share_rounds`` (the default) ``habc_ir`` and ``habc_extra_round``, whose first rounds are
HABC's, start from the finished ``habc`` run of their seed when there is one, and run only their
last round (their summary's ``rounds_source`` says so, and their ``seconds`` count that round
alone). After each run a small JSON summary goes to ``--results``
(``<task>_<method>_<seed>.json``; its ``seconds`` add up every piece of a run that was stopped and
resumed; its ``settings`` are the config keys
the run changed from its experiment file and preset, so ``habc.analysis.results`` keeps runs of
other settings apart), and the table (``<results>/comparison_<task>.md``) is rebuilt from every
summary found there, so the table can also be regenerated alone with ``--table_only``. Extra
``--config.*`` overrides are passed on to every run.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from habc.run import evaluation  # noqa: E402  (numpy only)
from habc.run import pipeline  # noqa: E402  (no JAX or TensorFlow at import)
from habc.run import paths as paths_lib  # noqa: E402
from habc.analysis import statistics as habc_statistics  # noqa: E402  (numpy and scipy only)

def _define_flags() -> None:
  """The script's flags (defined only when run as a script, so importing this module for its
  table functions defines no absl flags)."""
  flags.DEFINE_string('task', 'fold', 'Task of every run.')
  flags.DEFINE_list('methods', ['sft', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir',
                                'habc_naive_credit', 'awr_single_scalar'],
                    'Experiment files (experiments/<name>.py); the default is the whole comparison '
                    '(issue 7).')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Run seeds.')
  flags.DEFINE_enum('preset', 'default', ['smoke', 'default', 'study', 'paper'],
                    'Size of every run.')
  flags.DEFINE_string('root', None, 'Where the runs\' workdirs go; default workdirs/sweep, and '
                      'workdirs/sweep/<preset> for a preset other than default.')
  flags.DEFINE_string('results', None, 'Where the per-run JSON summaries and the table go; '
                      'default results (the committed comparison), and '
                      'workdirs/sweep/<preset>/results for a preset other than default (kept '
                      'out of RESULTS.md).')
  flags.DEFINE_bool('table_only', False, 'Only rebuild the table from the summaries there.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
  flags.DEFINE_bool('add_outcomes', False, 'Run nothing: add the per-trial evaluation outcomes '
                    'and the settings (config keys changed from the experiment file) from '
                    '<root>/<run> to every summary in --results that lacks them (older '
                    'summaries have only the counts).')
  flags.DEFINE_bool('share_sft', True, 'Run sft first for each seed and start every other '
                    'method from its SFT checkpoint (the same SFT policy for every method).')
  flags.DEFINE_bool('share_rounds', True, 'Start a method whose first rounds are another '
                    'method\'s (habc_ir: habc\'s) from that method\'s finished run of the same '
                    'seed, when it exists here: only the rounds after it run '
                    '(habc.run.sft_share.seed_from_rounds).')
  flags.DEFINE_integer('eval_episodes', None, 'Evaluation trials per checkpoint (passed as '
                       '--config.eval.episodes unless an override sets it); default 50, and the '
                       'preset\'s own (100) with --preset=study.')


FLAGS = flags.FLAGS


# Methods whose first rounds are another method's, bit for bit: habc_ir is HABC for HABC's
# rounds, then its intervention-reweighting round; habc_extra_round is the same with that round's
# reweighting off. Their configs differ from HABC's only in habc.run.sft_share.ROUND_FREE_KEYS; on
# insert seed 0 of the study habc and habc_ir wrote byte-identical evaluation and collection logs
# for rounds 1-3.
ROUND_SOURCES = {'habc_ir': 'habc', 'habc_extra_round': 'habc'}


def run_name(task: str, method: str, seed: int) -> str:
  return f'{task}_{method}_{seed}'


def default_dirs(preset: str) -> tuple[str, str]:
  """(root, results) when the flags do not say: the default preset's are the committed
  comparison's; another preset's are its own, so a smoke sweep never mixes with (or is skipped
  because of) the default one."""
  if preset == 'default':
    return 'workdirs/sweep', 'results'
  if preset == 'study':  # Issue 26's comparison: committed, apart from the default-scale one.
    return os.path.join('workdirs', 'sweep', 'study'), os.path.join('results', 'study')
  root = os.path.join('workdirs', 'sweep', preset)
  return root, os.path.join(root, 'results')


def summary_mismatch(path: str, preset: str, settings: dict) -> str | None:
  """Why the summary at ``path`` is not the run this sweep would make (None: it is, skip it).

  Compares the preset and the settings (the config keys changed from the experiment file); a
  summary without ``settings`` (older) counts as the experiment as written.
  """
  try:
    with open(path) as f:
      small = json.load(f)
  except (OSError, ValueError) as e:
    return f'{path} is unreadable ({e})'
  differences = []
  if small.get('preset') != preset:
    differences.append(f'preset {small.get("preset")!r}, not {preset!r}')
  theirs = small.get('settings', {})
  if theirs != settings:
    differences.append(f'settings {theirs or "{}"}, not {settings or "{}"}')
  if differences:
    return f'{path} holds another run: ' + '; '.join(differences)
  return None


# Config keys that are not a setting of the method: the run's identity, the observation mode
# (its own column in RESULTS.md) and the number of evaluation trials (counted in every round).
NOT_SETTINGS = ('task', 'seed', 'obs', 'eval.episodes')


def run_settings(saved: dict, method: str, preset: str, task: str, seed: int) -> dict:
  """The config keys a run changed from its experiment file and preset.

  Args:
    saved: the run's config.json.
  Returns:
    {dotted key: the run's value} for every key (outside ``NOT_SETTINGS`` and the runtime
    section) whose value differs from ``experiments/<method>.py`` at ``preset``; {} for a run of
    the experiment as written.
  """
  default = pipeline.config_identity(experiment_config(method, preset, task, seed, []))
  ran = pipeline.config_identity(saved)
  return {key: ran.get(key, '<absent>') for key in sorted(set(default) | set(ran))
          if key not in NOT_SETTINGS and ran.get(key, '<absent>') != default.get(key, '<absent>')}


def eval_outcomes(workdir: str, r: int) -> dict | None:
  """Per-trial results of round r's evaluation, for comparisons paired on the initial state.

  Returns:
    {'seeds': [environment seed of each trial], 'success': '0110...', 'length': [control steps
    of each trial]} in trial order, or None when the workdir has no evaluation file for that
    round.
  """
  path = paths_lib.Paths(workdir).eval_results(r)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {'seeds': [int(x['seed']) for x in rows],
          'success': ''.join('1' if x['success'] else '0' for x in rows),
          'length': [int(x['length']) for x in rows]}


def add_outcomes(small: dict, workdir: str) -> dict:
  """``small`` with each round's ``eval_outcomes`` from ``workdir`` (rounds without a file are
  left as they are). Checks that the file agrees with the summary's success count."""
  rounds = []
  for row in small['rounds']:
    outcomes = eval_outcomes(workdir, row['round'])
    if outcomes is not None:
      wins = outcomes['success'].count('1')
      if (wins, len(outcomes['seeds'])) != (row.get('successes'), row.get('episodes')):
        raise ValueError(
            f'{workdir}: round {row["round"]} evaluation file has {wins}/{len(outcomes["seeds"])} '
            f'successes, the summary {row.get("successes")}/{row.get("episodes")}; the workdir '
            'does not belong to this summary (pass the --root the run was made under).')
      row = dict(row, eval_outcomes=outcomes)
    rounds.append(row)
  return dict(small, rounds=rounds)


def machine_info(cpuinfo: str = '/proc/cpuinfo') -> dict:
  """The CPU, core count and jax version of this machine.

  Kept in each summary so that two runs of one seed and config that disagree can be checked for
  a change of machine first: XLA compiles for the CPU's instruction sets (AVX-512 or not), so
  float results may differ in the last bits between CPUs, and over thousands of updates that can
  flip evaluation trials (results/notes.md, session 12).
  """
  from importlib import metadata
  import platform
  cpu, flags_line = None, ''
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and cpu is None:
          cpu = value.strip()
        elif key.strip() == 'flags' and not flags_line:
          flags_line = value
  except OSError:
    pass
  cpu = cpu or platform.processor() or platform.machine()
  try:
    jax_version = metadata.version('jax')
  except metadata.PackageNotFoundError:
    jax_version = None
  return {'cpu': cpu, 'avx512f': 'avx512f' in flags_line.split(), 'cores': os.cpu_count(),
          'jax': jax_version}


def small_summary(summary: dict, seconds: float | None, config: dict | None = None,
                  sft_source: str | None = None, workdir: str | None = None,
                  machine: dict | None = None) -> dict:
  """What a run contributes to the comparison: per-round evaluation and collection figures (with
  the per-trial outcomes and the workdir's gate readings (``habc.analysis.results.workdir_gate``)
  when ``workdir`` is given), the observation mode and settings (with
  ``config``, the run's config.json), wall-clock seconds, peak memory, where its SFT
  checkpoint came from and the machine it ran on (``machine_info``)."""
  rounds, peak_mb = [], []
  for r in summary.get('rounds', []):
    ev = r.get('eval', {})
    row = {'round': r['round'], 'episodes': ev.get('episodes'), 'successes': ev.get('successes'),
           'success_rate': ev.get('success_rate'), 'ci_low': ev.get('ci_low'),
           'ci_high': ev.get('ci_high'), 'mean_success_length': ev.get('mean_success_length'),
           'std_success_length': ev.get('std_success_length')}
    if r.get('resources', {}).get('rss_total_mb') is not None:
      peak_mb.append(r['resources']['rss_total_mb'])
    if 'collect' in r:
      row['collect_successes'] = r['collect'].get('successes')
      row['episodes_with_intervention'] = r['collect'].get('episodes_with_intervention')
    gates = [v for k, v in r.get('train', {}).items() if k.startswith('gate/success_mean')]
    if gates:
      row['gate_success_mean'] = gates[0]
    rounds.append(row)
  out = {'task': summary.get('task'), 'method': summary.get('method'), 'seed': summary.get('seed'),
         'preset': summary.get('preset'), 'rounds': rounds, 'seconds': seconds}
  if config:
    out['obs'] = config.get('obs')
    out['eval_seed_offset'] = config.get('eval', {}).get('seed_offset')
    out['settings'] = run_settings(config, out['method'], out['preset'], out['task'], out['seed'])
  if peak_mb:
    out['peak_rss_mb'] = max(peak_mb)
  if sft_source:
    out['sft_source'] = sft_source
  if machine:
    out['machine'] = machine
  if not workdir:
    return out
  gate = habc_statistics.workdir_gate(workdir, [row['round'] for row in rounds])
  if gate:
    out['workdir_gate'] = gate
  critic = critic_headlines(workdir)
  if critic:
    out['critic'] = critic
  from habc.run import critic_diagnostics
  curves = critic_diagnostics.load_curves(workdir)
  if curves:
    out['critic_curve'] = {str(r): {str(k): v for k, v in points.items()}
                           for r, points in curves.items()}
  if config:
    from habc.analysis import credit
    rows = credit.workdir_credit(workdir, config, [row['round'] for row in rounds if row['round']])
    if rows:
      out['credit'] = rows
  return add_outcomes(out, workdir)


def critic_headlines(workdir: str) -> list[dict]:
  """Per round, the held-out critic diagnostics' headline numbers (habc.run.critic_diagnostics)."""
  from habc.run import critic_diagnostics
  rows = []
  for data in critic_diagnostics.load_run(workdir):
    row = {'round': data['round']}
    for split in critic_diagnostics.SPLITS:
      if split in data:
        row[split] = critic_diagnostics.headline(data[split])
    rows.append(row)
  return rows


def critic_table(summaries: list[dict]) -> str:
  """Markdown: per method, the held-out critic numbers of the last round that has them (the next
  round's rollouts where measured, else the held-out split), averaged over seeds; '' if none."""
  by_method: dict[str, list[dict]] = {}
  for s in summaries:
    for row in reversed(s.get('critic', [])):
      h = row.get('next_round') or row.get('holdout')
      if h:
        by_method.setdefault(s['method'], []).append(dict(h, round=row['round']))
        break
  if not by_method:
    return ''

  def mean(rows, key, scale=1.0, digits=3):
    values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
    return f'{scale * sum(values) / len(values):.{digits}f}' if values else '-'

  lines = ['| method | runs | round | AUC | Brier | R^2 (V_e) | saturated g (%) | '
           'non-zero w, online (%) | ESS/B, online (%) |', '|---|---|---|---|---|---|---|---|---|']
  for method, rows in by_method.items():
    lines.append(f'| {method} | {len(rows)} | {max(r["round"] for r in rows)} | '
                 f'{mean(rows, "auc")} | {mean(rows, "brier")} | {mean(rows, "r2")} | '
                 f'{mean(rows, "saturated", 100, 1)} | '
                 f'{mean(rows, "online_nonzero_fraction", 100, 1)} | '
                 f'{mean(rows, "online_ess_fraction", 100, 1)} |')
  return '\n'.join(lines)


def experiment_config(method: str, preset: str, task: str, seed: int, overrides: list[str]):
  """The config ``launch.py`` builds for one run (experiment file, preset, overrides, task, seed).

  The '--config.<key>=<value>' overrides go through ml_collections' ``config_flags``, the parser
  of launch.py's ``--config`` flag (on a private set of flags): values take their key's type, an
  unknown key raises KeyError or AttributeError, a bad value absl.flags.IllegalFlagValueError.
  Then launch.py's own ``build_config`` sets the task and seed (and a hardware task's station
  settings) and checks the config as a run's start-up does (launch.UsageError).
  """
  import launch  # Defines no flags on import (``launch.define_flags`` runs in its command).
  from ml_collections import config_flags
  experiment = os.path.join(ROOT, 'experiments', method + '.py')
  argv = ['sweep', f'--config={experiment}:{preset}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'The experiment file and preset.',
                                  flag_values=values, sys_argv=argv)
  values(argv)
  return launch.build_config(values.config, task=task, seed=seed, experiment=experiment)


def comparison_table(summaries: list[dict]) -> str:
  """Markdown: one row per method; success per round pooled over seeds with Wilson intervals."""
  by_method: dict[str, list[dict]] = {}
  for s in summaries:
    by_method.setdefault(s['method'], []).append(s)
  max_round = max((len(s['rounds']) for s in summaries), default=0) - 1
  header = ['method', 'seeds'] + [f'round {r}' if r else 'SFT (round 0)'
                                  for r in range(max_round + 1)] + ['length (last round)']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for method, runs in by_method.items():
    cells = [method, ','.join(str(s['seed']) for s in sorted(runs, key=lambda s: s['seed']))]
    last_lengths = []
    for r in range(max_round + 1):
      rows = [s['rounds'][r] for s in runs if len(s['rounds']) > r]
      if not rows:
        cells.append('-')
        continue
      k = sum(row['successes'] for row in rows)
      n = sum(row['episodes'] for row in rows)
      lo, hi = evaluation.wilson_interval(k, n)
      cells.append(f'{100 * k / n:.1f}% [{100 * lo:.0f}, {100 * hi:.0f}]')
    for s in runs:
      length = s['rounds'][-1].get('mean_success_length') if s['rounds'] else None
      if length is not None:
        last_lengths.append(length)
    cells.append(f'{sum(last_lengths) / len(last_lengths):.1f}' if last_lengths else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def write_table(results: str, task: str) -> str:
  summaries = []
  for name in sorted(os.listdir(results)) if os.path.isdir(results) else []:
    if name.startswith(f'{task}_') and name.endswith('.json'):
      with open(os.path.join(results, name)) as f:
        summaries.append(json.load(f))
  path = os.path.join(results, f'comparison_{task}.md')
  if not summaries:
    return path
  text = [f'# {task}: success rate per round (pooled over seeds, Wilson 95% interval)', '',
          comparison_table(summaries), '',
          'Presets: ' + ', '.join(sorted({str(s.get('preset')) for s in summaries})) + '. '
          'Length: mean control steps of successful evaluation episodes in the last round.', '']
  critic = critic_table(summaries)
  if critic:
    text += ['## Critic on held-out data (last round measured, mean over seeds)', '', critic, '']
  with open(path, 'w') as f:
    f.write('\n'.join(text))
  return path


TIME_FILE = 'sweep_seconds.json'  # In each run's workdir: its wall-clock seconds over every start.


def run_timed(cmd: list[str], workdir: str, tick: float = 30.0) -> float:
  """Runs ``cmd`` to the end and returns the run's wall-clock seconds over all its starts.

  A run stopped and started again is timed as the sum of its pieces: the running total is saved
  in ``<workdir>/sweep_seconds.json`` every ``tick`` seconds, so a stop loses at most ``tick``.
  Raises subprocess.CalledProcessError if the command fails (the time so far is kept).
  """
  path = os.path.join(workdir, TIME_FILE)
  prior = 0.0
  if os.path.exists(path):
    try:
      with open(path) as f:
        prior = float(json.load(f)['seconds'])
    except (ValueError, KeyError, TypeError) as e:
      print(f'sweep: unreadable {path} ({e}); timing this run from 0', flush=True)

  def save(total):
    os.makedirs(workdir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
      json.dump({'seconds': total}, f)
    os.replace(path + '.tmp', path)

  start = time.time()
  proc = subprocess.Popen(cmd)
  try:
    while True:
      try:
        code = proc.wait(timeout=tick)
        break
      except subprocess.TimeoutExpired:
        save(prior + time.time() - start)
  finally:
    if proc.poll() is None:  # Interrupted here: stop the run too (it resumes when started again).
      proc.terminate()
      proc.wait()
    save(prior + time.time() - start)
  if code:
    raise subprocess.CalledProcessError(code, cmd)
  return prior + time.time() - start


def _rounds_source(task: str, method: str, seed: int) -> str | None:
  """The workdir whose rounds ``method`` takes (``ROUND_SOURCES``), when --share_rounds is on, the
  source method's run of this seed has finished here (its summary exists) and ``method``'s own
  workdir has not started on its own; else None."""
  source = ROUND_SOURCES.get(method)
  if not FLAGS.share_rounds or not source:
    return None
  workdir = os.path.join(FLAGS.root, run_name(task, method, seed))
  from habc.run import sft_share
  seeded = os.path.exists(os.path.join(workdir, sft_share.ROUNDS_SOURCE_FILE))
  if os.path.exists(os.path.join(workdir, 'progress.json')) and not seeded:
    return None  # Started from the SFT run: it goes on from there.
  source_dir = os.path.join(FLAGS.root, run_name(task, source, seed))
  done = os.path.exists(os.path.join(FLAGS.results, f'{run_name(task, source, seed)}.json'))
  return source_dir if done and os.path.isdir(source_dir) else None


def _read_sft_source(workdir: str) -> str | None:
  """The SFT run a workdir was seeded from (relative to --root), if any."""
  from habc.run import sft_share
  path = os.path.join(workdir, sft_share.SOURCE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return os.path.relpath(json.load(f)['sft_workdir'], os.path.abspath(FLAGS.root))


def _run(task: str, method: str, seed: int, overrides: list[str], share_sft: bool = False) -> None:
  """One launch.py run (skipped if its summary exists), then its small summary and the table."""
  from habc.run import sft_share
  name = run_name(task, method, seed)
  out = os.path.join(FLAGS.results, f'{name}.json')
  if os.path.exists(out):
    expected = experiment_config(method, FLAGS.preset, task, seed, overrides)
    mismatch = summary_mismatch(out, FLAGS.preset, run_settings(
        expected.to_dict(), method, FLAGS.preset, task, seed))
    if mismatch:
      sys.exit(f'sweep: {mismatch}. Give this sweep its own --results and --root (or delete '
               f'{out} to redo that run).')
    print(f'sweep: {name} done already ({out})')
    return
  workdir = os.path.join(FLAGS.root, name)
  sft_workdir = os.path.join(FLAGS.root, run_name(task, 'sft', seed)) if share_sft else None
  rounds_workdir = _rounds_source(task, method, seed)
  if rounds_workdir:
    print(f'sweep: {name} takes the rounds of {rounds_workdir} and runs the rest', flush=True)
    sft_workdir = None
  cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), f'--task={task}',
         f'--experiment={os.path.join(ROOT, "experiments", method + ".py")}',
         f'--seed={seed}', f'--preset={FLAGS.preset}', f'--workdir={workdir}'] + overrides
  if sft_workdir:
    print(f'sweep: {name} starts from the SFT checkpoint of {sft_workdir}', flush=True)
  print('sweep:', ' '.join(cmd), flush=True)
  if FLAGS.dry_run:
    return
  if rounds_workdir or sft_workdir:
    config = experiment_config(method, FLAGS.preset, task, seed, overrides)
    if rounds_workdir:
      sft_share.seed_from_rounds(rounds_workdir, workdir, config)
    else:
      sft_share.seed_from_sft(sft_workdir, workdir, config)
  seconds = run_timed(cmd, workdir)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  with open(out, 'w') as f:
    small = small_summary(summary, seconds, config,
                          os.path.relpath(sft_workdir, FLAGS.root) if sft_workdir else None,
                          workdir, machine_info())
    if rounds_workdir:
      small['rounds_source'] = os.path.relpath(rounds_workdir, FLAGS.root)
      small['sft_source'] = _read_sft_source(rounds_workdir)
    json.dump(small, f, indent=1)
  print(f'sweep: wrote {write_table(FLAGS.results, FLAGS.task)}', flush=True)


def backfill_outcomes(results: str, root: str) -> list[str]:
  """Adds per-trial outcomes, settings and workdir gate readings to the summaries in ``results``
  that lack them, from their workdirs under ``root`` (``eval/``, ``config.json``, ``logs/``).

  Returns:
    The names of the summaries rewritten; summaries without a workdir are left alone.
  """
  done = []
  for path in sorted(glob.glob(os.path.join(results, '*.json'))):
    with open(path) as f:
      small = json.load(f)
    if not isinstance(small, dict) or 'rounds' not in small:
      continue
    workdir = os.path.join(root, os.path.splitext(os.path.basename(path))[0])
    if not os.path.isdir(workdir):
      continue
    updated = small
    if not all('eval_outcomes' in row for row in small['rounds']):
      updated = add_outcomes(small, workdir)
    config_path = os.path.join(workdir, 'config.json')
    if 'settings' not in updated and os.path.exists(config_path):
      with open(config_path) as f:
        config = json.load(f)
      updated = dict(updated, settings=run_settings(config, small['method'], small['preset'],
                                                    small['task'], small['seed']))
    if 'workdir_gate' not in updated:
      gate = habc_statistics.workdir_gate(workdir, [row['round'] for row in small['rounds']])
      if gate:
        updated = dict(updated, workdir_gate=gate)
    if updated != small:
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(updated, f, indent=1)
      os.replace(tmp, path)
      done.append(os.path.basename(path))
  return done


def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  unknown = [a for a in argv[1:] if not a.startswith('--config.')]
  if unknown:
    raise app.UsageError(f'Unexpected arguments: {unknown}')
  root, results = default_dirs(FLAGS.preset)
  FLAGS.root = FLAGS.root or root
  FLAGS.results = FLAGS.results or results
  os.makedirs(FLAGS.results, exist_ok=True)
  if FLAGS.add_outcomes:
    done = backfill_outcomes(FLAGS.results, FLAGS.root)
    print(f'sweep: added per-trial outcomes or settings to {len(done)} summaries in '
          f'{FLAGS.results}'
          + (f': {", ".join(done)}' if done else ''))
    return
  if not FLAGS.table_only:
    for method in FLAGS.methods:
      if not os.path.exists(os.path.join(ROOT, 'experiments', f'{method}.py')):
        raise app.UsageError(f'No experiment file experiments/{method}.py.')
    # The default-scale comparison's 50 trials, unless the flag says; the study's preset has its
    # own (100).
    trials = FLAGS.eval_episodes or (None if FLAGS.preset == 'study' else 50)
    if trials and not any(a.startswith('--config.eval.episodes=') for a in overrides):
      overrides = overrides + [f'--config.eval.episodes={trials}']
    methods = list(FLAGS.methods)
    if FLAGS.share_sft and 'sft' in methods:
      methods.remove('sft')
    for seed in [int(s) for s in FLAGS.seeds]:
      if FLAGS.share_sft:
        _run(FLAGS.task, 'sft', seed, overrides)
      for method in methods:
        _run(FLAGS.task, method, seed, overrides, share_sft=FLAGS.share_sft)
  path = write_table(FLAGS.results, FLAGS.task)
  if os.path.exists(path):
    print(open(path).read())


if __name__ == '__main__':
  # --config.* overrides are for launch.py; keep them away from this script's flag parser.
  passthrough = [a for a in sys.argv[1:] if a.startswith('--config.')]
  rest = [a for a in sys.argv if not a.startswith('--config.')]
  _define_flags()
  app.run(lambda argv: main(argv + passthrough), argv=rest)
