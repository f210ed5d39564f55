"""tf_keras (legacy Keras 2) twins of the classes in :mod:`fusedfocal.keras`.

Import this module before ``tf_keras.models.load_model`` so the classes are
registered (package ``fusedfocal``). Reductions are tf_keras's
``Reduction`` values; ``AUTO`` means ``SUM_OVER_BATCH_SIZE`` (divide by the
number of loss elements). The loss is always computed in float32, also under
the ``mixed_float16`` policy, where tf_keras' own losses run in float16.
"""

from __future__ import annotations

import tf_keras

from fusedfocal import _keras_common as common
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = ["LogitsLoss", "SigmoidFocalLoss", "register"]

register = tf_keras.utils.register_keras_serializable(package="fusedfocal")
_AUTO = tf_keras.losses.Reduction.AUTO


class LogitsLoss(tf_keras.losses.Loss):
    """Base class: a tf_keras loss over ``fn(logits, labels, **params)``."""

    elementwise = True

    def __init__(self, fn, params, *, reduction=_AUTO, name=None):
        super().__init__(reduction=reduction, name=name)
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
    """tf_keras version of :class:`fusedfocal.SigmoidFocalLoss`."""

    def __init__(self, gamma=2.0, alpha=None, label_smoothing=0.0, reduction=_AUTO, name="sigmoid_focal_loss"):
        params = dict(
            gamma=v.check_nonnegative_float("gamma", gamma),
            alpha=v.check_class_vector("alpha", alpha),
            label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing, closed_right=False),
        )
        super().__init__(sigmoid_focal_loss, params, reduction=reduction, name=name)
