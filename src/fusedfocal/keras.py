"""Keras 3 loss classes over the functional losses.

Every class takes logits (the focal classes also take Keras'
``from_logits``), returns per-element losses to
``keras.losses.Loss.__call__`` and is registered under the package
name ``fusedfocal``, so a ``.keras`` model compiled with it loads without
``custom_objects`` once ``fusedfocal`` is imported.

Reductions are Keras 3's: ``"sum_over_batch_size"`` (default) divides by the
number of loss elements (B*C for element-wise losses, the same scale as a
mean over labels then over the batch) and, under a ``tf.distribute``
strategy, by the number of replicas, i.e. the global batch;
``"mean_with_sample_weight"`` divides by the sum of the weights, the right
choice when a ``[B, C]`` weight masks missing labels.

The classes are built from their declarations in ``fusedfocal._registry``
(the same ones :mod:`fusedfocal.legacy` builds the tf_keras twins from);
:func:`get` makes one from a short name (:data:`NAMES`).
"""

from __future__ import annotations

import keras
import keras.src.losses.loss  # noqa: F401 - scale_loss_for_distribution, for the fused path
import tensorflow as tf

from fusedfocal import _head_common
from fusedfocal import _keras_common as common
from fusedfocal import _registry

register = keras.saving.register_keras_serializable(package="fusedfocal")


class LogitsLoss(common.LogitsLossMixin, keras.losses.Loss):
    """Base class: a Keras 3 loss over ``fn(logits, labels, **params)``.

    Subclasses validate their arguments in ``__init__`` and pass them as
    ``params``; ``get_config`` returns every one of them.
    """

    def __init__(self, fn, params, *, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._init_fn(fn, params)

    def _epsilon(self):  # from_logits=False clips probabilities to this, as Keras 3 does
        return keras.backend.epsilon()

    # Keras 3's reductions, for the fused path (_keras_common.LogitsLossMixin).
    def _reduction_kind(self):
        r = self.reduction
        if r in (None, "none"):
            return None
        return "mean" if r in ("sum_over_batch_size", "mean") else r

    def _finish(self, loss, kind):
        if kind != "sum":
            loss = keras.src.losses.loss.scale_loss_for_distribution(loss)
        return tf.cast(loss, self.dtype)


_FLAVOUR = common.Flavour(
    keras="Keras 3",
    lib="keras",
    module="fusedfocal",
    default='``"sum_over_batch_size"``',
    weighted_mean='with ``reduction="mean_with_sample_weight"``',
    reduction="sum_over_batch_size",
    extra=(("dtype", None),),
    dtype_doc="\n      dtype: dtype of the loss computation (Keras default: float32).",
)
_CLASSES = common.define_classes(_registry.SPECS, LogitsLoss, _FLAVOUR, register, __name__)
# SigmoidFocalLoss, BCELoss, WeightedBCELoss, AsymmetricLoss, ClassBalancedFocalLoss,
# DistributionBalancedLoss, LogitAdjustedBCELoss, Poly1FocalLoss, TverskyLoss, DiceLoss,
# SquaredHingeLoss, LogCoshLoss, CategoricalFocalLoss, SparseCategoricalFocalLoss
globals().update(_CLASSES)

#: short name -> class name (the same in fusedfocal.legacy)
NAMES = _registry.NAMES


get = _registry.getter(_CLASSES, "A Keras 3")  # a loss instance from a short name



def _head_total_loss(model, head_loss, y_pred):
    """The head's loss plus the model's own, each aggregated (cast, scaled for
    ``tf.distribute``) as Keras 3 aggregates an ``add_loss`` loss."""
    return tf.add_n([model._aggregate_additional_loss(x) for x in [head_loss, *model.losses]])


# FocalHead, FocalHeadModel: the fused classifier head (issue 19), twins of fusedfocal.legacy's.
class _HeadModelBase(keras.Model):
    """``keras.Model`` with one fix for ragged labels under ``tf.distribute``.

    Under a strategy, Keras 3 (3.15) builds the model from one batch averaged
    over the replicas (``_maybe_symbolic_build``: ``strategy.reduce("MEAN",
    batch)``), which fails on per-replica ``tf.RaggedTensor`` labels
    (``'RaggedTensor' object has no attribute 'device'``). The build needs
    only the inputs, so only ``x`` is averaged here.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, it in iterator:
                x, _, _ = keras.utils.unpack_x_y_sample_weight(next(it))
                if all(isinstance(v, tf.distribute.DistributedValues) for v in tf.nest.flatten(x)):
                    x = self.distribute_strategy.reduce("MEAN", x, axis=None)
                data_batch = (x,)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


_HEADS = _head_common.define_head_classes(keras.layers.Layer, _HeadModelBase, keras, _head_total_loss, register,
                                          __name__, "Keras 3")
globals().update(_HEADS)

__all__ = ["LogitsLoss", "NAMES", "get", "register", *_CLASSES, *_HEADS]
