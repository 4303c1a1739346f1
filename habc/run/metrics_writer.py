"""One writer for the pipeline's metrics: TensorBoard event files (tensorboardX) and a JSONL copy.

The JSONL file (``metrics.jsonl`` in the log directory) keeps every scalar with its step and tag
prefix, so the report and tests read metrics without TensorBoard.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


class MetricsWriter:
  """Writes scalars and histograms under ``logdir``."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # Pure Python; never loads TensorFlow.
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    self._tb = SummaryWriter(logdir=logdir)
    self._jsonl = open(os.path.join(logdir, 'metrics.jsonl'), 'a')

  def scalars(self, step: int, values: dict, prefix: str = '') -> None:
    """Writes each finite number of ``values`` as ``prefix/name`` at ``step``."""
    clean = {}
    for name, value in values.items():
      try:
        v = float(value)
      except (TypeError, ValueError):
        continue
      if math.isfinite(v):
        tag = f'{prefix}/{name}' if prefix else name
        self._tb.add_scalar(tag, v, global_step=int(step))
        clean[name] = v
    if clean:
      self._jsonl.write(json.dumps({'step': int(step), 'prefix': prefix, **clean}) + '\n')
      self._jsonl.flush()

  def histogram(self, step: int, tag: str, values) -> None:
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size:
      self._tb.add_histogram(tag, values, global_step=int(step))

  def flush(self) -> None:
    self._tb.flush()
    self._jsonl.flush()

  def close(self) -> None:
    self._tb.close()
    self._jsonl.close()


def read_jsonl(logdir: str, prefix: str | None = None) -> list[dict]:
  """The scalars written under ``logdir`` (optionally only one prefix), in write order."""
  path = os.path.join(logdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # A line cut by a crash.
        continue
      if prefix is None or row.get('prefix') == prefix:
        rows.append(row)
  return rows
