"""RESULTS.md generation (habc.analysis.results) from fabricated sweep summaries in a tmp folder."""

import json
import os
import sys

import numpy as np
import pytest
from scipy import stats

from habc.run import evaluation
from habc.analysis import benchmarks, results, statistics


def _round(r, successes, episodes=20, length=80.0, gate=None, interventions=None):
  row = {'round': r, 'episodes': episodes, 'successes': successes,
         'success_rate': successes / episodes, 'ci_low': 0.0, 'ci_high': 1.0,
         'mean_success_length': length if successes else None}
  if interventions is not None:
    row['episodes_with_intervention'] = interventions
  if gate is not None:
    row['gate_success_mean'] = gate
  return row


def _write(folder, task, method, seed, rounds, preset='default', **extra):
  summary = {'task': task, 'method': method, 'seed': seed, 'preset': preset, 'rounds': rounds,
             'seconds': 600.0, **extra}
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f'{task}_{method}_{seed}.json'), 'w') as f:
    json.dump(summary, f)


@pytest.fixture
def some_runs(tmp_path):
  """fold: sft (3 seeds, round 0 only), habc (2 seeds, 3 rounds); pouch: habc (1 seed)."""
  res = tmp_path / 'results'
  for seed, k in enumerate((5, 7, 6)):
    _write(res, 'fold', 'sft', seed, [_round(0, k)])
  for seed, ks in enumerate(((6, 10, 14, 16), (5, 9, 13, 19))):
    _write(res, 'fold', 'habc', seed,
           [_round(r, k, length=90.0 - 5 * r + seed, gate=None if r == 0 else 0.5 + 0.1 * seed,
                   interventions=None if r == 0 else 4) for r, k in enumerate(ks)])
  _write(res, 'pouch', 'habc', 0, [_round(0, 3), _round(1, 0)])
  return res


def test_pool_matches_wilson_on_summed_counts():
  rows = [_round(3, 16, length=80.0), _round(3, 19, length=90.0), _round(3, 0)]
  cell = statistics.pool(rows)
  low, high = evaluation.wilson_interval(35, 60)
  assert (cell['successes'], cell['trials']) == (35, 60)
  assert cell['ci_low'] == pytest.approx(low) and cell['ci_high'] == pytest.approx(high)
  assert cell['per_seed'] == pytest.approx([0.8, 0.95, 0.0])
  # Length pooled over successful episodes: (16 * 80 + 19 * 90) / 35.
  assert cell['mean_success_length'] == pytest.approx((16 * 80 + 19 * 90) / 35)


def test_length_spread_and_welch_interval_match_the_raw_episodes():
  rng = np.random.default_rng(0)
  seeds_a = [rng.normal(60, 8, 12), rng.normal(70, 5, 9)]  # Two seeds' successful lengths.
  seeds_b = [rng.normal(75, 10, 7), rng.normal(66, 6, 11)]

  def rows(groups):
    return [dict(_round(3, len(x), length=float(x.mean())), std_success_length=float(x.std()))
            for x in groups]

  a, b = statistics.pool(rows(seeds_a)), statistics.pool(rows(seeds_b))
  all_a, all_b = np.concatenate(seeds_a), np.concatenate(seeds_b)
  assert a['success_length_sd'] == pytest.approx(all_a.std(ddof=1))
  diff, low, high = statistics.length_difference(a, b)
  ci = stats.ttest_ind(all_a, all_b, equal_var=False).confidence_interval(0.95)
  assert diff == pytest.approx(all_a.mean() - all_b.mean())
  assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))
  # Without a spread (an old summary) or with one success there is no interval.
  no_sd = statistics.pool([_round(3, 5)])
  assert no_sd['success_length_sd'] is None and statistics.length_difference(no_sd, b) is None


def test_table_has_pooled_final_round_and_missing_cells(some_runs, tmp_path):
  out = tmp_path / 'RESULTS.md'
  text = results.build(str(some_runs), str(out))
  assert out.read_text() == text
  table = text.split('## Success rate (paper form)')[1].split('### Per cell')[0]
  rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
          for line in table.splitlines() if line.startswith('| ') and '---' not in line}
  # habc on fold: final round (3) of both seeds, 16 + 19 of 40.
  low, high = evaluation.wilson_interval(35, 40)
  assert rows['habc'][0] == (f'{100 * 35 / 40:.1f}% [{100 * low:.0f}, {100 * high:.0f}], '
                             '2 seeds, n=40')
  # SFT: round 0 of the sft runs, 18 of 60.
  low, high = evaluation.wilson_interval(18, 60)
  assert rows['sft (round 0)'][0].startswith(f'30.0% [{100 * low:.0f}, {100 * high:.0f}], '
                                            '3 seeds')
  assert rows['habc'][1].startswith('0.0% [0, ')  # pouch: its last round, 0 of 20.
  assert rows['habc'][2] == '**missing**'
  assert rows['imit_dagger'] == ['**missing**'] * 3
  # pouch has no sft run: its SFT cell is habc's round 0 (3 of 20), and says so.
  assert rows['sft (round 0)'][1] == '15.0% [5, 36], 1 seed, n=20'
  assert 'pouch/sft (state, default): no sft runs; taken from round 0 of habc seed 0' in text
  assert 'Missing cells (20 of 24)' in text and 'insert/habc' in text
  # Round 0 of fold seed 0 is 5/20 for sft but 6/20 for habc: not one SFT checkpoint.
  assert 'fold (state, default) seed 0: round 0 is sft 5/20, habc 6/20' in text
  assert 'fold/habc (state, default): 2' in text  # fewer than 3 seeds
  assert '80 / 95' in text  # per-seed rates of fold/habc
  assert 'inferred from preset' in text


def test_plots_written_and_linked(some_runs, tmp_path):
  out = tmp_path / 'RESULTS.md'
  text = results.build(str(some_runs), str(out))
  plots = some_runs / 'plots'
  for name in ('success_fold.png', 'lengths_fold.png', 'success_pouch.png', 'lengths_pouch.png'):
    path = plots / name
    assert path.exists() and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert f'](results/plots/{name})' in text
  assert not (plots / 'success_insert.png').exists()


def test_plots_have_one_panel_per_setting(some_runs, tmp_path):
  """Runs of another setting of fold get a panel of their own instead of sharing one."""
  import matplotlib.image
  changed = {'learner.sft_anneal_steps': 1000}
  _write(some_runs / 'sft_anneal', 'fold', 'habc', 0, [_round(0, 8), _round(1, 12)],
         settings=changed)
  results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  width = {task: matplotlib.image.imread(some_runs / 'plots' / f'success_{task}.png').shape[1]
           for task in ('fold', 'pouch')}
  # Two panels (default, annealed) against one: at 100 dpi, 3.6 inches more.
  assert width['fold'] - width['pouch'] == pytest.approx(360, abs=2)


def test_gate_and_reading_sections(some_runs, tmp_path):
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  gate = text.split('## Mean g_t')[1].split('## Benchmarks')[0]
  assert '| fold | habc | state, default | 0.550 (2 seeds) | - | - | 0.76 |' in gate
  reading = text.split('### What the runs here show')[1]
  # 35/40 against 12/40 (the shared seeds 0-1): the difference interval is above 0.
  assert 'fold (state, default): paper: habc > sft' in reading
  assert 'agrees (difference interval above 0)' in reading
  assert '| HABC+IR | 92 | 88 | 38 |' in text
  # On the seeds habc and sft share (0, 1): 35/40 - 12/40; the paper's 60 - 36.
  assert '| fold | state, default | habc | 0,1 | 30 -> 88 | +57 | - | +55 / +60 | +24 |' in reading


def test_control_runs_are_listed_but_never_missing(some_runs, tmp_path):
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  # Not run: no row, not counted as missing (only the commands section names it).
  before, commands = text.split('## Commands')
  assert 'sft_continued' not in before + commands.split('## Honest reading')[1]
  _write(some_runs, 'fold', 'sft_continued', 0, [_round(0, 5), _round(3, 4)])
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  table = text.split('## Success rate (paper form)')[1].split('### Per cell')[0]
  rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
          for line in table.splitlines() if line.startswith('| ') and '---' not in line}
  assert list(rows)[-1] == 'sft_continued'
  assert rows['sft_continued'][0].startswith('20.0% [') and rows['sft_continued'][1] == 'not run'
  assert 'Missing cells (20 of 24)' in text
  reading = text.split('### What the runs here show')[1]
  # Its gain over SFT on seed 0 (4/20 against 5/20), with no paper value.
  assert '| fold | state, default | sft_continued | 0 | 25 -> 20 | -5 | - | -5 | - |' in reading
  # HABC against the control on their shared seed 0: 16/20 against 4/20.
  d = evaluation.difference_interval(16, 20, 4, 20)
  assert ('fold (state, default): control: habc > sft_continued; here, on seed 0, 80% [' in reading
          and f'unpaired {100 * d[0]:+.1f} [{100 * d[1]:+.1f}, ' in reading)
  assert 'habc_v > sft_continued' not in reading  # habc_v was not run.


def test_comparisons_use_only_the_seeds_both_methods_have(tmp_path):
  res = tmp_path / 'results'
  # SFT seed 2 is far better than seeds 0-1; habc has only seeds 0-1 and gains 10 points on each.
  for seed, k in enumerate((4, 4, 20)):
    _write(res, 'insert', 'sft', seed, [_round(0, k)])
  for seed in (0, 1):
    _write(res, 'insert', 'habc', seed, [_round(0, 4), _round(3, 6)])
  _write(res, 'insert', 'habc_v', 5, [_round(0, 4), _round(3, 6)])  # No seed shared with habc.
  text = results.build(str(res), str(tmp_path / 'RESULTS.md'))
  reading = text.split('### What the runs here show')[1]
  # Pooled over all of SFT's seeds the gain would be 12/40 - 28/60 = -17 points.
  assert ('| insert | state, default | habc | 0,1 | 20 -> 30 | +10 | - | +10 / +10 | +10 |'
          in reading)
  assert 'paper: habc > sft; here, on seeds 0,1, 30% [' in reading
  d = evaluation.difference_interval(12, 40, 8, 40)
  assert (f'difference unpaired {100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] points: '
          'not shown (difference interval includes 0)') in reading
  assert 'habc > habc_v' not in reading
  assert 'for SFT, on seeds 0,1 (means only' in reading  # The fabricated rows have no SD.
  a, b, seeds = statistics.on_shared_seeds(
      [{'seed': 0, 'method': 'habc', 'rounds': [_round(3, 6)]}],
      [{'seed': 1, 'method': 'habc_v', 'rounds': [_round(3, 6)]}])
  assert (a, b, seeds) == (None, None, [])


def _gate_workdir(workdir, config, rows, tail=''):
  """A fake workdir of fold habc seed 0 after round 3 (sft_steps 100, 10 steps per round): gate
  samples with two SUCCESS windows (0.2, 0.6) and ``rows`` of (step, gate mean, windows) logged."""
  (workdir / 'logs').mkdir(parents=True)
  np.savez(workdir / 'logs' / 'gates_round_003.npz', gate=np.array([0.2, 0.6, 1.0, 1.9]),
           kind=np.array([1, 1, 2, 0]))
  (workdir / 'config.json').write_text(json.dumps(
      dict(config, pipeline={'sft_steps': 100, 'steps_per_round': 10})))
  (workdir / 'logs' / 'metrics.jsonl').write_text(''.join(
      json.dumps({'step': s, 'prefix': 'train', 'gate/success_mean': g, 'count/success': n}) + '\n'
      for s, g, n in rows) + tail)


def test_gate_from_workdir_samples(some_runs, tmp_path):
  # Round 3 is steps 121..130; batches without a successful window (count 0, NaN) do not count.
  _gate_workdir(tmp_path / 'sweep' / 'fold_habc_0', {'obs': 'vision'},
                [(120, 0.9, 5), (125, 0.5, 1), (126, float('nan'), 0), (130, 0.8, 3),
                 (131, 0.1, 9)], tail='{"step": 12')
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'),
                       workdirs=str(tmp_path / 'sweep'))
  # Seed 0 is a vision cell of its own (below), so its readings cover the whole cell.
  assert '0.400 (2 windows)' in text
  assert f'{(0.5 * 1 + 0.8 * 3) / 4:.3f} (4 windows)' in text
  # Seed 0's mode now comes from its config: vision and state runs are separate cells.
  assert 'vision (workdir config)' in text


def test_gate_readings_kept_in_summaries_stand_in_for_missing_workdirs(some_runs, tmp_path):
  workdir = tmp_path / 'sweep' / 'fold_habc_0'
  _gate_workdir(workdir, {}, [(120, 0.9, 5), (125, 0.5, 1), (130, 0.8, 3)])
  kept = statistics.workdir_gate(str(workdir), [0, 1, 2, 3])
  assert kept == {'round': 3, 'logged_sum': pytest.approx(2.9), 'logged_windows': 4,
                  'sample_sum': pytest.approx(0.8), 'sample_windows': 2}
  assert statistics.workdir_gate(str(workdir), [0]) is None  # SFT only: no online round.
  assert statistics.workdir_gate(str(tmp_path / 'nowhere'), [0, 1]) is None
  # One seed's workdir alone: the cell says its readings cover 1 of its 2 seeds.
  text = results.build(str(some_runs), str(tmp_path / 'R1.md'), workdirs=str(tmp_path / 'sweep'))
  assert '0.400 (2 windows, 1 of 2 seeds)' in text
  assert '0.725 (4 windows, 1 of 2 seeds)' in text
  # The workdir gone, the summary's copy gives the same row; a second seed's copy is pooled in.
  second = {'round': 3, 'logged_sum': 1.1, 'logged_windows': 1, 'sample_sum': 3.2,
            'sample_windows': 2}
  for seed, gate in ((0, kept), (1, second)):
    path = some_runs / f'fold_habc_{seed}.json'
    path.write_text(json.dumps(dict(json.loads(path.read_text()), workdir_gate=gate)))
  text = results.build(str(some_runs), str(tmp_path / 'R2.md'))
  assert f'{(0.8 + 3.2) / 4:.3f} (4 windows) | 0.76 |' in text
  assert f'| {(2.9 + 1.1) / 5:.3f} (5 windows) |' in text


def test_benchmarks_and_notes_embedded(some_runs, tmp_path):
  bench = some_runs / 'bench'
  bench.mkdir()
  (bench / 'learner.txt').write_text('$ python -m habc.bench learner\n'
                                     '# measured 2026-11-25 12:00 UTC on box (2 cores)\n'
                                     'HABC step / SFT step = 1.10x\n')
  (bench / 'extra.txt').write_text('no header here\n')
  (some_runs / 'notes.md').write_text('The fold gain is real; pouch is not run.\n')
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  section = text.split('## Benchmarks')[1].split('## Honest reading')[0]
  assert 'Command: `python -m habc.bench learner`' in section
  assert 'measured 2026-11-25 12:00 UTC on box (2 cores)' in section
  assert 'HABC step / SFT step = 1.10x' in section
  assert 'no header here' in section and 'file time' in section
  assert 'Not measured yet: data, envs' in section  # (and any newer ones the dispatcher lists)
  assert section.index('### learner') < section.index('### extra')
  assert 'The fold gain is real; pouch is not run.' in text


def test_run_benchmark_saves_command_and_output(tmp_path):
  path = benchmarks.run_benchmark('fake', [sys.executable, '-c', 'print("rate 42")'],
                               str(tmp_path / 'bench'))
  info = benchmarks.read_benchmark(path)
  assert info['command'] == 'python -c print("rate 42")'
  assert info['body'] == 'rate 42' and 'exit code 0' in info['measured']


def test_no_runs_gives_valid_document(tmp_path):
  out = tmp_path / 'RESULTS.md'
  assert results.main(['prog', f'--results={tmp_path / "empty"}', f'--out={out}']) == 0
  text = out.read_text()
  assert 'Nothing has been run yet' in text
  assert 'Missing cells (24 of 24)' in text
  assert 'No comparison possible yet' in text
  assert not (tmp_path / 'empty' / 'plots').exists()


def test_bad_files_are_reported_not_fatal(some_runs, tmp_path):
  (some_runs / 'broken.json').write_text('{not json')
  (some_runs / 'other.json').write_text('{"hello": 1}')
  _write(some_runs, 'insert', 'habc', 0, [])  # Finished without any evaluation.
  _write(some_runs, 'fold', 'my_new_method', 0, [_round(0, 4), _round(1, 8)])
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  assert 'insert/habc' in text.split('Missing cells')[1].split('\n')[0]
  assert '| my_new_method | 40.0% [' in text  # Methods outside the paper's list get a row too.
  assert 'broken.json: not readable JSON' in text
  assert 'other.json: not a run summary' in text
  assert '2 seeds, n=40' in text


def test_subfolder_runs_are_not_pooled_with_the_same_seed(some_runs, tmp_path):
  # The vision confirmation of fold/habc seed 0 lives in results/vision/ under the same file name.
  _write(some_runs / 'vision', 'fold', 'habc', 0, [_round(0, 2), _round(1, 3)])
  _write(some_runs / 'other', 'fold', 'habc', 1, [_round(0, 2), _round(1, 3)])
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  row = [line for line in text.splitlines() if line.startswith('| habc |')][0]
  assert '87.5% [' in row and '(state, default)' in row  # 35/40 as before, state
  assert '15.0% [' in row and '(vision, default)' in row  # 3/20 vision, on its own
  assert 'vision (folder name)' in text
  assert 'other/fold_habc_1.json: same task, method, seed' in text


def test_peak_memory_table_from_the_summaries(tmp_path):
  res = tmp_path / 'results'
  _write(res, 'fold', 'habc', 0, [_round(0, 1), _round(1, 2)], peak_rss_mb=1234.4, obs='state')
  _write(res, 'fold', 'sft', 0, [_round(0, 1)])  # An older summary without the field.
  text = results.build(str(res), str(tmp_path / 'RESULTS.md'))
  section = text[text.index('### Peak memory of the pipeline'):]
  assert '| fold | habc | state | 0 | 1234 | 1 |' in section
  assert '| fold | sft |' not in section.split('###')[1]


def _with_outcomes(row, success, seeds=None):
  seeds = list(range(1000, 1000 + len(success))) if seeds is None else seeds
  return dict(row, eval_outcomes={'seeds': seeds, 'success': success})


def test_comparisons_pair_trials_on_the_initial_state(tmp_path):
  res = tmp_path / 'results'
  # 20 initial states per seed. habc wins on 3 states per seed where SFT failed and loses on
  # none; both win on 4. The unpaired interval cannot show the +15 points; the paired one can.
  sft = '1111' + '0' * 16
  habc = '1111' + '111' + '0' * 13
  for seed in (0, 1):
    _write(res, 'fold', 'sft', seed, [_with_outcomes(_round(0, 4), sft)])
    _write(res, 'fold', 'habc', seed, [_with_outcomes(_round(0, 4), sft),
                                      _with_outcomes(_round(3, 7), habc)])
  # habc_v's trials are on other initial states: it can only be compared unpaired.
  _write(res, 'fold', 'habc_v', 0, [_round(0, 4), _with_outcomes(_round(3, 7), habc,
                                                                  seeds=list(range(20)))])
  _write(res, 'fold', 'habc_v', 1, [_round(0, 4), _with_outcomes(_round(3, 7), habc)])
  text = results.build(str(res), str(tmp_path / 'RESULTS.md'))
  reading = text.split('### What the runs here show')[1]
  paired = evaluation.paired_difference_interval(8, 6, 0, 26)
  unpaired = evaluation.difference_interval(14, 40, 8, 40)
  assert unpaired[1] < 0 < paired[1]
  line = next(x for x in reading.splitlines() if 'paper: habc > sft' in x)
  assert (f'paired on 40 initial states {100 * paired[0]:+.1f} [{100 * paired[1]:+.1f}, '
          f'{100 * paired[2]:+.1f}], unpaired {100 * unpaired[0]:+.1f} '
          f'[{100 * unpaired[1]:+.1f}, {100 * unpaired[2]:+.1f}] points: agrees') in line
  assert (f'| fold | state, default | habc | 0,1 | 20 -> 35 | +15 | [{100 * paired[1]:+.1f}, '
          f'{100 * paired[2]:+.1f}] |') in reading
  line = next(x for x in reading.splitlines() if 'paper: habc_v > sft' in x)
  assert 'difference unpaired' in line and 'paired on' not in line
  # A cell that repeats an initial state of a seed is not paired either.
  cell = statistics.final_cell([{'seed': 0, 'method': 'habc', 'seconds': None, 'rounds': [
      _with_outcomes(_round(3, 2, episodes=3), '110', seeds=[5, 5, 6])]}])
  assert cell['outcomes'] is None and statistics.paired_compare(cell, cell) is None


def test_superseded_and_diagnostic_runs_are_not_comparison_cells(some_runs, tmp_path):
  for folder in ('superseded', 'diagnostics'):
    _write(some_runs / folder, 'insert', 'habc', 0, [_round(0, 2), _round(1, 3)])
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  assert 'insert/habc' in text.split('Missing cells')[1].split('\n')[0]


def test_runs_of_another_setting_are_their_own_cells(some_runs, tmp_path):
  # An annealed SFT stage on the same seeds: same file names in a subfolder, obs from the summary.
  changed = {'learner.sft_anneal_steps': 2000}
  for seed in (0, 1):
    _write(some_runs / 'sft_anneal', 'fold', 'habc', seed, [_round(0, 12), _round(1, 2)],
           obs='state', settings=changed)
  _write(some_runs / 'sft_anneal', 'fold', 'sft', 0, [_round(0, 12)], obs='state',
         settings=changed)
  text = results.build(str(some_runs), str(tmp_path / 'RESULTS.md'))
  assert 'same task, method, seed' not in text  # Not taken for duplicates of the default runs.
  row = [line for line in text.splitlines() if line.startswith('| habc |')][0]
  assert '87.5% [' in row and '(state, default)' in row  # The default cell is unchanged: 35/40.
  assert '10.0% [' in row and '(state, default; learner.sft_anneal_steps=2000)' in row  # 4/40
  assert '#### fold (state, default; learner.sft_anneal_steps=2000)' in text
  # Gains are taken against the SFT of the same setting only: 60% there, 30% in the default.
  gains = text.split('Change over SFT')[1]
  assert '| fold | state, default; learner.sft_anneal_steps=2000 | habc | 0 | 60 -> 10 | -50 |' \
      in gains
  assert statistics.setting_label({'preset': 'smoke', 'settings': {'b.y': 'x', 'a.z': (1, 2)}}) == \
      'smoke; a.z=[1, 2]; b.y=x'
  assert statistics.setting_label({'preset': 'default'}) == 'default'
