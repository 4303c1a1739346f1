r"""Runs the habc pipeline: demonstrations -> SFT -> rounds of (collect, train, eval) -> report.

  python launch.py --task=fold                                   # HABC, default preset
  python launch.py --task=fold --experiment=experiments/habc_v.py --seed=1
  python launch.py --task=fold --preset=smoke --workdir=/tmp/smoke
  python launch.py --task=fold --config.learner.batch_size=32    # any config value
  python launch.py --task=fold --mode=report                     # one stage only
  python launch.py --preset=smoke --print_config                 # every config key, and exit
  python launch.py --task=fold --mode=learner --workdir=/shared/run   # actor/learner split:
  python launch.py --task=fold --mode=actor --station_id=0 --workdir=/shared/run  # one per station
  python launch.py --task=hw_fold --config.data.teleop_dir=recordings/fold    # on the station
  python launch.py --task=fold --operator=console     # a person at the simulator (docs/console.md)

Config = the experiment file's ``get_config(preset)``, then the ``--config.<path>=<value>``
overrides (ml_collections), then ``--task`` and ``--seed``; every value with a range or a set of
choices is checked before anything is written (``habc.config_checks``). A re-run with the same
workdir and config resumes after the last completed stage; a workdir made with another config is
refused (the differences are printed) unless ``--overwrite``. A first run that fails before it
produced anything leaves no config.json behind. Ctrl-C stops with one line; re-run the same
command to resume.

A hardware task (``hw_<task>``, docs/hardware.md) runs that task on the dm-robotics station: the
config gains a ``hardware`` section (``habc.envs.hardware.config``, set with
``--config.hardware.<path>=<value>``), the station's environment factory, no simulated operator
(takeovers and outcomes come from ``config.hardware.operator`` inside the environment), one
environment worker (one robot), and demonstrations from ``--config.data.teleop_dir``.

The operator console (``--operator=console``, the default on a hardware task; docs/console.md) is a
web page for the person at the robot or the simulator: live cameras, take over and hand back,
teleop, outcome labels. Its URL is printed at start; ``--console_host``/``--console_port``/
``--console_token``/``--console_deadman``/``--console_wait`` set how it serves (runtime settings,
not part of the run's config identity).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from habc import config_checks
from habc.fleet import distributed

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EXPERIMENT = os.path.join('experiments', 'habc.py')
MODES = ('pipeline', 'demos', 'sft', 'collect', 'train', 'eval', 'report', 'actor', 'learner')
PRESETS = ('smoke', 'default', 'study', 'paper')  # experiments/presets.py (tested equal).

FLAGS = flags.FLAGS


def define_flags() -> None:
  """launch.py's flags, defined when it runs as the command (``run_cli``): importing launch.py for
  its config functions (the sweep does) defines none."""
  flags.DEFINE_string('task', None, 'Task name (simulated: see `python -m habc.envs --list`; '
                      'hw_<task>: that task on the dm-robotics station); default: the config\'s '
                      'task.')
  flags.DEFINE_string('experiment', DEFAULT_EXPERIMENT,
                      'Experiment config file (experiments/*.py).')
  flags.DEFINE_string('workdir', None,
                      'Run directory; default ./workdirs/<task>_<experiment>_<seed>.')
  flags.DEFINE_integer('seed', None, 'Run seed; default: the config\'s seed (0).')
  flags.DEFINE_enum('preset', 'default', PRESETS, 'Size of the run: smoke (tests), default (about '
                    '30 minutes on a 2-core CPU), study (issue 26: 100 rollouts a round, 100 trials, state '
                    'observations), paper (the paper\'s scale).')
  flags.DEFINE_enum('mode', 'pipeline', MODES, 'Run the whole pipeline, or one stage; actor and '
                    'learner: the two roles of the actor/learner split (habc/fleet/stations.py) '
                    'over a shared --workdir.')
  flags.DEFINE_bool('print_config', False, 'Print every config key with its value (after the '
                    'preset, the --config.* overrides, --task and --seed) and exit; any key can be '
                    'set with --config.<key>=<value>.')
  flags.DEFINE_bool('overwrite', False, 'Delete a workdir made with a different config and start '
                    'again.')
  # The experiment file and preset reach ml_collections as --config=<file>:<preset> (inserted by
  # ``config_argv``), so that --config.a.b=v overrides apply on top of the preset.
  config_flags.DEFINE_config_file('config', None, 'Set by --experiment and --preset; use '
                                  '--config.<path>=<value> to override single values.')
  distributed.define_flags()
  flags.DEFINE_integer('station_id', 0, 'With --mode=actor: this station\'s number (one actor per '
                       'id).')
  flags.DEFINE_integer('max_episodes', None, 'With --mode=actor: stop after this many episodes.')
  flags.DEFINE_float('wait_timeout', 600.0, 'With --mode=actor: seconds to wait for a first '
                     'learner checkpoint.')
  flags.DEFINE_integer('max_steps', None, 'With --mode=learner: stop at this learner step.')
  flags.DEFINE_enum('operator', '', ['', 'simulated', 'console'], 'Who takes over during '
                    'rollouts: simulated (the scripted operator; default in simulation) or console '
                    '(a person at the operator console web page; default on a hardware task, where '
                    '--config.hardware.operator may name another device class).')
  flags.DEFINE_string('console_host', '127.0.0.1', 'Operator console: address to listen on. Any '
                      'address but loopback needs an access token (made and printed if not given).')
  flags.DEFINE_integer('console_port', 8765, 'Operator console: port.')
  flags.DEFINE_string('console_token', '', 'Operator console: access token needed to control (view '
                      'without it); made when --console_host is not loopback and none is given.')
  flags.DEFINE_float('console_deadman', 0.0, 'Operator console: seconds after which a takeover '
                     'command is stale and the arms are held instead; 0: three control periods.')
  flags.DEFINE_enum('console_wait', 'auto', ['auto', 'yes', 'no'], 'Operator console: wait for '
                    '"scene reset, start next episode" between episodes (auto: yes on a station, '
                    'no in simulation).')
  # --config.hardware.<path>=<value> arrives here (``hardware_argv``): the experiment configs have
  # no ``hardware`` section, so ml_collections could not apply it; ``build_config`` does.
  flags.DEFINE_multi_string('hardware_override', [], 'Set by --config.hardware.<path>=<value>.')


HARDWARE_PREFIX = '--config.hardware.'
STATION_ENV_FACTORY = 'habc.envs.hardware:rollout_env'
SIMULATED_ENV_FACTORY = 'habc.envs:make'
# The operator console (habc/web/console.py): the operator class and, in simulation, the
# environment factory that lets the person's verdict end an episode.
CONSOLE_OPERATOR = 'habc.web.console:ConsoleOperator'
CONSOLE_SIM_ENV_FACTORY = 'habc.web.console:simulated_env'
TELEOP_OPERATOR = 'habc.envs.hardware:TeleopOperator'  # The library default: fed by no device.


class UsageError(ValueError):
  """A start-up error in the command line or the config; nothing has run."""


def _flag_value(argv: list[str], name: str):
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_argv(argv: list[str]) -> list[str]:
  """Inserts ``--config=<experiment>:<preset>`` after the program name (checked to exist)."""
  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    raise UsageError('Choose the experiment with --experiment=<file> and the size with --preset; '
                     '--config.<path>=<value> overrides single values.')
  experiment = _flag_value(argv, 'experiment') or DEFAULT_EXPERIMENT
  preset = _flag_value(argv, 'preset') or 'default'
  path = experiment if os.path.isabs(experiment) else os.path.join(os.getcwd(), experiment)
  if not os.path.exists(path) and os.path.exists(os.path.join(ROOT, experiment)):
    path = os.path.join(ROOT, experiment)
  if not os.path.isfile(path):
    known = sorted(f for f in os.listdir(os.path.join(ROOT, 'experiments'))
                   if f.endswith('.py') and f not in ('__init__.py', 'base.py', 'presets.py',
                                                      'sweep.py'))
    raise UsageError(f'Unknown experiment file {experiment!r} (not found). Experiment files: '
                     + ', '.join(f'experiments/{k}' for k in known))
  if preset not in PRESETS:
    raise UsageError(f'Unknown preset {preset!r}; choose one of {PRESETS}.')
  with open(path) as f:
    if 'def get_config' not in f.read():
      raise UsageError(f'{experiment} is not an experiment config (it has no get_config()). '
                       'Several methods and seeds: python experiments/sweep.py --task=...')
  check_overrides(path, preset, argv)
  return [argv[0], f'--config={path}:{preset}'] + argv[1:]


def hardware_argv(argv: list[str]) -> list[str]:
  """Rewrites each ``--config.hardware.<path>=<value>`` as ``--hardware_override=<path>=<value>``
  (applied to the hardware section by ``build_config``)."""
  out = []
  for arg in argv:
    if arg.startswith(HARDWARE_PREFIX):
      if '=' not in arg:
        raise UsageError(f'{arg}: give a value, {arg}=<value>.')
      out.append('--hardware_override=' + arg[len(HARDWARE_PREFIX):])
    else:
      out.append(arg)
  return out


def _parse_like(text: str, current, where: str):
  """The override ``text`` as a value of the type of ``current`` (bool, int, float, str, tuple)."""
  import ast
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError('not a bool')
      return text.lower() in ('true', '1')
    if isinstance(current, (int, float)):
      return type(current)(float(text)) if isinstance(current, float) else int(text)
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      if not isinstance(value, (tuple, list)) or len(value) != len(current):
        raise ValueError(f'expected {len(current)} values')
      return tuple(value)
    return text
  except (ValueError, SyntaxError) as e:
    raise UsageError(f'--config.hardware.{where}={text}: not a value like {current!r} ({e}).') \
        from None


def hardware_section(overrides=(), base=None):
  """The ``hardware`` config section (``base``, default ``habc.envs.hardware.config``'s) with
  ``path=value`` overrides applied; raises UsageError naming an unknown path or a bad value."""
  import ml_collections
  from habc.envs.hardware import config as hw_config
  section = hw_config.default_config()
  if base is not None:
    section.update(ml_collections.ConfigDict(base.to_dict() if hasattr(base, 'to_dict') else base))
  for item in overrides:
    path, _, text = item.partition('=')
    node, parts = section, path.split('.')
    for i, part in enumerate(parts):
      if not hasattr(node, 'keys') or part not in node:
        where = '.'.join(['hardware'] + parts[:i])
        options = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(a plain value)'
        raise UsageError(f'--config.hardware.{path}: the config has no {part!r} under {where}; '
                         f'known keys there: {options}.')
      if i < len(parts) - 1:
        node = node[part]
    if hasattr(node[parts[-1]], 'keys'):
      raise UsageError(f'--config.hardware.{path} is a section; set its values one by one: '
                       f'{", ".join(f"{path}.{k}" for k in sorted(node[parts[-1]].keys()))}.')
    node[parts[-1]] = _parse_like(text, node[parts[-1]], path)
  try:
    hw_config.validate(section)
  except ValueError as e:
    raise UsageError(str(e)) from None
  return section


def check_overrides(path: str, preset: str, argv: list[str]) -> None:
  """Every --config.<path> override must name an existing config value."""
  import importlib.util
  overrides = [a[len('--config.'):].split('=', 1)[0] for a in argv[1:]
               if a.startswith('--config.') and not a.startswith(HARDWARE_PREFIX)]
  if not overrides:
    return
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  spec = importlib.util.spec_from_file_location('habc_experiment_check', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  for override in overrides:
    node = config
    parts = override.split('.')
    for i, part in enumerate(parts):
      if not hasattr(node, 'keys') or part not in node:
        where = '.'.join(parts[:i]) or '<top level>'
        options = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(a plain value)'
        raise UsageError(f'--config.{override}: the config has no {part!r} under {where} '
                         f'(experiment {os.path.relpath(path, ROOT)}); known keys there: {options}.')
      node = node[part]


def build_config(config, *, task: str | None, seed: int | None, experiment: str,
                 hardware_overrides=(), operator: str = ''):
  """Applies --task, --seed and, for a hardware task, the station settings (``hardware``
  section with ``hardware_overrides`` 'path=value', station environment factory, no simulated
  operator, one worker); then ``operator`` ('' for the task's default, 'simulated' or 'console':
  see ``apply_operator``); validates the config before any work. Returns the config."""
  import ml_collections
  from habc.envs import hardware
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked copy.
  if task is not None:
    config.task = task
  if seed is not None:
    config.seed = seed
  if hardware.is_hardware_task(config.task):
    config.hardware = hardware_section(hardware_overrides, base=config.get('hardware'))
    if config.rollout.env_factory == SIMULATED_ENV_FACTORY:
      config.rollout.env_factory = STATION_ENV_FACTORY
    config.operator.enabled = False  # The station's operator runs inside its environment.
    config.runtime.num_workers = 1  # One robot,
    config.runtime.episodes_per_worker = 1  # one episode at a time.
  elif hardware_overrides:
    names = ', '.join(hardware.list_tasks())
    raise UsageError(f'--config.hardware.* applies to a hardware task ({names}); '
                     f'--task={config.task} is simulated.')
  apply_operator(config, operator, explicit_device=any(
      o.split('=', 1)[0] == 'operator' for o in hardware_overrides))
  validate_config(config)
  return config


def apply_operator(config, operator: str, explicit_device: bool = False) -> None:
  """Who takes over, in place. Simulation: 'simulated' (default) or 'console' (the console's
  operator and environment factory, one worker: one person). Hardware task: the console by
  default, unless ``--config.hardware.operator`` names another device class
  (``explicit_device``); 'simulated' is refused (a station has no scripted expert)."""
  from habc.envs import hardware
  if operator not in ('', 'simulated', 'console'):
    raise UsageError(f'--operator={operator}: choose simulated or console.')
  if hardware.is_hardware_task(config.task):
    if operator == 'simulated':
      raise UsageError(f'--operator=simulated: task {config.task} runs on the station, which has '
                       'no scripted expert to take over; use the console (the default) or a '
                       'device class in --config.hardware.operator.')
    current = config.hardware.operator
    if operator == 'console' and explicit_device and current != CONSOLE_OPERATOR:
      raise UsageError(f'--operator=console and --config.hardware.operator={current}: choose one.')
    if operator == 'console' or (not explicit_device and current in ('', TELEOP_OPERATOR)):
      config.hardware.operator = CONSOLE_OPERATOR
  elif operator == 'console':
    config.operator.enabled = True
    config.rollout.operator_factory = CONSOLE_OPERATOR
    if config.rollout.env_factory == SIMULATED_ENV_FACTORY:
      config.rollout.env_factory = CONSOLE_SIM_ENV_FACTORY
    config.runtime.num_workers = 1  # One person,
    config.runtime.episodes_per_worker = 1  # one episode at a time.


def uses_console(config) -> bool:
  """Whether the run's episodes take their operator from the console."""
  from habc.envs import hardware
  if hardware.is_hardware_task(config.task):
    return config.hardware.get('operator', '') == CONSOLE_OPERATOR
  return bool(config.operator.enabled) and config.rollout.operator_factory == CONSOLE_OPERATOR


def console_settings(config, workdir: str, *, host: str = '127.0.0.1', port: int = 8765,
                     token: str = '', deadman_s: float = 0.0, wait: str = 'auto',
                     mode: str = 'pipeline', station_id: int = 0):
  """The console's settings for this run (token made when the address needs one)."""
  from habc.envs import hardware
  from habc.web import console
  station = hardware.is_hardware_task(config.task)
  local = workdir if '://' not in str(workdir) else ''
  name = f'console_station_{int(station_id):03d}.jsonl' if mode == 'actor' else 'console.jsonl'
  settings = console.ConsoleSettings(
      host=host, port=int(port), token=token, deadman_s=float(deadman_s),
      wait_for_start=station if wait == 'auto' else wait == 'yes',
      log_path=os.path.join(local, 'logs', name) if local else '',
      workdir=os.path.abspath(local) if local else '',
      episodes_per_round=0 if mode == 'actor' else int(config.rollout.episodes_per_round),
      camera_size=max(96, int(config.image_size))).resolved()
  try:
    settings.check()
  except ValueError as e:
    raise UsageError(str(e)) from None
  return settings


def validate_config(config) -> None:
  """Start-up checks: the task exists, the method is known, every value with a range or a set of
  choices is in it (``habc.config_checks``), the batch divides the devices, and a hardware task
  has its teleop demonstrations and a consistent ``hardware`` section."""
  from habc import envs
  from habc.envs import hardware
  if config.task not in envs.list_tasks() + hardware.list_tasks():
    raise UsageError(f'Unknown task {config.task!r}; simulated tasks: '
                     f'{", ".join(envs.list_tasks())}; hardware tasks (the dm-robotics station): '
                     f'{", ".join(hardware.list_tasks())}.')
  if hardware.is_hardware_task(config.task):
    if 'hardware' not in config:
      raise UsageError(f'Task {config.task} runs on the station but the config has no hardware '
                       'section; build it with launch.build_config.')
    if not config.data.get('teleop_dir', ''):
      raise UsageError(f'Task {config.task} runs on the station, which has no scripted expert: '
                       'give its demonstrations with --config.data.teleop_dir=<folder of recorded '
                       'ALOHA-style episode_*.hdf5 teleop episodes> (docs/hardware.md).')
    if config.operator.enabled:
      raise UsageError(f'Task {config.task}: config.operator.enabled must be False on the '
                       'station (takeovers come from config.hardware.operator).')
    if config.runtime.num_workers != 1 or config.runtime.get('episodes_per_worker', 1) != 1:
      raise UsageError(f'Task {config.task}: config.runtime.num_workers and '
                       'config.runtime.episodes_per_worker must be 1 (one robot, one episode).')
  elif config.operator.enabled and config.rollout.operator_factory == CONSOLE_OPERATOR and (
      config.runtime.num_workers != 1 or config.runtime.get('episodes_per_worker', 1) != 1):
    raise UsageError('The operator console drives one episode at a time: '
                     'config.runtime.num_workers and config.runtime.episodes_per_worker must be 1.')
  try:
    config_checks.check(config, paths=False)  # Ranges and choices (the folders: in main).
  except config_checks.ConfigError as e:
    raise UsageError(str(e)) from None
  weightings = ('habc', 'habc_v', 'bc', 'recap', 'awr')
  if config.method.weighting not in weightings:
    raise UsageError(f'config.method.weighting={config.method.weighting!r} is not one of '
                     f'{weightings}.')
  if config.obs not in ('vision', 'state'):
    raise UsageError(f"config.obs must be 'vision' or 'state', got {config.obs!r}.")
  import jax
  devices = jax.device_count()
  if config.learner.batch_size % devices:
    raise UsageError(f'config.learner.batch_size={config.learner.batch_size} is not divisible by '
                     f'the {devices} devices; use a multiple of {devices}.')
  for name in ('rounds', 'sft_steps', 'steps_per_round', 'checkpoint_every', 'log_every'):
    if config.pipeline[name] < (0 if name in ('rounds', 'steps_per_round') else 1):
      raise UsageError(f'config.pipeline.{name}={config.pipeline[name]} is out of range.')
  if config.runtime.num_workers < 1:
    raise UsageError('config.runtime.num_workers must be >= 1.')


def default_workdir(config, experiment: str) -> str:
  name = os.path.splitext(os.path.basename(experiment))[0]
  return os.path.join('workdirs', f'{config.task}_{name}_{config.seed}')


def enable_compilation_cache() -> None:
  """Persistent XLA cache (JAX_COMPILATION_CACHE_DIR, default ~/.cache/habc/jax): a resumed or
  repeated run skips most compilation."""
  import jax
  path = os.environ.get('JAX_COMPILATION_CACHE_DIR',
                        os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'jax'))
  jax.config.update('jax_compilation_cache_dir', path)
  # Also the many small programs of eager parameter initialisation (each ~0.1 s to compile).
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint operation at INFO.
  try:
    config = FLAGS.config
    if config is None:
      raise UsageError('No experiment config was loaded.')
    # Before build_config: its jax.device_count() must count every host's devices.
    distributed.maybe_initialize(distributed.resolve(FLAGS, config=config))
    distributed.check_mode(FLAGS.mode)  # Several processes: only the learner role.
    config = build_config(config, task=FLAGS.task, seed=FLAGS.seed, experiment=FLAGS.experiment,
                          hardware_overrides=FLAGS.hardware_override, operator=FLAGS.operator)
    if FLAGS.print_config:
      try:
        print(format_config(config), flush=True)
      except BrokenPipeError:  # Piped into `head`, which stopped reading: not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      return
    config_checks.check(config)  # Also the folders the config names (data.teleop_dir).
  except (UsageError, distributed.DistributedConfigError, config_checks.ConfigError) as e:
    sys.exit(f'launch.py: {e}')
  workdir = FLAGS.workdir or default_workdir(config, FLAGS.experiment)
  try:
    if uses_console(config) and FLAGS.mode in ('pipeline', 'collect', 'eval', 'actor'):
      from habc.web import console
      settings = console_settings(
          config, workdir, host=FLAGS.console_host, port=FLAGS.console_port,
          token=FLAGS.console_token, deadman_s=FLAGS.console_deadman, wait=FLAGS.console_wait,
          mode=FLAGS.mode, station_id=FLAGS.station_id)
      os.environ[console.ENV_VAR] = settings.to_env()  # Read by the environment workers.
      token_note = (' (the token is needed to control; without it the page is view-only)'
                    if settings.token else '')
      print(f'habc: operator console at {settings.url()}{token_note}; it goes live when the '
            'first episode\'s environment is built', flush=True)
  except UsageError as e:
    sys.exit(f'launch.py: {e}')
  try:
    run_in(config, workdir)
  except KeyboardInterrupt:
    sys.exit(STOPPED)


STOPPED = 'stopped; re-run the same command to resume'


def children_ignore_ctrl_c() -> None:
  """Processes this one spawns (environment workers, grain workers) start with SIGINT ignored.

  A terminal's Ctrl-C goes to every process of the foreground group; a worker interrupted
  mid-import or mid-episode printed its own KeyboardInterrupt traceback. The workers are shut
  down by this process instead (``rollout.WorkerPool.close``, when the pipeline unwinds). An
  ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt
  handler, so the disposition is set only while each child is launched.
  """
  import signal
  import threading
  try:
    from multiprocessing import popen_spawn_posix
  except ImportError:  # Not POSIX.
    return
  launch_child = popen_spawn_posix.Popen._launch  # pylint: disable=protected-access
  if getattr(launch_child, '_habc_ignores_sigint', False):
    return

  def _launch(self, process_obj):
    if threading.current_thread() is not threading.main_thread():
      return launch_child(self, process_obj)  # signal.signal works in the main thread only.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
      return launch_child(self, process_obj)
    finally:
      signal.signal(signal.SIGINT, previous)

  _launch._habc_ignores_sigint = True  # pylint: disable=protected-access
  popen_spawn_posix.Popen._launch = _launch  # pylint: disable=protected-access


def redeliver_swallowed_interrupts() -> None:
  """A Ctrl-C that lands inside a callback Python cannot raise from (JAX's garbage-collection
  callback, a __del__) is reported as 'Exception ignored' and the run went on; it is raised
  again in the main thread instead."""
  import _thread
  previous = sys.unraisablehook
  if getattr(previous, '_habc_redelivers', False):
    return

  def hook(unraisable):
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      _thread.interrupt_main()
      return
    previous(unraisable)

  hook._habc_redelivers = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _quiet_interrupts() -> None:
  """After a Ctrl-C: later ones (while the run shuts its workers down) do not add tracebacks."""
  import signal
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_in(config, workdir: str) -> None:
  """Runs the chosen mode in ``workdir``; every expected failure ends in one line."""
  enable_compilation_cache()
  children_ignore_ctrl_c()
  redeliver_swallowed_interrupts()
  from habc.run import checkpoints
  from habc.run import storage_errors
  from habc.data import writer as writer_lib
  # A shared workdir of the actor/learner split is left alone: another role may be using it.
  new_workdir = (FLAGS.mode not in ('actor', 'learner')
                 and not os.path.exists(os.path.join(workdir, 'config.json')))
  try:
    try:
      _run_mode(config, workdir)
    except BaseException:
      if new_workdir:
        release_workdir(workdir)
      raise
  except KeyboardInterrupt:
    _quiet_interrupts()
    raise
  except (checkpoints.CheckpointReadError, writer_lib.DatasetInfoError,
          writer_lib.DatasetLockedError) as e:
    sys.exit(f'launch.py: {e}')
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, storage_errors.StorageError):
      sys.exit(f'launch.py: {e}')
    if checkpoints.is_storage_full(e):
      sys.exit(f'launch.py: writing to {os.path.abspath(workdir)} failed: the disk is full. '
               'Committed episodes and checkpoints are intact and nothing half-written is kept; '
               'free space (or move the workdir to a larger disk) and run the same command '
               'again to resume.')
    if isinstance(e, OSError):
      explained = storage_errors.explain_os_error(e, workdir)
      if explained is not None:
        sys.exit(f'launch.py: {explained}')
    raise


def release_workdir(workdir: str) -> bool:
  """After a failed first run in ``workdir``: removes its config.json (and an empty
  progress.json) when the run left no results, so that the corrected command is not refused as
  a config mismatch. Returns True if it did."""
  from habc.run import pipeline
  if not os.path.isdir(workdir) or pipeline.workdir_has_results(workdir):
    return False
  for name in (pipeline.CONFIG_FILE, pipeline.PROGRESS_FILE):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      os.remove(path)
  return True


def _run_mode(config, workdir: str) -> None:
  from habc.run import pipeline
  from habc.fleet import preflight, stations
  from habc.run import storage_errors
  try:
    preflight.check_workdir(workdir)
    if FLAGS.mode == 'actor':
      stations.run_actor(config, workdir, FLAGS.station_id, max_episodes=FLAGS.max_episodes,
                         wait_timeout_s=FLAGS.wait_timeout)
      return
    if FLAGS.mode == 'learner':
      stations.run_learner(config, workdir, max_steps=FLAGS.max_steps)
      return
  except (storage_errors.StorageError, stations.SharedStorageError, TimeoutError, FileNotFoundError,
          pipeline.ConfigMismatchError) as e:
    sys.exit(f'launch.py: {e}')
  print(f'habc: {config.name} on {config.task}, seed {config.seed}, preset {config.preset}, '
        f'workdir {workdir}', flush=True)
  from habc.data.converters import ConversionError
  try:
    summary = pipeline.run(config, workdir, mode=FLAGS.mode, overwrite=FLAGS.overwrite)
  except (pipeline.ConfigMismatchError, pipeline.StageOrderError, pipeline.TeleopDataError,
          ConversionError) as e:
    sys.exit(f'launch.py: {e}')
  last = summary['rounds'][-1] if summary['rounds'] else None
  if last and 'eval' in last:
    from habc.run import evaluation
    print(f'habc: done; round {last["round"]}: {evaluation.format_summary(last["eval"])}')


HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def run_app(main_fn, argv: list[str]) -> None:
  """``absl.app.run``, except that asking for help exits 0 (absl exits 1 after printing it)."""
  try:
    app.run(main_fn, argv=argv)
  except SystemExit as e:
    if e.code == 1 and any(a in HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


def format_config(config) -> str:
  """Every config key as 'key = value', one per line, sorted (what --print_config prints)."""
  def flat(node, prefix=''):
    for key in sorted(node.keys()):
      value = node[key]
      if hasattr(value, 'keys'):
        yield from flat(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key} = {value!r}'
  lines = list(flat(config))
  return '\n'.join(['# launch.py --config.<key>=<value> sets any of these (--task, --seed: the '
                    'top-level ones)'] + lines)


def run_cli(argv: list[str] | None = None) -> None:
  define_flags()
  argv = list(sys.argv if argv is None else argv)
  try:
    argv = config_argv(hardware_argv(argv))
  except UsageError as e:
    sys.exit(f'launch.py: {e}')
  sys.argv = argv  # ml_collections reads the --config.* overrides from sys.argv.
  try:
    run_app(main, argv)
  except KeyboardInterrupt:  # Ctrl-C before main's own handler (while importing, parsing).
    sys.exit(STOPPED)


if __name__ == '__main__':
  run_cli()
