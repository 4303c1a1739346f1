"""The episode schema: validator errors name the episode and field; the step convention."""

import numpy as np
import pytest

from habc.data import schema, synthetic, text


def _episode(**kwargs):
  return synthetic.synthetic_episode(np.random.default_rng(0), num_steps=6, image_size=8,
                                     **kwargs)


SPEC = schema.make_spec(('top',), 8, state_dim=6, action_dim=4)


def test_make_episode_follows_rlds_convention():
  ep = _episode(success=True, episode_id='e1')
  steps = schema.validate_episode(ep, SPEC)['steps']
  assert steps['is_first'].tolist() == [True] + [False] * 5
  assert steps['is_last'].tolist() == [False] * 5 + [True]
  assert steps['is_terminal'].tolist() == [False] * 5 + [True]
  assert steps['discount'].tolist() == [1.0] * 5 + [0.0]
  assert steps['reward'].tolist() == [0.0] * 5 + [1.0]
  assert not steps['action'][-1].any()  # The last step's action is the dummy zero.
  failed = schema.validate_episode(_episode(success=False), SPEC)['steps']
  assert not failed['is_terminal'].any() and failed['discount'].tolist() == [1.0] * 6


def _break(ep, path, value):
  node = ep
  for key in path[:-1]:
    node = node[key]
  if value is KeyError:
    del node[path[-1]]
  else:
    node[path[-1]] = value
  return ep


@pytest.mark.parametrize('path,value,field,words', [
    (('steps', 'policy_action'), KeyError, 'steps/policy_action', 'missing'),
    (('episode_metadata', 'success'), KeyError, 'episode_metadata/success', 'missing'),
    (('steps', 'observation', 'top'), KeyError, 'steps/observation/top', 'missing camera'),
    (('steps', 'observation', 'state'), np.zeros((5, 6), np.float32), 'steps/observation/state',
     'shape'),
    (('steps', 'action'), np.full((6, 4), np.nan, np.float32), 'steps/action', 'NaN'),
    (('steps', 'policy_action'), np.full((6, 4), np.inf, np.float32), 'steps/policy_action',
     'NaN or inf'),
    (('steps', 'observation', 'top'), np.zeros((6, 8, 8, 3), np.float32), 'steps/observation/top',
     'uint8'),
    (('steps', 'is_first'), np.ones(6, bool), 'steps/is_first', 'step 0 only'),
    (('episode_metadata', 'source'), 'teleop', 'episode_metadata/source', 'must be one of'),
])
def test_validator_names_episode_and_field(path, value, field, words):
  ep = _break(_episode(episode_id='bad7'), path, value)
  with pytest.raises(schema.EpisodeError) as err:
    schema.validate_episode(ep, SPEC)
  assert err.value.episode == 'bad7' and err.value.field == field
  assert 'bad7' in str(err.value) and words in str(err.value)


def test_validator_rejects_empty_and_timeout_terminal():
  ep = _episode(episode_id='empty')
  for key in ('action', 'policy_action'):
    ep['steps'][key] = np.zeros((0, 4), np.float32)
  with pytest.raises(schema.EpisodeError, match='empty'):
    schema.validate_episode(ep, SPEC)
  ep = _episode(success=False)
  ep['steps']['is_terminal'][-1] = True
  with pytest.raises(schema.EpisodeError, match='time-out'):
    schema.validate_episode(ep, SPEC)


def test_spec_from_env_and_features_round_trip():
  from dm_env import specs
  obs_spec = {'top': specs.Array((16, 16, 3), np.uint8), 'state': specs.Array((7,), np.float32),
              'privileged': specs.Array((3,), np.float32)}
  spec = schema.spec_from_env(obs_spec, specs.BoundedArray((5,), np.float32, -1, 1))
  assert spec == schema.make_spec(('top',), 16, state_dim=7, action_dim=5, privileged_dim=3)
  assert schema.spec_from_features(schema.features(spec)) == spec
  state_only = schema.spec_from_env({'state': obs_spec['state']}, specs.Array((5,), np.float32))
  assert state_only.cameras == () and state_only.privileged_dim == 0


def test_tokenize_bytes_plus_one():
  tokens = text.tokenize('fold é', 10)
  assert tokens.dtype == np.int32 and tokens.shape == (10,)
  assert tokens[0] == ord('f') + 1 and (tokens[7:] == text.PAD_ID).all()
  assert text.detokenize(tokens) == 'fold é'
  assert text.tokenize('abcdef', 3).tolist() == [98, 99, 100]
