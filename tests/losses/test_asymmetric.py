"""asymmetric_loss (ASL) against the float64 reference, and its identities."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import configs_for, DTYPE_IDS, DTYPES, MODES, SOFT, X, Y, check_extremes, check_reductions, check_reference, check_shapes
import fusedfocal.keras
from fusedfocal import losses as L

CONFIGS = [dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05), dict(gamma_pos=1.0, gamma_neg=0.5, clip=0.2),
           dict(gamma_pos=0.5, gamma_neg=0.0, clip=0.1), dict(gamma_pos=2.0, gamma_neg=3.0, clip=0.0)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    for kw in configs_for(mode, CONFIGS):
        check_reference(lambda x: L.asymmetric_loss(x, Y, **kw), lambda x: ref.asymmetric(x, Y, **kw), X, dtype, mode,
                        what=f"asl {kw}")
    kw = CONFIGS[1]
    if mode == "eager":
        check_reference(lambda x: L.asymmetric_loss(x, SOFT, **kw), lambda x: ref.asymmetric(x, SOFT, **kw), X, dtype,
                        mode, what="asl soft")


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_equals_sigmoid_focal(gamma):
    x = tf.constant(X * 3, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = L.asymmetric_loss(x, Y, gamma_pos=gamma, gamma_neg=gamma, clip=0.0)
        b = L.sigmoid_focal_loss(x, Y, gamma=gamma)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy(), rtol=1e-6, atol=1e-7)


def test_margin_zeroes_easy_negatives_and_gradient_at_margin():
    clip = 0.1
    x_m = float(np.log(clip / (1 - clip)))  # sigmoid(x_m) == clip
    x = tf.constant([[x_m - 1.0, x_m - 1e-3, x_m + 1e-3, x_m + 1.0]], tf.float64)
    for gn in (0.0, 1.0, 4.0):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = L.asymmetric_loss(x, tf.zeros_like(x), gamma_neg=gn, clip=clip)
        g = tape.gradient(loss, x).numpy()
        assert loss.numpy()[0, 0] == 0.0 and loss.numpy()[0, 1] == 0.0 and g[0, 0] == 0.0 and g[0, 1] == 0.0
        # right of the kink: central differences in float64 (smooth there)
        h = 1e-7
        for j in (2, 3):
            fp = L.asymmetric_loss(x + h * np.eye(4)[j], tf.zeros_like(x), gamma_neg=gn, clip=clip).numpy()[0, j]
            fm = L.asymmetric_loss(x - h * np.eye(4)[j], tf.zeros_like(x), gamma_neg=gn, clip=clip).numpy()[0, j]
            np.testing.assert_allclose(g[0, j], (fp - fm) / (2 * h), rtol=1e-5, atol=1e-12)


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.asymmetric_loss(x, Y[:5], gamma_pos=0.5, gamma_neg=4.0, clip=0.05))
    check_shapes(lambda x, y: L.asymmetric_loss(x, y))
    check_reductions(lambda x, r: L.asymmetric_loss(x, Y, reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `gamma_neg`"):
        L.asymmetric_loss(X, Y, gamma_neg=-1.0)
    with pytest.raises(ValueError, match=r"Invalid value for argument `clip`. Expected a float in \[0, 1\)"):
        L.asymmetric_loss(X, Y, clip=1.0)
    with pytest.raises(ValueError, match="Invalid value for argument `clip`"):
        fusedfocal.keras.get("asl", clip=-0.1)
