"""The viewer's data layer and server without a browser: what PATH is, episode summaries, filters
and pages, the bounded episode cache, frames as stored bytes, window kinds, actor weights, the CLI
and the absence of TensorFlow. The browser tests are in test_viewer_browser.py."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from habc import labeling
from habc.data import images as images_lib
from habc.data import episodes as episodes_lib, synthetic, writer
from habc.web import viewer_data as vd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_dataset(path, specs, cameras=('top',), image_size=16, seed=0):
  """A dataset of synthetic episodes; specs: (num_steps, success, interventions, source)."""
  rng = np.random.default_rng(seed)
  episodes = [synthetic.synthetic_episode(
      rng, num_steps=n, cameras=cameras, image_size=image_size, success=ok, interventions=iv,
      source=src, episode_id=f'ep{i:03d}') for i, (n, ok, iv, src) in enumerate(specs)]
  writer.write_episodes(str(path), episodes, episodes_per_shard=2)
  return episodes


SPECS = [(12, True, (), 'demo'), (20, False, [(5, 9)], 'rollout'), (30, True, [(3, 6), (10, 20)],
         'rollout'), (8, False, (), 'rollout'), (25, True, (), 'rollout')]


def make_workdir(root, credit=None):
  """A workdir as the pipeline lays it out: config.json, data/demos, data/round_001."""
  credit = credit or {'horizon': 4, 'next_offset': 2, 'min_human_steps': 2, 'naive': False}
  os.makedirs(os.path.join(root, 'data'), exist_ok=True)
  config = {'name': 'habc', 'task': 'fold', 'seed': 3, 'preset': 'smoke', 'obs': 'vision',
            'model': {'action_horizon': credit['horizon']},
            'credit': {k: credit[k] for k in ('next_offset', 'min_human_steps', 'naive')},
            'pipeline': {'rounds': 1}}
  json.dump(config, open(os.path.join(root, 'config.json'), 'w'))
  write_dataset(os.path.join(root, 'data', 'demos'), SPECS[:1])
  episodes = write_dataset(os.path.join(root, 'data', 'round_001'), SPECS[1:], seed=1)
  os.makedirs(os.path.join(root, 'eval'))
  json.dump({'episodes': 4, 'successes': 1, 'success_rate': 0.25, 'ci_low': 0.05, 'ci_high': 0.7,
             'mean_success_length': 30.0, 'std_success_length': 0.0, 'round': 1},
            open(os.path.join(root, 'eval', 'round_001.json'), 'w'))
  os.makedirs(os.path.join(root, 'logs'))
  np.savez(os.path.join(root, 'logs', 'gates_round_001.npz'), gate=np.array([0.01, 1.0, 1.99, 1.5]),
           kind=np.array([1, 1, 2, 3]))
  with open(os.path.join(root, 'logs', 'collect_round_001.jsonl'), 'w') as f:
    for i, (n, ok, iv, _) in enumerate(SPECS[1:]):
      f.write(json.dumps({'episode_id': f'ep{i:03d}', 'success': ok, 'length': n - 1,
                          'intervention_steps': sum(b - a for a, b in iv)}) + '\n')
    f.write('{"cut by a stop')
  json.dump({'auc': 0.8, 'viability': {'brier': 0.1}}, open(
      os.path.join(root, 'logs', 'critic_round_001.json'), 'w'))
  return config, episodes


def test_what_path_is(tmp_path):
  root = str(tmp_path / 'run')
  make_workdir(root)
  catalog = vd.open_catalog(root)
  assert catalog.kind == 'workdir' and list(catalog.datasets) == ['demos', 'round_001']
  assert catalog.credit == {'horizon': 4, 'next_offset': 2, 'min_human_steps': 2, 'naive': False}
  # A round's dataset alone still brings its run's credit settings and checkpoints.
  one = vd.open_catalog(os.path.join(root, 'data', 'round_001'))
  assert one.kind == 'dataset' and one.workdir == root and list(one.datasets) == ['round_001']
  assert one.credit == catalog.credit and one.checkpoint_dirs() == [os.path.join(root, 'checkpoints')]
  # A folder of datasets (converted teleop data, several runs): found below it, default credit.
  folder = vd.open_catalog(str(tmp_path))
  assert folder.kind == 'folder' and sorted(folder.datasets) == ['run/data/demos',
                                                                 'run/data/round_001']
  assert folder.credit == vd.DEFAULT_CREDIT and 'defaults' in folder.credit_source
  for bad, words in [(tmp_path / 'missing', 'does not exist'),
                     (tmp_path / 'run' / 'config.json', 'is a file'),
                     (tmp_path / 'run' / 'logs', 'is not a dataset')]:
    with pytest.raises(vd.ViewerError, match=words):
      vd.open_catalog(str(bad))


def test_summaries_filters_and_pages(tmp_path):
  root = str(tmp_path / 'run')
  make_workdir(root)
  view = vd.open_catalog(root).datasets['round_001']
  row = view.summary(1)  # Computed alone, before any scan.
  assert view.indexed == 1
  assert row == {'index': 1, 'episode_id': 'ep001', 'task': 'fold', 'source': 'rollout',
                 'operator': 'sim', 'success': True, 'policy_version': 0, 'steps': 30,
                 'length': 29, 'operator_steps': 13, 'terminal': True,
                 'human_segments': [[3, 6], [10, 20]]}
  view.start_scan()
  assert view.wait_indexed(30)
  rows = view.summaries()
  assert [r['length'] for r in rows] == [19, 29, 7, 24]
  assert [r['index'] for r in vd.filter_rows(rows, outcome='success')] == [1, 3]
  assert [r['index'] for r in vd.filter_rows(rows, intervention='yes')] == [0, 1]
  assert [r['index'] for r in vd.filter_rows(rows, intervention='no', outcome='failure')] == [2]
  assert [r['index'] for r in vd.filter_rows(rows, min_length=10, max_length=25)] == [0, 3]
  assert [r['index'] for r in vd.filter_rows(rows, sort='-operator_steps')] == [1, 0, 2, 3]
  with pytest.raises(vd.ViewerError, match='outcome must be one of'):
    vd.filter_rows(rows, outcome='maybe')

  from habc.web import viewer_app
  catalog = vd.open_catalog(root)
  page = viewer_app.episode_rows(catalog, {'per': '2', 'page': '2'})  # All datasets, no filter.
  assert [(r['dataset'], r['index']) for r in page['rows']] == [('round_001', 1), ('round_001', 2)]
  assert page['matching'] == page['total'] == 5 and page['complete']
  page = viewer_app.episode_rows(catalog, {'ds': 'round_001', 'outcome': 'failure'})
  assert catalog.datasets['round_001'].wait_indexed(30)
  page = viewer_app.episode_rows(catalog, {'ds': 'round_001', 'outcome': 'failure'})
  assert [r['index'] for r in page['rows']] == [0, 2] and page['complete']
  with pytest.raises(vd.ViewerError, match='min_length must be a whole number'):
    viewer_app.episode_rows(catalog, {'min_length': 'ten'})


def test_episode_detail_kinds_frames_and_bounded_cache(tmp_path):
  root = str(tmp_path / 'run')
  _, episodes = make_workdir(root)
  cache = vd.EpisodeCache(max_episodes=2, max_bytes=10**9)
  catalog = vd.open_catalog(root, cache=cache)
  view = catalog.datasets['round_001']
  credit = {'horizon': 4, 'next_offset': 2, 'min_human_steps': 2, 'naive': False}
  for i, original in enumerate(episodes):
    detail = vd.episode_detail(view, i, credit)
    steps = original['steps']
    assert detail['num_steps'] == len(steps['is_intervention'])
    human = [(s['start'], s['stop']) for s in detail['segments'] if s['controller'] == 'human']
    assert human == [(a, b) for a, b, h in labeling.segments(steps['is_intervention']) if h]
    windows = labeling.make_windows(steps['is_intervention'], original['episode_metadata']['success'],
                                    horizon=4, next_offset=2, min_human_steps=2,
                                    is_terminal_end=bool(steps['is_terminal'][-1]))
    assert detail['kinds'] == windows.kind.tolist() + [None]
    np.testing.assert_allclose(np.array(detail['action'], np.float32), steps['action'], atol=1e-5)
    assert len(cache) <= 2
  naive = vd.episode_detail(view, 1, dict(credit, naive=True))
  steps = episodes[1]['steps']
  assert naive['kinds'][:-1] == labeling.make_windows(
      steps['is_intervention'], True, horizon=4, next_offset=2, min_human_steps=2,
      naive=True).kind.tolist() != detail['kinds'][:-1]
  # Frames are the stored bytes, as JPEG, and decode to what the reader gives.
  data, media = view.frame(1, 'top', 7)
  assert media == 'image/jpeg' and data[:2] == b'\xff\xd8'
  decoded = episodes_lib.EpisodeSource(view.path)[1]['steps']['observation']['top'][7]
  np.testing.assert_array_equal(images_lib.decode_image(data), decoded)
  with pytest.raises(vd.ViewerError, match='no camera'):
    view.frame(1, 'wrist', 0)
  with pytest.raises(vd.ViewerError, match='there is no step 99'):
    view.frame(1, 'top', 99)
  with pytest.raises(vd.ViewerError, match='there is no episode 4'):
    view.episode(4)
  # The byte bound holds too (the newest episode stays, even alone over it).
  small = vd.EpisodeCache(max_episodes=100, max_bytes=1)
  for i in range(3):
    small.get(i, lambda i=i: episodes[i])
  assert len(small) == 1


def test_run_summary(tmp_path):
  root = str(tmp_path / 'run')
  make_workdir(root)
  s = vd.run_summary(vd.open_catalog(root))
  assert [r['round'] for r in s['rounds']] == [0, 1]
  r1 = s['rounds'][1]
  assert r1['dataset'] == 'round_001' and r1['eval']['success_rate'] == 0.25
  assert r1['collect']['episodes'] == 4 and r1['collect']['intervention_steps'] == 17
  assert r1['critic'] == {'auc': 0.8, 'viability/brier': 0.1}
  gates = r1['gates']['kinds']
  assert gates['SUCCESS']['count'] == 2 and gates['SUCCESS']['saturated'] == 0.5
  assert gates['FAILURE']['saturated'] == 1.0 and sum(gates['FAILURE']['hist']) == 1
  assert gates['SUCCESS']['mean'] == pytest.approx(0.505)
  with pytest.raises(vd.ViewerError, match='not a run'):
    vd.run_summary(vd.open_catalog(os.path.join(root, 'data')))


def test_raw_actor_weights_normalise_to_the_learners():
  """The weight shown is objectives.actor_weights' before its normalisation, for every method."""
  import jax.numpy as jnp
  import ml_collections
  from experiments import base
  from habc import losses
  from habc.learning import objectives
  from habc.web import viewer_critic
  rng = np.random.default_rng(0)
  kind = rng.integers(0, labeling.NUM_KINDS, 64).astype(np.int32)
  online = rng.uniform(0, 2, 64).astype(np.float32)
  valid = np.ones(64, bool)
  for weighting, use_autonomous, ir in [('habc', True, False), ('habc', True, True),
                                        ('habc_v', True, False), ('awr', True, False),
                                        ('recap', False, False), ('bc', True, False)]:
    method = ml_collections.ConfigDict(base.get_config().method.to_dict())
    method.weighting, method.use_autonomous = weighting, use_autonomous
    raw = viewer_critic.raw_actor_weights(method, kind, online, ir)
    expected, _ = objectives.actor_weights(method, jnp.asarray(kind), jnp.asarray(valid),
                                           jnp.asarray(online), jnp.asarray(False),
                                           jnp.asarray(ir))
    np.testing.assert_allclose(losses.normalise_weights(raw, kind, valid, method.weight_eps),
                               expected, rtol=1e-6, err_msg=weighting)


def _start(args, timeout=60):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, '-m', 'habc.view', *args, '--port', '0'], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    line = proc.stdout.readline()
    if 'http://' in line:
      return proc, line.split()[2].rstrip('/')
    if proc.poll() is not None:
      raise AssertionError(f'the viewer exited: {proc.stderr.read()}')
  proc.kill()
  raise AssertionError('the viewer printed no URL')


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=30) as r:
      return r.status, r.headers.get('Content-Type', ''), r.read()
  except urllib.error.HTTPError as e:
    return e.code, e.headers.get('Content-Type', ''), e.read()


def test_server_answers_and_explains_errors_without_tensorflow(tmp_path):
  root = str(tmp_path / 'run')
  make_workdir(root)
  proc, url = _start([root])
  try:
    assert url.startswith('http://127.0.0.1:')
    status, kind, body = _get(f'{url}/run')
    assert status == 200 and b'id="rounds"' in body and b'critic-diagnostics' in body
    status, kind, body = _get(f'{url}/episodes?ds=round_001&intervention=yes')
    assert status == 200 and body.count(b'class="episode-row"') == 2
    status, kind, body = _get(f'{url}/api/frame?ds=round_001&i=0&camera=top&t=3')
    assert status == 200 and kind == 'image/jpeg' and body[:2] == b'\xff\xd8'
    for path, words in [('/episode?ds=round_009&i=0', b'No dataset'),
                        ('/episode?ds=round_001&i=40', b'there is no episode 40'),
                        ('/episode?ds=round_001&i=x', b'is not a number'),
                        ('/episode?ds=round_001&i=0&horizon=0', b'must be between'),
                        ('/run-file/../config.json', b'not a file of the run'),
                        ('/nowhere', b'no such page')]:
      status, kind, body = _get(url + path)
      assert status in (400, 404) and kind.startswith('text/html'), path
      assert words in body and b'Traceback' not in body, (path, body[-600:])
    status, kind, body = _get(f'{url}/api/critic?ds=round_001&i=0&checkpoint={tmp_path}/none')
    assert status == 400 and 'does not exist' in json.loads(body)['error']
    status, _, body = _get(f'{url}/api/status')
    st = json.loads(body)
    assert not st['tensorflow_loaded'] and not st['jax_loaded']
  finally:
    proc.terminate()
    proc.wait(timeout=20)


def test_cli_refuses_what_is_no_dataset(tmp_path):
  (tmp_path / 'empty').mkdir()
  r = subprocess.run([sys.executable, '-m', 'habc.view', str(tmp_path / 'empty')], cwd=REPO,
                     env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and 'is not a dataset' in r.stderr and 'Traceback' not in r.stderr


def test_list_stays_fast_while_a_large_dataset_is_indexed(tmp_path):
  """300 episodes: the first page answers before the background scan has read them all, and the
  scan reads only flags and metadata (it never decodes an image)."""
  path = str(tmp_path / 'big')
  rng = np.random.default_rng(0)
  episodes = (synthetic.synthetic_episode(rng, num_steps=60, cameras=('top',), image_size=32,
                                          interventions=[(5, 15)] if i % 2 else (),
                                          episode_id=f'e{i}') for i in range(300))
  writer.write_episodes(path, episodes, episodes_per_shard=50)
  catalog = vd.open_catalog(path)
  view = catalog.datasets['big']
  from habc.web import viewer_app
  start = time.perf_counter()
  page = viewer_app.episode_rows(catalog, {'page': '4', 'per': '50'})
  first_page_s = time.perf_counter() - start
  assert [r['index'] for r in page['rows']] == list(range(150, 200))
  assert view.indexed == 50 and first_page_s < 2.0
  calls = []
  original = images_lib.decode_images
  images_lib.decode_images = lambda *a, **k: calls.append(1) or original(*a, **k)
  try:
    start = time.perf_counter()
    view.start_scan()
    assert view.wait_indexed(60)
    scan_s = time.perf_counter() - start
  finally:
    images_lib.decode_images = original
  assert not calls
  assert scan_s < 30, scan_s
  page = viewer_app.episode_rows(catalog, {'intervention': 'yes', 'per': '200'})
  assert page['matching'] == 150 and page['complete']


def test_a_broken_dataset_is_reported_and_the_rest_still_open(tmp_path):
  root = str(tmp_path / 'run')
  make_workdir(root)
  broken = os.path.join(root, 'data', 'round_002')
  os.makedirs(broken)
  with open(os.path.join(broken, 'dataset_info.json'), 'w') as f:
    f.write('{"name": "habc_episodes", "fileFormat": "tfrecord"}')
  catalog = vd.open_catalog(root)
  assert list(catalog.datasets) == ['demos', 'round_001', 'round_002']
  assert 'array_record' in catalog.datasets['round_002'].error
  with pytest.raises(vd.ViewerError, match='cannot be read'):
    catalog.datasets['round_002'].episode(0)
  from habc.web import viewer_app
  page = viewer_app.episode_rows(catalog, {})
  assert page['total'] == 5 and 'round_002' in page['errors']
  # A record that cannot be parsed: its row says so, the others are listed.
  view = vd.open_catalog(root).datasets['round_001']
  view.source.raw = lambda i, raw=view.source.raw: b'not a record' if i == 2 else raw(i)
  assert view.wait_indexed(30)
  rows = view.summaries()
  assert 'error' in rows[2] and all('error' not in r for i, r in enumerate(rows) if i != 2)
