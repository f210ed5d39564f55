"""TextPipeline: element structure, multi-hot, determinism, sharding, batching modes."""

from __future__ import annotations

import collections
import string

import numpy as np
import pytest
import tensorflow as tf

from fusedfocal.data import (CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, LabelVocab, PipelineConfig, TextPipeline,
                             write_jsonl, write_tfrecord)

WORDS = ["cocoa", "prices", "rose", "wheat", "and", "corn", "exports", "fell", "gold", "hits", "record", "the"]
VOCAB = list(SPECIAL_TOKENS) + list(".,!?") + list(string.ascii_lowercase) + [
    "##" + c for c in string.ascii_lowercase] + WORDS
TOPICS = ["cocoa", "wheat", "corn", "gold", "grain", "oil"]


def _corpus(n=30, seed=0):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.choice(WORDS + ["xylophone", "Zebra!"], size=int(rng.integers(1, 25)))
        texts.append(f"doc{i} " + " ".join(words))
        k = int(rng.integers(0, 4))
        labels.append(sorted(rng.choice(TOPICS, size=k, replace=False).tolist()))
    return texts, labels


TEXTS, LABELS = _corpus()
LABEL_VOCAB = LabelVocab.build(LABELS)


def _pipe(**overrides) -> TextPipeline:
    cfg = dict(max_length=16, batch_size=4, deterministic=True, seed=0)
    cfg.update(overrides)
    return TextPipeline(PipelineConfig(**cfg), VOCAB, LABEL_VOCAB)


def _write(tmp_path, fmt):
    if fmt.startswith("jsonl"):
        return write_jsonl(tmp_path / f"d.{fmt}", TEXTS, LABELS)
    if fmt.startswith("tfrecord"):
        return write_tfrecord(tmp_path / f"d.{fmt}", TEXTS, LABELS)
    sep = "," if fmt.startswith("csv") else "\t"
    lines = ["text" + sep + "labels"] + [t + sep + "|".join(ls) for t, ls in zip(TEXTS, LABELS)]
    path = tmp_path / f"d.{fmt}"
    data = ("\n".join(lines) + "\n").encode()
    if fmt.endswith(".gz"):
        import gzip
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _collect(ds):
    ids, ys, texts = [], [], []
    for x, y in ds:
        ids.extend(list(x["token_ids"].numpy()))
        ys.append(y.numpy())
        if "text" in x:
            texts.extend(t.decode() for t in x["text"].numpy())
    return ids, np.concatenate(ys), texts


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "tsv.gz", "tfrecord", "tfrecord.gz"])
def test_first_batch_keys_shapes_dtypes(tmp_path, fmt):
    pipe = _pipe()
    ds = pipe.dataset_from_files(_write(tmp_path, fmt), training=True)
    features, labels = next(iter(ds))
    assert set(features) == {"token_ids"}
    assert features["token_ids"].dtype == tf.int32
    assert features["token_ids"].shape[0] == 4 and features["token_ids"].shape[1] <= 16
    assert labels.dtype == tf.float32 and labels.shape == (4, len(LABEL_VOCAB))
    assert pipe.read_stats.records == len(TEXTS)
    assert ds.element_spec[0]["token_ids"].shape.as_list() == [None, None]


def test_multi_hot_matches_source_labels_for_every_document(tmp_path):
    pipe = _pipe(include_text=True, batch_size=7)
    ds = pipe.dataset_from_files(_write(tmp_path, "jsonl"), training=False)
    _, ys, texts = _collect(ds)
    assert texts == TEXTS  # evaluation keeps the input order
    index = {name: j for j, name in enumerate(LABEL_VOCAB.labels)}
    for row, labels in zip(ys, LABELS):
        expected = np.zeros(len(index), np.float32)
        expected[[index[n] for n in labels]] = 1.0
        np.testing.assert_array_equal(row, expected)
    assert ys.sum() == sum(len(x) for x in LABELS)


def test_token_layout_padding_and_truncation():
    pipe = _pipe(max_length=8, cache=False)
    long_text = "cocoa prices rose and the corn exports fell and gold hits record"
    ids = pipe.tokenize(["", "gold", long_text]).numpy()
    assert ids.dtype == np.int32 and ids.shape == (3, 8)
    np.testing.assert_array_equal(ids[0], [CLS_ID, SEP_ID] + [PAD_ID] * 6)
    np.testing.assert_array_equal(ids[1, :3], [CLS_ID, VOCAB.index("gold"), SEP_ID])
    assert (ids[1, 3:] == PAD_ID).all()
    np.testing.assert_array_equal(ids[2], [CLS_ID] + [VOCAB.index(w) for w in long_text.split()[:6]] + [SEP_ID])
    # Lower-casing, accents and unknown pieces.
    np.testing.assert_array_equal(pipe.tokenize(["GOLD Gôld ☃"]).numpy()[0, 1:4], [VOCAB.index("gold")] * 2 + [1])
    no_special = _pipe(max_length=3, add_special_tokens=False).tokenize(["gold hits record the"]).numpy()
    np.testing.assert_array_equal(no_special[0], [VOCAB.index(w) for w in ["gold", "hits", "record"]])


def test_tokenize_matches_dataset():
    pipe = _pipe(batch_size=len(TEXTS))
    ids, _, _ = _collect(pipe.dataset(TEXTS, LABELS, training=False))
    direct = pipe.tokenize(TEXTS).numpy()
    np.testing.assert_array_equal(np.stack(ids), direct)


@pytest.mark.parametrize("cache", [True, False])
def test_cache_does_not_change_elements(cache):
    ids, ys, _ = _collect(_pipe(cache=cache).dataset(TEXTS, LABELS, training=True))
    ids2, ys2, _ = _collect(_pipe(cache=not cache).dataset(TEXTS, LABELS, training=True))
    assert [a.tolist() for a in ids] == [a.tolist() for a in ids2]
    np.testing.assert_array_equal(ys, ys2)


@pytest.mark.parametrize("cache", [True, False])
def test_fixed_shape_static_and_drops_training_remainder(cache):
    pipe = _pipe(fixed_shape=True, batch_size=8, cache=cache)
    ds = pipe.dataset(TEXTS, LABELS, training=True)
    assert ds.element_spec[0]["token_ids"].shape.as_list() == [8, 16]
    assert ds.element_spec[1].shape.as_list() == [8, len(LABEL_VOCAB)]
    batches = list(ds)
    assert len(batches) == len(TEXTS) // 8
    assert all(x["token_ids"].shape == (8, 16) for x, _ in batches)
    eval_ids, _, _ = _collect(pipe.dataset(TEXTS, LABELS, training=False))
    assert len(eval_ids) == len(TEXTS)  # evaluation keeps every document
    assert all(len(row) == 16 for row in eval_ids)


def test_bucket_by_sequence_length():
    pipe = _pipe(bucket_boundaries=(6, 12), include_text=True, max_length=32)
    lengths = {}
    seen = []
    for x, _ in pipe.dataset(TEXTS, LABELS, training=True):
        rows = x["token_ids"].numpy()
        row_lengths = (rows != PAD_ID).sum(axis=1)
        buckets = np.digitize(row_lengths, [6, 12])
        assert len(set(buckets)) == 1, row_lengths  # one bucket per batch
        assert rows.shape[1] == row_lengths.max()
        seen.extend(t.decode() for t in x["text"].numpy())
        lengths.update(zip(seen[-len(rows):], row_lengths))
    assert sorted(seen) == sorted(TEXTS)
    assert len(set(np.digitize(list(lengths.values()), [6, 12]))) >= 2


def test_seeded_determinism_and_reshuffle():
    def batches(seed, epochs=2):
        ds = _pipe(seed=seed, include_text=True).dataset(TEXTS, LABELS, training=True)
        return [_collect(ds)[2] for _ in range(epochs)]

    first = batches(7)
    assert batches(7) == first  # same seed, same order, every epoch
    assert first[0] != first[1]  # reshuffled between epochs
    assert sorted(first[0]) == sorted(TEXTS)
    assert batches(8)[0] != first[0]


def test_shards_disjoint_and_covering():
    shards = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        pipe = _pipe(batch_size=8, include_text=True)
        ds = pipe.dataset(TEXTS, LABELS, training=True, input_context=ctx)
        sizes = [x["token_ids"].shape[0] for x, _ in ds]
        assert max(sizes) == 4  # per-replica batch size = 8 / 2
        shards.append(_collect(ds)[2])
        assert pipe.num_examples == len(shards[-1])
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(TEXTS)


def test_distribute_datasets_from_function():
    strategy = tf.distribute.get_strategy()
    pipe = _pipe(batch_size=8)
    contexts = []

    def dataset_fn(ctx):
        contexts.append(ctx)
        return pipe.dataset(TEXTS, LABELS, training=True, input_context=ctx)

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    features, labels = next(iter(dist))
    assert isinstance(contexts[0], tf.distribute.InputContext)
    assert features["token_ids"].shape[0] == 8 and labels.shape == (8, len(LABEL_VOCAB))


def test_unknown_eval_labels_counted_warned_and_ignored():
    pipe = _pipe(batch_size=3)
    eval_labels = [["gold", "zz"], ["zz"], ["yy", "cocoa"]]
    with pytest.warns(UserWarning, match=r"3 label occurrence\(s\) of 2 name\(s\) in evaluation data.*'zz' \(2\)"):
        ds = pipe.dataset(["a", "b", "c"], eval_labels, training=False)
    assert pipe.unknown_label_counts == collections.Counter({"zz": 2, "yy": 1})
    _, ys, _ = _collect(ds)
    expected, _ = LABEL_VOCAB.encode(eval_labels)
    np.testing.assert_array_equal(ys, expected)
    assert ys[1].sum() == 0  # an unknown-only row maps onto no class


def test_empty_text_and_no_labels_in_dataset():
    ids, ys, _ = _collect(_pipe().dataset(["", "gold"], [[], ["gold"]], training=False))
    np.testing.assert_array_equal(ids[0][:2], [CLS_ID, SEP_ID])
    assert ys[0].sum() == 0 and ys[1].sum() == 1


def test_save_and_load_vocabularies(tmp_path):
    pipe = _pipe()
    pipe.save_vocabularies(tmp_path / "vocab")
    loaded = TextPipeline.from_directory(pipe.config, tmp_path / "vocab")
    assert loaded.wordpiece_vocab == VOCAB and loaded.label_vocab == LABEL_VOCAB
    np.testing.assert_array_equal(loaded.tokenize(TEXTS[:3]), pipe.tokenize(TEXTS[:3]))


def test_invalid_config_and_inputs():
    with pytest.raises(ValueError, match="Invalid value for argument `batch_size`"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ValueError, match="bucket_boundaries"):
        PipelineConfig(bucket_boundaries=(10, 5))
    with pytest.raises(ValueError, match="wordpiece_vocab"):
        TextPipeline(PipelineConfig(), ["a", "b"], LABEL_VOCAB)
    with pytest.raises(ValueError, match="one label list per text"):
        _pipe().dataset(["a"], [], training=True)


def test_keras_fit_one_epoch():
    import keras

    pipe = _pipe(batch_size=8, fixed_shape=True)
    model = keras.Sequential([
        keras.Input((16,), dtype="int32"),
        keras.layers.Embedding(len(VOCAB), 8, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(len(LABEL_VOCAB)),
    ])
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    ds = pipe.dataset(TEXTS, LABELS, training=True).map(lambda x, y: (x["token_ids"], y))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# -- label_format="ids": ragged label ids instead of multi-hot (issue 19) -------------------------

# Duplicates and an unknown name, to check that ids are deduplicated and unknown names dropped.
ID_LABELS = [list(x) for x in LABELS]
ID_LABELS[0] = ID_LABELS[0] + ["cocoa", "cocoa", "not-a-label"]


def _ids_and_multi_hot(**overrides):
    with pytest.warns(UserWarning, match="not-a-label"):
        ids = _pipe(label_format="ids", **overrides).dataset(TEXTS, ID_LABELS, training=False)
    with pytest.warns(UserWarning, match="not-a-label"):
        dense = _pipe(**overrides).dataset(TEXTS, ID_LABELS, training=False)
    return ids, dense


@pytest.mark.parametrize("route", [dict(cache=False), dict(cache=True), dict(bucket_boundaries=(6, 10))],
                         ids=["uncached", "cached", "bucketed"])
def test_label_ids_first_batch_and_match_multi_hot(route):
    ids_ds, dense_ds = _ids_and_multi_hot(**route)
    spec = ids_ds.element_spec[1]
    assert isinstance(spec, tf.RaggedTensorSpec), spec
    assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, None] and spec.ragged_rank == 1
    first = next(iter(ids_ds))[1]
    assert isinstance(first, tf.RaggedTensor) and first.dtype == tf.int32 and int(first.nrows()) == 4
    rows = [list(r) for x, y in ids_ds for r in y.to_list()]
    multi_hot = np.concatenate([y.numpy() for _, y in dense_ds])
    assert len(rows) == len(TEXTS)
    for row, hot in zip(rows, multi_hot):
        assert row == sorted(set(row)), row  # sorted and unique
        np.testing.assert_array_equal(row, np.flatnonzero(hot))
    assert rows[0].count(LABEL_VOCAB.index["cocoa"]) == 1
    assert any(not r for r in rows)  # documents without labels give empty rows


@pytest.mark.parametrize("cache", [False, True])
def test_padded_label_ids_static_width(cache):
    with pytest.warns(UserWarning, match="not-a-label"):
        ds = _pipe(label_format="padded_ids", cache=cache).dataset(TEXTS, ID_LABELS, training=False)
    width = max(len(set(x) & set(LABEL_VOCAB.labels)) for x in ID_LABELS)
    assert ds.element_spec[1].shape.as_list() == [None, width] and ds.element_spec[1].dtype == tf.int32
    with pytest.warns(UserWarning, match="not-a-label"):
        ragged = _pipe(label_format="ids", cache=cache).dataset(TEXTS, ID_LABELS, training=False)
    for (_, padded), (_, ids) in zip(ds, ragged):
        np.testing.assert_array_equal(padded.numpy(), ids.to_tensor(default_value=-1, shape=[None, width]).numpy())


def test_label_ids_training_route_is_deterministic():
    def collect():
        ds = _pipe(label_format="ids", cache=False).dataset(TEXTS, LABELS, training=True)
        return [(x["token_ids"].numpy().tolist(), y.to_list()) for x, y in ds]

    assert collect() == collect()


def test_label_format_default_and_invalid():
    assert PipelineConfig().label_format == "multi_hot"
    with pytest.raises(ValueError, match=r"`label_format`.*Received: label_format='sparse'"):
        PipelineConfig(label_format="sparse")
