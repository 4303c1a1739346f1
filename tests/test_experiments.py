"""Every experiment file loads for every preset, differs from HABC only where it should, and
(slow) runs one learner update."""

import importlib
import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments import presets

METHODS = ('sft', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir', 'habc_naive_credit',
           'awr_single_scalar', 'sft_continued', 'habc_mc', 'habc_extra_round')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(method, preset='default'):
  return importlib.import_module(f'experiments.{method}').get_config(preset)


def flat(config):
  out = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f'{prefix}{k}.')
      else:
        out[prefix + k] = v
  walk(config.to_dict(), '')
  return out


def test_every_method_has_a_file():
  files = {f[:-3] for f in os.listdir(os.path.join(ROOT, 'experiments')) if f.endswith('.py')}
  assert set(METHODS) <= files


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('preset', presets.PRESETS)
def test_loads_for_every_preset(method, preset):
  c = load(method, preset)
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.name == method and c.preset == preset
  assert c.method.weighting in ('habc', 'habc_v', 'bc', 'recap', 'awr')
  for section in ('model', 'credit', 'method', 'learner', 'data', 'rollout', 'operator', 'eval',
                  'pipeline', 'runtime'):
    assert section in c


def test_methods_differ_only_in_method_values():
  reference = flat(load('habc'))
  allowed = {'name', 'method.weighting', 'method.use_autonomous', 'method.intervention_reweighting',
             'credit.naive', 'data.demo_fraction', 'pipeline.rounds',
             'pipeline.intervention_reweighting_from_round', 'critic.efficiency_target'}
  for method in METHODS:
    diff = {k for k, v in flat(load(method)).items() if reference.get(k) != v}
    assert diff <= allowed, f'{method} also changes {sorted(diff - allowed)}'


def test_method_choices():
  assert load('sft').pipeline.rounds == 0 and load('sft').method.weighting == 'bc'
  dagger = load('imit_dagger')
  assert dagger.method.weighting == 'bc' and not dagger.method.use_autonomous
  assert dagger.data.demo_fraction == 0.5
  control = load('sft_continued')  # Demonstrations only, for as many updates as the others.
  assert control.method.weighting == 'bc' and control.data.demo_fraction == 1.0
  assert control.pipeline.rounds == load('habc').pipeline.rounds
  assert load('imit_recap').method.weighting == 'recap'
  assert load('habc_v').method.weighting == 'habc_v'
  assert load('habc_naive_credit').credit.naive and not load('habc').credit.naive
  assert load('awr_single_scalar').method.weighting == 'awr'
  mc = load('habc_mc')  # HABC with the Monte-Carlo efficiency target, nothing else changed.
  assert mc.critic.efficiency_target == 'monte_carlo'
  assert load('habc').critic.efficiency_target == 'td'
  assert {k: v for k, v in flat(mc).items() if k not in ('name', 'critic.efficiency_target')} == {
      k: v for k, v in flat(load('habc')).items() if k not in ('name', 'critic.efficiency_target')}
  ir = load('habc_ir')
  assert ir.pipeline.rounds == load('habc').pipeline.rounds + 1
  assert ir.pipeline.intervention_reweighting_from_round == ir.pipeline.rounds
  # IR's control: the same extra round, reweighting off; otherwise HABC+IR.
  extra = load('habc_extra_round')
  assert extra.pipeline.rounds == ir.pipeline.rounds
  assert not extra.method.intervention_reweighting
  assert extra.pipeline.intervention_reweighting_from_round == -1
  diff = {k for k, v in flat(extra).items() if flat(ir).get(k) != v}
  assert diff == {'name', 'pipeline.intervention_reweighting_from_round'}, diff


def test_paper_preset_scale():
  c = load('habc', 'paper')
  assert (c.data.num_demos, c.rollout.episodes_per_round, c.pipeline.steps_per_round,
          c.learner.batch_size, c.eval.episodes) == (200, 100, 6000, 256, 50)
  with pytest.raises(ValueError, match='Unknown preset'):
    load('habc', 'huge')


def test_study_preset_scale():
  c, default = load('habc', 'study'), load('habc', 'default')
  assert (c.obs, c.rollout.episodes_per_round, c.eval.episodes, c.pipeline.rounds) == (
      'state', 100, 100, 3)
  assert c.pipeline.steps_per_round > default.pipeline.steps_per_round
  assert c.critic.curve_every > 0 and c.critic.curve_every % c.pipeline.log_every == 0
  assert c.data.kind_fractions.to_dict() == default.data.kind_fractions.to_dict()
  # The study's runs share the serving of its first runs (one padded call over all slots).
  assert (c.rollout.policy_batch, c.runtime.episodes_per_worker) == (0, 1)
  assert (default.rollout.policy_batch, default.runtime.episodes_per_worker) == (1, 2)
  import launch
  assert launch.PRESETS == presets.PRESETS  # launch.py's --preset offers every preset.


def test_loads_through_config_flags():
  """The launcher's path: ml_collections loads '<file>:<preset>'."""
  from ml_collections.config_flags import config_flags
  parser = config_flags.ConfigFileFlagParser(name='config')
  c = parser.parse(os.path.join(ROOT, 'experiments', 'habc_v.py') + ':smoke')
  assert c.name == 'habc_v' and c.preset == 'smoke'


@pytest.mark.slow
@pytest.mark.parametrize('method', METHODS)
def test_one_update(method):
  from habc.learning import learner as learner_lib
  from habc.learning import synthetic
  from habc.networks import build_model
  c = load(method, 'smoke')
  batch = synthetic.synthetic_batch(c.learner.batch_size, action_dim=10, state_dim=20,
                                    horizon=c.model.action_horizon, vision=False)
  model = build_model(c, 10)
  learner = learner_lib.Learner(c, model, batch, seed=0)
  metrics = learner.update(batch, intervention_reweighting=bool(
      c.pipeline.intervention_reweighting_from_round > 0))
  assert learner.step == 1
  assert np.isfinite(metrics['actor/loss'])
  jax.block_until_ready(learner.state)


def _run_summary(method, seed, successes, episodes=10, length=50.0):
  return {'task': 'fold', 'method': method, 'seed': seed, 'preset': 'default', 'seconds': 1.0,
          'rounds': [{'round': r, 'episodes': episodes, 'successes': k,
                      'success_rate': k / episodes, 'mean_success_length': length}
                     for r, k in enumerate(successes)]}


def test_sweep_table_pools_seeds_with_wilson(tmp_path):
  from experiments import sweep
  from habc.run import evaluation
  for s in [_run_summary('habc', 0, [3, 5]), _run_summary('habc', 1, [4, 8], length=40.0),
            _run_summary('sft', 0, [3])]:
    with open(tmp_path / f'fold_{s["method"]}_{s["seed"]}.json', 'w') as f:
      import json
      json.dump(s, f)
  path = sweep.write_table(str(tmp_path), 'fold')
  text = open(path).read()
  habc_row = next(line for line in text.splitlines() if line.startswith('| habc'))
  lo, hi = evaluation.wilson_interval(13, 20)
  assert f'65.0% [{100 * lo:.0f}, {100 * hi:.0f}]' in habc_row and '| 0,1 |' in habc_row
  assert habc_row.endswith('| 45.0 |')
  sft_row = next(line for line in text.splitlines() if line.startswith('| sft'))
  assert '30.0%' in sft_row and sft_row.count('| - |') == 1


def test_sweep_small_summary_keeps_what_the_table_needs():
  from experiments import sweep
  summary = {'task': 'fold', 'method': 'habc', 'seed': 0, 'preset': 'smoke', 'rounds': [
      {'round': 0, 'eval': {'episodes': 4, 'successes': 1, 'success_rate': 0.25, 'ci_low': 0.05,
                            'ci_high': 0.7, 'mean_success_length': 30.0}},
      {'round': 1, 'eval': {'episodes': 4, 'successes': 2, 'success_rate': 0.5, 'ci_low': 0.15,
                            'ci_high': 0.85, 'mean_success_length': 25.0},
       'collect': {'successes': 3, 'episodes_with_intervention': 2},
       'train': {'gate/success_mean': 0.8}}]}
  small = sweep.small_summary(summary, 12.0)
  assert small['rounds'][1]['gate_success_mean'] == 0.8
  assert small['rounds'][1]['episodes_with_intervention'] == 2
  assert small['seconds'] == 12.0
  assert 'workdir_gate' not in small and 'machine' not in small


def test_sweep_machine_info_reads_the_cpu(tmp_path):
  from experiments import sweep
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512f\n'
                     'processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512f\n')
  info = sweep.machine_info(str(cpuinfo))
  assert info['cpu'] == 'Some CPU 9000' and info['avx512f'] is True
  assert info['cores'] >= 1 and info['jax']
  cpuinfo.write_text('model name\t: Other\nflags\t\t: fpu avx2 avx512_bf16\n')
  assert sweep.machine_info(str(cpuinfo))['avx512f'] is False
  missing = sweep.machine_info(str(tmp_path / 'none'))
  assert missing['cpu'] and missing['avx512f'] is False
  small = sweep.small_summary({'task': 'fold', 'rounds': []}, 1.0, machine=info)
  assert small['machine'] == info


def test_sweep_keeps_the_workdir_gate_readings_in_the_summary(tmp_path):
  import json
  import numpy as np
  from experiments import sweep
  workdir = tmp_path / 'fold_habc_0'
  (workdir / 'logs').mkdir(parents=True)
  np.savez(workdir / 'logs' / 'gates_round_001.npz', gate=np.array([0.5, 1.5, 9.0]),
           kind=np.array([1, 1, 0]))
  (workdir / 'config.json').write_text(json.dumps({'pipeline': {'sft_steps': 10,
                                                                'steps_per_round': 5}}))
  (workdir / 'logs' / 'metrics.jsonl').write_text(
      json.dumps({'step': 15, 'prefix': 'train', 'gate/success_mean': 0.9, 'count/success': 2}))
  summary = {'task': 'fold', 'method': 'habc', 'seed': 0, 'preset': 'smoke', 'rounds': [
      {'round': 0, 'eval': {'episodes': 2, 'successes': 1}},
      {'round': 1, 'eval': {'episodes': 2, 'successes': 1}}]}
  small = sweep.small_summary(summary, 1.0, workdir=str(workdir))
  assert small['workdir_gate'] == {'round': 1, 'logged_sum': 1.8, 'logged_windows': 2,
                                   'sample_sum': 2.0, 'sample_windows': 2}
  # An older summary without it gets it from the backfill, once.
  results = tmp_path / 'results'
  results.mkdir()
  del small['workdir_gate']
  (results / 'fold_habc_0.json').write_text(json.dumps(small))
  assert sweep.backfill_outcomes(str(results), str(tmp_path)) == ['fold_habc_0.json']
  assert json.loads((results / 'fold_habc_0.json').read_text())['workdir_gate']['round'] == 1
  assert sweep.backfill_outcomes(str(results), str(tmp_path)) == []


def _eval_file(workdir, r, outcomes):
  import json
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  with open(os.path.join(workdir, 'eval', f'round_{r:03d}.jsonl'), 'w') as f:
    for i, ok in enumerate(outcomes):
      f.write(json.dumps({'episode_id': f'eval{r:03d}-{i:05d}', 'seed': 100 + i,
                          'success': bool(ok), 'length': 10}) + '\n')


def test_sweep_backfills_per_trial_outcomes_and_checks_them(tmp_path):
  import json
  from experiments import sweep
  results, root = tmp_path / 'results', tmp_path / 'runs'
  results.mkdir()
  small = {'task': 'fold', 'method': 'habc', 'seed': 0, 'preset': 'smoke', 'rounds': [
      {'round': 0, 'episodes': 3, 'successes': 1}, {'round': 1, 'episodes': 3, 'successes': 2}]}
  (results / 'fold_habc_0.json').write_text(json.dumps(small))
  (results / 'fold_sft_0.json').write_text(json.dumps(dict(small, method='sft')))  # No workdir.
  _eval_file(str(root / 'fold_habc_0'), 0, [0, 1, 0])
  _eval_file(str(root / 'fold_habc_0'), 1, [1, 1, 0])
  assert sweep.backfill_outcomes(str(results), str(root)) == ['fold_habc_0.json']
  rounds = json.loads((results / 'fold_habc_0.json').read_text())['rounds']
  assert rounds[1]['eval_outcomes'] == {'seeds': [100, 101, 102], 'success': '110',
                                        'length': [10, 10, 10]}
  assert rounds[0]['eval_outcomes']['success'] == '010' and rounds[0]['successes'] == 1
  assert 'eval_outcomes' not in json.loads((results / 'fold_sft_0.json').read_text())['rounds'][0]
  assert sweep.backfill_outcomes(str(results), str(root)) == []  # Nothing left to add.
  # A workdir whose evaluation disagrees with the summary is refused, not merged.
  _eval_file(str(root / 'fold_sft_0'), 0, [1, 1, 1])
  with pytest.raises(ValueError, match='does not belong to this summary'):
    sweep.backfill_outcomes(str(results), str(root))


def test_sweep_times_a_run_over_all_its_starts(tmp_path):
  import json
  import subprocess
  import sys
  from experiments import sweep
  workdir = str(tmp_path / 'run')
  # A first piece that fails after 0.3 s: the error comes through and its time is kept.
  with pytest.raises(subprocess.CalledProcessError):
    sweep.run_timed([sys.executable, '-c', 'import time, sys; time.sleep(0.3); sys.exit(3)'],
                    workdir, tick=0.05)
  with open(os.path.join(workdir, sweep.TIME_FILE)) as f:
    first = json.load(f)['seconds']
  assert 0.3 <= first < 30
  total = sweep.run_timed([sys.executable, '-c', 'import time; time.sleep(0.2)'], workdir,
                          tick=0.05)
  assert total >= first + 0.2
  with open(os.path.join(workdir, sweep.TIME_FILE)) as f:
    assert json.load(f)['seconds'] == pytest.approx(total, abs=0.05)


@pytest.mark.slow
def test_sweep_smoke_end_to_end(tmp_path):
  import subprocess
  import sys
  cmd = [sys.executable, os.path.join(ROOT, 'experiments', 'sweep.py'), '--task=insert',
         '--preset=smoke', '--methods=sft,habc_v', '--seeds=0', f'--root={tmp_path / "runs"}',
         f'--results={tmp_path / "results"}', '--config.eval.episodes=2']
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  table = open(tmp_path / 'results' / 'comparison_insert.md').read()
  assert '| sft |' in table and '| habc_v |' in table
  assert (tmp_path / 'results' / 'insert_habc_v_0.json').exists()
  # Started again, it skips the finished runs.
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert again.returncode == 0 and again.stdout.count('done already') == 2


def test_sweep_records_the_settings_a_run_changed(tmp_path):
  import json
  from experiments import sweep
  from habc.run import pipeline

  def saved(overrides):
    config = sweep.experiment_config('habc', 'smoke', 'fold', 3, overrides)
    return json.loads(json.dumps(config.to_dict(), default=list))

  assert sweep.run_settings(saved([]), 'habc', 'smoke', 'fold', 3) == {}
  # The trial count, the observation mode and the runtime section are not settings.
  assert sweep.run_settings(saved(['--config.eval.episodes=7', '--config.runtime.progress=False',
                                   '--config.obs=vision']), 'habc', 'smoke', 'fold', 3) == {}
  assert sweep.run_settings(saved(['--config.learner.sft_anneal_steps=20']),
                            'habc', 'smoke', 'fold', 3) == {'learner.sft_anneal_steps': 20}
  # A config.json saved before a key existed reads as the key's earlier value: no setting.
  old = saved([])
  del old['learner']['sft_anneal_steps']
  assert 'learner.sft_anneal_steps' in pipeline.ADDED_KEYS
  assert sweep.run_settings(old, 'habc', 'smoke', 'fold', 3) == {}
  # The backfill adds them to a summary from its workdir's config.json.
  results, root = tmp_path / 'results', tmp_path / 'runs'
  results.mkdir()
  (root / 'fold_habc_3').mkdir(parents=True)
  (root / 'fold_habc_3' / 'config.json').write_text(
      json.dumps(saved(['--config.learner.sft_anneal_steps=20'])))
  small = {'task': 'fold', 'method': 'habc', 'seed': 3, 'preset': 'smoke', 'rounds': []}
  (results / 'fold_habc_3.json').write_text(json.dumps(small))
  assert sweep.backfill_outcomes(str(results), str(root)) == ['fold_habc_3.json']
  assert json.loads((results / 'fold_habc_3.json').read_text())['settings'] == {
      'learner.sft_anneal_steps': 20}
  assert sweep.backfill_outcomes(str(results), str(root)) == []


def test_sweep_carries_held_out_critic_numbers_into_the_comparison(tmp_path):
  from experiments import sweep
  from habc.run import critic_diagnostics
  workdir = tmp_path / 'fold_habc_0'
  diag = {'windows': 10, 'viability': {'auc': 0.9, 'brier': 0.1},
          'efficiency': {'r2': 0.7, 'mae': 1.0}, 'gate': {'saturated_fraction_online': 0.02},
          'actor_batches': {'online_nonzero_fraction_mean': 0.6,
                            'online_ess_fraction_mean': 0.5}}
  critic_diagnostics.update_file(str(workdir / 'logs'), 1, 'holdout', diag)
  critic_diagnostics.update_file(str(workdir / 'logs'), 1, 'next_round',
                                 dict(diag, viability={'auc': 0.7, 'brier': 0.2}))
  rows = sweep.critic_headlines(str(workdir))
  assert rows[0]['round'] == 1 and rows[0]['holdout']['auc'] == 0.9
  summaries = [{'method': 'habc', 'seed': s, 'rounds': [], 'critic': rows} for s in (0, 1)]
  table = sweep.critic_table(summaries)
  # The next round's rollouts are the measure where they exist.
  assert '| habc | 2 | 1 | 0.700 | 0.200 | 0.700 | 2.0 | 60.0 | 50.0 |' in table
  assert sweep.critic_table([{'method': 'sft', 'rounds': []}]) == ''


def test_sweep_configs_parse_overrides_as_launch_does():
  """experiments/sweep.py builds a run's config through ml_collections' config_flags, the parser of
  launch.py's --config flag: values take their key's type and a bad one is refused, naming it."""
  from absl import flags
  from experiments import sweep
  config = sweep.experiment_config('habc', 'smoke', 'pouch', 5, [
      '--config.learner.batch_size=4', '--config.runtime.progress=false',
      '--config.obs=vision'])
  assert (config.task, config.seed) == ('pouch', 5)
  assert config.learner.batch_size == 4 and isinstance(config.learner.batch_size, int)
  assert config.runtime.progress is False and config.obs == 'vision'
  with pytest.raises(flags.IllegalFlagValueError, match='config.learner.batch_size=many'):
    sweep.experiment_config('habc', 'smoke', 'pouch', 5, ['--config.learner.batch_size=many'])
  for key in ('learner.no_such_key', 'no_such_section.key'):  # Refused, as launch.py refuses it.
    with pytest.raises((KeyError, AttributeError), match='no_such'):
      sweep.experiment_config('habc', 'smoke', 'pouch', 5, [f'--config.{key}=1'])


def test_sweep_config_is_the_one_launch_builds(tmp_path):
  """The sweep's config of a run is launch.py's: the same build_config, so --print_config of the
  same command prints the same keys and values (a hardware task's station settings included)."""
  import subprocess
  import sys
  import launch
  from experiments import sweep
  (tmp_path / 'episode_0.hdf5').write_bytes(b'')
  overrides = ['--config.learner.batch_size=4', '--config.operator.takeover_prob=0.25',
               f'--config.data.teleop_dir={tmp_path}']
  for task in ('pouch', 'hw_fold'):
    config = sweep.experiment_config('habc_v', 'smoke', task, 3, overrides)
    printed = subprocess.run(
        [sys.executable, 'launch.py', f'--task={task}', '--experiment=experiments/habc_v.py',
         '--preset=smoke', '--seed=3', '--print_config', *overrides], cwd=sweep.ROOT,
        capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.strip() == launch.format_config(config).strip()
  assert config.runtime.num_workers == 1 and not config.operator.enabled  # The station's.


def test_operator_reaction_steps_reach_the_workers():
  """operator.reaction_steps (issue 26's credit variant) goes to the simulated operator of every
  worker, and a value out of range is refused."""
  from habc.envs import operator as operator_lib
  from habc.run import backend as backend_lib
  c = load('habc_naive_credit', 'study')
  assert backend_lib.Backend(c).worker_config().operator['reaction_steps'] == 2
  c.operator.reaction_steps = 16
  operator = backend_lib.Backend(c).worker_config().operator
  assert operator_lib.make_config(operator).reaction_steps == 16
  from habc import config_checks
  c.operator.reaction_steps = -1
  with pytest.raises(config_checks.ConfigError, match='reaction_steps'):
    config_checks.check(c, paths=False)


def test_sweep_starts_habc_ir_from_habc_when_its_run_is_done(tmp_path):
  """--share_rounds (default): habc_ir takes habc's finished run of the same seed (its summary is
  in --results); without that summary, or with --noshare_rounds, it starts from the SFT run."""
  import json
  import subprocess
  import sys
  root, results = tmp_path / 'runs', tmp_path / 'results'
  (root / 'insert_habc_0').mkdir(parents=True)
  results.mkdir()

  def dry(*flags):
    cmd = [sys.executable, os.path.join(ROOT, 'experiments', 'sweep.py'), '--task=insert',
           '--preset=smoke', '--methods=habc_ir', '--seeds=0', f'--root={root}',
           f'--results={results}', '--dry_run', *flags]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout

  assert 'takes the rounds of' not in dry()  # habc has not finished.
  (results / 'insert_habc_0.json').write_text(json.dumps(
      {'task': 'insert', 'method': 'habc', 'seed': 0, 'preset': 'smoke', 'rounds': []}))
  assert f'insert_habc_ir_0 takes the rounds of {root / "insert_habc_0"}' in dry()
  assert (f'insert_habc_extra_round_0 takes the rounds of {root / "insert_habc_0"}'
          in dry('--methods=habc_extra_round'))
  assert 'takes the rounds of' not in dry('--noshare_rounds')
