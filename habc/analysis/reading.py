"""The honest reading of RESULTS.md: the paper's reference, the gains against it, what the
numbers do and do not show, the gate, and the commands that regenerate everything."""

from __future__ import annotations

from habc.analysis.summaries import (
    CLAIMS, CONTROLS, GATED, METHODS, PAPER_APPROX, PAPER_GATE, PAPER_SUCCESS, TASKS)
from habc.analysis.statistics import (
    _bounds_text, _interval_text, _seed_list, _settings, compare, gate_on_successes,
    length_difference, on_shared_seeds, paired_compare)


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
      '# issue 26\'s study (100 rollouts a round, 100 evaluation trials, state; into '
      'results/study, its own section above; one run per process, each resumable; habc_ir and '
      'habc_extra_round start from habc\'s finished run):',
      'python experiments/sweep.py --task=insert --preset=study --seeds=0,1,2 '
      f'--methods={methods},sft_continued,habc_mc,habc_extra_round',
      'python experiments/sweep.py --task=pouch --preset=study --seeds=0,1,2 '
      f'--methods={methods},sft_continued,habc_mc,habc_extra_round',
      'python experiments/sweep.py --task=fold --preset=study --seeds=0,1,2 '
      '--methods=sft,sft_continued,habc_v,habc,habc_ir,habc_naive_credit,habc_extra_round',
      '# its efficiency runs, from an SFT policy that already succeeds often (400 demonstrations, '
      '20,000 SFT updates: 69% on tuning seed 101):',
      'python experiments/sweep.py --task=insert --preset=study --seeds=0,1,2 '
      '--methods=sft,habc_v,habc --root=workdirs/sweep/study_efficiency '
      f'--results={results}/study_efficiency --config.data.num_demos=400 '
      '--config.pipeline.sft_steps=20000',
      '# its credit variant: the operator takes over every episode heading to failure, 16 control '
      'steps after noticing (the policy\'s damage before a rescue is longer):',
      'python experiments/sweep.py --task=insert --preset=study --seeds=0 '
      '--methods=sft,habc,habc_naive_credit --root=workdirs/sweep/study_credit '
      f'--results={results}/study_credit --config.operator.takeover_prob=1.0 '
      '--config.operator.reaction_steps=16',
      '# its second credit variant: the paper\'s operator (half of the failing episodes), 16 '
      'control steps after noticing (failures stay in the data):',
      'python experiments/sweep.py --task=insert --preset=study --seeds=0 '
      '--methods=sft,habc,habc_naive_credit --root=workdirs/sweep/study_credit2 '
      f'--results={results}/study_credit2 --config.operator.reaction_steps=16',
      '# paper scale (200 demos, 100 rollouts a round, 50 evaluation trials, vision):',
      f'python experiments/sweep.py --task=fold --preset=paper --methods={methods} '
      f'--seeds=0,1,2 --results={results}/paper --root=workdirs/sweep/paper',
      '# this document:',
      f'python -m habc.results --results={results} --workdirs=workdirs/sweep',
      '```', '']
