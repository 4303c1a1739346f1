"""habc.analysis.policy_fit: R^2 of the policy on its demonstration windows, beside a linear fit."""

import numpy as np
import pytest

from habc.run import pipeline
from habc.analysis import policy_fit


def test_r2_is_one_for_a_perfect_fit_and_zero_for_the_mean():
  rng = np.random.default_rng(0)
  y = rng.normal(size=(200, 3))
  np.testing.assert_allclose(policy_fit.r2_per_dim(y, y), 1.0)
  np.testing.assert_allclose(policy_fit.r2_per_dim(np.broadcast_to(y.mean(0), y.shape), y), 0.0,
                             atol=1e-12)
  assert policy_fit.r2_per_dim(-y, y)[0] < 0  # Worse than the mean is negative.
  const = np.ones((10, 1))
  assert np.isnan(policy_fit.r2_per_dim(const, const)[0])
  with pytest.raises(ValueError, match='one shape'):
    policy_fit.r2_per_dim(y[:, :2], y)


def test_linear_fit_recovers_an_affine_map():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 4))
  w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
  pred = policy_fit.linear_fit_predict(x[:200], x[:200] @ w + b, x[200:])
  np.testing.assert_allclose(pred, x[200:] @ w + b, atol=1e-9)


def test_report_on_a_smoke_run(tmp_path, capsys):
  import experiments.sft
  config = experiments.sft.get_config('smoke')
  config.task = 'insert'
  workdir = str(tmp_path / 'run')
  pipeline.run(config, workdir)
  report = policy_fit.fit_report(workdir, windows=32, samples=2)
  assert report['dims'][0] == 'left_dx' and len(report['dims']) == 10
  assert report['windows'] >= 32 and report['step'] == config.pipeline.sft_steps
  for key in ('policy_r2_first', 'policy_r2_mid', 'linear_r2_first', 'spread'):
    values = np.asarray(report[key])
    assert values.shape == (10,)
    assert np.all(values[np.isfinite(values)] <= 1.0 + 1e-9)
  assert np.all(np.asarray(report['spread']) >= 0)
  policy_fit.main(['--workdir', workdir, '--windows', '16', '--samples', '2'])
  out = capsys.readouterr().out
  assert '| left_grip |' in out and '| mean |' in out


def test_missing_workdir_says_what_to_give(tmp_path):
  with pytest.raises(FileNotFoundError, match='workdir of a run'):
    policy_fit.fit_report(str(tmp_path / 'nothing'))
