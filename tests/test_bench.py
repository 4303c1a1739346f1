"""The learner and policy benchmarks print their tables (slow: they compile the default network)."""

import pytest

from habc.bench import __main__ as bench


@pytest.mark.slow
def test_learner_and_policy_benchmarks_print_tables(capsys):
  assert bench.main(['habc.bench', 'learner', '--steps=1', '--obs=state', '--batch_size=8']) == 0
  out = capsys.readouterr().out
  assert 'HABC step / SFT step' in out and '| habc ' in out
  assert bench.main(['habc.bench', 'policy', '--steps=1']) == 0
  assert 'share of execution time' in capsys.readouterr().out


def test_unknown_benchmark_prints_usage(capsys):
  assert bench.main(['habc.bench', 'nope']) == 2
  assert 'usage' in capsys.readouterr().err


def test_rollout_benchmark_prints_a_row_per_task(capsys):
  """Per variant: policy-in-the-loop throughput, raw physics on the same number of processes,
  the ratio, and a breakdown whose shares add up to the workers' time (one short episode)."""
  from habc.bench import rollout as rollout_bench
  assert rollout_bench.main(['x', '--tasks=insert', '--episodes=1', '--workers=1', '--rounds=1',
                             '--physics_seconds=0.2', '--time_limit=16']) == 0
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith('| insert |')]
  table, shares = rows[:len(rollout_bench.VARIANTS)], rows[len(rollout_bench.VARIANTS):]
  assert [r.split('|')[2].strip() for r in table] == list(rollout_bench.VARIANTS)
  for row in table:
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert len(cells) == 7
    steps, physics, ratio = float(cells[2]), float(cells[3]), float(cells[4].split('x')[0])
    assert steps > 0 and physics > 0 and abs(ratio - steps / physics) < 0.01
  assert len(shares) == len(rollout_bench.VARIANTS)
  for row in shares:
    cells = [float(c.strip().rstrip('%')) for c in row.strip('|').split('|')[2:]]
    assert len(cells) == len(rollout_bench.BREAKDOWN_HELP)
    assert cells[0] > 0  # Physics.
    assert 99.0 <= sum(cells) <= 101.0 or cells[-1] == 0.0  # Shares of the workers' time.


def test_breakdown_shares_of_worker_time():
  """The breakdown splits workers x wall time: counted physics is used as is, uncounted physics
  is estimated from the raw rate, waiting is split into policy, main-process IPC and the rest."""
  from habc.bench import rollout as rollout_bench
  worker = {'reset': 0.1, 'operator': 0.1, 'env_step': 5.0, 'physics': 3.0, 'render': 0.5,
            'record': 0.1, 'send': 0.2, 'wait': 3.0}
  main = {'wall': 5.0, 'policy': 1.0, 'receive': 0.1, 'send': 0.1, 'wait': 2.0}
  run = {'worker': worker, 'main': main, 'steps': 100}
  s = rollout_bench.breakdown(run, 2, mj_steps_per_s=1000.0, substeps=10)
  assert abs(s['physics'] - 0.3) < 1e-9 and abs(s['env_python'] - 0.15) < 1e-9
  assert abs(s['policy'] - 0.2) < 1e-9 and abs(s['main_ipc'] - 0.04) < 1e-9
  assert abs(s['other_workers'] - 0.06) < 1e-9
  assert abs(sum(s.values()) - 1.0) < 1e-9
  s = rollout_bench.breakdown(dict(run, worker=dict(worker, physics=0.0)), 2, 1000.0, 10)
  assert abs(s['physics'] - 0.1) < 1e-9  # 100 steps x 10 substeps at 1000 mj_step/s.
