"""The files of a run's workdir (``Paths``): where the pipeline, its backend and the stations read
and write (the layout is in habc.run.pipeline's docstring)."""

from __future__ import annotations

import dataclasses
import os
import zipfile


@dataclasses.dataclass
class Paths:
  root: str

  def __post_init__(self):
    self.root = os.path.abspath(self.root)

  @property
  def demo_hdf5(self):
    return os.path.join(self.root, 'demos', 'hdf5')

  @property
  def demo_failed(self):
    return os.path.join(self.root, 'demos', 'failed')

  @property
  def demo_data(self):
    return os.path.join(self.root, 'data', 'demos')

  def round_data(self, r: int):
    return os.path.join(self.root, 'data', f'round_{r:03d}')

  @property
  def checkpoints(self):
    return os.path.join(self.root, 'checkpoints')

  @property
  def eval_dir(self):
    return os.path.join(self.root, 'eval')

  def eval_results(self, r: int):
    return os.path.join(self.eval_dir, f'round_{r:03d}.jsonl')

  def eval_frames(self, r: int):
    return os.path.join(self.eval_dir, f'round_{r:03d}_frames.npz')

  def collect_log(self, r: int):
    return os.path.join(self.root, 'logs', f'collect_round_{r:03d}.jsonl')

  def gates(self, r: int):
    return os.path.join(self.root, 'logs', f'gates_round_{r:03d}.npz')

  @property
  def logs(self):
    return os.path.join(self.root, 'logs')

  @property
  def summary(self):
    return os.path.join(self.root, 'summary.json')


def load_npz(path: str) -> dict:
  """The arrays of an .npz file; {} when it is missing or unreadable (cut by an older stop)."""
  import numpy as np
  if not os.path.exists(path):
    return {}
  try:
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):
    return {}
