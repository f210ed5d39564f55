"""A run whose loss becomes non-finite (issue 21): it stops at that batch with exit status 3 and one
message, keeps the best finite epoch (never NaN weights), writes strict JSON only, refuses --resume
with a message, and compare goes on past it. Divergence comes from a huge learning rate and from
the fault point nan-epoch-N-batch-B (the loss returns NaN at that batch)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from clitools import FAST, cli

from fusedfocal.cli.store import rundir, safe

pytestmark = pytest.mark.slow


def _reject(token):
    raise ValueError(f"not strict JSON: {token}")


def strict_load(text):
    """json.loads that refuses NaN, Infinity and -Infinity (Python's json accepts them)."""
    return json.loads(text, parse_constant=_reject)


def assert_strict_json_files(folder):
    """Every .json and .jsonl file under ``folder`` parses as strict JSON; returns how many."""
    n = 0
    for p in sorted(folder.rglob("*.json")) + sorted(folder.rglob("*.jsonl")):
        text = p.read_text()
        if p.suffix == ".jsonl":
            [strict_load(line) for line in text.splitlines() if line.strip()]
        else:
            strict_load(text)
        n += 1
    return n


def _nan_fault(monkeypatch, point):
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, point)


def test_dumps_writes_non_finite_numbers_as_null():
    text = rundir.dumps({"loss": float("nan"), "h": [1.5, float("inf"), -float("inf")], "v": np.float32("nan"),
                         "a": np.array([1.0, np.nan])})
    assert strict_load(text) == {"loss": None, "h": [1.5, None, None], "v": None, "a": [1.0, None]}
    assert "NaN" not in rundir.dumps([float("nan")])


def test_huge_learning_rate_stops_at_the_first_non_finite_batch(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *FAST,
               "--learning-rate", "1e12")
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    assert "Traceback" not in err
    info = strict_load((run / "diverged.json").read_text())
    assert info["epoch"] == 1 and 1 <= info["batch"] <= 12 and info["kept_epoch"] == 0
    assert info["value"] in ("NaN", "+Inf", "-Inf") and info["learning_rate"] == 1e12
    msg = [line for line in err.splitlines() if line.startswith("fusedfocal train:")]
    assert len(msg) == 1
    assert (f"in epoch 1, batch {info['batch']} of 12" in msg[0] and "learning rate 1e+12" in msg[0]
            and "precision float32" in msg[0] and "a lower --learning-rate" in msg[0]
            and "no model was written" in msg[0])
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert not (run / "backup").exists()
    assert assert_strict_json_files(run) >= 3  # config.json, label_vocab.json, diverged.json (epochs.jsonl empty)
    # --resume: a message, not a traceback, and not another divergence
    assert cli("train", "--out", run, "--resume") == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{run} diverged (epoch 1, batch {info['batch']}" in err
    assert "not resumed" in err and "--overwrite" in err


def test_nan_loss_at_a_chosen_batch_keeps_the_best_finite_epoch(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _nan_fault(monkeypatch, "nan-epoch-2-batch-3")
    code = cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *FAST,
               "--loss", "focal")
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    assert "Traceback" not in err
    assert "the training loss became NaN in epoch 2, batch 3 of 12" in err and "Kept: the weights of epoch 1" in err
    m = strict_load((run / "metrics.json").read_text())
    assert m["diverged"]["epoch"] == 2 and m["diverged"]["batch"] == 3 and m["diverged"]["kept_epoch"] == 1
    assert m["selection"]["best_epoch"] == 1 and [e["epoch"] for e in m["epochs"]] == [1]
    assert [strict_load(x)["epoch"] for x in (run / "epochs.jsonl").read_text().splitlines()] == [1]
    assert not (run / "backup").exists()
    assert assert_strict_json_files(run) >= 5
    import keras

    from fusedfocal.cli.stages import models  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert all(np.isfinite(w).all() for w in model.get_weights())  # the kept weights, not the NaN ones
    assert math.isfinite(m["metrics"]["global"]["micro"]["f1"])
    monkeypatch.delenv(rundir.FAULT_ENV)
    assert cli("train", "--out", run, "--resume") == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "diverged (epoch 2, batch 3" in err and "epoch 1's weights" in err


@pytest.mark.parametrize("point, listed", [("nan-epoch-2-batch-3#1", False), ("nan-epoch-1-batch-2#1", True)])
def test_compare_goes_on_past_a_diverged_loss(point, listed, tiny_data, tmp_path, capsys, monkeypatch):
    """#1: the first loss (bce) diverges; in epoch 2 it keeps epoch 1 and its row is marked, in
    epoch 1 it has no result and is listed below the table."""
    out = tmp_path / "cmp"
    _nan_fault(monkeypatch, point)
    code = cli("compare", "--data", tiny_data["train"], "--out", out, "--losses", "bce,focal", *FAST)
    cap = capsys.readouterr()
    assert code == 0, cap.err[-2000:]
    assert "Traceback" not in cap.err and "going on with the next loss" in cap.err
    c = strict_load((out / "comparison.json").read_text())
    assert_strict_json_files(out)
    names = [r["name"] for r in c["results"]]
    if listed:
        assert names == ["focal"] and [d["name"] for d in c["diverged"]] == ["bce"]
        assert "diverged before any epoch finished" in (out / "comparison.md").read_text()
    else:
        assert names == ["bce [diverged e2 b3, last finite e1]", "focal"] and c["diverged"] == []
        assert "bce [diverged e2 b3, last finite e1]" in cap.out
    assert [e["epoch"] for e in c["results"][-1]["epochs"]] == [1, 2]  # focal trained its two epochs
    # compare --resume keeps both: the diverged loss is not retrained
    monkeypatch.delenv(rundir.FAULT_ENV)
    assert cli("compare", "--out", out, "--resume") == 0
    err = capsys.readouterr().err
    assert ("diverged already" if listed else "finished already") in err and "Traceback" not in err
