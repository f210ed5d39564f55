"""squared_hinge_loss and log_cosh_loss against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import DTYPE_IDS, DTYPES, MODES, SOFT, X, Y, check_extremes, check_reductions, check_reference, check_shapes
from fusedfocal import losses as L


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    hinge = lambda x: L.squared_hinge_loss(x, SOFT) + L.log_cosh_loss(x, Y)  # noqa: E731  (one compile)
    check_reference(hinge, lambda x: ref.squared_hinge(x, SOFT) + ref.log_cosh(x, Y), X, dtype, mode, what="hinge+logcosh")
    if mode == "eager":
        check_reference(lambda x: L.squared_hinge_loss(x, Y), lambda x: ref.squared_hinge(x, Y), X, dtype, mode,
                        what="hinge")
        check_reference(lambda x: L.log_cosh_loss(x, SOFT), lambda x: ref.log_cosh(x, SOFT), X, dtype, mode,
                        what="logcosh")


def test_matches_keras_on_scores_and_probabilities():
    import keras

    x = tf.constant(X, tf.float32)
    t = 2.0 * Y - 1.0
    np.testing.assert_allclose(L.squared_hinge_loss(x, Y).numpy().mean(-1),
                               keras.losses.squared_hinge(t, x).numpy(), rtol=1e-5)
    np.testing.assert_allclose(L.log_cosh_loss(x, Y).numpy().mean(-1),
                               keras.losses.log_cosh(Y, tf.sigmoid(x)).numpy(), rtol=1e-4, atol=1e-6)


def test_extremes_shapes_reductions():
    for fn in (L.squared_hinge_loss, L.log_cosh_loss):
        # Squared hinge's gradient 2(1 + |x|) at the largest float16 is beyond
        # float16: checked on its own below.
        dtypes = [d for d in DTYPES if d != tf.float16] if fn is L.squared_hinge_loss else DTYPES
        check_extremes(lambda x: fn(x, Y[:5]), dtypes=dtypes)
        check_shapes(lambda x, y: fn(x, y))
        check_reductions(lambda x, r: fn(x, Y, reduction=r))


def test_squared_hinge_float16_overflow_is_inf_not_clipped():
    """At x = 65504 the true gradient (131010) does not fit float16: it comes
    back as Inf (so a dynamic loss scaler sees the overflow), the loss stays a
    finite float32, and gradients that fit are exact."""
    x = tf.constant([[65504.0, 3.0]], tf.float16)
    y = tf.constant([[0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = L.squared_hinge_loss(x, y)
    grad = tape.gradient(loss, x).numpy().astype(np.float64)
    assert np.isfinite(loss.numpy()).all()
    assert np.isposinf(grad[0, 0])
    np.testing.assert_allclose(grad[0, 1], 2 * (1 + 3.0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `reduction`"):
        L.squared_hinge_loss(X, Y, reduction="batch")
    with pytest.raises(TypeError, match="Invalid dtype for argument `logits`"):
        L.log_cosh_loss(np.zeros((2, 2), np.int32), Y[:2, :2])
