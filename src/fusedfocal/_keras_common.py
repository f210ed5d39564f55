"""What the Keras 3 and tf_keras loss classes share.

Both wrappers are thin: ``call`` forwards to a functional loss
``fn(logits, labels, **params)``; the base ``Loss.__call__`` of each Keras
handles dtype, masks and reduction. Two things Keras does not do for us:

* ``sample_weight`` of shape ``[B]`` next to an element-wise ``[B, C]`` loss
  would broadcast along the wrong axis (Keras only expands it when ``C == 1``),
  so it is expanded to ``[B, 1]`` here; ``[B, C]`` weights pass through and
  give per-label weights (0 masks a missing label).
* NumPy per-class parameters must become lists in ``get_config``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def expand_sample_weight(sample_weight, y_pred):
    """Give ``[B]``-shaped weights a trailing axis to match ``[B, C]`` losses."""
    if sample_weight is None:
        return None
    sample_weight = tf.convert_to_tensor(sample_weight)
    pred_rank = tf.convert_to_tensor(y_pred).shape.rank
    if (
        pred_rank is not None
        and sample_weight.shape.rank is not None
        and sample_weight.shape.rank == pred_rank - 1
    ):
        sample_weight = tf.expand_dims(sample_weight, -1)
    return sample_weight


def to_config(value):
    """A JSON-friendly form of a loss parameter."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value.numpy().tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LogitsLossMixin:
    """The body both ``LogitsLoss`` bases share; mixed in before each Keras' ``Loss``.

    ``_fn(logits, labels, **_params)`` gives the loss; ``elementwise`` says it
    is ``[..., C]`` (so ``[B]`` sample weights get a trailing axis).
    """

    elementwise = True  # fn returns [..., C]; False for per-example losses

    def _init_fn(self, fn, params):
        self._fn = fn
        self._params = dict(params)

    def call(self, y_true, y_pred):
        return self._fn(y_pred, y_true, **self._params)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.elementwise:
            sample_weight = expand_sample_weight(sample_weight, y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({k: to_config(p) for k, p in self._params.items()})
        return config
