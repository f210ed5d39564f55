"""logit_adjusted_bce, prior_logit_bias and prior_bias_initializer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from _helpers import (COUNTS, DTYPE_IDS, DTYPES, MODES, NUM_DOCS, SOFT, X, Y, check_extremes, check_reductions,
                      check_reference, check_shapes)
from fusedfocal import losses as L

PRIORS = L.priors_from_counts(COUNTS, NUM_DOCS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference(dtype, mode):
    check_reference(lambda x: L.logit_adjusted_bce(x, SOFT, priors=PRIORS, tau=0.7),
                    lambda x: ref.logit_adjusted(x, SOFT, PRIORS, 0.7), X, dtype, mode, what="la")


def test_tau_zero_is_bce_and_shift():
    x = tf.constant(X, tf.float32)
    np.testing.assert_allclose(L.logit_adjusted_bce(x, Y, priors=PRIORS, tau=0.0).numpy(),
                               L.binary_crossentropy(x, Y).numpy(), rtol=1e-6)  # two float32 formulas (BCE runs on the focal kernel)
    shift = np.log(PRIORS / (1 - PRIORS))
    np.testing.assert_allclose(L.logit_adjusted_bce(x, Y, priors=PRIORS).numpy(),
                               L.binary_crossentropy(X + shift, Y).numpy(), rtol=1e-5, atol=1e-6)


def test_prior_logit_bias_is_safe_at_zero_and_n():
    b = L.prior_logit_bias([0, 1, 500, 999, 1000], 1000)
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b[2], 0.0, atol=1e-12)
    np.testing.assert_allclose(b[0], -b[4])
    np.testing.assert_allclose(b[1], np.log(1 / 999))
    np.testing.assert_allclose(L.prior_logit_bias([0, 1], 1), [-0.0, 0.0])


def test_prior_bias_initializer_in_dense(tmp_path):
    init = L.prior_bias_initializer(PRIORS)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(len(PRIORS), bias_initializer=init)])
    np.testing.assert_allclose(model.layers[0].bias.numpy(), np.log(PRIORS / (1 - PRIORS)), rtol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    cfg = keras.models.load_model(path).layers[0].get_config()["bias_initializer"]
    assert cfg["config"]["bias"] == pytest.approx(list(np.log(PRIORS / (1 - PRIORS))))


def test_extremes_shapes_reductions():
    check_extremes(lambda x: L.logit_adjusted_bce(x, Y[:5], priors=PRIORS))
    check_shapes(lambda x, y: L.logit_adjusted_bce(x, y, priors=0.1))
    check_reductions(lambda x, r: L.logit_adjusted_bce(x, Y, priors=PRIORS, reduction=r))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Invalid value for argument `priors`. Expected every prior in the open interval"):
        L.logit_adjusted_bce(X, Y, priors=[0.0, 0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="Invalid value for argument `priors`"):
        L.logit_adjusted_bce(X, Y, priors=[0.1, 0.2])
    with pytest.raises(ValueError, match="Invalid value for argument `tau`"):
        L.logit_adjusted_bce(X, Y, priors=0.2, tau=-1.0)
    with pytest.raises(ValueError, match="Invalid value for argument `num_docs`"):
        L.prior_logit_bias([1, 2], 0)
