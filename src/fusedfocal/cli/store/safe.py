"""Writes that never lose work: atomic files, strict JSON, write errors, the folder lock and
overwrite guard, and the tests' fault-injection hook (``FUSEDFOCAL_FAULT=POINT``).

See :mod:`fusedfocal.cli.store.rundir` for what a run folder holds; it re-exports these names.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from fusedfocal.cli.errors import CLIError, WriteFailed


LOCK_FILE = ".lock"
FAULT_ENV = "FUSEDFOCAL_FAULT"
FAULT_ACTION_ENV = "FUSEDFOCAL_FAULT_ACTION"
FAULT_ERRNO_ENV = "FUSEDFOCAL_FAULT_ERRNO"
SKIP_SPACE_CHECK_ENV = "FUSEDFOCAL_SKIP_SPACE_CHECK"


_FAULT_HITS: dict = {}


class InjectedFault(BaseException):
    """Raised at a fault point with ``FUSEDFOCAL_FAULT_ACTION=raise`` (in-process tests); a
    ``BaseException`` so that nothing on the way catches it."""


def armed(point):
    """Whether ``FUSEDFOCAL_FAULT`` names ``point`` and this is its K-th hit (``POINT#K``, default 1)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.partition("#")[0] != point:
        return False
    _FAULT_HITS[point] = _FAULT_HITS.get(point, 0) + 1
    return _FAULT_HITS[point] == int(spec.partition("#")[2] or 1)


def fault(point):
    """Dies at ``point`` when ``FUSEDFOCAL_FAULT`` names it: ``SIGKILL`` of this process (the
    default), or :class:`InjectedFault` with ``FUSEDFOCAL_FAULT_ACTION=raise``, or a SIGTERM (SIGINT)
    of this process with ``FUSEDFOCAL_FAULT_ACTION=sigterm`` (``sigint``; ``sigterm-twice``: two). Points:
    ``epoch-N-batch-B`` (inside epoch N after batch B, 1-based), ``checkpoint-N`` (epoch N's
    checkpoint written, its log line not yet), ``before-final`` (last epoch done, no final file
    written), ``after-model`` / ``after-thresholds`` / ``after-metrics`` (that final file
    written, the checkpoint not yet removed). ``POINT#K`` dies the K-th time this process reaches
    it (e.g. in the second loss of a comparison). Other kinds of points: ``write-...`` (an
    ``OSError``, :func:`writing`) and ``nan-epoch-N-batch-B`` (:mod:`fusedfocal.cli.stages.stops`)."""
    if not armed(point):
        return
    action = os.environ.get(FAULT_ACTION_ENV)
    if action == "raise":
        raise InjectedFault(point)
    if action in ("sigterm", "sigint", "sigterm-twice"):  # a real signal, handled as a scheduler's would be
        signum = signal.SIGINT if action == "sigint" else signal.SIGTERM
        for _ in range(2 if action == "sigterm-twice" else 1):
            os.kill(os.getpid(), signum)
        return
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- strict JSON, write errors
def strict(obj):
    """``obj`` with every non-finite float (NaN, +-Infinity) replaced by ``None`` (JSON ``null``), NumPy
    scalars and arrays as Python numbers and lists, paths as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # NumPy scalars and arrays
        return strict(obj.tolist())
    return obj


def dumps(obj, *, indent=None):
    """Strict JSON (RFC 8259): what every JSON file of a run is written with. A non-finite number is
    written as ``null``, which in a number field means "not a finite number" (a diverged loss)."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path, payload, *, operation=None, point=None):
    """``payload`` as strict JSON (``indent=1``) in ``path``, atomically (see :func:`writing`)."""
    path = Path(path)
    with writing(operation or path.name, path, point or f"write-{path.stem}"):
        write_text(path, dumps(payload, indent=1) + "\n")
    return path


@contextlib.contextmanager
def writing(operation, path, point=None, hint=""):
    """A write site: an ``OSError`` inside becomes :class:`WriteFailed` naming ``operation`` and
    ``path`` (exit status 4). ``point``: the fault point (``FUSEDFOCAL_FAULT=write-...``) that raises
    ``OSError(FUSEDFOCAL_FAULT_ERRNO, default ENOSPC)`` here, as a full disk would."""
    try:
        if point and armed(point):
            code = getattr(errno, os.environ.get(FAULT_ERRNO_ENV, "ENOSPC"))
            raise OSError(code, os.strerror(code), str(path))
        yield
    except OSError as e:
        raise WriteFailed(operation, getattr(e, "filename", None) or path, e, hint) from e


def check_space(directory, needed, operation):
    """Refuses (:class:`WriteFailed`, ENOSPC) a write of about ``needed`` bytes into ``directory``
    when the file system has less free space than that (``shutil.disk_usage``: one ``statvfs``)."""
    if os.environ.get(SKIP_SPACE_CHECK_ENV):  # tests: let the write itself hit the full disk
        return
    directory = Path(directory)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < needed:
        raise WriteFailed(operation, directory, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                          f"It needs about {_mib(needed)}; {_mib(free)} is free")


def _mib(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path`` (same suffix, so writers that check it accept it);
    on success it is renamed over ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink() if tmp.is_file() else shutil.rmtree(tmp, ignore_errors=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync(path):
    if Path(path).is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- lock and guard
def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock of a run folder (``with RunLock(path, "--out"):``); see the module doc."""

    def __init__(self, path, flag="--out"):
        self.path, self.flag, self._fd = Path(path), flag, None

    def __enter__(self):
        import fcntl

        check_folder(self.path, self.flag)
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CLIError(self.flag, f"could not lock the run folder {str(self.path)!r}: {e}")
            who = f"process {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")
            since = f" since {holder['started']}" if holder.get("started") else ""
            raise CLIError(self.flag, (
                f"expected a run folder that no other run is using; received {str(self.path)!r}, which is "
                f"locked by {who}{since} ({lock}). Wait for that run to finish, or choose another --out"))
        stale = _read_holder(fd)
        if stale.get("pid") and stale.get("pid") != os.getpid():
            alive = "no longer running" if not _pid_alive(int(stale["pid"])) else "no longer holding it"
            print(f"{self.path}: took over the lock left by process {stale['pid']} ({alive}: killed or crashed).",
                  file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        import fcntl

        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False


def _read_holder(fd):
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}


def check_folder(path, flag="--out"):
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(flag, f"expected a run folder (a directory, new or existing); received {str(path)!r}, "
                             "which is a file")


def precheck(path, markers, *, resume, overwrite, flag="--out", finished=None):
    """:func:`guard`'s refusal, early and read-only: a folder that would be refused is refused
    before minutes of data preparation, not after. :func:`guard` checks again under the lock."""
    check_folder(path, flag)
    if not overwrite:
        guard(path, markers, resume=resume, overwrite=False, flag=flag, finished=finished)


def guard(path, markers, *, resume, overwrite, flag="--out", finished=None):
    """Refuses to replace a started or finished run without ``--overwrite`` (and removes its
    ``markers`` with it). Call while holding the folder's :class:`RunLock`."""
    path = Path(path)
    check_folder(path, flag)
    present = [m for m in markers if (path / m).exists()]
    if resume or not present:
        return
    state = "a finished" if finished and (path / finished).exists() else "a started"
    if not overwrite:
        raise CLIError(flag, (
            f"expected a new or empty run folder; received {str(path)!r}, which holds {state} run "
            f"({', '.join(present)}). Pass --resume to continue it, --overwrite to replace it, or another --out"))
    for m in present:
        p = path / m
        shutil.rmtree(p) if p.is_dir() else p.unlink()

