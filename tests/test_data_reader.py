"""The batch reader: windows and credit labels from disk, mixing, statistics, flat memory."""

import os

import numpy as np
import pytest

from habc import labeling
from habc.data import reader, schema, stats as stats_lib, synthetic, writer

CAMS = ('top', 'wrist')


def _tagged(rng, index, *, num_steps, interventions=(), success=True, source='rollout',
            cameras=CAMS, image_size=8):
  """An episode whose state[:, 0] is its index and state[:, 1] the step."""
  ep = synthetic.synthetic_episode(rng, num_steps=num_steps, cameras=cameras,
                                   image_size=image_size, privileged_dim=3, success=success,
                                   interventions=interventions, source=source,
                                   episode_id=f'{source}{index}')
  ep['steps']['observation']['state'][:, 0] = index
  ep['steps']['observation']['state'][:, 1] = np.arange(num_steps)
  return ep


@pytest.fixture(scope='module')
def rollouts(tmp_path_factory):
  """Four rollouts: interventions in two of them, two failures."""
  path = str(tmp_path_factory.mktemp('data') / 'rollouts')
  rng = np.random.default_rng(0)
  episodes = [
      _tagged(rng, 0, num_steps=30, interventions=[(8, 16)], success=True),
      _tagged(rng, 1, num_steps=25, success=False),
      _tagged(rng, 2, num_steps=40, interventions=[(5, 9), (20, 30)], success=False),
      _tagged(rng, 3, num_steps=20, success=True),
  ]
  writer.write_episodes(path, episodes)
  return path, episodes


def _all_windows(path, episodes, **kwargs):
  """One epoch of batches, with each row's (episode, anchor) recovered from the state."""
  stream = reader.make_batches(path, num_epochs=1, batch_size=16, cameras=CAMS, seed=3, **kwargs)
  stats = stats_lib.load_stats(path)
  rows = []
  for batch in stream:
    state = stats.unnormalise('state', batch['obs']['state'][:, :6])
    next_state = stats.unnormalise('state', batch['next_obs']['state'][:, :6])
    for i in np.flatnonzero(batch['valid']):
      rows.append((int(round(state[i, 0])), int(round(state[i, 1])), int(round(next_state[i, 1])),
                   {k: v[i] for k, v in batch.items() if k not in ('obs', 'next_obs')}, batch, i))
  stream.close()
  return rows


def test_one_epoch_yields_every_window_with_its_labels(rollouts):
  path, episodes = rollouts
  horizon, offset, min_human = 4, 3, 2
  rows = _all_windows(path, episodes, horizon=horizon, next_offset=offset,
                      min_human_steps=min_human)
  assert sorted((e, t) for e, t, *_ in rows) == sorted(
      (e, t) for e, ep in enumerate(episodes) for t in range(len(ep['steps']['action']) - 1))
  stats = stats_lib.load_stats(path)
  for e, t, next_t, row, batch, i in rows:
    steps = episodes[e]['steps']
    win = labeling.make_windows(steps['is_intervention'], episodes[e]['episode_metadata']['success'],
                                horizon=horizon, next_offset=offset, min_human_steps=min_human)
    assert next_t == win.next_index[t]
    for key in ('kind', 'outcome', 'viability_mask', 'efficiency_mask', 'next_is_terminal',
                'action_mask'):
      np.testing.assert_array_equal(row[key], getattr(win, key)[t], err_msg=f'{key} {e} {t}')
    actions = stats.unnormalise('action', row['actions'])
    expect = steps['action'][win.action_index[t]] * win.action_mask[t][:, None]
    np.testing.assert_allclose(actions[row['action_mask']], expect[win.action_mask[t]], atol=1e-5)
    assert not row['actions'][~row['action_mask']].any()
  kinds = np.bincount([r[3]['kind'] for r in rows], minlength=labeling.NUM_KINDS)
  assert kinds[labeling.SampleKind.INTERVENTION] > 0 and kinds[labeling.SampleKind.UNLABELLED] > 0
  assert kinds[labeling.SampleKind.SUCCESS] > 0 and kinds[labeling.SampleKind.FAILURE] > 0
  # The last batch is padded.
  last = rows[-1][4]
  assert last['valid'].sum() == len(rows) % 16 or len(rows) % 16 == 0


def test_batch_layout_vision_and_state(rollouts):
  path, episodes = rollouts
  stream = reader.make_batches(path, horizon=5, batch_size=8, cameras=('wrist', 'top'),
                               max_instruction_len=12, prefetch=0)
  batch = next(stream)
  assert batch['obs']['images'].shape == (8, 2, 8, 8, 3)
  assert batch['obs']['images'].dtype == np.uint8
  assert batch['obs']['state'].shape == (8, 6) and batch['obs']['state'].dtype == np.float32
  assert batch['obs']['instruction'].shape == (8, 12) and batch['obs']['instruction'].dtype == np.int32
  assert batch['next_obs']['images'].shape == (8, 2, 8, 8, 3)
  assert batch['actions'].shape == (8, 5, 4) and batch['action_mask'].shape == (8, 5)
  for key, dtype in (('kind', np.int32), ('outcome', np.float32), ('viability_mask', bool),
                     ('efficiency_mask', bool), ('next_is_terminal', bool), ('valid', bool),
                     ('steps_to_end', np.float32), ('episode_success', bool)):
    assert batch[key].shape == (8,) and batch[key].dtype == dtype, key
  assert batch['valid'].all()
  # Every field of the learner's test batch (habc.learning.synthetic, what the objectives' tests
  # run on) is in the reader's batch: a method's update must run on real data too.
  from habc.learning.synthetic import synthetic_batch
  fake = synthetic_batch(8, action_dim=4, state_dim=6, horizon=5, cameras=2, image_size=8,
                         vision=True)
  assert set(fake) <= set(batch), sorted(set(fake) - set(batch))
  assert set(fake['obs']) <= set(batch['obs'])
  # Camera order follows the argument: row images match the episode's frames (JPEG-close).
  stats = stats_lib.load_stats(path)
  state = stats.unnormalise('state', batch['obs']['state'])
  e, t = int(round(state[0, 0])), int(round(state[0, 1]))
  wrist = episodes[e]['steps']['observation']['wrist'][t].astype(int)
  assert np.abs(batch['obs']['images'][0, 0] - wrist).mean() < 8
  stream.close()
  state_stream = reader.make_batches(path, horizon=5, batch_size=8, obs='state', prefetch=0)
  batch = next(state_stream)
  assert 'images' not in batch['obs'] and batch['obs']['state'].shape == (8, 9)
  state_stream.close()


def test_mixing_ratios_and_demo_kind(rollouts, tmp_path):
  path, _ = rollouts
  demos = str(tmp_path / 'demos')
  rng = np.random.default_rng(1)
  writer.write_episodes(demos, [_tagged(rng, i, num_steps=15, source='demo') for i in range(3)])
  stats = stats_lib.load_or_compute_stats(demos)
  stream = reader.make_batches([demos, path], ratios=[3, 1], horizon=4, batch_size=32,
                               cameras=CAMS, stats=stats, seed=0)
  kinds = np.concatenate([next(stream)['kind'] for _ in range(40)])
  stream.close()
  share = np.mean(kinds == labeling.SampleKind.SFT)
  assert 0.70 < share < 0.80, share
  with pytest.raises(ValueError, match='ratios'):
    reader.make_batches([demos, path], ratios=[1], horizon=4)


def test_stats_saved_beside_the_data(tmp_path):
  path = str(tmp_path / 'ds')
  rng = np.random.default_rng(2)
  episodes = [_tagged(rng, i, num_steps=10 + i) for i in range(3)]
  writer.write_episodes(path, episodes)
  stats = stats_lib.load_or_compute_stats(path)
  assert os.path.exists(os.path.join(path, stats_lib.STATS_FILE))
  states = np.concatenate([e['steps']['observation']['state'] for e in episodes])
  actions = np.concatenate([e['steps']['action'][:-1] for e in episodes])  # No dummy action.
  np.testing.assert_allclose(stats.mean['state'], states.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats.std['action'], actions.std(0), rtol=1e-4)
  np.testing.assert_allclose(stats.mean['action'], actions.mean(0), rtol=1e-5, atol=1e-5)
  x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  np.testing.assert_allclose(stats.unnormalise('action', stats.normalise('action', x)), x,
                             atol=1e-5)
  again = stats_lib.load_stats(path)
  np.testing.assert_array_equal(again.std['privileged'], stats.std['privileged'])


def test_memory_stays_flat_over_many_epochs(tmp_path):
  psutil = pytest.importorskip('psutil')
  path = str(tmp_path / 'ds')
  rng = np.random.default_rng(3)
  writer.write_episodes(path, [_tagged(rng, i, num_steps=60, cameras=('a', 'b', 'c'),
                                       image_size=64) for i in range(4)])
  proc = psutil.Process()
  stream = reader.make_batches(path, horizon=8, batch_size=64, cameras=('a', 'b', 'c'),
                               pool_episodes=2)
  rss = []
  for step in range(240):  # ~65 epochs of 236 windows.
    next(stream)
    if step % 20 == 19:
      rss.append(proc.memory_info().rss)
  stream.close()
  growth = (max(rss[3:]) - rss[2]) / 2**20
  assert growth < 40, f'RSS grew by {growth:.1f} MiB over the read: {np.array(rss) / 2**20}'


def test_worker_processes(rollouts):
  path, _ = rollouts
  stream = reader.make_batches(path, horizon=4, batch_size=16, cameras=CAMS, num_workers=1,
                               num_epochs=1)
  total = sum(int(b['valid'].sum()) for b in stream)
  stream.close()
  assert total == 30 + 25 + 40 + 20 - 4
