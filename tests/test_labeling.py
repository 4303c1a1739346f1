"""Credit assignment and windows on hand-built episodes."""

import numpy as np
import pytest

from habc import labeling
from habc.labeling import SampleKind


def flags(spec: str) -> np.ndarray:
  """'pppHHpp' -> policy/operator flags."""
  return np.array([c == 'H' for c in spec])


def labelled_steps(credit) -> str:
  return ''.join('L' if m else '.' for m in credit.viability_mask)


def test_autonomous_success_labels_every_step():
  c = labeling.assign_credit(flags('pppppp'), True)
  assert labelled_steps(c) == 'LLLLLL'
  np.testing.assert_array_equal(c.outcome, np.ones(6, np.float32))
  assert c.efficiency_mask.all()
  assert not c.is_intervention.any()


def test_autonomous_failure_labels_zero_and_no_efficiency():
  c = labeling.assign_credit(flags('pppp'), False)
  assert labelled_steps(c) == 'LLLL'
  np.testing.assert_array_equal(c.outcome, np.zeros(4, np.float32))
  assert not c.efficiency_mask.any()


def test_one_intervention_labels_only_the_suffix():
  c = labeling.assign_credit(flags('pppHHHpp'), True)
  assert labelled_steps(c) == '......LL'
  assert np.isnan(c.outcome[:6]).all() and (c.outcome[6:] == 1).all()
  # Efficiency: the labelled suffix and the operator steps of a successful episode.
  assert ''.join('E' if m else '.' for m in c.efficiency_mask) == '...EEEEE'


def test_several_interventions_use_the_last_one():
  c = labeling.assign_credit(flags('ppHHppHpppp'), False)
  assert labelled_steps(c) == '.......LLLL'
  assert (c.outcome[7:] == 0).all()
  assert not c.efficiency_mask.any()  # Failed episode: no efficiency targets at all.


def test_intervention_at_the_very_start():
  c = labeling.assign_credit(flags('HHpppp'), True)
  assert labelled_steps(c) == '..LLLL'


def test_intervention_at_the_very_end_leaves_nothing_labelled():
  c = labeling.assign_credit(flags('ppppHH'), True)
  assert labelled_steps(c) == '......'
  assert np.isnan(c.outcome).all()
  assert ''.join('E' if m else '.' for m in c.efficiency_mask) == '....EE'


def test_operator_only_episode():
  c = labeling.assign_credit(flags('HHHH'), True)
  assert not c.viability_mask.any()
  assert c.efficiency_mask.all()


def test_naive_mode_labels_every_policy_step_across_boundaries():
  c = labeling.assign_credit(flags('ppHHpp'), False, naive=True)
  assert labelled_steps(c) == 'LL..LL'
  assert (c.outcome[[0, 1, 4, 5]] == 0).all()


def test_bad_input_is_explained():
  with pytest.raises(ValueError, match='1-D'):
    labeling.assign_credit(np.zeros((2, 3), bool), True)
  with pytest.raises(ValueError, match='binary'):
    labeling.assign_credit(flags('pp'), 0.5)
  with pytest.raises(ValueError, match='booleans'):
    labeling.assign_credit(np.array([0, 2]), True)


def test_segments():
  assert labeling.segments(flags('ppHHp')) == [(0, 2, False), (2, 4, True), (4, 5, False)]
  assert labeling.segments(flags('')) == []


def test_windows_kinds_with_an_intervention():
  # 12 policy steps, 10 operator steps, 8 policy steps, final observation step.
  spec = 'p' * 12 + 'H' * 10 + 'p' * 8 + 'p'
  w = labeling.make_windows(flags(spec), True, horizon=10, next_offset=2, min_human_steps=10)
  assert len(w.anchor) == len(spec) - 1
  kinds = w.kind
  # Only the window anchored exactly on the intervention's start holds 10 operator steps.
  assert kinds[12] == SampleKind.INTERVENTION
  assert (kinds[:12] == SampleKind.UNLABELLED).all()
  assert (kinds[13:22] == SampleKind.UNLABELLED).all()  # Mixed windows: no label crosses.
  assert (kinds[22:] == SampleKind.SUCCESS).all()
  assert (w.viability_mask == (kinds == SampleKind.SUCCESS)).all()
  assert w.efficiency_mask[12] and w.efficiency_mask[22:].all() and not w.efficiency_mask[:12].any()
  # Chunks are clipped at the last action and masked beyond it.
  last = len(spec) - 2
  assert w.action_index.max() == last
  assert w.action_mask[-1].sum() == 1 and w.action_mask[0].all()
  assert w.next_index[-1] == len(spec) - 1 and w.next_is_terminal[-2:].all()
  assert not w.next_is_terminal[:-2].any()
  np.testing.assert_allclose(w.steps_to_end[0], (len(spec) - 1) / 2)


def test_intervention_window_near_the_end_uses_the_valid_steps():
  spec = 'p' * 6 + 'HHHH' + 'H'  # Operator finishes; fewer than 10 steps remain in the window.
  w = labeling.make_windows(flags(spec), True, horizon=8, min_human_steps=10)
  assert (w.kind[6:] == SampleKind.INTERVENTION).all()


def test_timeout_is_not_terminal_and_demo_windows_are_sft():
  w = labeling.make_windows(flags('ppppp'), False, horizon=3)
  assert not w.next_is_terminal.any()
  assert (w.kind == SampleKind.FAILURE).all() and (w.outcome == 0).all()
  d = labeling.make_windows(flags('HHHHH'), True, horizon=3, is_demo=True)
  assert (d.kind == SampleKind.SFT).all() and not d.viability_mask.any()


def test_naive_windows_label_pre_intervention_steps():
  spec = 'p' * 12 + 'H' * 12 + 'p' * 4
  honest = labeling.make_windows(flags(spec), False, horizon=4, min_human_steps=4)
  naive = labeling.make_windows(flags(spec), False, horizon=4, min_human_steps=4, naive=True)
  assert (honest.kind[:9] == SampleKind.UNLABELLED).all()
  assert (naive.kind[:9] == SampleKind.FAILURE).all()
  assert (naive.kind[12:21] == SampleKind.INTERVENTION).all()


def test_windows_reject_degenerate_episodes():
  with pytest.raises(ValueError, match='at least 2 steps'):
    labeling.make_windows(flags('p'), True, horizon=4)
