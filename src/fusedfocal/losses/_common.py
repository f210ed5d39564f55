"""Private helpers shared by the loss modules in :mod:`fusedfocal.losses`.

* :func:`fused` wraps an element-wise ``compute(x) -> (loss, dloss_dx)`` in a
  ``tf.custom_gradient``: the math runs in float32 (float64 for float64
  logits), the analytic gradient is formed in the forward pass, and the
  backward pass returns ``upstream * grad`` in the logits' dtype by the
  package's one cast rule (:func:`fusedfocal.ops._validation.upstream_times`:
  the product in the compute dtype, one cast, saturating where it narrows).
* argument checks for data statistics (class counts, number of documents).
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v


def fused(logits, compute, reduction, count=None):
    """Run ``compute`` under a custom gradient and apply ``reduction``.

    Args:
      logits: the floating logits tensor (any of the four float dtypes).
      compute: ``x -> (loss, grad)``; ``x`` is the logits in the compute
        dtype; ``grad`` has ``x``'s shape, ``loss`` any shape.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      count: for ``"mean"``, a callable ``loss -> divisor`` (default: the
        number of loss elements); a zero divisor gives 0, never NaN.
    """
    cdtype = v.compute_dtype(logits.dtype)

    @tf.custom_gradient
    def forward(x_in):
        x = tf.cast(x_in, cdtype)
        loss, grad = compute(x)
        if reduction == "mean":
            n = count(loss) if count is not None else tf.size(loss)
            n = tf.cast(n, cdtype)
            out = tf.math.divide_no_nan(tf.reduce_sum(loss), n)
            grad = grad * tf.math.divide_no_nan(tf.ones([], cdtype), n)
        else:
            out = v.reduce(loss, reduction)

        def backward(upstream):
            up = tf.cast(upstream, cdtype)
            if reduction == "none" and up.shape.rank != grad.shape.rank:
                up = tf.reshape(up, tf.concat([tf.shape(up), tf.ones([grad.shape.rank - up.shape.rank], tf.int32)], 0))
            return v.upstream_times(up, grad, x_in.dtype)

        return out, backward

    return forward(logits)


def as_tensor(value, dtype):
    """A float, NumPy array or tensor parameter as a tensor of ``dtype``."""
    if value is None:
        return None
    if isinstance(value, float):  # straight to dtype: a float32 tensor first would round it
        return tf.constant(value, dtype)
    return tf.cast(tf.convert_to_tensor(value), dtype)


def check_per_class(name, value, logits):
    """Length and broadcast checks of a per-class parameter against logits."""
    v.check_class_length(name, value, logits.shape[-1])
    if isinstance(value, (np.ndarray, tf.Tensor, tf.Variable)):
        v.check_broadcast(name, tf.TensorShape(value.shape), logits.shape)


def check_labels_shape(labels, logits):
    """Labels must broadcast *to* the logits' shape (not grow it)."""
    out = tf.broadcast_static_shape(labels.shape, logits.shape)
    if not out.is_compatible_with(logits.shape) or (
        out.rank is not None and logits.shape.rank is not None and out.rank != logits.shape.rank
    ):
        raise v.invalid(
            "labels", f"a shape that broadcasts to logits.shape={tuple(logits.shape)}",
            f"shape {tuple(labels.shape)}",
        )


def prepare(logits, labels):
    """Convert and check ``(logits, labels)``; labels in the compute dtype."""
    logits = v.convert_logits(logits)
    labels = v.convert_labels(labels, logits)
    check_labels_shape(labels, logits)
    return logits, labels


def check_positive_float(name, value) -> float:
    value = v.check_nonnegative_float(name, value)
    if value <= 0:
        raise v.invalid(name, "a finite float > 0", value)
    return value


def check_counts(class_counts, num_docs=None, *, required_docs=False):
    """Validate per-class document counts ``n_c`` and the corpus size ``N``.

    Returns ``(counts, num_docs)``: a 1-D float64 array and a float (or
    ``None`` when not given and not required).
    """
    if class_counts is None:
        raise v.invalid("class_counts", "a vector of per-class document counts >= 0", None)
    counts = v.check_class_vector("class_counts", class_counts, lo=0.0, hi=None)
    if isinstance(counts, (tf.Tensor, tf.Variable)):
        counts = np.asarray(counts.numpy(), np.float64)
    counts = np.atleast_1d(np.asarray(counts, np.float64))
    if counts.ndim != 1:
        raise v.invalid("class_counts", "a 1-D vector of per-class counts", f"array of shape {counts.shape}")
    if num_docs is None:
        if required_docs:
            raise v.invalid("num_docs", "the number of training documents N > 0", None)
        return counts, None
    if isinstance(num_docs, bool) or not isinstance(num_docs, (numbers.Real, np.integer, np.floating)):
        raise TypeError(
            "Invalid type for argument `num_docs`. Expected a number > 0. "
            f"Received: num_docs={num_docs!r} of type {type(num_docs).__name__}"
        )
    num_docs = float(num_docs)
    if not np.isfinite(num_docs) or num_docs <= 0:
        raise v.invalid("num_docs", "the number of training documents N > 0", num_docs)
    if counts.size and counts.max() > num_docs:
        raise v.invalid(
            "class_counts", f"every count <= num_docs={num_docs:g}",
            f"array with max {counts.max():g}",
        )
    return counts, num_docs


def safe_priors(counts, num_docs):
    """``p_c = n_c / N`` with counts clipped into ``[0.5, N - 0.5]``.

    The clip only moves the counts 0 and N (and, for N == 1, both are 0.5),
    so ``log(p / (1 - p))`` is finite for every class: a class never seen
    gets the log-odds of half a document, ``log(0.5 / (N - 0.5))``.
    """
    n = np.clip(counts, 0.5, max(num_docs - 0.5, 0.5))
    return n / num_docs
