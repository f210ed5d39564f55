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
import keras.src.losses.loss  # noqa: F401 - scale_loss_for_distribution, for the fused path
import tensorflow as tf

from fusedfocal import _keras_common as common
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = ["LogitsLoss", "SigmoidFocalLoss", "register"]

register = keras.saving.register_keras_serializable(package="fusedfocal")


class LogitsLoss(common.LogitsLossMixin, keras.losses.Loss):
    """Base class: a Keras 3 loss over ``fn(logits, labels, **params)``.

    Subclasses validate their arguments in ``__init__`` and pass them as
    ``params``; ``get_config`` returns every one of them.
    """

    def __init__(self, fn, params, *, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._init_fn(fn, params)

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

    fused_reduction = True  # sigmoid_focal_loss sums (and weights) inside its kernel


# --------------------------------------------------------------------------
# The imbalance loss family (fusedfocal.losses). Each class validates its
# arguments with the function's own checker, so errors are raised in
# __init__ with the same Keras-style messages.
# --------------------------------------------------------------------------
from fusedfocal import losses as _losses  # noqa: E402
from fusedfocal.losses import _common as _lc  # noqa: E402
from fusedfocal.losses import asymmetric as _asl  # noqa: E402
from fusedfocal.losses import balanced as _bal  # noqa: E402
from fusedfocal.losses import bce as _bce  # noqa: E402
from fusedfocal.losses import categorical as _cat  # noqa: E402
from fusedfocal.losses import logit_adjust as _la  # noqa: E402
from fusedfocal.losses import overlap as _ovl  # noqa: E402
from fusedfocal.losses import poly as _poly  # noqa: E402

__all__ += [
    "BCELoss", "WeightedBCELoss", "AsymmetricLoss", "ClassBalancedFocalLoss",
    "DistributionBalancedLoss", "LogitAdjustedBCELoss", "Poly1FocalLoss", "DiceLoss",
    "TverskyLoss", "SquaredHingeLoss", "LogCoshLoss", "CategoricalFocalLoss",
    "SparseCategoricalFocalLoss",
]


@register
class BCELoss(LogitsLoss):
    """Binary cross-entropy on logits; see :func:`fusedfocal.losses.binary_crossentropy`."""

    def __init__(self, label_smoothing=0.0, reduction="sum_over_batch_size", name="bce_loss", dtype=None):
        super().__init__(_losses.binary_crossentropy, _bce.bce_params(label_smoothing),
                         reduction=reduction, name=name, dtype=dtype)

    fused_reduction = True  # runs on sigmoid_focal_loss: sums inside its kernel


@register
class WeightedBCELoss(LogitsLoss):
    """BCE with per-class ``pos_weight``; see :func:`fusedfocal.losses.weighted_binary_crossentropy`."""

    def __init__(self, pos_weight=1.0, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="weighted_bce_loss", dtype=None):
        super().__init__(_losses.weighted_binary_crossentropy, _bce.wbce_params(pos_weight, label_smoothing),
                         reduction=reduction, name=name, dtype=dtype)


@register
class AsymmetricLoss(LogitsLoss):
    """Asymmetric loss (Ridnik et al., 2021); see :func:`fusedfocal.losses.asymmetric_loss`."""

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, reduction="sum_over_batch_size",
                 name="asymmetric_loss", dtype=None):
        super().__init__(_losses.asymmetric_loss, _asl.asl_params(gamma_pos, gamma_neg, clip),
                         reduction=reduction, name=name, dtype=dtype)


@register
class ClassBalancedFocalLoss(LogitsLoss):
    """Class-balanced focal loss (Cui et al., 2019); see :func:`fusedfocal.losses.class_balanced_focal_loss`."""

    def __init__(self, class_counts=None, beta=0.9999, gamma=2.0, alpha=None, reduction="sum_over_batch_size",
                 name="class_balanced_focal_loss", dtype=None):
        super().__init__(_losses.class_balanced_focal_loss, _bal.cb_params(class_counts, beta, gamma, alpha),
                         reduction=reduction, name=name, dtype=dtype)

    fused_reduction = True  # runs on sigmoid_focal_loss: sums inside its kernel


@register
class DistributionBalancedLoss(LogitsLoss):
    """Distribution-balanced loss (Wu et al., 2020); see :func:`fusedfocal.losses.distribution_balanced_loss`."""

    def __init__(self, class_counts=None, num_docs=None, gamma=2.0, alpha=0.5, map_alpha=0.1, map_beta=10.0,
                 map_mu=0.9, neg_scale=2.0, init_bias=0.05, reduction="sum_over_batch_size",
                 name="distribution_balanced_loss", dtype=None):
        params = _bal.db_params(class_counts, num_docs, gamma, alpha, map_alpha, map_beta, map_mu,
                                neg_scale, init_bias)
        super().__init__(_losses.distribution_balanced_loss, params, reduction=reduction, name=name, dtype=dtype)


@register
class LogitAdjustedBCELoss(LogitsLoss):
    """Logit-adjusted BCE (Menon et al., 2021); see :func:`fusedfocal.losses.logit_adjusted_bce`."""

    def __init__(self, priors=None, tau=1.0, reduction="sum_over_batch_size", name="logit_adjusted_bce_loss",
                 dtype=None):
        super().__init__(_losses.logit_adjusted_bce, _la.la_params(priors, tau),
                         reduction=reduction, name=name, dtype=dtype)


@register
class Poly1FocalLoss(LogitsLoss):
    """Poly-1 focal loss (Leng et al., 2022); see :func:`fusedfocal.losses.poly1_focal_loss`."""

    def __init__(self, epsilon=1.0, gamma=2.0, alpha=None, reduction="sum_over_batch_size",
                 name="poly1_focal_loss", dtype=None):
        super().__init__(_losses.poly1_focal_loss, _poly.poly_params(epsilon, gamma, alpha),
                         reduction=reduction, name=name, dtype=dtype)


@register
class TverskyLoss(_lc.SetLossMixin, LogitsLoss):
    """Soft Tversky loss on sigmoid probabilities; see :func:`fusedfocal.losses.tversky_loss`.

    A per-batch set loss: the function returns per-class losses ``[C]``
    (``per_class=True``) or one global loss; the Keras reduction averages
    them (``"sum_over_batch_size"``: the mean over classes) or sums them.
    ``sample_weight`` (``[B]`` or ``[B, C]``) weights each element's share
    of the soft TP/FP/FN counts.
    """

    def __init__(self, alpha=0.3, beta=0.7, smooth=1.0, per_class=True, reduction="sum_over_batch_size",
                 name="tversky_loss", dtype=None):
        super().__init__(_losses.tversky_loss, _ovl.tversky_params(alpha, beta, smooth, per_class),
                         reduction=reduction, name=name, dtype=dtype)


@register
class DiceLoss(_lc.SetLossMixin, LogitsLoss):
    """Soft Dice loss on sigmoid probabilities; see :func:`fusedfocal.losses.dice_loss`.

    Reduction and ``sample_weight`` as in :class:`TverskyLoss`.
    """

    def __init__(self, smooth=1.0, per_class=True, reduction="sum_over_batch_size", name="dice_loss", dtype=None):
        super().__init__(_losses.dice_loss, _ovl.dice_params(smooth, per_class),
                         reduction=reduction, name=name, dtype=dtype)


@register
class SquaredHingeLoss(LogitsLoss):
    """Squared hinge on +-1 targets; see :func:`fusedfocal.losses.squared_hinge_loss`."""

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge_loss", dtype=None):
        super().__init__(_losses.squared_hinge_loss, {}, reduction=reduction, name=name, dtype=dtype)


@register
class LogCoshLoss(LogitsLoss):
    """Log-cosh of the probability error; see :func:`fusedfocal.losses.log_cosh_loss`."""

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh_loss", dtype=None):
        super().__init__(_losses.log_cosh_loss, {}, reduction=reduction, name=name, dtype=dtype)


@register
class CategoricalFocalLoss(LogitsLoss):
    """Softmax focal loss on logits; see :func:`fusedfocal.losses.categorical_focal_loss`.

    Per-example loss (``elementwise = False``): ``sample_weight`` is ``[B]``.
    """

    elementwise = False

    def __init__(self, gamma=2.0, alpha=None, reduction="sum_over_batch_size", name="categorical_focal_loss",
                 dtype=None):
        super().__init__(_losses.categorical_focal_loss, _cat.categorical_params(gamma, alpha),
                         reduction=reduction, name=name, dtype=dtype)


@register
class SparseCategoricalFocalLoss(LogitsLoss):
    """Softmax focal loss with integer labels; see :func:`fusedfocal.losses.sparse_categorical_focal_loss`.

    Per-example loss. Ignored examples (``ignore_index``) have loss 0 but
    still count in ``"sum_over_batch_size"``; pass a 0/1 ``sample_weight``
    with ``reduction="mean_with_sample_weight"`` to average over kept ones.
    """

    elementwise = False

    def __init__(self, gamma=2.0, alpha=None, ignore_index=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_focal_loss", dtype=None):
        super().__init__(_losses.sparse_categorical_focal_loss, _cat.sparse_params(gamma, alpha, ignore_index),
                         reduction=reduction, name=name, dtype=dtype)
