"""Run folders that never lose work: the lock, the overwrite guard, atomic writes, checkpoints.

* :class:`RunLock`: an exclusive ``flock`` on ``RUN/.lock`` for the life of a run. A second run
  gets a CLI error naming the folder and the holder's process id. The kernel drops the lock when
  its holder dies (``kill -9`` included), so a lock left by a killed process is taken over, with
  a note naming the dead holder.
* :func:`guard`: a folder that holds a started or finished run is never replaced without
  ``--overwrite``, nor continued without ``--resume``.
* :func:`atomic_path` / :func:`write_text`: temp file in the same folder, ``fsync``, rename.
* :class:`Checkpoints`: after every epoch, ``backup/epoch-NNNN/`` (weights and optimizer state,
  the dropout seed-generator states, and the epoch log so far) is written under a temporary name
  and renamed into place; the previous one is kept as a fallback for a damaged latest. The
  epoch log (``epochs.jsonl``) is rewritten from the checkpoint it belongs to, so every epoch is
  logged exactly once whatever moment a run was killed at.
* :func:`fault`: the fault-injection hook of the tests (``FUSEDFOCAL_FAULT=POINT``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from fusedfocal.cli.errors import CLIError

__all__ = ["RunLock", "guard", "atomic_path", "write_text", "Checkpoints", "fault", "LOCK_FILE", "BACKUP_DIR"]

LOCK_FILE = ".lock"
BACKUP_DIR = "backup"
FAULT_ENV = "FUSEDFOCAL_FAULT"
FAULT_ACTION_ENV = "FUSEDFOCAL_FAULT_ACTION"


_FAULT_HITS: dict = {}


class InjectedFault(BaseException):
    """Raised at a fault point with ``FUSEDFOCAL_FAULT_ACTION=raise`` (in-process tests); a
    ``BaseException`` so that nothing on the way catches it."""


def fault(point):
    """Dies at ``point`` when ``FUSEDFOCAL_FAULT`` names it: ``SIGKILL`` of this process (the
    default), or :class:`InjectedFault` with ``FUSEDFOCAL_FAULT_ACTION=raise``. Points:
    ``epoch-N-batch-B`` (inside epoch N after batch B, 1-based), ``checkpoint-N`` (epoch N's
    checkpoint written, its log line not yet), ``before-final`` (last epoch done, no final file
    written), ``after-model`` / ``after-thresholds`` / ``after-metrics`` (that final file
    written, the checkpoint not yet removed). ``POINT#K`` dies the K-th time this process reaches
    it (e.g. in the second loss of a comparison)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.partition("#")[0] != point:
        return
    _FAULT_HITS[point] = _FAULT_HITS.get(point, 0) + 1
    if _FAULT_HITS[point] != int(spec.partition("#")[2] or 1):
        return
    if os.environ.get(FAULT_ACTION_ENV) == "raise":
        raise InjectedFault(point)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


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


# ----------------------------------------------------------------------------- checkpoints
def _seed_variables(model):
    """Keras seed-generator states (dropout): not in ``save_weights``, but part of the RNG state."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


class Checkpoints:
    """``backup/epoch-NNNN/{model.weights.h5, state.json}`` written atomically after every epoch."""

    KEEP = 2

    def __init__(self, work_dir):
        self.dir = Path(work_dir) / BACKUP_DIR

    def _epoch_dirs(self):
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit():
                out.append((int(p.name[6:]), p))
        return sorted(out, reverse=True)

    def save(self, model, epoch, records):
        import numpy as np

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"epoch-{epoch:04d}"
        tmp = self.dir / f".epoch-{epoch:04d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_weights(tmp / "model.weights.h5")
        state = {"epoch": epoch, "records": records,
                 "seed_generators": [np.asarray(v.numpy()).tolist() for v in _seed_variables(model)]}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        for _, old in self._epoch_dirs()[self.KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, model, log=print):
        """Loads the newest readable checkpoint into ``model``; ``(epoch, records)``, ``(0, [])`` if none."""
        import numpy as np

        for epoch, d in self._epoch_dirs():
            try:
                state = json.loads((d / "state.json").read_text(encoding="utf-8"))
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(d / "model.weights.h5")
            except Exception as e:  # a damaged file: fall back to the previous checkpoint
                log(f"checkpoint {d} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                    "falling back to the previous one")
                continue
            seeds = state.get("seed_generators", [])
            for v, value in zip(_seed_variables(model), seeds):
                v.assign(np.asarray(value, dtype=v.dtype))
            return int(state["epoch"]), list(state["records"])
        return 0, []

    def exists(self):
        return bool(self._epoch_dirs())

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def write_epoch_log(path, records):
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def epoch_callback(checkpoints, log_path, records, model_ref=None):
    """A Keras callback: after each epoch, its log record, then the checkpoint (with every record so
    far), then ``epochs.jsonl`` rewritten from those records. Also the in-epoch fault points."""
    import keras

    class _RunCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.time()
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            fault(f"epoch-{self._epoch}-batch-{batch + 1}")

        def on_epoch_end(self, epoch, logs=None):
            rec = {"epoch": epoch + 1, "seconds": round(time.time() - self._t0, 3)}
            rec.update({k: float(v) for k, v in (logs or {}).items()})
            records.append(rec)
            checkpoints.save(self.model, epoch + 1, records)
            fault(f"checkpoint-{epoch + 1}")
            write_epoch_log(log_path, records)

    return _RunCheckpoint()
