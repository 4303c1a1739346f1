"""Held-out critic diagnostics, the critic phase, the held-out split and the stratified sampler."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from habc.run import critic_diagnostics as cd
from habc.data import sampler
from habc.labeling import NUM_KINDS, SampleKind
from habc.learning import learner as learner_lib
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model
from tests.test_learner import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- metrics


def _pairwise_auc(scores, labels):
  pos, neg = scores[labels], scores[~labels]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_of_perfect_reversed_random_and_tied_critics():
  rng = np.random.default_rng(0)
  y = rng.random(4000) < 0.3
  assert cd.roc_auc(y.astype(float), y) == 1.0
  assert cd.roc_auc(-y.astype(float), y) == 0.0
  assert cd.roc_auc(np.full(len(y), 0.7), y) == 0.5
  assert abs(cd.roc_auc(rng.random(len(y)), y) - 0.5) < 0.03
  assert np.isnan(cd.roc_auc([0.1, 0.2], [True, True]))
  # Against the brute-force definition, with ties.
  scores = np.round(rng.random(300), 1)
  labels = rng.random(300) < 0.5
  assert cd.roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels))


def test_brier_and_reliability_of_a_calibrated_critic():
  rng = np.random.default_rng(1)
  p = rng.random(20000)
  y = (rng.random(len(p)) < p).astype(float)
  rel = cd.reliability(p, y, num_bins=10)
  assert sum(rel['count']) == len(p)
  assert rel['ece'] < 0.02
  mp, fp = np.array(rel['mean_prob']), np.array(rel['frac_positive'])
  assert np.all(np.abs(mp - fp) < 0.05)
  assert cd.brier_score(y, y) == 0.0
  # A critic that always says 0.9 on a 10% task is badly calibrated.
  bad = cd.reliability(np.full(1000, 0.9), (np.arange(1000) < 100).astype(float))
  assert bad['ece'] == pytest.approx(0.8)


def test_r2_and_mae_and_saturation_and_ess():
  steps = np.arange(1, 30, dtype=float)
  assert cd.r_squared(-steps, -steps) == 1.0
  assert cd.r_squared(np.full_like(steps, -steps.mean()), -steps) == pytest.approx(0.0)
  assert cd.mean_absolute_error(-steps + 2, -steps) == pytest.approx(2.0)
  assert np.isnan(cd.r_squared([1.0], [1.0]))
  assert cd.saturated_fraction([0.01, 1.0, 1.99, 1.5, 0.04, 0.06, 1.94, 1.96]) == 0.5
  assert cd.effective_sample_size([1, 1, 1, 1]) == 4.0
  assert cd.effective_sample_size([4, 0, 0, 0]) == 1.0
  assert cd.effective_sample_size([0, 0]) == 0.0
  weights = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
  valid = np.array([[True, True, True, False], [True, True, True, True]])
  stats = cd.batch_weight_stats(weights, valid)
  assert stats['nonzero_windows_mean'] == 1.5  # (2 valid non-zero, 1).
  assert stats['nonzero_fraction_mean'] == pytest.approx((2 / 3 + 1 / 4) / 2)
  assert stats['ess_mean'] == pytest.approx((9 / 5 + 1) / 2)
  kind = np.array([[SampleKind.SFT, SampleKind.FAILURE, SampleKind.SUCCESS, SampleKind.SUCCESS],
                   [SampleKind.FAILURE] * 4])
  online = cd.batch_weight_stats(weights, valid, kind)
  assert online['online_windows_mean'] == 3.0  # (2, 4).
  assert online['online_nonzero_fraction_mean'] == pytest.approx((1 / 2 + 1 / 4) / 2)


def _outputs(n=2000, seed=0, perfect=True):
  """Synthetic per-window critic outputs of successful and failed policy windows."""
  rng = np.random.default_rng(seed)
  outcome = (rng.random(n) < 0.5).astype(np.float32)
  steps = rng.integers(1, 40, n).astype(np.float32)
  p_v = outcome if perfect else rng.random(n).astype(np.float32)
  gate = np.concatenate([np.full(n // 4, 0.01), np.full(n - n // 4, 1.2)]).astype(np.float32)
  kind = np.where(outcome > 0.5, SampleKind.SUCCESS, SampleKind.FAILURE).astype(np.int32)
  return {'p_v': p_v, 'efficiency': -steps if perfect else rng.normal(-20, 5, n),
          'a_v': np.zeros(n), 'a_e': np.zeros(n), 'advantage': np.zeros(n), 'gate': gate,
          'kind': kind, 'outcome': outcome, 'viability_mask': np.ones(n, bool),
          'efficiency_mask': outcome > 0.5, 'steps_to_end': steps,
          'episode_success': outcome > 0.5}


def test_summarize_a_perfect_and_a_random_synthetic_critic():
  good = cd.summarize(_outputs(perfect=True))
  assert good['viability']['auc'] == 1.0 and good['viability']['brier'] == 0.0
  assert good['efficiency']['r2'] == pytest.approx(1.0) and good['efficiency']['mae'] == 0.0
  assert good['gate']['saturated_fraction'] == pytest.approx(0.25)
  assert good['windows_per_kind']['success'] + good['windows_per_kind']['failure'] == 2000
  bad = cd.summarize(_outputs(perfect=False))
  assert abs(bad['viability']['auc'] - 0.5) < 0.05
  assert bad['efficiency']['r2'] < 0.0
  # A method without heads (a baseline) has no head sections.
  base = cd.summarize({'gate': np.ones(4), 'kind': np.zeros(4, np.int32)})
  assert 'viability' not in base and 'efficiency' not in base


def test_round_file_merges_splits_and_the_command_prints_a_table(tmp_path):
  logs = tmp_path / 'logs'
  diag = cd.summarize(_outputs())
  diag['actor_batches'] = cd.batch_weight_stats(np.ones((2, 4)), np.ones((2, 4), bool))
  cd.update_file(str(logs), 1, 'holdout', diag)
  cd.update_file(str(logs), 1, 'next_round', diag)
  data = json.load(open(logs / 'critic_round_001.json'))
  assert set(data) == {'round', 'holdout', 'next_round'}
  with pytest.raises(ValueError, match='split'):
    cd.update_file(str(logs), 1, 'training', diag)
  out = subprocess.run([sys.executable, '-m', 'habc.critic_diagnostics',
                        f'--workdir={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert '| 1 | holdout | 2000 | 1.000 | 0.000 | 1.000 |' in out.stdout, out.stdout
  assert os.path.exists(tmp_path / 'plots' / 'critic_reliability_next_round.png')
  empty = subprocess.run([sys.executable, '-m', 'habc.critic_diagnostics',
                          f'--workdir={tmp_path / "logs"}'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
  assert empty.returncode != 0 and 'critic_round' in empty.stderr


# ----------------------------------------------------------------------------- held-out split


def test_holdout_split_is_stable_as_a_dataset_grows():
  mask = sampler.holdout_mask(1000, 0.2)
  assert abs(mask.mean() - 0.2) < 0.01
  for n in (1, 7, 30, 333):
    assert np.array_equal(sampler.holdout_mask(n, 0.2), mask[:n])
  train = sampler.split_indices(30, 'train', 0.2)
  held = sampler.split_indices(30, 'holdout', 0.2)
  assert sorted(np.concatenate([train, held]).tolist()) == list(range(30))
  assert not sampler.holdout_mask(50, 0.0).any()
  with pytest.raises(ValueError):
    sampler.holdout_mask(10, 1.0)


# ----------------------------------------------------------------------------- stratified sampler


def _fake_packs(num, rng):
  """Episode packs with only what the sampler reads: windows of random kinds."""
  packs = []
  for _ in range(num):
    n = int(rng.integers(5, 40))
    kind = rng.choice([SampleKind.SUCCESS, SampleKind.FAILURE, SampleKind.FAILURE,
                       SampleKind.FAILURE, SampleKind.INTERVENTION], size=n).astype(np.int32)
    packs.append({'anchor': np.arange(n), 'kind': kind, 'value': rng.normal(size=n)})
  return packs


def test_stratified_sampler_hits_its_kind_fractions_and_stays_unbiased():
  rng = np.random.default_rng(0)
  packs = _fake_packs(30, rng)
  fractions = sampler.kind_fraction_vector({'success': 0.5, 'failure': 0.25,
                                            'intervention': 0.25})
  pool = sampler.WholeDatasetPool(iter(packs), np.random.default_rng(1), fractions)
  drawn_kinds, drawn_iw, drawn_values = [], [], []
  for _ in range(400):
    for pack, idx in pool.take(64):
      drawn_kinds.append(pack['kind'][idx])
      drawn_iw.append(pack['sample_weight'][idx])
      drawn_values.append(pack['value'][idx])
  kinds, iw, values = map(np.concatenate, (drawn_kinds, drawn_iw, drawn_values))
  assert len(kinds) == 400 * 64
  share = np.bincount(kinds, minlength=NUM_KINDS) / len(kinds)
  assert share[SampleKind.SUCCESS] == pytest.approx(0.5, abs=0.01)
  assert share[SampleKind.FAILURE] == pytest.approx(0.25, abs=0.01)
  assert iw.mean() == pytest.approx(1.0, abs=0.02)
  # The importance-weighted mean of any per-window value is the dataset's uniform mean.
  all_values = np.concatenate([p['value'] for p in packs])
  assert np.sum(iw * values) / np.sum(iw) == pytest.approx(all_values.mean(), abs=0.03)


def test_uniform_sampler_draws_every_window_alike():
  rng = np.random.default_rng(2)
  packs = _fake_packs(10, rng)
  pool = sampler.WholeDatasetPool(iter(packs), np.random.default_rng(3), None)
  counts = {}
  for _ in range(2000):
    for pack, idx in pool.take(32):
      assert np.all(pack['sample_weight'][idx] == 1.0)
      for i in idx:
        counts[(id(pack), int(i))] = counts.get((id(pack), int(i)), 0) + 1
  total = sum(len(p['anchor']) for p in packs)
  assert len(counts) == total
  expected = 2000 * 32 / total
  assert max(abs(c - expected) for c in counts.values()) < 6 * np.sqrt(expected)


def test_kind_fractions_errors_name_the_key():
  with pytest.raises(ValueError, match='kind_fractions names'):
    sampler.kind_fraction_vector({'succes': 0.5})
  with pytest.raises(ValueError, match='needs a fraction > 0'):
    sampler.importance_weights(np.array([0, 5, 5, 0, 0]),
                               sampler.kind_fraction_vector({'success': 1.0}))
  assert sampler.kind_fraction_vector({'success': 0.0}) is None


# ----------------------------------------------------------------------------- critic phase


def test_critic_phase_leaves_the_actor_bit_identical():
  c = small_config()
  # The shared encoder is the hard case: the critic's gradients reach the actor's trunk.
  c.model.critic_encoder = 'shared'
  batch = synthetic_batch(16, horizon=4, vision=False)
  lrn = learner_lib.Learner(c, build_model(c, 10), batch, seed=0)
  lrn.update(batch, critic_only=False)  # Adam's moments are non-zero from here on.
  before = jax.device_get(lrn.state)
  for i in range(3):
    metrics = lrn.update(synthetic_batch(16, horizon=4, vision=False, seed=i), critic_only=True)
  assert metrics['learner/critic_only'] == 1.0
  after = jax.device_get(lrn.state)
  for name in ('encoder', 'action_expert'):
    for a, b in zip(jax.tree.leaves(before.params['params'][name]),
                    jax.tree.leaves(after.params['params'][name])):
      assert np.array_equal(a, b)
  for a, b in zip(jax.tree.leaves(before.opt_state.inner_states['actor']),
                  jax.tree.leaves(after.opt_state.inner_states['actor'])):
    assert np.array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before.params['params']['critic']),
      jax.tree.leaves(after.params['params']['critic'])))
  assert int(after.step) == int(before.step) + 3
  lrn.update(batch, critic_only=False)
  moved = jax.device_get(lrn.params['params']['action_expert'])
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(after.params['params']['action_expert']), jax.tree.leaves(moved)))


def test_sample_weights_enter_critic_and_actor_losses():
  c = small_config()
  batch = synthetic_batch(16, horizon=4, vision=False)
  model = build_model(c, 10)
  lrn = learner_lib.Learner(c, model, batch, seed=0)
  loss_fn = learner_lib.make_loss_fn(c, model)
  rng = jax.random.PRNGKey(0)
  _, plain = loss_fn(lrn.params, batch, rng, 10)
  ones = dict(batch, sample_weight=np.ones(16, np.float32))
  _, same = loss_fn(lrn.params, ones, rng, 10)
  assert same['critic/loss'] == pytest.approx(float(plain['critic/loss']), rel=1e-6)
  weighted = dict(batch, sample_weight=np.linspace(0.1, 3.0, 16).astype(np.float32))
  _, other = loss_fn(lrn.params, weighted, rng, 10)
  assert abs(float(other['critic/loss']) - float(plain['critic/loss'])) > 1e-4


def test_diagnostic_fn_gives_the_gate_the_update_uses():
  c = small_config()
  batch = synthetic_batch(16, horizon=4, vision=False)
  model = build_model(c, 10)
  lrn = learner_lib.Learner(c, model, batch, seed=0)
  out = jax.device_get(jax.jit(learner_lib.make_diagnostic_fn(c, model))(lrn.params, batch))
  gate = jax.device_get(jax.jit(learner_lib.make_online_weight_fn(c, model))(lrn.params, batch))
  np.testing.assert_allclose(out['gate'], gate, rtol=1e-6)
  np.testing.assert_allclose(out['gate'], 1 + np.tanh(out['scaled_advantage']), atol=1e-6)
  # batch_iqr (the default): the advantage over T x (its interquartile range / 1.349) over the
  # online windows.
  online = out['kind'] != SampleKind.SFT
  a = out['advantage'][online]
  q25, q75 = np.quantile(a, (0.25, 0.75), method='inverted_cdf')
  np.testing.assert_allclose(out['scaled_advantage'], out['advantage'] / (2.0 * (q75 - q25) / 1.349
                                                                           + 1e-3), rtol=1e-5)
  # batch_std: the scaled advantage has std 1 / T over the online windows.
  c.method.advantage_norm = 'batch_std'
  out = jax.device_get(jax.jit(learner_lib.make_diagnostic_fn(c, model))(lrn.params, batch))
  assert np.std(out['scaled_advantage'][online]) == pytest.approx(1 / 2.0, rel=1e-2)
  assert set(out) >= {'p_v', 'efficiency', 'a_v', 'a_e', 'weights', 'kind', 'valid'}
  diag = cd.summarize({k: v for k, v in out.items() if k not in ('weights', 'valid')})
  assert diag['windows'] == 16 and 0 <= diag['viability']['auc'] <= 1


def test_start_up_checks_name_the_new_keys():
  from experiments import habc as habc_experiment
  from habc import config_checks
  config = habc_experiment.get_config('default')
  assert config_checks.problems(config) == []
  config.critic.phase_steps = config.pipeline.steps_per_round
  config.data.sampler = 'pool'
  config.method.advantage_norm = 'zscore'
  lines = config_checks.problems(config)
  assert len(lines) == 3
  assert any('critic.phase_steps' in line for line in lines)
  assert any('kind_fractions' in line and 'uniform' in line for line in lines)
  assert any('advantage_norm' in line for line in lines)


def test_report_counts_in_the_singular():
  from habc.run import report
  assert report._count(1, 'round') == '1 round'  # pylint: disable=protected-access
  assert report._count(3, 'round') == '3 rounds'  # pylint: disable=protected-access


def test_curve_plot_draws_a_runaway_r2_at_the_floor(tmp_path, monkeypatch):
  """A point far below R2_FLOOR is drawn on it (an open marker), so the other lines stay legible."""
  drawn = []
  plt = cd._plt()
  real_plot = plt.Axes.plot

  def spy(ax, *args, **kwargs):
    drawn.append((ax.get_ylabel(), np.asarray(args[1], float) if len(args) > 1 else None, kwargs))
    return real_plot(ax, *args, **kwargs)

  monkeypatch.setattr(plt.Axes, 'plot', spy)
  curves = {'round 1': {0: {'auc': 0.5, 'r2': 0.1}, 250: {'auc': 0.8, 'r2': -300.0},
                        500: {'auc': 0.85, 'r2': 0.4}}}
  path = tmp_path / 'curve.png'
  assert cd.plot_curves(curves, str(path))
  assert path.exists()
  lines = [ys for _, ys, _ in drawn if ys is not None]
  assert lines[1].tolist() == [0.1, cd.R2_FLOOR, 0.4]  # The R^2 line.
  assert lines[2].tolist() == [cd.R2_FLOOR]  # Its open marker.
  assert drawn[2][2].get('mfc') == 'none'
  assert not cd.plot_curves({}, str(tmp_path / 'none.png'))
