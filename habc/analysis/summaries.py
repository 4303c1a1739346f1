"""What results/ holds and how it is read: the methods, tasks and paper figures every table
and figure uses, and the sweep summaries loaded from results/ (with their workdirs)."""

from __future__ import annotations

import glob
import json
import os


METHODS = ('sft', 'imit_dagger', 'imit_recap', 'habc_v', 'habc', 'habc_ir', 'habc_naive_credit',
           'awr_single_scalar')
# Diagnostic runs that are not in the paper's comparison: listed after the methods where they
# were run, never counted as missing.
CONTROLS = ('sft_continued', 'habc_mc', 'habc_extra_round')
ORDER = METHODS + CONTROLS  # Row order and colours of every table and figure.
TASKS = ('fold', 'pouch', 'insert')
BENCHMARKS = ('learner', 'data', 'envs')
SKIP_DIRS = ('plots', 'bench', 'superseded', 'diagnostics')  # Not read as comparison cells.
# Methods whose actor weight is a learned gate g_t (HABC's gate, or a variant of it).
GATED = ('habc', 'habc_ir', 'habc_v', 'habc_naive_credit', 'habc_mc', 'habc_extra_round')
SUCCESS_KIND = 1  # habc.labeling.SampleKind.SUCCESS (not imported: that pulls in jax).

# The paper's real-robot numbers (success %, fold / pouch / insert).
PAPER_SUCCESS = {
    'sft': (36, 44, 12),
    'imit_dagger': (20, 62, 8),
    'imit_recap': (38, 66, 14),
    'habc_v': (50, 70, 18),
    'habc': (60, 78, 22),
    'habc_ir': (92, 88, 38),
}
PAPER_APPROX = ('imit_dagger', 'imit_recap', 'habc_v')  # Approximate ("~") in the reference.
PAPER_GATE = (0.76, 0.68, 0.86)  # Mean g_t on successful autonomous transitions.
# Orderings to check, as (better, worse): the paper's numbers have better > worse on every task;
# the last two are ablations the paper's table does not report (expected from the design).
CLAIMS = (('habc', 'sft'), ('habc', 'imit_dagger'), ('habc', 'imit_recap'), ('habc', 'habc_v'),
          ('habc_ir', 'habc'), ('habc_v', 'sft'), ('habc', 'habc_naive_credit'),
          ('habc', 'awr_single_scalar'),
          # Against the control: does the online data, not just more updates, make the gain?
          ('habc', 'sft_continued'), ('habc_v', 'sft_continued'),
          # Against the same extra round without reweighting: does IR itself make HABC+IR's gain?
          ('habc_ir', 'habc_extra_round'))


# Loading ..........................................................................................
def load_summaries(results: str) -> tuple[list[dict], list[str]]:
  """Reads every run summary under ``results`` (top level and one folder down, not plots/bench).

  Returns:
    (summaries, problems): each summary gets ``_path`` (relative to ``results``); problems are
    one line per file that was skipped and why.
  """
  paths = sorted(glob.glob(os.path.join(results, '*.json')) +
                 [p for p in glob.glob(os.path.join(results, '*', '*.json'))
                  if os.path.basename(os.path.dirname(p)) not in SKIP_DIRS])
  summaries, problems = [], []
  for path in paths:
    rel = os.path.relpath(path, results)
    try:
      with open(path) as f:
        s = json.load(f)
    except (OSError, ValueError) as e:
      problems.append(f'{rel}: not readable JSON ({e}); delete it or rerun the sweep for it')
      continue
    missing = [k for k in ('task', 'method', 'seed', 'rounds')
               if not isinstance(s, dict) or k not in s]
    if missing:
      problems.append(f'{rel}: not a run summary (no {", ".join(missing)}); skipped')
      continue
    bad = [r for r in s['rounds'] if r.get('episodes') is None or r.get('successes') is None]
    if bad:
      problems.append(f'{rel}: rounds {[r.get("round") for r in bad]} have no evaluation counts; '
                      'those rounds are left out')
    s = dict(s, rounds=[r for r in s['rounds'] if r not in bad], _path=rel)
    summaries.append(s)
  return summaries, problems


def attach_workdir(summary: dict, workdirs: str | None) -> dict:
  """Adds ``obs`` (and ``obs_source``) and, where the run's workdir exists, ``_workdir``.

  The run's workdir is ``<workdirs>/<folder>/<name>`` for a summary in ``results/<folder>/`` (a
  sweep run with ``--results=results/<folder> --root=<workdirs>/<folder>``), else
  ``<workdirs>/<name>``. The observation mode comes from the summary if it has one, else from the
  workdir's config.json, else from the folder's name if it is ``state`` or ``vision``, else from
  the preset (``paper`` is vision, ``smoke``/``default`` are state), marked as inferred.
  """
  s = dict(summary)
  folder = os.path.dirname(s.get('_path', ''))
  workdir = None
  if workdirs:
    workdir = os.path.join(workdirs, folder, f'{s["task"]}_{s["method"]}_{s["seed"]}')
  if s.get('obs'):
    s['obs_source'] = 'summary'
  else:
    config = _read_json(os.path.join(workdir, 'config.json')) if workdir else None
    if config and config.get('obs'):
      s['obs'], s['obs_source'] = config['obs'], 'workdir config'
    elif folder in ('state', 'vision'):
      s['obs'], s['obs_source'] = folder, 'folder name'
    else:
      s['obs'] = 'vision' if s.get('preset') == 'paper' else 'state'
      s['obs_source'] = 'inferred from preset'
  if workdir and os.path.isdir(workdir):
    s['_workdir'] = workdir
  return s


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
