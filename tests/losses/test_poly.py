"""poly1_focal_loss against the float64 reference; epsilon 0 is focal."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import configs_for, C, DTYPE_IDS, DTYPES, MODES, SOFT, X, Y, check_extremes, check_reductions, check_reference, check_shapes
from fusedfocal import losses as L

CONFIGS = [dict(epsilon=1.0, gamma=2.0), dict(epsilon=-0.5, gamma=0.5, alpha=list(np.linspace(0.2, 0.8, C))),
           dict(epsilon=2.0, gamma=0.0, alpha=0.25)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    for kw in configs_for(mode, CONFIGS):
        for y in (Y, SOFT) if mode == "eager" else (SOFT,):
            check_reference(lambda x: L.poly1_focal_loss(x, y, **kw), lambda x: ref.poly1_focal(x, y, **kw), X, dtype,
                            mode, what=f"poly {kw}")


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_epsilon_zero_is_focal(gamma):
    x = tf.constant(X * 3, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = L.poly1_focal_loss(x, SOFT, epsilon=0.0, gamma=gamma, alpha=0.3)
        b = L.sigmoid_focal_loss(x, SOFT, gamma=gamma, alpha=0.3)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy(), rtol=1e-6, atol=1e-7)


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.poly1_focal_loss(x, Y[:5], gamma=0.5))
    check_shapes(lambda x, y: L.poly1_focal_loss(x, y))
    check_reductions(lambda x, r: L.poly1_focal_loss(x, Y, reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `epsilon`"):
        L.poly1_focal_loss(X, Y, epsilon=-2.0)
    with pytest.raises(ValueError, match="Invalid value for argument `gamma`"):
        L.poly1_focal_loss(X, Y, gamma=-0.5)
