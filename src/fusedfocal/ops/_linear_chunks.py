"""The chunk loop of the fused head ops (:mod:`fusedfocal.ops.linear`).

One chunk of labels at a time: its ``[B, size]`` float32 logits from the
kernel's chunk, the loss sum and ``dloss/dlogits`` in one pass
(:class:`Elementwise`: the native ``FusedFocalLossGrad`` op or the pure-TF
formula), then the chunk's share of the gradients by matmul (:class:`Head`).
:func:`loss_loop` runs the chunks in a ``tf.while_loop`` and collects the
kernel and bias gradients (:class:`Collector`).
"""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.ops import focal as _focal
from fusedfocal.ops import native

# ---------------------------------------------------------------------------
# The element-wise part of a chunk.


class Elementwise:
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
            alpha_c = slice_(alpha_c, [start], [size])
        w_c = None if self.weights is None else slice_(self.weights, [start], [size])
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


class Head:
    """The pieces every chunk needs, in the compute dtype."""

    def __init__(self, features, kernel, bias, offsets, layout, cdtype):
        self.x = tf.cast(features, cdtype) if features.dtype != cdtype else features
        self.kernel, self.bias, self.offsets = kernel, bias, offsets
        self.layout, self.cdtype = layout, cdtype
        self.batch = tf.shape(features)[0]

    def kernel_chunk(self, start, size):
        if self.layout == "hc":
            k = slice_(self.kernel, [0, start], [-1, size])
        else:
            k = slice_(self.kernel, [start, 0], [size, -1])
        return tf.cast(k, self.cdtype) if k.dtype != self.cdtype else k

    def logits(self, start, size):
        k = self.kernel_chunk(start, size)
        z = tf.matmul(self.x, k, transpose_b=self.layout == "ch")
        if self.bias is not None:
            z = z + tf.cast(slice_(self.bias, [start], [size]), self.cdtype)
        if self.offsets is not None:
            z = z + slice_(self.offsets, [start], [size])
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


class Collector:
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
        self.dus = dynamic_update_slice() if xla else None
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


def slice_(x, begin, size):
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


def dynamic_update_slice():
    try:
        from tensorflow.compiler.tf2xla.python import xla as _tfxla
    except ImportError:  # pragma: no cover - private module moved
        return None
    return _tfxla.dynamic_update_slice


def plan(num_classes, chunk):
    chunk = min(chunk, num_classes)
    n_full = num_classes // chunk
    return chunk, n_full, num_classes - n_full * chunk


def loss_loop(head, labels, elem, num_classes, chunk, scale, *, want_grads, upstream=None):
    """Runs the chunks. Returns ``loss_sum (float64)`` and, with
    ``want_grads``, ``(d features, d kernel, d bias)`` scaled by ``scale``
    (and ``upstream``), the kernel/bias gradients in their input dtypes."""
    chunk, n_full, tail = plan(num_classes, chunk)
    batch = head.batch
    xla = native.in_xla_context()
    factor = scale if upstream is None else scale * tf.cast(upstream, head.cdtype)
    rows_first = not (xla and dynamic_update_slice() is not None)  # as Collector stores them

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
    kcol = Collector(kshape, 1 if hc else 0, head.kernel.dtype, xla, n_chunks)
    bias_dtype = head.bias.dtype if head.bias is not None else head.cdtype
    bcol = Collector([num_classes], 0, bias_dtype, xla, n_chunks)
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


class Spec:
    """What ``native.use_native`` reads of a logits tensor: dtype and last dim."""

    def __init__(self, dtype, num_classes):
        self.dtype = dtype
        self.shape = tf.TensorShape([None, num_classes])


def could_record() -> bool:
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - private module moved
        return True
    return bool(record.could_possibly_record())
