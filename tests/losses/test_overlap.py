"""Soft Dice and Tversky (set losses) against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import DTYPE_IDS, DTYPES, MODES, SOFT, X, Y, check_extremes, check_reference, check_shapes
from fusedfocal import losses as L

W = np.linspace(0.0, 2.0, X.shape[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    check_reference(lambda x: L.tversky_loss(x, Y, alpha=0.3, beta=0.7),
                    lambda x: ref.tversky(x, Y, 0.3, 0.7), X, dtype, mode, what="tversky")
    if mode == "eager":
        check_reference(lambda x: L.dice_loss(x, SOFT, per_class=False, weights=W),
                        lambda x: ref.tversky(x, SOFT, 0.5, 0.5, per_class=False, weights=W[:, None]), X, dtype, mode,
                        what="dice global weighted")
        check_reference(lambda x: L.tversky_loss(x, Y, smooth=0.0), lambda x: ref.tversky(x, Y, smooth=0.0), X, dtype,
                        mode, what="tversky no smoothing")


def test_no_positives_no_nan():
    x = tf.constant(-np.abs(X) - 200.0, tf.float32)  # nothing predicted
    y = np.zeros_like(X)
    for smooth in (0.0, 1.0):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = L.tversky_loss(x, y, smooth=smooth)
        assert np.isfinite(loss.numpy()).all() and np.isfinite(tape.gradient(loss, x).numpy()).all()
        np.testing.assert_allclose(loss.numpy(), 0.0, atol=1e-6)


def test_shapes_and_extremes():
    check_shapes(lambda x, y: L.dice_loss(x, y), set_loss=True)
    check_extremes(lambda x: L.tversky_loss(x, Y[:5]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `per_class`"):
        L.dice_loss(X, Y, per_class="yes")
    with pytest.raises(ValueError, match="Invalid value for argument `alpha`"):
        L.tversky_loss(X, Y, alpha=-0.1)
    with pytest.raises(ValueError, match="Invalid value for argument `weights`"):
        L.dice_loss(X, Y, weights=np.ones(3))


@pytest.mark.parametrize("loss", [L.dice_loss, L.tversky_loss], ids=["dice", "tversky"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_nan_logit_propagates_to_the_value(loss, smooth):
    """A NaN logit gives a NaN loss (and gradient) in its class, as every other loss does."""
    x = tf.Variable(np.array([[0.5, np.nan], [1.0, -2.0]], np.float32))
    y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    with tf.GradientTape() as tape:
        value = loss(x, y, smooth=smooth)
    grad = tape.gradient(value, x).numpy()
    assert np.isnan(value.numpy()[1]) and np.isfinite(value.numpy()[0])
    assert np.isnan(grad[:, 1]).all() and np.isfinite(grad[:, 0]).all()
    assert np.isnan(loss(x, y, smooth=smooth, per_class=False).numpy())
