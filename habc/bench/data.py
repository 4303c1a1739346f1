"""Speed of the batch reader: ``python -m habc.bench data`` (or ``python -m habc.bench.data``).

Writes a synthetic RLDS dataset (3 cameras at 64x64, stored as JPEG like the writer's default), then
times the reader (``habc.data.reader.make_batches``) at the default batch size: transitions
(windows) per second, in this process and with grain worker processes. Prints them next to the
learner's consumption rate (``habc.bench.learner.learner_transitions_per_s``, or --learner_rate)
and the ratio; the target is a reader at least 5x faster than the learner.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

DESIGN_LEARNER_RATE = 64 / 0.110  # shared/DESIGN.md: ~110 ms per update at batch 64 here.


def reader_rate(path, *, batch_size, cameras, horizon, next_offset, num_workers, prefetch,
                batches, warmup=5):
  """Transitions/s of ``make_batches`` over ``batches`` batches after ``warmup``."""
  from habc.data import reader
  stream = reader.make_batches(path, horizon=horizon, next_offset=next_offset,
                               batch_size=batch_size, cameras=cameras, num_workers=num_workers,
                               prefetch=prefetch, seed=1)
  try:
    for _ in range(warmup):
      next(stream)
    start = time.perf_counter()
    for _ in range(batches):
      next(stream)
    return batches * batch_size / (time.perf_counter() - start)
  finally:
    stream.close()


def learner_rate(override, batch_size):
  """(transitions/s, where the number comes from), measured now on this machine."""
  if override:
    return override, '--learner_rate'
  try:
    from habc.bench import learner as learner_bench
  except ImportError as e:
    return DESIGN_LEARNER_RATE, f'DESIGN.md figure (habc.bench.learner unavailable: {e})'
  rate = learner_bench.learner_transitions_per_s(obs='vision', batch_size=batch_size)
  return float(rate), 'habc.bench.learner (HABC update, obs=vision, measured now)'


def main(argv=None):
  """argv: [program, args...] as ``python -m habc.bench`` passes it (default: sys.argv)."""
  p = argparse.ArgumentParser(prog='python -m habc.bench data', description=__doc__.split('\n')[0])
  p.add_argument('--batch_size', type=int, default=64)
  p.add_argument('--image_size', type=int, default=64)
  p.add_argument('--cameras', default='top,wrist_left,wrist_right')
  p.add_argument('--horizon', type=int, default=16)
  p.add_argument('--next_offset', type=int, default=8)
  p.add_argument('--episodes', type=int, default=16)
  p.add_argument('--steps', type=int, default=150, help='steps per synthetic episode')
  p.add_argument('--batches', type=int, default=60, help='batches timed per configuration')
  p.add_argument('--workers', default='0,2', help='grain worker counts to time')
  p.add_argument('--learner_rate', type=float, default=0.0,
                 help='learner transitions/s (default: habc.bench.learner)')
  p.add_argument('--image_format', default='jpeg', choices=('jpeg', 'png'))
  p.add_argument('--data', default='', help='time this dataset instead of a synthetic one')
  args = p.parse_args((sys.argv if argv is None else argv)[1:])
  cameras = tuple(c for c in args.cameras.split(',') if c)
  tmp = None
  path = args.data
  if not path:
    tmp = tempfile.mkdtemp(prefix='habc_bench_data_')
    path = os.path.join(tmp, 'rlds')
    start = time.perf_counter()
    from habc.data import synthetic
    synthetic.write_dataset(path, episodes=args.episodes, steps=args.steps, cameras=cameras,
                            image_size=args.image_size, image_format=args.image_format)
    wrote = time.perf_counter() - start
    print(f'wrote {args.episodes} episodes x {args.steps} steps ({len(cameras)} cameras '
          f'{args.image_size}x{args.image_size} {args.image_format}) in {wrote:.1f}s '
          f'({args.episodes * args.steps / wrote:.0f} steps/s)')
  try:
    rows = []
    for workers in (int(w) for w in args.workers.split(',')):
      for prefetch in ((0, 2) if workers == 0 else (2,)):
        rate = reader_rate(path, batch_size=args.batch_size, cameras=cameras,
                           horizon=args.horizon, next_offset=args.next_offset,
                           num_workers=workers, prefetch=prefetch, batches=args.batches)
        rows.append((f'reader workers={workers} prefetch={prefetch}', rate))
    learner, source = learner_rate(args.learner_rate, args.batch_size)
    best = max(rate for _, rate in rows)
    print(f'\n{"":34s} {"transitions/s":>14s} {"x learner":>10s}')
    for name, rate in rows:
      print(f'{name:34s} {rate:14.0f} {rate / learner:10.1f}')
    print(f'{"learner":34s} {learner:14.0f} {1.0:10.1f}')
    print(f'\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; batch '
          f'{args.batch_size}, cameras {",".join(cameras)} at {args.image_size}x'
          f'{args.image_size}, horizon {args.horizon}; learner rate from {source}.')
    print(f'best reader / learner = {best / learner:.1f}x (target >= 5x): '
          f'{"OK" if best >= 5 * learner else "BELOW TARGET"}')
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
