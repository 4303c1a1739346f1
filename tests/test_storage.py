"""habc.fleet.storage: local paths and URLs (file:// through the real tf.io.gfile helper process),
clear errors for missing paths, and a helper that dies, hangs or cannot start."""

import os
import signal
import stat
import sys
import time

import pytest

from habc.fleet import storage

FAKE_HELPER = """
import json, sys, time
mode = {mode!r}
print(json.dumps({{'ready': True}}), flush=True)
for line in sys.stdin:
  if mode == 'die':
    sys.stderr.write('fake helper: lost the bucket connection\\n'); sys.stderr.flush()
    sys.exit(7)
  time.sleep(60)
"""


def fake_python(tmp_path, mode):
  """An executable standing in for the interpreter: runs a fake helper whatever the arguments."""
  script = tmp_path / f'fake_{mode}.py'
  script.write_text(FAKE_HELPER.format(mode=mode))
  exe = tmp_path / f'fake_{mode}.sh'
  exe.write_text(f'#!/bin/sh\nexec {sys.executable} {script}\n')
  exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
  return str(exe)


@pytest.fixture(scope='module')
def remote(tmp_path_factory):
  """(Storage with one real helper for the module, a file:// URL of an empty directory)."""
  root = tmp_path_factory.mktemp('bucket')
  with storage.Storage(timeout_s=120) as s:
    yield s, f'file://{root}'


def test_url_kinds_and_join():
  assert storage.is_remote('gs://b/run') and storage.is_remote('file:///tmp/x')
  assert not storage.is_remote('/tmp/x') and not storage.is_remote('relative/dir')
  assert storage.join('gs://b/run/', 'checkpoints', '3') == 'gs://b/run/checkpoints/3'
  assert storage.join('/tmp/run', 'a', 'b') == '/tmp/run/a/b'


def test_round_trip_through_the_helper(remote, tmp_path):
  s, url = remote
  src = tmp_path / 'episode.bin'
  src.write_bytes(b'\x00episode' * 100)
  s.upload(str(src), storage.join(url, 'stations', 'station_000', 'shard-00000'))
  s.write_bytes(storage.join(url, 'stations', 'station_000', 'info.json'), b'{"n": 1}')
  assert s.exists(storage.join(url, 'stations'))
  assert not s.exists(storage.join(url, 'nothing'))
  assert s.listdir(storage.join(url, 'stations')) == ['station_000']  # No temporary names left.
  assert s.walk(storage.join(url, 'stations')) == ['station_000/info.json',
                                                   'station_000/shard-00000']
  out = tmp_path / 'down' / 'shard'
  s.download(storage.join(url, 'stations', 'station_000', 'shard-00000'), str(out))
  assert out.read_bytes() == src.read_bytes()
  assert os.listdir(out.parent) == ['shard']  # The temporary local file was renamed.
  assert s.read_bytes(storage.join(url, 'stations', 'station_000', 'info.json')) == b'{"n": 1}'
  # Upload replaces a published file whole.
  s.write_bytes(storage.join(url, 'stations', 'station_000', 'info.json'), b'{"n": 2}')
  assert s.read_bytes(storage.join(url, 'stations', 'station_000', 'info.json')) == b'{"n": 2}'
  s.rmtree(storage.join(url, 'stations'))
  assert not s.exists(storage.join(url, 'stations'))
  # The helper is another process, and TensorFlow never loaded in this one.
  assert s.helper_pid not in (None, os.getpid())
  assert 'tensorflow' not in sys.modules


def test_missing_paths_name_the_url(remote, tmp_path):
  s, url = remote
  missing = storage.join(url, 'no', 'such', 'dir')
  for call in (lambda: s.listdir(missing), lambda: s.walk(missing),
               lambda: s.read_bytes(storage.join(missing, 'f')),
               lambda: s.download(storage.join(missing, 'f'), str(tmp_path / 'f'))):
    with pytest.raises(storage.NotFound) as err:
      call()
    assert missing in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, OSError)
  with pytest.raises(storage.NotFound, match='local file .*nope'):
    s.upload(str(tmp_path / 'nope'), storage.join(url, 'x'))
  assert not (tmp_path / 'f').exists()


def test_probe_and_unwritable_url(remote):
  s, url = remote
  s.probe(storage.join(url, 'probe'))
  assert s.listdir(storage.join(url, 'probe')) == []  # The probe file is removed.
  target = 'file:///proc/habc_not_writable'
  with pytest.raises(storage.StorageError, match='not writable') as err:
    s.probe(target)
  assert target in str(err.value)


def test_preflight_checks_a_url_through_the_helper(remote):
  from habc.fleet import preflight
  from habc.run import storage_errors
  s, url = remote
  found = preflight.check_workdir(storage.join(url, 'run'), storage=s)
  assert found == {'path': storage.join(url, 'run'), 'free_gb': None, 'checked': True}
  with pytest.raises(storage_errors.StorageError, match='not usable: .*not writable') as err:
    preflight.check_workdir('file:///proc/habc_run', storage=s)
  assert 'file:///proc/habc_run' in str(err.value)


def test_local_paths_need_no_helper(tmp_path):
  with storage.Storage() as s:
    s.write_bytes(str(tmp_path / 'a' / 'b.json'), b'{}')
    assert s.listdir(str(tmp_path / 'a')) == ['b.json']
    assert s.walk(str(tmp_path)) == ['a/b.json']
    with pytest.raises(storage.NotFound, match='missing'):
      s.listdir(str(tmp_path / 'missing'))
    assert s.helper_pid is None


def test_helper_that_dies_gives_a_clear_error_and_is_restarted(tmp_path):
  with storage.Storage(python=fake_python(tmp_path, 'die')) as s:
    with pytest.raises(storage.HelperError, match='died with exit code 7') as err:
      s.exists('gs://bucket/run')
    assert 'lost the bucket connection' in str(err.value)  # Its stderr is quoted.
    with pytest.raises(storage.HelperError, match='died'):  # A fresh helper, same fate.
      s.exists('gs://bucket/run')


def test_helper_that_hangs_is_killed_after_the_timeout(tmp_path):
  with storage.Storage(python=fake_python(tmp_path, 'hang'), timeout_s=1.0) as s:
    start = time.monotonic()
    with pytest.raises(storage.HelperError, match='did not answer exists gs://b/x within 1 s'):
      s.exists('gs://b/x')
    assert time.monotonic() - start < 10
    assert s.helper_pid is None  # Killed.


def test_helper_that_cannot_start(tmp_path):
  with storage.Storage(python='/bin/false') as s:
    with pytest.raises(storage.HelperError, match='died with exit code 1 during start'):
      s.exists('gs://b/x')


def test_real_helper_killed_mid_run(remote):
  # Last in this file: the next operation would start a new helper (seconds of TF import).
  s, url = remote
  assert s.exists(url)
  os.kill(s.helper_pid, signal.SIGKILL)
  with pytest.raises(storage.HelperError, match=r'died with exit code -9'):
    s.exists(url)
