"""Helpers of the CLI tests: fast flags, in-process and subprocess runs of the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Tiny but long-tailed: 240 training documents (48 held out -> 192 = 12 batches of 16), 6 labels.
TRAIN_DOCS, TEST_DOCS, BATCH = 240, 60, 16
FAST = ["--epochs", "2", "--batch-size", str(BATCH), "--max-length", "32", "--vocab-size", "300",
        "--val-size", "48", "--filters", "16", "--embed-dim", "16", "--verbose", "0"]


def cli(*argv):
    """Runs ``fusedfocal`` in-process; returns the exit status (0 or the SystemExit code)."""
    from fusedfocal.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def cli_subprocess(*argv, env=None, timeout=240, **kw):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fusedfocal", *map(str, argv)], env=full_env, timeout=timeout,
                          capture_output=True, text=True, **kw)


def final_files(run):
    """What a finished run folder must hold identically to an uninterrupted run: metrics.json,
    epochs.jsonl, thresholds.json and the vocabularies (wall-clock seconds left out)."""
    m = json.loads((run / "metrics.json").read_text())
    m.pop("train_seconds")
    for e in m["epochs"]:
        e.pop("seconds")
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    for e in epochs:
        e.pop("seconds")
    return {"metrics": m, "thresholds": (run / "thresholds.json").read_text(), "epochs": epochs,
            "vocab": (run / "wordpiece_vocab.txt").read_text() + (run / "label_vocab.json").read_text()}
