"""Start-up checks of config values that have a range or a set of choices (issue 29).

``launch.validate_config`` (through ``launch.build_config``) runs ``check(config)`` before any
workdir is created, so a bad value fails in a second with a message that names the key, the value,
what is allowed and the flag that sets it, instead of hanging or crashing later with a traceback
(``rollout.execute_steps=0`` hung silently in evaluation; ``model.critic_encoder=sepa`` crashed
in the SFT stage and left the workdir locked to the bad config).

``problems(config)`` lists every bad value (not just the first), ``path_problems(config)`` the
values that name missing or empty folders (``data.teleop_dir``); ``check`` raises ``ConfigError``
with all of them. Keys a config does not have are skipped (an older or smaller config still
checks). Only keys listed in ``CHECKED_KEYS`` are checked.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

CRITIC_ENCODERS = ('separate', 'detached', 'shared')
OBSERVATIONS = ('vision', 'state')
FROZEN_PARTS = ('encoder', 'action_expert', 'critic')
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
  """One or more config values are out of range; the message lists each with its fix."""


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def _flag(key: str) -> str:
  return '--seed=<n>' if key == 'seed' else f'--config.{key}=<value>'


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int, what: str) -> Callable[[Any], str | None]:
  def check(value):
    if not _is_int(value) or value < low:
      return f'must be an integer >= {low} ({what})'
    return None
  return check


def _number_in(low: float, high: float | None, what: str, *, low_open: bool = False
               ) -> Callable[[Any], str | None]:
  def check(value):
    ok = _is_number(value) and (value > low if low_open else value >= low) and (
        high is None or value <= high)
    if not ok:
      lower = f'> {low}' if low_open else f'>= {low}'
      bound = f'a number {lower}' + (f' and <= {high}' if high is not None else '')
      return f'must be {bound} ({what})'
    return None
  return check


def _one_of(choices, what: str) -> Callable[[Any], str | None]:
  def check(value):
    if value not in choices:
      return f'must be one of {", ".join(repr(c) for c in choices)} ({what})'
    return None
  return check


def _frozen(value):
  parts = [value] if isinstance(value, str) else list(value or ())
  unknown = [p for p in parts if p not in FROZEN_PARTS]
  if unknown:
    return (f'names {unknown}; each entry must be one of {", ".join(map(repr, FROZEN_PARTS))} '
            '(parameter subtrees held frozen)')
  return None


def _seed(value):
  if not _is_int(value) or not 0 <= value <= MAX_SEED:
    return f'must be an integer from 0 to {MAX_SEED} (the run seed)'
  return None


def _profile(value):
  from habc.learning import profile  # No JAX at import.
  try:
    profile.parse_profile(value)
  except ValueError:
    return "must be '' (off) or 'steps:START-END', learner steps with START < END"
  return None


def _from_round(value):
  if not _is_int(value) or (value != -1 and value < 1):
    return 'must be -1 (never switch) or a round number >= 1'
  return None


# key -> check (value -> None or what is allowed). The exact list checked at start-up.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    'seed': _seed,
    'obs': _one_of(OBSERVATIONS, 'observations the policy reads'),
    'image_size': _int_at_least(1, 'camera image side in pixels'),
    'model.critic_encoder': _one_of(CRITIC_ENCODERS, "where the critic heads get phi(s)"),
    'model.embed_dim': _int_at_least(1, 'width of the trunk'),
    'model.num_layers': _int_at_least(1, 'transformer layers'),
    'model.num_heads': _int_at_least(1, 'attention heads'),
    'model.mlp_dim': _int_at_least(1, 'width of the MLP blocks'),
    'model.patch_size': _int_at_least(1, 'image patch side in pixels'),
    'model.max_instruction_len': _int_at_least(1, 'instruction tokens'),
    'model.action_horizon': _int_at_least(1, 'steps per action chunk'),
    'model.flow_steps': _int_at_least(1, 'Euler steps when sampling a chunk'),
    'model.frozen': _frozen,
    'credit.next_offset': _int_at_least(1, 'control steps to the next state s_{t+k}'),
    'credit.min_human_steps': _int_at_least(0, 'operator steps that count as an intervention'),
    'method.warmup_steps': _int_at_least(0, 'updates with the gate held at 1'),
    'learner.batch_size': _int_at_least(1, 'windows per learner update'),
    'learner.actor_lr': _number_in(0, None, 'actor learning rate', low_open=True),
    'learner.sft_actor_lr': _number_in(0, None, 'SFT actor learning rate; 0: actor_lr'),
    'learner.critic_lr': _number_in(0, None, 'critic learning rate', low_open=True),
    'learner.sft_anneal_steps': _int_at_least(0, 'SFT updates over which the rate falls'),
    'data.num_demos': _int_at_least(1, 'scripted-expert demonstrations'),
    'data.demo_fraction': _number_in(0, 1, 'share of demonstration windows per batch'),
    'rollout.episodes_per_round': _int_at_least(1, 'rollouts collected per round'),
    'rollout.execute_steps': _int_at_least(1, 'control steps run from each action chunk'),
    'rollout.time_limit': _int_at_least(0, "control steps per episode; 0: the task's own"),
    'rollout.policy_batch': _int_at_least(0, 'rows per policy call; 0: all episode slots'),
    'operator.takeover_prob': _number_in(0, 1, 'share of failing episodes the operator takes'),
    'operator.reaction_steps': _int_at_least(0, 'steps from seeing a failure to taking over'),
    'eval.episodes': _int_at_least(1, 'evaluation trials per round'),
    'eval.seed_offset': _int_at_least(0, 'first evaluation seed'),
    'eval.strip_frames': _int_at_least(1, 'frames per strip in the report'),
    'pipeline.rounds': _int_at_least(0, 'online rounds'),
    'pipeline.sft_steps': _int_at_least(1, 'learner updates of the SFT stage'),
    'pipeline.steps_per_round': _int_at_least(0, 'learner updates per online round'),
    'pipeline.checkpoint_every': _int_at_least(1, 'learner updates between checkpoints'),
    'pipeline.keep_checkpoints': _int_at_least(1, 'checkpoints kept on disk'),
    'pipeline.log_every': _int_at_least(1, 'learner updates between metric lines'),
    'pipeline.intervention_reweighting_from_round': _from_round,
    'runtime.num_workers': _int_at_least(1, 'environment worker processes'),
    'runtime.episodes_per_worker': _int_at_least(1, 'episodes each worker runs interleaved'),
    'runtime.profile': _profile,
    'runtime.steps_per_dispatch': _int_at_least(1, 'learner updates per device call'),
    'method.advantage_norm': _one_of(('none', 'batch_std', 'batch_iqr'),
                                     "scale of the gate's advantage"),
    'method.advantage_temperature': _number_in(0, None, "T of the gate's batch_std/batch_iqr scale",
                                               low_open=True),
    'critic.phase_steps': _int_at_least(0, "critic-only updates opening each round"),
    'critic.curve_every': _int_at_least(0, "updates between points of the critic's curve"),
    'critic.efficiency_target': _one_of(('td', 'monte_carlo'), "the efficiency head's target"),
    'critic.holdout_fraction': _number_in(0, 0.9, "share of a round's rollouts held out"),
    'critic.diagnostic_windows': _int_at_least(1, 'windows measured per held-out split'),
    'data.sampler': _one_of(('auto', 'pool', 'uniform'), 'how windows are drawn'),
}
CHECKED_KEYS = tuple(CHECKS) + ('data.teleop_dir',)


def _teleop_dir(config) -> str | None:
  """An empty, missing or episode-less ``data.teleop_dir`` (given, i.e. not '')."""
  value = _get(config, 'data.teleop_dir')
  if value is _MISSING or value == '' or value is None:
    return None
  flag = '--config.data.teleop_dir=<folder of episode_*.hdf5>'
  if not isinstance(value, str) or not value.strip():
    return (f'config.data.teleop_dir={value!r}: give a folder of recorded teleop episodes '
            f'(ALOHA-style episode_*.hdf5), or leave it unset to record scripted demonstrations '
            f'({flag}).')
  folder = os.path.abspath(os.path.expanduser(value))
  if not os.path.isdir(folder):
    return (f'config.data.teleop_dir={value!r}: {folder} is not a folder. Give a folder of '
            f'recorded teleop episodes (ALOHA-style episode_*.hdf5, docs/hardware.md): {flag}.')
  from habc.data.converters import aloha_hdf5  # Light: no TensorFlow at import.
  if not aloha_hdf5.list_episodes(folder):
    return (f'config.data.teleop_dir={value!r}: {folder} holds no episode_*.hdf5 files '
            f'(ALOHA-style teleop episodes, docs/data.md); record some there or point {flag} at '
            'the folder that holds them.')
  return None


def problems(config) -> list[str]:
  """One line per bad value: 'config.<key>=<value>: must be ... Set --config.<key>=<value>.'"""
  out = []
  teleop = _get(config, 'data.teleop_dir')
  uses_teleop = teleop is not _MISSING and bool(teleop)
  rounds = _get(config, 'pipeline.rounds')
  for key, check in CHECKS.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    if key == 'data.num_demos' and uses_teleop:
      continue  # The teleop episodes are the demonstrations.
    if key == 'rollout.episodes_per_round' and rounds == 0 and _is_int(value) and value >= 0:
      continue  # No online round collects anything.
    problem = check(value)
    if problem:
      name = 'seed' if key == 'seed' else f'config.{key}'
      out.append(f'{name}={value!r} {problem}. Set {_flag(key)}.')
  phase, per_round = _get(config, 'critic.phase_steps'), _get(config, 'pipeline.steps_per_round')
  if _is_int(phase) and _is_int(per_round) and phase > 0 and phase >= per_round > 0:
    out.append(f'config.critic.phase_steps={phase} leaves no actor update in a round of '
               f'pipeline.steps_per_round={per_round}; set --config.critic.phase_steps below it.')
  curve, log_every = _get(config, 'critic.curve_every'), _get(config, 'pipeline.log_every')
  if _is_int(curve) and _is_int(log_every) and curve > 0 and log_every > 0 and curve % log_every:
    out.append(f'config.critic.curve_every={curve} must be a multiple of '
               f'config.pipeline.log_every={log_every} (the curve is measured at log points); '
               'set --config.critic.curve_every.')
  fractions = _get(config, 'data.kind_fractions')
  if fractions is not _MISSING and fractions:
    values = dict(fractions)
    bad = {k: v for k, v in values.items() if not _is_number(v) or v < 0}
    if bad:
      out.append(f'config.data.kind_fractions {bad} must be >= 0. Set '
                 '--config.data.kind_fractions.<kind>=<share>.')
    elif any(values.values()):
      sampler = _get(config, 'data.sampler')
      obs = _get(config, 'obs')
      if sampler == 'pool' or (sampler == 'auto' and obs != 'state'):
        out.append(f'config.data.kind_fractions={values} needs the uniform sampler, but '
                   f'data.sampler={sampler!r} (obs={obs!r}) draws from the episode pool; set '
                   "--config.data.sampler=uniform or every --config.data.kind_fractions.<kind>=0.")
  embed, heads = _get(config, 'model.embed_dim'), _get(config, 'model.num_heads')
  if _is_int(embed) and _is_int(heads) and embed >= 1 and heads >= 1 and embed % heads:
    out.append(f'config.model.embed_dim={embed} must be a multiple of config.model.num_heads='
               f'{heads} (each head gets embed_dim / num_heads). Set --config.model.embed_dim or '
               '--config.model.num_heads.')
  return out


def path_problems(config) -> list[str]:
  """Config values that name files: ``data.teleop_dir``, when given, must be a folder holding
  ALOHA-style ``episode_*.hdf5`` files."""
  teleop_problem = _teleop_dir(config)
  return [teleop_problem] if teleop_problem else []


def check(config, *, paths: bool = True) -> None:
  """Raises ConfigError listing every bad value (``problems``, and with ``paths`` also
  ``path_problems``)."""
  found = problems(config) + (path_problems(config) if paths else [])
  if found:
    head = 'a config value is out of range' if len(found) == 1 else \
        f'{len(found)} config values are out of range'
    raise ConfigError(f'{head} (nothing was run or written):\n  ' + '\n  '.join(found))
