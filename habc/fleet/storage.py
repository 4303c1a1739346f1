"""Shared storage on any path tf.io.gfile accepts, without TensorFlow in the calling process.

A location is *local* (a plain path: local disk or NFS, handled here with ``os``) or *remote* (a
URL with a scheme: ``gs://``, ``s3://``, ``hdfs://``, ``file://``...). Remote operations run in a
helper process that imports TensorFlow and uses ``tf.io.gfile``; the caller talks to it through
two pipes, one JSON line per request and per answer. The calling process never imports
TensorFlow, so a process that renders with MuJoCo (an actor) can use remote storage: TensorFlow
and MuJoCo software rendering crash in one process (``free(): invalid pointer``).

One long-lived helper per ``Storage`` (started on the first remote operation) rather than one
process per batch of operations: importing TensorFlow costs seconds (about 8 s of CPU on the
2-core test machine), an operation through the pipes costs well under a millisecond on top of
what tf.io.gfile itself takes (``python -m habc.storage --bench`` measures both).

Atomicity, the only guarantees the actor/learner split relies on:

* ``upload`` copies to ``<url>.tmp-<random>`` and renames it to ``<url>``: a reader sees the old
  file or the whole new one (object stores rename an object as a copy that appears at once);
* ``download`` copies to a temporary local file and ``os.replace``s it into place;
* directories are not atomic anywhere; callers publish a directory's files first and a small
  marker file last (``habc.fleet.stations``).

Failures raise ``StorageError`` (an ``OSError``, the same family as habc.run.storage_errors') naming
the URL and the operation; ``NotFound`` for missing paths; ``HelperError`` when the helper cannot
start, dies, or does not answer within ``timeout_s`` (it is killed, and the next operation starts
a fresh one).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid

from habc.run import storage_errors

HELPER_START_TIMEOUT_S = 180.0
DEFAULT_TIMEOUT_S = 600.0
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StorageError(storage_errors.StorageError):
  """A storage operation failed; the message names the URL, the operation and the cause."""


class NotFound(StorageError, FileNotFoundError):
  """The path or URL does not exist."""


class HelperError(StorageError):
  """The tf.io.gfile helper process could not start, died, or did not answer in time."""


def is_remote(url: str) -> bool:
  """True for URLs with a scheme (gs://, s3://, file://...): they go through tf.io.gfile."""
  return storage_errors.is_remote(url)


def join(url: str, *parts: str) -> str:
  """Joins path components; URLs with '/', local paths with ``os.path.join``."""
  if not is_remote(url):
    return os.path.join(url, *parts)
  out = url.rstrip('/')
  for part in parts:
    out = f'{out}/{part.strip("/")}'
  return out


def _local_tmp(path: str) -> str:
  return os.path.join(os.path.dirname(os.path.abspath(path)),
                      f'.{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}')


# ------------------------------------------------------------------------------------------------
# Local operations (also what the helper would do, with os instead of tf.io.gfile).


def _local_op(op: str, args: list):
  if op == 'exists':
    return os.path.exists(args[0])
  if op == 'isdir':
    return os.path.isdir(args[0])
  if op == 'listdir':
    return sorted(os.listdir(args[0]))
  if op == 'walk':
    root = args[0]
    if not os.path.isdir(root):
      raise FileNotFoundError(2, 'No such directory', root)
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)
  if op == 'makedirs':
    os.makedirs(args[0], exist_ok=True)
    return None
  if op == 'upload':  # local file -> destination, atomically.
    src, dst = args
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = _local_tmp(dst)
    try:
      shutil.copyfile(src, tmp)
      os.replace(tmp, dst)
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)
    return None
  if op == 'download':
    shutil.copyfile(args[0], args[1])
    return None
  if op == 'remove':
    os.remove(args[0])
    return None
  if op == 'rmtree':
    shutil.rmtree(args[0])
    return None
  raise ValueError(f'unknown storage operation {op!r}')


# ------------------------------------------------------------------------------------------------
# The helper process (``python -m habc.fleet.storage --serve``): tf.io.gfile behind a pipe.


def _gfile_op(gfile, op: str, args: list):
  if op == 'exists':
    return bool(gfile.exists(args[0]))
  if op == 'isdir':
    return bool(gfile.isdir(args[0]))
  if op == 'listdir':
    if not gfile.isdir(args[0]):
      raise FileNotFoundError(2, 'No such directory', args[0])
    return sorted(name.rstrip('/') for name in gfile.listdir(args[0]))
  if op == 'walk':
    root = args[0].rstrip('/')
    if not gfile.isdir(root):
      raise FileNotFoundError(2, 'No such directory', root)
    out = []
    for directory, _, files in gfile.walk(root):
      rel = directory.rstrip('/')[len(root):].strip('/')
      out.extend(f'{rel}/{f}' if rel else f for f in files)
    return sorted(out)
  if op == 'makedirs':
    gfile.makedirs(args[0])
    return None
  if op == 'upload':
    src, dst = args
    parent = dst.rsplit('/', 1)[0]
    if not gfile.exists(parent):
      gfile.makedirs(parent)
    tmp = f'{dst}.tmp-{uuid.uuid4().hex[:12]}'
    try:
      gfile.copy(src, tmp, overwrite=True)
      gfile.rename(tmp, dst, overwrite=True)
    except Exception:
      with contextlib.suppress(Exception):
        gfile.remove(tmp)
      raise
    return None
  if op == 'download':
    gfile.copy(args[0], args[1], overwrite=True)
    return None
  if op == 'remove':
    gfile.remove(args[0])
    return None
  if op == 'rmtree':
    gfile.rmtree(args[0])
    return None
  if op == 'exit':  # Tests: the helper dying mid-run.
    os._exit(int(args[0]))
  if op == 'sleep':  # Tests: a helper that does not answer.
    time.sleep(float(args[0]))
    return None
  raise ValueError(f'unknown storage operation {op!r}')


def serve(stdin=None, stdout_fd: int | None = None) -> None:
  """The helper's loop: one JSON request per line in, one JSON answer per line out.

  Requests ``{"op": name, "args": [...]}``; answers ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "kind": "not_found"|"error", "message": ...}``. The first line out is
  ``{"ready": true}`` once TensorFlow is imported. Anything TensorFlow prints goes to stderr.
  """
  fd = os.dup(1) if stdout_fd is None else stdout_fd
  os.dup2(2, 1)  # Stray prints (TensorFlow's) must not reach the protocol pipe.
  out = os.fdopen(fd, 'w', buffering=1)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from tensorflow.io import gfile  # pylint: disable=import-outside-toplevel
  out.write(json.dumps({'ready': True, 'pid': os.getpid()}) + '\n')
  for line in (stdin or sys.stdin):
    if not line.strip():
      continue
    request = json.loads(line)
    try:
      answer = {'ok': True, 'result': _gfile_op(gfile, request['op'], request.get('args', []))}
    except Exception as e:  # pylint: disable=broad-except
      missing = isinstance(e, FileNotFoundError) or type(e).__name__ == 'NotFoundError'
      answer = {'ok': False, 'kind': 'not_found' if missing else 'error',
                'message': f'{type(e).__name__}: {e}'}
    out.write(json.dumps(answer) + '\n')


class _Helper:
  """One running helper process and the threads that read its pipes."""

  def __init__(self, python: str, start_timeout_s: float):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2',
               PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get('PYTHONPATH')) if p))
    self.proc = subprocess.Popen(
        [python, '-u', '-m', 'habc.fleet.storage', '--serve'], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=_ROOT)
    self.answers: queue.Queue = queue.Queue()
    self.stderr = collections.deque(maxlen=30)
    threading.Thread(target=self._read_answers, daemon=True).start()
    threading.Thread(target=self._read_stderr, daemon=True).start()
    ready = self.receive(start_timeout_s, 'start (import tensorflow)')
    if not ready.get('ready'):
      raise HelperError(f'The storage helper sent {ready!r} instead of its ready line.')

  def _read_answers(self):
    for line in self.proc.stdout:
      self.answers.put(line)
    self.answers.put(None)

  def _read_stderr(self):
    for line in self.proc.stderr:
      self.stderr.append(line.rstrip())

  def _tail(self) -> str:
    lines = [l for l in list(self.stderr) if l.strip()][-8:]
    return ('; its last stderr lines:\n  ' + '\n  '.join(lines)) if lines else ''

  def receive(self, timeout_s: float, what: str) -> dict:
    try:
      line = self.answers.get(timeout=timeout_s)
    except queue.Empty:
      self.kill()
      raise HelperError(
          f'The storage helper process (tf.io.gfile) did not answer {what} within '
          f'{timeout_s:.0f} s; it was killed (the next operation starts a new one). Check the '
          f'network and the credentials for the bucket{self._tail()}') from None
    if line is None:
      code = self.proc.wait()
      time.sleep(0.05)  # Let the stderr thread collect the last lines.
      raise HelperError(
          f'The storage helper process (tf.io.gfile) died with exit code {code} during '
          f'{what}{self._tail()}. The next operation starts a new one; if it keeps dying, run '
          f'`{sys.executable} -m habc.fleet.storage --check <url>` to see why.')
    return json.loads(line)

  def request(self, op: str, args: list, timeout_s: float) -> dict:
    what = f'{op} {" ".join(str(a) for a in args)}'
    try:
      self.proc.stdin.write(json.dumps({'op': op, 'args': args}) + '\n')
      self.proc.stdin.flush()
    except (BrokenPipeError, OSError):
      pass  # It died: receive() reports how.
    return self.receive(timeout_s, what)

  def alive(self) -> bool:
    return self.proc.poll() is None

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
    with contextlib.suppress(Exception):
      self.proc.wait(timeout=10)

  def close(self):
    with contextlib.suppress(Exception):
      self.proc.stdin.close()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.kill()


class Storage:
  """Operations on local paths and URLs; URLs go through one tf.io.gfile helper process.

  ``Storage()`` costs nothing until the first remote operation starts the helper; ``close()``
  (or ``with Storage() as s:``) stops it. Not shared between threads.
  """

  def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S,
               start_timeout_s: float = HELPER_START_TIMEOUT_S, python: str = sys.executable):
    self.timeout_s = float(timeout_s)
    self.start_timeout_s = float(start_timeout_s)
    self.python = python
    self._helper: _Helper | None = None
    self._lock = threading.Lock()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    if self._helper is not None:
      self._helper.close()
      self._helper = None

  @property
  def helper_pid(self) -> int | None:
    return self._helper.proc.pid if self._helper is not None and self._helper.alive() else None

  def _call(self, op: str, url: str, args: list, timeout_s: float | None = None):
    if not is_remote(url):
      try:
        return _local_op(op, args)
      except FileNotFoundError as e:
        raise NotFound(f'{op}: {e.filename or url} does not exist.') from e
      except OSError as e:
        explained = storage_errors.explain_os_error(e, url)
        raise (explained or StorageError(f'{op} {url} failed: {e}')) from e
    with self._lock:
      if self._helper is None or not self._helper.alive():
        if self._helper is not None:
          self._helper.kill()
        self._helper = None
        self._helper = _Helper(self.python, self.start_timeout_s)
      answer = self._helper.request(op, args, timeout_s or self.timeout_s)
    if answer.get('ok'):
      return answer.get('result')
    if answer.get('kind') == 'not_found':
      raise NotFound(f'{op}: {url} does not exist ({answer.get("message")}).')
    raise StorageError(f'{op} {url} failed (tf.io.gfile): {answer.get("message")}')

  # Queries ......................................................................................
  def exists(self, url: str) -> bool:
    return bool(self._call('exists', url, [url]))

  def isdir(self, url: str) -> bool:
    return bool(self._call('isdir', url, [url]))

  def listdir(self, url: str) -> list[str]:
    """Sorted names in a directory (NotFound when it does not exist)."""
    return list(self._call('listdir', url, [url]))

  def walk(self, url: str) -> list[str]:
    """Sorted relative paths of every file under a directory (NotFound when missing)."""
    return list(self._call('walk', url, [url]))

  # Changes .....................................................................................
  def makedirs(self, url: str) -> None:
    self._call('makedirs', url, [url])

  def upload(self, local_path: str, url: str) -> None:
    """Copies a finished local file to ``url`` atomically (temporary name, then rename)."""
    if not os.path.isfile(local_path):
      raise NotFound(f'upload: the local file {local_path} (for {url}) does not exist.')
    self._call('upload', url, [os.path.abspath(local_path), url])

  def download(self, url: str, local_path: str) -> None:
    """Copies ``url`` to ``local_path`` atomically (temporary local file, then os.replace)."""
    local_path = os.path.abspath(local_path)
    os.makedirs(os.path.dirname(local_path), exist_ok=True)
    tmp = _local_tmp(local_path)
    try:
      self._call('download', url, [url, tmp])
      os.replace(tmp, local_path)
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)

  def write_bytes(self, url: str, data: bytes) -> None:
    """Writes a small file atomically (through a local temporary file)."""
    base = os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'storage-tmp')
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, uuid.uuid4().hex)
    try:
      with open(tmp, 'wb') as f:
        f.write(data)
      self.upload(tmp, url)
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)

  def read_bytes(self, url: str) -> bytes:
    if not is_remote(url):
      try:
        with open(url, 'rb') as f:
          return f.read()
      except FileNotFoundError as e:
        raise NotFound(f'read: {url} does not exist.') from e
    base = os.path.join(os.path.expanduser('~'), '.cache', 'habc', 'storage-tmp')
    tmp = os.path.join(base, uuid.uuid4().hex)
    try:
      self.download(url, tmp)
      with open(tmp, 'rb') as f:
        return f.read()
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)

  def remove(self, url: str) -> None:
    self._call('remove', url, [url])

  def rmtree(self, url: str) -> None:
    self._call('rmtree', url, [url])

  def probe(self, url: str) -> None:
    """Writes, reads back and removes a small file under ``url`` (creating it).

    Raises:
      StorageError: which step failed, with the URL and tf.io.gfile's reason.
    """
    name = join(url, f'.habc_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}')
    data = b'habc storage probe'
    try:
      self.makedirs(url)
      self.write_bytes(name, data)
    except HelperError:
      raise
    except StorageError as e:
      raise StorageError(f'{url} is not writable: {e}') from e
    try:
      if self.read_bytes(name) != data:
        raise StorageError(f'{url}: a probe file read back different bytes than were written.')
    finally:
      with contextlib.suppress(StorageError):
        self.remove(name)

  # Test hooks ...................................................................................
  def _helper_request(self, op: str, args: list, timeout_s: float | None = None):
    """Sends a raw request to the helper (tests: 'exit', 'sleep')."""
    return self._call(op, 'file:///', args, timeout_s)


def bench(url: str, repeats: int = 50) -> dict:
  """Seconds: helper start (TensorFlow import) and one exists() / small upload through it."""
  with Storage() as s:
    start = time.perf_counter()
    s.exists(url)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
      s.exists(url)
    exists = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for i in range(repeats):
      s.write_bytes(join(url, f'bench_{i}'), b'x' * 1024)
    upload = (time.perf_counter() - start) / repeats
    for i in range(repeats):
      s.remove(join(url, f'bench_{i}'))
  return {'start_and_first_op_s': first, 'exists_s': exists, 'upload_1kb_s': upload}


def _main(argv: list[str]) -> int:
  if argv[:1] == ['--serve']:
    serve()
    return 0
  if len(argv) == 2 and argv[0] in ('--check', '--bench'):
    if argv[0] == '--bench':
      print(json.dumps(bench(argv[1])))
      return 0
    with Storage() as s:
      s.probe(argv[1])
    print(f'{argv[1]}: reachable and writable')
    return 0
  print('usage: python -m habc.storage --check <url> | --bench <url> | --serve', file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(_main(sys.argv[1:]))
