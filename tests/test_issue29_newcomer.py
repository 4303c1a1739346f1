"""Issue 29, the newcomer path: a smoke sweep is not skipped because of a default-preset summary,
and ``python -m habc.data.stats DIR`` prints the statistics (it did nothing and exited 0)."""

import json
import os
import subprocess
import sys

import numpy as np

from habc.data import synthetic, writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sweep_skip_check_compares_preset_and_settings(tmp_path):
  from experiments import sweep
  path = str(tmp_path / 'insert_habc_0.json')
  json.dump({'task': 'insert', 'method': 'habc', 'seed': 0, 'preset': 'default', 'settings': {},
             'rounds': []}, open(path, 'w'))
  assert sweep.summary_mismatch(path, 'default', {}) is None
  reason = sweep.summary_mismatch(path, 'smoke', {})
  assert "preset 'default', not 'smoke'" in reason
  reason = sweep.summary_mismatch(path, 'default', {'learner.sft_anneal_steps': 1000})
  assert "settings {}, not {'learner.sft_anneal_steps': 1000}" in reason
  assert sweep.default_dirs('default') == ('workdirs/sweep', 'results')
  assert sweep.default_dirs('smoke') == (os.path.join('workdirs', 'sweep', 'smoke'),
                                         os.path.join('workdirs', 'sweep', 'smoke', 'results'))


def test_sweep_refuses_to_skip_a_run_of_another_preset(tmp_path):
  results = tmp_path / 'results'
  results.mkdir()
  json.dump({'task': 'insert', 'method': 'habc_v', 'seed': 0, 'preset': 'default',
             'settings': {}, 'rounds': []}, open(results / 'insert_habc_v_0.json', 'w'))
  cmd = [sys.executable, os.path.join(ROOT, 'experiments', 'sweep.py'), '--task=insert',
         '--preset=smoke', '--methods=habc_v', '--seeds=0', '--noshare_sft', '--dry_run',
         f'--results={results}', f'--root={tmp_path / "runs"}']
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "holds another run: preset 'default', not 'smoke'" in result.stderr
  assert 'done already' not in result.stdout
  assert 'Give this sweep its own --results and --root' in result.stderr


def test_stats_module_prints_and_fails_on_a_non_dataset(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / 'ds')
  writer.write_episodes(path, [synthetic.synthetic_episode(rng, num_steps=6, episode_id=f'e{i}',
                                                           privileged_dim=2) for i in range(2)])
  cmd = [sys.executable, '-m', 'habc.data.stats']
  shown = subprocess.run(cmd + [path, '--save'], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert shown.stdout.startswith(f'{path}: 2 episodes, 12 steps (statistics computed now')
  assert '  state [' in shown.stdout and '  action [' in shown.stdout
  assert os.path.exists(os.path.join(path, 'habc_stats.json'))
  again = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert 'statistics saved habc_stats.json' in again.stdout
  missing = subprocess.run(cmd + [str(tmp_path / 'nope')], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
  assert missing.returncode == 1 and 'is not an RLDS dataset' in missing.stderr
  usage = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert usage.returncode == 2 and 'usage: python -m habc.data.stats' in usage.stdout
