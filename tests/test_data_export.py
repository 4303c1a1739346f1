"""The TFRecord export, read back by tf.data through plain tfds (TF only in subprocesses)."""

import os
import subprocess
import sys
import textwrap

import numpy as np

from habc.data import synthetic, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_reads_with_as_dataset(tmp_path):
  rng = np.random.default_rng(0)
  episodes = [synthetic.synthetic_episode(rng, num_steps=7 + i, cameras=('top',), image_size=16,
                                          episode_id=f'e{i}', interventions=[(1, 3)])
              for i in range(3)]
  src = str(tmp_path / 'rlds')
  writer.write_episodes(src, episodes)
  out = str(tmp_path / 'tfrecord')
  exported = subprocess.run(
      [sys.executable, os.path.join(REPO, 'data', 'export_rlds.py'), f'--input={src}',
       f'--output={out}', '--episodes_per_shard=2'], capture_output=True, text=True, timeout=300)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert 'Exported 3 episodes' in exported.stdout
  assert sorted(f for f in os.listdir(out) if 'tfrecord' in f) == [
      'habc_episodes-train.tfrecord-00000-of-00002', 'habc_episodes-train.tfrecord-00001-of-00002']
  code = f'''
      import numpy as np, tensorflow_datasets as tfds
      ds = tfds.builder_from_directory({out!r}).as_dataset(split='train')
      for ep in ds:  # Episodes hold a nested tf.data.Dataset of steps (RLDS).
        steps = list(ep['steps'].as_numpy_iterator())
        print('EP', ep['episode_metadata']['episode_id'].numpy().decode(), len(steps),
              steps[0]['observation']['top'].shape, steps[0]['observation']['top'].dtype,
              int(sum(s['is_intervention'] for s in steps)),
              float(np.abs(np.stack([s['action'] for s in steps])).sum()))
  '''
  read = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                        text=True, timeout=300, cwd=str(tmp_path))
  assert read.returncode == 0, read.stderr[-3000:]
  lines = sorted(l for l in read.stdout.splitlines() if l.startswith('EP'))
  assert len(lines) == 3
  for i, line in enumerate(lines):
    _, name, num_steps, *rest = line.split(' ', 3)
    assert name == f'e{i}' and int(num_steps) == 7 + i
    assert '(16, 16, 3) uint8 2' in line
    total = float(line.rsplit(' ', 1)[1])
    np.testing.assert_allclose(total, np.abs(episodes[i]['steps']['action']).sum(), rtol=1e-4)
  assert 'tensorflow' not in sys.modules
