"""habc.analysis.study: the study's section of RESULTS.md from synthetic run summaries."""

import numpy as np
import pytest

from habc.analysis import study
from habc.analysis.statistics import group_runs

STATES = list(range(100, 110))


def run(method, seed, success, length, rounds=3, **extra):
  """A study summary whose last round evaluated STATES with these per-trial results."""
  final = {'round': 0 if method == 'sft' else rounds, 'episodes': len(STATES),
           'successes': success.count('1'), 'success_rate': success.count('1') / len(STATES),
           'eval_outcomes': {'seeds': STATES, 'success': success, 'length': length}}
  return dict({'task': 'insert', 'method': method, 'seed': seed, 'preset': 'study',
               'settings': {}, 'obs': 'state', 'rounds': [final], 'seconds': 600.0}, **extra)


def test_paired_lengths_use_only_states_both_succeeded_on():
  a = [run('habc', 0, '1111100000', [50, 52, 54, 56, 58] + [180] * 5)]
  b = [run('habc_v', 0, '1110010000', [60, 60, 60, 180, 180, 61] + [180] * 4)]
  out = study.paired_lengths(a, b)
  assert out['pairs'] == 3  # States 100-102.
  diffs = np.array([50 - 60, 52 - 60, 54 - 60], float)
  assert out['mean'] == pytest.approx(diffs.mean())
  half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
  assert (out['low'], out['high']) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
  assert (out['a_mean'], out['b_mean']) == pytest.approx((52.0, 60.0))
  assert out['per_seed'] == {0: (pytest.approx(diffs.mean()), 3)}


def test_paired_lengths_need_per_trial_lengths():
  a = [run('habc', 0, '1111100000', [50] * 10)]
  b = [run('habc_v', 0, '1111100000', [60] * 10)]
  del b[0]['rounds'][0]['eval_outcomes']['length']
  assert study.paired_lengths(a, b) is None


def test_section_has_the_comparison_efficiency_credit_and_critic(tmp_path):
  credit_row = {'round': 1, 'episodes': 100, 'with_intervention': 30, 'rescued': 12,
                'pre_windows': 200, 'pre_windows_rescued': 90,
                'pre_labels': {'unlabelled': 200}, 'pre_labels_other': {}}
  critic = [{'round': 3, 'holdout': {'auc': 0.8, 'brier': 0.15, 'r2': 0.7, 'mae': 1.0,
                                     'saturated': 0.05}}]
  summaries = [
      run('sft', 0, '1000000000', [60] + [180] * 9),
      run('sft_continued', 0, '1100000000', [60, 60] + [180] * 8),
      run('habc_v', 0, '1110000000', [60, 60, 60] + [180] * 7),
      run('habc_naive_credit', 0, '1100000000', [60, 60] + [180] * 8,
          credit=[dict(credit_row, pre_labels={'success': 150, 'failure': 50})]),
      run('habc', 0, '1111100000', [50, 50, 52, 55, 60] + [180] * 5, credit=[credit_row],
          critic=critic, critic_curve={'1': {'0': {'auc': 0.6, 'r2': 0.1},
                                             '250': {'auc': 0.8, 'r2': 0.7}}}),
      # RECAP's critic has no viability head: only its saturation is recorded.
      run('imit_recap', 0, '1100000000', [60, 60] + [180] * 8,
          critic=[{'round': 3, 'holdout': {'saturated': 0.4}}]),
  ]
  groups, problems = group_runs(summaries)
  assert not problems
  lines = study.study_section(groups, str(tmp_path / 'plots'), str(tmp_path))
  text = '\n'.join(lines)
  assert '### insert (state, study)' in text
  habc_row = next(line for line in lines if line.startswith('| habc |'))
  assert '50.0% (5/10) | 50 |' in habc_row and '+30.0' in habc_row  # 5 vs 2 of the control's.
  assert '| habc_naive_credit | 100 | 30 | 12 | 200 (90 in rescues) | failure 50, success 150 |' \
      in text
  assert 'minus naive credit (habc_naive_credit), paired 95% (pairs): +30.0' in text
  assert "HABC-V's 60.0: HABC minus HABC-V -9.3" in text  # (50+50+52)/3 - 60.
  assert '(paired t, 95%); per seed 0: -9.3 (3). The paper' in text
  assert '| habc | 100 | 30 | 12 | 200 (90 in rescues) | unlabelled 200 |' in text
  assert '| habc | holdout | 1 | 0.800 |' in text
  assert '| imit_recap | holdout |' not in text  # Only the methods with HABC's two heads.
  assert (tmp_path / 'plots' / 'study_critic_curve_insert_study.png').exists()


def test_no_study_runs_no_section(tmp_path):
  default = run('habc', 0, '1' * 10, [50] * 10)
  default['preset'] = 'default'
  groups, _ = group_runs([default])
  assert study.study_section(groups, str(tmp_path), str(tmp_path)) == []


def test_critic_table_takes_the_median_over_seeds():
  """One runaway efficiency head (R^2 -1,040, as habc_naive_credit's round 1 on insert seed 0)
  does not swamp the other seeds' numbers."""
  def critic(r2, auc):
    return [{'round': 3, 'holdout': {'auc': auc, 'brier': 0.2, 'r2': r2, 'mae': 2.0,
                                     'saturated': 0.1}}]
  summaries = [run('habc', seed, '1100000000', [60, 60] + [180] * 8, critic=critic(r2, auc))
               for seed, r2, auc in ((0, 0.5, 0.7), (1, 0.6, 0.8), (2, -1040.0, 0.9))]
  groups, problems = group_runs(summaries)
  assert not problems
  text = '\n'.join(study.critic_table(groups, 'insert', 'state', 'study'))
  assert '| habc | holdout | 3 | 0.800 | 0.200 | 0.500 | 2.00 | 10% |' in text


def test_seed_differences_take_each_seed_as_one_draw():
  a = [run('habc', 0, '1111100000', [50] * 10), run('habc', 1, '1110000000', [50] * 10),
       run('habc', 2, '1111111000', [50] * 10)]
  b = [run('habc_v', 0, '1100000000', [50] * 10), run('habc_v', 1, '1110000000', [50] * 10),
       run('habc_v', 3, '1' * 10, [50] * 10)]  # Seed 3 has no partner; seed 2 none either.
  out = study.seed_differences(a, b)
  assert out['seeds'] == [0, 1]
  assert out['per_seed'] == pytest.approx([30.0, 0.0])
  half = 12.706204736174698 * np.std([30.0, 0.0], ddof=1) / np.sqrt(2)  # t(0.975, 1)
  assert (out['mean'], out['low'], out['high']) == pytest.approx((15.0, 15.0 - half, 15.0 + half))
  one = study.seed_differences(a[:1], b[:1])
  assert one['per_seed'] == pytest.approx([30.0]) and one['low'] is None
  assert study.seed_differences(a[2:], b[:1]) is None
  groups, _ = group_runs(a + b)
  table = study.seed_table(groups, 'insert', 'state', 'study')
  interval = f'+15.0 [{15 - half:+.1f}, {15 + half:+.1f}]'
  assert table[2] == f'| habc minus habc_v | 0,1 | +30 / +0 | {interval} |'


def test_seed_table_separates_the_reweighting_from_the_extra_round():
  """habc_ir minus habc mixes one more round with IR; minus habc_extra_round (the same round,
  reweighting off) is IR on its own, and habc_extra_round minus habc the round on its own."""
  groups, _ = group_runs([run('habc', 0, '1111000000', [50] * 10),
                          run('habc_ir', 0, '1100000000', [50] * 10, rounds=4),
                          run('habc_extra_round', 0, '1110000000', [50] * 10, rounds=4)])
  table = study.seed_table(groups, 'insert', 'state', 'study')
  assert '| habc_ir minus habc | 0 | -20 | - |' in table
  assert '| habc_ir minus habc_extra_round | 0 | -10 | - |' in table
  assert '| habc_extra_round minus habc | 0 | -10 | - |' in table
