"""The benchmark section of RESULTS.md: running ``python -m habc.bench NAME`` into results/bench
and reading its tables back; the memory figures of the runs."""

from __future__ import annotations

import datetime
import glob
import os
import platform
import subprocess
import sys
import time

from habc.analysis.summaries import BENCHMARKS


# Benchmarks .......................................................................................
def benchmark_names() -> list[str]:
  """The benchmarks ``python -m habc.bench`` knows (its BENCHMARKS), else learner, data, envs."""
  try:
    from habc.bench import __main__ as dispatcher
    return list(dispatcher.BENCHMARKS)
  except (ImportError, AttributeError):
    return list(BENCHMARKS)


def benchmark_command(name: str) -> list[str]:
  return [sys.executable, '-m', 'habc.bench', name]


def run_benchmark(name: str, argv: list[str], bench_dir: str, cwd: str | None = None) -> str:
  """Runs one benchmark command and saves its stdout as ``<bench_dir>/<name>.txt``.

  Line 1 is ``$ <command>`` (as one would type it), line 2 ``# measured <UTC time> ...``; a failed
  command's stderr tail is kept under its output. Returns the file's path.
  """
  os.makedirs(bench_dir, exist_ok=True)
  is_python = os.path.basename(argv[0]).startswith('python')
  shown = ' '.join(['python'] + argv[1:] if is_python else argv)
  load = os.getloadavg()[0]  # Other work on the machine slows every benchmark: keep it on record.
  start = time.time()
  when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
  seconds = time.time() - start
  text = [f'$ {shown}',
          f'# measured {when} on {platform.node() or "?"} ({os.cpu_count()} cores, load average '
          f'{load:.1f} at start), {seconds:.0f} s, exit code {proc.returncode}',
          proc.stdout.rstrip('\n')]
  if proc.returncode:
    text += ['# stderr (last 40 lines):'] + proc.stderr.rstrip('\n').splitlines()[-40:]
  path = os.path.join(bench_dir, f'{name}.txt')
  with open(path, 'w') as f:
    f.write('\n'.join(text) + '\n')
  return path


def read_benchmark(path: str) -> dict:
  """{'name', 'command', 'measured', 'body'} of a saved benchmark text file."""
  with open(path) as f:
    lines = f.read().rstrip('\n').split('\n')
  command = lines[0][2:] if lines and lines[0].startswith('$ ') else None
  body = lines[1:] if command else lines
  measured = None
  if body and body[0].startswith('# measured '):
    measured, body = body[0][len('# measured '):], body[1:]
  if measured is None:
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    measured = f'{mtime:%Y-%m-%d %H:%M} UTC (file time; the file does not say)'
  return {'name': os.path.splitext(os.path.basename(path))[0], 'command': command,
          'measured': measured, 'body': '\n'.join(body)}


def benchmark_section(bench_dir: str) -> list[str]:
  lines = ['## Benchmarks', '']
  paths = glob.glob(os.path.join(bench_dir, '*.txt'))
  names = benchmark_names()
  order = {f'{b}.txt': i for i, b in enumerate(names)}
  paths.sort(key=lambda p: (order.get(os.path.basename(p), len(order)), os.path.basename(p)))
  present = {os.path.basename(p) for p in paths}
  absent = [b for b in names if f'{b}.txt' not in present]
  if absent:
    lines += [f'Not measured yet: {", ".join(absent)} (`python -m habc.results --run_benchmarks` '
              f'saves them to `{bench_dir}/`).', '']
  for path in paths:
    b = read_benchmark(path)
    command = (f'Command: `{b["command"]}`' if b['command'] else
               'Command: not recorded (the first line of the file should be `$ <command>`)')
    lines += [f'### {b["name"]}', '', f'{command}, measured {b["measured"]}.', '', '```',
              b['body'], '```', '']
  return lines


def memory_section(groups: dict) -> list[str]:
  """Peak resident memory of each run's pipeline (main process + environment workers), from the
  ``peak_rss_mb`` the sweep copies out of the run's per-round resource logs."""
  rows = [(key, run) for key, runs in groups.items() for run in runs
          if run.get('peak_rss_mb') is not None]
  lines = ['### Peak memory of the pipeline', '']
  if not rows:
    return lines + ['No run summary records `peak_rss_mb` yet (sweeps from before it was added).',
                    '']
  lines += ['Resident memory of the main process and its environment workers, largest over the '
            "rounds (target: < 8 GB, not growing from round to round; per-round values are in each "
            "workdir's `logs/resources_round_*.json`).", '',
            '| task | method | obs | seed | peak RSS (MB) | rounds |', '|---|---|---|---|---|---|']
  for (task, method, obs, _), run in rows:
    lines.append(f'| {task} | {method} | {obs} | {run["seed"]} | {run["peak_rss_mb"]:.0f} | '
                 f'{len(run["rounds"]) - 1} |')
  return lines + ['']
  return lines
