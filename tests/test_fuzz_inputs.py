"""Fuzzing the teleop converters and the dataset reader with malformed files.

A seeded generator makes each case: a folder with one good episode followed by one malformed file
(truncated or random-bytes HDF5 / npz / parquet / mp4, bit flips, wrong dtypes, mismatched
lengths, NaN/inf, huge values, missing cameras and keys, empty and one-step episodes). Each
conversion appends to a copy of a dataset that already holds one episode. Outcome classes:

* ``error``: a ``ConversionError`` naming the bad file and a field (the good episode before it is
  committed, nothing of the bad one);
* ``accepted``: the mutation left a valid episode (e.g. huge but finite values, a flipped pixel);
* anything else is a failure of the test: another exception type, an error that does not name the
  file, a traceback ending inside TensorFlow, TensorFlow imported at all, or an output dataset
  that lost, duplicated or half-wrote an episode.

The counts per class are printed (pytest -s) and recorded in docs/robustness.md.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import traceback

import h5py
import numpy as np
import pytest

from habc.data import converters
from habc.data import episodes as episodes_lib
from habc.data import synthetic
from habc.data import writer
from habc.data.converters import ConversionError
from tests.test_data_converters import _lerobot_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CASES = 160
T, S, A, H, W = 6, 4, 3, 8, 8


def good_aloha(path, rng, num_steps=T, compress=False):
  converters.write_aloha_hdf5(
      str(path), qpos=rng.normal(size=(num_steps, S)), action=rng.normal(size=(num_steps, A)),
      images={'top': rng.integers(0, 255, (num_steps, H, W, 3), np.uint8)},
      policy_action=rng.normal(size=(num_steps, A)), is_intervention=np.zeros(num_steps, bool),
      success=True, instruction='insert the peg', task='insert', compress=compress)


def good_npz_arrays(rng, num_steps=T):
  return {'state': rng.normal(size=(num_steps, S)).astype(np.float32),
          'action': rng.normal(size=(num_steps, A)).astype(np.float32),
          'image_top': rng.integers(0, 255, (num_steps, H, W, 3), np.uint8),
          'success': np.array(True), 'instruction': np.array('insert the peg')}


def truncate(path, rng):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:int(len(data) * rng.uniform(0.0, 0.95))])


def flip_bytes(path, rng):
  data = bytearray(open(path, 'rb').read())
  for i in rng.integers(0, len(data), int(rng.integers(1, 16))):
    data[i] ^= int(rng.integers(1, 256))
  open(path, 'wb').write(bytes(data))


def random_bytes(path, rng):
  open(path, 'wb').write(rng.bytes(int(rng.integers(0, 4096))))


# ---- HDF5 mutations: fn(path, rng) edits a good file in place, or rewrites it. -----------------

def _h5_edit(path, key, value, **kwargs):
  with h5py.File(path, 'a') as f:
    if key in f:
      del f[key]
    if value is not None:
      f.create_dataset(key, data=value, **kwargs)


def _h5_read(path, key):
  with h5py.File(path, 'r') as f:
    return f[key][()]


def h5_nonfinite(path, rng):
  key = str(rng.choice(['/action', '/observations/qpos', '/policy_action']))
  value = _h5_read(path, key).astype(np.float32)
  value[rng.integers(len(value)), rng.integers(value.shape[1])] = rng.choice([np.nan, np.inf,
                                                                               -np.inf])
  _h5_edit(path, key, value)


def h5_huge(path, rng):
  key = str(rng.choice(['/action', '/observations/qpos']))
  # Finite in float32 (accepted: magnitudes are not bounded) or beyond it (inf after the cast).
  scale = float(rng.choice([1e30, 1e300]))
  _h5_edit(path, key, _h5_read(path, key).astype(np.float64) * scale)


def h5_length(path, rng):
  key = str(rng.choice(['/action', '/observations/qpos', '/observations/images/top',
                        '/policy_action', '/is_intervention', '/observations/qvel']))
  delta = int(rng.choice([-2, -1, 1, 3]))
  if key == '/observations/qvel':
    _h5_edit(path, key, np.zeros((T + delta, 2), np.float32))
    return
  value = _h5_read(path, key)
  value = value[:T + delta] if delta < 0 else np.concatenate([value, value[:delta]])
  _h5_edit(path, key, value)


def h5_dtype(path, rng):
  kind = rng.integers(4)
  if kind == 0:
    _h5_edit(path, '/action', np.array([b'abc'] * T))
  elif kind == 1:
    _h5_edit(path, '/observations/images/top', rng.uniform(0, 1, (T, H, W, 3)).astype(np.float32))
  elif kind == 2:
    _h5_edit(path, '/observations/images/top', rng.integers(0, 255, (T, H, W, 4), np.uint8))
  else:
    _h5_edit(path, '/action', rng.normal(size=(T, A, 1)))


def h5_missing(path, rng):
  _h5_edit(path, str(rng.choice(['/action', '/observations/qpos'])), None)


def h5_short(path, rng):
  num_steps = int(rng.choice([0, 1]))
  os.remove(path)
  good_aloha(path, rng, num_steps=num_steps)


def h5_garbage_jpeg(path, rng):
  os.remove(path)
  good_aloha(path, rng, compress=True)
  rows = np.empty(T, object)
  for t in range(T):
    rows[t] = np.frombuffer(rng.bytes(int(rng.integers(1, 60))), np.uint8)
  _h5_edit(path, '/observations/images/top', rows, dtype=h5py.vlen_dtype(np.uint8))
  with h5py.File(path, 'a') as f:
    f['/observations/images/top'].attrs['compress'] = True


def h5_no_outcome(path, rng):
  with h5py.File(path, 'a') as f:
    del f.attrs['success']


def h5_missing_camera(path, rng):
  """The camera 'top' of the dataset is absent (renamed, or no image group at all)."""
  frames = _h5_read(path, '/observations/images/top')
  _h5_edit(path, '/observations/images/top', None)
  if rng.random() < 0.5:
    _h5_edit(path, '/observations/images/cam_high', frames)
  else:
    _h5_edit(path, '/observations/images', None)


H5_MUTATIONS = {
    'truncated': truncate, 'random_bytes': random_bytes, 'bit_flips': flip_bytes,
    'nan_inf': h5_nonfinite, 'huge_values': h5_huge, 'mismatched_lengths': h5_length,
    'wrong_dtype_or_shape': h5_dtype, 'missing_key': h5_missing, 'empty_or_one_step': h5_short,
    'garbage_jpeg': h5_garbage_jpeg, 'no_outcome': h5_no_outcome,
    'missing_camera': lambda path, rng: h5_missing_camera(path, rng),
}


# ---- npz mutations: fn(arrays, rng) -> arrays, or fn(path, rng) on the written file. -----------

def npz_nonfinite(arrays, rng):
  key = str(rng.choice(['state', 'action']))
  arrays[key] = arrays[key].copy()
  arrays[key][rng.integers(T), rng.integers(arrays[key].shape[1])] = np.nan
  return arrays


def npz_length(arrays, rng):
  key = str(rng.choice(['state', 'image_top']))
  arrays[key] = arrays[key][:T - int(rng.integers(1, 3))]
  return arrays


def npz_dtype(arrays, rng):
  arrays['action'] = np.array(['x'] * T)
  return arrays


def npz_missing(arrays, rng):
  del arrays[str(rng.choice(['state', 'action']))]
  return arrays


def npz_empty(arrays, rng):
  return {k: (v[:0] if v.ndim else v) for k, v in arrays.items()}


NPZ_ARRAY_MUTATIONS = {'nan_inf': npz_nonfinite, 'mismatched_lengths': npz_length,
                       'wrong_dtype_or_shape': npz_dtype, 'missing_key': npz_missing,
                       'empty_or_one_step': npz_empty}
NPZ_FILE_MUTATIONS = {'truncated': truncate, 'random_bytes': random_bytes}
LEROBOT_MUTATIONS = ('truncated_parquet', 'random_parquet', 'truncated_mp4', 'missing_mp4',
                     'truncated_info')


def make_case(index: int, root: str):
  """Writes case ``index`` under ``root``; returns (format, mutation, input, options)."""
  rng = np.random.default_rng([8, index])
  fmt = str(rng.choice(['aloha_hdf5', 'npz', 'lerobot'], p=[0.6, 0.3, 0.1]))
  folder = os.path.join(root, 'in')
  os.makedirs(folder)
  options = {}
  if fmt == 'aloha_hdf5':
    mutation = str(rng.choice(list(H5_MUTATIONS)))
    good_aloha(os.path.join(folder, 'episode_0.hdf5'), rng)
    bad = os.path.join(folder, 'episode_1.hdf5')
    good_aloha(bad, rng)
    H5_MUTATIONS[mutation](bad, rng)
  elif fmt == 'npz':
    mutation = str(rng.choice(list(NPZ_ARRAY_MUTATIONS) + list(NPZ_FILE_MUTATIONS)))
    np.savez(os.path.join(folder, 'ep_0.npz'), **good_npz_arrays(rng))
    bad = os.path.join(folder, 'ep_1.npz')
    arrays = good_npz_arrays(rng)
    if mutation in NPZ_ARRAY_MUTATIONS:
      arrays = NPZ_ARRAY_MUTATIONS[mutation](arrays, rng)
    np.savez(bad, **arrays)
    if mutation in NPZ_FILE_MUTATIONS:
      NPZ_FILE_MUTATIONS[mutation](bad, rng)
  else:
    mutation = str(rng.choice(LEROBOT_MUTATIONS))
    _lerobot_folder(folder, rng, lengths=(5, 5))
    parquet = os.path.join(folder, 'data', 'chunk-000', 'episode_000001.parquet')
    mp4 = os.path.join(folder, 'videos', 'chunk-000', 'observation.images.front',
                       'episode_000001.mp4')
    if mutation == 'truncated_parquet':
      truncate(parquet, rng)
    elif mutation == 'random_parquet':
      random_bytes(parquet, rng)
    elif mutation == 'truncated_mp4':
      truncate(mp4, rng)
    elif mutation == 'missing_mp4':
      os.remove(mp4)
    else:
      truncate(os.path.join(folder, 'meta', 'info.json'), rng)
  return fmt, mutation, folder, options


def episode_ids(path):
  source = episodes_lib.EpisodeSource(path, cameras=())
  return [str(source[i]['episode_metadata']['episode_id']) for i in range(len(source))]


@pytest.fixture(scope='module')
def prior_dataset(tmp_path_factory):
  """A dataset with one episode of the fuzz cases' spec (camera 'top' 8x8, state 4, action 3)."""
  root = tmp_path_factory.mktemp('prior')
  good_aloha(root / 'episode_0.hdf5', np.random.default_rng(0))
  out = str(root / 'out')
  converters.convert('aloha_hdf5', str(root / 'episode_0.hdf5'), out, progress=False)
  return out


def classify(fmt, mutation, folder, options, out, before):
  """Runs one conversion; returns the outcome class (asserting the invariants)."""
  try:
    summary = converters.convert(fmt, folder, out, progress=False, **options)
  except ConversionError as e:
    frames = traceback.extract_tb(e.__traceback__)
    assert not any('tensorflow' in f.filename for f in frames), traceback.format_exc()
    message = str(e)
    assert e.field and e.file and e.file in message, message
    assert os.path.basename(e.file) in message or e.file.endswith(('data', 'info.json')), message
    assert e.episode in ('episode_1', 'ep_1', 'episode_000001', '-'), message  # The bad one.
    after = episode_ids(out) if os.path.exists(os.path.join(out, "dataset_info.json")) else []
    # The good episode before the bad one is committed; nothing of the bad one is.
    assert after[:len(before)] == before and len(after) - len(before) in (0, 1), after
    if fmt != 'lerobot' or mutation != 'truncated_info':
      assert len(after) == len(before) + 1, (fmt, mutation, after)
    return 'error'
  except Exception:  # pylint: disable=broad-except
    if fmt == 'lerobot' and mutation == 'truncated_info':
      raise
    pytest.fail(f'{fmt}/{mutation}: not a ConversionError:\n{traceback.format_exc()}')
  after = episode_ids(out) if os.path.exists(os.path.join(out, "dataset_info.json")) else []
  assert after[:len(before)] == before and len(after) == len(before) + summary.episodes == \
      len(before) + 2, (fmt, mutation, after)
  return 'accepted'


def test_fuzz_converters(tmp_path, prior_dataset):
  before = episode_ids(prior_dataset)
  outcomes = collections.Counter()
  per_mutation = collections.defaultdict(collections.Counter)
  for index in range(NUM_CASES):
    root = str(tmp_path / f'case_{index:03d}')
    os.makedirs(root)
    fmt, mutation, folder, options = make_case(index, root)
    out = os.path.join(root, 'out')
    if fmt == 'lerobot':  # Another spec (camera 'front' 24x32): a new dataset.
      outcome = classify(fmt, mutation, folder, options, out, [])
    else:
      shutil.copytree(prior_dataset, out)
      outcome = classify(fmt, mutation, folder, options, out, before)
    outcomes[outcome] += 1
    per_mutation[f'{fmt}/{mutation}'][outcome] += 1
    assert not os.path.exists(os.path.join(out, '.tmp'))
    shutil.rmtree(root)
  assert 'tensorflow' not in sys.modules
  print(f'\nfuzz: {NUM_CASES} converter cases: {dict(outcomes)}')
  for key in sorted(per_mutation):
    print(f'  {key}: {dict(per_mutation[key])}')
  assert sum(outcomes.values()) == NUM_CASES and outcomes['error'] > NUM_CASES // 2
  # Mutations that can never leave a valid episode always end in a clear error.
  for key, counts in per_mutation.items():
    if key.split('/')[1] in ('nan_inf', 'mismatched_lengths', 'missing_key', 'missing_camera',
                             'empty_or_one_step', 'random_bytes', 'no_outcome', 'garbage_jpeg'):
      assert set(counts) == {'error'}, (key, counts)


def test_cli_reports_a_bad_file_without_a_traceback(tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  rng = np.random.default_rng(3)
  good_aloha(folder / 'episode_0.hdf5', rng)
  good_aloha(folder / 'episode_1.hdf5', rng)
  truncate(str(folder / 'episode_1.hdf5'), np.random.default_rng(1))
  out = tmp_path / 'out'
  result = subprocess.run(
      [sys.executable, 'data/convert_teleop.py', '--format=aloha_hdf5', f'--input={folder}',
       f'--output={out}', '--noprogress'], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert f'error: {folder / "episode_1.hdf5"}' in result.stderr and "'<file>'" in result.stderr
  assert 'holds 1 episodes' in result.stderr


# ---- The reader ---------------------------------------------------------------------------------

READER_MUTATIONS = ('truncated_shard', 'random_shard', 'empty_shard', 'bit_flips_shard',
                    'missing_shard', 'truncated_info', 'missing_features', 'inflated_lengths')


def mutate_dataset(path, mutation, rng):
  shard = os.path.join(path, writer.shard_name(writer.DEFAULT_NAME, int(rng.integers(3))))
  info = os.path.join(path, 'dataset_info.json')
  if mutation == 'truncated_shard':
    truncate(shard, rng)
  elif mutation == 'random_shard':
    random_bytes(shard, rng)
  elif mutation == 'empty_shard':
    open(shard, 'wb').close()
  elif mutation == 'bit_flips_shard':
    flip_bytes(shard, rng)
  elif mutation == 'missing_shard':
    os.remove(shard)
  elif mutation == 'truncated_info':
    truncate(info, rng)
  elif mutation == 'missing_features':
    os.remove(os.path.join(path, 'features.json'))
  else:
    data = json.load(open(info))
    lengths = data['splits'][0]['shardLengths']
    lengths[int(rng.integers(len(lengths)))] = str(int(rng.integers(2, 9)))
    json.dump(data, open(info, 'w'))


def read_everything(path):
  source = episodes_lib.EpisodeSource(path)
  return [source[i] for i in range(len(source))]


def reader_outcomes(tmp_path, num_cases):
  rng0 = np.random.default_rng(0)
  base = str(tmp_path / 'base')
  writer.write_episodes(base, [synthetic.synthetic_episode(
      rng0, num_steps=6, cameras=('top',), image_size=8, episode_id=f'e{i}') for i in range(3)])
  results = []
  for index in range(num_cases):
    rng = np.random.default_rng([9, index])
    mutation = READER_MUTATIONS[index % len(READER_MUTATIONS)]
    path = str(tmp_path / f'r{index:03d}')
    shutil.copytree(base, path)
    mutate_dataset(path, mutation, rng)
    try:
      read_everything(path)
      results.append((mutation, 'accepted', ''))
    except Exception as e:  # pylint: disable=broad-except
      frames = traceback.extract_tb(e.__traceback__)
      deep_tf = any('tensorflow/' in f.filename and 'tensorflow_datasets' not in f.filename
                    for f in frames)
      named = path in str(e)
      results.append((mutation, 'error naming the dataset' if named and not deep_tf else
                      'unclear error', f'{type(e).__name__}: {e}'))
    shutil.rmtree(path)
  assert 'tensorflow' not in sys.modules
  return results


def test_fuzz_reader_never_crashes_the_process(tmp_path):
  results = reader_outcomes(tmp_path, 40)
  counts = collections.Counter((m, c) for m, c, _ in results)
  print(f'\nfuzz: {len(results)} reader cases: {dict(counts)}')
  assert len(results) == 40
  # What holds today: every malformed dataset ends in a Python exception (no segfault, no hang),
  # never in TensorFlow; a missing shard and missing features.json name the file.
  for mutation, outcome, message in results:
    if mutation in ('missing_shard', 'missing_features'):
      assert outcome == 'error naming the dataset', (mutation, message)


def test_reader_errors_name_the_dataset(tmp_path):
  results = reader_outcomes(tmp_path, 16)
  unclear = [(m, msg) for m, c, msg in results if c == 'unclear error']
  assert not unclear, unclear
