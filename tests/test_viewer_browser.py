"""The viewer in a real browser (headless Chromium driven by Playwright) on a smoke run's workdir
and on converted ALOHA HDF5 and LeRobot datasets.

What is checked against the project's own code: the human segments of the timeline against the
dataset's ``is_intervention``, the window kinds against ``habc.labeling`` under the run's credit
settings, and the gate shown for a step against the learner's gate function
(``make_online_weight_fn``) on that window, with the parameters restored by the pipeline itself.
Skipped, with the reason, only where no Chromium is installed (setup.sh installs Debian's).
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from habc import labeling
from habc.data import reader
from habc.data import episodes as episodes_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = next((p for p in (os.environ.get('HABC_CHROMIUM'), shutil.which('chromium'),
                             shutil.which('chromium-browser')) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason='no Chromium: the browser tests need Debian\'s chromium package '
    '(setup.sh installs it; or `apt-get install chromium`, or set HABC_CHROMIUM to a binary)')


# ------------------------------------------------------------------------------------------------
# Fixtures: a smoke run, converted teleop data, viewer servers, a browser.


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """A finished smoke run of habc on insert (state observations) with interventions."""
  import jax
  from habc.run import pipeline
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax-tests'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  config = importlib.import_module('experiments.habc').get_config('smoke')
  config.task = 'insert'
  workdir = str(tmp_path_factory.mktemp('viewer') / 'run')
  pipeline.run(config, workdir, log=lambda line: None)
  return workdir, config


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A folder with an ALOHA HDF5 and a LeRobot recording, each converted to RLDS."""
  from habc.data import converters
  from tests.test_data_converters import _aloha_folder, _lerobot_folder
  root = tmp_path_factory.mktemp('teleop')
  rng = np.random.default_rng(0)
  _aloha_folder(str(root / 'aloha_raw'), rng, num_steps=12)
  _lerobot_folder(str(root / 'lerobot_raw'), rng, lengths=(10, 14))
  out = root / 'converted'
  converters.convert('aloha_hdf5', str(root / 'aloha_raw'), str(out / 'aloha'), progress=False,
                     success=True)
  converters.convert('lerobot', str(root / 'lerobot_raw'), str(out / 'lerobot'), progress=False)
  return str(out)


def start_viewer(path, *extra):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, '-m', 'habc.view', path, '--port', '0', *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.monotonic() + 90
  while time.monotonic() < deadline:
    line = proc.stdout.readline()
    if 'http://' in line:
      return proc, line.split()[2].rstrip('/')
    if proc.poll() is not None:
      break
  proc.kill()
  raise AssertionError(f'the viewer did not start: {proc.stderr.read()[-3000:]}')


def stop_viewer(proc):
  proc.terminate()
  try:
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()


@pytest.fixture(scope='module')
def run_viewer(smoke_run):
  proc, url = start_viewer(smoke_run[0])
  yield url
  stop_viewer(proc)


@pytest.fixture(scope='module')
def teleop_viewer(converted):
  proc, url = start_viewer(converted)
  yield url
  stop_viewer(proc)


@pytest.fixture(scope='module')
def browser():
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=['--no-sandbox'])
    yield b
    b.close()


@pytest.fixture
def page(browser):
  context = browser.new_context(viewport={'width': 1400, 'height': 1000})
  pg = context.new_page()
  errors = []
  pg.on('pageerror', lambda e: errors.append(str(e)))
  yield pg
  context.close()
  assert not errors, f'JavaScript errors on the page: {errors}'


def open_episode(page, url):
  page.goto(url)
  page.wait_for_function('window.viewerState && window.viewerState.ready', timeout=30000)


def human_segments_shown(page):
  return [(int(r.get_attribute('data-start')), int(r.get_attribute('data-stop')))
          for r in page.query_selector_all('#timeline rect.segment.human')]


def kinds_shown(page, num_steps):
  kinds = [None] * num_steps
  for r in page.query_selector_all('#timeline rect.kind'):
    for t in range(int(r.get_attribute('data-start')), int(r.get_attribute('data-stop'))):
      kinds[t] = labeling.SampleKind[r.get_attribute('data-kind')]
  return kinds


def credit_windows(episode, config):
  return reader.episode_windows(episode, horizon=config.model.action_horizon,
                                next_offset=config.credit.next_offset,
                                min_human_steps=config.credit.min_human_steps,
                                naive=config.credit.naive)


# ------------------------------------------------------------------------------------------------
# Tests.


def test_run_page_and_episode_list(page, run_viewer, smoke_run):
  workdir, config = smoke_run
  page.goto(run_viewer + '/')
  assert page.url.endswith('/run')
  rounds = page.query_selector_all('#rounds tr.round-row')
  assert [r.get_attribute('data-round') for r in rounds] == [
      str(r) for r in range(config.pipeline.rounds + 1)]
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  ev = summary['rounds'][1]['eval']
  assert f'({ev["successes"]}/{ev["episodes"]})' in rounds[1].inner_text()
  assert page.query_selector('#success-plot canvas') is not None
  assert page.query_selector('.gate-hist canvas') is not None  # logs/gates_round_001.npz
  page.click('#rounds tr.round-row[data-round="1"] a')
  page.wait_for_selector('#episodes')
  ids = [r.query_selector_all('td')[2].inner_text()
         for r in page.query_selector_all('#episodes tr.episode-row')]
  source = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', 'round_001'), cameras=())
  assert ids == [source[i]['episode_metadata']['episode_id'] for i in range(len(source))]
  assert len(ids) == config.rollout.episodes_per_round


def test_intervention_timeline_matches_the_dataset(page, run_viewer, smoke_run):
  workdir, config = smoke_run
  page.goto(run_viewer + '/episodes')
  page.select_option('#f-intervention', 'yes')
  page.click('#filters button[type=submit]')
  page.wait_for_selector('#episode-count')
  rows = page.query_selector_all('#episodes tr.episode-row')
  assert rows, 'the smoke run has episodes with interventions'
  assert all(int(r.get_attribute('data-operator-steps')) > 0 for r in rows)
  first = rows[0]
  ds, index = first.get_attribute('data-dataset'), int(first.get_attribute('data-index'))
  episode = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', ds))[index]
  flags = episode['steps']['is_intervention']
  expected = [(a, b) for a, b, human in labeling.segments(flags) if human]
  listed = [(int(r.get_attribute('data-start')), int(r.get_attribute('data-stop')))
            for r in first.query_selector_all('svg.mini rect.mini-human')]
  assert listed == expected
  first.query_selector('a').click()
  page.wait_for_function('window.viewerState && window.viewerState.ready', timeout=30000)
  shown = human_segments_shown(page)
  assert shown == expected and shown
  covered = np.zeros(len(flags), bool)
  for a, b in shown:
    covered[a:b] = True
  np.testing.assert_array_equal(covered, flags)
  # The step readout agrees with the flags as the cursor moves.
  t = expected[0][0]
  page.evaluate(f'window.viewerState.setStep({t})')
  assert 'human' in page.inner_text('#step-label')
  page.keyboard.press('ArrowLeft')
  assert page.evaluate('window.viewerState.t') == t - 1
  assert ('human' in page.inner_text('#step-label')) == bool(flags[t - 1])


def test_window_kinds_match_labeling(page, run_viewer, smoke_run):
  workdir, config = smoke_run
  checked = set()
  for ds in ('demos', 'round_001', 'round_002'):
    source = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', ds), cameras=())
    for index in range(min(len(source), 3)):
      episode = source[index]
      windows = credit_windows(episode, config)
      open_episode(page, f'{run_viewer}/episode?ds={ds}&i={index}')
      shown = kinds_shown(page, len(episode['steps']['is_intervention']))
      assert shown[:-1] == [labeling.SampleKind(k) for k in windows.kind], (ds, index)
      assert shown[-1] is None  # The final step anchors no window.
      checked.update(shown[:-1])
  assert {labeling.SampleKind.SFT, labeling.SampleKind.INTERVENTION} <= checked
  assert checked & {labeling.SampleKind.SUCCESS, labeling.SampleKind.FAILURE,
                    labeling.SampleKind.UNLABELLED}


def test_gate_shown_equals_the_learners_gate_function(page, run_viewer, smoke_run):
  import jax
  from habc.run import backend as backend_lib
  from habc.run import paths as paths_lib
  from habc.learning import learner as learner_lib
  workdir, config = smoke_run
  ds, index = 'round_002', 0
  episode = episodes_lib.EpisodeSource(os.path.join(workdir, 'data', ds))[index]
  assert episode['steps']['is_intervention'].any()
  # The learner's parameters as the pipeline restores them, and its gate function.
  backend = backend_lib.Backend(config)
  backend.bind(paths_lib.Paths(workdir))
  step = backend.load_latest(os.path.join(workdir, 'checkpoints'))
  gate_fn = jax.jit(learner_lib.make_online_weight_fn(config, backend.model))
  pack = reader.EpisodePack(
      horizon=config.model.action_horizon, next_offset=config.credit.next_offset,
      min_human_steps=config.credit.min_human_steps, naive=config.credit.naive, cameras=(),
      obs=config.obs, stats=backend._load_stats(),  # pylint: disable=protected-access
      max_instruction_len=config.model.max_instruction_len)(episode)

  def learner_gate(t):
    # The viewer evaluates an episode in chunks of viewer_critic.BATCH consecutive windows; with
    # method.advantage_norm='batch_iqr' a window's gate is relative to its batch, so the learner
    # gets the same chunk.
    from habc.web import viewer_critic
    size = viewer_critic.BATCH
    start = (t // size) * size
    idx = np.arange(start, min(start + size, len(pack['anchor'])))
    batch = reader.gather_batch([(pack, idx)], size, obs=config.obs)
    return float(np.asarray(gate_fn(backend.learner.params, batch))[t - start])

  open_episode(page, f'{run_viewer}/episode?ds={ds}&i={index}')
  options = page.eval_on_selector_all('#checkpoint option', 'os => os.map(o => o.textContent)')
  assert options[-1].startswith(f'step {step}')  # The newest is picked by default.
  page.click('#evaluate')
  page.wait_for_function('window.viewerState.critic', timeout=120000)
  critic = page.evaluate('window.viewerState.critic')
  assert 'error' not in critic, critic
  assert critic['checkpoint']['step'] == step
  assert critic['kind'] == pack['kind'].tolist()
  num_windows = len(pack['anchor'])
  kinds = pack['kind']
  steps = sorted({0, num_windows - 1, int(np.argmax(kinds == labeling.SampleKind.INTERVENTION)),
                  num_windows // 2})
  for t in steps:
    page.evaluate(f'window.viewerState.setStep({t})')
    shown = float(page.inner_text('#readout-table tr[data-key="gate"] td'))
    expected = learner_gate(t)
    assert shown == pytest.approx(expected, abs=6e-5), t
    assert critic['gate'][t] == pytest.approx(expected, abs=1e-5), t
  assert page.query_selector('#critic-gate canvas') is not None
  weights = np.array(critic['weight'])
  assert (weights[kinds == labeling.SampleKind.INTERVENTION] == 1).all()  # No reweighting here.
  assert (weights[kinds == labeling.SampleKind.FAILURE] == 0).all()
  np.testing.assert_allclose(weights[kinds == labeling.SampleKind.SUCCESS],
                             np.array(critic['gate'])[kinds == labeling.SampleKind.SUCCESS])
  # A second look is served from the cache, and the viewer still has no TensorFlow.
  page.click('#evaluate')
  page.wait_for_function('window.viewerState.critic && window.viewerState.critic.cached',
                         timeout=30000)
  status = json.loads(page.evaluate('fetch("/api/status").then(r => r.text())'))
  assert status['jax_loaded'] and not status['tensorflow_loaded']
  assert status['critic_evaluations'] >= 1


def test_converted_aloha_and_lerobot_datasets_open(page, teleop_viewer, converted, smoke_run):
  page.goto(teleop_viewer + '/')
  assert page.url.endswith('/episodes')
  datasets = {r.get_attribute('data-dataset') for r in
              page.query_selector_all('#episodes tr.episode-row')}
  assert datasets == {'aloha', 'lerobot'}
  for ds, camera, index in [('aloha', 'cam_high', 2), ('lerobot', 'front', 1)]:
    episode = episodes_lib.EpisodeSource(os.path.join(converted, ds))[index]
    open_episode(page, f'{teleop_viewer}/episode?ds={ds}&i={index}')
    page.wait_for_function(
        f'document.querySelector(\'img.frame[data-camera="{camera}"]\').naturalWidth > 0')
    width = page.eval_on_selector(f'img.frame[data-camera="{camera}"]', 'i => i.naturalWidth')
    assert width == episode['steps']['observation'][camera].shape[2]
    flags = episode['steps']['is_intervention']
    assert human_segments_shown(page) == [(a, b) for a, b, h in labeling.segments(flags) if h]
  # Scrub and play on the LeRobot episode (frames stream one at a time).
  page.eval_on_selector('#scrub', 'el => { el.value = 5; el.dispatchEvent(new Event("input")); }')
  assert page.evaluate('window.viewerState.t') == 5
  src = page.get_attribute('img.frame[data-camera="front"]', 'src')
  assert src.endswith('&t=5')
  page.click('#play')
  page.wait_for_function('window.viewerState.t > 6', timeout=10000)
  page.click('#play')
  # A checkpoint that does not fit this data: a clear message, not a traceback.
  page.fill('#checkpoint-path', os.path.join(smoke_run[0], 'checkpoints'))
  page.click('#evaluate')
  page.wait_for_selector('#critic-status.error-note', timeout=120000)
  message = page.inner_text('#critic-status')
  assert 'does not fit' in message and 'actions have 2 dimensions' in message, message
  assert 'Traceback' not in page.content()


def test_bad_input_gets_a_clear_page(page, run_viewer, smoke_run, tmp_path):
  for path, words in [('/episode?ds=round_042&i=0', 'No dataset \'round_042\''),
                      ('/episode?ds=round_001&i=1000', 'there is no episode 1000'),
                      ('/episodes?min_length=abc', 'min_length must be a whole number'),
                      ('/no/such/page', 'no such page')]:
    page.goto(run_viewer + path)
    assert words in page.inner_text('#error'), path
    assert 'Traceback' not in page.content()
  open_episode(page, f'{run_viewer}/episode?ds=round_001&i=0')
  page.fill('#checkpoint-path', str(tmp_path))
  page.click('#evaluate')
  page.wait_for_selector('#critic-status.error-note')
  assert 'holds no habc checkpoint' in page.inner_text('#critic-status')
  # A folder that is no dataset: the command says so and exits.
  r = subprocess.run([sys.executable, '-m', 'habc.view', str(tmp_path)], cwd=REPO,
                     env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and 'is not a dataset' in r.stderr


def test_screenshot_of_an_episode_page(page, run_viewer, smoke_run, tmp_path):
  """The page as a person sees it: the screenshot has the timeline's colours in it."""
  ckpt = os.path.join(smoke_run[0], 'checkpoints')
  open_episode(page, f'{run_viewer}/episode?ds=round_001&i=1&checkpoint={ckpt}')
  page.wait_for_function('window.viewerState.critic', timeout=120000)
  path = str(tmp_path / 'episode.png')
  page.screenshot(path=path, full_page=True)
  from PIL import Image
  pixels = np.asarray(Image.open(path).convert('RGB')).reshape(-1, 3).astype(int)
  orange = (np.abs(pixels - [255, 127, 14]).sum(1) < 30).sum()  # The human segment.
  assert orange > 500
