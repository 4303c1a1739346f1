"""One writer for the pipeline's metrics: TensorBoard event files (tensorboardX) and a JSONL copy.

The JSONL file (``metrics.jsonl`` in the log directory) keeps every scalar with its step and tag
prefix, so the report and tests read metrics without TensorBoard.

Every scalar's step is the learner step (train, evaluation and critic diagnostics share one x-axis:
an evaluation is logged at the step of the checkpoint it evaluates).

A resumed run goes on from its newest checkpoint, so what an earlier attempt logged after that
step is logged again. ``MetricsWriter(logdir, resume_step=S)`` discards those earlier values:
its new event file opens with TensorBoard's purge marker at step S + 1 (tensorboardX's
``purge_step``: TensorBoard drops every earlier event at or after that step), and rows of
``metrics.jsonl`` with a step after S are removed, so each step shows once.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

JSONL = 'metrics.jsonl'
EVENT_FILE_MARK = 'tfevents'


def event_files(logdir: str) -> list[str]:
  """The names of the TensorBoard event files in ``logdir`` (earlier attempts'), sorted."""
  if not os.path.isdir(logdir):
    return []
  return sorted(name for name in os.listdir(logdir) if EVENT_FILE_MARK in name)


class MetricsWriter:
  """Writes scalars and histograms under ``logdir``.

  Args:
    logdir: the folder of the event files and ``metrics.jsonl`` (created if missing).
    resume_step: the learner step this run goes on from (its newest checkpoint's; 0 without
      one). Values an earlier attempt logged at later steps are discarded (see the module
      docstring). None: keep everything (a fresh run, or a reader that writes nothing new).
  """

  def __init__(self, logdir: str, resume_step: int | None = None):
    from tensorboardX import SummaryWriter  # Pure Python; never loads TensorFlow.
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    purge_step = None
    if resume_step is not None:
      purge_step = int(resume_step) + 1
      drop_jsonl_after(logdir, int(resume_step))
    earlier = len(event_files(logdir))
    if not earlier:
      purge_step = None  # Nothing to purge: no marker in a fresh run's first file.
    self.purge_step = purge_step
    # tensorboardX names a file by the second it was opened and truncates one of the same name:
    # a numbered suffix keeps a writer opened within the same second as the last one from
    # wiping it, and TensorBoard (which reads the files in name order) reads them in order.
    self._tb = SummaryWriter(logdir=logdir, purge_step=purge_step,
                             filename_suffix=f'.{earlier:04d}')
    self._jsonl = open(os.path.join(logdir, JSONL), 'a')

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


def drop_jsonl_after(logdir: str, step: int) -> int:
  """Removes the rows of ``logdir/metrics.jsonl`` logged after ``step`` (and lines cut by a
  stop), atomically; returns how many rows were removed."""
  path = os.path.join(logdir, JSONL)
  if not os.path.exists(path):
    return 0
  kept, removed = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # A line cut by a stop.
        removed += bool(line.strip())
        continue
      if int(row.get('step', 0)) > step:
        removed += 1
      else:
        kept.append(json.dumps(row) + '\n')
  if removed:
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return removed


def read_jsonl(logdir: str, prefix: str | None = None) -> list[dict]:
  """The scalars written under ``logdir`` (optionally only one prefix), in write order."""
  path = os.path.join(logdir, JSONL)
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
