"""binary_crossentropy / weighted_binary_crossentropy against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import C, DTYPE_IDS, DTYPES, MODES, SOFT, X, Y, check_extremes, check_reductions, check_reference, check_shapes
from fusedfocal import losses as L

PW = np.linspace(0.5, 4.0, C)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    check_reference(lambda x: L.binary_crossentropy(x, Y), lambda x: ref.weighted_bce(x, Y), X, dtype, mode, what="bce")
    check_reference(lambda x: L.weighted_binary_crossentropy(x, SOFT, pos_weight=PW),
                    lambda x: ref.weighted_bce(x, SOFT, PW), X, dtype, mode, what="wbce soft")


def test_pos_weight_one_is_bce_and_matches_tf():
    x = tf.constant(X, tf.float32)
    for y in (Y, SOFT):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a = L.weighted_binary_crossentropy(x, y, pos_weight=1.0)
            b = L.binary_crossentropy(x, y)
            c = tf.nn.sigmoid_cross_entropy_with_logits(tf.constant(y, tf.float32), x)
        # Two float32 implementations now (BCE runs on the fused focal kernel at
        # gamma 0): equal within a few ulp, each within 1e-6 of the reference.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
        np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy(), rtol=1e-6,
                                   atol=1e-7)
    w = L.weighted_binary_crossentropy(x, Y, pos_weight=PW)
    tfw = tf.nn.weighted_cross_entropy_with_logits(tf.constant(Y, tf.float32), x, tf.constant(PW, tf.float32))
    np.testing.assert_allclose(w.numpy(), tfw.numpy(), rtol=1e-5, atol=1e-6)


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.weighted_binary_crossentropy(x, Y[:5], pos_weight=PW))
    check_shapes(lambda x, y: L.binary_crossentropy(x, y))
    check_reductions(lambda x, r: L.weighted_binary_crossentropy(x, Y, pos_weight=PW, reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `pos_weight`"):
        L.weighted_binary_crossentropy(X, Y, pos_weight=-1.0)
    with pytest.raises(ValueError, match="Invalid value for argument `pos_weight`. Expected a scalar or a vector of length 5"):
        L.weighted_binary_crossentropy(X, Y, pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="Invalid value for argument `reduction`"):
        L.binary_crossentropy(X, Y, reduction="avg")
    with pytest.raises(ValueError, match="Invalid value for argument `labels`"):
        L.binary_crossentropy(X, Y[:, :2])
