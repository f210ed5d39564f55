"""What the command line tells its user besides results: usage errors and progress notes."""

from __future__ import annotations

import sys

__all__ = ["CLIError", "log"]


class CLIError(Exception):
    """A usage error: printed argparse-style, exit status 2.

    Args:
      argument: The flag or positional it is about (``--loss``, ``RUN_DIR``).
      message: What was expected and what was received.
    """

    def __init__(self, argument, message):
        super().__init__(f"argument {argument}: {message}")
        self.argument = argument


def log(*parts):
    """A progress note or warning on stderr (stdout carries the results)."""
    print(*parts, file=sys.stderr, flush=True)
