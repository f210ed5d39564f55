"""The package version, and the ``fusedfocal`` command's quiet start.

``import fusedfocal`` runs this module before anything imports TensorFlow, so
it is the one place where the command line (the ``fusedfocal`` console script
and ``python -m fusedfocal``, both of which import the package first) can
choose TensorFlow's C++ log level in time. Imported as a library, in any other
process, it does nothing.

In the command's process, unless the user set ``TF_CPP_MIN_LOG_LEVEL``:

* ``TF_CPP_MIN_LOG_LEVEL=3`` before TensorFlow loads: no INFO/WARNING/ERROR
  lines from its C++ runtime (cpu_feature_guard, oneDNN's notice, "failed
  call to cuInit" on a machine without a GPU);
* while ``import tensorflow`` runs, file descriptor 2 goes to a temporary
  file, and what was written there is passed on to stderr afterwards less
  the lines that TensorFlow 2.21 logs before that level applies (its two
  copies of absl each print "WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR" and, without CUDA
  libraries, "I0000 ... cudart_stub.cc:31] Could not find cuda drivers");
  every other line (Python warnings, a FATAL line) is passed on.

``TF_CPP_MIN_LOG_LEVEL`` set by the user, to any value, turns both off:
``TF_CPP_MIN_LOG_LEVEL=0 fusedfocal ...`` shows everything TensorFlow says.
``TF_ENABLE_ONEDNN_OPTS`` is never touched (it changes the numerics).
"""

import os
import re
import sys

__version__ = "0.1.0"

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"

# absl's line prefix (severity I/W/E, date, time, thread, file:line]) and its
# one-time notice; FATAL (F) lines are never dropped.
_NOISE = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] "
                    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$")


def started_as_command(argv0=None, orig_argv=None) -> bool:
    """Whether this process is the ``fusedfocal`` command: its console script,
    or ``python [options] -m fusedfocal``."""
    argv0 = (sys.argv[0] if sys.argv else "") if argv0 is None else argv0
    if os.path.basename(argv0) == "fusedfocal":
        return True
    args = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m":
            return args[i + 1:i + 2] == ["fusedfocal"]
        if a.startswith("-m"):
            return a[2:] == "fusedfocal"
        if a in ("-W", "-X"):  # interpreter options that take a value
            i += 2
            continue
        if a == "-c" or not a.startswith("-"):  # a command string or a script
            return False
        i += 1
    return False


def drop_start_noise(text: str) -> str:
    """``text`` less TensorFlow's pre-initialisation log lines (see the module docstring)."""
    return "".join(ln for ln in text.splitlines(keepends=True) if not _NOISE.match(ln))


def quiet_tensorflow_start() -> bool:
    """Raise TensorFlow's C++ log level and import it with its start-up lines
    filtered; returns False (and does nothing) when the user chose a level."""
    if LOG_LEVEL_ENV in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[LOG_LEVEL_ENV] = QUIET_LOG_LEVEL
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  (loads the C++ runtime, which logs)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = drop_start_noise(captured.read().decode("utf-8", "replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
    return True


if started_as_command():
    quiet_tensorflow_start()
