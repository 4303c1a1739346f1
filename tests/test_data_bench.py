"""``python -m habc.bench data`` runs end to end at a tiny size and prints its table."""

from habc.bench import data as data_bench


def test_bench_prints_rates_and_ratio(capsys):
  assert data_bench.main(['data', '--episodes=2', '--steps=20', '--batches=3', '--batch_size=8',
                          '--workers=0', '--learner_rate=100', '--image_size=16']) == 0
  out = capsys.readouterr().out
  assert 'reader workers=0 prefetch=0' in out and 'reader workers=0 prefetch=2' in out
  assert 'learner rate from --learner_rate' in out and 'best reader / learner' in out
