"""The training loop the pipeline runs: updates with no host wait between log points.

``run_updates(backend, batches, plan, hooks)`` takes a learner from ``backend.step`` to
``plan.target``. Each update is dispatched (queued) and the loop goes on to fetch and place the
next batch while the device computes; the host waits for the device only every ``log_every``
steps, at a checkpoint, and at the end. Metrics stay on the device until a log point, where
those of every update since the last one are fetched in one transfer (``MetricTotals``), so the
means in ``logs/train_<stage>.json`` are those of every step, as when each step's metrics were
fetched.

With ``steps_per_dispatch`` K > 1, runs of K updates between log and checkpoint boundaries go to
the device as one call (``Backend.update_many``, a ``lax.scan``); the steps before a boundary that
do not fill K are single updates, so only two programs are ever compiled.

``habc.bench.learner`` times this very function against the bare jitted update.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import jax
import numpy as np

from habc.learning import profile as profile_lib


# ------------------------------------------------------------------------------------- metrics


class MetricTotals:
  """NaN-aware per-name means of a stream of metric dicts, with no device work per step.

  ``add`` keeps a reference to an update's metrics (device scalars, [K] arrays of K updates, or
  Python floats) and does nothing else: no device call, no wait. ``fold`` (at a log point, where
  the loop waits for the device anyway) fetches what was kept in one transfer and adds each finite
  value to float64 per-name sums and counts, update by update, as the loop did when it fetched
  every step; so the means are the same numbers. ``means`` gives {name: mean of its finite
  values}; names never finite are left out (a metric of a sample kind absent from every batch).
  """

  MAX_PENDING = 1000  # Updates kept before a fold even between log points (bounds memory).

  def __init__(self):
    self._pending: list[dict] = []
    self._sums: dict[str, float] = {}
    self._counts: dict[str, int] = {}

  def add(self, metrics: dict) -> None:
    self._pending.append(metrics)
    if len(self._pending) >= self.MAX_PENDING:
      self.fold()

  def fold(self) -> None:
    pending, self._pending = jax.device_get(self._pending), []
    for metrics in pending:
      rows = {name: np.asarray(value, np.float64).reshape(-1) for name, value in metrics.items()}
      for i in range(max((len(v) for v in rows.values()), default=0)):
        for name, values in rows.items():
          v = float(values[i])
          if np.isfinite(v):
            self._sums[name] = self._sums.get(name, 0.0) + v
            self._counts[name] = self._counts.get(name, 0) + 1

  def means(self) -> dict[str, float]:
    self.fold()
    return {name: total / self._counts[name] for name, total in self._sums.items()}


def last_values(metrics: dict, stacked: bool) -> dict[str, float]:
  """The host floats of one update's metrics (waits for them): of the last of K when stacked."""
  host = jax.device_get(metrics)
  return {k: float(np.asarray(v).reshape(-1)[-1] if stacked else v) for k, v in host.items()}


# ---------------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """What the loop does at each learner step.

  target: the step to reach. log_every / checkpoint_every: boundaries where metrics are fetched
  and logged / a checkpoint is saved (and always at ``target``). steps_per_dispatch: K updates
  per device call between boundaries. flags: step -> the keyword flags of the update that starts
  at ``step`` (``intervention_reweighting``, ``gate_warmup``, ``critic_only``; bool or None).
  profile: (start, end) learner steps whose updates are traced
  (``habc.learning.profile.parse_profile``), or None.
  """
  target: int
  log_every: int
  checkpoint_every: int
  flags: Callable[[int], dict]
  steps_per_dispatch: int = 1
  profile: tuple[int, int] | None = None


@dataclasses.dataclass
class LoopHooks:
  """Callbacks of the loop (each optional): ``on_log(step, metrics)`` with host floats of that
  step's update, ``on_checkpoint(step)``, ``on_step(step)`` after every update (a stop hook may
  raise there), and ``profile_dir`` (where a trace goes)."""
  on_log: Callable[[int, dict], None] | None = None
  on_checkpoint: Callable[[int], None] | None = None
  on_step: Callable[[int], None] | None = None
  profile_dir: str = ''


def steps_in_next_call(step: int, plan: StepPlan) -> int:
  """How many updates the next device call runs from ``step``: K when K fit before the next log
  boundary, checkpoint boundary and the target, else 1."""
  boundary = min(plan.target, (step // plan.log_every + 1) * plan.log_every,
                 (step // plan.checkpoint_every + 1) * plan.checkpoint_every)
  k = max(1, int(plan.steps_per_dispatch))
  return k if boundary - step >= k else 1


# ---------------------------------------------------------------------------------- the loop


def run_updates(backend, batches: Iterator[dict], plan: StepPlan,
                hooks: LoopHooks | None = None) -> dict[str, float]:
  """Trains ``backend`` (``step``, ``update``, and with K > 1 ``update_many``) from its step to
  ``plan.target`` on ``batches``; returns the mean of each metric's finite values over these
  updates (``MetricTotals.means``).

  ``backend.update(batch, **flags)`` returns the update's metrics, device scalars (or floats);
  ``backend.update_many(batches, intervention_reweighting=, gate_warmup=[K], critic_only=[K])``
  returns them stacked [K]. Nothing is fetched between log points.
  """
  hooks = hooks or LoopHooks()
  totals = MetricTotals()
  profiler = profile_lib.StepTrace(plan.profile, hooks.profile_dir)
  step = backend.step
  metrics = None
  try:
    while step < plan.target:
      k = steps_in_next_call(step, plan)
      profiler.before(step, k)
      if k == 1:
        metrics = backend.update(next(batches), **plan.flags(step))
      else:
        flags = [plan.flags(step + i) for i in range(k)]
        metrics = backend.update_many(
            [next(batches) for _ in range(k)],
            intervention_reweighting=flags[0].get('intervention_reweighting'),
            gate_warmup=_per_step(flags, 'gate_warmup'),
            critic_only=_per_step(flags, 'critic_only'))
      totals.add(metrics)
      for i in range(1, k):  # The updates inside one call, for progress and stop hooks.
        if hooks.on_step:
          hooks.on_step(step + i)
      step += k
      profiler.after(step, metrics)
      if step % plan.log_every == 0 or step == plan.target:
        if hooks.on_log:
          hooks.on_log(step, last_values(metrics, stacked=k > 1))
        totals.fold()
      if step % plan.checkpoint_every == 0 or step == plan.target:
        if hooks.on_checkpoint:
          hooks.on_checkpoint(step)
      if hooks.on_step:
        hooks.on_step(step)
  finally:
    profiler.stop(metrics)
  return totals.means()


def _per_step(flags: list[dict], key: str) -> list | None:
  """One flag per update, or None where the updates leave it to the default."""
  values = [f.get(key) for f in flags]
  if all(v is None for v in values):
    return None
  if any(v is None for v in values):
    raise ValueError(f'run_updates: flag {key!r} is None for some updates of one call and set '
                     'for others; StepPlan.flags must set it for every step or for none.')
  return values
