"""Issue 29, the docs review: commands of docs/pipeline.md that misbehaved when run as written."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_print_config_into_a_pipe_that_closes_is_quiet():
  """`launch.py --print_config | head` (the reader stops early): no BrokenPipeError traceback."""
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'launch.py'), '--task=fold', '--preset=smoke',
       '--print_config'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  proc.stdout.close()  # Closed before launch.py prints (it imports for seconds first).
  err = proc.stderr.read()
  proc.wait(timeout=300)
  assert proc.returncode == 0 and 'Traceback' not in err, err[-2000:]
