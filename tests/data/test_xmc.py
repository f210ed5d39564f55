"""The synthetic XMC corpus: deterministic, power-law, ~5 labels a document, learnable, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from fusedfocal.data import (PipelineConfig, TextPipeline, synthetic_xmc_corpus, synthetic_xmc_splits,
                             xmc_label_names)

SMALL = dict(num_docs=3000, num_labels=4096, seed=3)


@pytest.fixture(scope="module")
def small():
    return synthetic_xmc_corpus(label_ids=True, **SMALL)


def test_deterministic_and_seeded(small):
    texts, ids = synthetic_xmc_corpus(label_ids=True, **SMALL)
    assert texts == small[0]
    assert all(np.array_equal(a, b) for a, b in zip(ids, small[1]))
    other = synthetic_xmc_corpus(**{**SMALL, "seed": 4})[0]
    assert other != texts


def test_names_and_ids_agree(small):
    _, names = synthetic_xmc_corpus(**SMALL)
    table = xmc_label_names(SMALL["num_labels"])
    assert table[0] == "label_0000" and table[-1] == "label_4095"
    assert names == [[table[i] for i in row] for row in small[1]]


def test_about_five_sorted_unique_labels_a_document(small):
    _, ids = small
    sizes = np.array([len(r) for r in ids])
    assert len(ids) == SMALL["num_docs"] and sizes.min() >= 1
    assert 4.3 < sizes.mean() <= 5.1, sizes.mean()  # 1 + Poisson(4) draws, duplicates of head labels dropped
    assert all((np.diff(r) > 0).all() and r.dtype == np.int64 for r in ids)
    assert max(int(r.max()) for r in ids) < SMALL["num_labels"]


@pytest.mark.parametrize("exponent", [0.8, 1.2])
def test_power_law_label_frequencies(exponent):
    _, ids = synthetic_xmc_corpus(num_docs=20000, num_labels=20000, exponent=exponent, seed=1, label_ids=True)
    counts = np.bincount(np.concatenate(ids), minlength=20000)
    # Ranks 2..200 (the head, where counts are large and duplicates within a document rare): log-log slope.
    rank = np.arange(2, 201)
    slope = np.polyfit(np.log(rank), np.log(counts[rank - 1]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.12), slope
    assert counts[0] > counts[99] > counts[9999]
    assert (counts == 0).any()  # rare labels may have no document, as in real XMC splits


def test_labels_are_learnable_from_their_words(small):
    texts, ids = small
    docs = [set(t.split()) for t in texts]
    for label in (0, 7, 40):
        with_label = [d for d, r in zip(docs, ids) if label in r]
        topic = {w for w in set.intersection(*with_label) if w.startswith("t")}
        assert len(topic) == 2, (label, topic)  # every document carries both words of its labels
        carrying = [r for d, r in zip(docs, ids) if topic <= d]
        precision = np.mean([label in r for r in carrying])
        assert precision > 0.9, (label, precision)  # and the pair rarely occurs without the label


def test_131072_labels_is_fast():
    start = time.perf_counter()
    texts, ids = synthetic_xmc_corpus(num_docs=20000, num_labels=131072, seed=0, label_ids=True)
    elapsed = time.perf_counter() - start
    assert len(texts) == 20000 and max(int(r.max()) for r in ids) > 100000
    assert elapsed < 20, elapsed  # about 0.5 s on 2 shared cores


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"`num_labels`.*Received: num_labels=0"):
        synthetic_xmc_corpus(num_labels=0)
    with pytest.raises(ValueError, match=r"`exponent`.*Received: exponent=0"):
        synthetic_xmc_corpus(num_docs=10, num_labels=10, exponent=0)
    with pytest.raises(ValueError, match=r"`topic_words`.*topic_words=10, words_per_label=2, num_labels=200"):
        synthetic_xmc_corpus(num_docs=10, num_labels=200, topic_words=10)


def test_splits_through_the_pipeline_as_label_ids():
    (tx, ty), (ex, ey) = synthetic_xmc_splits(seed=0, num_train=300, num_test=50, num_labels=512)
    assert len(tx) == 300 and len(ey) == 50
    config = PipelineConfig(max_length=64, batch_size=16, vocab_size=1500, label_format="ids", deterministic=True)
    pipe = TextPipeline.from_training_data(config, tx, ty)
    x, y = next(iter(pipe.dataset(tx, ty, training=False)))
    assert x["token_ids"].dtype == tf.int32 and x["token_ids"].shape[0] == 16
    assert isinstance(y, tf.RaggedTensor) and y.dtype == tf.int32 and y.shape.as_list() == [16, None]
    names = pipe.label_vocab.labels
    assert [sorted(names[i] for i in row) for row in y.to_list()] == [sorted(r) for r in ty[:16]]


def test_label_vocab_of_every_label_in_id_order(small):
    from fusedfocal.data import xmc_label_vocab

    _, names = synthetic_xmc_corpus(**SMALL)
    vocab = xmc_label_vocab(names, SMALL["num_labels"])
    assert len(vocab) == SMALL["num_labels"] and vocab.num_docs == SMALL["num_docs"]
    assert vocab.labels[:2] == ["label_0000", "label_0001"]
    np.testing.assert_array_equal(vocab.counts, np.bincount(np.concatenate(small[1]), minlength=SMALL["num_labels"]))
    assert [r.tolist() for r in vocab.encode_ids(names[:50])] == [r.tolist() for r in small[1][:50]]
    with pytest.raises(ValueError, match=r"`label_lists`.*Received: 'label_9999'"):
        xmc_label_vocab([["label_9999"]], 100)
