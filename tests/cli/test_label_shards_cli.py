"""The CLI's ``--label-shards S`` (issue 27): the fused head split by label over S devices in one
process; the settings block says the layout and the per-step traffic; the run trains as the
unsharded one; evaluate reads the sharded run folder; bad uses name the flag."""

from __future__ import annotations

import json

import pytest
from clitools import cli

from fusedfocal.data import synthetic_xmc_splits, write_jsonl

FAST = ["--model", "fasttext", "--embed-dim", "32", "--epochs", "2", "--batch-size", "32", "--max-length", "40",
        "--vocab-size", "500", "--val-size", "80", "--learning-rate", "0.03", "--dropout", "0", "--verbose", "0"]


@pytest.fixture(scope="module")
def xmc_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xmc_shards")
    train, test = synthetic_xmc_splits(seed=0, num_train=640, num_test=160, num_labels=200, mean_filler=5)
    return {"train": write_jsonl(d / "train.jsonl", *train), "test": write_jsonl(d / "test.jsonl", *test)}


@pytest.mark.parametrize("argv,flag,text", [
    (["--head", "dense", "--label-shards", "2"], "--label-shards", "with --head dense"),
    (["--head", "fused", "--label-shards", "2", "--jit-compile", "on"], "--jit-compile", "with --label-shards"),
    (["--head", "fused", "--label-shards", "500"], "--label-shards", "expected at most the 197 labels"),
])
def test_label_shards_errors_name_the_flag(xmc_data, tmp_path, capsys, argv, flag, text):
    code = cli("train", *argv, "--data", xmc_data["train"], "--out", tmp_path / "r", *FAST)
    err = capsys.readouterr().err
    assert code == 2 and f"argument {flag}:" in err and text in err, err


@pytest.mark.slow
def test_two_shards_train_as_one(xmc_data, tmp_path, capsys):
    """S = 2 against S = 1: the same initial kernel (drawn by blocks of global rows) and the same
    steps. (The library's tests compare with the unsharded head from equal weights; an unsharded
    run's kernel is drawn by Keras in one piece, so from another initial kernel.)"""
    common = ["--head", "fused", "--loss", "focal", "--head-optimizer", "adam", "--data", xmc_data["train"],
              "--eval", xmc_data["test"], "--deterministic", "--patience", "0", *FAST]
    assert cli("train", "--out", tmp_path / "one", "--label-shards", "1", *common) == 0
    capsys.readouterr()
    assert cli("train", "--out", tmp_path / "two", "--label-shards", "2", *common) == 0
    err = capsys.readouterr().err
    assert "--label-shards 2" in err and "[flag]" in err and "per step each shard" in err, err
    assert "shard 0: labels [0, 99)" in err and "shard 1: labels [99, 197)" in err, err
    assert "Independent of the 197 labels" in err
    assert "the encoder data-parallel over the same 2 devices" in err and "per step and encoder replica" in err
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert b["settings"]["label_shards"] == 2 and a["settings"]["label_shards"] == 1
    assert b["history"]["loss"] == pytest.approx(a["history"]["loss"], rel=1e-5)
    assert b["metrics"]["p@1"] == pytest.approx(a["metrics"]["p@1"], abs=1e-9) and b["metrics"]["p@1"] > 0.3
    out = tmp_path / "eval.json"  # the sharded model.keras, read back (its head re-split over this process)
    assert cli("evaluate", tmp_path / "two", "--data", xmc_data["test"], "--output", out) == 0
    assert json.loads(out.read_text())["metrics"]["p@1"] == pytest.approx(b["metrics"]["p@1"], abs=1e-9)
