"""Softmax (multi-class) focal loss from logits, dense and sparse labels."""

from __future__ import annotations

import numbers

import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v

__all__ = ["categorical_focal_loss", "sparse_categorical_focal_loss", "categorical_params", "sparse_params"]


def categorical_params(gamma=2.0, alpha=None):
    return dict(
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha, lo=0.0, hi=None),
    )


def sparse_params(gamma=2.0, alpha=None, ignore_index=None):
    p = categorical_params(gamma, alpha)
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
        raise v.invalid("ignore_index", "None or an integer", ignore_index)
    p["ignore_index"] = None if ignore_index is None else int(ignore_index)
    return p


def _log_softmax_pair(x):
    """``(log p, log(1 - p))`` of ``p = softmax(x)`` without cancellation.

    For the arg-max class ``t``, with ``d = logsumexp_{k != t}(x_k) - x_t <= 0``:
    ``log p_t = -log1p(exp(d))`` (``log_softmax`` would lose the relative
    precision of a tiny ``-log p_t``) and ``log(1 - p_t) = d + log p_t`` (exact
    even when ``1 - p_t`` rounds to 0). Every other class has ``p <= 1/2``:
    ``log_softmax`` and ``log1p(-p)`` are accurate.
    """
    num_classes = tf.shape(x)[-1]
    top = tf.one_hot(tf.argmax(x, axis=-1), num_classes, on_value=True, off_value=False, dtype=tf.bool)
    neg_inf = tf.constant(-float("inf"), x.dtype)
    x_top = tf.reduce_max(x, axis=-1, keepdims=True)
    d = tf.reduce_logsumexp(tf.where(top, neg_inf, x), axis=-1, keepdims=True) - x_top  # -inf when C == 1
    logp_top = -tf.math.log1p(tf.exp(d))
    logp = tf.where(top, logp_top, tf.nn.log_softmax(x, axis=-1))
    off_top = tf.math.log1p(-tf.exp(tf.where(top, tf.zeros_like(logp) - 1.0, logp)))
    return logp, tf.where(top, d + logp_top, off_top)


def _focal_softmax(x, y, a, gamma):
    """Per-example loss ``[...]`` and gradient ``[..., C]``.

    ``L = -sum_j w_j (1-p_j)^g log p_j`` with ``w_j = a_j y_j``. With
    ``G_j = w_j (1-p_j)^g (g p_j log(p_j)/(1-p_j) - 1)`` (``= w_j f'(p_j) p_j``),
    ``dL/dx_k = G_k - p_k sum_j G_j``.
    """
    logp, log1mp = _log_softmax_pair(x)
    w = y if a is None else y * a
    p = tf.exp(logp)
    one_m_p = tf.exp(log1mp)
    zero = tf.zeros_like(w)
    if gamma == 0.0:
        loss = -tf.reduce_sum(tf.where(w != 0, w * logp, zero), axis=-1)
        g = -w
    else:
        mod = tf.exp(gamma * log1mp)  # (1-p)^gamma, 0 when 1-p underflows
        # log(p)/(1-p) -> -1 as p -> 1; there mod == 0 anyway
        ratio = tf.where(one_m_p > 0, logp / tf.where(one_m_p > 0, one_m_p, tf.ones_like(one_m_p)), -tf.ones_like(p))
        loss = -tf.reduce_sum(tf.where(w != 0, w * mod * logp, zero), axis=-1)
        g = tf.where(w != 0, w * mod * (gamma * p * ratio - 1.0), zero)
    # G_k - p_k sum_j G_j == G_k (1 - p_k) - p_k sum_{j != k} G_j: no
    # cancellation for the confident class (p_k -> 1).
    others = tf.reduce_sum(g, axis=-1, keepdims=True) - g
    grad = g * one_m_p - p * others
    return loss, grad


def categorical_focal_loss(logits, labels, *, gamma=2.0, alpha=None, reduction="none", name=None):
    r"""Softmax focal loss from logits (one-hot or soft labels).

    .. math::

        p = \mathrm{softmax}(x),\qquad
        FL(x, y) = -\sum_j \alpha_j\, y_j\, (1 - p_j)^{\gamma} \log p_j

    ``log p = log_softmax(x)``; ``(1-p_j)^gamma = exp(gamma log(1-p_j))``
    with ``log(1-p_j)`` from a log-sum-exp over the other classes for the
    arg-max class (exact even when ``1 - p`` rounds to 0) and ``log1p(-p_j)``
    elsewhere, so ``gamma`` in (0, 1) is finite at saturation. ``gamma = 0``
    (with ``alpha`` None) is ``tf.nn.softmax_cross_entropy_with_logits``.

    Gradient: analytic custom gradient
    ``dFL/dx_k = G_k - p_k sum_j G_j`` with
    ``G_j = alpha_j y_j (1-p_j)^gamma (gamma p_j log(p_j)/(1-p_j) - 1)``.
    It does not vanish on confident mistakes: for logits ``[50, 0, -50]``
    with the last class true it is about ``[1, 0, -1]`` (Keras 3's
    ``CategoricalFocalCrossentropy`` clips the probability and returns 0).

    Args:
      logits: float tensor ``[..., C]``.
      labels: one-hot or soft targets ``[..., C]`` (rows summing to 1).
      gamma: focusing parameter >= 0 (Lin et al.: 2).
      alpha: None, a float >= 0 (a global scale) or a length-``C`` vector of
        per-class weights >= 0.
      reduction: ``"none"`` (per example, shape ``[...]``), ``"sum"`` or
        ``"mean"`` (over examples).

    Returns:
      float32 (float64 for float64 logits): ``[...]`` or a scalar.
    """
    p = categorical_params(gamma, alpha)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "categorical_focal_loss"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("alpha", p["alpha"], logits)

        def compute(x):
            y = tf.broadcast_to(labels, tf.shape(x))
            return _focal_softmax(x, y, c.as_tensor(p["alpha"], x.dtype), p["gamma"])

        return c.fused(logits, compute, reduction)


def sparse_categorical_focal_loss(
    logits, labels, *, gamma=2.0, alpha=None, ignore_index=None, reduction="none", name=None
):
    r"""Softmax focal loss with integer labels (see :func:`categorical_focal_loss`).

    Args:
      logits: float tensor ``[..., C]``.
      labels: integer class ids ``[...]`` (a trailing axis of size 1 is
        squeezed; float labels are rounded, as Keras passes them as float).
      gamma, alpha: as in :func:`categorical_focal_loss`.
      ignore_index: None or an integer label (e.g. -100, as in PyTorch) whose
        examples get loss 0 and gradient 0. Any other label outside
        ``[0, C)`` also gives 0 (``tf.one_hot``), silently.
      reduction: ``"none"`` (``[...]``), ``"sum"``, or ``"mean"``, which
        divides by the number of non-ignored examples (0 if none).

    Returns:
      float32 (float64 for float64 logits): ``[...]`` or a scalar.
    """
    p = sparse_params(gamma, alpha, ignore_index)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "sparse_categorical_focal_loss"):
        logits = v.convert_logits(logits)
        c.check_per_class("alpha", p["alpha"], logits)
        labels = tf.convert_to_tensor(labels)
        if labels.dtype.is_floating:
            labels = tf.cast(tf.round(labels), tf.int64)
        elif not labels.dtype.is_integer:
            raise TypeError(
                f"Invalid dtype for argument `labels`. Expected an integer dtype. Received: labels.dtype={labels.dtype.name}"
            )
        if labels.shape.rank is not None and logits.shape.rank is not None:
            if labels.shape.rank == logits.shape.rank and labels.shape[-1] == 1:
                labels = tf.squeeze(labels, -1)
            if not labels.shape.is_compatible_with(logits.shape[:-1]):
                raise v.invalid(
                    "labels", f"integer class ids shaped logits.shape[:-1]={tuple(logits.shape[:-1])}",
                    f"shape {tuple(labels.shape)}",
                )
        cdtype = v.compute_dtype(logits.dtype)
        keep = None
        if p["ignore_index"] is not None:
            keep = tf.not_equal(labels, tf.cast(p["ignore_index"], labels.dtype))
            labels = tf.where(keep, labels, tf.zeros_like(labels))
        onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=cdtype)
        if keep is not None:
            onehot = onehot * tf.cast(keep, cdtype)[..., None]

        def compute(x):
            return _focal_softmax(x, onehot, c.as_tensor(p["alpha"], x.dtype), p["gamma"])

        count = None
        if keep is not None:
            count = lambda loss: tf.reduce_sum(tf.cast(keep, tf.int32))  # noqa: E731
        return c.fused(logits, compute, reduction, count=count)
