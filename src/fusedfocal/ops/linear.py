"""A fused classifier head: ``features @ kernel + bias`` and the sigmoid focal
loss, chunk by chunk over labels, never forming a ``[batch, labels]`` tensor.

For extreme multi-label classification (hundreds of thousands to millions of
labels) the logits, their gradient and the dense multi-hot labels of a plain
``Dense`` + loss step are each ``[B, C]``. Here a ``tf.while_loop`` walks the
labels in chunks of ``chunk_size``; each chunk forms its ``[B, chunk]``
logits in float32, the loss sum and ``dloss/dlogits`` in one pass (the native
``FusedFocalLossGrad`` op, or the pure-TF formula of ``focal.py``), and
immediately turns them into the chunk's share of the three gradients by
matmul. Labels arrive as positive ids (ragged, or padded with -1) and are
scattered into the chunk's dense ``[B, chunk]`` block there.

Memory: besides the inputs, one kernel-sized gradient (returned anyway),
``[B, H]`` float32 and a few ``[B, chunk]`` blocks. Under XLA the kernel
gradient is written chunk by chunk in place (dynamic-update-slice into a
loop-carried buffer); in graph and eager mode the chunks are collected in a
``TensorArray`` and concatenated (one copy at the end). See ``docs/xmc.md``.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v
from fusedfocal.ops import focal as _focal
from fusedfocal.ops import native

__all__ = ["linear_focal_loss", "linear_top_k", "KERNEL_LAYOUTS", "GRAD_MODES", "default_chunk_size"]

KERNEL_LAYOUTS = ("hc", "ch")
GRAD_MODES = ("forward", "recompute")
_REDUCTIONS = ("sum", "mean")
_INT_DTYPES = (tf.int32, tf.int64)
_ALIGN = 128
# B * chunk float32 elements per chunk (16 MB): measured best of 1024..8192
# labels a chunk at B=1024, C=131072, H=256 under XLA (docs/xmc.md).
_CHUNK_ELEMENTS = 1 << 22
_DEFAULT_BATCH = 1024  # assumed when the batch size is unknown at trace time (Keras traces with None)


def default_chunk_size(batch, num_labels) -> int:
    """Labels per chunk: about ``2**22 / batch`` (a ``[B, chunk]`` float32
    block of 16 MB), a multiple of 128 between 512 and 65536, at most
    ``num_labels``."""
    b = batch if isinstance(batch, int) and batch > 0 else _DEFAULT_BATCH
    chunk = _CHUNK_ELEMENTS // b
    chunk = max(512, min(65536, chunk // _ALIGN * _ALIGN))
    return int(max(1, min(chunk, num_labels)))


# ---------------------------------------------------------------------------
# Argument checks (Python, at trace time).


def _check_choice(name, value, choices):
    if value not in choices:
        raise v.invalid(name, f"one of {set(choices)}", value)
    return value


def _convert_float(name, x, rank, *, allow_none=False):
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


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise v.invalid("chunk_size", "None or a positive Python int", chunk_size)
    return int(chunk_size)


def _read(value):
    """A (Keras or TF) variable as a tensor: read once, outside the custom gradient."""
    if isinstance(value, tf.Variable) or hasattr(value, "__tf_tensor__"):
        return tf.convert_to_tensor(value)
    return value


def _class_param(name, value, num_classes, *, lo, hi):
    """None, a float, or a [C] float vector (NumPy or tensor)."""
    value = _read(value)
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


def _class_vector(name, value, num_classes):
    """``class_weights`` / ``logit_offsets``: None or a [C] vector only."""
    if value is None:
        return None
    value = _read(value)
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


class _Labels:
    """Positive labels as ``rows``/``ids`` int32 vectors of equal length
    (entries with an id outside ``[0, C)`` are ignored: the -1 padding), or a
    dense float32 ``[B, C]`` tensor."""

    def __init__(self, rows=None, ids=None, dense=None):
        self.rows, self.ids, self.dense = rows, ids, dense

    def chunk(self, start, size, batch):
        """The chunk's dense float32 labels ``[B, size]``; ``start`` may be a tensor."""
        if self.dense is not None:
            return _slice(self.dense, [0, start], [-1, size])
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


def _segment_ids(row_splits, nvals):
    """``RaggedTensor.value_rowids()`` with static shapes (XLA): a 1 at each
    row start, then a cumulative sum."""
    starts = row_splits[1:-1]
    marks = tf.tensor_scatter_nd_add(
        tf.zeros(tf.reshape(nvals + 1, [1]), tf.int32), tf.reshape(starts, [-1, 1]),
        tf.ones_like(starts, tf.int32))
    return tf.cumsum(marks[:-1])


def _convert_labels(labels, batch_static, num_classes, *, xla):
    """Returns ``(_Labels, checks)``; raises ValueError/TypeError for bad input.

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
        _check_batch(labels.shape[0], batch_static)
        ids = tf.cast(labels.values, tf.int32)
        splits = tf.cast(labels.row_splits, tf.int32)
        rows = _segment_ids(splits, tf.shape(ids)[0])
        checks = _check_ids(ids, num_classes, lo=0, xla=xla, what="ragged label ids")
        return _Labels(rows=rows, ids=ids), checks
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2:
        raise v.invalid("labels", "a tf.RaggedTensor [batch, None] of ids, an int tensor [batch, L] of ids "
                        "padded with -1, or a dense multi-hot float tensor [batch, C]",
                        f"shape {tuple(labels.shape)} (rank {labels.shape.rank})", describe=True)
    _check_batch(labels.shape[0], batch_static)
    if labels.dtype in _INT_DTYPES:
        ids2 = tf.cast(labels, tf.int32)
        shape = tf.shape(ids2)
        rows = tf.reshape(tf.broadcast_to(tf.range(shape[0])[:, None], shape), [-1])
        ids = tf.reshape(ids2, [-1])
        checks = _check_ids(ids, num_classes, lo=-1, xla=xla, what="padded label ids (-1 is padding)")
        return _Labels(rows=rows, ids=ids), checks
    if labels.dtype.is_floating or labels.dtype == tf.bool:
        if labels.shape[1] is not None and labels.shape[1] != num_classes:
            raise v.invalid("labels", f"dense multi-hot labels of shape [batch, {num_classes}] (float or bool)",
                            f"shape {tuple(labels.shape)}", describe=True)
        return _Labels(dense=tf.cast(labels, tf.float32)), checks
    raise TypeError("Invalid dtype for argument `labels`. Expected int32/int64 label ids (ragged or padded "
                    f"with -1) or float/bool multi-hot. Received: labels.dtype={labels.dtype.name}")


def _check_batch(label_batch, batch_static):
    if label_batch is not None and batch_static is not None and label_batch != batch_static:
        raise v.invalid("labels", f"{batch_static} rows (the batch size of `features`)",
                        f"{label_batch} rows", describe=True)


def _check_ids(ids, num_classes, *, lo, xla, what):
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
    return [tf.debugging.assert_greater_equal(ids, lo, message=msg),
            tf.debugging.assert_less(ids, num_classes, message=msg)]


# ---------------------------------------------------------------------------
# The element-wise part of a chunk.


class _Elementwise:
    """``(loss_sum, dlogits)`` of a ``[B, size]`` float32 logits block."""

    def __init__(self, gamma, alpha, class_weights, use_native, cdtype):
        self.gamma = gamma
        self.alpha = alpha  # None, float or [C] cdtype tensor
        self.weights = class_weights  # None or [C] cdtype tensor
        self.native = use_native
        self.cdtype = cdtype

    def __call__(self, logits, y, start, size):
        alpha_c = self.alpha
        if isinstance(alpha_c, tf.Tensor) and alpha_c.shape.rank == 1:
            alpha_c = _slice(alpha_c, [start], [size])
        w_c = None if self.weights is None else _slice(self.weights, [start], [size])
        if self.native:
            ops = native.load()
            if alpha_c is None:
                a = tf.zeros([0], tf.float32)
            else:
                a = tf.cast(alpha_c, tf.float32)
            weights = [] if w_c is None else [tf.broadcast_to(w_c[None, :], tf.shape(logits))]
            loss, grad = ops.fused_focal_loss_grad(
                logits, y, a, weights, gamma=self.gamma, label_smoothing=0.0, reduction="sum")
            return tf.cast(loss, tf.float64), grad
        y = tf.cast(y, self.cdtype)
        alpha_t = _focal._alpha_t(alpha_c, y)
        loss, grad = _focal.focal_loss_and_grad(logits, y, alpha_t, self.gamma)
        if w_c is not None:
            loss, grad = loss * w_c, grad * w_c
        return tf.cast(tf.reduce_sum(loss), tf.float64), grad


# ---------------------------------------------------------------------------
# Chunked loops.


class _Head:
    """The pieces every chunk needs, in the compute dtype."""

    def __init__(self, features, kernel, bias, offsets, layout, cdtype):
        self.x = tf.cast(features, cdtype) if features.dtype != cdtype else features
        self.kernel, self.bias, self.offsets = kernel, bias, offsets
        self.layout, self.cdtype = layout, cdtype
        self.batch = tf.shape(features)[0]

    def kernel_chunk(self, start, size):
        if self.layout == "hc":
            k = _slice(self.kernel, [0, start], [-1, size])
        else:
            k = _slice(self.kernel, [start, 0], [size, -1])
        return tf.cast(k, self.cdtype) if k.dtype != self.cdtype else k

    def logits(self, start, size):
        k = self.kernel_chunk(start, size)
        z = tf.matmul(self.x, k, transpose_b=self.layout == "ch")
        if self.bias is not None:
            z = z + tf.cast(_slice(self.bias, [start], [size]), self.cdtype)
        if self.offsets is not None:
            z = z + _slice(self.offsets, [start], [size])
        return z, k

    def grads(self, dz, k, rows_first=False):
        """Chunk shares: d features ``[B, H]``, d kernel chunk (label-major
        ``[size, H]`` when ``rows_first``, else in the kernel's layout), d bias chunk."""
        gx = tf.matmul(dz, k, transpose_b=self.layout == "hc")
        if self.layout == "hc" and not rows_first:
            gk = tf.matmul(self.x, dz, transpose_a=True)
        else:
            gk = tf.matmul(dz, self.x, transpose_a=True)
        gb = tf.reduce_sum(dz, axis=0)
        return gx, gk, gb


class _Collector:
    """Chunks of a ``[C]``-long gradient along ``axis`` of ``shape``.

    Under XLA: dynamic-update-slice into a loop-carried buffer, which XLA
    does in place (one kernel-sized buffer, no copy). Elsewhere (graph and
    eager mode, which have no in-place update): a TensorArray of label-major
    chunks ``[size, ...]`` (the tail chunk included, so one concat joins
    them), then one transpose for ``axis=1``; peak two kernel-sized buffers.
    ``write`` takes chunks label-major when ``rows_first``.
    """

    def __init__(self, shape, axis, dtype, xla, n_chunks):
        self.shape, self.axis, self.dtype = shape, axis, dtype
        self.dus = _dynamic_update_slice() if xla else None
        self.rows_first = self.dus is None  # TensorArray chunks are [size, ...]
        if self.dus is not None:
            self.init = tf.zeros(shape, dtype)
        else:
            self.init = tf.TensorArray(dtype, size=n_chunks, infer_shape=False)

    def write(self, acc, i, start, value):
        value = tf.cast(value, self.dtype) if value.dtype != self.dtype else value
        if self.dus is not None:
            idx = [start if d == self.axis else 0 for d in range(len(self.shape))]
            return self.dus(acc, value, idx)
        return acc.write(i, value)

    def finish(self, acc):
        if self.dus is not None:
            return acc
        out = acc.concat()
        return tf.transpose(out) if self.axis == 1 else out


def _slice(x, begin, size):
    """``tf.slice`` with a dynamic ``begin`` and a static ``size`` (-1: the
    whole axis). Under XLA it is one dynamic-slice: tf2xla lowers a ``Slice``
    whose begin is not a constant by padding the operand first, which for the
    kernel is a hoisted copy of 4x its size (found in the optimized HLO)."""
    if native.in_xla_context() and x.shape.is_fully_defined():
        full = [x.shape[d] if s == -1 else s for d, s in enumerate(size)]
        try:
            from tensorflow.compiler.tf2xla.python import xla as _tfxla
        except ImportError:  # pragma: no cover - private module moved
            return tf.slice(x, begin, size)
        begin = [tf.cast(b, tf.int32) for b in begin]
        return _tfxla.dynamic_slice(x, tf.stack(begin), full)
    return tf.slice(x, begin, size)


def _dynamic_update_slice():
    try:
        from tensorflow.compiler.tf2xla.python import xla as _tfxla
    except ImportError:  # pragma: no cover - private module moved
        return None
    return _tfxla.dynamic_update_slice


def _plan(num_classes, chunk):
    chunk = min(chunk, num_classes)
    n_full = num_classes // chunk
    return chunk, n_full, num_classes - n_full * chunk


def _loss_loop(head, labels, elem, num_classes, chunk, scale, *, want_grads, upstream=None):
    """Runs the chunks. Returns ``loss_sum (float64)`` and, with
    ``want_grads``, ``(d features, d kernel, d bias)`` scaled by ``scale``
    (and ``upstream``), the kernel/bias gradients in their input dtypes."""
    chunk, n_full, tail = _plan(num_classes, chunk)
    batch = head.batch
    xla = native.in_xla_context()
    factor = scale if upstream is None else scale * tf.cast(upstream, head.cdtype)
    rows_first = not (xla and _dynamic_update_slice() is not None)  # as _Collector stores them

    def one(start, size, rows=rows_first):
        z, k = head.logits(start, size)
        y = labels.chunk(start, size, batch)
        loss, dz = elem(z, y, start, size)
        if not want_grads:
            return loss, None
        dz = dz * factor
        return loss, head.grads(dz, k, rows_first=rows)

    if n_full == 1 and not tail:  # one chunk: no loop, no gradient buffer to fill
        loss, grads = one(0, chunk, rows=False)
        if grads is None:
            return loss, None
        dx, dk, db = grads
        dk = tf.cast(dk, head.kernel.dtype) if dk.dtype != head.kernel.dtype else dk
        bias_dtype = head.bias.dtype if head.bias is not None else head.cdtype
        return loss, (dx, dk, tf.cast(db, bias_dtype))

    loss0 = tf.zeros([], tf.float64)
    if not want_grads:
        def body(i, acc):
            loss, _ = one(i * chunk, chunk)
            return i + 1, acc + loss

        _, total = tf.while_loop(lambda i, _: i < n_full, body, (tf.constant(0), loss0))
        if tail:
            total = total + one(n_full * chunk, tail)[0]
        return total, None

    hc = head.layout == "hc"
    kshape = head.kernel.shape.as_list()
    n_chunks = n_full + (1 if tail else 0)
    kcol = _Collector(kshape, 1 if hc else 0, head.kernel.dtype, xla, n_chunks)
    bias_dtype = head.bias.dtype if head.bias is not None else head.cdtype
    bcol = _Collector([num_classes], 0, bias_dtype, xla, n_chunks)
    gx0 = tf.zeros(tf.shape(head.x), head.cdtype)

    def body(i, acc, gx, gk, gb):
        start = i * chunk
        loss, (dx, dk, db) = one(start, chunk)
        return i + 1, acc + loss, gx + dx, kcol.write(gk, i, start, dk), bcol.write(gb, i, start, db)

    loop_vars = (tf.constant(0), loss0, gx0, kcol.init, bcol.init)
    _, total, gx, gk, gb = tf.while_loop(lambda i, *_: i < n_full, body, loop_vars)
    if tail:
        start = n_full * chunk
        loss, (dx, dk, db) = one(start, tail)
        total, gx = total + loss, gx + dx
        gk, gb = kcol.write(gk, n_full, start, dk), bcol.write(gb, n_full, start, db)
    gk, gb = kcol.finish(gk), bcol.finish(gb)
    return total, (gx, gk, gb)


# ---------------------------------------------------------------------------
# Public API.


@tf.autograph.experimental.do_not_convert  # Python control flow on static values only
def linear_focal_loss(
    features,
    kernel,
    bias,
    labels,
    *,
    gamma: float = 2.0,
    alpha=None,
    class_weights=None,
    logit_offsets=None,
    reduction: str = "mean",
    kernel_layout: str = "hc",
    chunk_size: int | None = None,
    implementation: str = "auto",
    grad_mode: str = "forward",
    name: str | None = None,
):
    r"""Sigmoid focal loss of ``features @ kernel + bias``, without ``[B, C]`` logits.

    .. math::

        x = f W + b + o,\qquad
        L = \sum_{b, c} w_c\,\alpha_t\,(1-p_t)^{\gamma}\,\mathrm{BCE}(x_{bc}, y_{bc})

    (divided by ``B * C`` for ``reduction="mean"``), with the element formula
    and gradient of :func:`fusedfocal.sigmoid_focal_loss`. Computed chunk by
    chunk over the labels in a ``tf.while_loop``; each chunk forms its logits
    with float32 accumulation, the loss and ``dL/dx`` in one pass, and its
    share of the gradients for ``features``, ``kernel`` and ``bias``.

    Args:
      features: ``[B, H]`` float16, bfloat16, float32 (or float64).
      kernel: ``[H, C]`` for ``kernel_layout="hc"`` (Keras ``Dense``'s
        layout) or ``[C, H]`` for ``"ch"`` (label-major: the kernel
        gradient's chunks are contiguous, no transpose). Any float dtype; it
        is cast chunk by chunk, so a float32 kernel with float16 features
        needs no float16 copy of the kernel.
      bias: ``[C]`` or None.
      labels: positive label ids as a ``tf.RaggedTensor`` ``[B, None]``
        (int32/int64), or an int tensor ``[B, L]`` padded with -1, or dense
        multi-hot ``[B, C]`` (float or bool; soft labels allowed; small C).
        Duplicate ids count once (deduplicated). Ids outside ``[0, C)``
        raise a ``ValueError`` eagerly, an ``InvalidArgumentError`` in graph
        mode; under XLA (which drops run-time assertions) they are ignored.
      gamma: focusing parameter >= 0; ``0`` is binary cross-entropy.
      alpha: None (no weighting), a float in ``[0, 1]`` (weight of
        positives, negatives get ``1 - alpha``) or a ``[C]`` vector.
      class_weights: None or ``[C]`` non-negative weights multiplying each
        class's loss (e.g. ``fusedfocal.class_balanced_weights``).
      logit_offsets: None or ``[C]`` added to the logits before the loss
        (logit adjustment); not applied by :func:`linear_top_k`.
      reduction: ``"mean"`` (over ``B * C``, as the unfused loss) or ``"sum"``.
      kernel_layout: ``"hc"`` or ``"ch"``, see ``kernel``.
      chunk_size: labels per chunk; default :func:`default_chunk_size`
        (about ``2**22 / B``). ``C`` need not be a multiple of it.
      implementation: ``"auto"``, ``"native"`` or ``"xla"``, as for
        :func:`fusedfocal.sigmoid_focal_loss`: the element-wise part of each
        chunk runs on the native op when it is built (inside XLA as its
        custom call on CPU), else on the pure-TF formula.
      grad_mode: ``"forward"`` (default: gradients formed in the forward
        pass, the backward pass only scales them, as Liger-Kernel does) or
        ``"recompute"`` (the forward pass computes the loss only; the
        backward pass recomputes each chunk's logits, as Cut Cross-Entropy
        does). See ``docs/xmc.md`` for the measurements.
      name: optional name scope.

    Returns:
      A float32 scalar (float64 for float64 features). Gradients flow to
      ``features``, ``kernel`` and ``bias`` in their own dtypes.
    """
    gamma = v.check_nonnegative_float("gamma", gamma)
    reduction = _check_choice("reduction", reduction, _REDUCTIONS)
    kernel_layout = _check_choice("kernel_layout", kernel_layout, KERNEL_LAYOUTS)
    grad_mode = _check_choice("grad_mode", grad_mode, GRAD_MODES)
    chunk_size = _check_chunk_size(chunk_size)
    implementation = native.check_implementation(implementation)
    with tf.name_scope(name or "linear_focal_loss"):
        features, kernel, bias, num_classes = _convert_head(features, kernel, bias, kernel_layout)
        cdtype = v.compute_dtype(features.dtype)
        alpha = _class_param("alpha", alpha, num_classes, lo=0.0, hi=1.0)
        class_weights = _class_vector("class_weights", class_weights, num_classes)
        logit_offsets = _class_vector("logit_offsets", logit_offsets, num_classes)
        xla = native.in_xla_context()
        batch_static = features.shape[0]
        lab, checks = _convert_labels(labels, batch_static, num_classes, xla=xla)
        chunk = chunk_size or default_chunk_size(batch_static, num_classes)

        alpha_arg = alpha
        if alpha is not None and not isinstance(alpha, float):
            alpha_arg = tf.reshape(tf.cast(alpha, cdtype), [-1]) if tf.TensorShape(alpha.shape).rank else \
                tf.cast(alpha, cdtype)
        use_native = native.use_native(implementation, _Spec(cdtype, num_classes), alpha_arg)
        weights = None if class_weights is None else tf.cast(class_weights, cdtype)
        offsets = None if logit_offsets is None else tf.cast(logit_offsets, cdtype)
        elem = _Elementwise(gamma, alpha_arg, weights, use_native, cdtype)
        head = _Head(features, kernel, bias, offsets, kernel_layout, cdtype)

        count = tf.cast(head.batch, cdtype) * float(num_classes)
        scale = tf.math.divide_no_nan(tf.ones([], cdtype), count) if reduction == "mean" else \
            tf.ones([], cdtype)

        with tf.control_dependencies(checks):
            return _differentiable(features, kernel, bias, head, lab, elem, num_classes, chunk, scale,
                                   grad_mode, xla)


class _Spec:
    """What ``native.use_native`` reads of a logits tensor: dtype and last dim."""

    def __init__(self, dtype, num_classes):
        self.dtype = dtype
        self.shape = tf.TensorShape([None, num_classes])


def _convert_head(features, kernel, bias, layout):
    features = _convert_float("features", features, 2)
    kernel = _convert_float("kernel", kernel, 2)
    bias = _convert_float("bias", bias, 1, allow_none=True)
    h = features.shape[1]
    kh, num_classes = (kernel.shape[0], kernel.shape[1]) if layout == "hc" else (kernel.shape[1], kernel.shape[0])
    if not num_classes:
        raise v.invalid("kernel", "a static number of labels >= 1", f"shape {tuple(kernel.shape)}", describe=True)
    if h is not None and kh is not None and h != kh:
        want = f"[{h}, C]" if layout == "hc" else f"[C, {h}]"
        raise v.invalid("kernel", f"shape {want} for kernel_layout={layout!r} (H={h} from `features`)",
                        f"shape {tuple(kernel.shape)}", describe=True)
    if bias is not None and bias.shape[0] is not None and bias.shape[0] != num_classes:
        raise v.invalid("bias", f"None or shape [{num_classes}] (the number of labels)",
                        f"shape {tuple(bias.shape)}", describe=True)
    return features, kernel, bias, int(num_classes)


def _differentiable(features, kernel, bias, head, lab, elem, num_classes, chunk, scale, grad_mode, xla):
    out_dtype = head.cdtype
    has_bias = bias is not None

    def result(total):
        return tf.cast(total * tf.cast(scale, tf.float64), out_dtype)

    def cast_grads(gx, gk, gb):
        gx = tf.cast(gx, features.dtype) if gx.dtype != features.dtype else gx
        return (gx, gk, gb) if has_bias else (gx, gk)

    def scaled(upstream, g):
        return v.upstream_times(upstream, tf.cast(g, tf.float32) if g.dtype != tf.float64 else g, g.dtype)

    # Forward mode pays for the gradient matmuls in the forward pass; when no
    # gradient tape is recording (evaluation, Keras test_step) nothing will
    # ask for them, so compute the loss only (tf.gradients, which needs no
    # tape, still works: its backward pass recomputes the chunks).
    forward = grad_mode == "forward" and _could_record()

    def inner(*args):
        if forward:
            total, (gx, gk, gb) = _loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=True)
            grads = cast_grads(gx, gk, gb)

            def backward(upstream):
                with tf.name_scope("linear_focal_loss_grad"):
                    if xla:
                        return tuple(scaled(upstream, g) for g in grads)
                    return tf.cond(tf.equal(upstream, 1.0), lambda: tuple(tf.identity(g) for g in grads),
                                   lambda: tuple(scaled(upstream, g) for g in grads))

            return result(total), backward

        total, _ = _loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=False)

        def backward_recompute(upstream):
            with tf.name_scope("linear_focal_loss_grad"):
                _, (gx, gk, gb) = _loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=True,
                                             upstream=upstream)
                return cast_grads(gx, gk, gb)

        return result(total), backward_recompute

    inner = tf.custom_gradient(inner)
    return inner(features, kernel, bias) if has_bias else inner(features, kernel)


def _could_record() -> bool:
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - private module moved
        return True
    return bool(record.could_possibly_record())


@tf.autograph.experimental.do_not_convert
def linear_top_k(features, kernel, bias, k, *, kernel_layout="hc", chunk_size=None, name=None):
    """The top ``k`` labels of ``sigmoid(features @ kernel + bias)``, chunk by chunk.

    Args:
      features, kernel, bias, kernel_layout, chunk_size: as for
        :func:`linear_focal_loss`.
      k: a Python int in ``[1, C]``.

    Returns:
      ``(scores, ids)``: ``[B, k]`` float32 sigmoid probabilities, best
      first, and their ``[B, k]`` int32 label ids. Ties go to the lower id.
      No ``[B, C]`` tensor is formed.
    """
    kernel_layout = _check_choice("kernel_layout", kernel_layout, KERNEL_LAYOUTS)
    chunk_size = _check_chunk_size(chunk_size)
    with tf.name_scope(name or "linear_top_k"):
        features, kernel, bias, num_classes = _convert_head(features, kernel, bias, kernel_layout)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_classes:
            raise v.invalid("k", f"a Python int in [1, {num_classes}] (the number of labels)", k)
        k = int(k)
        cdtype = v.compute_dtype(features.dtype)
        head = _Head(features, kernel, bias, None, kernel_layout, cdtype)
        chunk = chunk_size or default_chunk_size(features.shape[0], num_classes)
        chunk, n_full, tail = _plan(num_classes, chunk)
        batch = head.batch

        def merge(best, best_ids, start, size):
            z, _ = head.logits(start, size)
            kk = min(k, size)
            vals, idx = tf.math.top_k(z, kk)
            vals = tf.concat([best, vals], axis=1)
            ids = tf.concat([best_ids, idx + start], axis=1)
            top, pos = tf.math.top_k(vals, k)  # ties: the earlier column, i.e. the lower id
            return top, tf.gather(ids, pos, batch_dims=1)

        best0 = tf.fill(tf.stack([batch, k]), tf.constant(-np.inf, cdtype))
        ids0 = tf.fill(tf.stack([batch, k]), -1)

        def body(i, best, ids):
            best, ids = merge(best, ids, i * chunk, chunk)
            return i + 1, best, ids

        _, best, ids = tf.while_loop(lambda i, *_: i < n_full, body, (tf.constant(0), best0, ids0))
        if tail:
            best, ids = merge(best, ids, n_full * chunk, tail)
        return tf.cast(tf.sigmoid(best), tf.float32), ids
