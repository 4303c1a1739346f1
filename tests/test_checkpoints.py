"""Checkpoints keep params, optimiser state, step, RNG, config and normalisation statistics."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from habc.run import checkpoints


class State(NamedTuple):
  params: Any
  opt_state: Any
  step: Any
  rng: Any


def _tx():
  return optax.multi_transform(
      {'actor': optax.adamw(1e-2), 'frozen': optax.set_to_zero()},
      {'encoder': {'w': 'actor'}, 'critic': {'b': 'frozen'}})


def _fresh(seed=0):
  params = {'encoder': {'w': jnp.ones((3, 4))}, 'critic': {'b': jnp.zeros(2)}}
  return State(params, _tx().init(params), jnp.zeros((), jnp.int32), jax.random.key(seed))


def _train(state, steps):
  tx = _tx()
  for _ in range(steps):
    grads = jax.grad(lambda p: jnp.sum(p['encoder']['w'] ** 2) + jnp.sum(p['critic']['b']))(
        state.params)
    updates, opt = tx.update(grads, state.opt_state, state.params)
    rng, _ = jax.random.split(state.rng)
    state = State(optax.apply_updates(state.params, updates), opt, state.step + 1, rng)
  return state


def _leaves_equal(a, b):
  la = jax.tree.leaves(jax.tree.map(
      lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x, a))
  lb = jax.tree.leaves(jax.tree.map(
      lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x, b))
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_save_restore_keeps_optimiser_state_and_resumes_identically(tmp_path):
  trained = _train(_fresh(), 3)
  config = ml_collections.ConfigDict({'learner': {'batch_size': 8}, 'cameras': ('top',)})
  stats = {'mean': {'action': np.arange(3, dtype=np.float32)},
           'std': {'action': np.ones(3, np.float32)}}
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'ck'))
  ckpt.save(3, trained, config=config, stats=stats, meta={'stage': 'sft'})
  ckpt.close()

  restored = checkpoints.Checkpointer(str(tmp_path / 'ck')).restore(_fresh(seed=9))
  assert restored.step == 3 and restored.meta == {'stage': 'sft'}
  assert restored.config == {'learner': {'batch_size': 8}, 'cameras': ['top']}
  np.testing.assert_array_equal(restored.stats['mean']['action'], [0, 1, 2])
  assert _leaves_equal(restored.state, trained)
  # Adam's moments came back (a dropped optimiser state would restart them at zero).
  mu = restored.state.opt_state.inner_states['actor'].inner_state[0].mu['encoder']['w']
  assert float(jnp.abs(mu).sum()) > 0
  # Training on from the restored state equals training straight through.
  assert _leaves_equal(_train(restored.state, 2), _train(trained, 2))


def test_latest_step_and_keep(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=2)
  assert ckpt.latest_step() is None
  state = _fresh()
  for step in (1, 2, 3):
    ckpt.save(step, state, config={}, stats={'x': np.zeros(1)})
  assert ckpt.latest_step() == 3 and ckpt.all_steps() == [2, 3]
  ckpt.save(3, _train(state, 1), config={}, stats={'x': np.zeros(1)})  # Same step: replaced.
  assert int(ckpt.restore(state).state.step) == 1


def test_restore_errors_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    checkpoints.Checkpointer(str(tmp_path / 'empty')).restore(_fresh())
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'ck'))
  ckpt.save(1, _fresh(), config={}, stats={'x': np.zeros(1)})
  other = _fresh()._replace(params={'encoder': {'w': jnp.ones((5, 4))}, 'critic': {'b': jnp.zeros(2)}})
  with pytest.raises(ValueError, match='does not match'):
    ckpt.restore(other)
