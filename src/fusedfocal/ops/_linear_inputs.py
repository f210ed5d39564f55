"""Argument checks and label formats of the fused head ops (:mod:`fusedfocal.ops.linear`).

Labels arrive as positive ids (a ``tf.RaggedTensor`` ``[B, None]``, or an int
tensor ``[B, L]`` padded with -1) or as dense multi-hot ``[B, C]``; each
becomes a :class:`Labels` that forms one chunk's dense ``[B, size]`` block
on demand. Everything here runs at trace time except the id range checks.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v
from fusedfocal.ops._linear_chunks import slice_

_INT_DTYPES = (tf.int32, tf.int64)

# ---------------------------------------------------------------------------
# Argument checks (Python, at trace time).


def check_choice(name, value, choices):
    if value not in choices:
        raise v.invalid(name, f"one of {set(choices)}", value)
    return value


def convert_float(name, x, rank, *, allow_none=False):
    if x is None:
        if allow_none:
            return None
        raise v.invalid(name, f"a floating tensor of rank {rank}", None)
    if isinstance(x, tf.RaggedTensor):
        raise v.invalid(name, f"a dense floating tensor of rank {rank}", "a tf.RaggedTensor", describe=True)
    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        raise TypeError(
            f"Invalid dtype for argument `{name}`. Expected float16, bfloat16, float32 or float64. "
            f"Received: {name}.dtype={x.dtype.name}")
    if x.shape.rank != rank:
        raise v.invalid(name, f"a tensor of rank {rank}", f"shape {tuple(x.shape)} (rank {x.shape.rank})",
                        describe=True)
    return x


def check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise v.invalid("chunk_size", "None or a positive Python int", chunk_size)
    return int(chunk_size)


def read(value):
    """A (Keras or TF) variable as a tensor: read once, outside the custom gradient."""
    if isinstance(value, tf.Variable) or hasattr(value, "__tf_tensor__"):
        return tf.convert_to_tensor(value)
    return value


def class_param(name, value, num_classes, *, lo, hi):
    """None, a float, or a [C] float vector (NumPy or tensor)."""
    value = read(value)
    value = v.check_class_vector(name, value, lo=lo, hi=hi)
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.shape[0] != num_classes:
            raise v.invalid(name, f"None, a float or a vector of length {num_classes} (the number of labels)",
                            f"array of shape {value.shape}", describe=True)
    elif isinstance(value, (tf.Tensor, tf.Variable)):
        shape = tf.TensorShape(value.shape)
        if shape.rank == 0:
            return value
        if shape.rank != 1 or not shape.is_compatible_with([num_classes]):
            raise v.invalid(name, f"None, a float or a vector of length {num_classes} (the number of labels)",
                            f"tensor of shape {tuple(shape)}", describe=True)
    return value


def class_vector(name, value, num_classes):
    """``class_weights`` / ``logit_offsets``: None or a [C] vector only."""
    if value is None:
        return None
    value = read(value)
    if isinstance(value, tf.Tensor):
        shape = tf.TensorShape(value.shape)
        if shape.rank != 1 or not shape.is_compatible_with([num_classes]):
            raise v.invalid(name, f"None or a vector of length {num_classes} (the number of labels)",
                            f"tensor of shape {tuple(shape)}", describe=True)
        return value
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise v.invalid(name, f"None or a vector of length {num_classes}", value) from None
    if arr.shape != (num_classes,):
        raise v.invalid(name, f"None or a vector of length {num_classes} (the number of labels)",
                        f"array of shape {arr.shape}", describe=True)
    if not np.isfinite(arr).all():
        raise v.invalid(name, "finite entries", "an array with a non-finite entry", describe=True)
    if name == "class_weights" and (arr < 0).any():
        raise v.invalid(name, "entries >= 0", f"an array with entry {float(arr.min())!r}", describe=True)
    return arr


# ---------------------------------------------------------------------------
# Labels: (rows, ids) pairs, or dense [B, C].


class Labels:
    """Positive labels as ``rows``/``ids`` int32 vectors of equal length
    (entries with an id outside ``[0, C)`` are ignored: the -1 padding), or a
    dense float32 ``[B, C]`` tensor."""

    def __init__(self, rows=None, ids=None, dense=None):
        self.rows, self.ids, self.dense = rows, ids, dense

    def chunk(self, start, size, batch):
        """The chunk's dense float32 labels ``[B, size]``; ``start`` may be a tensor."""
        if self.dense is not None:
            return slice_(self.dense, [0, start], [-1, size])
        local = self.ids - start
        inside = (local >= 0) & (local < size)
        # Ids outside the chunk (and the -1 padding) go to a dump column
        # ``size``: static shapes throughout, as XLA wants. Scatter-*update*
        # of the same value 1: duplicate ids give 1, not 2 (deduplicated).
        cols = tf.where(inside, local, size)
        idx = tf.stack([self.rows, cols], axis=1)
        block = tf.tensor_scatter_nd_update(
            tf.zeros(tf.stack([batch, size + 1]), tf.float32), idx, tf.ones_like(self.rows, tf.float32))
        return block[:, :size]


def segment_ids(row_splits, nvals):
    """``RaggedTensor.value_rowids()`` with static shapes (XLA): a 1 at each
    row start, then a cumulative sum."""
    starts = row_splits[1:-1]
    marks = tf.tensor_scatter_nd_add(
        tf.zeros(tf.reshape(nvals + 1, [1]), tf.int32), tf.reshape(starts, [-1, 1]),
        tf.ones_like(starts, tf.int32))
    return tf.cumsum(marks[:-1])


def convert_labels(labels, batch_static, num_classes, *, xla):
    """Returns ``(Labels, checks)``; raises ValueError/TypeError for bad input.

    Ids out of range are a ``ValueError`` in eager mode, a run-time assertion
    (``InvalidArgumentError`` naming `labels`) in graph mode; XLA drops
    run-time assertions, so there they are ignored (check them in the input
    pipeline).
    """
    checks = []
    if isinstance(labels, tf.RaggedTensor):
        if labels.ragged_rank != 1 or labels.shape.rank != 2:
            raise v.invalid("labels", "a tf.RaggedTensor of label ids shaped [batch, None]",
                            f"ragged tensor of shape {labels.shape} (ragged_rank {labels.ragged_rank})",
                            describe=True)
        if labels.dtype not in _INT_DTYPES:
            raise TypeError("Invalid dtype for argument `labels`. Expected int32 or int64 label ids in a "
                            f"tf.RaggedTensor. Received: labels.dtype={labels.dtype.name}")
        check_batch(labels.shape[0], batch_static)
        ids = tf.cast(labels.values, tf.int32)
        splits = tf.cast(labels.row_splits, tf.int32)
        rows = segment_ids(splits, tf.shape(ids)[0])
        checks = check_ids(ids, num_classes, lo=0, xla=xla, what="ragged label ids")
        return Labels(rows=rows, ids=ids), checks
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2:
        raise v.invalid("labels", "a tf.RaggedTensor [batch, None] of ids, an int tensor [batch, L] of ids "
                        "padded with -1, or a dense multi-hot float tensor [batch, C]",
                        f"shape {tuple(labels.shape)} (rank {labels.shape.rank})", describe=True)
    check_batch(labels.shape[0], batch_static)
    if labels.dtype in _INT_DTYPES:
        ids2 = tf.cast(labels, tf.int32)
        shape = tf.shape(ids2)
        rows = tf.reshape(tf.broadcast_to(tf.range(shape[0])[:, None], shape), [-1])
        ids = tf.reshape(ids2, [-1])
        checks = check_ids(ids, num_classes, lo=-1, xla=xla, what="padded label ids (-1 is padding)")
        return Labels(rows=rows, ids=ids), checks
    if labels.dtype.is_floating or labels.dtype == tf.bool:
        if labels.shape[1] is not None and labels.shape[1] != num_classes:
            raise v.invalid("labels", f"dense multi-hot labels of shape [batch, {num_classes}] (float or bool)",
                            f"shape {tuple(labels.shape)}", describe=True)
        return Labels(dense=tf.cast(labels, tf.float32)), checks
    raise TypeError("Invalid dtype for argument `labels`. Expected int32/int64 label ids (ragged or padded "
                    f"with -1) or float/bool multi-hot. Received: labels.dtype={labels.dtype.name}")


def check_batch(label_batch, batch_static):
    if label_batch is not None and batch_static is not None and label_batch != batch_static:
        raise v.invalid("labels", f"{batch_static} rows (the batch size of `features`)",
                        f"{label_batch} rows", describe=True)


def check_ids(ids, num_classes, *, lo, xla, what):
    if tf.executing_eagerly():
        arr = ids.numpy()
        bad = (arr < lo) | (arr >= num_classes)
        if bad.any():
            raise v.invalid("labels", f"{what} in [{lo}, {num_classes}) (the number of labels)",
                            f"an id {int(arr[bad][0])} out of range", describe=True)
        return []
    if xla:
        return []
    msg = f"Invalid value for argument `labels`: expected {what} in [{lo}, {num_classes}); found one out of range."
    # the bounds in the ids' dtype: int64 ids against a Python int (or an int32 tensor) bound
    return [tf.debugging.assert_greater_equal(ids, tf.cast(lo, ids.dtype), message=msg),
            tf.debugging.assert_less(ids, tf.cast(num_classes, ids.dtype), message=msg)]


def class_params(alpha, class_weights, logit_offsets, num_classes, cdtype):
    """The per-class arguments checked against ``num_classes`` and in the compute dtype: ``alpha``
    (None, a float, or a ``[C]`` / scalar tensor), ``class_weights`` and ``logit_offsets``."""
    alpha = class_param("alpha", alpha, num_classes, lo=0.0, hi=1.0)
    class_weights = class_vector("class_weights", class_weights, num_classes)
    logit_offsets = class_vector("logit_offsets", logit_offsets, num_classes)
    if alpha is not None and not isinstance(alpha, float):
        alpha = tf.reshape(tf.cast(alpha, cdtype), [-1]) if tf.TensorShape(alpha.shape).rank else \
            tf.cast(alpha, cdtype)
    weights = None if class_weights is None else tf.cast(class_weights, cdtype)
    offsets = None if logit_offsets is None else tf.cast(logit_offsets, cdtype)
    return alpha, weights, offsets
