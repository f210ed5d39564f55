"""``--encoder`` (issue 30): a tiny local KerasHub preset (2-layer BERT, random weights, built in the
session: nothing is downloaded) fine-tuned through ``compare``, ``train``, ``--resume``, ``evaluate``
and ``predict``, with both heads and mixed precision; bad input errors name ``--encoder``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from clitools import cli

pytest.importorskip("keras_hub", reason="KerasHub is the optional [hub] extra")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubtools import tiny_preset  # noqa: E402

from fusedfocal.cli.stages import encoder  # noqa: E402
from fusedfocal.cli.store import rundir  # noqa: E402

# 192 training documents in 6 batches of 32 an epoch: the time is the backbone's load and the step's trace
QUICK = ["--epochs", "2", "--batch-size", "32", "--val-size", "48", "--max-length", "32", "--verbose", "0"]


@pytest.fixture(scope="module")
def preset(tiny_data, tmp_path_factory):
    texts = [json.loads(line)["text"] for line in Path(tiny_data["train"]).read_text().splitlines()]
    return tiny_preset(tmp_path_factory.mktemp("preset") / "tiny_bert", texts, max_sequence_length=64)


def _error(capsys, *argv):
    assert cli(*argv) == 2
    return capsys.readouterr().err


@pytest.mark.slow
def test_compare_then_evaluate_and_predict_offline(preset, tiny_data, tmp_path, capsys):
    local = shutil.copytree(preset, tmp_path / "copy")  # removed before evaluate: the run folder suffices
    out = tmp_path / "cmp"
    assert cli("compare", "--encoder", local, "--losses", "bce,focal", "--data", tiny_data["train"], "--eval",
               tiny_data["test"], "--out", out, *QUICK, "--epochs", "1") == 0
    err = capsys.readouterr().err
    assert f"--encoder {local}" in err and "--learning-rate 5e-05" in err and "--warmup 0.1" in err
    assert "--mixed-precision off" in err and "no GPU" in err
    comparison = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in comparison["results"]] == ["bce", "focal"]
    run = out / "runs" / "focal"
    cfg = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert cfg["spec"]["model"]["encoder"] == str(local) and cfg["spec"]["model"]["model"] == "encoder"
    assert cfg["spec"]["optim"]["warmup"] == 0.1 and cfg["settings"]["learning_rate"]["source"] == "model"
    assert (run / "encoder" / "model.weights.h5").exists() and not (run / rundir.WORDPIECE_FILE).exists()
    shutil.rmtree(local)
    assert cli("evaluate", str(run), "--data", tiny_data["test"], "--encoder", local) == 0
    evaluation = json.loads((run / rundir.EVALUATION_FILE).read_text())
    metrics = json.loads((run / rundir.METRICS_FILE).read_text())
    for key in ("micro", "macro"):  # the same test data: the same scores as the run's own evaluation
        assert evaluation["metrics"]["global"][key] == pytest.approx(metrics["metrics"]["global"][key], abs=1e-6)
    capsys.readouterr()
    assert cli("predict", str(run), "some words", "--top-k", "2", "--json") == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[0])["labels"]) == 2
    err = _error(capsys, "predict", str(run), "text", "--encoder", "bert_base_en_uncased")
    assert "--encoder" in err and "expected the run's encoder" in err


@pytest.mark.slow
def test_fused_head_bfloat16_label_shards_resume_from_the_run_folder(preset, tiny_data, tmp_path, monkeypatch, capsys):
    local = shutil.copytree(preset, tmp_path / "copy")
    run = tmp_path / "run"
    argv = ["train", "--encoder", local, "--head", "fused", "--loss", "focal", "--mixed-precision", "bfloat16",
            "--label-shards", "2", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, *QUICK]
    monkeypatch.setenv(rundir.FAULT_ENV, "checkpoint-1")
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    with pytest.raises(rundir.InjectedFault):
        cli(*argv)
    monkeypatch.delenv(rundir.FAULT_ENV)
    shutil.rmtree(local)  # --resume reads the encoder and its tokenizer from RUN_DIR/encoder/
    assert cli("train", "--resume", "--out", run) == 0
    assert "Resuming" in capsys.readouterr().err
    metrics = json.loads((run / rundir.METRICS_FILE).read_text())
    assert metrics["head"] == "fused" and metrics["settings"]["mixed_precision"] == "bfloat16"
    assert metrics["settings"]["label_shards"] == 2 == metrics["settings"]["encoder_replicas"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert cli("predict", str(run), "some words", "--json") == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[0])["labels"]) == 5


def test_bad_encoders_are_named(preset, tiny_data, tmp_path, capsys, monkeypatch):
    data = ["--data", tiny_data["train"], "--out", tmp_path / "r", *QUICK]
    err = _error(capsys, "train", "--encoder", "no_such_preset_xyz", *data)
    assert "argument --encoder" in err and "'no_such_preset_xyz'" in err and "preset name" in err
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(preset, no_tok)
    (no_tok / "tokenizer.json").unlink()
    err = _error(capsys, "train", "--encoder", no_tok, *data)
    assert "argument --encoder" in err and "no tokenizer (tokenizer.json missing)" in err
    err = _error(capsys, "train", "--encoder", preset, "--model", "cnn", *data)
    assert "argument --model" in err and "no --model with --encoder" in err
    err = _error(capsys, "train", "--warmup", "0.2", *data)
    assert "argument --warmup" in err and "without --encoder" in err
    err = _error(capsys, "train", "--encoder", preset, *data[:-2], "--max-length", "100")
    assert "argument --max-length" in err and "at most 64" in err

    import keras

    from fusedfocal import hub

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    four = keras.Model({"token_ids": ids}, keras.layers.Reshape((-1, 2, 2))(keras.layers.Embedding(10, 4)(ids)))
    _, tokenizer = hub.load_preset(preset, load_weights=False)
    monkeypatch.setattr(hub, "load_preset", lambda *a, **k: (four, tokenizer))
    err = _error(capsys, "train", "--encoder", preset, *data)
    assert "argument --encoder" in err and "[B, H] or [B, T, H]" in err and "[None, None, 2, 2]" in err


def test_without_keras_hub_the_error_says_what_to_install(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    err = _error(capsys, "train", "--encoder", "bert_base_en_uncased", "--data", tiny_data["train"],
                 "--out", tmp_path / "r", *QUICK)
    assert "argument --encoder" in err and "pip install fusedfocal[hub]" in err


def test_mixed_precision_rule():
    assert encoder.mixed_precision_rule([])[0] == "off"
    assert encoder.mixed_precision_rule([(9, 0)])[0] == "bfloat16"
    assert encoder.mixed_precision_rule([(7, 5)])[0] == "float16"
    assert encoder.mixed_precision_rule([(8, 0), (6, 1)])[0] == "off"  # the weakest GPU decides
