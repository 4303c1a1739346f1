"""Multi-host training: ``jax.distributed.initialize`` from flags, config values or the environment.

One learner spread over several hosts (each with its own accelerators) runs the same program on
every host; JAX connects them through a coordinator (host 0) before any computation. After that,
``jax.device_count()`` counts the devices of all hosts, and the learner's data-parallel update
(habc.learning.learner) spans them.

Settings, first found wins:

1. flags ``--coordinator_address=host:port --num_processes=N --process_id=i`` (``define_flags``);
2. config values ``config.distributed.{coordinator_address,num_processes,process_id}`` when the
   config has that section (``from_config``);
3. environment variables ``HABC_COORDINATOR_ADDRESS``, ``HABC_NUM_PROCESSES``, ``HABC_PROCESS_ID``
   (``from_env``; what a job script sets per host).

``--num_processes=1`` (the default) or no settings at all is the single-host path: nothing is
initialised. ``--coordinator_address=auto`` lets JAX detect the cluster (SLURM, Open MPI, TPU and
GKE environments set everything; ``num_processes``/``process_id`` stay unset).

Example, two hosts (the same command on both, only the id differs)::

  host0$ python launch.py --task=fold --coordinator_address=host0:1234 --num_processes=2 --process_id=0
  host1$ python launch.py --task=fold --coordinator_address=host0:1234 --num_processes=2 --process_id=1

``maybe_initialize`` must run before anything touches a JAX device (including
``jax.device_count()`` in the launcher's config checks), and every host must see the same
``learner.batch_size``, divisible by the global device count.

Which modes may span hosts (``check_mode``): only ``--mode=learner``
(habc.fleet.stations.run_learner): every process feeds its share of each batch, every process takes
part in each orbax save (orbax coordinates them; the checkpoint directory must be one directory that
every host sees), and only process 0 (``is_primary``) writes config.json, logs and metrics and
publishes to shared storage; process 0 also decides when to stop (``agree``). The modes that
collect, evaluate or train through habc.run.pipeline write the workdir from every process and refuse
to start under several processes: run ``--mode=learner`` on the learner hosts and ``--mode=actor``
on each robot station.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Mapping

ENV_COORDINATOR = 'HABC_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'HABC_NUM_PROCESSES'
ENV_PROCESS_ID = 'HABC_PROCESS_ID'
AUTO = 'auto'


class DistributedConfigError(ValueError):
  """Inconsistent multi-host settings; raised before JAX is touched."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """Multi-host settings of one process.

  coordinator_address: 'host:port' of process 0, 'auto' (cluster detection), or '' (single host).
  num_processes: processes (hosts) in the job; None with 'auto'.
  process_id: this process's index in [0, num_processes); None with 'auto'.
  initialization_timeout: seconds to wait for every process to connect.
  """

  coordinator_address: str = ''
  num_processes: int | None = 1
  process_id: int | None = 0
  initialization_timeout: int = 300

  @property
  def multi_host(self) -> bool:
    return self.coordinator_address == AUTO or (self.num_processes or 1) > 1


def validate(settings: Settings) -> Settings:
  """Checks consistency; returns the settings.

  Raises:
    DistributedConfigError: a missing coordinator with several processes, a process id out of
      range, a malformed address, or a non-positive process count.
  """
  s = settings
  if s.coordinator_address == AUTO:
    return s
  n = 1 if s.num_processes is None else int(s.num_processes)
  if n < 1:
    raise DistributedConfigError(f'--num_processes must be >= 1, got {n}.')
  pid = 0 if s.process_id is None else int(s.process_id)
  if not 0 <= pid < n:
    raise DistributedConfigError(
        f'--process_id={pid} is out of range for --num_processes={n} (ids are 0..{n - 1}).')
  if n > 1:
    if not s.coordinator_address:
      raise DistributedConfigError(
          f'--num_processes={n} needs --coordinator_address=host:port (process 0\'s host and a '
          'free port, the same on every process), or --coordinator_address=auto on a cluster '
          'that JAX detects.')
    host, sep, port = s.coordinator_address.rpartition(':')
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise DistributedConfigError(
          f'--coordinator_address={s.coordinator_address!r} must look like host:port '
          '(e.g. 10.0.0.2:1234).')
  elif s.coordinator_address:
    raise DistributedConfigError(
        f'--coordinator_address={s.coordinator_address!r} was given with --num_processes=1; '
        'set --num_processes to the number of hosts (or drop the address for one host).')
  if s.initialization_timeout < 1:
    raise DistributedConfigError('The initialisation timeout must be >= 1 second.')
  return dataclasses.replace(s, num_processes=n, process_id=pid)


def _int_or_none(value: Any, name: str) -> int | None:
  if value is None or value == '':
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DistributedConfigError(f'{name}={value!r} is not an integer.') from None


def from_values(coordinator_address: str | None = None, num_processes: Any = None,
                process_id: Any = None, initialization_timeout: Any = None) -> Settings:
  """Settings from loose values (strings from the environment are accepted); validated."""
  address = (coordinator_address or '').strip()
  n = _int_or_none(num_processes, 'num_processes')
  pid = _int_or_none(process_id, 'process_id')
  timeout = _int_or_none(initialization_timeout, 'initialization_timeout') or 300
  if address == AUTO:
    return validate(Settings(AUTO, n, pid, timeout))
  return validate(Settings(address, 1 if n is None else n, 0 if pid is None else pid, timeout))


def from_env(environ: Mapping[str, str] | None = None) -> Settings | None:
  """Settings from ``HABC_*`` environment variables; None when none is set."""
  env = os.environ if environ is None else environ
  keys = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
  if not any(env.get(k) for k in keys):
    return None
  return from_values(env.get(ENV_COORDINATOR), env.get(ENV_NUM_PROCESSES), env.get(ENV_PROCESS_ID))


def from_config(config) -> Settings | None:
  """Settings from ``config.distributed`` (a ConfigDict or dict section); None without one."""
  section = config.get('distributed') if hasattr(config, 'get') else None
  if not section:
    return None
  get = section.get
  return from_values(get('coordinator_address'), get('num_processes'), get('process_id'),
                     get('initialization_timeout'))


def define_flags(flag_values=None) -> None:
  """Defines ``--coordinator_address``, ``--num_processes``, ``--process_id`` (absl).

  Call once, at import time of the program that owns the flags (launch.py).
  """
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string('coordinator_address', '', 'Multi-host training: host:port of process 0 '
                      '(the same on every host), or "auto" for cluster detection. Empty: one '
                      'host.', flag_values=fv)
  flags.DEFINE_integer('num_processes', 1, 'Multi-host training: the number of processes '
                       '(hosts).', lower_bound=1, flag_values=fv)
  flags.DEFINE_integer('process_id', 0, 'Multi-host training: this process\'s id, '
                       '0..num_processes-1.', lower_bound=0, flag_values=fv)


def from_flags(flag_values=None) -> Settings:
  """Settings from the flags of ``define_flags`` (parsed)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  return from_values(fv.coordinator_address, fv.num_processes, fv.process_id)


def resolve(flag_values=None, config=None, environ: Mapping[str, str] | None = None) -> Settings:
  """Flags (when they set anything), else config, else environment, else single host."""
  if flag_values is not None:
    s = from_flags(flag_values)
    if s.multi_host:
      return s
  if config is not None:
    s = from_config(config)
    if s is not None:
      return s
  s = from_env(environ)
  return s if s is not None else Settings()


def maybe_initialize(settings: Settings | None = None, *,
                     initialize: Callable[..., None] | None = None,
                     log: Callable[[str], None] = print) -> Settings:
  """Connects this process to the job's other hosts (multi-host); a no-op on one host.

  Args:
    settings: from ``resolve``/``from_flags``/``from_values`` (None: the environment, else one
      host).
    initialize: the function to call (default ``jax.distributed.initialize``; tests pass a fake).
    log: where the one line about the set-up goes.

  Returns:
    The validated settings.

  Raises:
    DistributedConfigError: inconsistent settings.
    RuntimeError: JAX could not connect (names the coordinator and what to check).
  """
  s = validate(settings if settings is not None else (from_env() or Settings()))
  if not s.multi_host:
    return s
  if initialize is None:
    import jax
    initialize = jax.distributed.initialize
  kwargs = {'initialization_timeout': s.initialization_timeout}
  if s.coordinator_address != AUTO:
    kwargs.update(coordinator_address=s.coordinator_address, num_processes=s.num_processes,
                  process_id=s.process_id)
  try:
    initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    where = (f'coordinator {s.coordinator_address}' if s.coordinator_address != AUTO
             else 'the detected cluster')
    raise RuntimeError(
        f'jax.distributed.initialize failed for process {s.process_id} of {s.num_processes} '
        f'({where}): {e}. Check that process 0 runs, the address and port are reachable from '
        'this host, and every process got the same --num_processes.') from e
  log(f'distributed: process {s.process_id} of {s.num_processes} connected '
      f'({s.coordinator_address})')
  return s


def is_primary() -> bool:
  """True in process 0 (the one that writes checkpoints, logs and the report)."""
  import jax
  return jax.process_index() == 0


# Modes that may run under several processes (habc.fleet.stations.run_learner is written for it).
MULTI_PROCESS_MODES = ('learner',)


def check_mode(mode: str, process_count: int | None = None) -> None:
  """Refuses a launch mode that cannot run under ``process_count`` processes.

  Args:
    mode: the launch.py mode (pipeline, demos, sft, collect, train, eval, report, actor, learner).
    process_count: processes in the job; None: ``jax.process_count()`` (after
      ``maybe_initialize``).

  Raises:
    DistributedConfigError: several processes and a mode other than ``learner``.
  """
  n = _process_count() if process_count is None else int(process_count)
  if n <= 1 or mode in MULTI_PROCESS_MODES:
    return
  raise DistributedConfigError(
      f'--mode={mode} runs on one host only, and this job has {n} processes: the pipeline\'s '
      'stages (demonstrations, collection, evaluation, SFT, training, the report) and the actor '
      'write the workdir from every process. Across several hosts use --mode=learner on the '
      'learner hosts and --mode=actor (one process each, no multi-host flags) on the robot '
      'stations, with the same --workdir; make the demonstrations and any SFT checkpoint on one '
      'host first.')


def _process_count() -> int:
  import jax
  return jax.process_count()


def process_count() -> int:
  """Processes in the job (1 unless ``jax.distributed`` was initialised)."""
  return _process_count()


def process_index() -> int:
  import jax
  return jax.process_index()


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op with one process)."""
  if process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
  """Process 0's ``flag``, in every process (each must call it at the same point)."""
  if process_count() == 1:
    return bool(flag)
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(flag), np.int32)))


def check_shared_directory(path: str, what: str = 'the checkpoint directory') -> None:
  """Checks that every process sees the same ``path`` (orbax writes one checkpoint from all).

  Process 0 writes a random token there; after a barrier every other process must read it back.
  No-op with one process.

  Raises:
    DistributedConfigError: in a process that does not see process 0's file.
  """
  if process_count() == 1:
    return
  import numpy as np
  from jax.experimental import multihost_utils
  token_path = os.path.join(path, '.habc_shared_check')
  token = int(np.random.default_rng().integers(1, 2**31 - 1)) if process_index() == 0 else 0
  token = int(multihost_utils.broadcast_one_to_all(np.asarray(token, np.int32)))
  if process_index() == 0:
    os.makedirs(path, exist_ok=True)
    tmp = f'{token_path}.tmp-{token}'
    with open(tmp, 'w') as f:
      f.write(str(token))
    os.replace(tmp, token_path)
  barrier('habc_shared_directory_written')
  seen = None
  with contextlib.suppress(OSError, ValueError):
    with open(token_path) as f:
      seen = int(f.read().strip())
  barrier('habc_shared_directory_read')
  if seen != token:
    raise DistributedConfigError(
        f'Process {process_index()} does not see process 0\'s files in {path}: {what} must be '
        'one directory that every learner process shares (an NFS mount; with a URL --workdir '
        'set HABC_STATION_CACHE, or --cache_dir, to a path on such a mount on every host).')
