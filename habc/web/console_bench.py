"""Latency of the operator console, measured through a real page in headless Chromium.

  python -m habc.web.console_bench [--hz=10] [--presses=40] [--screenshot=docs/images/console.png]

The console serves the demo environment (``habc.web.console_demo``) at ``--hz``; the page is
driven by Playwright. Two figures, both on this machine's clock (browser and server share it):

* **key -> applied**: from a key event in the page (its ``Date.now()``, sent with the command) to
  the control step that executes the command it produced (the operator's ``act``). A control step
  samples the newest command, so this is at most one control period plus the network, and on
  average half a period.
* **frame**: from the control step that captured a camera frame to the page having decoded it
  (the image's ``load`` event).

Target at 10 Hz: within one control period (100 ms).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time

import numpy as np


def chromium_path() -> str | None:
  return shutil.which('chromium') or shutil.which('chromium-browser')


def _summary(values) -> dict:
  v = np.asarray(list(values), float)
  if not v.size:
    return {'n': 0}
  return {'n': int(v.size), 'median_ms': float(np.median(v)), 'p95_ms': float(
      np.percentile(v, 95)), 'max_ms': float(v.max()), 'mean_ms': float(v.mean())}


def measure(hz: float = 10.0, presses: int = 40, seed: int = 0, screenshot: str = '',
            browser=None, log=print) -> dict:
  """Runs one demo episode with ``presses`` key taps during a takeover; returns the figures."""
  from playwright.sync_api import sync_playwright
  from habc.run import rollout
  from habc.web import console, console_demo
  settings = console.ConsoleSettings(port=0, wait_for_start=False, deadman_s=1.0,
                                     episodes_per_round=30)
  c = console.get_console(settings)
  c.latency['key_to_applied_ms'].clear()
  steps = int(hz * (presses * 0.25 + 6)) + 20
  config = rollout.WorkerConfig(task='console_demo', cameras=('top',), time_limit=steps,
                                execute_steps=8, operator={},
                                env_factory='habc.web.console_demo:make_env',
                                operator_factory=console.OPERATOR,
                                env_options={'control_hz': float(hz)})
  done = threading.Event()

  def body():
    try:
      request = rollout.EpisodeRequest('round001-00003', seed=seed, kind='rollout', record=False,
                                       policy_version=1200)
      episode = rollout._Episode(config, request)  # pylint: disable=protected-access
      while not episode.run_chunk(console_demo.drift_policy([None], None)[0]):
        pass
      episode.result()
    finally:
      done.set()

  thread = threading.Thread(target=body, daemon=True)
  thread.start()
  rng = np.random.default_rng(seed)
  owner = None
  try:
    if browser is None:
      owner = sync_playwright().start()
      browser = owner.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=['--no-sandbox'])
    context = browser.new_context(viewport={'width': 1280, 'height': 860}, bypass_csp=True)
    page = context.new_page()
    page.goto(c.url())
    page.wait_for_function('() => window.habcConsole.state && window.habcConsole.state.step > 3')
    page.keyboard.down('Space')
    for i in range(presses):
      key = ('KeyD', 'KeyW', 'KeyA', 'KeyS')[i % 4]
      time.sleep(float(rng.uniform(0.08, 0.2)))  # Not in step with the control loop.
      page.keyboard.down(key)
      time.sleep(float(rng.uniform(0.05, 0.15)))
      page.keyboard.up(key)
    if screenshot:
      page.keyboard.down('KeyW')
      time.sleep(0.6)
      page.screenshot(path=screenshot)
      page.keyboard.up('KeyW')
    page.keyboard.up('Space')
    time.sleep(0.3)
    frame_ms = page.evaluate('() => window.habcConsole.frameLatencyMs.slice()')
    page.click('#btn-success')
    done.wait(30)
    context.close()
  finally:
    if owner is not None:
      browser.close()
      owner.stop()
  return {'hz': hz, 'period_ms': 1000.0 / hz,
          'key_to_applied': _summary(c.latency['key_to_applied_ms']),
          'key_to_server': _summary(c.latency['key_to_server_ms']),
          'frame': _summary(frame_ms)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m habc.web.console_bench',
                              description=__doc__.split('\n')[0])
  p.add_argument('--hz', type=float, default=10.0)
  p.add_argument('--presses', type=int, default=40)
  p.add_argument('--screenshot', default='')
  p.add_argument('--json', action='store_true')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  if chromium_path() is None:
    print('console_bench: needs the chromium package (bash setup.sh installs it)', file=sys.stderr)
    return 1
  from habc.web import console
  try:
    out = measure(args.hz, args.presses, screenshot=args.screenshot)
  finally:
    console.close_console()
  if args.json:
    print(json.dumps(out))
    return 0
  print(f'operator console at {out["hz"]:.0f} Hz (period {out["period_ms"]:.0f} ms)')
  print('| what | n | median ms | p95 ms | max ms |')
  print('|---|---|---|---|---|')
  for name in ('key_to_applied', 'key_to_server', 'frame'):
    s = out[name]
    if s['n']:
      print(f'| {name.replace("_", " ")} | {s["n"]} | {s["median_ms"]:.1f} | {s["p95_ms"]:.1f} '
            f'| {s["max_ms"]:.1f} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
