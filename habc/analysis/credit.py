"""What credit assignment did with a round's rollouts: the operator's rescues and the labels that
the policy windows before an intervention got (issue 26's credit mechanism).

An episode is *rescued* when the operator took over and the episode then succeeded. The policy
windows before its first intervention are where the two credit rules differ: intervention-aware
credit leaves them unlabelled (actor weight 0 by default), naive credit labels them with the
episode's success, though the operator, not the policy, completed the task.
"""

from __future__ import annotations

import os

import numpy as np

from habc import labeling
from habc.labeling import SampleKind


def episode_credit(is_intervention, success: bool, *, horizon: int, next_offset: int,
                   min_human_steps: int, naive: bool) -> dict:
  """One episode's counts.

  Args:
    is_intervention: bool [T], the episode's per-step operator flags.
    success: its outcome.
    horizon, next_offset, min_human_steps: the run's config (model.action_horizon,
      credit.next_offset, credit.min_human_steps).
    naive: the run's credit.naive.

  Returns:
    {'intervened', 'rescued', 'pre_windows' (autonomous windows anchored before the first
    operator step), 'pre_labels' ({kind name: count} of those windows under the run's rule),
    'pre_labels_other' (the same under the other rule)}.
  """
  flags = np.asarray(is_intervention, bool)
  intervened = bool(flags.any())
  out = {'intervened': intervened, 'rescued': intervened and bool(success), 'pre_windows': 0,
         'pre_labels': {}, 'pre_labels_other': {}}
  if not intervened:
    return out
  first = int(np.flatnonzero(flags)[0])
  for key, rule in (('pre_labels', naive), ('pre_labels_other', not naive)):
    w = labeling.make_windows(flags, bool(success), horizon=horizon, next_offset=next_offset,
                              min_human_steps=min_human_steps, naive=rule)
    # Which windows are the operator's does not depend on the rule, so neither does this count.
    pre = (w.anchor < first) & (w.kind != SampleKind.INTERVENTION)
    kinds, counts = np.unique(w.kind[pre], return_counts=True)
    out[key] = {SampleKind(int(k)).name.lower(): int(n) for k, n in zip(kinds, counts)}
  out['pre_windows'] = sum(out['pre_labels'].values())
  return out


def round_credit(episodes, *, horizon: int, next_offset: int, min_human_steps: int,
                 naive: bool) -> dict:
  """Totals over a round's episodes (each a dict with steps/is_intervention and
  episode_metadata/success, docs/interfaces.md section 2).

  Returns:
    {'episodes', 'with_intervention', 'rescued', 'pre_windows', 'pre_windows_rescued',
    'pre_labels', 'pre_labels_other'}: label counts summed over every intervened episode;
    ``pre_windows_rescued`` counts the pre-intervention windows of rescued episodes alone (those
    that naive credit labels as successes).
  """
  total = {'episodes': 0, 'with_intervention': 0, 'rescued': 0, 'pre_windows': 0,
           'pre_windows_rescued': 0, 'pre_labels': {}, 'pre_labels_other': {}}
  for episode in episodes:
    one = episode_credit(episode['steps']['is_intervention'],
                         bool(episode['episode_metadata']['success']), horizon=horizon,
                         next_offset=next_offset, min_human_steps=min_human_steps, naive=naive)
    total['episodes'] += 1
    total['with_intervention'] += one['intervened']
    total['rescued'] += one['rescued']
    total['pre_windows'] += one['pre_windows']
    total['pre_windows_rescued'] += one['pre_windows'] if one['rescued'] else 0
    for key in ('pre_labels', 'pre_labels_other'):
      for name, n in one[key].items():
        total[key][name] = total[key].get(name, 0) + n
  return total


def workdir_credit(workdir: str, config: dict, rounds) -> list[dict]:
  """``round_credit`` of each online round's rollouts in a run's workdir ([] where none)."""
  from habc.data import episodes as episodes_lib
  out = []
  for r in rounds:
    path = os.path.join(workdir, 'data', f'round_{int(r):03d}')
    if not os.path.exists(os.path.join(path, 'dataset_info.json')):
      continue
    source = episodes_lib.EpisodeSource(path, cameras=())
    row = round_credit((source[i] for i in range(len(source))),
                       horizon=int(config['model']['action_horizon']),
                       next_offset=int(config['credit']['next_offset']),
                       min_human_steps=int(config['credit']['min_human_steps']),
                       naive=bool(config['credit']['naive']))
    out.append(dict(row, round=int(r)))
  return out
