"""SIGTERM and SIGINT (issue 21): the run finishes the batch in progress, writes a checkpoint after
it, says where it is and how to resume, and exits 128 + the signal number; --resume continues after
that batch and ends with the same epochs and metrics as an uninterrupted deterministic run. A second
signal kills the process at once and the checkpoints already written stay intact.

The signal is a real one (os.kill of the process by itself) sent at a chosen batch through the fault
hook (FUSEDFOCAL_FAULT=epoch-N-batch-B, FUSEDFOCAL_FAULT_ACTION=sigterm|sigint|sigterm-twice), so
the tests do not depend on timing."""

from __future__ import annotations

import json
import signal

import pytest
from clitools import FAST, cli, cli_subprocess, final_files

from fusedfocal.cli.store import rundir

pytestmark = pytest.mark.slow

FLAGS = FAST + ["--loss", "bce", "--deterministic", "--seed", "4"]  # dropout stays on: its RNG state resumes


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, *FLAGS) == 0
    return final_files(out)


def _signalled(tiny_data, run, point, action):
    return cli_subprocess("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *FLAGS,
                          env={rundir.FAULT_ENV: point, rundir.FAULT_ACTION_ENV: action})


# mid-epoch; after the last batch of an epoch (the epoch's own checkpoint, after its validation)
@pytest.mark.parametrize("point, where, name", [
    ("epoch-2-batch-5", "after batch 5 of epoch 2", "epoch-0002-batch-000005"),
    ("epoch-1-batch-12", "after epoch 1", "epoch-0001")])
def test_sigterm_checkpoints_exits_143_and_resumes_as_uninterrupted(point, where, name, tiny_data, tmp_path,
                                                                    reference):
    run = tmp_path / "run"
    r = _signalled(tiny_data, run, point, "sigterm")
    assert r.returncode == 128 + signal.SIGTERM == 143, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    ckpt = run / "backup" / name
    assert f"stopped by SIGTERM {where}; checkpoint {ckpt}" in r.stderr
    assert f"Continue with: fusedfocal train --resume --out {run}" in r.stderr
    state = json.loads((ckpt / "state.json").read_text())
    if "batch" in name:
        assert state["epoch"] == 1 and state["batch"] == 5 and state["metrics_state"]  # the epoch's running loss
    else:
        assert state["epoch"] == 1 and "batch" not in state and len(state["records"]) == 1
    assert not (run / "metrics.json").exists()
    r = cli_subprocess("train", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resuming {run} {where}" in r.stderr
    assert final_files(run) == reference  # same epochs.jsonl, metrics.json (losses included), thresholds


def test_sigint_exits_130_after_a_checkpoint(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    r = _signalled(tiny_data, run, "epoch-1-batch-3", "sigint")
    assert r.returncode == 130, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr
    assert "stopped by SIGINT after batch 3 of epoch 1" in r.stderr
    assert (run / "backup" / "epoch-0001-batch-000003" / "model.weights.h5").is_file()
    # resuming inside an epoch needs the same batches: another --batch-size is refused, not misread
    assert cli("train", "--out", run, "--resume", "--batch-size", "32") == 2
    assert "Resume with the stored --batch-size" in capsys.readouterr().err


def test_second_signal_exits_at_once_leaving_the_previous_checkpoint(tiny_data, tmp_path, reference):
    run = tmp_path / "run"
    r = _signalled(tiny_data, run, "epoch-2-batch-5", "sigterm-twice")
    assert r.returncode == -signal.SIGTERM, r.stderr[-3000:]  # killed by the signal (143 in a shell)
    assert sorted(p.name for p in (run / "backup").iterdir() if p.name.startswith("epoch-")) == ["epoch-0001"]
    assert not [p for p in (run / "backup").iterdir() if ".tmp" in p.name]
    r = cli_subprocess("train", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert final_files(run) == reference
