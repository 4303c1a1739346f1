"""The gate, the critic targets and the weights against float64 numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from habc import losses
from habc.labeling import SampleKind


def test_gate_matches_float64_reference():
  rng = np.random.default_rng(0)
  p_v = rng.random((7, 5))
  a_v = rng.normal(scale=3.0, size=(7, 5))
  a_e = rng.normal(scale=3.0, size=(7, 5))
  expected = 1.0 + np.tanh((1.0 - p_v) * a_v + p_v * a_e)
  got = np.asarray(losses.gate(jnp.asarray(p_v, jnp.float32), jnp.asarray(a_v, jnp.float32),
                               jnp.asarray(a_e, jnp.float32)))
  assert got.shape == (7, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gate_limits_and_range():
  a_v = jnp.array([-2.0, 0.3, 5.0])
  a_e = jnp.array([4.0, -1.0, -3.0])
  np.testing.assert_allclose(losses.gate(0.0, a_v, a_e), 1 + np.tanh(np.asarray(a_v)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses.gate(1.0, a_v, a_e), 1 + np.tanh(np.asarray(a_e)), rtol=1e-6, atol=1e-6)
  g = losses.gate(jax.random.uniform(jax.random.PRNGKey(0), (1000,)),
                  jax.random.normal(jax.random.PRNGKey(1), (1000,)),
                  jax.random.normal(jax.random.PRNGKey(2), (1000,)))
  assert float(g.min()) > 0.0 and float(g.max()) < 2.0


def test_advantages_in_logit_space_and_terminal_efficiency():
  a_v, a_e = losses.advantages(jnp.array([1.0, 2.0]), jnp.array([3.0, 1.5]),
                               jnp.array([-4.0, -1.0]), jnp.array([-3.0, -7.0]),
                               jnp.array([False, True]))
  np.testing.assert_allclose(a_v, [2.0, -0.5])
  np.testing.assert_allclose(a_e, [-1 - 3 + 4, -1 + 0 + 1])  # V_e = 0 at a terminal success.


def test_viability_loss_is_masked_bce():
  logit = jnp.array([0.0, 2.0, -1.0])
  outcome = jnp.array([1.0, 0.0, 1.0])
  mask = jnp.array([True, True, False])
  p = 1 / (1 + np.exp(-np.array([0.0, 2.0])))
  expected = -np.mean([np.log(p[0]), np.log(1 - p[1])])
  np.testing.assert_allclose(losses.viability_loss(logit, outcome, mask), expected, rtol=1e-5)


def test_efficiency_target_converges_to_minus_steps_to_go():
  """TD on a 5-step successful chain with a table of V_e values: V_e(s_i) -> -(5 - i)."""
  n = 5
  table = jnp.zeros((n + 1,))  # The last entry is the terminal state, never trained.
  states = jnp.arange(n)
  next_states = states + 1
  terminal = next_states == n
  mask = jnp.ones((n,), bool)
  opt = optax.adam(0.1)
  opt_state = opt.init(table)

  @jax.jit
  def step(table, opt_state):
    def loss(t):
      target = losses.efficiency_targets(t[next_states], terminal)
      return losses.efficiency_loss(t[states], target, mask)
    grads = jax.grad(loss)(table)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(table, updates), opt_state

  for _ in range(600):
    table, opt_state = step(table, opt_state)
  np.testing.assert_allclose(table[:n], -(n - np.arange(n)), atol=0.05)


def test_kind_weights_and_unit_mean_normalisation():
  kind = jnp.array([SampleKind.SFT, SampleKind.SUCCESS, SampleKind.FAILURE,
                    SampleKind.INTERVENTION, SampleKind.UNLABELLED, SampleKind.SUCCESS])
  g = jnp.array([9.0, 1.5, 1.7, 0.4, 1.1, 0.5])
  raw = losses.kind_weights(kind, g, failure_weight=0.0, intervention_weight=1.0,
                            unlabelled_weight=0.0, use_autonomous=True)
  np.testing.assert_allclose(raw, [1.0, 1.5, 0.0, 1.0, 0.0, 0.5])
  valid = jnp.array([True, True, True, True, True, False])
  w = losses.normalise_weights(raw, kind, valid)
  online = np.array([1.5, 0.0, 1.0, 0.0])
  np.testing.assert_allclose(w, [1.0, *(online / online.mean()), 0.0], rtol=1e-6)
  # Imitation only: autonomous windows weigh nothing.
  raw = losses.kind_weights(kind, g, failure_weight=1.0, intervention_weight=1.0,
                            unlabelled_weight=1.0, use_autonomous=False)
  np.testing.assert_allclose(raw, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])


def test_normalisation_of_all_zero_weights_stays_finite():
  kind = jnp.array([SampleKind.FAILURE, SampleKind.FAILURE])
  w = losses.normalise_weights(jnp.zeros(2), kind, jnp.array([True, True]))
  assert np.isfinite(np.asarray(w)).all() and float(w.sum()) == 0.0


def test_flow_matching_errors_respect_the_action_mask():
  v = jnp.zeros((2, 3, 2))
  u = jnp.ones((2, 3, 2)).at[:, 2].set(100.0)
  mask = jnp.array([[True, True, False], [True, True, True]])
  err = losses.flow_matching_errors(v, u, mask)
  np.testing.assert_allclose(err, [1.0, (1 + 1 + 10000) / 3])
  np.testing.assert_allclose(
      losses.weighted_actor_loss(err, jnp.array([2.0, 0.0]), jnp.array([True, True])), 1.0)


def test_two_hot_roundtrip():
  values = jnp.array([-200.0, -37.3, 0.0, -1.0])
  probs = losses.two_hot(values, -200.0, 0.0, 51)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(losses.categorical_mean(jnp.log(probs + 1e-30), -200.0, 0.0),
                             values, atol=1e-3)


def test_weighted_quantiles_match_numpy_and_ignore_zero_weights():
  rng = np.random.default_rng(0)
  x = rng.normal(size=37).astype(np.float32)
  ones = np.ones(37, np.float32)
  got = np.asarray(losses.weighted_quantiles(jnp.asarray(x), jnp.asarray(ones), (0.25, 0.5, 0.75)))
  want = np.quantile(x, (0.25, 0.5, 0.75), method='inverted_cdf')
  np.testing.assert_allclose(got, want)
  # A zero weight removes a sample; an integer weight repeats it.
  w = np.zeros(37, np.float32)
  w[:10] = 1.0
  w[3] = 3.0
  got = np.asarray(losses.weighted_quantiles(jnp.asarray(x), jnp.asarray(w), (0.25, 0.75)))
  repeated = np.concatenate([x[:10], [x[3], x[3]]])
  np.testing.assert_allclose(got, np.quantile(repeated, (0.25, 0.75), method='inverted_cdf'))
  # All weights zero: 0, not NaN.
  assert np.all(np.asarray(losses.weighted_quantiles(jnp.asarray(x), jnp.zeros(37), (0.5,))) == 0)


def _signal(norm, logits, logits_next):
  import ml_collections
  from habc.learning import objectives
  b = len(logits)
  method = ml_collections.ConfigDict({'weighting': 'habc', 'advantage_norm': norm,
                                      'advantage_temperature': 2.0})
  zeros = jnp.zeros(b)
  heads = {'viability_logit': jnp.asarray(logits), 'efficiency': zeros}
  heads_next = {'viability_logit': jnp.asarray(logits_next), 'efficiency': zeros}
  batch = {'next_is_terminal': jnp.zeros(b, bool), 'valid': jnp.ones(b, bool),
           'kind': jnp.full(b, int(SampleKind.SUCCESS), jnp.int32)}
  return np.asarray(objectives.habc_signal(method, heads, heads_next, batch)['gate'])


def test_robust_gate_scale_is_not_flattened_by_one_extreme_window():
  # 63 windows with viability advantages spread over [-2, 2] (p_v = 0.5 at s_t), and one window
  # where the critic extrapolates to a logit change of 500.
  logits = np.zeros(64, np.float32)
  logits_next = np.concatenate([np.linspace(-2, 2, 63), [500.0]]).astype(np.float32)
  std_gate = _signal('batch_std', logits, logits_next)[:63]
  iqr_gate = _signal('batch_iqr', logits, logits_next)[:63]
  # With the std the outlier squeezes every other window's g into a sliver around 1.
  assert std_gate.max() - std_gate.min() < 0.1
  # With the interquartile range the bulk keeps its spread (without saturating).
  assert iqr_gate.max() - iqr_gate.min() > 1.0
  assert 0.05 < iqr_gate.min() and iqr_gate.max() < 1.95
