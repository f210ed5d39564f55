"""tf_keras (legacy Keras 2) twins of the classes in :mod:`fusedfocal.keras`.

Import this module before ``tf_keras.models.load_model`` so the classes are
registered (package ``fusedfocal``). Reductions are tf_keras's
``Reduction`` values; ``AUTO`` means ``SUM_OVER_BATCH_SIZE`` (divide by the
number of loss elements). The loss is always computed in float32, also under
the ``mixed_float16`` policy, where tf_keras' own losses run in float16.

The classes are built from the declarations in ``fusedfocal._registry``,
like their Keras 3 twins; :func:`get` makes one from a short name.
"""

from __future__ import annotations

import tf_keras

from fusedfocal import _head_common
from fusedfocal import _keras_common as common
from fusedfocal import _registry

register = tf_keras.utils.register_keras_serializable(package="fusedfocal")
_AUTO = tf_keras.losses.Reduction.AUTO


class LogitsLoss(common.LogitsLossMixin, tf_keras.losses.Loss):
    """Base class: a tf_keras loss over ``fn(logits, labels, **params)``."""

    def __init__(self, fn, params, *, reduction=_AUTO, name=None):
        super().__init__(reduction=reduction, name=name)
        self._init_fn(fn, params)

    # from_logits=False reads probabilities as tf_keras does: clipped to its
    # epsilon, with epsilon added inside the logs of the binary cross-entropy.
    legacy_probabilities = True

    def _epsilon(self):
        return tf_keras.backend.epsilon()

    # tf_keras's reductions, for the fused path (_keras_common.LogitsLossMixin).
    # _get_reduction keeps tf_keras' own check that SUM_OVER_BATCH_SIZE is not
    # used under a strategy outside fit; fit scales for replicas itself.
    def _reduction_kind(self):
        r = self._get_reduction()
        R = tf_keras.losses.Reduction
        return {R.SUM: "sum", R.SUM_OVER_BATCH_SIZE: "mean"}.get(r)

    def _fused_scope(self):
        return self._name_scope


_FLAVOUR = common.Flavour(
    keras="tf_keras",
    lib="tf_keras",
    module="fusedfocal.legacy",
    default="``AUTO``",
    weighted_mean="and ``reduction=SUM`` divided by the kept count",
    reduction=_AUTO,
)
_CLASSES = common.define_classes(_registry.SPECS, LogitsLoss, _FLAVOUR, register, __name__)
globals().update(_CLASSES)  # the same class names as fusedfocal.keras

NAMES = _registry.NAMES


get = _registry.getter(_CLASSES, "A tf_keras")  # a loss instance from a short name



def _head_total_loss(model, head_loss, y_pred):
    """The head's loss through tf_keras' loss container, as an ``add_loss`` loss:
    scaled for ``tf.distribute`` there, and tracked as the ``loss`` metric."""
    return model.compiled_loss(None, y_pred, None, regularization_losses=[head_loss, *model.losses])


# FocalHead, FocalHeadModel: the fused classifier head (issue 19), twins of fusedfocal.keras's.
_HEADS = _head_common.define_head_classes(tf_keras.layers.Layer, tf_keras.Model, tf_keras, _head_total_loss,
                                          register, __name__, "tf_keras")
globals().update(_HEADS)

__all__ = ["LogitsLoss", "NAMES", "get", "register", *_CLASSES, *_HEADS]
