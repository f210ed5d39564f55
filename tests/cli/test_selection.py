"""Issue 14: best-epoch selection, label groups from the data, seeds with spread, the n-gram
model, and prediction traced once per model."""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pytest
from clitools import FAST, cli

from fusedfocal.cli import metrics as ev
from fusedfocal.cli.stages import ngram
from fusedfocal.cli.store import report, rundir, safe
from fusedfocal.cli.store.rundir import InjectedFault


# ----------------------------------------------------------------------------- fast
def test_tercile_groups_put_a_third_of_the_labels_in_each_group():
    counts = [3142, 900, 400, 250, 170, 120, 90, 80, 60, 50, 45, 35, 30, 26, 25, 22, 19, 16, 12]
    b, rule = ev.resolve_groups(None, counts)
    g = ev.label_groups(counts, b)
    assert [len(g[k]) for k in ("head", "medium", "tail")] == [6, 7, 6]
    assert "terciles" in rule
    # every label of a 28-label data set whose rarest label has 77 documents is no longer "head"
    many = list(range(77, 77 + 28 * 10, 10))
    g = ev.label_groups(many, ev.resolve_groups("auto", many)[0])
    assert min(len(v) for v in g.values()) >= 9
    assert ev.resolve_groups("huang", counts) == ((35, 8), "Huang et al. (2021)'s Reuters boundaries (--groups huang)")
    assert ev.resolve_groups((100, 30), counts)[0] == (100, 30)
    assert ev.tercile_groups([5, 5, 5]) == (6, 5)  # ties: head stays above tail


def _fake(name, f1s, seed_sd=None):
    block = {"micro": {"precision": f1s, "recall": f1s, "f1": f1s},
             "macro": {"precision": f1s, "recall": f1s, "f1": f1s},
             "groups": {g: {"macro": {"recall": f1s, "f1": f1s}} for g in ("head", "medium", "tail")}}
    return {"name": name, "metrics": {"global": block}, "thresholds": {"global": 0.5}, "train_seconds": 1.0,
            "settings": {"seed": 0}, "selection": {"best_epoch": 2}}


def test_seeds_mean_sd_and_ties_within_one_sd():
    a = report.aggregate([{**_fake("a", v), "settings": {"seed": s}} for s, v in [(0, 0.50), (1, 0.54), (2, 0.52)]])
    b = report.aggregate([{**_fake("b", v), "settings": {"seed": s}} for s, v in [(0, 0.51), (1, 0.51), (2, 0.51)]])
    c = report.aggregate([{**_fake("c", v), "settings": {"seed": s}} for s, v in [(0, 0.30), (1, 0.31), (2, 0.32)]])
    assert a["metrics"]["global"]["micro"]["f1"] == pytest.approx(0.52)
    assert a["metrics_sd"]["global"]["micro"]["f1"] == pytest.approx(0.02)
    assert a["seeds"] == [0, 1, 2] and report.chosen_epochs(a) == "2/2/2"
    rows = report.render_table([a, b, c], "global").splitlines()[2:]
    assert "52.0±2.0*" in rows[0]
    assert "51.0±0.0*" in rows[1]  # 1 point below the best mean, within a's sd: a tie
    assert "*" not in rows[2]      # 20 points below: no mark
    single = report.render_table([_fake("x", 0.5), _fake("y", 0.4)], "global").splitlines()[2:]
    assert "50.0*" in single[0] and "*" not in single[1] and "±" not in single[0]


def _reference_bag(ids, keys, idf, kernel, vocab):
    out = []
    for row in ids:
        feats = {}
        for t in row:
            if t >= ngram.NUM_SPECIAL:
                feats[t] = feats.get(t, 0) + 1
        for a, b in zip(row[:-1], row[1:]):
            p = np.searchsorted(keys, a * vocab + b)
            if a > 0 and b > 0 and p < len(keys) and keys[p] == a * vocab + b:
                feats[vocab + p] = feats.get(vocab + p, 0) + 1
        f = np.array(list(feats))
        w = (1 + np.log([feats[x] for x in f])) * idf[f]
        out.append((w[:, None] / np.linalg.norm(w) * kernel[f]).sum(0))
    return np.array(out)


def test_ngram_bag_is_tfidf_of_unigrams_and_bigrams():
    rng = np.random.default_rng(0)
    vocab = 50
    ids = rng.integers(5, 20, size=(5, 12)).astype(np.int32)
    ids[1, 8:] = 0                                  # padding
    ids[2] = np.r_[2, 7, 7, 7, 8, 3, [0] * 6]      # [CLS] ... [SEP], a repeated word
    keys, idf = ngram.ngram_statistics(ids, vocab, min_df=1)
    assert np.all(np.diff(keys) > 0) and len(idf) == vocab + len(keys)
    df7 = sum(7 in row for row in ids)
    assert idf[7] == pytest.approx(np.log((1 + len(ids)) / (1 + df7)) + 1)  # scikit-learn's smooth idf
    bag = ngram.NgramBag(vocab, len(keys), 3, kernel_initializer=keras.initializers.RandomNormal(seed=1))
    bag.build((None, None))
    bag.set_statistics(keys, idf)
    np.testing.assert_allclose(bag(ids).numpy(), _reference_bag(ids, keys, idf, bag.kernel.numpy(), vocab),
                               rtol=1e-5, atol=1e-6)
    few, _ = ngram.ngram_statistics(ids, vocab, max_bigrams=4, min_df=1)
    assert len(few) == 4 and set(few) <= set(keys)
    with pytest.raises(ValueError, match="weighting"):
        ngram.NgramBag(vocab, 0, 3, weighting="bm25")


# ----------------------------------------------------------------------------- training
_drop = {i for i, a in enumerate(FAST) if a in ("--filters", "--embed-dim")}
NGRAM = [a for i, a in enumerate(FAST) if i not in _drop and i - 1 not in _drop] + [
    "--model", "ngram", "--learning-rate", "0.05"]


def _ngram_flags(epochs):
    flags = list(NGRAM)
    flags[flags.index("--epochs") + 1] = str(epochs)
    return flags


@pytest.mark.slow
def test_train_keeps_the_best_epoch_and_stops_early(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, "--loss", "bce",
               "--patience", "2", *_ngram_flags(8)) == 0
    m = json.loads((out / "metrics.json").read_text())
    curve = m["history"]["val_macro_f1"]
    sel = m["selection"]
    assert sel["monitor"] == "val_macro_f1" and len(curve) == sel["epochs_trained"]
    assert sel["best_epoch"] == int(np.argmax(curve)) + 1  # the first best
    assert sel["best_score"] == pytest.approx(max(curve))
    assert sel["stopped_early"] == (sel["epochs_trained"] < 8)
    if sel["stopped_early"]:
        assert sel["epochs_trained"] - sel["best_epoch"] == 2
    # the kept model is the best epoch's: its thresholds are the ones tuned after that epoch
    th = json.loads((out / "thresholds.json").read_text())
    assert th["global"] == m["history"]["val_threshold"][sel["best_epoch"] - 1]
    assert m["groups"]["rule"].startswith("terciles") and not (out / "backup").exists()


@pytest.mark.slow
def test_resume_keeps_the_best_epoch_of_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    flags = ["--data", tiny_data["train"], "--eval", tiny_data["test"], "--loss", "bce", "--deterministic",
             "--select", "val_loss", "--patience", "0", *_ngram_flags(4)]
    assert cli("train", "--out", tmp_path / "ref", *flags) == 0
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, "checkpoint-3")
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    with pytest.raises(InjectedFault):
        cli("train", "--out", tmp_path / "cut", *flags)
    monkeypatch.delenv(rundir.FAULT_ENV)
    assert any(p.name.startswith("best-epoch-") for p in (tmp_path / "cut" / "backup").iterdir())
    assert cli("train", "--out", tmp_path / "cut", "--resume") == 0
    ref, got = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ref", "cut"))
    assert got["selection"] == ref["selection"]
    assert got["metrics"] == ref["metrics"]


@pytest.mark.slow
def test_compare_seeds_reports_mean_and_sd(tiny_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli("compare", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out,
               "--losses", "bce,focal", "--seeds", "0,1", *_ngram_flags(2)) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # One WordPiece vocabulary for the data set, learnt once and shared by both seeds' runs.
    assert (captured.out + captured.err).count("WordPiece vocabulary:") == 1
    vocabs = {(d / "wordpiece_vocab.txt").read_text() for d in (out / "runs").iterdir()}
    assert len(vocabs) == 1
    assert "seeds 0,1 (mean±sd)" in printed and "±" in printed and "terciles of the 6 labels" in printed
    c = json.loads((out / "comparison.json").read_text())
    assert c["seeds"] == [0, 1]
    for r in c["results"]:
        assert r["seeds"] == [0, 1] and len(r["per_seed"]) == 2
        f1s = [p["macro_f1"] for p in r["per_seed"]]
        assert r["metrics"]["global"]["macro"]["f1"] == pytest.approx(np.mean(f1s))
        assert r["metrics_sd"]["global"]["macro"]["f1"] == pytest.approx(np.std(f1s, ddof=1))
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["bce-seed0", "bce-seed1", "focal-seed0",
                                                                "focal-seed1"]


@pytest.mark.slow
def test_prediction_does_not_retrace(trained_run, tiny_data):
    # Runs after the training tests above in one process: a tf.function per model used to be traced
    # once per model and per batch shape, and TensorFlow warned after five traces of its code.
    from fusedfocal.cli.stages.load import load_run
    from fusedfocal.cli.stages.models import predict_scores

    model, pipe, _, _ = load_run(trained_run)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        texts = tiny_data["texts"]
        first = predict_scores(model, pipe, texts[:3])
        for n in (1, 7, 60, 3, 260, 2, 5):
            scores = predict_scores(model, pipe, (texts * 5)[:n], batch_size=64)
            assert scores.shape == (n, pipe.num_labels)
    finally:
        tf_logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()], [r.getMessage() for r in records]
    np.testing.assert_allclose(predict_scores(model, pipe, texts[:3], batch_size=64), first, rtol=1e-6)
