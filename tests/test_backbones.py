"""The pluggable backbone and the loader of pretrained backbone weights."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from habc.learning import learner as learner_lib
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model, load_pretrained, register_backbone
from habc.networks import encoders
from tests.test_learner import small_config


def _state(config, seed):
  batch = synthetic_batch(4, horizon=4, vision=False)
  return learner_lib.create_train_state(config, build_model(config, 10), batch,
                                        jax.random.PRNGKey(seed))


def test_loads_an_orbax_checkpoint_into_the_encoder(tmp_path):
  c = small_config()
  donor = _state(c, seed=1).params
  path = tmp_path / 'pretrained'
  with ocp.PyTreeCheckpointer() as ckpt:
    ckpt.save(str(path), {'params': {'encoder': donor['params']['encoder']}})
  fresh = _state(c, seed=2).params
  loaded = load_pretrained(fresh, str(path))
  for a, b in zip(jax.tree.leaves(loaded['params']['encoder']),
                  jax.tree.leaves(donor['params']['encoder'])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(loaded['params']['critic']),
                  jax.tree.leaves(fresh['params']['critic'])):
    np.testing.assert_array_equal(a, b)
  # Through the config: the train state starts from the checkpoint.
  c.model.pretrained_checkpoint = str(path)
  started = _state(c, seed=3).params
  for a, b in zip(jax.tree.leaves(started['params']['encoder']),
                  jax.tree.leaves(donor['params']['encoder'])):
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_shape_is_refused_with_the_paths(tmp_path):
  donor = _state(small_config(), seed=1).params['params']['encoder']
  flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(donor)}
  bad_key = sorted(flat)[0]
  flat[bad_key] = np.zeros((3, 3), np.float32)
  np.savez(tmp_path / 'enc.npz', **flat)
  with pytest.raises(ValueError, match='shape of'):
    load_pretrained(_state(small_config(), seed=2).params, str(tmp_path / 'enc.npz'))
  with pytest.raises(FileNotFoundError):
    load_pretrained(_state(small_config(), seed=2).params, str(tmp_path / 'missing'))


def test_a_registered_backbone_replaces_the_builtin_one():
  register_backbone('test_tiny', lambda config: encoders.StateEncoder(config.model.embed_dim, (8,)))
  c = small_config()
  c.model.backbone = 'test_tiny'
  params = _state(c, seed=0).params['params']['encoder']
  assert params['mlp']['Dense_0']['kernel'].shape[-1] == 8
  c.model.backbone = 'nope'
  with pytest.raises(ValueError, match='not registered'):
    build_model(c, 10)
