"""The dataset and run viewer: ``python -m habc.view PATH`` and open the URL it prints.

PATH is a run's workdir (the run page, then every round's episodes), one RLDS dataset (a round's
``data/round_XXX``, the demonstrations, converted teleop data), or a folder that holds datasets.
The server binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise; it has no
authentication, so bind another address only on a network you trust.

The process never imports TensorFlow (tfds reads array_record through numpy); JAX is imported on
the first critic evaluation only. docs/viewer.md describes the pages, the memory bounds and the
API.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog='python -m habc.view', description='Browse a run, its rounds and every episode: '
      'frames, controller segments, window kinds, actions, and the critic of a checkpoint.')
  p.add_argument('path', help='a workdir, an RLDS dataset folder, or a folder of datasets')
  p.add_argument('--host', default='127.0.0.1',
                 help='address to bind (default 127.0.0.1: this machine only)')
  p.add_argument('--port', type=int, default=8765, help='port (0: any free port; default 8765)')
  p.add_argument('--checkpoints', action='append', default=[], metavar='DIR',
                 help='another checkpoints folder to offer on episode pages (repeatable), e.g. '
                 'a run\'s checkpoints/ for a dataset given alone')
  p.add_argument('--cache_episodes', type=int, default=16,
                 help='episodes kept in memory, images encoded (default 16)')
  p.add_argument('--cache_mb', type=int, default=256,
                 help='memory for those episodes, in MB (default 256)')
  p.add_argument('--no_scan', action='store_true',
                 help='do not index every episode in the background at start (filters then '
                 'index on first use)')
  return p.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  sock.listen(128)
  sock.set_inheritable(True)
  return sock


def main(argv=None) -> int:
  args = parse_args(argv)
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # The critic of one episode needs no accelerator.
  from habc.web import viewer_data
  try:
    cache = viewer_data.EpisodeCache(args.cache_episodes, args.cache_mb * 2**20)
    catalog = viewer_data.open_catalog(args.path, cache=cache,
                                       extra_checkpoints=args.checkpoints)
  except viewer_data.ViewerError as e:
    print(f'habc viewer: {e}', file=sys.stderr)
    return 2
  try:
    sock = _bind(args.host, args.port)
  except OSError as e:
    print(f'habc viewer: cannot listen on {args.host}:{args.port} ({e.strerror or e}). Another '
          'program may use the port: pass --port=0 for any free one.', file=sys.stderr)
    return 2
  import uvicorn
  from habc.web import viewer_app
  app = viewer_app.create_app(catalog)
  if not args.no_scan:
    catalog.start_scans()
  host, port = sock.getsockname()[:2]
  shown = f'[{host}]' if ':' in host else host
  counts = ', '.join(f'{n}: {len(v)} episodes' if v.error is None else f'{n}: unreadable'
                     for n, v in catalog.datasets.items())
  print(f'habc viewer: http://{shown}:{port}/  ({catalog.kind} {catalog.path}; {counts})',
        flush=True)
  if host not in ('127.0.0.1', 'localhost', '::1'):
    print('habc viewer: warning: bound to a non-loopback address; anyone who reaches it can read '
          'these files (there is no authentication).', file=sys.stderr, flush=True)
  config = uvicorn.Config(app, log_level='warning', access_log=False)
  server = uvicorn.Server(config)
  try:
    server.run(sockets=[sock])
  except KeyboardInterrupt:
    pass
  finally:
    catalog.stop()
  return 0


if __name__ == '__main__':
  sys.exit(main())
