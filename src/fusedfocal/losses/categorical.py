"""Softmax (multi-class) focal loss from logits, dense and sparse labels."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _keras_compat as kc
from fusedfocal.ops import _validation as v

__all__ = ["categorical_focal_loss", "sparse_categorical_focal_loss", "categorical_params", "sparse_params",
           "sparse_label_ids"]


def categorical_params(gamma=2.0, alpha=None, *, label_smoothing=0.0, from_logits=None, axis=-1):
    """Validated arguments of :class:`CategoricalFocalLoss` (``from_logits``
    None: fusedfocal's defaults; True/False: Keras' ``alpha`` default)."""
    return dict(
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha, lo=0.0, hi=None),
        label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing),
        from_logits=kc.check_bool("from_logits", from_logits, optional=True),
        axis=kc.check_axis(axis),
    )


def _check_ignore(name, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise v.invalid(name, "None or an integer", value)
    return None if value is None else int(value)


def sparse_params(gamma=2.0, alpha=None, ignore_index=None, *, label_smoothing=0.0, from_logits=None, axis=-1,
                  ignore_class=None):
    """Validated arguments of :class:`SparseCategoricalFocalLoss`."""
    p = categorical_params(gamma, alpha, label_smoothing=label_smoothing, from_logits=from_logits, axis=axis)
    p["ignore_index"] = _check_ignore("ignore_index", ignore_index)
    p["ignore_class"] = _check_ignore("ignore_class", ignore_class)
    if p["ignore_index"] is not None and p["ignore_class"] is not None:
        raise v.invalid("ignore_class", "None when `ignore_index` is given (pass one of the two)", ignore_class)
    return p


def _function_params(gamma, alpha, label_smoothing, from_logits, axis, epsilon):
    """The functions' checks: ``from_logits`` is a bool there (default True)."""
    p = categorical_params(gamma, alpha, label_smoothing=label_smoothing, axis=axis)
    p["from_logits"] = kc.check_bool("from_logits", from_logits)
    p["epsilon"] = kc.check_epsilon(epsilon)
    return p


def _class_axis(p, rank, *, what="logits"):
    """The canonical class axis; vector ``alpha`` and label smoothing need it last.

    Keras broadcasts a vector ``alpha`` along the last axis and smooths with
    the size of the last axis of the labels, whatever ``axis`` is; with the
    class axis elsewhere that is not a per-class weight or smoothing, so it is
    refused rather than silently differing from Keras.
    """
    ax = kc.canonical_axis(p["axis"], rank, what=what)
    if ax not in (-1, rank - 1):
        if isinstance(p["alpha"], np.ndarray) or tf.is_tensor(p["alpha"]):
            raise v.invalid("alpha", f"a scalar when axis={p['axis']} is not the last axis (Keras broadcasts a "
                            "vector alpha along the last axis, not the class axis); move the class axis last",
                            p["alpha"] if not isinstance(p["alpha"], np.ndarray) else p["alpha"].tolist())
        if p["label_smoothing"]:
            raise v.invalid("label_smoothing", f"0 when axis={p['axis']} is not the last axis (Keras smooths "
                            "with the size of the last axis, not the class axis); move the class axis last",
                            p["label_smoothing"])
    return ax


def _smooth(y, label_smoothing):
    """Keras' categorical smoothing ``y (1 - ls) + ls / C``, C the last axis' size."""
    if not label_smoothing:
        return y
    num_classes = tf.cast(tf.shape(y)[-1], y.dtype)
    return y * (1.0 - label_smoothing) + label_smoothing / num_classes


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


def categorical_focal_loss(logits, labels, *, gamma=2.0, alpha=None, label_smoothing=0.0, from_logits=True, axis=-1,
                           epsilon=kc.KERAS_EPSILON, reduction="none", name=None):
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

    With ``alpha=0.25`` (Keras' default) this is Keras'
    ``categorical_focal_crossentropy`` with ``from_logits=True``, wherever
    Keras does not clip (every probability in ``[1e-7, 1 - 1e-7]``); where
    it clips, this is the exact value.

    Args:
      logits: float tensor ``[..., C]`` (the class axis is ``axis``).
      labels: one-hot or soft targets shaped like ``logits`` (rows summing
        to 1).
      gamma: focusing parameter >= 0 (Lin et al.: 2).
      alpha: None, a float >= 0 (a global scale) or a length-``C`` vector of
        per-class weights >= 0 (Keras' default is 0.25; here None, i.e. 1).
      label_smoothing: float in ``[0, 1]``; targets become
        ``y (1 - label_smoothing) + label_smoothing / C`` (Keras').
      from_logits: ``True`` (default): logits. ``False``: ``logits`` holds
        probabilities, read as Keras reads them (divided by their sum over
        ``axis``, clipped into ``[epsilon, 1 - epsilon]``); their log is used
        as the logits. The gradient flows to the probabilities.
      axis: the class axis (Keras'); not the last one only with a scalar
        ``alpha`` and no label smoothing (Keras applies both along the last
        axis whatever ``axis`` is).
      epsilon: the probability clip for ``from_logits=False`` (1e-7, the
        default of ``keras.backend.epsilon()``).
      reduction: ``"none"`` (per example, ``logits``' shape without
        ``axis``), ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      float32 (float64 for float64 logits): the per-example loss or a scalar.

    Raises:
      ValueError: a bad argument (Keras' wording, naming it), labels that do
        not broadcast to ``logits``, or ``axis`` out of range.
    """
    p = _function_params(gamma, alpha, label_smoothing, from_logits, axis, epsilon)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "categorical_focal_loss"):
        logits, labels = c.prepare(logits, labels)
        ax = _class_axis(p, logits.shape.rank)
        if ax not in (-1, logits.shape.rank - 1):
            labels = kc.class_axis_last(tf.broadcast_to(labels, tf.shape(logits)), ax)
            logits = kc.class_axis_last(logits, ax)
        c.check_per_class("alpha", p["alpha"], logits)
        if not p["from_logits"]:
            logits = kc.softmax_logits(tf.cast(logits, v.compute_dtype(logits.dtype)), p["epsilon"])
        labels = _smooth(labels, p["label_smoothing"])

        def compute(x):
            y = tf.broadcast_to(labels, tf.shape(x))
            return _focal_softmax(x, y, c.as_tensor(p["alpha"], x.dtype), p["gamma"])

        return c.fused(logits, compute, reduction)


def sparse_label_ids(labels, logits, axis=-1):
    """Integer class ids ``[...]`` for ``logits`` (class axis ``axis``, canonical).

    Float labels are rounded (Keras passes them as float); a size-1 axis at
    ``axis`` (or last) is squeezed, as Keras' sparse cross-entropy does.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        labels = tf.cast(tf.round(labels), tf.int64)
    elif not labels.dtype.is_integer:
        raise TypeError(
            f"Invalid dtype for argument `labels`. Expected an integer dtype. Received: labels.dtype={labels.dtype.name}"
        )
    shape = tf.TensorShape(logits.shape)
    rank = shape.rank
    if labels.shape.rank is not None and rank is not None:
        if labels.shape.rank == rank:
            squeeze_at = rank - 1 if axis == -1 else axis
            if labels.shape[squeeze_at] == 1:
                labels = tf.squeeze(labels, squeeze_at)
        ax = rank - 1 if axis == -1 else axis
        expected = shape[:ax].concatenate(shape[ax + 1:])
        if not labels.shape.is_compatible_with(expected):
            raise v.invalid(
                "labels", f"integer class ids shaped like logits without its class axis, {tuple(expected)}",
                f"shape {tuple(labels.shape)}",
            )
    return labels


def sparse_categorical_focal_loss(
    logits, labels, *, gamma=2.0, alpha=None, ignore_index=None, label_smoothing=0.0, from_logits=True, axis=-1,
    epsilon=kc.KERAS_EPSILON, reduction="none", name=None,
):
    r"""Softmax focal loss with integer labels (see :func:`categorical_focal_loss`).

    Equals :func:`categorical_focal_loss` of the one-hot labels with the
    same arguments.

    Args:
      logits: float tensor ``[..., C]`` (the class axis is ``axis``).
      labels: integer class ids shaped like ``logits`` without ``axis`` (a
        size-1 axis in its place is squeezed; float labels are rounded, as
        Keras passes them as float).
      gamma, alpha, label_smoothing, from_logits, epsilon: as in
        :func:`categorical_focal_loss` (smoothing applies to the one-hot
        labels).
      ignore_index: None or an integer label (e.g. -100, as in PyTorch) whose
        examples get loss 0 and gradient 0. Any other label outside
        ``[0, C)`` also gives 0 (``tf.one_hot``), silently.
      axis: the class axis of ``logits`` (Keras' ``axis``).
      reduction: ``"none"`` (``[...]``), ``"sum"``, or ``"mean"``, which
        divides by the number of non-ignored examples (0 if none).

    Returns:
      float32 (float64 for float64 logits): ``[...]`` or a scalar.
    """
    p = _function_params(gamma, alpha, label_smoothing, from_logits, axis, epsilon)
    p["ignore_index"] = _check_ignore("ignore_index", ignore_index)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "sparse_categorical_focal_loss"):
        logits = v.convert_logits(logits)
        ax = _class_axis(p, logits.shape.rank)
        labels = sparse_label_ids(labels, logits, ax)
        logits = kc.class_axis_last(logits, ax)
        c.check_per_class("alpha", p["alpha"], logits)
        cdtype = v.compute_dtype(logits.dtype)
        if not p["from_logits"]:
            logits = kc.softmax_logits(tf.cast(logits, cdtype), p["epsilon"])
        keep = None
        if p["ignore_index"] is not None:
            keep = tf.not_equal(labels, tf.cast(p["ignore_index"], labels.dtype))
            labels = tf.where(keep, labels, tf.zeros_like(labels))
        onehot = _smooth(tf.one_hot(labels, tf.shape(logits)[-1], dtype=cdtype), p["label_smoothing"])
        if keep is not None:
            onehot = onehot * tf.cast(keep, cdtype)[..., None]

        def compute(x):
            return _focal_softmax(x, onehot, c.as_tensor(p["alpha"], x.dtype), p["gamma"])

        count = None
        if keep is not None:
            count = lambda loss: tf.reduce_sum(tf.cast(keep, tf.int32))  # noqa: E731
        return c.fused(logits, compute, reduction, count=count)
