"""Softmax focal loss (dense and sparse) against the float64 reference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import C, DTYPE_IDS, DTYPES, MODES, X, check_extremes, check_reductions, check_reference, check_shapes

from fusedfocal import losses as L

_RNG = np.random.default_rng(7)
IDS = _RNG.integers(0, C, X.shape[0])
ONEHOT = np.eye(C)[IDS]
SOFT = _RNG.dirichlet(np.ones(C), X.shape[0])
ALPHA = np.linspace(0.25, 1.0, C)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    check_reference(lambda x: L.categorical_focal_loss(x, SOFT, gamma=0.5, alpha=ALPHA),
                    lambda x: ref.categorical_focal(x, SOFT, 0.5, ALPHA), X, dtype, mode, what="cat soft")
    if mode == "eager":
        check_reference(lambda x: L.categorical_focal_loss(x, ONEHOT, gamma=2.0),
                        lambda x: ref.categorical_focal(x, ONEHOT, 2.0), X, dtype, mode, what="cat onehot")
        check_reference(lambda x: L.sparse_categorical_focal_loss(x, IDS, gamma=1.5, alpha=ALPHA),
                        lambda x: ref.categorical_focal(x, ONEHOT, 1.5, ALPHA), X, dtype, mode, what="sparse")


def test_gamma_zero_is_softmax_cross_entropy():
    x = tf.constant(X * 5, tf.float32)
    for y in (ONEHOT, SOFT):
        yt = tf.constant(y, tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a = L.categorical_focal_loss(x, yt, gamma=0.0)
            b = tf.nn.softmax_cross_entropy_with_logits(yt, x)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy(), rtol=1e-5, atol=1e-6)


def test_confident_mistake_gradient_does_not_vanish():
    x = tf.constant([[50.0, 0.0, -50.0]])
    y = tf.constant([[0.0, 0.0, 1.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = L.categorical_focal_loss(x, y, gamma=2.0)
        theirs = keras.losses.CategoricalFocalCrossentropy(from_logits=True, reduction=None)(y, x)
    g = tape.gradient(ours, x).numpy()
    np.testing.assert_allclose(g, [[1.0, 0.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), [100.0], rtol=1e-6)
    assert np.all(tape.gradient(theirs, x).numpy() == 0.0)  # Keras 3.15: vanished


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
def test_saturated_gamma_below_one_is_finite(gamma):
    x = tf.constant([[1e4, 0.0, -1e4], [200.0, 199.0, -5.0]], tf.float32)
    y = tf.constant([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = L.categorical_focal_loss(x, y, gamma=gamma)
    g = tape.gradient(loss, x).numpy()
    assert np.isfinite(loss.numpy()).all() and np.isfinite(g).all()
    np.testing.assert_allclose(loss.numpy(), ref.categorical_focal(x.numpy().astype(np.float64), y.numpy(), gamma),
                               rtol=1e-5, atol=1e-30)


def test_sparse_ignore_index_and_mean():
    ids = IDS.copy()
    ids[[1, 4]] = -100
    x = tf.constant(X, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = L.sparse_categorical_focal_loss(x, ids, ignore_index=-100)
    g = tape.gradient(loss, x).numpy()
    assert loss.numpy()[1] == 0 and loss.numpy()[4] == 0 and not g[[1, 4]].any()
    mean = L.sparse_categorical_focal_loss(x, ids, ignore_index=-100, reduction="mean").numpy()
    np.testing.assert_allclose(mean, loss.numpy().sum() / 6, rtol=1e-6)
    np.testing.assert_allclose(L.sparse_categorical_focal_loss(x, ids[:, None].astype(np.float32),
                                                               ignore_index=-100).numpy(), loss.numpy(), rtol=1e-7)
    all_ignored = L.sparse_categorical_focal_loss(x, np.full(8, -100), ignore_index=-100, reduction="mean")
    assert all_ignored.numpy() == 0.0


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.categorical_focal_loss(x, ONEHOT[:5], gamma=0.5, alpha=ALPHA))
    check_shapes(lambda x, y: L.categorical_focal_loss(x, y), per_example=True)
    check_reductions(lambda x, r: L.categorical_focal_loss(x, SOFT, reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `ignore_index`"):
        L.sparse_categorical_focal_loss(X, IDS, ignore_index=0.5)
    with pytest.raises(ValueError, match="Invalid value for argument `labels`"):
        L.sparse_categorical_focal_loss(X, IDS[:3])
    with pytest.raises(ValueError, match="Invalid value for argument `alpha`"):
        L.categorical_focal_loss(X, ONEHOT, alpha=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="Invalid value for argument `gamma`"):
        L.categorical_focal_loss(X, ONEHOT, gamma=-2.0)
