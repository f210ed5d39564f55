"""The CLI's head optimizer and head storage (issue 26): ``--head-optimizer {shared,sgd,adam}``,
``--head-dtype {float32,bfloat16}`` and ``--head-learning-rate`` on the fused head, chosen and
recorded in the settings block, stored in config.json, honoured by --resume, evaluate and predict;
refused on the dense head and under several replicas."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from clitools import cli, cli_subprocess

from fusedfocal.cli.stages import fused
from fusedfocal.cli.resolve import settings as st
from fusedfocal.cli.parser import build_parser
from fusedfocal.data import synthetic_xmc_splits, write_jsonl

FAST = ["--model", "fasttext", "--embed-dim", "32", "--epochs", "2", "--batch-size", "32", "--max-length", "40",
        "--vocab-size", "500", "--val-size", "80", "--learning-rate", "0.03", "--dropout", "0", "--verbose", "0"]
STEPS = (640 - 80) // 32  # optimizer steps an epoch


@pytest.fixture(scope="module")
def xmc_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xmc_head")
    train, test = synthetic_xmc_splits(seed=0, num_train=640, num_test=160, num_labels=200, mean_filler=5)
    return {"train": write_jsonl(d / "train.jsonl", *train), "test": write_jsonl(d / "test.jsonl", *test),
            "texts": test[0]}


def _args(*argv):
    return build_parser()[0].parse_args(["train", *map(str, argv)])


def _resolved(*argv, head="fused"):
    """``(args, settings)``: the head settings of ``argv`` after the model's (adam at 2e-3 unless given)."""
    args = _args(*argv)
    args.optimizer = args.optimizer or "adam"
    args.learning_rate = args.learning_rate or 2e-3
    args.adam_epsilon = args.adam_epsilon or 1e-7
    return args, st.resolve_head(args, head)


def _head_config(args):
    """The fused update's config of ``args`` once resolved, as the build stage sees it."""
    from fusedfocal.cli import resolve

    spec = resolve.spec(args, "train")
    return fused.head_optimizer_config(spec.head, spec.optim)


# ----------------------------------------------------------------------------- the rules
def test_defaults_are_todays_head_and_say_where_the_measurement_lives():
    args, chosen = _resolved()
    assert (args.head_optimizer, args.head_dtype, args.head_learning_rate) == ("shared", "float32", None)
    assert list(chosen) == ["head_optimizer", "head_dtype"]  # shared: no rate of its own
    for s in chosen.values():
        assert s.source == "default" and "today's behaviour" in s.why and "docs/xmc.md" in s.why
    assert _head_config(args) is None  # FocalHeadModel(head_optimizer=None), as before
    lines = st.block(chosen)  # one reason, one line
    assert any(line.strip().startswith("--head-optimizer shared --head-dtype float32  [default] today's")
               for line in lines), lines


def test_head_rate_rule_and_update_config():
    # the run's rule: its --learning-rate (the shared optimizer's rate for the same summed loss)
    args, chosen = _resolved("--head-optimizer", "adam", "--adam-epsilon", "9e-6", "--weight-decay", "0.01",
                             "--seed", "4")
    assert args.head_learning_rate == 2e-3 and chosen["head_learning_rate"].source == "default"
    assert "--learning-rate" in chosen["head_learning_rate"].why
    assert _head_config(args) == {"optimizer": "adam", "learning_rate": 2e-3, "weight_decay": 0.01,
                                                 "seed": 4, "epsilon": 9e-6}  # the run's Adam epsilon
    # another rule: the command line's rate of that rule, SGD with momentum 0.9
    args, chosen = _resolved("--head-optimizer", "sgd")
    assert args.head_learning_rate == st.OPTIMIZER_RATES["sgd"] and "summed over labels" in chosen[
        "head_learning_rate"].why
    cfg = _head_config(args)
    assert cfg["optimizer"] == "sgd" and cfg["momentum"] == 0.9 and cfg["learning_rate"] == 0.33
    args, chosen = _resolved("--head-optimizer", "sgd", "--head-learning-rate", "0.05")
    assert chosen["head_learning_rate"].source == "flag" and _head_config(args)["learning_rate"] == 0.05
    # bfloat16 without a head optimizer: the run's optimizer as a fused update (stochastic rounding)
    args, chosen = _resolved("--head-dtype", "bfloat16", "--optimizer", "sgd", "--learning-rate", "0.2")
    assert (args.head_optimizer, args.head_learning_rate) == ("sgd", 0.2)
    assert _head_config(args)["moment_dtype"] == "bfloat16"  # slots stored as the kernel is
    assert chosen["head_optimizer"].source == "default" and "stochastic rounding" in chosen["head_optimizer"].why
    # the dense head: no head settings; the defaults stored
    args, chosen = _resolved(head="dense")
    assert chosen == {} and (args.head_optimizer, args.head_dtype) == ("shared", "float32")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv,flag,text", [
    (["train", "--head", "dense", "--head-optimizer", "sgd"], "--head-optimizer", "with --head dense"),
    (["train", "--head", "dense", "--head-dtype", "bfloat16"], "--head-dtype", "with --head dense"),
    (["compare", "--head", "dense", "--head-learning-rate", "0.1"], "--head-learning-rate", "with --head dense"),
    # 197 labels, at most --fused-head-above 4096: auto picks the dense head (known after reading the data)
    (["train", "--head-optimizer", "adam"], "--head-optimizer", "--head auto, which chose the dense head for 197"),
    (["train", "--head", "fused", "--head-dtype", "bfloat16", "--head-optimizer", "shared"], "--head-dtype",
     "expected --head-optimizer sgd or adam"),
    (["train", "--head", "fused", "--head-learning-rate", "0.1"], "--head-learning-rate",
     "received --head-learning-rate 0.1 with --head-optimizer shared"),
])
def test_head_flags_errors_name_the_flag(xmc_data, tmp_path, capsys, argv, flag, text):
    code = cli(*argv, "--data", xmc_data["train"], "--out", tmp_path / "r", *FAST)
    err = capsys.readouterr().err
    assert code == 2
    assert f"argument {flag}:" in err and text in err, err
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.mark.slow
def test_head_optimizer_refused_with_two_replicas(xmc_data, tmp_path):
    """--strategy mirrored on 2 logical CPUs: a fused update would change each replica's copy of the
    head on its own; refused before the data is read, naming --head-optimizer."""
    r = cli_subprocess("train", "--head", "fused", "--head-optimizer", "sgd", "--strategy", "mirrored", "--data",
                       xmc_data["train"], "--out", tmp_path / "r", *FAST, env={"FUSEDFOCAL_LOGICAL_CPUS": "2"})
    assert r.returncode == 2, r.stderr[-3000:]
    assert "argument --head-optimizer:" in r.stderr and "2 replicas" in r.stderr, r.stderr[-3000:]
    assert "WordPiece vocabulary" not in r.stderr  # before data preparation
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "config.json").exists()


# ----------------------------------------------------------------------------- a run: stored, resumed, loaded
def _stored_kernel(h5_bytes):
    """``(bytes per weight, shape)`` of the head's kernel (``head/vars/0``) in a ``.weights.h5``
    image: 2 for bfloat16, whether Keras stores it as bfloat16 or the head as its uint16 bit patterns."""
    import h5py

    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        kernel = f["head/vars/0"]
        return kernel.dtype.itemsize, kernel.shape


@pytest.mark.slow
def test_sgd_bfloat16_run_resumes_evaluates_and_predicts(xmc_data, tmp_path, monkeypatch, capsys):
    from fusedfocal.cli.store import rundir

    common = ["--head", "fused", "--loss", "bce", "--head-optimizer", "sgd", "--head-dtype", "bfloat16",
              "--data", xmc_data["train"], "--eval", xmc_data["test"], "--deterministic", "--patience", "0", *FAST]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli("train", "--out", whole, *common) == 0
    printed = capsys.readouterr().err
    assert "--head-optimizer sgd --head-dtype bfloat16  [flag] given" in printed
    assert "--head-learning-rate 0.33" in printed and "[default] the command line's sgd rate" in printed

    # killed after epoch 1's checkpoint (FUSEDFOCAL_FAULT), then resumed with the stored head
    monkeypatch.setenv(rundir.FAULT_ENV, "checkpoint-1")
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    with pytest.raises(rundir.InjectedFault):
        cli("train", "--out", run, *common)
    monkeypatch.delenv(rundir.FAULT_ENV)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["settings"]["head_optimizer"] == {"value": "sgd", "source": "flag", "why": "given"}
    assert cfg["settings"]["head_dtype"] == {"value": "bfloat16", "source": "flag", "why": "given"}
    assert cfg["settings"]["head_learning_rate"]["source"] == "default"
    assert (cfg["spec"]["head"]["head_optimizer"], cfg["spec"]["head"]["head_dtype"], cfg["spec"]["head"]["head_learning_rate"]) == (
        "sgd", "bfloat16", 0.33)
    checkpoint = run / "backup" / "epoch-0001" / "model.weights.h5"
    assert _stored_kernel(checkpoint.read_bytes())[0] == 2  # bfloat16 in the checkpoint
    # another head than the stored one cannot load its checkpoints: refused, naming the flag
    assert cli("train", "--out", run, "--resume", "--head-dtype", "float32") == 2
    assert "argument --head-dtype: expected the interrupted run's --head-dtype bfloat16" in capsys.readouterr().err

    def no_resolution(*a, **k):
        raise AssertionError("a resumed run chose its head settings again")
    monkeypatch.setattr(st, "resolve_head", no_resolution)
    assert cli("train", "--out", run, "--resume") == 0
    assert "Resuming" in capsys.readouterr().err
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in b["epochs"]] == [1, 2]
    for m in (a, b):
        assert (m["settings"]["head_optimizer"], m["settings"]["head_dtype"]) == ("sgd", "bfloat16")
        assert m["settings"]["head_learning_rate"] == 0.33
        assert {k: m["settings"]["chosen"][k] for k in st.HEAD_SETTINGS} == {
            "head_optimizer": "flag", "head_dtype": "flag", "head_learning_rate": "default"}
    # the same run as an uninterrupted one: the head's slots, step count and rounding seed resumed
    assert b["history"]["loss"] == pytest.approx(a["history"]["loss"], rel=1e-6)
    assert b["metrics"]["p@1"] == pytest.approx(a["metrics"]["p@1"], abs=1e-9)
    assert b["metrics"]["p@1"] > 0.3  # learnt (a random ranking of ~200 labels gets about 0.01)

    # the stored model: a bfloat16 kernel, trained by the fused SGD for every step of both epochs
    with zipfile.ZipFile(run / "model.keras") as z:
        size, shape = _stored_kernel(z.read("model.weights.h5"))
    assert size == 2 and shape == (b["labels"], 32)  # [C, H] in bfloat16
    import keras

    from fusedfocal.cli.stages import models  # noqa: F401  (custom layers)

    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.head.weight_dtype == "bfloat16" and model.head.head_optimizer.update.optimizer == "sgd"
    assert int(model.head.head_iterations.numpy()) == 2 * STEPS  # not restarted at the resume
    assert model.head.head_optimizer.update.momentum == 0.9 and model.head.head_optimizer.learning_rate == 0.33

    # evaluate and predict rebuild the same head from the run folder
    out = tmp_path / "eval.json"
    assert cli("evaluate", run, "--data", xmc_data["test"], "--output", out) == 0
    ev = json.loads(out.read_text())
    for key in ("p@1", "p@5", "ndcg@5", "psp@5"):
        assert ev["metrics"][key] == pytest.approx(b["metrics"][key], abs=1e-9), key
    capsys.readouterr()
    assert cli("predict", run, xmc_data["texts"][0], "--json", "--top-k", "3") == 0
    row = json.loads(capsys.readouterr().out)
    scores = [lab["score"] for lab in row["labels"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and np.all(np.isfinite(scores))
    # config.json and model.keras must agree on the head
    cfg = json.loads((run / "config.json").read_text())
    cfg["spec"]["head"]["head_dtype"] = "float32"
    (run / "config.json").write_text(json.dumps(cfg))
    assert cli("evaluate", run, "--data", xmc_data["test"], "--output", out) == 2
    assert "does not match config.json: expected head-dtype float32" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_passes_the_head_to_every_run(xmc_data, tmp_path):
    """compare chooses the head settings once and every loss's run trains (and stores) that head:
    --head-dtype bfloat16 alone gets the run's optimizer (adam) as a fused update."""
    out = tmp_path / "cmp"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "1"
    assert cli("compare", "--head", "fused", "--losses", "bce", "--head-dtype", "bfloat16", "--data",
               xmc_data["train"], "--out", out, *flags) == 0
    chosen = json.loads((out / "config.json").read_text())["settings"]
    assert chosen["head_optimizer"]["value"] == "adam" and chosen["head_optimizer"]["source"] == "default"
    assert chosen["head_dtype"] == {"value": "bfloat16", "source": "flag", "why": "given"}
    run = json.loads((out / "runs" / "bce" / "config.json").read_text())
    assert (run["spec"]["head"]["head_optimizer"], run["spec"]["head"]["head_dtype"], run["spec"]["head"]["head_learning_rate"]) == (
        "adam", "bfloat16", 0.03)
    with zipfile.ZipFile(out / "runs" / "bce" / "model.keras") as z:
        assert _stored_kernel(z.read("model.weights.h5"))[0] == 2
