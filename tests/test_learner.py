"""The learner: frozen parameters, gradient paths, data-parallel equivalence, and a toy problem
where the right answer is known."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from experiments import presets
from habc import labeling
from habc.labeling import SampleKind
from habc.learning import learner as learner_lib
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model, make_policy_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(weighting='habc', obs='state'):
  c = base.get_config()
  c.obs = obs
  c.model.embed_dim = 32
  c.model.mlp_dim = 64
  c.model.num_layers = 1
  c.model.num_heads = 2
  c.model.patch_size = 8
  c.model.critic_hidden = (32, 32)
  c.model.action_horizon = 4
  c.method.weighting = weighting
  c.method.warmup_steps = 0
  c.learner.batch_size = 16
  return c


def test_frozen_subtree_is_bit_identical_and_holds_no_optimiser_state():
  c = small_config()
  c.model.frozen = ('encoder',)
  batch = synthetic_batch(16, horizon=4, vision=False)
  model = build_model(c, 10)
  lrn = learner_lib.Learner(c, model, batch, seed=0)
  before = jax.device_get(lrn.params)
  for i in range(10):
    lrn.update(synthetic_batch(16, horizon=4, vision=False, seed=i))
  after = jax.device_get(lrn.params)
  enc_before = jax.tree.leaves(before['params']['encoder'])
  enc_after = jax.tree.leaves(after['params']['encoder'])
  assert all(np.array_equal(a, b) for a, b in zip(enc_before, enc_after))
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before['params']['critic']),
                                                     jax.tree.leaves(after['params']['critic']))]
  assert any(moved)
  # optax.multi_transform keeps one inner state per label; the frozen one is empty.
  inner = lrn.state.opt_state.inner_states['frozen'].inner_state
  assert jax.tree.leaves(inner) == []
  n_encoder = sum(x.size for x in enc_before)
  n_state = sum(x.size for x in jax.tree.leaves(lrn.state.opt_state))
  n_trainable = sum(x.size for x in jax.tree.leaves(before['params'])) - n_encoder
  assert n_state < 2 * n_trainable + 100  # Adam's two moments of the trainable parameters only.


@pytest.mark.parametrize('critic_encoder', ['separate', 'shared'])
def test_actor_gradient_does_not_reach_the_critic(critic_encoder):
  c = small_config()
  c.model.critic_encoder = critic_encoder
  batch = jax.tree.map(jnp.asarray, synthetic_batch(16, horizon=4, vision=False))
  model = build_model(c, 10)
  state = learner_lib.create_train_state(c, model, batch, jax.random.PRNGKey(0))
  loss_fn = learner_lib.make_loss_fn(c, model)

  def actor_loss(params):
    return loss_fn(params, batch, jax.random.PRNGKey(1), jnp.asarray(100))[1]['actor/loss']

  grads = jax.grad(actor_loss)(state.params)['params']
  critic_grads = jax.tree.leaves(grads['critic'])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in critic_grads)
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads['action_expert']))

  def critic_loss(params):
    return loss_fn(params, batch, jax.random.PRNGKey(1), jnp.asarray(100))[1]['critic/loss']

  grads = jax.grad(critic_loss)(state.params)['params']
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads['critic']))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads['action_expert']))


def test_batch_size_must_divide_the_devices():
  c = small_config()
  c.learner.batch_size = 15
  batch = synthetic_batch(16, horizon=4, vision=False)
  with pytest.raises(ValueError, match='divisible'):
    learner_lib.Learner(c, build_model(c, 10), batch, devices=jax.devices() * 2)


@pytest.mark.parametrize('weighting,obs', [('habc', 'vision'), ('habc_v', 'state'),
                                             ('bc', 'state'), ('recap', 'state'),
                                             ('awr', 'state')])
def test_every_weighting_runs_an_update(weighting, obs):
  c = small_config(weighting, obs=obs)
  batch = synthetic_batch(16, horizon=4, image_size=32, vision=obs == 'vision')
  lrn = learner_lib.Learner(c, build_model(c, 10), batch, seed=0)
  metrics = lrn.update(batch)
  assert np.isfinite(metrics['actor/loss']) and np.isfinite(metrics['critic/loss'])
  assert lrn.step == 1


DATA_PARALLEL_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    assert len(jax.devices()) == 2, jax.devices()
    from tests.test_learner import small_config
    from habc.learning import learner as learner_lib
    from habc.learning.synthetic import synthetic_batch
    from habc.networks import build_model
    c = small_config()
    batch = synthetic_batch(16, horizon=4, vision=False, seed=3)
    batch['valid'][-3:] = False  # Uneven masks across the two halves.
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      lrn = learner_lib.Learner(c, build_model(c, 10), batch, seed=0, devices=devices)
      metrics = lrn.update(batch)
      results.append((jax.device_get(lrn.params), metrics))
    (p1, m1), (p2, m2) = results
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2))]
    moved = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(p1))
    print('max param diff', max(diffs))
    assert max(diffs) < 1e-5, max(diffs)
    np.testing.assert_allclose(m1['actor/loss'], m2['actor/loss'], rtol=1e-5)
    np.testing.assert_allclose(m1['critic/loss'], m2['critic/loss'], rtol=1e-5)
    print('OK')
''')


def test_two_devices_match_one_device_with_the_whole_batch():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', DATA_PARALLEL_SCRIPT], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and 'OK' in out.stdout, out.stdout + out.stderr


# ----------------------------------------------------------------------------- a toy problem

MODES = {'fast': (1.0, 3), 'slow': (-1.0, 8), 'fail': (0.0, None)}  # action, decisions to success.
TIME_LIMIT = 8


def toy_episode(mode, rng):
  """A 1-D task: the chosen action mode is kept all episode. 'fast' succeeds after 3 decisions,
  'slow' after 8, 'fail' never does (time-out). State: (progress, time)."""
  action, to_success = MODES[mode]
  length = to_success or TIME_LIMIT
  t = np.arange(length + 1)
  progress = t / to_success if to_success else np.zeros(length + 1)
  states = np.stack([progress, t / TIME_LIMIT], axis=-1).astype(np.float32)
  actions = np.full((length + 1, 1), action, np.float32) + 0.05 * rng.normal(size=(length + 1, 1))
  return states, actions.astype(np.float32), to_success is not None


def toy_windows(horizon, num_episodes, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(num_episodes):
    mode = list(MODES)[i % 3]
    states, actions, success = toy_episode(mode, rng)
    w = labeling.make_windows(np.zeros(len(states), bool), success, horizon=horizon)
    for j in range(len(w.anchor)):
      rows.append(dict(state=states[w.anchor[j]], next_state=states[w.next_index[j]],
                       actions=actions[w.action_index[j]], action_mask=w.action_mask[j],
                       kind=w.kind[j], outcome=w.outcome[j], viability_mask=w.viability_mask[j],
                       efficiency_mask=w.efficiency_mask[j],
                       next_is_terminal=w.next_is_terminal[j], steps_to_end=w.steps_to_end[j],
                       episode_success=w.episode_success[j]))
  return rows


def toy_batch(rows, batch_size, rng):
  pick = [rows[i] for i in rng.integers(0, len(rows), batch_size)]
  stack = lambda k: np.stack([r[k] for r in pick])
  tokens = np.zeros((batch_size, 4), np.int32)
  return {'obs': {'state': stack('state'), 'instruction': tokens},
          'next_obs': {'state': stack('next_state'), 'instruction': tokens},
          'actions': stack('actions'), 'action_mask': stack('action_mask'),
          'kind': stack('kind').astype(np.int32), 'outcome': stack('outcome'),
          'viability_mask': stack('viability_mask'), 'efficiency_mask': stack('efficiency_mask'),
          'next_is_terminal': stack('next_is_terminal'), 'steps_to_end': stack('steps_to_end'),
          'episode_success': stack('episode_success'), 'valid': np.ones(batch_size, bool)}


def train_toy(weighting, steps=400):
  c = small_config(weighting)
  c.learner.batch_size = 64
  c.learner.actor_lr = 1e-3
  c.learner.critic_lr = 3e-3
  c.method.warmup_steps = 100
  rows = toy_windows(c.model.action_horizon, 30)
  rng = np.random.default_rng(1)
  model = build_model(c, 1)
  lrn = learner_lib.Learner(c, model, toy_batch(rows, 64, rng), seed=0)
  for _ in range(steps):
    metrics = lrn.update(toy_batch(rows, 64, rng))
  start = {'state': np.zeros((512, 2), np.float32), 'instruction': np.zeros((512, 4), np.int32)}
  chunk = make_policy_fn(model, c)(lrn.params, start,
                                  jax.random.split(jax.random.PRNGKey(0), 512))
  first = np.asarray(chunk[:, 0, 0])
  return first, metrics


def test_habc_moves_toward_the_fast_successful_mode_and_bc_does_not():
  # At 400 updates. With the gate scaled by its batch std (session 15's default) this failed on
  # this machine's XLA build (0.42 of HABC's actions near the fast mode): one window with an
  # extrapolated advantage of ~500 set the std and every other gate sat at ~1. Trained to 800
  # updates every gate variant drifts back to the slow mode: the efficiency head's advantages at
  # the start state go to -1 on both modes (results/notes.md, session 16).
  habc_actions, metrics = train_toy('habc')
  bc_actions, _ = train_toy('bc')
  near = lambda a, target: float(np.mean(np.abs(a - target) < 0.4))
  # Plain BC reproduces the data: by windows, 3 fast : 8 slow : 8 failing.
  assert near(bc_actions, 1.0) < 0.35
  # HABC drops failures (weight 0) and prefers the quick success through the efficiency head.
  assert near(habc_actions, 1.0) > 0.6, (near(habc_actions, 1.0), metrics)
  assert near(habc_actions, 0.0) < 0.15
  assert np.mean(habc_actions) > np.mean(bc_actions) + 0.5


TOY_PROBES = {  # State (progress, time) -> true V_e: minus the decisions left to success.
    'fast, after 1 decision': ((1 / 3, 1 / 8), -2.0),
    'slow, after 1 decision': ((1 / 8, 1 / 8), -7.0),
    'fast, after 2 decisions': ((2 / 3, 2 / 8), -1.0),
    'slow, after 7 decisions': ((7 / 8, 7 / 8), -1.0),
}


def toy_efficiency_values(target, steps):
  """V_e at TOY_PROBES after ``steps`` updates of HABC on the toy, at the toy test's rates."""
  c = small_config('habc')
  c.learner.batch_size = 64
  c.learner.actor_lr = 1e-3
  c.learner.critic_lr = 3e-3
  c.critic.efficiency_target = target
  rows = toy_windows(c.model.action_horizon, 30)
  rng = np.random.default_rng(1)
  model = build_model(c, 1)
  lrn = learner_lib.Learner(c, model, toy_batch(rows, 64, rng), seed=0)
  for _ in range(steps):
    lrn.update(toy_batch(rows, 64, rng))
  states = np.array([state for state, _ in TOY_PROBES.values()], np.float32)
  obs = {'state': states, 'instruction': np.zeros((len(states), 4), np.int32)}
  heads = model.apply(lrn.params, obs, None,
                      method=lambda m, o, phi: m.critic_outputs(o, phi))
  return np.asarray(heads['efficiency'])


def test_monte_carlo_efficiency_target_stays_at_the_true_decisions_to_success():
  # The TD target (the default) ran away to V_e ~ -500 and then collapsed to 0 on these states
  # within 600 updates here (results/notes.md, session 17); the Monte-Carlo target is the count
  # itself.
  values = toy_efficiency_values('monte_carlo', 600)
  truth = np.array([v for _, v in TOY_PROBES.values()])
  np.testing.assert_allclose(values, truth, atol=0.5, err_msg=str(dict(zip(TOY_PROBES, values))))


def test_unknown_efficiency_target_is_refused_by_name():
  c = small_config('habc')
  c.critic.efficiency_target = 'lambda'
  batch = synthetic_batch(16, horizon=4, vision=False)
  with pytest.raises(ValueError, match='config.critic.efficiency_target'):
    learner_lib.Learner(c, build_model(c, 10), batch, seed=0).update(batch)


def test_gate_warmup_holds_g_at_one():
  c = small_config()
  c.method.warmup_steps = 1000
  batch = synthetic_batch(16, horizon=4, vision=False)
  lrn = learner_lib.Learner(c, build_model(c, 10), batch, seed=0)
  warm = lrn.update(batch)
  assert warm['gate/success_min'] == warm['gate/success_max'] == 1.0
  cold = lrn.update(batch, gate_warmup=False)
  assert cold['gate/success_min'] < cold['gate/success_max']


def test_actor_learning_rate_switches_from_sft_to_online_at_sft_steps():
  """With a constant gradient Adam's step is exactly the learning rate, so each update shows it."""
  c = presets.make_config('smoke')
  c.model.frozen = ()
  c.learner.sft_actor_lr, c.learner.actor_lr, c.learner.critic_lr = 1e-3, 3e-4, 2e-4
  sft_steps = c.pipeline.sft_steps
  params = {'encoder': {'w': jnp.zeros(3)}, 'critic': {'w': jnp.zeros(3)}}
  tx = learner_lib.make_optimizer(c, params)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  actor_steps, critic_steps = [], []
  for _ in range(sft_steps + 3):
    updates, opt_state = tx.update(grads, opt_state, params)
    actor_steps.append(-float(updates['encoder']['w'][0]))
    critic_steps.append(-float(updates['critic']['w'][0]))
  np.testing.assert_allclose(actor_steps, [1e-3] * sft_steps + [3e-4] * 3, rtol=1e-4)
  np.testing.assert_allclose(critic_steps, [2e-4] * (sft_steps + 3), rtol=1e-4)


def test_sft_anneal_falls_linearly_to_the_online_rate_over_the_last_sft_steps():
  c = presets.make_config('smoke')
  c.pipeline.sft_steps = 10
  c.learner.sft_actor_lr, c.learner.actor_lr, c.learner.sft_anneal_steps = 1e-3, 2e-4, 4
  lr = learner_lib.actor_learning_rate(c)
  got = [float(lr(i)) for i in range(13)]
  want = [1e-3] * 6 + [1e-3, 8e-4, 6e-4, 4e-4] + [2e-4] * 3
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Off by default, as in every run before the key existed.
  assert presets.make_config('default').learner.sft_anneal_steps == 0
  for steps in (-1, 11):
    c.learner.sft_anneal_steps = steps
    with pytest.raises(ValueError, match='sft_anneal_steps'):
      learner_lib.actor_learning_rate(c)
  c.learner.sft_anneal_steps, c.learner.sft_actor_lr = 4, 0.0
  with pytest.raises(ValueError, match='sft_actor_lr > 0'):
    learner_lib.actor_learning_rate(c)


def test_optimiser_state_has_one_structure_whatever_the_online_rate():
  # An SFT checkpoint is shared by runs that differ in actor_lr (habc.run.sft_share), so its saved
  # optimiser state must restore into each of them, the rate equal to sft_actor_lr included.
  params = {'encoder': {'w': jnp.zeros(3)}, 'critic': {'w': jnp.zeros(3)}}
  structures = []
  for actor_lr in (3e-4, 1e-3):
    c = presets.make_config('smoke')
    c.learner.sft_actor_lr, c.learner.actor_lr = 1e-3, actor_lr
    state = learner_lib.make_optimizer(c, params).init(params)
    structures.append(jax.tree_util.tree_structure(state))
  assert structures[0] == structures[1]


def test_actor_learning_rate_is_constant_without_sft_rate_or_pipeline():
  c = small_config()  # No pipeline section.
  assert learner_lib.actor_learning_rate(c) == c.learner.actor_lr
  c = presets.make_config('smoke')
  c.learner.sft_actor_lr = 0.0
  assert learner_lib.actor_learning_rate(c) == c.learner.actor_lr
  c.learner.sft_actor_lr = -1.0
  with pytest.raises(ValueError, match='sft_actor_lr'):
    learner_lib.actor_learning_rate(c)
