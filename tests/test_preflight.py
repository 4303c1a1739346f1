"""Start-up storage checks: unwritable workdir and too little free space fail before any work;
ENOSPC / EACCES during a write become a message naming the path and what to do."""

import errno
import os

import pytest

from habc.fleet import preflight
from habc.run import storage_errors


def unwritable_dir(tmp_path):
  """A directory this process cannot create files in (root ignores permission bits: use /sys)."""
  if os.geteuid() == 0:
    return '/sys/kernel'
  path = tmp_path / 'readonly'
  path.mkdir()
  path.chmod(0o555)
  return str(path)


def test_writable_workdir_passes_and_leaves_nothing(tmp_path):
  work = tmp_path / 'run'
  found = preflight.check_workdir(str(work), min_free_gb=0.0)
  assert found['checked'] and found['free_gb'] > 0
  assert work.is_dir() and list(work.iterdir()) == []  # The probe file is gone.


def test_read_only_dir_is_refused_with_the_path(tmp_path):
  path = unwritable_dir(tmp_path)
  with pytest.raises(storage_errors.StorageError, match='is not writable') as err:
    preflight.check_workdir(path, min_free_gb=0.0)
  assert path in str(err.value) and '--workdir' in str(err.value)


def test_workdir_under_a_read_only_dir_is_refused(tmp_path):
  path = os.path.join(unwritable_dir(tmp_path), 'habc_run')
  with pytest.raises(storage_errors.StorageError, match='Cannot create the directory') as err:
    preflight.check_workdir(path, min_free_gb=0.0)
  assert path in str(err.value)
  assert not os.path.exists(path)


def test_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(storage_errors.StorageError):
    preflight.check_workdir(str(path), min_free_gb=0.0)


def test_threshold_above_free_space_fails_before_work(tmp_path):
  free = preflight.free_gb(str(tmp_path))
  work = tmp_path / 'run'
  with pytest.raises(storage_errors.StorageError) as err:
    preflight.check_workdir(str(work), min_free_gb=free + 1000)
  message = str(err.value)
  # Free space moves while other processes write: compare the number loosely.
  reported = float(message.split('Only ')[1].split(' GB free')[0])
  assert abs(reported - free) < 1.0 and preflight.ENV_MIN_FREE_GB in message
  assert f'at least {free + 1000:.2f} GB' in message
  assert list(work.iterdir()) == []  # Nothing but the empty directory.


def test_threshold_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(preflight.ENV_MIN_FREE_GB, '1e9')
  with pytest.raises(storage_errors.StorageError, match='needs at least'):
    preflight.check_workdir(str(tmp_path))
  monkeypatch.setenv(preflight.ENV_MIN_FREE_GB, '0')
  assert preflight.check_workdir(str(tmp_path))['checked']
  monkeypatch.setenv(preflight.ENV_MIN_FREE_GB, 'lots')
  with pytest.raises(storage_errors.StorageError, match='not a number'):
    preflight.check_workdir(str(tmp_path))


class FakeStorage:
  """Stands in for habc.fleet.storage.Storage (no helper process): probe() fails as told."""

  def __init__(self, error=None):
    self.error = error
    self.probed = []

  def probe(self, url):
    self.probed.append(url)
    if self.error is not None:
      raise self.error


def test_urls_are_probed_through_storage():
  from habc.fleet import storage
  fake = FakeStorage()
  assert preflight.check_workdir('gs://bucket/run', min_free_gb=1e9, storage=fake) == {
      'path': 'gs://bucket/run', 'free_gb': None, 'checked': True}
  assert fake.probed == ['gs://bucket/run']  # Free space is not asked of a bucket.
  denied = FakeStorage(storage.StorageError('makedirs gs://bucket/run failed (tf.io.gfile): '
                                            'PermissionDeniedError: 403'))
  with pytest.raises(storage_errors.StorageError, match='not usable: makedirs') as err:
    preflight.check_workdir('gs://bucket/run', storage=denied)
  assert 'gs://bucket/run' in str(err.value) and 'credentials' in str(err.value)
  dead = FakeStorage(storage.HelperError('The storage helper process died with exit code 1'))
  with pytest.raises(storage_errors.StorageError, match='Could not check the shared storage gs://'):
    preflight.check_workdir('gs://bucket/run', storage=dead)


def test_disk_full_during_a_write_becomes_a_clear_error():
  # /dev/full answers every write with ENOSPC, as a full disk does.
  with pytest.raises(storage_errors.StorageError, match='the disk is full') as err:
    with storage_errors.storage_errors('/dev/full'):
      with open('/dev/full', 'wb') as f:
        f.write(b'episode')
        f.flush()
  assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
  assert 'run the same command again to resume' in str(err.value)


def test_permission_denied_during_a_write_becomes_a_clear_error(tmp_path):
  target = os.path.join(unwritable_dir(tmp_path), 'episode.bin')
  with pytest.raises(storage_errors.StorageError, match='permission denied') as err:
    with storage_errors.storage_errors(target):
      open(target, 'wb').close()
  assert target in str(err.value)


def test_other_errors_pass_through(tmp_path):
  with pytest.raises(FileNotFoundError):
    with storage_errors.storage_errors(str(tmp_path)):
      open(tmp_path / 'missing' / 'file').close()
  with pytest.raises(ZeroDivisionError):
    with storage_errors.storage_errors(str(tmp_path)):
      1 / 0  # pylint: disable=pointless-statement
