"""Policy inference benchmark: one action chunk against the time the chunk takes to execute.

``python -m habc.bench policy [--steps=20]``: for the default network (vision and state
observations), milliseconds per jitted chunk at batch 1 and batch 2 (two environment workers),
next to the execution time of the executed part of a chunk at the tasks' control rate.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from experiments import presets
from habc.bench.learner import ACTION_DIM, STATE_DIM
from habc.learning.learner import create_train_state
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model, make_policy_fn

CONTROL_HZ = 10.0  # The simulated tasks' control rate (habc.envs.base).


def time_chunk(obs: str, batch_size: int, steps: int) -> float:
  """Seconds per sampled chunk (after compilation)."""
  c = presets.make_config('default')
  c.obs = obs
  batch = synthetic_batch(batch_size, action_dim=ACTION_DIM, state_dim=STATE_DIM,
                          horizon=c.model.action_horizon, cameras=len(c.cameras) or 3,
                          image_size=c.image_size, vision=obs == 'vision')
  model = build_model(c, ACTION_DIM)
  params = create_train_state(c, model, batch, jax.random.PRNGKey(0)).params
  policy = make_policy_fn(model, c)
  rng = jax.random.split(jax.random.PRNGKey(1), batch_size)  # One key per row.
  jax.block_until_ready(policy(params, batch['obs'], rng))
  start = time.perf_counter()
  for _ in range(steps):
    out = policy(params, batch['obs'], rng)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m habc.bench policy')
  parser.add_argument('--steps', type=int, default=20)
  args = parser.parse_args(argv[1:])
  c = presets.make_config('default')
  budget = c.rollout.execute_steps / CONTROL_HZ
  print(f'policy benchmark: {c.model.flow_steps} integration steps, chunk of '
        f'{c.model.action_horizon} executed {c.rollout.execute_steps} steps at {CONTROL_HZ:.0f} Hz '
        f'= {budget * 1e3:.0f} ms; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores')
  print(f'| {"obs":6s} | {"batch":>5s} | {"ms/chunk":>8s} | {"share of execution time":>23s} |')
  print(f'|{"-" * 8}|{"-" * 7}|{"-" * 10}|{"-" * 25}|')
  for obs in ('vision', 'state'):
    for batch_size in (1, 2):
      seconds = time_chunk(obs, batch_size, args.steps)
      print(f'| {obs:6s} | {batch_size:5d} | {seconds * 1e3:8.1f} | {seconds / budget:22.1%} |')
  return 0
