"""A dense stand-in for the fused head ops, for tests only, until ``fusedfocal.ops.linear_focal_loss``
and ``linear_top_k`` exist (issue 19; another branch writes them). Same signatures; it forms the
``[B, C]`` logits, so it is only for small ``C``. Never shipped: :func:`install` puts it on
``fusedfocal.ops`` only where the real ops are missing.
"""

from __future__ import annotations

import tensorflow as tf

import fusedfocal
from fusedfocal import ops

REAL = hasattr(ops, "linear_focal_loss") and hasattr(ops, "linear_top_k")


def _logits(features, kernel, bias, kernel_layout):
    logits = tf.matmul(tf.cast(features, tf.float32), tf.cast(kernel, tf.float32),
                       transpose_b=kernel_layout == "ch")
    return logits if bias is None else logits + tf.cast(bias, tf.float32)


def multi_hot(labels, num_labels):
    """Ragged ids / -1-padded ids / multi-hot -> float32 multi-hot, with XLA-compilable ops only."""
    if isinstance(labels, tf.RaggedTensor):
        splits = tf.cast(labels.row_splits, tf.int64)
        n = tf.size(labels.values, out_type=tf.int64)
        rows = tf.searchsorted(splits, tf.range(n), side="right", out_type=tf.int64) - 1
        idx = tf.stack([rows, tf.cast(labels.values, tf.int64)], 1)
        shape = tf.stack([tf.shape(splits, out_type=tf.int64)[0] - 1, tf.constant(num_labels, tf.int64)])
        return tf.minimum(tf.scatter_nd(idx, tf.ones([n], tf.float32), shape), 1.0)
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        return tf.reduce_max(tf.one_hot(labels, num_labels, dtype=tf.float32), axis=1)
    return tf.cast(labels, tf.float32)


def linear_focal_loss(features, kernel, bias, labels, *, gamma=2.0, alpha=None, class_weights=None,
                      logit_offsets=None, reduction="mean", kernel_layout="hc", chunk_size=None,
                      implementation="auto", grad_mode="forward"):
    logits = _logits(features, kernel, bias, kernel_layout)
    if logit_offsets is not None:
        logits += tf.cast(logit_offsets, tf.float32)
    y = multi_hot(labels, logits.shape[-1])
    loss = fusedfocal.sigmoid_focal_loss(logits, y, gamma=gamma, alpha=alpha)
    if class_weights is not None:
        loss *= tf.cast(class_weights, tf.float32)
    return tf.reduce_mean(loss) if reduction == "mean" else tf.reduce_sum(loss)


def linear_top_k(features, kernel, bias, k, *, kernel_layout="hc", chunk_size=None):
    scores, ids = tf.math.top_k(tf.sigmoid(_logits(features, kernel, bias, kernel_layout)), k)
    return scores, ids


def install(monkeypatch=None):
    """Puts the stand-ins on ``fusedfocal.ops`` unless the real ops exist; returns True if it did."""
    if REAL:
        return False
    for name, fn in (("linear_focal_loss", linear_focal_loss), ("linear_top_k", linear_top_k)):
        if monkeypatch is not None:
            monkeypatch.setattr(ops, name, fn, raising=False)
        else:
            setattr(ops, name, fn)
    return True
