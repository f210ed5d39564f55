"""Kill a training run (SIGKILL) at a random moment after its first checkpoint and resume it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from clitools import FAST

pytestmark = pytest.mark.slow


def test_kill_and_resume(tiny_data, tmp_path):
    run = tmp_path / "run"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "6"
    flags += ["--patience", "0"]  # all 6 epochs: this test is about resuming, not early stopping
    argv = [sys.executable, "-m", "fusedfocal", "train", "--data", str(tiny_data["train"]), "--eval",
            str(tiny_data["test"]), "--out", str(run), "--loss", "bce", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    backup = run / "backup"

    def checkpoints():
        return sorted(backup.glob("epoch-*")) if backup.is_dir() else []
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not checkpoints():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    done = max(int(json.loads((c / "state.json").read_text())["epoch"]) for c in checkpoints())
    assert 1 <= done < 6
    r = subprocess.run([sys.executable, "-m", "fusedfocal", "train", "--out", str(run), "--resume"], env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    # Every epoch logged exactly once (the history covers the epochs before the kill too).
    assert len(m["history"]["loss"]) == 6
    assert [e["epoch"] for e in m["epochs"]] == list(range(1, 7))
    assert [json.loads(line)["epoch"] for line in (run / "epochs.jsonl").read_text().splitlines()] == list(range(1, 7))
    for name in ("model.keras", "thresholds.json", "metrics.json"):
        assert (run / name).exists()
    assert not (run / "backup").exists()
