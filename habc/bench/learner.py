"""Learner benchmark: update steps/s of the HABC step and of a plain SFT step.

Same network, same batch, one process; prints a table and the ratio (target: HABC <= 1.2x SFT).
``python -m habc.bench learner [--batch_size=64] [--obs=vision] [--steps=20]``
"""

from __future__ import annotations

import argparse
import os
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


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m habc.bench learner')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--obs', default='vision', choices=('vision', 'state'))
  parser.add_argument('--steps', type=int, default=20)
  args = parser.parse_args(argv[1:])
  names = {'bc': 'sft (plain BC)', 'habc': 'habc'}
  seconds = compare_updates(tuple(names), obs=args.obs, batch_size=args.batch_size,
                            steps=args.steps)
  rows = [(names[w], seconds[w]) for w in names]
  print(f'learner benchmark: obs={args.obs} batch={args.batch_size}, {jax.device_count()} '
        f'{jax.devices()[0].platform} device(s), median of 3 alternating blocks of {args.steps} '
        f'updates; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores')
  print(f'| {"step":16s} | {"ms/update":>9s} | {"updates/s":>9s} | {"transitions/s":>13s} |')
  print(f'|{"-" * 18}|{"-" * 11}|{"-" * 11}|{"-" * 15}|')
  for name, seconds in rows:
    print(f'| {name:16s} | {seconds * 1e3:9.1f} | {1 / seconds:9.2f} | '
          f'{args.batch_size / seconds:13.0f} |')
  ratio = rows[1][1] / rows[0][1]
  verdict = 'meets' if ratio <= 1.2 else 'misses'
  print(f'HABC step / SFT step = {ratio:.2f}x ({verdict} the 1.2x target)')
  return 0
