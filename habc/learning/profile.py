"""Profiles of a few learner steps for TensorBoard (``runtime.profile``; docs/profiling.md).

``runtime.profile='steps:START-END'`` traces the updates that take the learner from step START
to step END with the JAX profiler, into ``<workdir>/logs/profile`` (``PROFILE_DIR``), where
``tensorboard --logdir <workdir>/logs`` with the profile plugin finds it. This module imports no
JAX at import time: ``habc.config_checks`` checks the value with ``parse_profile``.
"""

from __future__ import annotations

import os
import re

PROFILE_DIR = 'profile'  # Under <workdir>/logs.
_STEPS = re.compile(r'^steps:(\d+)-(\d+)$')


def parse_profile(value) -> tuple[int, int] | None:
  """'' or None (off) -> None; 'steps:START-END' -> (START, END), START < END. Raises ValueError
  saying what to write otherwise."""
  if value is None or value == '':
    return None
  match = _STEPS.match(str(value).strip())
  if not match or int(match.group(1)) >= int(match.group(2)):
    raise ValueError(f"config.runtime.profile={value!r} must be '' (off) or 'steps:START-END', "
                     "learner steps with START < END (e.g. 'steps:20-25' traces the five updates "
                     "after step 20); set --config.runtime.profile=steps:20-25.")
  return int(match.group(1)), int(match.group(2))


class StepTrace:
  """Starts a JAX profiler trace before the first update inside ``window`` (START, END) and stops
  it once the learner reaches END, or when the loop ends first (``stop``). Before
  stopping it waits for the last queued update, so the trace holds its run on the device.

  window None: does nothing. Updates run K at a time are traced whole.
  """

  def __init__(self, window: tuple[int, int] | None, directory: str):
    self.window, self.directory, self.active = window, directory, False

  def before(self, step: int, count: int = 1) -> None:
    """Call before queueing the ``count`` updates that start at learner ``step``: the trace
    starts if any of them falls in the window."""
    if self.window and not self.active and step < self.window[1] and step + count > self.window[0]:
      import jax
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Call once the learner is at ``step``; ``outputs``: what the last queued update returns."""
    if self.active and step >= self.window[1]:
      self.stop(outputs)

  def stop(self, outputs) -> None:
    if self.active:
      import jax
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active = False
