"""Learner benchmark: update steps/s of the HABC step and of a plain SFT step.

Same network, same batch, one process; prints a table and the ratio (target: HABC <= 1.2x SFT).
``python -m habc.bench learner [--batch_size=64] [--obs=vision] [--steps=20]``
"""

from __future__ import annotations

import argparse
import os
import time

import jax

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


def time_updates(weighting: str, *, obs: str = 'vision', batch_size: int = 64, steps: int = 20,
                 warmup: int = 3) -> float:
  """Seconds per jitted update (after compilation) for a method's update step."""
  c = _config(weighting, obs, batch_size)
  batch = synthetic_batch(batch_size, action_dim=ACTION_DIM, state_dim=STATE_DIM,
                          horizon=c.model.action_horizon, cameras=len(c.cameras),
                          image_size=c.image_size, vision=obs == 'vision')
  learner = Learner(c, build_model(c, ACTION_DIM), batch, seed=0)
  device_batch = learner.put_batch(batch)
  update = learner._update  # pylint: disable=protected-access
  state = learner.state
  rng = jax.random.PRNGKey(0)
  for _ in range(warmup):
    state, _ = update(state, device_batch, rng)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = update(state, device_batch, rng)
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - start) / steps


def learner_transitions_per_s(obs: str = 'vision', batch_size: int = 64, steps: int = 10) -> float:
  """Transitions (windows) per second that the HABC learner consumes."""
  return batch_size / time_updates('habc', obs=obs, batch_size=batch_size, steps=steps)


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m habc.bench learner')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--obs', default='vision', choices=('vision', 'state'))
  parser.add_argument('--steps', type=int, default=20)
  args = parser.parse_args(argv[1:])
  rows = []
  for name, weighting in (('sft (plain BC)', 'bc'), ('habc', 'habc')):
    seconds = time_updates(weighting, obs=args.obs, batch_size=args.batch_size, steps=args.steps)
    rows.append((name, seconds))
  print(f'learner benchmark: obs={args.obs} batch={args.batch_size} devices={jax.device_count()} '
        f'({jax.devices()[0].platform}), load average {os.getloadavg()[0]:.1f}, '
        f'{os.cpu_count()} cores')
  print(f'| {"step":16s} | {"ms/update":>9s} | {"updates/s":>9s} | {"transitions/s":>13s} |')
  print(f'|{"-" * 18}|{"-" * 11}|{"-" * 11}|{"-" * 15}|')
  for name, seconds in rows:
    print(f'| {name:16s} | {seconds * 1e3:9.1f} | {1 / seconds:9.2f} | '
          f'{args.batch_size / seconds:13.0f} |')
  ratio = rows[1][1] / rows[0][1]
  verdict = 'meets' if ratio <= 1.2 else 'misses'
  print(f'HABC step / SFT step = {ratio:.2f}x ({verdict} the 1.2x target)')
  return 0
