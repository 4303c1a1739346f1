"""The dm-robotics hardware path: a bimanual moma station behind the simulated tasks' interface.

``make(task=None, *, seed=0, image_size=64, cameras=CAMERAS, time_limit=None, config=None,
operator=None) -> HardwareEnv`` mirrors ``habc.envs.make``. With ``task`` (a simulated task name)
the task's name, instruction, time limit and privileged size are read from the simulated task, so
the specs match it exactly; its control rate and action scale must equal the ``hardware`` config's.
No robot is attached to these machines: ``config.rig = 'moma_sim'`` builds moma's simulated Sawyer
arms. See docs/hardware.md for a real station.
"""

from habc.envs.base import CAMERAS
from habc.envs.hardware.config import default_config, validate
from habc.envs.hardware.env import HardwareEnv, InvalidTimeStep, is_invalid
from habc.envs.hardware.operator import TeleopOperator

__all__ = ['make', 'default_config', 'HardwareEnv', 'InvalidTimeStep', 'is_invalid',
           'TeleopOperator', 'task_spec']


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
