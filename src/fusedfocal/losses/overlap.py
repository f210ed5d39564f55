"""Soft Dice and Tversky losses on sigmoid probabilities (set losses)."""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v

__all__ = ["tversky_loss", "dice_loss", "tversky_params", "dice_params"]


def tversky_params(alpha=0.3, beta=0.7, smooth=1.0, per_class=True):
    if not isinstance(per_class, bool):
        raise v.invalid("per_class", "a bool", per_class)
    return dict(
        alpha=v.check_nonnegative_float("alpha", alpha),
        beta=v.check_nonnegative_float("beta", beta),
        smooth=v.check_nonnegative_float("smooth", smooth),
        per_class=per_class,
    )


def dice_params(smooth=1.0, per_class=True):
    p = tversky_params(0.5, 0.5, smooth, per_class)
    del p["alpha"], p["beta"]
    return p


def tversky_loss(
    logits, labels, *, alpha=0.3, beta=0.7, smooth=1.0, per_class=True, weights=None, reduction="none", name=None
):
    r"""Soft Tversky loss on ``p = sigmoid(logits)``, per class or global.

    .. math::

        TP = \sum w\,p\,y,\quad FP = \sum w\,p\,(1-y),\quad FN = \sum w\,(1-p)\,y

        \mathrm{TL} = 1 - \frac{TP + s}{TP + \alpha\,FP + \beta\,FN + s}

    Sums run over every axis but the last (``per_class=True``, one loss per
    class) or over all axes (``per_class=False``, one global loss). ``1-p``
    is ``sigmoid(-x)`` (no cancellation). With ``alpha = beta = 0.5`` this is
    the soft Dice loss. A batch where a class has no positives gives
    ``TP = FN = 0`` and loss ``1 - s/(alpha FP + s)``: finite, and 0 when the
    class is also never predicted; a zero denominator (only possible with
    ``smooth = 0``) counts as a perfect score (loss 0), never NaN.

    A set loss: it is not a sum over examples, so it depends on the batch.
    ``weights`` (shape ``[...]`` per example or ``[..., C]`` per element)
    weight each element's contribution to ``TP``, ``FP`` and ``FN``; the
    Keras classes pass ``sample_weight`` here.

    Gradient: TensorFlow autodiff of this formula (stable: sigmoids, sums and
    one division by a denominator >= ``smooth``), in float32 (float64), with
    the sigmoid's derivative taken as ``sigmoid(x) sigmoid(-x)``.

    Args:
      logits: float tensor ``[..., C]``.
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      alpha: weight of false positives (Salehi et al.: 0.3).
      beta: weight of false negatives (Salehi et al.: 0.7).
      smooth: additive smoothing ``s >= 0`` (default 1).
      per_class: per-class losses ``[C]`` (default) or one global loss.
      weights: optional element/example weights, see above.
      reduction: ``"none"`` returns ``[C]`` (per_class) or a scalar;
        ``"mean"``/``"sum"`` reduce over classes.

    Returns:
      float32 (float64 for float64 logits): ``[C]`` or a scalar.

    References:
      Milletari et al., "V-Net", 3DV 2016 (soft Dice); Salehi et al.,
      "Tversky loss function for image segmentation using 3D fully
      convolutional deep networks", MLMI 2017; Li et al., "Dice Loss for
      Data-imbalanced NLP Tasks", ACL 2020.
    """
    p = tversky_params(alpha, beta, smooth, per_class)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "tversky_loss"):
        return _tversky(logits, labels, weights, reduction, **p)


def dice_loss(logits, labels, *, smooth=1.0, per_class=True, weights=None, reduction="none", name=None):
    r"""Soft Dice loss on sigmoid probabilities: :func:`tversky_loss` with
    ``alpha = beta = 0.5``, i.e. ``1 - (2 TP + 2s) / (2 TP + FP + FN + 2s)``."""
    p = dice_params(smooth, per_class)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "dice_loss"):
        return _tversky(logits, labels, weights, reduction, alpha=0.5, beta=0.5, **p)


@tf.custom_gradient
def _sigmoid(x):
    """``sigmoid(x)`` whose gradient is ``sigmoid(x) sigmoid(-x)``: TF's own
    ``y (1 - y)`` loses all relative precision once ``y`` rounds near 1."""
    s = tf.sigmoid(x)
    s_neg = tf.sigmoid(-x)
    return s, lambda up: up * s * s_neg


def _tversky(logits, labels, weights, reduction, *, alpha, beta, smooth, per_class):
    logits, labels = c.prepare(logits, labels)
    cdtype = labels.dtype
    x = tf.cast(logits, cdtype)
    y = tf.broadcast_to(labels, tf.shape(x))
    p, q = _sigmoid(x), _sigmoid(-x)
    if weights is not None:
        w = tf.cast(tf.convert_to_tensor(weights), cdtype)
        if w.shape.rank is not None and x.shape.rank is not None and w.shape.rank == x.shape.rank - 1:
            w = tf.expand_dims(w, -1)
        v.check_broadcast("weights", w.shape, x.shape)
        w = tf.broadcast_to(w, tf.shape(x))
    else:
        w = tf.ones_like(x)
    axis = list(range(x.shape.rank - 1)) if per_class else None
    tp = tf.reduce_sum(w * p * y, axis=axis)
    fp = tf.reduce_sum(w * p * (1.0 - y), axis=axis)
    fn = tf.reduce_sum(w * q * y, axis=axis)
    num = tp + smooth
    den = tp + alpha * fp + beta * fn + smooth
    # Only an exact 0 (smooth = 0, nothing predicted or present) is a perfect score; NaN stays NaN
    # (a `den > 0` test would turn a NaN logit into a finite loss with a NaN gradient).
    zero = tf.equal(den, 0)
    score = tf.where(zero, tf.ones_like(den), num / tf.where(zero, tf.ones_like(den), den))
    return v.reduce(1.0 - score, reduction)
