"""Keras 3 loss classes over the functional losses.

Every class takes logits (``from_logits`` is implied), returns per-element
losses to ``keras.losses.Loss.__call__`` and is registered under the package
name ``fusedfocal``, so a ``.keras`` model compiled with it loads without
``custom_objects`` once ``fusedfocal`` is imported.

Reductions are Keras 3's: ``"sum_over_batch_size"`` (default) divides by the
number of loss elements (B*C for element-wise losses, the same scale as a
mean over labels then over the batch) and, under a ``tf.distribute``
strategy, by the number of replicas, i.e. the global batch;
``"mean_with_sample_weight"`` divides by the sum of the weights, the right
choice when a ``[B, C]`` weight masks missing labels.
"""

from __future__ import annotations

import keras

from fusedfocal import _keras_common as common
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = ["LogitsLoss", "SigmoidFocalLoss", "register"]

register = keras.saving.register_keras_serializable(package="fusedfocal")


class LogitsLoss(keras.losses.Loss):
    """Base class: a Keras 3 loss over ``fn(logits, labels, **params)``.

    Subclasses validate their arguments in ``__init__`` and pass them as
    ``params``; ``get_config`` returns every one of them.
    """

    elementwise = True  # fn returns [..., C]; False for per-example losses

    def __init__(self, fn, params, *, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._fn = fn
        self._params = dict(params)

    def call(self, y_true, y_pred):
        return self._fn(y_pred, y_true, **self._params)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.elementwise:
            sample_weight = common.expand_sample_weight(sample_weight, y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({k: common.to_config(p) for k, p in self._params.items()})
        return config


@register
class SigmoidFocalLoss(LogitsLoss):
    """Sigmoid focal loss on logits (Lin et al., 2017), fused and exact.

    See :func:`fusedfocal.sigmoid_focal_loss` for the math and arguments.

    Args:
      gamma: focusing parameter >= 0 (0 gives BCE).
      alpha: None, a float in [0, 1] or a per-class vector of length C.
      label_smoothing: float in [0, 1).
      reduction: a Keras 3 reduction (default ``"sum_over_batch_size"``).
      name: loss name.
      dtype: dtype of the loss computation (Keras default: float32).

    Example:
      >>> import keras, fusedfocal
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
      >>> model.compile("adam", loss=fusedfocal.SigmoidFocalLoss(gamma=2.0, alpha=[.25, .5, .75]))
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="sigmoid_focal_loss",
        dtype=None,
    ):
        params = dict(
            gamma=v.check_nonnegative_float("gamma", gamma),
            alpha=v.check_class_vector("alpha", alpha),
            label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing, closed_right=False),
        )
        super().__init__(sigmoid_focal_loss, params, reduction=reduction, name=name, dtype=dtype)
