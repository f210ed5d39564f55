"""LabelVocab: order, counts, priors, JSON round trip, multi-hot with unknowns."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from fusedfocal.data import LabelVocab

LABEL_LISTS = [["b", "a"], ["a"], ["c", "a", "a"], [], ["b"], ["d"]]


def test_order_counts_priors():
    vocab = LabelVocab.build(LABEL_LISTS)
    # a: 3 docs (repeat within a doc counts once), b: 2, c and d: 1 (ties by name).
    assert vocab.labels == ["a", "b", "c", "d"]
    assert vocab.counts.dtype == np.int64
    np.testing.assert_array_equal(vocab.counts, [3, 2, 1, 1])
    assert vocab.num_docs == 6 and len(vocab) == 4
    np.testing.assert_allclose(vocab.priors, [3 / 6, 2 / 6, 1 / 6, 1 / 6])


def test_min_count_drops_rare_labels():
    vocab = LabelVocab.build(LABEL_LISTS, min_count=2)
    assert vocab.labels == ["a", "b"] and vocab.num_docs == 6


def test_save_load_round_trip(tmp_path):
    vocab = LabelVocab.build(LABEL_LISTS)
    path = vocab.save(tmp_path / "sub" / "labels.json")
    loaded = LabelVocab.load(path)
    assert loaded == vocab
    assert loaded.labels == vocab.labels and loaded.num_docs == 6
    np.testing.assert_array_equal(loaded.counts, vocab.counts)


def test_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"labels": ["a"]}')
    with pytest.raises(ValueError, match=r"x\.json: not a label vocabulary"):
        LabelVocab.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"y\.json: not a label vocabulary \(malformed JSON"):
        LabelVocab.load(tmp_path / "y.json")


def test_encode_multi_hot_and_unknown():
    vocab = LabelVocab.build(LABEL_LISTS)
    multi_hot, unknown = vocab.encode([["d", "zz"], [], ["a", "b", "zz", "yy"]])
    assert multi_hot.dtype == np.float32 and multi_hot.shape == (3, 4)
    np.testing.assert_array_equal(multi_hot, [[0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]])
    assert unknown == collections.Counter({"zz": 2, "yy": 1})
    assert vocab.decode(multi_hot) == [["d"], [], ["a", "b"]]


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        LabelVocab(["a", "a"], [1, 1], 2)


def test_encode_ids_matches_multi_hot():
    vocab = LabelVocab.build([["b", "a"], ["a"], ["c", "a", "b"]])
    lists = [["c", "a", "a"], [], ["zzz", "b"]]
    ids = vocab.encode_ids(lists)
    multi_hot, _ = vocab.encode(lists)
    assert [r.tolist() for r in ids] == [np.flatnonzero(row).tolist() for row in multi_hot]
    assert all(r.dtype == np.int64 for r in ids) and ids[1].size == 0
