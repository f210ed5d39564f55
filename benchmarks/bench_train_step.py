"""End to end: ``model.train_on_batch`` steps of a large-label model (issue 10).

The model is a 512-wide input into ``Dense(4096)`` (logits), batch 256,
Adam, Keras 3, compiled with ``jit_compile=True`` and ``False``. Each loss
is the one a user would drop in:

* ``fusedfocal``   -- ``fusedfocal.SigmoidFocalLoss(gamma=2, alpha=0.25)``;
* ``keras3``       -- ``keras.losses.BinaryFocalCrossentropy(from_logits=True,
  apply_class_balancing=True, alpha=0.25, gamma=2)``;
* ``clipped``      -- the sigmoid / clip / log recipe as a loss function;
* ``bce``          -- ``keras.losses.BinaryCrossentropy(from_logits=True)``;
* ``trivial``      -- ``mean(y_pred)``: a loss that costs (almost) nothing,
  so ``1 - t(trivial) / t(loss)`` is the loss's share of a step
  (``loss_share`` in ``extra_info``, computed by ``benchmarks/report.py``
  from medians of the same run).

Every step runs on the same tensors; the first call (trace + compile) is
timed on its own and excluded. Smoke mode (plain ``pytest``): batch 32 and
256 labels, one round each; ``pytest benchmarks/bench_train_step.py
--benchmark`` runs the full size.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

ALPHA, GAMMA = 0.25, 2.0
LOSSES = ("fusedfocal", "keras3", "clipped", "bce", "trivial")
FULL = dict(batch=256, features=512, labels=4096)
SMOKE = dict(batch=32, features=64, labels=256)


def clipped_focal(y_true, y_pred):
    """The blog-post recipe: probabilities clipped at 1e-7, then log."""
    p = tf.clip_by_value(tf.sigmoid(y_pred), 1e-7, 1.0 - 1e-7)
    y = tf.cast(y_true, p.dtype)
    p_t = y * p + (1 - y) * (1 - p)
    a_t = ALPHA * y + (1 - ALPHA) * (1 - y)
    return tf.reduce_mean(-a_t * (1 - p_t) ** GAMMA * tf.math.log(p_t))


def make_loss(name):
    import keras

    import fusedfocal

    if name == "fusedfocal":
        return fusedfocal.SigmoidFocalLoss(gamma=GAMMA, alpha=ALPHA)
    if name == "keras3":
        return keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA, from_logits=True)
    if name == "clipped":
        return clipped_focal
    if name == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    if name == "trivial":
        return lambda y_true, y_pred: tf.reduce_mean(y_pred)
    raise ValueError(name)


def make_model(loss_name, jit, size):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((size["features"],)), keras.layers.Dense(size["labels"])])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss(loss_name), jit_compile=jit)
    return model


def make_batch(size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (size["batch"], size["features"])).astype(np.float32)
    y = (rng.random((size["batch"], size["labels"])) < 0.01).astype(np.float32)
    return tf.constant(x), tf.constant(y)


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("loss_name", LOSSES)
def test_train_step(loss_name, jit, benchmark, run_benchmark, full_benchmark):
    size = FULL if full_benchmark else SMOKE
    model = make_model(loss_name, jit, size)
    x, y = make_batch(size)

    def step(a, b):
        out = model.train_on_batch(a, b, return_dict=True)
        return out["loss"]

    t0 = time.perf_counter()
    first_loss = step(x, y)
    first = time.perf_counter() - t0
    assert np.isfinite(first_loss), f"{loss_name}: non-finite loss {first_loss}"
    run_benchmark(step, x, y, rounds=30, warmup_rounds=3, loss=loss_name,
                  jit_compile=jit, batch=size["batch"], features=size["features"],
                  labels=size["labels"], first_call_ms=first * 1e3, tf_version=tf.__version__)
    med = benchmark.stats.stats.median
    benchmark.extra_info["median_ms"] = med * 1e3
    # The step trained: the weights moved (a broken gradient would leave them).
    assert np.isfinite(step(x, y))
