"""Reading datasets the way a user without habc would: plain tensorflow-datasets in a fresh process
(TensorFlow may load there, never in the test process). Shared by the tests that check what the
pipeline and the stations wrote."""

import json
import os
import subprocess
import sys

_SCRIPT = """
import json, sys
import tensorflow_datasets as tfds
out = []
for path in sys.argv[1:]:
  ds = tfds.builder_from_directory(path).as_data_source()['train']
  rows = []
  for i in range(len(ds)):
    ep = ds[i]
    n = len(ep['steps'])
    flags = [(bool(ep['steps'][t]['is_first']), bool(ep['steps'][t]['is_last'])) for t in range(n)]
    whole = flags[0] == (True, n == 1) and flags[-1][1] and not any(
        f or l for f, l in flags[1:-1])
    rows.append({'episode_id': ep['episode_metadata']['episode_id'].decode(), 'steps': n,
                 'first_is_first': flags[0][0], 'last_is_last': flags[-1][1], 'whole': whole})
  out.append(rows)
print(json.dumps(out))
"""


def read_episodes(*paths: str, timeout: float = 180) -> list[list[dict]]:
  """Per dataset directory, one dict per episode: 'episode_id', 'steps' (count), 'first_is_first'
  and 'last_is_last' (the flags of the first and last step), 'whole' (is_first on the first step
  only, is_last on the last step only)."""
  result = subprocess.run([sys.executable, '-c', _SCRIPT, *paths], cwd='/', timeout=timeout,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=''))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])
