"""Throughput of the text pipeline: documents/s and tokens/s for one epoch.

Providers, all producing ``(int32 ids [B, <=T], float32 multi-hot [B, C])``
batches of 32 with the same shuffling:

* ``fusedfocal``: :class:`fusedfocal.data.TextPipeline` with ``cache=False``
  (every epoch tokenizes: the fair comparison).
* ``fusedfocal_cached``: ``cache=True``; the timed epochs read the cached ids.
* ``fusedfocal_cache_fill``: ``cache=True``, first epoch (dataset rebuilt in
  every round, so graph construction is included).
* ``fusedfocal_per_doc``: the same stages but tokenizing one document per
  ``map`` call (what chunked tokenization replaces).
* ``keras_textvectorization``: Keras 3 ``TextVectorization(output_mode="int")``
  adapted on the training texts, in a ``tf.data`` map, same multi-hot labels.
* ``python_loop``: ``str.lower().split()`` + dict lookup in a Python generator
  feeding ``tf.data.Dataset.from_generator``.

Each round consumes one full epoch (``Dataset.reduce``, no Python per batch) after ``warmup_rounds`` warm-up epochs.
``docs_per_s = docs / median epoch time``; ``tokens_per_s`` counts non-padding
ids. ``pytest benchmarks/bench_pipeline.py --benchmark --benchmark-json
benchmarks/results/pipeline-<date>.json`` runs the full sizes; plain pytest
runs one round on 200 documents. ``benchmarks/pipeline_report.py`` prints
the table with the ratios.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fusedfocal.data import (LabelVocab, PipelineConfig, TextPipeline, build_wordpiece_vocab, read_records,
                             synthetic_corpus)

PROVIDERS = ["fusedfocal", "fusedfocal_cached", "fusedfocal_cache_fill", "fusedfocal_per_doc",
             "keras_textvectorization", "python_loop"]
BATCH, MAX_LEN, VOCAB_SIZE, SMOKE_DOCS = 32, 128, 8000, 200


def _reuters_train() -> Path | None:
    env = os.environ.get("FUSEDFOCAL_REUTERS_DIR")
    d = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "reuters21578"
    return d / "train.jsonl.gz" if (d / "train.jsonl.gz").is_file() else None


_CORPORA: dict = {}


def _corpus(name: str, full: bool):
    """(texts, label_lists, wordpiece tokens, LabelVocab), built once per session."""
    key = (name, full)
    if key not in _CORPORA:
        if name == "reuters":
            path = _reuters_train()
            if path is None:
                pytest.skip("Reuters-21578 not found at ../shared/data/reuters21578 (set FUSEDFOCAL_REUTERS_DIR)")
            texts, labels, _ = read_records(path)
        else:
            texts, labels = synthetic_corpus(num_docs=4000, seed=0)
        if not full:
            texts, labels = texts[:SMOKE_DOCS], labels[:SMOKE_DOCS]
        tokens = build_wordpiece_vocab(texts, VOCAB_SIZE if full else 1000)
        _CORPORA[key] = (texts, labels, tokens, LabelVocab.build(labels))
    return _CORPORA[key]


def _fusedfocal(texts, labels, tokens, label_vocab, *, cache=False):
    pipe = TextPipeline(PipelineConfig(max_length=MAX_LEN, batch_size=BATCH, cache=cache), tokens, label_vocab)
    return pipe.dataset(texts, labels, training=True)


def _fusedfocal_per_doc(texts, labels, tokens, label_vocab):
    pipe = TextPipeline(PipelineConfig(max_length=MAX_LEN, batch_size=BATCH, cache=False), tokens, label_vocab)

    def one(text, names):
        ids = pipe._tokenize(text[tf.newaxis])
        return ids.flat_values, pipe._encode_labels(tf.RaggedTensor.from_tensor(names[tf.newaxis]))[0]

    ds = pipe._source(texts, labels).shuffle(10000, seed=0).map(one, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.padded_batch(BATCH).prefetch(tf.data.AUTOTUNE)


def _keras_textvectorization(texts, labels, tokens, label_vocab):
    import keras

    pipe = TextPipeline(PipelineConfig(max_length=MAX_LEN, batch_size=BATCH), tokens, label_vocab)
    vectorize = keras.layers.TextVectorization(max_tokens=VOCAB_SIZE, output_mode="int",
                                               output_sequence_length=MAX_LEN)
    vectorize.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(256))

    def encode(text, names):
        return tf.cast(vectorize(text), tf.int32), pipe._encode_labels(names)

    ds = pipe._source(texts, labels).shuffle(10000, seed=0).batch(BATCH)
    return ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _python_loop(texts, labels, tokens, label_vocab):
    counts: dict[str, int] = {}
    for t in texts:
        for w in t.lower().split():
            counts[w] = counts.get(w, 0) + 1
    word_ids = {w: i + 2 for i, (w, _) in enumerate(sorted(counts.items(), key=lambda kv: -kv[1])[: VOCAB_SIZE - 2])}
    index = label_vocab.index
    num_labels = len(label_vocab)
    rng = np.random.default_rng(0)

    def gen():
        for i in rng.permutation(len(texts)):
            ids = np.array([word_ids.get(w, 1) for w in texts[i].lower().split()[:MAX_LEN]], np.int32)
            y = np.zeros(num_labels, np.float32)
            for n in labels[i]:
                j = index.get(n)
                if j is not None:
                    y[j] = 1.0
            yield ids, y

    spec = (tf.TensorSpec([None], tf.int32), tf.TensorSpec([num_labels], tf.float32))
    return tf.data.Dataset.from_generator(gen, output_signature=spec).padded_batch(BATCH).prefetch(tf.data.AUTOTUNE)


BUILDERS = {
    "fusedfocal": _fusedfocal,
    "fusedfocal_cached": lambda *a: _fusedfocal(*a, cache=True),
    "fusedfocal_per_doc": _fusedfocal_per_doc,
    "keras_textvectorization": _keras_textvectorization,
    "python_loop": _python_loop,
}


def _count(acc, element):
    x, _ = element
    ids = x["token_ids"] if isinstance(x, dict) else x
    return acc[0] + tf.shape(ids, tf.int64)[0], acc[1] + tf.math.count_nonzero(ids, dtype=tf.int64)


def _epoch(ds):
    """One epoch consumed in the graph (``Dataset.reduce``), as a training loop would."""
    docs, tokens = ds.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), _count)
    return int(docs), int(tokens)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("corpus", ["synthetic", "reuters"])
def test_pipeline_throughput(benchmark, run_benchmark, full_benchmark, corpus, provider):
    texts, labels, tokens, label_vocab = _corpus(corpus, full_benchmark)
    if provider == "fusedfocal_cache_fill":
        fn, args = (lambda: _epoch(_fusedfocal(texts, labels, tokens, label_vocab, cache=True))), ()
    else:
        fn, args = _epoch, (BUILDERS[provider](texts, labels, tokens, label_vocab),)
    if provider == "fusedfocal_cached":
        _epoch(args[0])  # fill the cache, also in smoke mode
    docs, n_tokens = run_benchmark(fn, *args, rounds=5, warmup_rounds=1, corpus=corpus, provider=provider,
                                   batch_size=BATCH, max_length=MAX_LEN, cpu_count=os.cpu_count(),
                                   tensorflow=tf.__version__)
    assert docs == len(texts)
    assert n_tokens >= docs
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(docs=docs, tokens=n_tokens, docs_per_s=docs / median, tokens_per_s=n_tokens / median)
