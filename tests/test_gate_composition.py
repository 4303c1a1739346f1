"""habc.analysis.gate_composition: which head's advantage the gate follows on successful windows."""

import os

import numpy as np
import pytest

from habc.analysis import gate_composition
from habc.labeling import SampleKind


def _samples(p_v: float, n: int = 200, seed: int = 0, kind=SampleKind.SUCCESS) -> dict:
  rng = np.random.default_rng(seed)
  a_v, a_e = rng.normal(size=n), rng.normal(size=n)
  p = np.full(n, p_v)
  gate = 1 + np.tanh((1 - p) * a_v + p * a_e)
  return {'p_v': p, 'a_v': a_v, 'a_e': a_e, 'gate': gate, 'kind': np.full(n, int(kind))}


def test_uncertain_viability_makes_the_gate_follow_a_v():
  c = gate_composition.composition(_samples(p_v=0.05))
  assert c['windows'] == 200 and c['p_v'] == pytest.approx(0.05)
  assert c['efficiency_share'] < 0.2
  assert c['rho_v'] > 0.95 and abs(c['rho_e']) < 0.3


def test_likely_success_makes_the_gate_follow_a_e():
  c = gate_composition.composition(_samples(p_v=0.95))
  assert c['efficiency_share'] > 0.8
  assert c['rho_e'] > 0.95 and abs(c['rho_v']) < 0.3


def test_only_success_windows_count():
  success, failure = _samples(p_v=0.05, seed=1), _samples(p_v=0.95, seed=2, kind=SampleKind.FAILURE)
  mixed = {k: np.concatenate([success[k], failure[k]]) for k in success}
  assert gate_composition.composition(mixed) == gate_composition.composition(success)


def test_too_few_windows_and_a_constant_advantage():
  assert gate_composition.composition(_samples(p_v=0.5, n=2)) is None
  flat = _samples(p_v=0.5)
  flat['a_e'] = np.zeros(200)  # HABC-V has no efficiency advantage.
  c = gate_composition.composition(flat)
  assert np.isnan(c['rho_e']) and c['efficiency_share'] == 0.0


def test_missing_arrays_are_named():
  data = _samples(p_v=0.5)
  del data['a_e']
  with pytest.raises(KeyError, match='a_e'):
    gate_composition.composition(data)


def _write(workdir: str, round_index: int, split: str, samples: dict) -> None:
  os.makedirs(os.path.join(workdir, 'logs'), exist_ok=True)
  np.savez(os.path.join(workdir, 'logs', f'critic_round_{round_index:03d}_{split}.npz'), **samples)


def test_table_reads_each_splits_newest_round_and_averages_seeds(tmp_path, capsys):
  root = str(tmp_path)
  _write(os.path.join(root, 'pouch_habc_0'), 1, 'holdout', _samples(p_v=0.95))
  _write(os.path.join(root, 'pouch_habc_0'), 3, 'holdout', _samples(p_v=0.05))  # The newest.
  _write(os.path.join(root, 'pouch_habc_1'), 2, 'holdout', _samples(p_v=0.05, seed=3))
  _write(os.path.join(root, 'pouch_habc_1'), 2, 'next_round', _samples(p_v=0.95, n=50))
  lines = gate_composition.table(root, ['pouch'], ['habc'], [0, 1, 2])
  assert len(lines) == 4
  holdout, next_round = lines[2].split(' | '), lines[3].split(' | ')
  assert holdout[2:6] == ['holdout', '2', '400', '0.05']
  assert next_round[2:6] == ['next_round', '1', '50', '0.95']
  assert gate_composition.main([f'--root={root}', '--tasks=pouch', '--methods=habc']) == 0
  assert 'pouch | habc | holdout' in capsys.readouterr().out


def test_main_says_what_is_missing(tmp_path, capsys):
  assert gate_composition.main([f'--root={tmp_path}/nowhere']) == 2
  assert 'not a folder' in capsys.readouterr().err
  assert gate_composition.main([f'--root={tmp_path}']) == 1
  assert 'no critic samples' in capsys.readouterr().err
