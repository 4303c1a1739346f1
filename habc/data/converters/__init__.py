"""Teleop recordings -> RLDS: ALOHA HDF5, LeRobot (v2.x and v3.0) and npz episodes.

``convert(format, input, output, **options) -> Summary`` is what data/convert_teleop.py runs.
"""

from __future__ import annotations

import os
from typing import Any

from habc.data import schema
from habc.data import writer as writer_lib
from habc.data.converters import aloha_hdf5, common, lerobot, npz
from habc.data.converters.aloha_hdf5 import write_aloha_hdf5
from habc.data.converters.common import ConversionError, Options, Summary

FORMATS = {'aloha_hdf5': aloha_hdf5, 'lerobot': lerobot, 'npz': npz}


def make_options(**options: Any) -> Options:
  """Options from keyword arguments, accepting the CLI's strings ('64x64', 'a:b,c', 'true')."""
  if isinstance(options.get('resize'), str):
    options['resize'] = common.parse_resize(options['resize'])
  if isinstance(options.get('cameras'), (str, list, tuple)):
    options['cameras'] = common.parse_cameras(options['cameras'])
  success = options.get('success')
  if isinstance(success, str):
    lowered = success.strip().lower()
    if lowered in ('', 'none'):
      options['success'] = None
    elif lowered in ('true', '1', 'yes'):
      options['success'] = True
    elif lowered in ('false', '0', 'no'):
      options['success'] = False
    else:
      raise ValueError(f'--success must be true or false, got {success!r}.')
  for key, choices in (('state', aloha_hdf5.STATE_CHOICES),
                       ('base_action', aloha_hdf5.BASE_ACTION_CHOICES),
                       ('jpeg_channels', aloha_hdf5.JPEG_CHANNEL_CHOICES)):
    if key in options and options[key] is None:
      options.pop(key)
    elif key in options and options[key] not in choices:
      raise ValueError(f'--{key} must be one of {", ".join(c or "(empty)" for c in choices)}, '
                       f'got {options[key]!r}.')
  unknown = set(options) - set(Options.__dataclass_fields__)
  if unknown:
    raise TypeError(f'Unknown conversion options {sorted(unknown)}.')
  return Options(**options)


def convert(format: str, input: str, output: str, *, skip_bad: bool = False,
            progress: bool = True, **options: Any) -> Summary:  # pylint: disable=redefined-builtin
  """Converts a folder of teleop recordings into (or appends them to) an RLDS dataset.

  Each episode is committed on its own, so an error leaves the output with the episodes before it
  (and whatever it held already), intact.

  Args:
    format: 'aloha_hdf5', 'lerobot' or 'npz'.
    input: the recordings (a folder; or one file for aloha_hdf5 / npz).
    output: the RLDS dataset directory.
    skip_bad: leave bad episodes out and list them in the summary instead of stopping.
    progress: show a progress bar.
    **options: see ``common.Options`` (task, instruction, resize, success, cameras, source, ...).

  Returns:
    The ``Summary``.

  Raises:
    ConversionError: a bad episode (file, episode and field named), unless ``skip_bad``.
  """
  if format not in FORMATS:
    raise ValueError(f'Unknown format {format!r}; use one of {sorted(FORMATS)}.')
  if not os.path.exists(input):
    raise FileNotFoundError(f'Input {input} does not exist.')
  opts = make_options(**options)
  if format == 'aloha_hdf5':
    items = list(aloha_hdf5.iter_raw(input, opts))
  else:
    items = list(FORMATS[format].iter_raw(input))
  if not items:
    raise ValueError(f'No {format} episodes found in {input}.')
  summary = Summary(output=output)
  writer = None
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(items), desc=f'converting {format}', unit='episode')
  try:
    for file, name, load in items:
      try:
        episode = common.build_episode(load(), opts, file=file, episode=name)
        if writer is None:
          spec = None
          if not writer_lib.num_episodes(output) and not os.path.exists(
              os.path.join(output, 'dataset_info.json')):
            spec = schema.spec_of_episode(episode, image_format=opts.image_format)
          writer = writer_lib.EpisodeWriter(output, spec)
        try:
          writer.append(episode)
        except schema.EpisodeError as e:
          raise ConversionError(file, name, e.field, e.problem) from e
        summary.add(episode)
      except ConversionError as e:
        if not skip_bad:
          raise
        summary.skipped.append((file, name, str(e)))
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
    if writer is not None:
      writer.close()
  return summary


__all__ = ['convert', 'ConversionError', 'Options', 'Summary', 'write_aloha_hdf5', 'FORMATS',
           'make_options']
