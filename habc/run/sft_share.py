"""One SFT checkpoint for every method: start a run's workdir from a finished ``sft`` run.

The paper compares methods from the same SFT policy. A sweep therefore runs ``experiments/sft.py``
once per (task, seed) and seeds every other method's workdir with its demonstrations, its SFT
checkpoint and its round-0 evaluation; the method's own run then starts at round 1. Before it
copies anything, ``sft_differences`` checks that the two configs agree on everything the SFT stage
and the evaluation depend on: they may differ only in ``SFT_FREE_KEYS`` (the method and the online
rounds).

A run whose first rounds are another method's rounds (``habc_ir``: HABC's rounds, then its
intervention-reweighting round) can start from that method's finished run instead
(``seed_from_rounds``): its workdir gets the other run's files, and the run goes on from the
round after them. ``round_differences`` checks that the configs differ only in
``ROUND_FREE_KEYS``, and only where the shared rounds do not look.

Only plain files are read and written here (no TensorFlow, no JAX).
"""

from __future__ import annotations

import json
import os
import shutil

# Config keys (flat, dotted) that do not change the demonstrations, the SFT stage or its
# evaluation. Prefixes end with '.'.
# The SFT run's method is behaviour cloning (``experiments/sft.py``): its update has no critic
# loss, so the critic's targets do not change it either.
SFT_FREE_KEYS = ('name', 'method.', 'credit.naive', 'critic.efficiency_target', 'operator.',
                 'rollout.episodes_per_round',
                 'pipeline.rounds', 'pipeline.steps_per_round',
                 'pipeline.intervention_reweighting_from_round', 'data.demo_fraction')
SOURCE_FILE = 'sft_source.json'
STAGES = ('demos', 'sft', 'eval_000')


class SFTShareError(ValueError):
  """The SFT run cannot be shared with this run (unfinished, or made with another config)."""


def _free(key: str) -> bool:
  return any(key == k or (k.endswith('.') and key.startswith(k)) for k in SFT_FREE_KEYS)


def _online_only(key: str, sft_identity: dict, run_identity: dict) -> bool:
  """``learner.actor_lr`` is the online rounds' rate alone when both runs give the SFT stage its
  own non-zero ``learner.sft_actor_lr`` and no anneal towards ``actor_lr``
  (``habc.learning.learner.actor_learning_rate``)."""
  sft_lr = sft_identity.get('learner.sft_actor_lr')
  no_anneal = all(d.get('learner.sft_anneal_steps', 0) == 0 for d in (sft_identity, run_identity))
  return (key == 'learner.actor_lr' and sft_lr == run_identity.get('learner.sft_actor_lr')
          and isinstance(sft_lr, (int, float)) and sft_lr > 0 and no_anneal)


def sft_differences(sft_identity: dict, run_identity: dict) -> list[str]:
  """Lines 'key: sft=<a> run=<b>' for the flat config keys (``pipeline.config_identity``) that
  differ outside ``SFT_FREE_KEYS`` (and outside ``learner.actor_lr`` where the SFT stage has a
  rate of its own); empty when the SFT run can be shared."""
  lines = []
  for key in sorted(set(sft_identity) | set(run_identity)):
    a, b = sft_identity.get(key, '<absent>'), run_identity.get(key, '<absent>')
    if a != b and not _free(key) and not _online_only(key, sft_identity, run_identity):
      lines.append(f'  {key}: sft={a!r} run={b!r}')
  return lines


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _copy(src: str, dst: str) -> None:
  if os.path.isdir(src):
    shutil.copytree(src, dst, dirs_exist_ok=True)
  else:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst)


def _already_seeded(workdir: str, marker: str, key: str, source_dir: str,
                    progress: dict) -> bool:
  """Whether ``workdir`` was already seeded from ``source_dir`` (its ``marker`` file names it
  under ``key``); then its progress is completed if a stop cut the seeding before it. False for a
  workdir that has not started.

  Raises:
    SFTShareError: it was seeded from another run, or has progress of its own.
  """
  from habc.run import pipeline
  path, own_progress = os.path.join(workdir, marker), os.path.join(workdir, 'progress.json')
  if os.path.exists(path):
    seeded_from = _read_json(path).get(key)
    if seeded_from != os.path.abspath(source_dir):
      raise SFTShareError(f'{workdir} was seeded from {seeded_from}, not {source_dir}.')
    if not os.path.exists(own_progress):  # Stopped between the seeding's two last writes.
      pipeline._write_json(own_progress, progress)  # pylint: disable=protected-access
    return True
  if os.path.exists(own_progress):
    raise SFTShareError(f'{workdir} has progress of its own; seed only a new workdir (or delete '
                        'it).')
  return False


def seed_from_sft(sft_workdir: str, workdir: str, run_config) -> bool:
  """Copies the demos, SFT checkpoint and round-0 evaluation of ``sft_workdir`` into ``workdir``.

  ``workdir`` must not have started (no progress yet); a workdir already seeded is left alone.
  ``launch.py`` then writes its config.json and resumes it at round 1.

  Returns:
    True if files were copied, False if ``workdir`` was already seeded from this SFT run.
  Raises:
    SFTShareError: the SFT run is unfinished, the configs differ where SFT depends on them, or the
      workdir has progress of its own.
  """
  from habc.run import pipeline  # Light: no TensorFlow or JAX at import.
  from habc.run import paths as paths_lib
  progress_path = os.path.join(sft_workdir, 'progress.json')
  progress = _read_json(progress_path) if os.path.exists(progress_path) else {}
  missing = [s for s in STAGES if not progress.get(s)]
  if missing:
    raise SFTShareError(f'The SFT run {sft_workdir} has not finished {", ".join(missing)}; run it '
                        'to the end first (launch.py --experiment=experiments/sft.py).')
  sft_config = _read_json(os.path.join(sft_workdir, pipeline.CONFIG_FILE))
  diff = sft_differences(pipeline.config_identity(sft_config),
                         pipeline.config_identity(run_config))
  if diff:
    raise SFTShareError(f'{workdir} cannot start from the SFT run {sft_workdir}; their configs '
                        'differ where SFT depends on them:\n' + '\n'.join(diff))
  source = os.path.join(workdir, SOURCE_FILE)
  own_progress = os.path.join(workdir, 'progress.json')
  if _already_seeded(workdir, SOURCE_FILE, 'sft_workdir', sft_workdir,
                     {s: True for s in STAGES}):
    return False
  step = int(sft_config['pipeline']['sft_steps'])
  paths = paths_lib.Paths(sft_workdir)
  ckpt = os.path.join(paths.checkpoints, str(step))
  if not os.path.isdir(ckpt):
    raise SFTShareError(f'The SFT run {sft_workdir} has no checkpoint at step {step} ({ckpt}).')
  os.makedirs(workdir, exist_ok=True)
  dst = paths_lib.Paths(workdir)
  copies = [(paths.demo_data, dst.demo_data), (ckpt, os.path.join(dst.checkpoints, str(step))),
            (os.path.join(paths.logs, 'train_sft.json'), os.path.join(dst.logs, 'train_sft.json'))]
  copies += [(os.path.join(paths.eval_dir, name), os.path.join(dst.eval_dir, name))
             for name in sorted(os.listdir(paths.eval_dir)) if name.startswith('round_000')]
  for src, out in copies:
    if os.path.exists(src):
      _copy(src, out)
  # The source, then the progress: a stop before the first leaves a workdir that is seeded again
  # (the copies overwrite); a stop between them is completed on the next call.
  pipeline._write_json(source, {'sft_workdir': os.path.abspath(sft_workdir), 'step': step})  # pylint: disable=protected-access
  pipeline._write_json(own_progress, {s: True for s in STAGES})  # pylint: disable=protected-access
  return True


# seed_from_rounds ................................................................................
# Keys in which a run may differ from the run whose rounds it takes: its name and what it does
# after them (more rounds; intervention reweighting from a later round).
ROUND_FREE_KEYS = ('name', 'pipeline.rounds', 'pipeline.intervention_reweighting_from_round')
ROUNDS_SOURCE_FILE = 'rounds_source.json'
# A workdir's own files, never copied from the source run.
_NOT_COPIED = ('config.json', 'summary.json', 'report.md', 'sweep_seconds.json', 'progress.json',
               ROUNDS_SOURCE_FILE)


def round_differences(source_identity: dict, run_identity: dict) -> list[str]:
  """Lines naming why the run cannot take the source run's rounds; empty when it can.

  The run must differ only in ``ROUND_FREE_KEYS``, have more rounds than the source, and switch
  intervention reweighting on (if ever) only after the source's last round.
  """
  lines = [f'  {key}: source={source_identity.get(key, "<absent>")!r} '
           f'run={run_identity.get(key, "<absent>")!r}'
           for key in sorted(set(source_identity) | set(run_identity))
           if key not in ROUND_FREE_KEYS
           and source_identity.get(key, '<absent>') != run_identity.get(key, '<absent>')]
  rounds = int(source_identity['pipeline.rounds'])
  if int(run_identity['pipeline.rounds']) <= rounds:
    lines.append(f'  pipeline.rounds: the run has {run_identity["pipeline.rounds"]}, no more than '
                 f'the source\'s {rounds}')
  switch = int(run_identity.get('pipeline.intervention_reweighting_from_round', -1))
  if 0 <= switch <= rounds:
    lines.append(f'  pipeline.intervention_reweighting_from_round: {switch}, within the source\'s '
                 f'{rounds} rounds')
  return lines


def seed_from_rounds(source_workdir: str, workdir: str, run_config) -> int:
  """Copies a finished run's files into ``workdir``, which then goes on from the round after.

  ``workdir`` must not have started; a workdir already seeded from this source is left alone.
  ``launch.py`` then writes its own config.json and resumes it after the source's last round.

  Returns:
    The number of rounds taken from the source (0 if ``workdir`` was already seeded).
  Raises:
    SFTShareError: the source run is unfinished, the configs differ where its rounds depend on
      them (``round_differences``), or the workdir has progress of its own.
  """
  from habc.run import pipeline  # Light: no TensorFlow or JAX at import.
  config_path = os.path.join(source_workdir, pipeline.CONFIG_FILE)
  source_config = _read_json(config_path) if os.path.exists(config_path) else None
  rounds = int(source_config['pipeline']['rounds']) if source_config else -1
  progress_path = os.path.join(source_workdir, 'progress.json')
  progress = _read_json(progress_path) if os.path.exists(progress_path) else {}
  if source_config is None or not progress.get(f'round_{rounds:03d}'):
    raise SFTShareError(f'The run {source_workdir} has not finished its round '
                        f'{rounds if rounds >= 0 else "s"}; run it to the end first.')
  progress = {k: v for k, v in progress.items() if k != 'report'}  # The run writes its own.
  diff = round_differences(pipeline.config_identity(source_config),
                           pipeline.config_identity(run_config))
  if diff:
    raise SFTShareError(f'{workdir} cannot take the rounds of {source_workdir}; their configs '
                        'differ where those rounds depend on them:\n' + '\n'.join(diff))
  source = os.path.join(workdir, ROUNDS_SOURCE_FILE)
  own_progress = os.path.join(workdir, 'progress.json')
  if _already_seeded(workdir, ROUNDS_SOURCE_FILE, 'source_workdir', source_workdir, progress):
    return 0
  os.makedirs(workdir, exist_ok=True)
  for name in sorted(os.listdir(source_workdir)):
    if name not in _NOT_COPIED:
      _copy(os.path.join(source_workdir, name), os.path.join(workdir, name))
  # The source, then the progress (as in seed_from_sft).
  write = pipeline._write_json  # pylint: disable=protected-access
  write(source, {'source_workdir': os.path.abspath(source_workdir), 'rounds': rounds})
  write(own_progress, progress)
  return rounds
