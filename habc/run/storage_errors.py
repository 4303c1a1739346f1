"""Storage errors that say what to do: ``StorageError``, and ``storage_errors``, which turns a
failed write's ``OSError`` (disk full, quota, permissions, read-only) into one naming the path, the
cause and what to do::

  with storage_errors.storage_errors(workdir):
    writer.append(episode)

The data layer commits episodes atomically (habc.data.writer), so such a failure loses at most the
episode being written; the message says so. Used by the run (checkpoints), the fleet's storage and
its start-up checks (habc.fleet.preflight).
"""

from __future__ import annotations

import contextlib
import errno


class StorageError(OSError):
  """The workdir (or shared storage) cannot take the run's files; the message says what to do."""


def is_remote(path: str) -> bool:
  """True for URL-style paths (gs://, s3://, ...), which only tf.io.gfile / etils can open."""
  return '://' in str(path)


_CAUSES = {
    errno.ENOSPC: ('the disk is full', 'free space (or move the workdir to a larger disk) and run '
                   'the same command again to resume'),
    errno.EDQUOT: ('the disk quota is exhausted', 'free space within your quota and run the same '
                   'command again to resume'),
    errno.EACCES: ('permission denied', 'fix the permissions of the directory (or choose another '
                   '--workdir) and run the same command again to resume'),
    errno.EPERM: ('operation not permitted', 'fix the permissions of the directory (or choose '
                  'another --workdir) and run the same command again to resume'),
    errno.EROFS: ('the file system is read-only', 'choose a --workdir on a writable disk and run '
                  'again'),
}


def explain_os_error(error: OSError, where: str) -> StorageError | None:
  """A ``StorageError`` explaining a storage ``OSError`` (None for other errors).

  Args:
    error: the error raised by a write.
    where: the directory (or file) being written.
  """
  cause = _CAUSES.get(getattr(error, 'errno', None))
  if cause is None:
    return None
  what, todo = cause
  name = error.filename or where
  return StorageError(
      f'Writing {name} failed: {what} ({error.strerror or error}). Episodes and checkpoints '
      f'committed before this point are intact (each is written atomically); the one being '
      f'written is lost. To continue: {todo}.')


@contextlib.contextmanager
def storage_errors(where: str):
  """Re-raises ENOSPC / EDQUOT / EACCES / EPERM / EROFS inside the block as a ``StorageError``."""
  try:
    yield
  except StorageError:
    raise
  except OSError as e:
    explained = explain_os_error(e, where)
    if explained is None:
      raise
    raise explained from e
