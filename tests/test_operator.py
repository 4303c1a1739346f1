"""The simulated operator: when it takes over, the flags it returns, hand-back, its rate."""

import numpy as np
import pytest

from habc import envs
from habc.envs import base
from habc.envs.operator import OperatorConfig, SimulatedOperator, make_config

A = base.ACTION_DIM
EXPERT_ACTION = np.full(A, 0.5, np.float32)
POLICY_ACTION = np.full(A, -0.25, np.float32)


class _FakeExpert:

  def act(self, env):
    return EXPERT_ACTION


class _FakeEnv:
  """Just the TaskEnv surface the operator uses; the test scripts the failure signals."""

  def __init__(self):
    self.progress, self.lost, self.time_left, self.done = 0.0, False, 1.0, False
    self.experts = 0

  def failure_signals(self):
    return {'progress': self.progress, 'lost': self.lost, 'time_left': self.time_left}

  def success(self):
    return self.done

  def make_expert(self, seed):
    self.experts += 1
    return _FakeExpert()


def _run(op, env, steps, progress_per_step=0.0):
  flags = []
  for _ in range(steps):
    action, flag = op.act(env, POLICY_ACTION)
    np.testing.assert_array_equal(action, EXPERT_ACTION if flag else POLICY_ACTION)
    flags.append(flag)
    env.progress += progress_per_step
  return flags


def test_no_takeover_while_the_policy_makes_progress():
  op = SimulatedOperator(seed=0, takeover_prob=1.0)
  assert not any(_run(op, _FakeEnv(), 60, progress_per_step=0.03))
  assert op.takeovers == 0


def test_stall_leads_to_takeover_after_the_reaction_time():
  cfg = OperatorConfig(takeover_prob=1.0, stall_steps=10, reaction_steps=2, min_policy_steps=1)
  op = SimulatedOperator(cfg, seed=0)
  env = _FakeEnv()
  flags = _run(op, env, 30)
  first = flags.index(True)
  # 1 step sets the best progress, then 10 stalled steps, then the reaction delay.
  assert first == 1 + cfg.stall_steps + cfg.reaction_steps - 1
  assert all(flags[first:])  # Without hand-back the operator keeps control.
  assert op.reason == 'stall' and op.takeovers == 1 and env.experts == 1


def test_lost_object_triggers_at_once():
  op = SimulatedOperator(seed=0, takeover_prob=1.0, reaction_steps=0, min_policy_steps=0)
  env = _FakeEnv()
  assert _run(op, env, 3, progress_per_step=0.1) == [False] * 3
  env.lost = True
  assert _run(op, env, 1) == [True]
  assert op.reason == 'lost'


def test_late_and_far_from_done_triggers():
  op = SimulatedOperator(seed=0, takeover_prob=1.0, reaction_steps=0, late_time_left=0.3,
                         late_progress=0.5)
  env = _FakeEnv()
  env.time_left = 0.2
  flags = _run(op, env, 10, progress_per_step=0.03)
  assert flags[:5] == [False] * 5  # min_policy_steps.
  assert flags[5] and op.reason == 'late'


def test_takeover_prob_zero_never_takes_over():
  op = SimulatedOperator(seed=0, takeover_prob=0.0)
  env = _FakeEnv()
  env.lost = True
  assert not any(_run(op, env, 40))
  assert op.events and op.events[0][1] == 'declined'


def test_hand_back_returns_control_to_the_policy():
  op = SimulatedOperator(seed=0, takeover_prob=1.0, handback_prob=1.0, handback_steps=5,
                         reaction_steps=0, stall_steps=4, max_takeovers=1)
  env = _FakeEnv()
  flags = _run(op, env, 40)
  first = flags.index(True)
  assert flags[first:first + 5] == [True] * 5
  assert not any(flags[first + 5:])  # Handed back, and no second takeover (max_takeovers=1).
  assert [e[1] for e in op.events] == ['takeover', 'handback']


def test_reset_forgets_the_episode():
  op = SimulatedOperator(seed=0, takeover_prob=1.0, reaction_steps=0)
  env = _FakeEnv()
  env.lost = True
  _run(op, env, 10)
  assert op.in_control
  op.reset()
  assert not op.in_control and op.takeovers == 0 and op.events == []
  assert _run(op, _FakeEnv(), 1) == [False]


def test_takeover_rate_follows_the_config():
  op = SimulatedOperator(seed=1, takeover_prob=0.5, reaction_steps=0)
  taken = []
  for _ in range(300):
    op.reset()
    env = _FakeEnv()
    env.lost = True
    taken.append(any(_run(op, env, 8)))
  assert 0.4 < np.mean(taken) < 0.6


def test_config_from_dict_and_errors():
  assert make_config({'takeover_prob': 0.3}).takeover_prob == 0.3
  assert SimulatedOperator({'stall_steps': 7}, 0).config.stall_steps == 7
  with pytest.raises(ValueError, match='unknown config keys'):
    make_config({'takeover_rate': 0.3})


def test_operator_completes_a_stalled_fold():
  """On the real task: a policy that does nothing stalls; the operator's expert finishes the fold
  from the middle of the episode."""
  env = envs.make('fold', seed=4, cameras=())
  op = SimulatedOperator(seed=0, takeover_prob=1.0, stall_steps=5, reaction_steps=1)
  ts = env.reset()
  op.reset()
  flags = []
  while not ts.last():
    action, flag = op.act(env, np.zeros(A, np.float32))
    flags.append(flag)
    ts = env.step(action)
  assert not flags[0] and flags[-1] and op.reason == 'stall'
  assert ts.discount == 0.0, 'the takeover should end in a success'
