"""habc.analysis.credit: the operator's rescues and the labels of pre-intervention windows."""

import numpy as np

from habc.analysis import credit

SETTINGS = dict(horizon=4, next_offset=4, min_human_steps=3)


def flags(length, operator_steps=()):
  out = np.zeros(length, bool)
  out[list(operator_steps)] = True
  return out


def test_a_rescue_leaves_its_early_windows_unlabelled_and_naive_credit_calls_them_successes():
  # Policy 0-9, operator 10-19, policy 20-29 (T = 30), then success.
  episode = flags(30, range(10, 20))
  aware = credit.episode_credit(episode, True, naive=False, **SETTINGS)
  naive = credit.episode_credit(episode, True, naive=True, **SETTINGS)
  assert aware['rescued'] and aware['intervened']
  # Autonomous windows anchored before step 10: anchors 0-8 (anchor 8's chunk, steps 8-11, holds
  # 2 operator steps; anchor 9's, steps 9-12, holds 3: an intervention window).
  assert aware['pre_windows'] == naive['pre_windows'] == 9
  assert aware['pre_labels'] == {'unlabelled': 9} == naive['pre_labels_other']
  assert naive['pre_labels'] == {'success': 9} == aware['pre_labels_other']


def test_a_failed_takeover_is_not_a_rescue_and_naive_credit_calls_its_windows_failures():
  episode = flags(30, range(10, 20))
  naive = credit.episode_credit(episode, False, naive=True, **SETTINGS)
  assert naive['intervened'] and not naive['rescued']
  assert naive['pre_labels'] == {'failure': 9}


def test_no_intervention_counts_nothing():
  out = credit.episode_credit(flags(30), True, naive=False, **SETTINGS)
  assert (out['intervened'], out['rescued'], out['pre_windows']) == (False, False, 0)


def test_round_totals():
  def ep(f, success):
    return {'steps': {'is_intervention': f}, 'episode_metadata': {'success': success}}
  episodes = [ep(flags(30, range(10, 20)), True), ep(flags(30, range(10, 20)), False),
              ep(flags(30), True)]
  total = credit.round_credit(episodes, naive=False, **SETTINGS)
  assert (total['episodes'], total['with_intervention'], total['rescued']) == (3, 2, 1)
  assert total['pre_windows'] == 18 and total['pre_windows_rescued'] == 9
  assert total['pre_labels'] == {'unlabelled': 18}
  assert total['pre_labels_other'] == {'success': 9, 'failure': 9}
