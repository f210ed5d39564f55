"""``--encoder`` (issue 30): a fine-tuning step with the fused focal loss against BCE, and the preset
tokenizer's pipeline throughput against today's WordPiece path, each pair measured side by side.

* ``test_encoder_step[bce|focal]``: one XLA-compiled training step (forward, loss, backward, Adam)
  of :func:`fusedfocal.hub.build_classifier` over a BERT-base-sized ``keras_hub.models.BertBackbone``
  built from its config with random weights (12 layers, 12 heads, hidden 768, intermediate 3072,
  vocabulary 30,522; nothing downloaded), B=8, T=128, C=90 (Reuters' labels); the loss is
  ``keras.losses.BinaryCrossentropy(from_logits=True)`` or ``fusedfocal.keras.SigmoidFocalLoss``
  (gamma 2); 5 rounds after 1 warm-up (the compile). The focal row records ``ratio_to_bce`` (target
  <= 1.02).
* ``test_encoder_step_interleaved``: the same two steps alternated, 6 pairs; records the medians and
  ``ratio_focal_to_bce`` (on a shared machine a load change then hits both alike).
* ``test_tokenize_reuters[wordpiece|preset]``: one epoch of ``TextPipeline.dataset`` (``cache=False``,
  so every batch tokenizes; max length 128, batch 32) over Reuters-21578 train (7,769 documents, read
  from ``../shared/data/reuters21578``, research-only: never copied; skipped where absent). Both use
  the WordPiece vocabulary learnt from those documents (30,000 cap), so only the tokenizer differs:
  today's ``tensorflow_text.FastBertTokenizer`` or ``keras_hub.models.BertTokenizer`` (what a BERT
  preset loads). The preset row records ``ratio_to_wordpiece`` (docs/s, target: within 1.5x).

``pytest benchmarks/bench_encoder.py --benchmark`` runs the sizes above (minutes on 2 CPU cores);
plain pytest (CI) runs a 2-layer hidden-32 backbone eagerly and 200 synthetic documents once, as a
smoke test.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub is the optional [hub] extra")

import keras  # noqa: E402

from fusedfocal import data, hub  # noqa: E402
from fusedfocal.keras import SigmoidFocalLoss  # noqa: E402

B, T, C = 8, 128, 90
BERT_BASE = dict(vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
                 max_sequence_length=512)
SMOKE = dict(vocabulary_size=300, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
             max_sequence_length=128)
_MEDIANS: dict = {}


@pytest.fixture(scope="module")
def steps(full_benchmark):
    keras.utils.set_random_seed(0)
    cfg = BERT_BASE if full_benchmark else SMOKE
    backbone = keras_hub.models.BertBackbone(**cfg)
    model = hub.build_classifier(backbone, C, pad_token_id=0)
    optimizer = keras.optimizers.Adam(2e-5)
    rng = np.random.default_rng(0)
    x = {"token_ids": tf.constant(rng.integers(5, cfg["vocabulary_size"], (B, T)), tf.int32)}
    y = tf.constant((rng.random((B, C)) < 0.05).astype(np.float32))
    losses = {"bce": keras.losses.BinaryCrossentropy(from_logits=True), "focal": SigmoidFocalLoss(gamma=2.0)}

    def make(loss_fn):
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        if full_benchmark:
            step = tf.function(step, jit_compile=True)  # the smoke run (CI) runs eagerly: tracing took ~10 s a loss
        return lambda: step().numpy()

    return {name: make(fn) for name, fn in losses.items()}, cfg


@pytest.mark.parametrize("loss", ["bce", "focal"])
def test_encoder_step(loss, steps, run_benchmark, benchmark, full_benchmark):
    fns, cfg = steps
    value = run_benchmark(fns[loss], rounds=5, warmup_rounds=1, batch=B, seq_len=T, labels=C, loss=loss,
                          backbone=dict(cfg), xla=full_benchmark)
    assert np.isfinite(value)
    _MEDIANS[("step", loss)] = benchmark.stats.stats.median
    if loss == "focal" and ("step", "bce") in _MEDIANS:
        ratio = _MEDIANS[("step", "focal")] / _MEDIANS[("step", "bce")]
        benchmark.extra_info["ratio_to_bce"] = round(ratio, 4)
        print(f"\nencoder step: focal / bce = {ratio:.4f} (median {_MEDIANS[('step', 'focal')]:.3f} s vs "
              f"{_MEDIANS[('step', 'bce')]:.3f} s)")


_CORPUS: dict = {}


def _corpus(full):
    if "c" not in _CORPUS:
        if full:
            path = data.reuters_dir()
            if path is None or not (path / "train.jsonl.gz").is_file():
                pytest.skip("Reuters-21578 not found at ../shared/data/reuters21578 (set FUSEDFOCAL_REUTERS_DIR)")
            texts, labels, _ = data.read_records(path / "train.jsonl.gz")
        else:
            (texts, labels), _ = data.synthetic_splits(seed=0)
            texts, labels = texts[:200], labels[:200]
        vocab = data.build_wordpiece_vocab(texts, 30000 if full else 300, seed=0)
        _CORPUS["c"] = (texts, labels, vocab, data.LabelVocab.build(labels))
    return _CORPUS["c"]


@pytest.mark.parametrize("tokenizer", ["wordpiece", "preset"])
def test_tokenize_reuters(tokenizer, full_benchmark, run_benchmark, benchmark):
    texts, labels, vocab, label_vocab = _corpus(full_benchmark)
    config = data.PipelineConfig(max_length=T, batch_size=32, cache=False, deterministic=True)
    if tokenizer == "wordpiece":
        pipe = data.TextPipeline(config, vocab, label_vocab)
    else:
        tok = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
        pipe = data.TextPipeline(config, None, label_vocab, tokenizer=tok)
    ds = pipe.dataset(texts, labels, training=False)

    def epoch():
        t0 = time.perf_counter()
        n = ds.reduce(tf.constant(0, tf.int64), lambda acc, b: acc + tf.cast(tf.shape(b[0]["token_ids"])[0], tf.int64))
        return int(n), time.perf_counter() - t0

    n, _ = run_benchmark(epoch, rounds=5, warmup_rounds=1, documents=len(texts), tokenizer=tokenizer,
                         vocab=len(vocab), max_length=T)
    assert n == len(texts)
    docs_per_s = len(texts) / benchmark.stats.stats.median
    benchmark.extra_info["docs_per_s"] = round(docs_per_s, 1)
    _MEDIANS[("tok", tokenizer)] = docs_per_s
    if tokenizer == "preset" and ("tok", "wordpiece") in _MEDIANS:
        ratio = _MEDIANS[("tok", "wordpiece")] / docs_per_s
        benchmark.extra_info["ratio_to_wordpiece"] = round(ratio, 4)
        print(f"\ntokenize: wordpiece {_MEDIANS[('tok', 'wordpiece')]:.0f} docs/s, preset {docs_per_s:.0f} docs/s: "
              f"the preset path takes {ratio:.3f}x the time")


def test_encoder_step_interleaved(steps, run_benchmark, benchmark, full_benchmark):
    """The same two steps alternated (bce, focal, bce, focal, ...): a load change on a shared machine
    then hits both alike. Records the median of each and ``ratio_focal_to_bce`` of the medians."""
    fns, _ = steps
    pairs = []

    def pair():
        t0 = time.perf_counter()
        fns["bce"]()
        t1 = time.perf_counter()
        fns["focal"]()
        pairs.append((t1 - t0, time.perf_counter() - t1))

    rounds = 6 if full_benchmark else 1
    run_benchmark(pair, rounds=rounds, warmup_rounds=1, batch=B, seq_len=T, labels=C)
    bce, focal = (float(np.median([p[i] for p in pairs[-rounds:]])) for i in (0, 1))
    benchmark.extra_info.update(bce_median_s=round(bce, 4), focal_median_s=round(focal, 4),
                                ratio_focal_to_bce=round(focal / bce, 4),
                                pair_ratios=[round(f / b, 4) for b, f in pairs[-rounds:]])
    print(f"\nencoder step, interleaved: focal {focal:.3f} s / bce {bce:.3f} s = {focal / bce:.4f}")
