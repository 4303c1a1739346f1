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
  """Policy-in-the-loop throughput next to the physics ceiling (one short episode, one worker)."""
  from habc.bench import rollout as rollout_bench
  assert rollout_bench.main(['x', '--tasks=insert', '--episodes=1', '--workers=1',
                             '--physics_steps=50', '--time_limit=16']) == 0
  out = capsys.readouterr().out
  row = next(line for line in out.splitlines() if line.startswith('| insert |'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert len(cells) == 7 and all(float(c.rstrip('%')) > 0 for c in cells[1:])
