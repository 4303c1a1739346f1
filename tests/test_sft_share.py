"""One SFT checkpoint for every method (habc.run.sft_share): a run starts from an sft run."""

import json
import os

import jax
import pytest

from habc.run import pipeline, sft_share

jax.config.update('jax_compilation_cache_dir',
                  os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def smoke_config(method: str, task: str = 'insert'):
  import importlib
  config = importlib.import_module(f'experiments.{method}').get_config('smoke')
  config.task = task
  return config


def identity(method: str, **changes):
  config = smoke_config(method)
  for key, value in changes.items():
    section, name = key.split('.')
    config[section][name] = value
  return pipeline.config_identity(config)


def test_method_configs_differ_from_sft_only_where_sft_does_not_look():
  sft = identity('sft')
  for method in ('imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir', 'habc_naive_credit',
                 'awr_single_scalar', 'habc_mc', 'habc_extra_round'):
    assert sft_share.sft_differences(sft, identity(method)) == [], method


@pytest.mark.parametrize('key, value', [('data.num_demos', 7), ('model.embed_dim', 48),
                                        ('pipeline.sft_steps', 9), ('eval.episodes', 3),
                                        ('learner.sft_actor_lr', 5e-4)])
def test_a_difference_that_changes_sft_is_named(key, value):
  diff = sft_share.sft_differences(identity('sft'), identity('habc', **{key: value}))
  assert len(diff) == 1 and diff[0].strip().startswith(f'{key}:')


def test_online_learning_rate_is_free_only_where_sft_has_its_own():
  sft = identity('sft')
  assert sft['learner.sft_actor_lr'] > 0
  assert sft_share.sft_differences(sft, identity('habc', **{'learner.actor_lr': 1e-3})) == []
  # With sft_actor_lr = 0 the SFT stage runs at actor_lr, so a different actor_lr changes it.
  sft = identity('sft', **{'learner.sft_actor_lr': 0.0})
  diff = sft_share.sft_differences(sft, identity('habc', **{'learner.sft_actor_lr': 0.0,
                                                            'learner.actor_lr': 1e-3}))
  assert len(diff) == 1 and diff[0].strip().startswith('learner.actor_lr:')
  # An SFT stage that anneals towards actor_lr depends on it too.
  sft = identity('sft', **{'learner.sft_anneal_steps': 2})
  diff = sft_share.sft_differences(sft, identity('habc', **{'learner.sft_anneal_steps': 2,
                                                            'learner.actor_lr': 1e-3}))
  assert len(diff) == 1 and diff[0].strip().startswith('learner.actor_lr:')


def test_a_config_saved_before_a_key_was_added_reads_as_its_earlier_value(tmp_path):
  config = smoke_config('habc')
  saved = config.to_dict()  # As config.json holds it, written before the key existed.
  del saved['learner']['sft_anneal_steps']
  assert 'learner.sft_anneal_steps' in pipeline.ADDED_KEYS
  assert pipeline.config_identity(saved) == pipeline.config_identity(config)
  assert sft_share.sft_differences(pipeline.config_identity(saved), identity('habc')) == []
  # Such a workdir resumes under the current code...
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / pipeline.CONFIG_FILE).write_text(json.dumps(saved))
  pipeline.prepare_workdir(config, str(workdir))
  # ...but not with the new key set to something else.
  config.learner.sft_anneal_steps = 5
  with pytest.raises(pipeline.ConfigMismatchError, match='sft_anneal_steps'):
    pipeline.prepare_workdir(config, str(workdir))


def test_unfinished_sft_run_is_refused(tmp_path):
  sft_dir = tmp_path / 'sft'
  sft_dir.mkdir()
  (sft_dir / 'progress.json').write_text(json.dumps({'demos': True, 'sft': True}))
  with pytest.raises(sft_share.SFTShareError, match='eval_000'):
    sft_share.seed_from_sft(str(sft_dir), str(tmp_path / 'habc'), smoke_config('habc'))


def test_methods_start_from_the_same_sft_checkpoint(tmp_path):
  sft_dir = str(tmp_path / 'sft')
  pipeline.run(smoke_config('sft'), sft_dir, log=lambda _: None)

  config = smoke_config('habc_v')
  config.pipeline.rounds = 1  # Rounds do not change the SFT stage.
  workdir = str(tmp_path / 'habc_v')
  assert sft_share.seed_from_sft(sft_dir, workdir, config)
  # The SFT checkpoint arrives byte for byte.
  step = str(config.pipeline.sft_steps)
  for root, _, files in os.walk(os.path.join(sft_dir, 'checkpoints', step)):
    for name in files:
      src = os.path.join(root, name)
      dst = os.path.join(workdir, os.path.relpath(src, sft_dir))
      assert open(src, 'rb').read() == open(dst, 'rb').read(), dst
  assert not sft_share.seed_from_sft(sft_dir, workdir, config)  # Already seeded: left alone.
  events = []
  summary = pipeline.run(config, workdir, on_event=lambda e, i: events.append((e, i)),
                         log=lambda _: None)
  # Nothing of the SFT stage ran again: no demonstrations, no SFT updates, no round-0 evaluation.
  names = [e for e, _ in events]
  assert 'demo' not in names
  assert not [i for e, i in events if e == 'train_step' and i.get('stage') == 'sft']
  assert not [i for e, i in events if e == 'eval' and i.get('round') == 0]
  sft_summary = json.load(open(os.path.join(sft_dir, 'summary.json')))
  assert summary['rounds'][0]['eval'] == sft_summary['rounds'][0]['eval']
  assert [r['round'] for r in summary['rounds']] == list(range(config.pipeline.rounds + 1))

  # A run whose SFT stage would differ is refused, naming the key.
  other = smoke_config('habc')
  other.data.num_demos = 3
  with pytest.raises(sft_share.SFTShareError, match='data.num_demos'):
    sft_share.seed_from_sft(sft_dir, str(tmp_path / 'habc'), other)
  # A workdir that has progress of its own is not overwritten.
  own = tmp_path / 'own'
  own.mkdir()
  (own / 'progress.json').write_text(json.dumps({'demos': True}))
  with pytest.raises(sft_share.SFTShareError, match='progress of its own'):
    sft_share.seed_from_sft(sft_dir, str(own), smoke_config('habc'))


def test_a_run_takes_only_rounds_that_its_config_would_run_alike():
  """habc_ir may take habc's rounds (it differs in its name, its extra round and when IR switches
  on); a run that differs in anything else, has no more rounds, or switches IR on within the
  shared rounds is refused, naming why."""
  habc, ir = identity('habc'), identity('habc_ir')
  assert sft_share.round_differences(habc, ir) == []
  assert sft_share.round_differences(habc, identity('habc_extra_round')) == []
  assert 'credit.naive' in '\n'.join(
      sft_share.round_differences(habc, identity('habc_ir', **{'credit.naive': True})))
  assert 'no more than' in '\n'.join(sft_share.round_differences(habc, identity('habc')))
  early = identity('habc_ir', **{'pipeline.intervention_reweighting_from_round': 1})
  assert 'within the source' in '\n'.join(sft_share.round_differences(habc, early))


def test_habc_ir_goes_on_from_habc_rounds(tmp_path):
  """A habc_ir workdir seeded from a finished habc run runs its intervention-reweighting round
  only: rounds 0..R are habc's files and evaluations, untouched."""
  sft_dir, habc_dir, ir_dir = (str(tmp_path / n) for n in ('sft', 'habc', 'habc_ir'))
  pipeline.run(smoke_config('sft'), sft_dir, log=lambda _: None)
  habc = smoke_config('habc')
  sft_share.seed_from_sft(sft_dir, habc_dir, habc)
  with pytest.raises(sft_share.SFTShareError, match='has not finished its round'):
    sft_share.seed_from_rounds(habc_dir, ir_dir, smoke_config('habc_ir'))
  habc_summary = pipeline.run(habc, habc_dir, log=lambda _: None)
  rounds = habc.pipeline.rounds
  ir = smoke_config('habc_ir')
  assert sft_share.seed_from_rounds(habc_dir, ir_dir, ir) == rounds
  assert sft_share.seed_from_rounds(habc_dir, ir_dir, ir) == 0  # Already seeded: left alone.
  events = []
  summary = pipeline.run(ir, ir_dir, on_event=lambda e, i: events.append((e, i)),
                         log=lambda _: None)
  trained = {i.get('stage') for e, i in events if e == 'train_step'}
  assert trained == {f'round_{rounds + 1:03d}'}, trained
  assert {i.get('round') for e, i in events if e == 'eval'} == {rounds + 1}
  assert [r['round'] for r in summary['rounds']] == list(range(rounds + 2))
  for mine, theirs in zip(summary['rounds'], habc_summary['rounds']):
    assert mine['eval'] == theirs['eval']
  # A config that would have run the shared rounds differently is refused.
  other = smoke_config('habc_ir')
  other.credit.naive = True
  with pytest.raises(sft_share.SFTShareError, match='credit.naive'):
    sft_share.seed_from_rounds(habc_dir, str(tmp_path / 'other'), other)
