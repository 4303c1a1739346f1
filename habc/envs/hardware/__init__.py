"""The dm-robotics hardware path: a bimanual moma station behind the simulated tasks' interface.

``make(task=None, *, seed=0, image_size=64, cameras=CAMERAS, time_limit=None, config=None,
operator=None) -> HardwareEnv`` mirrors ``habc.envs.make``. With ``task`` (a simulated task name)
the task's name, instruction, time limit and privileged size are read from the simulated task, so
the specs match it exactly; its control rate and action scale must equal the ``hardware`` config's.
No robot is attached to these machines: ``config.rig = 'moma_sim'`` builds moma's simulated Sawyer
arms. See docs/hardware.md for a real station.

Hardware task names: ``hw_<task>`` for every simulated task (``list_tasks()``) is that task on the
station. ``rollout_env`` builds one for the rollout workers (``launch.py --task=hw_fold``), with the
operator of ``config.hardware.operator`` inside the environment.
"""

import ml_collections

from habc.envs.base import CAMERAS
from habc.envs.hardware.config import default_config, validate
from habc.envs.hardware.env import HardwareEnv, InvalidTimeStep, is_invalid
from habc.envs.hardware.operator import TeleopOperator

__all__ = ['make', 'default_config', 'HardwareEnv', 'InvalidTimeStep', 'is_invalid',
           'TeleopOperator', 'task_spec', 'list_tasks', 'is_hardware_task', 'simulated_task',
           'rollout_env', 'PREFIX']

# A hardware task is a simulated task's name with this prefix: the same task on the station.
PREFIX = 'hw_'


def list_tasks() -> list:
  """Names of the hardware tasks: ``hw_<task>`` for every simulated task."""
  import habc.envs  # The simulated registry (light: the task modules load on use).
  return [PREFIX + task for task in habc.envs.list_tasks()]


def is_hardware_task(name: str) -> bool:
  return isinstance(name, str) and name in list_tasks()


def simulated_task(name: str) -> str:
  """'hw_fold' -> 'fold': the simulated task whose spec a hardware task runs."""
  if not is_hardware_task(name):
    raise ValueError(f'Unknown hardware task {name!r}; hardware tasks: {", ".join(list_tasks())}.')
  return name[len(PREFIX):]


def rollout_env(task: str, *, seed: int, image_size: int = 64, cameras=CAMERAS, time_limit=None,
                hardware=None) -> HardwareEnv:
  """The rollout workers' environment factory for a hardware task
  (``habc.run.rollout.WorkerConfig``).

  The signature of ``habc.envs.make`` plus ``hardware``: the run config's ``hardware`` section as a
  plain dict (``WorkerConfig.env_options``; default ``default_config()``). The operator, built as
  ``Class(config, seed)`` from ``hardware['operator']`` ('module:Class'; '' for none), runs inside
  the environment: it may take over at any control step and reports the episode's outcome. The
  environment's ``task_name`` is the hardware name (``hw_fold``), so station data says where it
  came from; specs, instruction and time limit are the simulated task's.
  """
  from habc.symbols import load_symbol
  c = default_config()
  if hardware:
    c.update(ml_collections.ConfigDict(dict(hardware)))
  operator = load_symbol(c.operator)(c, seed) if c.get('operator') else None
  env = make(simulated_task(task), seed=seed, image_size=image_size, cameras=cameras,
             time_limit=time_limit, config=c, operator=operator)
  env.task_name = task
  return env


def task_spec(task: str, *, seed: int = 0, time_limit=None) -> dict:
  """Name, instruction, time limit, control rate, action scale and privileged size of a simulated
  task, read from an instance built without cameras."""
  import habc.envs  # The simulated registry; imported here so the station builds without it.
  twin = habc.envs.make(task, seed=seed, cameras=(), time_limit=time_limit)
  try:
    return {'task_name': twin.task_name, 'instruction': twin.instruction,
            'time_limit': int(twin.time_limit), 'control_hz': float(twin.control_hz),
            'max_delta_pos': float(twin.max_delta_pos),
            'max_delta_yaw': float(twin.max_delta_yaw),
            'privileged_dim': int(twin.observation_spec()['privileged'].shape[0])}
  finally:
    twin.close()


def make(task=None, *, seed: int = 0, image_size: int = 64, cameras=CAMERAS, time_limit=None,
         config=None, operator=None) -> HardwareEnv:
  """Builds the station and wraps it as a HardwareEnv (see the module docstring).

  ``config`` is the ``hardware`` section (default: ``default_config()``). ``seed`` only selects
  the simulated twin's instance; the station itself has nothing random to draw.
  """
  from habc.envs.hardware import robot  # Heavy (moma); imported on use.
  c = config if config is not None else default_config()
  validate(c)
  if task is None:
    spec = {'task_name': 'station', 'instruction': '', 'control_hz': float(c.control_hz),
            'max_delta_pos': float(c.max_delta_pos), 'max_delta_yaw': float(c.max_delta_yaw),
            'time_limit': int(time_limit or 100), 'privileged_dim': 0}
  else:
    spec = task_spec(task, seed=seed, time_limit=time_limit)
  for key in ('control_hz', 'max_delta_pos', 'max_delta_yaw'):
    if abs(spec[key] - float(c[key])) > 1e-9:
      raise ValueError(f'config.hardware.{key} = {c[key]} differs from task {task!r} ({spec[key]});'
                       ' the same action must mean the same motion on both: set them equal.')
  station = robot.build_station(c, cameras=tuple(cameras), image_size=image_size)
  return HardwareEnv(station, c, task_name=spec['task_name'], instruction=spec['instruction'],
                     time_limit=spec['time_limit'], privileged_dim=spec['privileged_dim'],
                     image_size=image_size, operator=operator)
