"""Run folders never lose work (issue 12): the lock, no silent overwrite, a kill at every stage
then --resume (every epoch logged once, the same final files), deterministic resume equal to an
uninterrupted run, and compare --resume.

Faults come from the FUSEDFOCAL_FAULT hook (fusedfocal.cli.store.rundir.fault): in-process with
FUSEDFOCAL_FAULT_ACTION=raise (fast), and as a real SIGKILL of a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from clitools import FAST, cli, cli_subprocess, final_files

from fusedfocal.cli.store import rundir, safe
from fusedfocal.cli.store.rundir import InjectedFault

pytestmark = pytest.mark.slow

EPOCHS = 2
FLAGS = [a for a in FAST]
FLAGS[FLAGS.index("--epochs") + 1] = str(EPOCHS)
FLAGS += ["--loss", "bce", "--deterministic", "--seed", "4"]  # dropout 0.2 stays on: its RNG state must resume


def _train(tiny_data, out, *extra):
    return cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, *FLAGS, *extra)


def _no_prepare(*args, **kwargs):
    raise AssertionError("the data was prepared before the run folder was checked")


def _faulted(monkeypatch, point, fn):
    """Runs ``fn`` with the fault ``point`` armed (raise mode); asserts the fault fired."""
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, point)
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    with pytest.raises(InjectedFault):
        fn()
    monkeypatch.delenv(rundir.FAULT_ENV)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _train(tiny_data, out) == 0
    return final_files(out)


def _check_complete(run, reference):
    got = final_files(run)
    assert [e["epoch"] for e in got["epochs"]] == list(range(1, EPOCHS + 1))  # each epoch exactly once
    assert [e["epoch"] for e in got["metrics"]["epochs"]] == list(range(1, EPOCHS + 1))
    assert len(got["metrics"]["history"]["loss"]) == EPOCHS
    assert got == reference  # same numbers: weights, data order, dropout RNG, thresholds, metrics
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]  # no temp file left behind


# during an epoch; after a checkpoint, before its log line; between the last epoch and the final
# files; during the final files (after each of them)
STAGES = ["epoch-2-batch-5", "checkpoint-2", "before-final", "after-model", "after-thresholds", "after-metrics"]


@pytest.mark.parametrize("point", STAGES)
def test_fault_at_every_stage_then_resume_equals_uninterrupted(point, tiny_data, tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    _faulted(monkeypatch, point, lambda: _train(tiny_data, run))
    assert (run / "backup").is_dir()  # the checkpoint survives until the final files are all written
    assert cli("train", "--out", run, "--resume") == 0
    _check_complete(run, reference)


def test_damaged_last_checkpoint_falls_back_and_logs_each_epoch_once(tiny_data, tmp_path, monkeypatch, reference,
                                                                     capsys):
    run = tmp_path / "run"
    _faulted(monkeypatch, "before-final", lambda: _train(tiny_data, run))
    latest = run / "backup" / f"epoch-{EPOCHS:04d}" / "model.weights.h5"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    capsys.readouterr()
    assert cli("train", "--out", run, "--resume") == 0
    err = capsys.readouterr().err
    assert "unreadable" in err and f"after epoch {EPOCHS - 1} of {EPOCHS}" in err
    _check_complete(run, reference)


@pytest.mark.parametrize("point", ["after-thresholds"])
def test_sigkill_then_resume_in_a_new_process(point, tiny_data, tmp_path, reference):
    """A real kill -9 during the final files, resumed by a fresh process (test_resume_cli.py kills
    one at a random moment of training)."""
    run = tmp_path / "run"
    r = cli_subprocess("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *FLAGS,
                       env={rundir.FAULT_ENV: point})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert json.loads((run / ".lock").read_text())["pid"] > 0  # the dead holder is still named in the lock
    r = cli_subprocess("train", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "took over the lock left by process" in r.stderr
    _check_complete(run, reference)


def test_lock_refuses_a_second_run_and_names_the_holder(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid()}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _train(tiny_data, run) == 2
        err = capsys.readouterr().err
        assert "argument --out:" in err and str(run) in err and f"locked by process {holder.pid}" in err
        assert not (run / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: its lock is stale and taken over.
    assert _train(tiny_data, run, "--epochs", "1") == 0
    assert f"took over the lock left by process {holder.pid}" in capsys.readouterr().err


def test_finished_or_started_run_is_never_replaced_without_overwrite(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(tiny_data, run, "--epochs", "1") == 0
    before = (run / "metrics.json").read_bytes()
    capsys.readouterr()
    assert _train(tiny_data, run, "--epochs", "1", "--loss", "focal") == 2
    err = capsys.readouterr().err
    assert "argument --out:" in err and "holds a finished run" in err and "--overwrite" in err and "--resume" in err
    assert (run / "metrics.json").read_bytes() == before
    with monkeypatch.context() as m:  # refused before the data is read and tokenized, not minutes later
        m.setattr("fusedfocal.cli.resolve.prepare", _no_prepare)
        assert _train(tiny_data, run, "--epochs", "1", "--loss", "focal") == 2
        assert "holds a finished run" in capsys.readouterr().err
    assert cli("train", "--out", run, "--resume") == 0 and "already finished" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == before
    # A started run (killed during its first epoch) is refused too.
    started = tmp_path / "started"
    _faulted(monkeypatch, "epoch-1-batch-2", lambda: _train(tiny_data, started))
    assert _train(tiny_data, started) == 2
    assert "holds a started run" in capsys.readouterr().err
    # --overwrite replaces it.
    assert _train(tiny_data, run, "--epochs", "1", "--loss", "focal", "--overwrite") == 0
    assert json.loads((run / "metrics.json").read_text())["loss"] == "focal"


def test_compare_resume_skips_finished_losses(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", tiny_data["train"], "--out", out, "--losses", "bce,focal", *FAST]
    _faulted(monkeypatch, "epoch-2-batch-2#2", lambda: cli(*argv))  # dies in the second loss's 2nd epoch
    bce = out / "runs" / "bce" / "metrics.json"
    kept = bce.read_bytes()
    assert not (out / "comparison.json").exists()
    assert cli(*argv) == 2 and "holds a started run" in capsys.readouterr().err  # not continued silently
    with monkeypatch.context() as m:  # and refused before any data preparation
        m.setattr("fusedfocal.cli.resolve.prepare", _no_prepare)
        assert cli(*argv) == 2 and "holds a started run" in capsys.readouterr().err
    assert cli("compare", "--out", out, "--resume") == 0
    err = capsys.readouterr().err
    assert "finished already" in err and "Resuming" in err
    assert bce.read_bytes() == kept  # the finished loss was not retrained
    c = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in c["results"]] == ["bce", "focal"]
    assert [e["epoch"] for e in c["results"][1]["epochs"]] == [1, 2]
    assert (out / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert os.path.getsize(out / "comparison.md") > 200
