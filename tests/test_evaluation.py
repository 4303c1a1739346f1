"""Wilson intervals against known values, episode summaries, frame strips."""

import numpy as np
import pytest

from habc.run import evaluation


@pytest.mark.parametrize('k, n, low, high', [
    (0, 10, 0.0, 0.2775),  # Standard tables (e.g. Newcombe 1998, Table I).
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (36, 100, 0.2727, 0.4576),
    (1, 50, 0.0035, 0.1050),
])
def test_wilson_known_values(k, n, low, high):
  lo, hi = evaluation.wilson_interval(k, n)
  assert lo == pytest.approx(low, abs=1e-4)
  assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_matches_scipy():
  from scipy import stats
  for k, n in [(3, 7), (46, 50), (12, 30), (0, 1)]:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
    lo, hi = evaluation.wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_rejects_bad_counts():
  with pytest.raises(ValueError, match='successes'):
    evaluation.wilson_interval(5, 3)
  assert evaluation.wilson_interval(0, 0) == (0.0, 1.0)


def test_summary_lengths_on_successes_only():
  s = evaluation.summarize([True, False, True, False], [10, 99, 20, 99], [0, 5, 3, 0])
  assert s['success_rate'] == 0.5 and s['successes'] == 2
  assert s['mean_success_length'] == 15.0
  assert s['episodes_with_intervention'] == 2 and s['intervention_steps'] == 8
  assert 'success 50.0%' in evaluation.format_summary(s)
  none = evaluation.summarize([False], [5])
  assert none['mean_success_length'] is None
  assert 'no successes' in evaluation.format_summary(none)


def test_frame_strip_and_png(tmp_path):
  frames = np.stack([np.full((4, 5, 3), i * 40, np.uint8) for i in range(3)])
  strip = evaluation.frame_strip(frames, gap=2)
  assert strip.shape == (4, 3 * 5 + 2 * 2, 3)
  assert (strip[:, 5:7] == 255).all() and (strip[:, 7:12] == 40).all()
  np.testing.assert_array_equal(evaluation.pick_frames(10, 4), [0, 3, 6, 9])
  evaluation.save_png(strip, str(tmp_path / 's.png'), scale=2)
  from PIL import Image
  assert Image.open(tmp_path / 's.png').size == (2 * strip.shape[1], 8)


def test_mean_gate_weights_kinds_by_count_and_leaves_out_sft():
  means = {'gate/success_mean': 1.5, 'count/success': 3.0, 'gate/failure_mean': 0.5,
           'count/failure': 1.0, 'gate/sft_mean': 9.0, 'count/sft': 10.0,
           'gate/unlabelled_mean': float('nan'), 'count/unlabelled': 0.0}
  assert evaluation.mean_gate(means) == pytest.approx((1.5 * 3 + 0.5) / 4)
  assert np.isnan(evaluation.mean_gate({'actor/loss': 1.0}))


@pytest.mark.parametrize('n', [1, 7, 25, 50, 1000])
def test_wilson_bounds_bracket_the_rate_exactly(n):
  """k = 0 gives low exactly 0 and k = n high exactly 1 (a report's error bars need both >= 0)."""
  assert evaluation.wilson_interval(0, n)[0] == 0.0
  assert evaluation.wilson_interval(n, n)[1] == 1.0
  for k in range(n + 1):
    lo, hi = evaluation.wilson_interval(k, n)
    assert lo <= k / n <= hi


def test_success_plot_with_zero_successes(tmp_path):
  from habc.run import report
  ev = {'success_rate': 0.0, 'ci_low': 1.4e-17, 'ci_high': 0.13}  # As older runs saved it.
  report.plot_success([{'round': 0, 'eval': ev}], str(tmp_path / 'success.png'))
  assert (tmp_path / 'success.png').stat().st_size > 0


@pytest.mark.parametrize('k1, n1, k2, n2, low, high', [
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_difference_interval_matches_published_values(k1, n1, k2, n2, low, high):
  d, lo, hi = evaluation.difference_interval(k1, n1, k2, n2)
  assert d == pytest.approx(k1 / n1 - k2 / n2)
  assert (lo, hi) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_difference_interval_rejects_empty_sides():
  with pytest.raises(ValueError, match='trials on both sides'):
    evaluation.difference_interval(0, 0, 3, 10)


def test_paired_interval_without_correlation_is_the_independent_one():
  # both * neither == only_a * only_b: phi = 0, so the paired interval reduces to method 10 for
  # independent samples of the same size.
  paired = evaluation.paired_difference_interval(6, 9, 2, 3)
  independent = evaluation.difference_interval(15, 20, 8, 20)
  assert paired == pytest.approx(independent)


def test_paired_interval_is_narrower_when_outcomes_agree():
  # Same margins (30/100 vs 20/100), strongly agreeing outcomes.
  d, lo, hi = evaluation.paired_difference_interval(20, 10, 0, 70)
  d_ind, lo_ind, hi_ind = evaluation.difference_interval(30, 100, 20, 100)
  assert d == pytest.approx(d_ind) == pytest.approx(0.1)
  assert lo_ind < 0 < lo  # Only the paired interval shows the difference.
  assert hi - lo < hi_ind - lo_ind


def test_paired_interval_extremes_stay_in_range():
  # All of a's successes, none of b's: no spread, so phi = 0 and the independent interval.
  d, lo, hi = evaluation.paired_difference_interval(0, 10, 0, 0)
  assert (d, lo, hi) == pytest.approx(evaluation.difference_interval(10, 10, 0, 10))
  assert 0.5 < lo < 1 and hi == 1
  d, lo, hi = evaluation.paired_difference_interval(0, 0, 0, 10)
  assert d == 0 and -1 <= lo <= 0 <= hi <= 1
  d, lo, hi = evaluation.paired_difference_interval(0, 0, 7, 0)
  assert d == -1 and lo == -1 and hi < 0


def test_paired_interval_covers_at_about_95_percent():
  # Correlated pairs: P(both, only a, only b, neither) = (.15, .15, .05, .65), true difference .1.
  rng = np.random.default_rng(0)
  probs, n, reps = (0.15, 0.15, 0.05, 0.65), 100, 2000
  covered = covered_ind = 0
  for counts in rng.multinomial(n, probs, size=reps):
    _, lo, hi = evaluation.paired_difference_interval(*map(int, counts))
    covered += lo <= 0.1 <= hi
    k_a, k_b = counts[0] + counts[1], counts[0] + counts[2]
    _, lo, hi = evaluation.difference_interval(int(k_a), n, int(k_b), n)
    covered_ind += lo <= 0.1 <= hi
  assert 0.93 <= covered / reps <= 0.975
  assert covered_ind / reps > covered / reps  # The independent interval is conservative here.


def test_paired_interval_rejects_bad_counts():
  with pytest.raises(ValueError, match='non-negative pair counts'):
    evaluation.paired_difference_interval(0, 0, 0, 0)
  with pytest.raises(ValueError, match='non-negative pair counts'):
    evaluation.paired_difference_interval(3, -1, 0, 2)
