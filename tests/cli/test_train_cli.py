"""train / evaluate / predict on tiny synthetic data; thresholds; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import FAST, cli

pytestmark = pytest.mark.slow


def test_train_writes_artifacts_and_sane_metrics(trained_run):
    for name in ("model.keras", "wordpiece_vocab.txt", "label_vocab.json", "thresholds.json", "metrics.json",
                 "config.json", "epochs.jsonl"):
        assert (trained_run / name).is_file(), name
    assert not (trained_run / "backup").exists()  # removed once training finished
    assert list((trained_run / "logs").rglob("events.out.tfevents.*"))
    # --profile 2: RUN/logs/train/plugins/profile/<ts>/ with tensorboard installed, else RUN/logs/plugins/profile/<ts>/
    assert list((trained_run / "logs").glob("*plugins/profile/*/*.xplane.pb")) or \
        list((trained_run / "logs").glob("train/plugins/profile/*/*.xplane.pb"))
    m = json.loads((trained_run / "metrics.json").read_text())
    assert m["loss"] == "focal" and m["loss_params"] == {"gamma": 2.0}
    assert m["eval_split"] == "test" and m["documents"] == {"fit": 192, "validation": 48, "eval": 60}
    assert len(m["history"]["loss"]) == 2 and all(np.isfinite(m["history"]["loss"]))
    for mode in ("at_0.5", "global", "per_class"):
        for avg in ("micro", "macro"):
            for k in ("precision", "recall", "f1"):
                assert 0.0 <= m["metrics"][mode][avg][k] <= 1.0
        assert set(m["metrics"][mode]["groups"]) == {"head", "medium", "tail"}
        assert len(m["metrics"][mode]["per_class"]) == m["labels"]
    assert m["metrics"]["global"]["micro"]["f1"] > 0.2  # it learnt something
    th = json.loads((trained_run / "thresholds.json").read_text())
    assert 0 < th["global"] < 1 and len(th["per_class_vector"]) == m["labels"]
    assert "48 documents" in th["tuned_on"]
    assert [e["epoch"] for e in map(json.loads, (trained_run / "epochs.jsonl").read_text().splitlines())] == [1, 2]


def test_thresholds_come_from_validation_only(trained_run, tiny_data):
    """Re-tuning on the held-out validation split reproduces the stored thresholds exactly."""
    from fusedfocal.cli import metrics as ev
    from fusedfocal.cli.stages.load import load_run
    from fusedfocal.cli.stages.models import predict_scores
    from fusedfocal.cli.stages.prepare import split_validation
    from fusedfocal.data import read_records

    model, pipe, th, cfg = load_run(trained_run)
    texts, labels, _ = read_records(tiny_data["train"])
    _, val_idx = split_validation(len(texts), 48, cfg["spec"]["data"]["seed"])
    scores = predict_scores(model, pipe, [texts[i] for i in val_idx])
    y, _ = pipe.label_vocab.encode([labels[i] for i in val_idx])
    g, per, fallback = ev.tune_thresholds(scores, y)
    assert g == th["global"]
    np.testing.assert_allclose(per, th["per_class_vector"])
    assert [pipe.label_vocab.labels[j] for j in np.flatnonzero(fallback)] == th["fallback_to_global"]
    assert all(per[j] == g for j in np.flatnonzero(fallback))


def test_evaluate_reports_unknown_labels_and_keeps_thresholds(trained_run, tiny_data, capsys, tmp_path):
    before = (trained_run / "thresholds.json").read_bytes()
    out = tmp_path / "eval.json"
    assert cli("evaluate", trained_run, "--data", tiny_data["unknown"], "--output", out) == 0
    assert (trained_run / "thresholds.json").read_bytes() == before
    text = capsys.readouterr().out
    assert "not in the label" in text and "zz_unseen" in text
    e = json.loads(out.read_text())
    assert e["unknown_eval_labels"] == {"zz_unseen": 60}
    assert e["thresholds"]["global"] == json.loads(before)["global"]
    # The same documents without the unknown label score the same: unknown names are never mapped.
    m = json.loads((trained_run / "metrics.json").read_text())
    assert e["metrics"]["global"]["micro"] == m["metrics"]["global"]["micro"]


def test_predict_texts_file_topk_json(trained_run, tiny_data, capsys, tmp_path):
    f = tmp_path / "texts.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_data["texts"][:3]))
    assert cli("predict", trained_run, tiny_data["texts"][3], "--file", f, "--top-k", "2", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(len(r["labels"]) == 2 for r in rows)
    labels = json.loads((trained_run / "label_vocab.json").read_text())["labels"]
    assert all(x["label"] in labels and 0 <= x["score"] <= 1 for r in rows for x in r["labels"])
    assert rows[0]["labels"][0]["score"] >= rows[0]["labels"][1]["score"]
    # --threshold 0 returns every label; --threshold 1.01 none.
    assert cli("predict", trained_run, "some text", "--threshold", "0") == 0
    out = capsys.readouterr().out
    assert all(lab in out for lab in labels), (labels, out)
    assert cli("predict", trained_run, "some text", "--threshold", "1") == 0
    assert "no label above" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag, words", [
    (["--loss", "nope"], "--loss", ["'nope'", "focal"]),
    (["--data", "/no/such/file.jsonl"], "--data", ["/no/such/file.jsonl"]),
    (["--loss", "focal", "--gamma", "-1"], "--gamma", ["gamma"]),
    (["--loss", "asl", "--loss-param", "bogus=3"], "--loss-param", ["bogus"]),
    (["--loss-param", "novalue"], "--loss-param", ["KEY=VALUE"]),
])
def test_clear_errors(argv, flag, words, tiny_data, tmp_path, capsys):
    base = ["train", "--out", tmp_path / "r", *FAST]
    if "--data" not in argv:
        base += ["--data", tiny_data["train"]]
    assert cli(*base, *argv) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and "usage:" in err
    for w in words:
        assert w in err


def test_empty_data_set_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert cli("train", "--data", empty, "--out", tmp_path / "r", *FAST) == 2
    err = capsys.readouterr().err
    assert "argument --data:" in err and "empty data set" in err


def test_label_vocab_mismatch_on_resume_and_evaluate(trained_run, tiny_data, tmp_path, capsys):
    from fusedfocal.data import write_jsonl

    other = write_jsonl(tmp_path / "other.jsonl", tiny_data["texts"], [["x_" + n for n in ls] for ls in tiny_data["labels"]])
    assert cli("train", "--out", trained_run, "--resume", "--data", other) == 2
    err = capsys.readouterr().err
    assert "argument --data:" in err and "label vocabulary" in err and "label_vocab.json" in err
    assert cli("evaluate", trained_run, "--data", other) == 2
    err = capsys.readouterr().err
    assert "argument --data:" in err and "label vocabulary" in err
    assert cli("evaluate", tmp_path / "not_a_run", "--data", other) == 2
    assert "argument RUN_DIR:" in capsys.readouterr().err


def test_deterministic_runs_are_reproducible(tiny_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, "--loss", "bce",
                   "--deterministic", "--seed", "7", *FAST) == 0
        runs.append(json.loads((out / "metrics.json").read_text()))
    a, b = runs
    assert a["history"] == b["history"]
    assert a["metrics"] == b["metrics"]
    assert (tmp_path / "a" / "thresholds.json").read_text() == (tmp_path / "b" / "thresholds.json").read_text()


@pytest.mark.parametrize("model", ["transformer", "fasttext"])
def test_other_models_train_and_predict(model, tiny_data, tmp_path, capsys):
    out = tmp_path / model
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "1"
    assert cli("train", "--data", tiny_data["train"], "--out", out, "--model", model, "--loss", "asl", *flags) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["model"] == model and np.isfinite(m["history"]["loss"][0])
    assert m["eval_split"] == "validation"  # no --eval: reported on the validation split, marked
    capsys.readouterr()
    assert cli("predict", out, "some text", "--top-k", "1", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["labels"]) == 1
