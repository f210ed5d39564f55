"""Margin and robust-regression losses for multi-label outputs."""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v

__all__ = ["squared_hinge_loss", "log_cosh_loss"]


def squared_hinge_loss(logits, labels, *, reduction="none", name=None):
    r"""Squared hinge on ``±1`` targets, the logits taken as scores.

    .. math::

        \ell(x, y) = \max(0,\, 1 - t x)^2,\qquad t = 2y - 1

    When it helps: linear or nearly separable problems where a margin is
    what matters (it is the L2-SVM loss, the strong TF-IDF baseline on
    Reuters-21578), and when well-classified examples should stop
    contributing entirely (zero loss beyond the margin, unlike BCE).
    When it does not: it yields no calibrated probabilities (threshold the
    score at 0), its gradient grows linearly with the violation, so noisy
    labels and outliers dominate, and it does nothing for class imbalance
    (every rare positive still competes with many negatives).

    Soft labels give ``t`` in ``[-1, 1]``. Gradient: analytic,
    ``-2 t max(0, 1 - t x)`` (the loss is C^1, so this is also its autodiff).
    Finite for every finite logit; in float16 a gradient beyond 65504 is
    saturated to +-65504 (the loss itself is float32).

    Args:
      logits: float tensor ``[..., C]`` (scores).
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "squared_hinge_loss"):
        logits, labels = c.prepare(logits, labels)

        def compute(x):
            t = 2.0 * tf.broadcast_to(labels, tf.shape(x)) - 1.0
            h = tf.nn.relu(1.0 - t * x)
            return h * h, -2.0 * t * h

        return c.fused(logits, compute, reduction)


def log_cosh_loss(logits, labels, *, reduction="none", name=None):
    r"""Log-cosh of the probability error, ``log(cosh(sigmoid(x) - y))``.

    ``d = sigmoid(x) - y`` is formed as ``(1-y) sigmoid(x) - y sigmoid(-x)``
    (exact for hard labels, no cancellation) and
    ``log cosh d = log1p(2 sinh^2(d/2))`` (accurate for small ``d``).

    When it helps: a bounded (``<= log cosh 1 ≈ 0.434``), smooth, MSE-like
    loss on probabilities that is robust to label noise: a mislabelled
    example cannot dominate the batch. When it does not: the gradient
    ``tanh(d) s (1-s)`` vanishes for confident mistakes (``s(1-s) -> 0``),
    so, like MSE on sigmoid outputs, it learns slowly from hard and rare
    positives; on imbalanced multi-label data prefer BCE/focal/ASL.

    Gradient: analytic custom gradient ``tanh(d) s (1 - s)``.

    Args:
      logits: float tensor ``[..., C]``.
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "log_cosh_loss"):
        logits, labels = c.prepare(logits, labels)

        def compute(x):
            y = tf.broadcast_to(labels, tf.shape(x))
            s, s_neg = tf.sigmoid(x), tf.sigmoid(-x)
            d = (1.0 - y) * s - y * s_neg
            sh = tf.sinh(0.5 * d)
            return tf.math.log1p(2.0 * sh * sh), tf.tanh(d) * s * s_neg

        return c.fused(logits, compute, reduction)
