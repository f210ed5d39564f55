"""Fixtures of the CLI tests: tiny synthetic files and one finished run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clitools import FAST, TEST_DOCS, TRAIN_DOCS, cli  # noqa: E402

from fusedfocal.data import synthetic_corpus, write_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    texts, labels = synthetic_corpus(num_docs=TRAIN_DOCS + TEST_DOCS, num_labels=6, head_tail_ratio=20.0, seed=3,
                                     mean_words=15, num_filler_words=200)
    train = write_jsonl(d / "train.jsonl", texts[:TRAIN_DOCS], labels[:TRAIN_DOCS])
    test = write_jsonl(d / "test.jsonl", texts[TRAIN_DOCS:], labels[TRAIN_DOCS:])
    # Evaluation data with one label the model never saw.
    odd = write_jsonl(d / "test_unknown.jsonl", texts[TRAIN_DOCS:], [ls + ["zz_unseen"] for ls in labels[TRAIN_DOCS:]])
    return {"train": train, "test": test, "unknown": odd, "dir": d,
            "texts": texts[TRAIN_DOCS:], "labels": labels[TRAIN_DOCS:]}


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "focal"
    code = cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, "--loss", "focal",
               "--gamma", "2", "--profile", "2", *FAST)
    assert code == 0
    return run


@pytest.fixture(autouse=True)
def _fresh_fault_counts(monkeypatch):
    """``FUSEDFOCAL_FAULT=POINT#K`` counts the hits of this process, so a test that arms a point
    must not inherit the hits of the tests before it (a fault armed for the first hit never
    fired when another test had already passed that point)."""
    from fusedfocal.cli.store import rundir, safe

    monkeypatch.setattr(safe, "_FAULT_HITS", {})
