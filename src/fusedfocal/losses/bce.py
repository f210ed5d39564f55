"""Binary cross-entropy on logits, plain and with per-class ``pos_weight``.

Both use an analytic custom gradient (fused with the forward pass; the
formula's autodiff is stable but would keep several float32 intermediates).
"""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = ["binary_crossentropy", "weighted_binary_crossentropy", "bce_params", "wbce_params"]


def bce_params(label_smoothing=0.0):
    return dict(label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing, closed_right=False))


def wbce_params(pos_weight=1.0, label_smoothing=0.0):
    return dict(pos_weight=v.check_class_vector("pos_weight", pos_weight, lo=0.0, hi=None), **bce_params(label_smoothing))


def weighted_binary_crossentropy(logits, labels, *, pos_weight=1.0, label_smoothing=0.0, reduction="none", name=None):
    r"""Binary cross-entropy with a weight on the positive term, from logits.

    .. math::

        \ell(x, y) = w_+\, y\, \mathrm{softplus}(-x) + (1 - y)\,\mathrm{softplus}(x)

    (``-w_+ y log p - (1-y) log(1-p)``, as ``tf.nn.weighted_cross_entropy_with_logits``
    and PyTorch's ``BCEWithLogitsLoss(pos_weight=...)``). A common choice is
    ``pos_weight = (N - n_c) / n_c``, the negative/positive ratio of class
    ``c``; see :func:`fusedfocal.keras.get`, which derives it from
    ``class_counts``. Gradient (analytic, custom):
    ``(1-y) sigmoid(x) - w_+ y sigmoid(-x)``.

    Args:
      logits: float tensor ``[..., C]`` (f16, bf16, f32 or f64).
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      pos_weight: a float >= 0 or a length-``C`` vector (default 1: BCE).
      label_smoothing: float in ``[0, 1)``; ``y -> y (1-ls) + ls/2``.
      reduction: ``"none"`` (per element), ``"sum"`` or ``"mean"``.
      name: optional name scope.

    Returns:
      float32 (float64 for float64 logits) loss, shaped like ``logits`` for
      ``reduction="none"``, else a scalar.
    """
    p = wbce_params(pos_weight, label_smoothing)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "weighted_binary_crossentropy"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("pos_weight", p["pos_weight"], logits)
        return _bce(logits, labels, p["pos_weight"], p["label_smoothing"], reduction)


def binary_crossentropy(logits, labels, *, label_smoothing=0.0, reduction="none",
                        sample_weight=None, name=None):
    r"""Binary cross-entropy from logits, ``softplus(x) - x y``, element-wise.

    Exact for every finite logit (no clipping; ``-log p`` grows linearly),
    analytic gradient ``sigmoid(x) - y``. Arguments as in
    :func:`weighted_binary_crossentropy` (with ``pos_weight = 1``), plus
    ``sample_weight`` (broadcastable to ``logits``, applied before the
    reduction). It is the focal loss at ``gamma = 0``, and runs on the same
    fused kernel (:func:`fusedfocal.sigmoid_focal_loss`, native op and XLA
    custom call where built).
    """
    p = bce_params(label_smoothing)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "binary_crossentropy"):
        logits, labels = c.prepare(logits, labels)
        return sigmoid_focal_loss(logits, labels, gamma=0.0, label_smoothing=p["label_smoothing"],
                                  reduction=reduction, sample_weight=sample_weight)


def _bce(logits, labels, pos_weight, ls, reduction):
    def compute(x):
        y = tf.broadcast_to(labels, tf.shape(x))
        if ls:
            y = y * (1.0 - ls) + 0.5 * ls
        sp_pos = tf.nn.softplus(x)  # -log(1 - p)
        sp_neg = tf.nn.softplus(-x)  # -log p
        s_pos = tf.sigmoid(x)
        s_neg = tf.sigmoid(-x)
        if pos_weight is None:
            # softplus(x) - x y written as a sum of non-negative terms
            loss = y * sp_neg + (1.0 - y) * sp_pos
            grad = (1.0 - y) * s_pos - y * s_neg
        else:
            w = c.as_tensor(pos_weight, x.dtype)
            loss = w * y * sp_neg + (1.0 - y) * sp_pos
            grad = (1.0 - y) * s_pos - w * y * s_neg
        return loss, grad

    return c.fused(logits, compute, reduction)
