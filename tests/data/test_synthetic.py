"""The synthetic long-tailed corpus: deterministic, Zipf-like, multi-label."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from fusedfocal.data import read_records, synthetic_corpus, synthetic_splits, write_jsonl


@pytest.fixture(scope="module")
def default_corpus():
    return synthetic_corpus()


def _counts(label_lists, num_labels=19):
    c = collections.Counter(n for labels in label_lists for n in labels)
    return np.array([c[f"label_{k:02d}"] for k in range(num_labels)])


def test_deterministic():
    first = synthetic_corpus(num_docs=400, seed=5)
    assert synthetic_corpus(num_docs=400, seed=5) == first
    assert synthetic_corpus(num_docs=400, seed=6)[0] != first[0]


def test_long_tail_with_asked_ratio(default_corpus):
    texts, labels = default_corpus
    assert len(texts) == 4000
    counts = _counts(labels)
    assert (np.diff(counts[:5]) < 0).all()  # the head decreases
    ratio = counts[0] / counts[-1]
    assert 100 < ratio < 400, ratio  # asked 200; noise and rounding move it a little
    assert counts[-1] >= 8  # a tail label still has a handful of documents


@pytest.mark.parametrize("ratio", [100.0, 1000.0])
def test_ratio_parameter(ratio):
    _, labels = synthetic_corpus(num_docs=3000, head_tail_ratio=ratio, flip_rate=0.0, seed=2)
    counts = _counts(labels)
    assert counts[0] / counts[-1] == pytest.approx(ratio, rel=0.35)


def test_several_labels_per_doc(default_corpus):
    _, labels = default_corpus
    sizes = np.array([len(x) for x in labels])
    assert 1.2 < sizes.mean() < 1.6
    assert (sizes >= 2).mean() > 0.2
    assert sizes.max() >= 3
    assert all(len(set(x)) == len(x) for x in labels)


def test_topic_words_carry_signal(default_corpus):
    texts, labels = default_corpus
    # A label's documents share words that are rare elsewhere (the topic words).
    docs = [set(t.lower().replace(".", "").split()) for t in texts]
    with_label = [d for d, ls in zip(docs, labels) if "label_05" in ls]
    without = [d for d, ls in zip(docs, labels) if "label_05" not in ls]
    inside = collections.Counter(w for d in with_label for w in d)
    outside = collections.Counter(w for d in without for w in d)
    lift = {w: (n / len(with_label)) / ((outside[w] + 1) / len(without)) for w, n in inside.items()
            if n / len(with_label) > 0.25}
    assert max(lift.values()) > 5
    assert all(outside[w] > 0 for w in lift)


def test_splits_and_jsonl_round_trip(tmp_path):
    (tx, ty), (ex, ey) = synthetic_splits(seed=0, num_train=300, num_test=100)
    assert len(tx) == 300 and len(ex) == 100
    assert not set(tx) & set(ex)
    path = write_jsonl(tmp_path / "train.jsonl.gz", tx, ty)
    texts, labels, stats = read_records(path)
    assert texts == tx and labels == ty and stats.num_skipped == 0


def test_tail_labels_keep_words_of_their_own(default_corpus):
    # Issue 14: every document of a label has one of the label's own words, and distractors follow
    # the label frequencies, so even the rarest label has a word that nearly only its documents have.
    texts, labels = default_corpus
    docs = [set(t.lower().replace(".", "").split()) for t in texts]
    for name in ("label_16", "label_17", "label_18"):
        with_label = [d for d, ls in zip(docs, labels) if name in ls]
        without = [d for d, ls in zip(docs, labels) if name not in ls]
        inside = collections.Counter(w for d in with_label for w in d)
        outside = collections.Counter(w for d in without for w in d)
        lift = max((n / len(with_label)) / ((outside[w] + 1) / len(without)) for w, n in inside.items()
                   if n / len(with_label) >= 0.15)
        assert lift > 20, (name, lift)
