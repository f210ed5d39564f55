"""fusedfocal.linear_focal_loss and linear_top_k against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal
import reference as ref
from _testing import compile_for

B, H, C = 5, 8, 37  # C is not a multiple of the chunk sizes below
IDS = [[0, 3, 3], [], [36, 1], [5], []]  # empty rows, a duplicate, the last id


def _inputs(seed=0, layout="hc"):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (B, H)).astype(np.float32)
    w = rng.normal(0, 0.5, (H, C) if layout == "hc" else (C, H)).astype(np.float32)
    b = rng.normal(0, 0.5, C).astype(np.float32)
    return x, w, b


def _loss_and_grads(**kw):
    def f(x, w, b, labels):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            loss = fusedfocal.linear_focal_loss(x, w, b, labels, **kw)
        return (loss,) + tuple(tape.gradient(loss, [x, w, b]))

    return f


def _check(out, want, rtol):
    for name, got, exp in zip(("loss", "d features", "d kernel", "d bias"), out, want):
        got = np.asarray(got, np.float64)
        scale = np.max(np.abs(exp))
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.mark.parametrize("implementation", ["xla", "native"])
@pytest.mark.parametrize("grad_mode", ["forward", "recompute"])
def test_ragged_ids_match_reference(mode, implementation, grad_mode):
    x, w, b = _inputs()
    labels = tf.ragged.constant(IDS, dtype=tf.int64)
    fn = compile_for(mode, _loss_and_grads(alpha=0.25, chunk_size=16, implementation=implementation,
                                           grad_mode=grad_mode))
    out = fn(tf.constant(x), tf.constant(w), tf.constant(b), labels)
    assert out[0].dtype == tf.float32 and out[0].shape == ()
    _check(out, ref.linear_focal(x, w, b, ref.multi_hot(IDS, C), alpha=0.25), 1e-5)


def test_top_k_matches_dense():
    x, w, b = _inputs()
    scores, ids = fusedfocal.linear_top_k(x, w, b, 4, chunk_size=16)
    want_scores, want_ids = tf.math.top_k(tf.sigmoid(x @ w + b), 4)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(ids, want_ids)
    assert scores.dtype == tf.float32 and ids.dtype == tf.int32
