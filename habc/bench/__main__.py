"""``python -m habc.bench NAME [args]``: runs one benchmark and prints its table."""

import importlib
import sys

BENCHMARKS = {
    'learner': 'habc.bench.learner',  # HABC update vs plain SFT update.
    'data': 'habc.bench.data',  # Batch reader throughput vs the learner's consumption.
    'envs': 'habc.bench.envs',  # Control steps/s of every task, with and without rendering.
    'policy': 'habc.bench.policy',  # One action chunk vs the time it takes to execute.
    'rollout': 'habc.bench.rollout',  # Env steps/s with the policy in the loop vs raw physics.
}


def main(argv):
  if len(argv) < 2 or argv[1] not in BENCHMARKS:
    print(f'usage: python -m habc.bench {{{",".join(BENCHMARKS)}}} [args]', file=sys.stderr)
    return 2
  module = importlib.import_module(BENCHMARKS[argv[1]])
  return module.main([argv[0]] + argv[2:]) or 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
