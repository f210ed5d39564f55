"""Where the shared Reuters-21578 data lives (it is never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["reuters_dir", "REUTERS_ENV"]

#: The environment variable that names the Reuters-21578 directory (see :func:`reuters_dir`).
REUTERS_ENV = "FUSEDFOCAL_REUTERS_DIR"


def reuters_dir() -> Path | None:
    """Returns the Reuters-21578 (ApteMod) directory, or ``None`` if absent.

    Looks, in order, at ``$FUSEDFOCAL_REUTERS_DIR``, then ``../shared/data/reuters21578``
    next to the repository checkout, then next to the working directory. A
    directory counts only if it holds ``train.jsonl.gz`` and ``test.jsonl.gz``.

    Returns:
      The directory, or ``None``.
    """
    candidates = []
    env = os.environ.get(REUTERS_ENV)
    if env:
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "reuters21578")
    candidates.append(Path.cwd() / ".." / "shared" / "data" / "reuters21578")
    for d in candidates:
        if (d / "train.jsonl.gz").is_file() and (d / "test.jsonl.gz").is_file():
            return d.resolve()
    return None
