"""Start-up checks of the places a run writes to, and clear messages when a write fails.

A run that discovers a full disk or a read-only mount after an hour of collection loses that hour.
``check_workdir`` runs before any work:

* the directory exists or can be created, and a file can be written, fsynced and removed in it;
* the free space on its file system is at least ``min_free_gb`` (default 2 GB, roughly ten
  vision-preset rounds of rollouts plus checkpoints; ``HABC_MIN_FREE_GB`` overrides it).

Writes that fail later anyway (the disk filled up during the run) are turned into a
``StorageError`` naming the path, the cause and what to do, by
``habc.run.storage_errors.storage_errors``.

URLs (``gs://``, ``s3://``, ``file://``...) are checked by ``check_remote``: through
habc.fleet.storage's tf.io.gfile helper process (TensorFlow never loads in the calling process) a
probe file is written, read back and removed; the error says which step failed and what to check.
Free space of a bucket is not a meaningful number and is not checked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid

from habc.run.storage_errors import StorageError, is_remote

DEFAULT_MIN_FREE_GB = 2.0
ENV_MIN_FREE_GB = 'HABC_MIN_FREE_GB'


def min_free_gb_default() -> float:
  """``HABC_MIN_FREE_GB`` if set, else ``DEFAULT_MIN_FREE_GB``."""
  value = os.environ.get(ENV_MIN_FREE_GB)
  if value is None or value == '':
    return DEFAULT_MIN_FREE_GB
  try:
    return float(value)
  except ValueError:
    raise StorageError(f'{ENV_MIN_FREE_GB}={value!r} is not a number (free gigabytes).') from None


def _existing_parent(path: str) -> str:
  """The nearest existing ancestor of ``path`` (``path`` itself when it exists)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def free_gb(path: str) -> float:
  """Free gigabytes (for an unprivileged user) on the file system holding ``path``."""
  return shutil.disk_usage(_existing_parent(path)).free / 1e9


def check_writable(path: str) -> None:
  """Creates ``path`` if needed and writes, fsyncs and removes a probe file in it.

  Raises:
    StorageError: the directory cannot be created or written (permissions, read-only mount,
      full disk), with the path and the operating system's reason.
  """
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise StorageError(
        f'Cannot create the directory {path}: {e.strerror or e}. Choose a --workdir on a '
        'writable disk, or fix its permissions.') from e
  if not os.path.isdir(path):
    raise StorageError(f'{path} exists and is not a directory; choose another --workdir.')
  probe = os.path.join(path, f'.habc_write_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}')
  try:
    with open(probe, 'wb') as f:
      f.write(b'habc')
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise StorageError(
        f'The directory {path} is not writable: {e.strerror or e}. Choose a --workdir on a '
        'writable disk (a read-only mount or a directory owned by another user will lose every '
        'episode), or fix its permissions.') from e
  finally:
    with contextlib.suppress(OSError):
      os.remove(probe)


def check_free_space(path: str, min_free_gb: float | None = None) -> float:
  """Returns the free gigabytes at ``path``; raises when below ``min_free_gb``.

  Raises:
    StorageError: less than ``min_free_gb`` (default: ``min_free_gb_default()``) is free.
  """
  need = min_free_gb_default() if min_free_gb is None else float(min_free_gb)
  free = free_gb(path)
  if free < need:
    raise StorageError(
        f'Only {free:.2f} GB free on the disk of {path}; the run needs at least {need:.2f} GB '
        '(rollouts, checkpoints, logs). Free some space, choose a --workdir on a larger disk, '
        f'or lower the threshold with {ENV_MIN_FREE_GB}=<gigabytes> if you know the run is '
        'small.')
  return free


def check_remote(url: str, storage=None, timeout_s: float = 120.0) -> dict:
  """Checks that a URL is reachable and writable (probe file through habc.fleet.storage).

  Args:
    url: e.g. gs://bucket/run (created if missing).
    storage: a ``habc.fleet.storage.Storage`` to use (its helper stays up); None: a temporary one.
    timeout_s: how long each probe step may take (a temporary storage only).

  Returns:
    {'path': url, 'free_gb': None, 'checked': True}.

  Raises:
    StorageError: the helper could not start or answer, or the URL cannot be written or read.
  """
  from habc.fleet import storage as storage_lib  # pylint: disable=import-outside-toplevel
  own = storage is None
  s = storage_lib.Storage(timeout_s=timeout_s, start_timeout_s=max(timeout_s, 180.0)) \
      if own else storage
  try:
    s.probe(url)
  except storage_lib.HelperError as e:
    raise StorageError(f'Could not check the shared storage {url}: {e}') from e
  except storage_lib.StorageError as e:
    raise StorageError(
        f'The shared storage {url} is not usable: {e}. Check the URL (bucket name, path), that '
        'this machine reaches it (network, proxy), its credentials (gs://: gcloud auth '
        'application-default login or GOOGLE_APPLICATION_CREDENTIALS) and its write permission '
        'there.') from e
  finally:
    if own:
      s.close()
  return {'path': url, 'free_gb': None, 'checked': True}


def check_workdir(path: str, min_free_gb: float | None = None, storage=None) -> dict:
  """All start-up checks of a workdir (a local path, or a URL: ``check_remote``).

  Returns:
    {'path', 'free_gb' (None for URLs), 'checked': True}.

  Raises:
    StorageError: not writable, or not enough free space, or an unreachable URL.
  """
  if is_remote(path):
    return check_remote(path, storage=storage)
  check_writable(path)
  free = check_free_space(path, min_free_gb)
  return {'path': os.path.abspath(path), 'free_gb': free, 'checked': True}
