r"""Runs several methods and seeds on one task and writes one comparison table.

  python experiments/sweep.py --task=fold --methods=sft,habc_v,habc --seeds=0,1,2
  python experiments/sweep.py --task=insert --preset=smoke --methods=habc,habc_v --seeds=0

Each (method, seed) is one ``launch.py`` run in its own process and workdir
(``<root>/<task>_<method>_<seed>``), so a sweep stopped at any point continues where it was when
started again: finished runs are skipped, an unfinished one resumes. After each run a small JSON
summary goes to ``--results`` (``<task>_<method>_<seed>.json``), and the table
(``<results>/comparison_<task>.md``) is rebuilt from every summary found there, so the table can
also be regenerated alone with ``--table_only``. Extra ``--config.*`` overrides are passed on to
every run.
"""

from __future__ import annotations

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

from habc import evaluation  # noqa: E402  (numpy only)

def _define_flags() -> None:
  """The script's flags (defined only when run as a script, so importing this module for its
  table functions defines no absl flags)."""
  flags.DEFINE_string('task', 'fold', 'Task of every run.')
  flags.DEFINE_list('methods', ['sft', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir'],
                    'Experiment files (experiments/<name>.py).')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Run seeds.')
  flags.DEFINE_enum('preset', 'default', ['smoke', 'default', 'paper'], 'Size of every run.')
  flags.DEFINE_string('root', 'workdirs/sweep', 'Where the runs\' workdirs go.')
  flags.DEFINE_string('results', 'results', 'Where the per-run JSON summaries and the table go.')
  flags.DEFINE_bool('table_only', False, 'Only rebuild the table from the summaries there.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')


FLAGS = flags.FLAGS


def run_name(task: str, method: str, seed: int) -> str:
  return f'{task}_{method}_{seed}'


def small_summary(summary: dict, seconds: float | None) -> dict:
  """What a run contributes to the comparison: per-round evaluation and collection figures."""
  rounds = []
  for r in summary.get('rounds', []):
    ev = r.get('eval', {})
    row = {'round': r['round'], 'episodes': ev.get('episodes'), 'successes': ev.get('successes'),
           'success_rate': ev.get('success_rate'), 'ci_low': ev.get('ci_low'),
           'ci_high': ev.get('ci_high'), 'mean_success_length': ev.get('mean_success_length')}
    if 'collect' in r:
      row['collect_successes'] = r['collect'].get('successes')
      row['episodes_with_intervention'] = r['collect'].get('episodes_with_intervention')
    gates = [v for k, v in r.get('train', {}).items() if k.startswith('gate/success_mean')]
    if gates:
      row['gate_success_mean'] = gates[0]
    rounds.append(row)
  return {'task': summary.get('task'), 'method': summary.get('method'), 'seed': summary.get('seed'),
          'preset': summary.get('preset'), 'rounds': rounds, 'seconds': seconds}


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
  with open(path, 'w') as f:
    f.write('\n'.join(text))
  return path


def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  unknown = [a for a in argv[1:] if not a.startswith('--config.')]
  if unknown:
    raise app.UsageError(f'Unexpected arguments: {unknown}')
  os.makedirs(FLAGS.results, exist_ok=True)
  if not FLAGS.table_only:
    for method in FLAGS.methods:
      if not os.path.exists(os.path.join(ROOT, 'experiments', f'{method}.py')):
        raise app.UsageError(f'No experiment file experiments/{method}.py.')
    for seed in [int(s) for s in FLAGS.seeds]:
      for method in FLAGS.methods:
        name = run_name(FLAGS.task, method, seed)
        out = os.path.join(FLAGS.results, f'{name}.json')
        if os.path.exists(out):
          print(f'sweep: {name} done already ({out})')
          continue
        workdir = os.path.join(FLAGS.root, name)
        cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), f'--task={FLAGS.task}',
               f'--experiment={os.path.join(ROOT, "experiments", method + ".py")}',
               f'--seed={seed}', f'--preset={FLAGS.preset}', f'--workdir={workdir}'] + overrides
        print('sweep:', ' '.join(cmd), flush=True)
        if FLAGS.dry_run:
          continue
        start = time.time()
        subprocess.run(cmd, check=True)
        with open(os.path.join(workdir, 'summary.json')) as f:
          summary = json.load(f)
        with open(out, 'w') as f:
          json.dump(small_summary(summary, time.time() - start), f, indent=1)
        print(f'sweep: wrote {write_table(FLAGS.results, FLAGS.task)}', flush=True)
  path = write_table(FLAGS.results, FLAGS.task)
  if os.path.exists(path):
    print(open(path).read())


if __name__ == '__main__':
  # --config.* overrides are for launch.py; keep them away from this script's flag parser.
  passthrough = [a for a in sys.argv[1:] if a.startswith('--config.')]
  rest = [a for a in sys.argv if not a.startswith('--config.')]
  _define_flags()
  app.run(lambda argv: main(argv + passthrough), argv=rest)
