"""Reuters-21578 (ApteMod) from ../shared: loads with nothing but the paths.

Research-only data: read in place, never copied. Skipped when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fusedfocal.data import SPECIAL_TOKENS, LabelVocab, PipelineConfig, TextPipeline, read_records, reuters_dir

pytestmark = pytest.mark.reuters


def _reuters() -> Path:
    env = os.environ.get("FUSEDFOCAL_REUTERS_DIR")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "reuters21578"
    if not (d / "train.jsonl.gz").is_file():
        pytest.skip(f"Reuters-21578 not found at {d} (set FUSEDFOCAL_REUTERS_DIR to its folder)")
    return d


@pytest.fixture(scope="module")
def train():
    texts, labels, stats = read_records(_reuters() / "train.jsonl.gz")
    return texts, labels, stats


def test_reuters_dir_found():
    d = _reuters()
    assert reuters_dir() is not None
    assert (reuters_dir() / "test.jsonl.gz").samefile(d / "test.jsonl.gz")


def test_train_loads_with_only_the_path(train):
    texts, labels, stats = train
    assert len(texts) == 7769 and stats.num_skipped == 0
    vocab = LabelVocab.build(labels)
    assert len(vocab) == 90
    assert vocab.labels[0] == "earn" and vocab.counts[0] == 2877
    assert vocab.counts[-1] == 1
    assert np.mean([len(x) for x in labels]) == pytest.approx(1.24, abs=0.01)


def test_multi_hot_for_a_test_sample(train):
    texts, labels, _ = read_records(_reuters() / "test.jsonl.gz")
    assert len(texts) == 3019
    label_vocab = LabelVocab.build(train[1])
    tokens = list(SPECIAL_TOKENS) + list(".,-abcdefghijklmnopqrstuvwxyz0123456789") + ["said", "the", "mln"]
    pipe = TextPipeline(PipelineConfig(batch_size=64, max_length=64), tokens, label_vocab)
    sample_x, sample_y = texts[:300], labels[:300]
    ds = pipe.dataset(sample_x, sample_y, training=False)
    got = np.concatenate([y.numpy() for _, y in ds])
    index = {n: j for j, n in enumerate(label_vocab.labels)}
    expected = np.zeros_like(got)
    for i, names in enumerate(sample_y):
        for n in names:
            if n in index:
                expected[i, index[n]] = 1
    np.testing.assert_array_equal(got, expected)
    assert got.sum() > 300
