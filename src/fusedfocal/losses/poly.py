"""Poly-1 focal loss (Leng et al., ICLR 2022), sigmoid, from logits."""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import focal_loss_and_grad

__all__ = ["poly1_focal_loss", "poly_params"]


def poly_params(epsilon=1.0, gamma=2.0, alpha=None):
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"Invalid type for argument `epsilon`. Expected a Python float. Received: epsilon={epsilon!r}")
    epsilon = float(epsilon)
    if not (epsilon == epsilon and abs(epsilon) != float("inf")) or epsilon < -1.0:
        raise v.invalid("epsilon", "a finite float >= -1", epsilon)
    return dict(
        epsilon=epsilon,
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha),
    )


def poly1_focal_loss(logits, labels, *, epsilon=1.0, gamma=2.0, alpha=None, reduction="none", name=None):
    r"""Poly-1 sigmoid focal loss (Leng et al., ICLR 2022), from logits.

    .. math::

        \mathrm{Poly1}(x, y) = \mathrm{FL}_{\gamma,\alpha}(x, y) + \epsilon\,(1 - p_t)^{\gamma + 1}

    ``FL`` is :func:`fusedfocal.sigmoid_focal_loss` (``alpha`` weights only
    the focal term, as in the authors' code); ``1 - p_t = y sigmoid(-x) +
    (1-y) sigmoid(x)`` is a sum of non-negative terms (no cancellation).
    ``epsilon = 0`` is the focal loss; ``epsilon = -1`` drops the first
    polynomial term. Gradient: analytic custom gradient, the focal kernel's
    plus ``epsilon (gamma+1) (1-p_t)^gamma (1-2y) s (1-s)``.

    Args:
      logits: float tensor ``[..., C]``.
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      epsilon: float >= -1 (Leng et al.: 1 for Poly-1 focal on detection;
        they tune it in [-1, 1] per task).
      gamma: focal exponent >= 0 (default 2).
      alpha: None, float or per-class vector in ``[0, 1]``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      float32 (float64 for float64 logits) loss shaped like ``logits`` for
      ``reduction="none"``, else a scalar.
    """
    p = poly_params(epsilon, gamma, alpha)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "poly1_focal_loss"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("alpha", p["alpha"], logits)

        def compute(x):
            y = tf.broadcast_to(labels, tf.shape(x))
            a_t = None
            if p["alpha"] is not None:
                a = c.as_tensor(p["alpha"], x.dtype)
                a_t = (1.0 - a) + (2.0 * a - 1.0) * y
            loss, grad = focal_loss_and_grad(x, y, a_t, p["gamma"])
            if p["epsilon"]:
                s, s_neg = tf.sigmoid(x), tf.sigmoid(-x)
                q = y * s_neg + (1.0 - y) * s
                qg = tf.pow(q, p["gamma"])  # pow(0, 0) == 1
                loss = loss + p["epsilon"] * qg * q
                grad = grad + p["epsilon"] * (p["gamma"] + 1.0) * qg * (1.0 - 2.0 * y) * s * s_neg
            return loss, grad

        return c.fused(logits, compute, reduction)
