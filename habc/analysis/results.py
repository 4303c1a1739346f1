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
import os
import sys

from habc.analysis.summaries import TASKS, attach_workdir, load_summaries
from habc.analysis.statistics import add_sft_fallback, group_runs, round0_disagreements
from habc.analysis.tables import detail_table, paper_table, round_tables
from habc.analysis.plots import plot_task
from habc.analysis.benchmarks import (
    benchmark_command, benchmark_names, benchmark_section, memory_section, run_benchmark)
from habc.analysis.study import study_section
from habc.analysis.reading import (
    commands_section, gain_table, gate_section, paper_reference, reading_lines)


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

  lines += study_section(groups, plots_dir, out_dir)
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
