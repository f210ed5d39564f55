"""The command line's Adam (``fusedfocal.cli.stages.optim.FusedAdam``, one XLA-fused update per variable)
against ``keras.optimizers.Adam`` and SGD with momentum, on the n-gram model's bag kernel.

One step = ``apply_gradients`` of one gradient to a ``[rows, 256]`` float32 variable inside a
``tf.function`` (as in ``model.fit``): a dense gradient, or an ``IndexedSlices`` one (the rows of a
batch's n-grams, repeated, as the bag's gather gives). Rows: 11,141 (the WordPiece vocabulary the
command line learns on Reuters-21578). ``pytest benchmarks/bench_cli_optimizer.py --benchmark``
times them side by side (medians; the ratio FusedAdam / Adam is the claim); plain pytest runs each
once on a small variable.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras

from fusedfocal.cli.stages.optim import FusedAdam

OPTIMIZERS = {"adam": lambda: keras.optimizers.Adam(0.01), "fused_adam": lambda: FusedAdam(0.01),
              "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9)}


@pytest.mark.parametrize("gradient", ["dense", "sparse"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step(run_benchmark, full_benchmark, name, gradient):
    rows, width = (11141, 256) if full_benchmark else (300, 16)
    rng = np.random.default_rng(0)
    var = keras.Variable(rng.normal(size=(rows, width)).astype("float32") * 0.01)
    opt = OPTIMIZERS[name]()
    if gradient == "dense":
        grad = tf.constant(rng.normal(size=(rows, width)).astype("float32") * 1e-3)
    else:  # 64 documents x ~100 distinct n-grams, drawn Zipf-like: frequent rows repeat
        idx = np.minimum(rng.zipf(1.3, size=6400) - 1, rows - 1).astype("int32")
        grad = tf.IndexedSlices(tf.constant(rng.normal(size=(idx.size, width)).astype("float32") * 1e-3),
                                tf.constant(idx), tf.constant([rows, width]))

    @tf.function
    def step():
        opt.apply_gradients([(grad, var)])

    step()  # builds the optimizer's slots and compiles
    before = var.numpy().copy()
    run_benchmark(step, rounds=30, warmup_rounds=3, optimizer=name, gradient=gradient, rows=rows, width=width)
    assert np.abs(var.numpy() - before).max() > 0
