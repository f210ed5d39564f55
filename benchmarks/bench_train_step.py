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
  (``python benchmarks/report.py RESULTS.json --train-steps`` computes it
  from the medians of the same run).

Every step runs on the same tensors; the first call (trace + compile) is
timed on its own and excluded. The losses run in interleaved rounds (one
step of each a round). Smoke mode (plain ``pytest``): batch 32 and 256
labels, one round; ``pytest benchmarks/bench_train_step.py --benchmark``
runs the full size.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _testing import clipped_focal_recipe  # noqa: E402

ALPHA, GAMMA = 0.25, 2.0
LOSSES = ("fusedfocal", "keras3", "clipped", "bce", "trivial")
FULL = dict(batch=256, features=512, labels=4096)
SMOKE = dict(batch=32, features=64, labels=256)


def clipped_focal(y_true, y_pred):
    """The blog-post recipe (``tests/_testing.py``), as a Keras loss: mean."""
    return tf.reduce_mean(clipped_focal_recipe(y_pred, y_true, alpha=ALPHA, gamma=GAMMA))


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


ROUNDS = 25


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "graph"])
def test_train_step(jit, benchmark, run_benchmark, full_benchmark, interleaved):
    """Interleaved rounds: one ``train_on_batch`` of every loss's model a round
    (order rotated), so a load spike on the shared machine hits all losses
    alike; per-loss medians in ``extra_info["interleaved"]``."""
    size = FULL if full_benchmark else SMOKE
    x, y = make_batch(size)
    models = {name: make_model(name, jit, size) for name in LOSSES}
    first, before = {}, {}
    for name, model in models.items():
        before[name] = model.evaluate(x, y, verbose=0)
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, y, return_dict=True)["loss"]
        first[name] = (time.perf_counter() - t0) * 1e3
        assert np.isfinite(loss), f"{name}: non-finite loss {loss}"
        model.train_on_batch(x, y)  # one warm step
    # train_on_batch returns a Python float: the step is done when it returns
    rounds = interleaved({name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()})
    run_benchmark(rounds.round, rounds=ROUNDS, warmup_rounds=1, jit_compile=jit, batch=size["batch"],
                  features=size["features"], labels=size["labels"], tf_version=tf.__version__)
    stats = rounds.stats()
    for name in stats:
        stats[name]["first_call_ms"] = first[name]
    benchmark.extra_info["interleaved"] = stats
    # Every model trained: its loss on the batch went down over the steps.
    for name, model in models.items():
        if name != "trivial":
            after = model.evaluate(x, y, verbose=0)
            assert np.isfinite(after) and after < before[name], (name, before[name], after)
