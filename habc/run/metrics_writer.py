"""One writer for the pipeline's metrics: TensorBoard event files (tensorboardX) and a JSONL copy.

The JSONL file (``metrics.jsonl`` in the log directory) keeps every scalar with its step and tag
prefix, so the report and tests read metrics without TensorBoard.

Every scalar's step is the learner step (train, evaluation and critic diagnostics share one x-axis:
an evaluation is logged at the step of the checkpoint it evaluates).

A resumed run goes on from its newest checkpoint, so what an earlier attempt logged after that
step is logged again. ``MetricsWriter(logdir, resume_step=S)`` discards those earlier values:
its new event file opens with TensorBoard's purge marker at step S + 1 (a SessionLog START
event, what tensorboardX's ``purge_step`` writes: TensorBoard drops every event of earlier files
at or after that step), and rows of
``metrics.jsonl`` with a step after S are removed, so each step shows once.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time

import numpy as np

JSONL = 'metrics.jsonl'
EVENT_FILE_MARK = 'tfevents'


def event_files(logdir: str) -> list[str]:
  """The names of the TensorBoard event files in ``logdir`` (earlier attempts'), sorted."""
  if not os.path.isdir(logdir):
    return []
  return sorted(name for name in os.listdir(logdir) if EVENT_FILE_MARK in name)


class MetricsWriter:
  """Writes scalars and histograms under ``logdir``, in the calling thread.

  Event records are written here (``event_record``; the summaries are tensorboardX's protos).
  tensorboardX's ``SummaryWriter`` writes from a background thread and flushes again at
  interpreter exit: with the disk full, that thread and the exit hook printed tracebacks of their
  own, depending on timing, after the run's one-line error. Here a failed write raises where it
  is made, each call is flushed before it returns, and ``close`` never raises.

  Args:
    logdir: the folder of the event files and ``metrics.jsonl`` (created if missing).
    resume_step: the learner step this run goes on from (its newest checkpoint's; 0 without
      one). Values an earlier attempt logged at later steps are discarded (see the module
      docstring). None: keep everything (a fresh run, or a reader that writes nothing new).
  """

  def __init__(self, logdir: str, resume_step: int | None = None):
    from tensorboardX.proto import event_pb2  # Pure Python; never loads TensorFlow.
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
    self._event_pb2 = event_pb2
    self._jsonl = None
    # Named like tensorboardX's files, plus the number of files before it: TensorBoard reads a
    # run's files in name order, and two writers opened in the same second get two files.
    name = (f'events.out.{EVENT_FILE_MARK}.{int(time.time())}.{socket.gethostname()}.'
            f'{earlier:04d}')
    self.path = os.path.join(logdir, name)
    self._events = open(self.path, 'xb')
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    if purge_step is not None:
      # TensorBoard drops every event of earlier files at or after this step.
      self._write(event_pb2.Event(
          step=purge_step, wall_time=time.time(),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._events.flush()
    self._jsonl = open(os.path.join(logdir, JSONL), 'a')

  def _write(self, event) -> None:
    self._events.write(event_record(event.SerializeToString()))

  def _write_summary(self, step: int, summary) -> None:
    self._write(self._event_pb2.Event(step=int(step), wall_time=time.time(), summary=summary))

  def scalars(self, step: int, values: dict, prefix: str = '') -> None:
    """Writes each finite number of ``values`` as ``prefix/name`` at ``step``."""
    from tensorboardX import summary
    clean = {}
    for name, value in values.items():
      try:
        v = float(value)
      except (TypeError, ValueError):
        continue
      if math.isfinite(v):
        tag = f'{prefix}/{name}' if prefix else name
        self._write_summary(step, summary.scalar(tag, v))
        clean[name] = v
    if clean:
      self._events.flush()
      self._jsonl.write(json.dumps({'step': int(step), 'prefix': prefix, **clean}) + '\n')
      self._jsonl.flush()

  def histogram(self, step: int, tag: str, values) -> None:
    """Writes the finite ``values`` as a TensorBoard histogram ``tag`` at ``step``."""
    from tensorboardX import summary
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size:
      self._write_summary(step, summary.histogram(tag, values, bins='auto'))
      self._events.flush()

  def flush(self) -> None:
    self._events.flush()
    self._jsonl.flush()

  def close(self) -> None:
    """Closes both files. Every call above flushed what it wrote (an error was raised there), so
    only what a failed write left buffered can be lost here; it is dropped quietly (a full disk
    was already reported) rather than raised again, or at exit by the garbage collector."""
    for f in (self._events, self._jsonl):
      if f is None:
        continue
      try:
        f.close()
      except OSError:
        pass  # Closed all the same: Python closes the file after a failed flush.


def event_record(data: bytes) -> bytes:
  """One record of a TensorBoard event file (the TFRecord framing): length, its masked CRC-32C,
  the serialized Event, its masked CRC-32C; little-endian."""
  from tensorboardX.record_writer import masked_crc32c
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data
          + struct.pack('<I', masked_crc32c(data)))


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
