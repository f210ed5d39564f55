"""The CLI's fused-head path (issue 19): train, compare, evaluate, predict and resume with
``fusedfocal.keras.FocalHead`` on a tiny synthetic XMC corpus, never [N, C]."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import cli

from fusedfocal.data import synthetic_xmc_splits, write_jsonl
from fusedfocal.metrics_xmc import xmc_metrics

LABELS = 200
FAST = ["--model", "fasttext", "--embed-dim", "32", "--epochs", "2", "--batch-size", "32", "--max-length", "40",
        "--vocab-size", "500", "--val-size", "80", "--learning-rate", "0.03", "--dropout", "0", "--verbose", "0"]
KEYS = [f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in (1, 3, 5)]


@pytest.fixture(scope="module")
def xmc_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xmc")
    train, test = synthetic_xmc_splits(seed=0, num_train=640, num_test=160, num_labels=LABELS, mean_filler=5)
    return {"train": write_jsonl(d / "train.jsonl", *train), "test": write_jsonl(d / "test.jsonl", *test),
            "texts": test[0], "labels": test[1],
            "mean_labels": float(np.mean([len(ls) for ls in test[1]])),
            "num_labels": len({n for ls in train[1] for n in ls})}  # the label vocabulary (a few of LABELS are unseen)


@pytest.fixture(scope="module")
def fused_run(xmc_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "bce"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "3"
    assert cli("train", "--head", "fused", "--loss", "bce", "--data", xmc_data["train"], "--eval",
               xmc_data["test"], "--out", run, *flags) == 0
    return run


def test_train_fused_writes_top_k_metrics(fused_run, xmc_data):
    m = json.loads((fused_run / "metrics.json").read_text())
    assert m["head"] == "fused" and m["labels"] == xmc_data["num_labels"]
    for key in KEYS:
        assert 0.0 <= m["metrics"][key] <= 1.0, key  # fractions, as every metric of metrics.json
    random_p = xmc_data["mean_labels"] / xmc_data["num_labels"]  # P@k of a random ranking
    assert m["metrics"]["p@1"] > 5 * random_p and m["metrics"]["p@5"] > 3 * random_p
    # Learnt from the text, not from the priors alone: better than ranking labels by training frequency.
    popular = xmc_metrics(np.tile(np.arange(5), (len(xmc_data["texts"]), 1)), _test_ids(fused_run, xmc_data))
    assert m["metrics"]["p@1"] > popular["p@1"] + 0.05 and m["metrics"]["p@5"] > popular["p@5"]
    assert set(m["metrics"]["recall@5"]) == {"all", "head", "medium", "tail"}
    assert m["selection"]["select"] == "p@1" and m["selection"]["monitor"] == "val_p@1"
    assert len(m["history"]["val_p@1"]) == 3
    assert not (fused_run / "thresholds.json").exists() and not (fused_run / "backup").exists()
    cfg = json.loads((fused_run / "config.json").read_text())
    assert cfg["head"] == "fused" and cfg["spec"]["head"]["head"] == "fused"
    assert cfg["pipeline"]["label_format"] == "padded_ids"  # label ids, never multi-hot


def _test_ids(run, xmc_data):
    """The test documents' label ids in the run's label vocabulary (frequency order: id 0 is the
    most frequent training label)."""
    vocab = json.loads((run / "label_vocab.json").read_text())["labels"]
    index = {n: i for i, n in enumerate(vocab)}
    return [[index[n] for n in ls if n in index] for ls in xmc_data["labels"]]


def test_fused_model_has_no_dense_logits(fused_run, xmc_data):
    import keras

    from fusedfocal import keras as fk
    from fusedfocal.cli.stages import models  # noqa: F401  (custom layers)

    model = keras.saving.load_model(fused_run / "model.keras", compile=False)
    assert isinstance(model, fk.FocalHeadModel) and model.head.num_labels == xmc_data["num_labels"]
    kernels = [tuple(v.shape) for v in model.encoder.weights]
    assert all(xmc_data["num_labels"] not in shape for shape in kernels), kernels  # no [H, C] Dense in the encoder


def test_evaluate_and_predict_fused(fused_run, xmc_data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli("evaluate", fused_run, "--data", xmc_data["test"], "--output", out) == 0
    ev = json.loads(out.read_text())
    m = json.loads((fused_run / "metrics.json").read_text())
    for key in KEYS:  # the same data and top-k: the same numbers as training's evaluation
        assert ev["metrics"][key] == pytest.approx(m["metrics"][key], abs=1e-9)
    capsys.readouterr()
    assert cli("predict", fused_run, xmc_data["texts"][0], xmc_data["texts"][1], "--json", "--threshold", "0.9") == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [len(r["labels"]) for r in rows] == [5, 5]
    scores = [lab["score"] for lab in rows[0]["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert "--threshold 0.9 is ignored" in captured.err
    assert cli("predict", fused_run, xmc_data["texts"][0], "--json", "--top-k", "8") == 0
    assert len(json.loads(capsys.readouterr().out)["labels"]) == 8


def _args(*argv):
    from fusedfocal.cli import build_parser

    return build_parser()[0].parse_args(["train", *map(str, argv)])


@pytest.mark.parametrize("above,head,fmt", [(100, "fused", "padded_ids"), (1000, "dense", "multi_hot")])
def test_head_auto_picks_by_label_count(xmc_data, above, head, fmt):
    from fusedfocal.cli.resolve import prepare

    prep = prepare(_args("--data", xmc_data["train"], "--fused-head-above", above, *FAST))
    assert prep.head == head and prep.pipeline.config.label_format == fmt
    assert prep.fit_counts.sum() > 0 and len(prep.fit_counts) == xmc_data["num_labels"]


def test_head_default_threshold():
    from fusedfocal.cli.stages import fused

    args = _args()
    assert args.head == "auto" and args.fused_head_above == 4096
    assert fused.resolve_head("auto", 4096, 4096) == "dense" and fused.resolve_head("auto", 4097, 4096) == "fused"
    assert fused.resolve_head("dense", 10 ** 6, 4096) == "dense"


def test_compare_bce_focal_la_on_fused_head(xmc_data, tmp_path):
    out = tmp_path / "cmp"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "1"
    assert cli("compare", "--losses", "bce,focal,la", "--head", "auto", "--fused-head-above", "100", "--data",
               xmc_data["train"], "--eval", xmc_data["test"], "--out", out, *flags) == 0
    md = (out / "comparison.md").read_text()
    for col in ("P@1", "P@5", "PSP@5", "T-R@5"):
        assert col in md
    payload = json.loads((out / "comparison.json").read_text())
    assert payload["head"] == "fused"
    assert [r["loss"] for r in payload["results"]] == ["bce", "focal", "la"]
    for r in payload["results"]:
        assert all(0.0 <= r["metrics"][k] <= 1.0 for k in KEYS)
    la = json.loads(next((out / "runs").glob("la*")).joinpath("config.json").read_text())
    assert la["head"] == "fused"


@pytest.mark.parametrize("argv,flag,text", [
    (["train", "--head", "fused", "--loss", "asl"], "--loss", "expected one of bce, focal, la, cb"),
    (["compare", "--head", "fused", "--losses", "bce,db"], "--losses", "received 'db'"),
    (["train", "--head", "fused", "--loss", "la", "--gamma", "2"], "--gamma", "takes with the fused head (tau)"),
    (["train", "--head", "fused", "--select", "macro_f1"], "--select", "expected p@1, ndcg@5"),
])
def test_fused_errors_name_the_flag(xmc_data, tmp_path, capsys, argv, flag, text):
    code = cli(*argv, "--data", xmc_data["train"], "--out", tmp_path / "r", *FAST)
    err = capsys.readouterr().err
    assert code == 2
    assert flag in err and text in err, err
    assert not (tmp_path / "r" / "config.json").exists()


def test_resume_fused_run(xmc_data, tmp_path, monkeypatch):
    """The issue-21 checkpoints work with FocalHeadModel: stopped after epoch 1's checkpoint, resumed,
    the run ends as an uninterrupted one (--deterministic)."""
    from fusedfocal.cli.store.rundir import InjectedFault

    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "3"
    common = ["--head", "fused", "--loss", "la", "--data", xmc_data["train"], "--eval", xmc_data["test"],
              "--deterministic", "--patience", "0", *flags]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli("train", "--out", whole, *common) == 0
    monkeypatch.setenv("FUSEDFOCAL_FAULT", "checkpoint-1")
    monkeypatch.setenv("FUSEDFOCAL_FAULT_ACTION", "raise")
    with pytest.raises(InjectedFault):
        cli("train", "--out", run, *common)
    monkeypatch.delenv("FUSEDFOCAL_FAULT")
    assert (run / "backup").is_dir() and not (run / "metrics.json").exists()
    assert cli("train", "--out", run, "--resume") == 0
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in b["epochs"]] == [1, 2, 3]
    assert b["head"] == "fused" and b["loss"] == "la"
    for key in KEYS:
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6), key
    assert b["history"]["loss"] == pytest.approx(a["history"]["loss"], rel=1e-5)


def test_top_k_metrics_recall_by_group():
    from fusedfocal.cli.stages import fused

    top = np.array([[0, 1, 2, 3, 4], [5, 0, 1, 2, 3]])
    true = [np.array([0, 5]), np.array([5, 9])]
    m = fused.top_k_metrics(top, true, train_counts=np.array([9, 9, 9, 9, 9, 1, 1, 1, 1, 1]), train_docs=20,
                            boundaries=(5, 1))
    assert m["p@1"] == pytest.approx(1.0) and m["p@5"] == pytest.approx(0.2)
    assert m["recall@5"] == {"all": 0.5, "head": 1.0, "medium": None, "tail": pytest.approx(1 / 3)}
    assert m["pairs@5"] == {"all": 4, "head": 1, "medium": 0, "tail": 3}


def test_head_kwargs_match_the_dense_losses():
    from fusedfocal import losses
    from fusedfocal.cli.stages import fused

    counts, n = np.array([50, 5, 0]), 100
    la = fused.head_kwargs("la", {"tau": (0.5, "--loss-param")}, counts, n)
    pr = losses.priors_from_counts(np.maximum(counts, 1), n)
    np.testing.assert_allclose(la["logit_offsets"], 0.5 * np.log(pr / (1 - pr)))
    assert la["gamma"] == 0.0
    cb = fused.head_kwargs("cb", {"beta": (0.99, "--beta")}, counts, n)
    np.testing.assert_allclose(cb["class_weights"], losses.class_balanced_weights(np.maximum(counts, 1), 0.99))
    assert fused.head_kwargs("bce", {}, counts, n) == {"gamma": 0.0}
    assert fused.head_kwargs("focal", {"gamma": (1.5, "--gamma")}, counts, n) == {"gamma": 1.5, "alpha": None}


def test_compare_resume_keeps_finished_fused_runs(xmc_data, tmp_path, monkeypatch):
    """A fused comparison stopped inside its second loss resumes it and keeps the first (read back
    from its metrics.json: a fused run has no [N, C] scores to recompute)."""
    from fusedfocal.cli.store import rundir, safe
    from fusedfocal.cli.store.rundir import InjectedFault

    out = tmp_path / "cmp"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "1"
    argv = ["compare", "--losses", "bce,la", "--head", "fused", "--data", xmc_data["train"], "--out", out, *flags]
    monkeypatch.setattr(safe, "_FAULT_HITS", {})  # POINT#K counts the hits of this process
    monkeypatch.setenv("FUSEDFOCAL_FAULT", "checkpoint-1#2")
    monkeypatch.setenv("FUSEDFOCAL_FAULT_ACTION", "raise")
    with pytest.raises(InjectedFault):
        cli(*argv)
    monkeypatch.delenv("FUSEDFOCAL_FAULT")
    first = (out / "runs" / "bce" / "metrics.json").read_text()
    assert cli("compare", "--out", out, "--resume") == 0
    assert (out / "runs" / "bce" / "metrics.json").read_text() == first  # kept, not trained again
    payload = json.loads((out / "comparison.json").read_text())
    assert [r["loss"] for r in payload["results"]] == ["bce", "la"] and payload["eval_split"] == "validation"


@pytest.mark.parametrize("model", ["cnn", "transformer", "ngram"])
def test_build_fused_model_bias_at_priors_and_no_dense_logits(xmc_data, model):
    import keras

    from fusedfocal.cli import resolve
    from fusedfocal.cli.stages import fused, models

    args = _args("--data", xmc_data["train"], "--head", "fused", *FAST, "--model", model, "--ngram-hidden", "32")
    prep = resolve.prepare(args)
    spec = resolve.spec(args, "train", head=prep.head)
    m = fused.build_model(spec.model, spec.head, spec.optim, prep, "la", {}, keras.optimizers.Adam(), False)
    kw = fused.head_kwargs("la", {}, prep.fit_counts, prep.fit_docs)
    # the logit the loss sees (bias + la's offsets) starts at the prior log-odds
    np.testing.assert_allclose(m.head.bias.numpy() + kw["logit_offsets"],
                               models.prior_logits(prep.fit_counts / prep.fit_docs), rtol=1e-5, atol=1e-5)
    # a document's loss is its sum over labels: the head's mean over B x C with every weight C
    np.testing.assert_allclose(m.head._vector_weights["class_weights"].numpy(), prep.pipeline.num_labels)
    assert all(prep.pipeline.num_labels not in tuple(v.shape) for v in m.encoder.weights)
    assert m.head.get_config()["logit_offsets"] == "per_class"  # la: offsets in the weights, not the config
