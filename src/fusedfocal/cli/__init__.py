"""The ``fusedfocal`` command line: train, compare, evaluate, predict, profile, info.

Run ``fusedfocal -h`` or ``fusedfocal COMMAND -h``; see ``docs/cli.md``.
The command starts quietly: TensorFlow's C++ start-up lines are hidden unless
``TF_CPP_MIN_LOG_LEVEL`` is set (see :mod:`fusedfocal._version`).
``FUSEDFOCAL_LOGICAL_CPUS=N`` splits the CPU into N logical devices (for
``--strategy mirrored`` on a machine without GPUs) before TensorFlow
initialises its devices.
"""

from __future__ import annotations

import contextlib
import os
import sys

from fusedfocal.cli.errors import WRITE_ERRNOS, CLIError, RunEnded, WriteFailed
from fusedfocal.cli.parser import build_parser

__all__ = ["main", "build_parser", "CLIError"]

LOGICAL_CPUS_ENV = "FUSEDFOCAL_LOGICAL_CPUS"


def _configure_logical_cpus():
    n = os.environ.get(LOGICAL_CPUS_ENV)
    if not n:
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])


def main(argv=None):
    """Entry point of the ``fusedfocal`` console script; returns the exit status.

    TensorFlow's C++ log level is chosen before TensorFlow loads, by
    :mod:`fusedfocal._version` (``import fusedfocal.cli`` has imported
    TensorFlow by the time this runs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    sub = subs[args.command]
    with _restored_runtime_state():
        return _dispatch(args, argv, sub)


@contextlib.contextmanager
def _restored_runtime_state():
    """Undo what a run sets process-wide (op determinism, the mixed-precision
    policy), so that ``main(argv)`` called in-process leaves its caller as it was."""
    import keras
    from tensorflow.python.framework import config as tf_config

    determinism = tf_config.is_op_determinism_enabled()
    policy = keras.mixed_precision.global_policy()
    try:
        yield
    finally:
        if not determinism and tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()
        keras.mixed_precision.set_global_policy(policy)


def _dispatch(args, argv, sub):
    command = args.command
    try:
        _configure_logical_cpus()
        if command in ("train", "compare"):
            from fusedfocal.cli import resolve
            from fusedfocal.cli.commands.train import serve_label_shard

            served = serve_label_shard(args, command)  # a worker holding a label shard: serves, no run
            if served is not None:
                return served
            given, stored = resolve.given_flags(sub, argv[1:]), frozenset()
            if args.resume:  # the stored spec becomes the defaults; flags given now override it
                args, stored = resolve.resumed(sub, argv[1:], args)
            if command == "train":
                from fusedfocal.cli.commands import train

                train.cmd_train(args, given=given, stored=stored - given)
            else:
                from fusedfocal.cli.commands import compare

                compare.cmd_compare(args, given=given, stored=stored - given)
        elif command == "evaluate":
            from fusedfocal.cli.commands import evaluate

            evaluate.cmd_evaluate(args)
        elif command == "info":
            from fusedfocal.cli.commands import info

            return info.cmd_info(args)
        elif command == "profile":
            from fusedfocal.cli.commands import profile

            profile.cmd_profile(args)
        else:
            from fusedfocal.cli.commands import predict

            predict.cmd_predict(args)
    except CLIError as e:
        sub.error(str(e))  # exits 2
    except RunEnded as e:  # diverged (3), a write error (4), a signal (128 + N): a message, no traceback
        print(f"fusedfocal {command}: {e.message}", file=sys.stderr, flush=True)
        return e.exit_code
    except OSError as e:  # a write error at a site without its own message
        if e.errno not in WRITE_ERRNOS:
            raise
        w = WriteFailed("a file", e.filename or "?", e)
        print(f"fusedfocal {command}: {w.message}", file=sys.stderr, flush=True)
        return w.exit_code
    return 0
