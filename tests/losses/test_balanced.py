"""Class-balanced focal, distribution-balanced loss and the count helpers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import (C, COUNTS, DTYPE_IDS, DTYPES, MODES, NUM_DOCS, SOFT, X, Y, check_extremes, check_reductions,
                      check_reference, check_shapes, configs_for)
from fusedfocal import losses as L

CB = [dict(beta=0.999, gamma=2.0), dict(beta=0.9, gamma=0.5, alpha=list(np.linspace(0.2, 0.8, C)))]
DB = [dict(), dict(gamma=0.5, alpha=None, map_mu=0.2, neg_scale=5.0, init_bias=0.1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    for kw in configs_for(mode, CB):
        check_reference(lambda x: L.class_balanced_focal_loss(x, Y, class_counts=COUNTS, **kw),
                        lambda x: ref.class_balanced_focal(x, Y, COUNTS, **kw), X, dtype, mode, what=f"cb {kw}")
    for kw in configs_for(mode, DB):
        check_reference(lambda x: L.distribution_balanced_loss(x, Y, class_counts=COUNTS, num_docs=NUM_DOCS, **kw),
                        lambda x: ref.distribution_balanced(x, Y, COUNTS, NUM_DOCS, **kw), X, dtype, mode,
                        what=f"db {kw}")


def test_beta_zero_is_unweighted_focal():
    x = tf.constant(X * 3, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = L.class_balanced_focal_loss(x, SOFT, class_counts=COUNTS, beta=0.0, gamma=2.0, alpha=0.25)
        b = L.sigmoid_focal_loss(x, SOFT, gamma=2.0, alpha=0.25)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy(), rtol=1e-6)


def test_class_balanced_weights():
    w = L.class_balanced_weights(COUNTS, 0.999)
    assert np.isfinite(w).all() and np.isclose(w.sum(), C)
    np.testing.assert_allclose(w, ref.cb_weights(COUNTS, 0.999), rtol=1e-12)
    assert w[2] == w.max()  # the unseen class gets the largest finite weight
    np.testing.assert_array_equal(L.class_balanced_weights(COUNTS, 0.0), np.ones(C))
    # beta near 1 approaches inverse frequency (normalised)
    inv = 1.0 / np.maximum(COUNTS, 1)
    np.testing.assert_allclose(L.class_balanced_weights(COUNTS, 1 - 1e-12), inv * C / inv.sum(), rtol=1e-6)


def test_db_rows_without_positives_and_unseen_classes_are_finite():
    y = np.zeros((3, C))
    y[1, 2] = 1.0  # a positive of the class with count 0
    for x in (X[:3], 50 * X[:3]):
        loss = L.distribution_balanced_loss(x, y, class_counts=COUNTS, num_docs=NUM_DOCS).numpy()
        assert np.isfinite(loss).all()
        np.testing.assert_allclose(loss, ref.distribution_balanced(x, y, COUNTS, NUM_DOCS), rtol=1e-5, atol=1e-7)


def test_counts_from_dataset_and_arrays():
    labels = (np.random.default_rng(0).random((37, C)) < 0.3).astype(np.float32)
    counts, n = L.class_counts_from_labels(labels)
    np.testing.assert_array_equal(counts, labels.sum(0))
    assert n == 37
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((37, 2), np.float32), labels))
    for d in (ds, ds.batch(8)):
        c2, n2 = L.class_counts_from_dataset(d)
        np.testing.assert_array_equal(c2, counts)
        assert n2 == 37


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.class_balanced_focal_loss(x, Y[:5], class_counts=COUNTS, gamma=0.5))
    check_extremes(lambda x: L.distribution_balanced_loss(x, Y[:5], class_counts=COUNTS, num_docs=NUM_DOCS))
    check_shapes(lambda x, y: L.distribution_balanced_loss(x, y, class_counts=np.arange(x.shape[-1]) * 3.0,
                                                           num_docs=100))
    check_reductions(lambda x, r: L.class_balanced_focal_loss(x, Y, class_counts=COUNTS, reduction=r))
    check_reductions(lambda x, r: L.distribution_balanced_loss(x, Y, class_counts=COUNTS, num_docs=NUM_DOCS,
                                                               reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Invalid value for argument `beta`. Expected a float in \[0, 1\)"):
        L.class_balanced_focal_loss(X, Y, class_counts=COUNTS, beta=1.0)
    with pytest.raises(ValueError, match="Invalid value for argument `class_counts`"):
        L.class_balanced_focal_loss(X, Y, class_counts=[1.0, -2.0, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="Invalid value for argument `class_counts`. Expected a scalar or a vector of length 5"):
        L.class_balanced_focal_loss(X, Y, class_counts=[1.0, 2.0])
    with pytest.raises(ValueError, match="Invalid value for argument `num_docs`"):
        L.distribution_balanced_loss(X, Y, class_counts=COUNTS, num_docs=None)
    with pytest.raises(ValueError, match="Invalid value for argument `class_counts`. Expected every count <= num_docs"):
        L.distribution_balanced_loss(X, Y, class_counts=COUNTS, num_docs=10)
    with pytest.raises(ValueError, match="Invalid value for argument `neg_scale`"):
        L.distribution_balanced_loss(X, Y, class_counts=COUNTS, num_docs=NUM_DOCS, neg_scale=0.0)
