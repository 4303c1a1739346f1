"""Nearest-demonstration coverage of online data (habc.data.coverage, data/coverage.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from habc.data import coverage, synthetic, writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _episode(states, actions, human):
  return {'steps': {'observation': {'state': np.asarray(states, np.float32)},
                    'action': np.asarray(actions, np.float32),
                    'is_intervention': np.asarray(human, bool)},
          'episode_metadata': {'episode_id': 'e'}}


def test_nearest_matches_brute_force_across_chunks():
  rng = np.random.default_rng(0)
  query, ref = rng.normal(size=(37, 5)), rng.normal(size=(50, 5))
  dist, index = coverage.nearest(query, ref, chunk=8)
  full = np.linalg.norm(query[:, None] - ref[None], axis=-1)
  np.testing.assert_array_equal(index, full.argmin(1))
  np.testing.assert_allclose(dist, full.min(1), atol=1e-9)
  with pytest.raises(ValueError, match='non-empty ref'):
    coverage.nearest(query, np.zeros((0, 5)))


def test_operator_copying_demos_is_covered_and_policy_off_support_is_not():
  rng = np.random.default_rng(1)

  def act(states):  # The demonstrator's policy: a fixed function of the state.
    return np.tanh(states[:, :2] * 2.0)

  demos = []
  for _ in range(10):
    s = rng.normal(size=(40, 3))
    demos.append(_episode(s, act(s), np.zeros(40)))
  online = []
  for i in range(4):
    source = demos[i]['steps']
    s_demo = source['observation']['state'][:20]
    s_far = rng.normal(size=(20, 3)) + 8.0  # Far outside the demonstrations.
    states = np.concatenate([s_demo, s_far])
    actions = np.concatenate([act(s_demo), -act(s_far) + 3.0])
    online.append(_episode(states, actions, np.r_[np.ones(20), np.zeros(20)]))
  rows = {r.name: r for r in coverage.compare(demos, online, held_out_fraction=0.3)}
  held, op, pol = (rows['held-out demonstrations'], rows['operator steps'],
                   rows['policy steps'])
  assert (held.count, op.count, pol.count) == (120, 80, 80)
  assert pol.state_distance > 5 * held.state_distance
  assert pol.action_gap > 3 * held.action_gap
  # The operator's states are demonstration states, seen in the reference set unless their demo
  # was held out; either way they are no farther than a new demonstration's.
  assert op.state_distance <= held.state_distance + 1e-6
  assert op.action_gap <= held.action_gap + 1e-6
  assert '| operator steps | 80 |' in coverage.table(rows.values())


def test_needs_state_and_two_demos():
  e = _episode(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3))
  with pytest.raises(ValueError, match='at least 2'):
    coverage.compare([e], [])
  no_state = {'steps': {'observation': {}, 'action': np.zeros((3, 1)),
                        'is_intervention': np.zeros(3, bool)},
              'episode_metadata': {'episode_id': 'x'}}
  with pytest.raises(ValueError, match="'x' has no observation/state"):
    coverage.compare([e, e], [no_state])
  with pytest.raises(ValueError, match='which='):
    coverage.episode_steps([e], 'human')


def test_workdir_round_trip_and_command(tmp_path):
  rng = np.random.default_rng(2)
  work = tmp_path / 'run'
  demos = [synthetic.synthetic_episode(rng, num_steps=20, cameras=(), source='demo',
                                       episode_id=f'd{i}') for i in range(5)]
  rollouts = [synthetic.synthetic_episode(rng, num_steps=20, cameras=(), interventions=[(5, 12)],
                                          episode_id=f'r{i}') for i in range(3)]
  writer.write_episodes(str(work / 'data' / 'demos'), demos)
  writer.write_episodes(str(work / 'data' / 'round_001'), rollouts)
  loaded_demos, online = coverage.load_workdir(str(work))
  assert (len(loaded_demos), len(online)) == (5, 3)
  rows = coverage.compare(loaded_demos, online)
  assert rows[1].count == 3 * 7 and rows[2].count == 3 * 13
  with pytest.raises(FileNotFoundError, match='no data/demos'):
    coverage.load_workdir(str(tmp_path))
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'data', 'coverage.py'),
                        f'--workdirs={work}'], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert '5 demonstrations, 3 online episodes' in out.stdout
  assert '| operator steps | 21 |' in out.stdout
