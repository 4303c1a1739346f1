"""The training loop the pipeline runs: updates with no host wait between log points.

``run_updates(backend, batches, plan, hooks)`` takes a learner from ``backend.step`` to
``plan.target``. Each update is dispatched (queued) and the loop goes on to fetch and place the
next batch while the device computes; the host waits for the device only every ``log_every``
steps, at a checkpoint, and at the end. Metrics stay on the device: per-name sums and counts of
finite values are accumulated there (``MetricTotals``) and fetched at log points, so the means in
``logs/train_<stage>.json`` are those of every step, as when each step's metrics were fetched.

With ``steps_per_dispatch`` K > 1, runs of K updates between log and checkpoint boundaries go to
the device as one call (``Backend.update_many``, a ``lax.scan``); the steps before a boundary that
do not fill K are single updates, so only two programs are ever compiled.

``habc.bench.learner`` times this very function against the bare jitted update.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from habc.learning import profile as profile_lib



# ------------------------------------------------------------------------------------- metrics


def _finite_totals(metrics: dict) -> dict:
  """{name: (sum of finite values, count of finite values)} of scalars or [K] arrays."""
  def one(value):
    v = jnp.ravel(jnp.asarray(value, jnp.float32))
    finite = jnp.isfinite(v)
    return jnp.where(finite, v, 0.0).sum(), finite.sum(dtype=jnp.int32)

  return {name: one(value) for name, value in metrics.items()}


@jax.jit
def _start_totals(metrics: dict) -> dict:
  return _finite_totals(metrics)


@jax.jit
def _add_totals(totals: dict, metrics: dict) -> dict:
  new = _finite_totals(metrics)
  return {name: (totals[name][0] + new[name][0], totals[name][1] + new[name][1])
          for name in totals}


class MetricTotals:
  """NaN-aware per-name sums and counts of a stream of metric dicts, kept on the device.

  ``add`` queues one small device call (no wait); ``fold`` (at a log point) fetches the device
  totals into float64 host sums and starts the device ones afresh, so float32 rounding only spans
  one log interval; ``means`` gives {name: mean of its finite values}, names never finite left
  out (a metric of a sample kind absent from every batch). Values may be Python floats too.
  """

  def __init__(self):
    self._device = None
    self._sums: dict[str, float] = {}
    self._counts: dict[str, int] = {}

  def add(self, metrics: dict) -> None:
    if self._device is not None and set(metrics) != set(self._device):
      self.fold()  # A new set of names (another stage's metrics): start a new device total.
    self._device = (_start_totals(metrics) if self._device is None
                    else _add_totals(self._device, metrics))

  def fold(self) -> None:
    if self._device is None:
      return
    for name, (total, count) in jax.device_get(self._device).items():
      if count:
        self._sums[name] = self._sums.get(name, 0.0) + float(total)
        self._counts[name] = self._counts.get(name, 0) + int(count)
    self._device = None

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
      profiler.before(step)
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
