"""Learner benchmark: ``python -m habc.bench learner [--obs=state|vision|both] [--batch_size=64]``.

Two tables, each timed in one process:

* methods: update steps/s of the HABC step and of a plain SFT step, same network and batch
  (target: HABC <= 1.2x SFT).
* loop (issue 25): (a) the bare jitted update on one device batch, (b) the pipeline's training
  loop (``habc.learning.loop.run_updates`` on ``habc.run.backend.Backend``, real batches read from a small
  synthetic RLDS dataset, metrics fetched every ``pipeline.log_every`` steps) and (c) the same
  loop with K updates per device call, timed in alternating blocks; with XLA's cost-analysis
  FLOPs per update, FLOP/s and the share of an estimated peak (``peak_flops``). Target: (b) at
  >= 0.9x the rate of (a).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from experiments import base
from habc.learning.learner import Learner
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model

ACTION_DIM = 10
STATE_DIM = 12


def _config(weighting: str, obs: str, batch_size: int):
  c = base.get_config()
  c.obs = obs
  c.method.weighting = weighting
  c.learner.batch_size = batch_size
  return c


def _jitted_update(weighting: str, obs: str, batch_size: int):
  """A compiled update of a method and its inputs: (update, state, device batch)."""
  c = _config(weighting, obs, batch_size)
  batch = synthetic_batch(batch_size, action_dim=ACTION_DIM, state_dim=STATE_DIM,
                          horizon=c.model.action_horizon, cameras=len(c.cameras),
                          image_size=c.image_size, vision=obs == 'vision')
  learner = Learner(c, build_model(c, ACTION_DIM), batch, seed=0)
  return learner._update, learner.state, learner.put_batch(batch)  # pylint: disable=protected-access


def _seconds_per_update(update, state, device_batch, steps: int):
  rng = jax.random.PRNGKey(0)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = update(state, device_batch, rng)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - start) / steps


def compare_updates(weightings, *, obs: str = 'vision', batch_size: int = 64, steps: int = 20,
                    repeats: int = 3) -> dict:
  """Median seconds per update of each method, timed in alternating blocks after compilation, so
  that a change in the machine's load during the run hits every method alike."""
  runs = {w: list(_jitted_update(w, obs, batch_size)) for w in weightings}
  for w, (update, state, batch) in runs.items():  # Compile and warm up.
    runs[w][1], _ = _seconds_per_update(update, state, batch, 2)
  times = {w: [] for w in weightings}
  for _ in range(repeats):
    for w, (update, state, batch) in runs.items():
      runs[w][1], seconds = _seconds_per_update(update, state, batch, steps)
      times[w].append(seconds)
  return {w: float(np.median(t)) for w, t in times.items()}


def time_updates(weighting: str, *, obs: str = 'vision', batch_size: int = 64,
                 steps: int = 20) -> float:
  """Seconds per jitted update (after compilation) of one method's update step."""
  return compare_updates((weighting,), obs=obs, batch_size=batch_size, steps=steps, repeats=1)[
      weighting]


def learner_transitions_per_s(obs: str = 'vision', batch_size: int = 64, steps: int = 10) -> float:
  """Transitions (windows) per second that the HABC learner consumes."""
  return batch_size / time_updates('habc', obs=obs, batch_size=batch_size, steps=steps)


# ----------------------------------------------------------------------- issue 25: the loop


def cpu_peak_flops(cpuinfo: str, cores: int, fma_units: int = 2) -> tuple[float, str]:
  """FP32 peak of a CPU from /proc/cpuinfo text: cores x clock x FMA units x vector lanes x 2
  (an FMA is two FLOPs). Lanes from the widest vector flag (avx512f: 16 floats, avx/avx2: 8,
  else SSE: 4); the clock is the first 'cpu MHz' (what the kernel reports, not a turbo clock).
  FMA units per core are not in /proc/cpuinfo: ``fma_units`` (2 on server Xeons with AVX-512).
  Returns (FLOP/s, how it was estimated)."""
  mhz = 0.0
  flags: set[str] = set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() == 'cpu MHz' and not mhz:
      mhz = float(value)
    elif key.strip() == 'flags' and not flags:
      flags = set(value.split())
  lanes = 16 if 'avx512f' in flags else 8 if 'avx' in flags else 4
  fma = fma_units if 'fma' in flags or lanes == 16 else 1  # No FMA: one mul + one add per cycle.
  peak = cores * mhz * 1e6 * fma * lanes * 2
  how = (f'{cores} cores x {mhz / 1e3:.2f} GHz x {fma} FMA units x {lanes} fp32 lanes x 2 '
         f'= {peak / 1e9:.0f} GFLOP/s')
  return peak, how


# FP32 (non-tensor-core) peak of a few accelerators, from their makers' data sheets, TFLOP/s.
GPU_FP32_TFLOPS = {'H200': 67.0, 'H100 PCIe': 51.0, 'H100': 67.0, 'A100': 19.5, 'L4': 30.3,
                   'A10G': 31.2, 'V100': 15.7, 'T4': 8.1}


def peak_flops(device=None, fma_units: int = 2) -> tuple[float, str]:
  """(peak FP32 FLOP/s, how) of ``device`` (default: the first JAX device): a GPU from
  ``GPU_FP32_TFLOPS`` by its device kind, a CPU from /proc/cpuinfo (``cpu_peak_flops``)."""
  device = device or jax.devices()[0]
  if device.platform == 'gpu':
    kind = device.device_kind
    for name, tflops in GPU_FP32_TFLOPS.items():  # 'H100 PCIe' is listed before 'H100'.
      if name.lower() in kind.lower():
        return tflops * 1e12, f'{kind}: {tflops} TFLOP/s FP32 (data sheet, no tensor cores)'
    return float('nan'), f'{kind}: not in GPU_FP32_TFLOPS'
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  try:
    with open('/proc/cpuinfo') as f:
      cpuinfo = f.read()
  except OSError:
    return float('nan'), 'no /proc/cpuinfo'
  return cpu_peak_flops(cpuinfo, cores, fma_units)


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call of ``jitted`` on ``args`` from XLA's cost analysis of the compiled program.
  A ``lax.scan`` body is counted once, whatever its length."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


ROUND_FLAGS = {'intervention_reweighting': False, 'gate_warmup': False, 'critic_only': False}


class _TimedBatches:
  """Wraps a batch iterator and adds up the seconds spent waiting in ``next``."""

  def __init__(self, stream):
    self.stream, self.waited = stream, 0.0

  def __iter__(self):
    return self

  def __next__(self):
    start = time.perf_counter()
    batch = next(self.stream)
    self.waited += time.perf_counter() - start
    return batch


def _loop_backend(obs: str, batch_size: int, workdir: str, episodes: int, steps: int):
  """A ``habc.run.backend.Backend`` (habc method, base config plus the default pipeline sections) bound to
  ``workdir`` whose demonstrations are a synthetic RLDS dataset; the learner built."""
  from experiments import presets
  from habc.data import stats as stats_lib
  from habc.data import synthetic
  from habc.run.backend import Backend
  from habc.run.paths import Paths
  c = presets.add_pipeline_sections(base.get_config())
  c.obs = obs
  c.learner.batch_size = batch_size
  paths = Paths(workdir)
  cameras = tuple(c.cameras) if obs == 'vision' else ()
  synthetic.write_dataset(paths.demo_data, episodes=episodes, steps=steps, cameras=cameras,
               image_size=c.image_size)
  stats_lib.save_stats(stats_lib.compute_dataset_stats(paths.demo_data), paths.demo_data)
  backend = Backend(c)
  backend.bind(paths)
  backend._build()  # pylint: disable=protected-access
  return backend


def time_loop(obs: str, *, batch_size: int = 64, steps_per_dispatch: int = 10, repeats: int = 3,
              blocks: int = 1, episodes: int = 8, episode_steps: int = 120, fma_units: int = 2,
              log=print) -> list[dict]:
  """Times (a) the bare update, (b) the pipeline loop, (c) the loop with K updates per call,
  and the loop as it was before issue 25 (every metric fetched after every update).

  Each block is ``pipeline.log_every`` updates (one metrics fetch, as in a run; no checkpoint);
  the three are timed in turn, ``repeats`` times, after compiling each, and the median kept.
  Returns one row per variant: name, seconds per update, updates/s, FLOPs per update, FLOP/s,
  share of peak, share of the time spent in ``next`` on the batch stream (the host thread; it
  overlaps the device's work on the update queued before), and this process's CPU seconds per
  update (all threads: XLA's, the loop's, the batch reader's; more than the bare update's is the
  host work that competes with XLA for the cores).
  """
  from habc.learning import loop
  from habc.learning.learner import with_step_flags
  workdir = tempfile.mkdtemp(prefix='habc_bench_loop_')
  try:
    backend = _loop_backend(obs, batch_size, workdir, episodes, episode_steps)
    learner, c = backend.learner, backend.config
    n = int(c.pipeline.log_every) * blocks
    stream = _TimedBatches(backend.batches([(backend.paths.demo_data, 1.0)], seed=0))
    device_batch = learner.put_batch(with_step_flags(next(stream), **ROUND_FLAGS))
    rng = jax.random.PRNGKey(0)
    flops = xla_flops(learner._update, learner.state, device_batch, rng)  # pylint: disable=protected-access

    def bare(steps):
      state = learner.state
      for _ in range(steps):
        state, metrics = learner._update(state, device_batch, rng)  # pylint: disable=protected-access
      jax.block_until_ready((state, metrics))
      learner.restore(state)

    def run_loop(steps, k):
      plan = loop.StepPlan(target=learner.step + steps, log_every=int(c.pipeline.log_every),
                           checkpoint_every=10**9, flags=lambda _: dict(ROUND_FLAGS),
                           steps_per_dispatch=k)
      loop.run_updates(backend, stream, plan)
      jax.block_until_ready(learner.state)

    def old_loop(steps):
      """The pipeline's loop before issue 25: every metric fetched after every update."""
      sums: dict[str, float] = {}
      for _ in range(steps):
        for key, value in learner.update(next(stream), **ROUND_FLAGS).items():
          if np.isfinite(value):
            sums[key] = sums.get(key, 0.0) + value

    variants = {'(a) bare jitted update': bare,
                '(-) old loop, metrics fetched each step': old_loop,
                '(b) pipeline loop, 1 update/call': lambda steps: run_loop(steps, 1),
                f'(c) pipeline loop, {steps_per_dispatch} updates/call':
                    lambda steps: run_loop(steps, steps_per_dispatch)}
    for fn in variants.values():  # Compile and warm up.
      fn(2 * max(steps_per_dispatch, 1))
    seconds = {name: [] for name in variants}
    waited = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(repeats):
      for name, fn in variants.items():
        stream.waited = 0.0
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(n)
        seconds[name].append((time.perf_counter() - start) / n)
        cpu[name].append((time.process_time() - start_cpu) / n)
        waited[name].append(stream.waited / n)
    stream.stream.close()
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  peak, how = peak_flops(fma_units=fma_units)
  # The same FLOPs per update for (b) and (c): XLA's analysis of a scan counts its body once.
  log(f'obs={obs}: {flops / 1e9:.2f} GFLOP per update (XLA cost analysis of the jitted update, '
      f'used for every variant). Peak: {how}.')
  rows = []
  for name in variants:
    sec = float(np.median(seconds[name]))
    rows.append({'obs': obs, 'name': name, 'seconds': sec, 'updates_per_s': 1 / sec,
                 'flops': flops, 'flops_per_s': flops / sec, 'peak_share': flops / sec / peak,
                 'wait_share': float(np.median(waited[name])) / sec,
                 'cpu_seconds': float(np.median(cpu[name]))})
  return rows


def print_loop_table(rows: list[dict], batch_size: int, print_fn=print) -> None:
  print_fn(f'| obs | {"variant":34s} | ms/update | updates/s | x bare | GFLOP/update | GFLOP/s '
           '| share of peak | in next(batches) | CPU ms/update |')
  print_fn('|---|---|---|---|---|---|---|---|---|---|')
  for row in rows:
    bare = next(r for r in rows if r['obs'] == row['obs'])['seconds']
    wait = '-' if row['name'].startswith('(a)') else f'{100 * row["wait_share"]:.1f}%'
    print_fn(f'| {row["obs"]} | {row["name"]:34s} | {row["seconds"] * 1e3:9.1f} | '
             f'{row["updates_per_s"]:9.1f} | {bare / row["seconds"]:6.2f} | '
             f'{row["flops"] / 1e9:12.2f} | {row["flops_per_s"] / 1e9:7.1f} | '
             f'{100 * row["peak_share"]:12.1f}% | {wait} | '
             f'{1e3 * row.get("cpu_seconds", float("nan")):.1f} |')
  for obs in dict.fromkeys(r['obs'] for r in rows):
    mine = [r for r in rows if r['obs'] == obs]
    for prefix in ('(b)', '(c)'):
      row = next((r for r in mine if r['name'].startswith(prefix)), None)
      if row is None:
        continue
      ratio = mine[0]['seconds'] / row['seconds']
      print_fn(f'obs={obs}: {row["name"][4:]} / bare update = {ratio:.2f}x '
               f'({"meets" if ratio >= 0.9 else "misses"} the 0.9x target), batch {batch_size}')


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m habc.bench learner')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--obs', default='both', choices=('vision', 'state', 'both'))
  parser.add_argument('--steps', type=int, default=20, help='updates per block (methods table)')
  parser.add_argument('--tables', default='methods,loop',
                      help='which tables: methods (HABC vs SFT step), loop (issue 25)')
  parser.add_argument('--steps_per_dispatch', type=int, default=0,
                      help='K of the multi-update variant of the loop table (0: the config '
                      "default, runtime.steps_per_dispatch)")
  parser.add_argument('--repeats', type=int, default=3, help='alternating blocks (loop table)')
  parser.add_argument('--fma_units', type=int, default=2,
                      help='FMA units per core in the CPU peak estimate')
  args = parser.parse_args(argv[1:])
  tables = set(args.tables.split(','))
  if args.steps_per_dispatch < 1:
    from experiments import presets
    args.steps_per_dispatch = int(
        presets.add_pipeline_sections(base.get_config()).runtime.steps_per_dispatch)
  observations = ('state', 'vision') if args.obs == 'both' else (args.obs,)
  if 'methods' in tables:
    for obs in observations:
      _methods_table(obs, args)
  if 'loop' in tables:
    rows = []
    for obs in observations:
      rows += time_loop(obs, batch_size=args.batch_size, repeats=args.repeats,
                        steps_per_dispatch=args.steps_per_dispatch, fma_units=args.fma_units)
    print(f'\nlearner loop (issue 25): batch {args.batch_size}, {jax.device_count()} '
          f'{jax.devices()[0].platform} device(s), median of {args.repeats} alternating blocks '
          f'of pipeline.log_every updates; load average {os.getloadavg()[0]:.1f}, '
          f'{os.cpu_count()} cores')
    print_loop_table(rows, args.batch_size)
  return 0


def _methods_table(obs: str, args) -> None:
  """HABC step vs plain SFT step."""
  names = {'bc': 'sft (plain BC)', 'habc': 'habc'}
  seconds = compare_updates(tuple(names), obs=obs, batch_size=args.batch_size,
                            steps=args.steps)
  rows = [(names[w], seconds[w]) for w in names]
  print(f'learner benchmark: obs={obs} batch={args.batch_size}, {jax.device_count()} '
        f'{jax.devices()[0].platform} device(s), median of 3 alternating blocks of {args.steps} '
        f'updates; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores')
  print(f'| {"step":16s} | {"ms/update":>9s} | {"updates/s":>9s} | {"transitions/s":>13s} |')
  print(f'|{"-" * 18}|{"-" * 11}|{"-" * 11}|{"-" * 15}|')
  for name, sec in rows:
    print(f'| {name:16s} | {sec * 1e3:9.1f} | {1 / sec:9.2f} | '
          f'{args.batch_size / sec:13.0f} |')
  ratio = rows[1][1] / rows[0][1]
  verdict = 'meets' if ratio <= 1.2 else 'misses'
  print(f'HABC step / SFT step = {ratio:.2f}x ({verdict} the 1.2x target)')
