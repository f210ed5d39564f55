"""What the command line tells its user besides results: usage errors, the ways a run can end
early (divergence, a write error, a signal) with their exit statuses, and progress notes.

Exit statuses (``docs/cli.md``, "Reliability"):

* ``0``: done (``compare``: the comparison is written, even where a loss diverged);
* ``1``: an unexpected error (a bug: a traceback);
* ``2``: a usage error (:class:`CLIError`, argparse's format);
* ``3``: the training loss became non-finite (:class:`Diverged`);
* ``4``: a file of the run could not be written (:class:`WriteFailed`: disk full, quota, read-only
  file system, permission);
* ``75``: a worker process holding a label shard stopped (:class:`WorkerLost`, ``--label-shards``
  over ``TF_CONFIG``'s workers: restart the workers, then the same command with ``--resume``);
* ``128 + N``: stopped by signal ``N`` after a checkpoint (:class:`Interrupted`; 143 for SIGTERM,
  130 for SIGINT).
"""

from __future__ import annotations

import errno as _errno
import sys

__all__ = ["CLIError", "RunEnded", "Diverged", "WriteFailed", "Interrupted", "WorkerLost", "EXIT_USAGE",
           "EXIT_DIVERGED", "EXIT_WRITE_ERROR", "EXIT_WORKER_LOST", "log"]

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_WRITE_ERROR = 4
EXIT_WORKER_LOST = 75  # EX_TEMPFAIL, as fusedfocal.distributed's: resumable once the workers are back


class CLIError(Exception):
    """A usage error: printed argparse-style, exit status 2.

    Args:
      argument: The flag or positional it is about (``--loss``, ``RUN_DIR``).
      message: What was expected and what was received.
    """

    def __init__(self, argument, message):
        super().__init__(f"argument {argument}: {message}")
        self.argument = argument


class RunEnded(Exception):
    """A run that ended early and cleanly: ``main`` prints :attr:`message` (no traceback) and
    returns :attr:`exit_code`."""

    exit_code = 1

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Diverged(RunEnded):
    """The training loss (or the weights) became non-finite. ``info``: what ``diverged.json`` holds."""

    exit_code = EXIT_DIVERGED

    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = dict(info or {})


class WriteFailed(RunEnded):
    """A file of the run could not be written (``OSError`` at a write site, or not enough free space)."""

    exit_code = EXIT_WRITE_ERROR

    def __init__(self, operation, path, err, hint=""):
        code = _errno.errorcode.get(getattr(err, "errno", None) or 0, "")
        reason = getattr(err, "strerror", None) or str(err)
        super().__init__(f"could not write {operation} ({path}): {reason}" + (f" [{code}]" if code else "")
                         + (f". {hint}" if hint else ""))
        self.operation, self.path, self.errno = operation, str(path), getattr(err, "errno", None)


class Interrupted(RunEnded):
    """Stopped by a signal after writing a checkpoint: exit status ``128 + signum``."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class WorkerLost(RunEnded):
    """A worker process holding a label shard stopped (or never answered): the message names it
    (index and address) and says how to resume; exit status 75."""

    exit_code = EXIT_WORKER_LOST


# errno values that mean "this file system will not take the file" (a clear message, exit 4)
WRITE_ERRNOS = {e for e in (getattr(_errno, n, None) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM",
                                                                 "EIO", "EFBIG")) if e is not None}


def log(*parts):
    """A progress note or warning on stderr (stdout carries the results)."""
    print(*parts, file=sys.stderr, flush=True)
