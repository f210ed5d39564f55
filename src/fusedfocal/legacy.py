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


class LogitsLoss(common.LogitsLossMixin, tf_keras.losses.Loss):
    """Base class: a tf_keras loss over ``fn(logits, labels, **params)``."""

    def __init__(self, fn, params, *, reduction=_AUTO, name=None):
        super().__init__(reduction=reduction, name=name)
        self._init_fn(fn, params)

    # tf_keras's reductions, for the fused path (_keras_common.LogitsLossMixin).
    # _get_reduction keeps tf_keras' own check that SUM_OVER_BATCH_SIZE is not
    # used under a strategy outside fit; fit scales for replicas itself.
    def _reduction_kind(self):
        r = self._get_reduction()
        R = tf_keras.losses.Reduction
        return {R.SUM: "sum", R.SUM_OVER_BATCH_SIZE: "mean"}.get(r)

    def _fused_scope(self):
        return self._name_scope


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

    def __init__(self, label_smoothing=0.0, reduction=_AUTO, name="bce_loss"):
        super().__init__(_losses.binary_crossentropy, _bce.bce_params(label_smoothing),
                         reduction=reduction, name=name)

    fused_reduction = True  # runs on sigmoid_focal_loss: sums inside its kernel


@register
class WeightedBCELoss(LogitsLoss):
    """BCE with per-class ``pos_weight``; see :func:`fusedfocal.losses.weighted_binary_crossentropy`."""

    def __init__(self, pos_weight=1.0, label_smoothing=0.0, reduction=_AUTO,
                 name="weighted_bce_loss"):
        super().__init__(_losses.weighted_binary_crossentropy, _bce.wbce_params(pos_weight, label_smoothing),
                         reduction=reduction, name=name)


@register
class AsymmetricLoss(LogitsLoss):
    """Asymmetric loss (Ridnik et al., 2021); see :func:`fusedfocal.losses.asymmetric_loss`."""

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, reduction=_AUTO,
                 name="asymmetric_loss"):
        super().__init__(_losses.asymmetric_loss, _asl.asl_params(gamma_pos, gamma_neg, clip),
                         reduction=reduction, name=name)


@register
class ClassBalancedFocalLoss(LogitsLoss):
    """Class-balanced focal loss (Cui et al., 2019); see :func:`fusedfocal.losses.class_balanced_focal_loss`."""

    def __init__(self, class_counts=None, beta=0.9999, gamma=2.0, alpha=None, reduction=_AUTO,
                 name="class_balanced_focal_loss"):
        super().__init__(_losses.class_balanced_focal_loss, _bal.cb_params(class_counts, beta, gamma, alpha),
                         reduction=reduction, name=name)

    fused_reduction = True  # runs on sigmoid_focal_loss: sums inside its kernel


@register
class DistributionBalancedLoss(LogitsLoss):
    """Distribution-balanced loss (Wu et al., 2020); see :func:`fusedfocal.losses.distribution_balanced_loss`."""

    def __init__(self, class_counts=None, num_docs=None, gamma=2.0, alpha=0.5, map_alpha=0.1, map_beta=10.0,
                 map_mu=0.9, neg_scale=2.0, init_bias=0.05, reduction=_AUTO,
                 name="distribution_balanced_loss"):
        params = _bal.db_params(class_counts, num_docs, gamma, alpha, map_alpha, map_beta, map_mu,
                                neg_scale, init_bias)
        super().__init__(_losses.distribution_balanced_loss, params, reduction=reduction, name=name)


@register
class LogitAdjustedBCELoss(LogitsLoss):
    """Logit-adjusted BCE (Menon et al., 2021); see :func:`fusedfocal.losses.logit_adjusted_bce`."""

    def __init__(self, priors=None, tau=1.0, reduction=_AUTO, name="logit_adjusted_bce_loss"):
        super().__init__(_losses.logit_adjusted_bce, _la.la_params(priors, tau),
                         reduction=reduction, name=name)


@register
class Poly1FocalLoss(LogitsLoss):
    """Poly-1 focal loss (Leng et al., 2022); see :func:`fusedfocal.losses.poly1_focal_loss`."""

    def __init__(self, epsilon=1.0, gamma=2.0, alpha=None, reduction=_AUTO,
                 name="poly1_focal_loss"):
        super().__init__(_losses.poly1_focal_loss, _poly.poly_params(epsilon, gamma, alpha),
                         reduction=reduction, name=name)


@register
class TverskyLoss(_lc.SetLossMixin, LogitsLoss):
    """Soft Tversky loss on sigmoid probabilities; see :func:`fusedfocal.losses.tversky_loss`.

    A per-batch set loss: the function returns per-class losses ``[C]``
    (``per_class=True``) or one global loss; the tf_keras reduction averages
    them (``AUTO``: the mean over classes) or sums them.
    ``sample_weight`` (``[B]`` or ``[B, C]``) weights each element's share
    of the soft TP/FP/FN counts.
    """

    def __init__(self, alpha=0.3, beta=0.7, smooth=1.0, per_class=True, reduction=_AUTO,
                 name="tversky_loss"):
        super().__init__(_losses.tversky_loss, _ovl.tversky_params(alpha, beta, smooth, per_class),
                         reduction=reduction, name=name)


@register
class DiceLoss(_lc.SetLossMixin, LogitsLoss):
    """Soft Dice loss on sigmoid probabilities; see :func:`fusedfocal.losses.dice_loss`.

    Reduction and ``sample_weight`` as in :class:`TverskyLoss`.
    """

    def __init__(self, smooth=1.0, per_class=True, reduction=_AUTO, name="dice_loss"):
        super().__init__(_losses.dice_loss, _ovl.dice_params(smooth, per_class),
                         reduction=reduction, name=name)


@register
class SquaredHingeLoss(LogitsLoss):
    """Squared hinge on +-1 targets; see :func:`fusedfocal.losses.squared_hinge_loss`."""

    def __init__(self, reduction=_AUTO, name="squared_hinge_loss"):
        super().__init__(_losses.squared_hinge_loss, {}, reduction=reduction, name=name)


@register
class LogCoshLoss(LogitsLoss):
    """Log-cosh of the probability error; see :func:`fusedfocal.losses.log_cosh_loss`."""

    def __init__(self, reduction=_AUTO, name="log_cosh_loss"):
        super().__init__(_losses.log_cosh_loss, {}, reduction=reduction, name=name)


@register
class CategoricalFocalLoss(LogitsLoss):
    """Softmax focal loss on logits; see :func:`fusedfocal.losses.categorical_focal_loss`.

    Per-example loss (``elementwise = False``): ``sample_weight`` is ``[B]``.
    """

    elementwise = False

    def __init__(self, gamma=2.0, alpha=None, reduction=_AUTO, name="categorical_focal_loss"):
        super().__init__(_losses.categorical_focal_loss, _cat.categorical_params(gamma, alpha),
                         reduction=reduction, name=name)


@register
class SparseCategoricalFocalLoss(LogitsLoss):
    """Softmax focal loss with integer labels; see :func:`fusedfocal.losses.sparse_categorical_focal_loss`.

    Per-example loss. Ignored examples (``ignore_index``) have loss 0 but
    still count in ``"sum_over_batch_size"``; pass a 0/1 ``sample_weight``
    and ``reduction=SUM`` divided by the kept count to average over kept ones.
    """

    elementwise = False

    def __init__(self, gamma=2.0, alpha=None, ignore_index=None, reduction=_AUTO,
                 name="sparse_categorical_focal_loss"):
        super().__init__(_losses.sparse_categorical_focal_loss, _cat.sparse_params(gamma, alpha, ignore_index),
                         reduction=reduction, name=name)
