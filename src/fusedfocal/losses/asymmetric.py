"""Asymmetric loss (ASL) for multi-label classification, on logits."""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import focal_loss_and_grad

__all__ = ["asymmetric_loss", "asl_params"]


def asl_params(gamma_pos=0.0, gamma_neg=4.0, clip=0.05):
    return dict(
        gamma_pos=v.check_nonnegative_float("gamma_pos", gamma_pos),
        gamma_neg=v.check_nonnegative_float("gamma_neg", gamma_neg),
        clip=v.check_unit_interval("clip", clip, closed_right=False),
    )


def asymmetric_loss(logits, labels, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, reduction="none", name=None):
    r"""Asymmetric loss (Ridnik et al., ICCV 2021) from logits.

    .. math::

        p = \sigma(x),\qquad p_m = \max(p - m, 0)

        L_+ = (1-p)^{\gamma_+}\,(-\log p),\qquad
        L_- = p_m^{\gamma_-}\,(-\log(1 - p_m))

        \mathrm{ASL}(x, y) = y\,L_+ + (1-y)\,L_-

    Negatives are down-weighted by a stronger focusing exponent and by the
    probability margin ``m`` (``clip``): an easy negative with ``p <= m``
    contributes exactly 0 loss and 0 gradient. ``-log p = softplus(-x)``,
    ``1 - p_m = sigmoid(-x) + m`` for ``p > m`` (a sum of positives, so
    ``log(1 - p_m) = log(sigmoid(-x) + m)`` never cancels), and
    ``(1-p)^{\gamma_+}`` comes from ``exp(-|x|)`` (the sigmoid focal
    kernel), never from a clipped probability.

    Gradient: analytic custom gradient. For the negative term with
    ``m > 0`` and ``p > m``:
    ``dL_-/dx = p(1-p) p_m^{\gamma_-}[\gamma_- (-\log(1-p_m))/p_m + 1/(1-p_m)]``
    (``-log(1-p_m)/p_m -> 1`` as ``p_m -> 0``), and 0 for ``p <= m``; the
    one-sided derivative at the kink is 0 from the left and
    ``p(1-p)`` times ``[gamma_- == 0]`` from the right, so the loss is C^1
    there for ``gamma_- > 0``.

    Soft labels mix ``L_+`` and ``L_-`` linearly. With hard labels,
    ``gamma_pos == gamma_neg == g`` and ``clip == 0`` it equals
    ``sigmoid_focal_loss(gamma=g, alpha=None)``.

    Args:
      logits: float tensor ``[..., C]`` (f16, bf16, f32 or f64).
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      gamma_pos: focusing exponent of positives, float >= 0 (paper: 0).
      gamma_neg: focusing exponent of negatives, float >= 0 (paper: 4).
      clip: probability margin ``m`` in ``[0, 1)`` (paper: 0.05).
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      name: optional name scope.

    Returns:
      float32 (float64 for float64 logits) loss, shaped like ``logits`` for
      ``reduction="none"``, else a scalar.

    References:
      Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
      ICCV 2021 (defaults gamma_neg=4, gamma_pos=0, m=0.05).
    """
    p = asl_params(gamma_pos, gamma_neg, clip)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "asymmetric_loss"):
        logits, labels = c.prepare(logits, labels)
        return c.fused(logits, lambda x: _asl(x, labels, **p), reduction)


def _asl(x, labels, gamma_pos, gamma_neg, clip):
    y = tf.broadcast_to(labels, tf.shape(x))
    one = tf.ones_like(x)
    zero = tf.zeros_like(x)
    l_pos, g_pos = focal_loss_and_grad(x, one, None, gamma_pos)
    if clip == 0.0:
        l_neg, g_neg = focal_loss_and_grad(x, zero, None, gamma_neg)
    else:
        m = tf.constant(clip, x.dtype)
        s = tf.sigmoid(x)
        s_neg = tf.sigmoid(-x)
        active = s > m
        p_m = tf.where(active, s - m, zero)
        one_m_pm = tf.where(active, s_neg + m, one)  # 1 - p_m, >= m > 0
        # -log(1 - p_m) >= 0: log1p keeps relative precision for small p_m
        nll = tf.where(p_m < 0.5, -tf.math.log1p(-p_m), -tf.math.log(one_m_pm))
        ratio = tf.where(p_m > 0, tf.math.divide_no_nan(nll, p_m), one)
        if gamma_neg == 0.0:
            mod = one
            g = s * s_neg / one_m_pm
        else:
            mod = tf.pow(p_m, gamma_neg)
            g = s * s_neg * mod * (gamma_neg * ratio + 1.0 / one_m_pm)
        l_neg = mod * nll
        g_neg = tf.where(active, g, zero)
    return y * l_pos + (1.0 - y) * l_neg, y * g_pos + (1.0 - y) * g_neg
