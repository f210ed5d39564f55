"""Disk full and other write errors (issue 21): at every write site of a run, one message naming the
operation and the path, exit status 4, no traceback, the previous checkpoint intact, and --resume
finishing the run (with --deterministic, as an uninterrupted run) once space is freed.

The fault points ``write-...`` raise the OSError a full disk (FUSEDFOCAL_FAULT_ERRNO: quota,
read-only file system, permission) raises there; a real 3 MiB tmpfs, filled up, checks the free-space
check and, with it switched off, a write that really fails (h5py used to crash with SIGSEGV there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
from clitools import FAST, cli, cli_subprocess, final_files

from fusedfocal.cli.store import rundir, safe

pytestmark = pytest.mark.slow

FLAGS = FAST + ["--loss", "bce", "--deterministic", "--seed", "4"]


def _train(tiny_data, out, *extra):
    return cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, *FLAGS, *extra)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _train(tiny_data, out) == 0
    return final_files(out)


# (fault point, operation named in the message, newest checkpoint left)
SITES = [
    ("write-config", "config.json", None),
    ("write-best-1", "the best weights of epoch 1", None),
    ("write-checkpoint-2", "the checkpoint of epoch 2", "epoch-0001"),
    ("write-epochs#2", "the epoch log", "epoch-0002"),
    ("write-model", "the model", "epoch-0002"),
    ("write-metrics", "metrics.json", "epoch-0002"),
]


@pytest.mark.parametrize("point, operation, newest", SITES)
def test_write_error_at_each_site_then_resume(point, operation, newest, tiny_data, tmp_path, monkeypatch, capsys,
                                              reference):
    run = tmp_path / "run"
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, point)
    assert _train(tiny_data, run) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err
    msg = [line for line in err.splitlines() if line.startswith("fusedfocal train:")]
    assert len(msg) == 1 and f"could not write {operation} ({run}" in msg[0] and "[ENOSPC]" in msg[0]
    if point == "write-config":  # nothing to resume: the same command again, with --overwrite
        assert "start the run again: the same command with --overwrite" in msg[0]
    else:
        assert f"fusedfocal train --resume --out {run}" in msg[0]
    if newest:  # the previous checkpoint is intact and named
        ckpt = run / "backup" / newest
        assert f"The newest checkpoint, {ckpt}, is intact" in msg[0]
        state = json.loads((ckpt / "state.json").read_text())
        assert state["epoch"] == int(newest[-4:]) and (ckpt / "model.weights.h5").stat().st_size > 1000
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]  # a failed write leaves no temp file
    monkeypatch.delenv(rundir.FAULT_ENV)
    if point == "write-config":
        assert _train(tiny_data, run, "--overwrite") == 0
    else:
        assert cli("train", "--out", run, "--resume") == 0
    assert final_files(run) == reference and not (run / "backup").exists()


@pytest.mark.parametrize("name", ["EDQUOT", "EROFS", "EACCES"])
def test_other_write_errors_name_their_cause(name, tiny_data, tmp_path, monkeypatch, capsys):
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, "write-checkpoint-1")
    monkeypatch.setenv(rundir.FAULT_ERRNO_ENV, name)
    assert _train(tiny_data, tmp_path / "run", "--epochs", "1") == 4
    err = capsys.readouterr().err
    assert f"[{name}]" in err and "could not write the checkpoint of epoch 1" in err and "Traceback" not in err
    assert "No checkpoint was written yet" in err


def _small_tmpfs(path):
    """A 3 MiB tmpfs at ``path``; ``None`` where mounting is not allowed (not root, a container)."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return None
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", f"fusedfocal-test-{uuid.uuid4().hex[:8]}",
                        str(path)], capture_output=True, text=True)
    return path if r.returncode == 0 else None


def _fill(mount, leave_kib):
    free = shutil.disk_usage(mount).free
    with open(mount / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_kib * 1024, 0))


@pytest.mark.parametrize("space_check", ["on", "off"])
def test_real_full_disk_exits_4_then_resumes(space_check, tiny_data, tmp_path, reference):
    mount = _small_tmpfs(tmp_path / "fs")
    if mount is None:
        pytest.skip("cannot mount a 3 MiB tmpfs here (needs root and mount permission); the write-... "
                    "fault points cover the same code paths")
    try:
        # room for the vocabularies, config, logs, epoch 1's best weights and checkpoint (about 110 KiB
        # each), not for epoch 2's
        _fill(mount, 330)
        run = mount / "run"
        env = {rundir.SKIP_SPACE_CHECK_ENV: "1"} if space_check == "off" else {}
        r = cli_subprocess("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *FLAGS,
                           env=env)
        assert r.returncode == 4, r.stderr[-3000:]  # not 139 (SIGSEGV in h5py), not 1 (a traceback)
        assert "Traceback" not in r.stderr and "No space left on device [ENOSPC]" in r.stderr
        if space_check == "on":
            assert "It needs about" in r.stderr  # refused before writing, with the size it needs
        assert (run / "backup" / "epoch-0001" / "state.json").is_file()
        (mount / "filler").unlink()
        r = cli_subprocess("train", "--out", run, "--resume")
        assert r.returncode == 0, r.stderr[-3000:]
        assert final_files(run) == reference
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
