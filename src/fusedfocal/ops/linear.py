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
import types

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v
from fusedfocal.ops import native
from fusedfocal.ops._linear_chunks import Elementwise, Head, Spec, could_record, loss_loop, plan
from fusedfocal.ops._linear_inputs import (check_choice, check_chunk_size, class_params,
                                           convert_float, convert_labels)

__all__ = ["linear_focal_loss", "linear_top_k", "KERNEL_LAYOUTS", "GRAD_MODES", "default_chunk_size"]

KERNEL_LAYOUTS = ("hc", "ch")
GRAD_MODES = ("forward", "recompute")
_REDUCTIONS = ("sum", "mean")
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
# Public API.


@tf.autograph.experimental.do_not_convert  # Python control flow on static values only
def linear_focal_loss(
    features, kernel, bias, labels, *, gamma: float = 2.0, alpha=None, class_weights=None, logit_offsets=None,
    reduction: str = "mean", kernel_layout: str = "hc", chunk_size: int | None = None, implementation: str = "auto",
    grad_mode: str = "forward", name: str | None = None,
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
      chunk_size: labels per chunk; default ``fusedfocal.ops.linear.default_chunk_size``
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
    grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
    with tf.name_scope(name or "linear_focal_loss"):
        p = _prepare(features, kernel, bias, labels, gamma, alpha, class_weights, logit_offsets, reduction,
                     kernel_layout, chunk_size, implementation, None)
        with tf.control_dependencies(p.checks):
            return _differentiable(p.features, p.kernel, p.bias, p.head, p.lab, p.elem, p.num_classes, p.chunk,
                                   p.scale, grad_mode, p.xla)


def _prepare(features, kernel, bias, labels, gamma, alpha, class_weights, logit_offsets, reduction, kernel_layout,
             chunk_size, implementation, total_labels):
    gamma = v.check_nonnegative_float("gamma", gamma)
    reduction = check_choice("reduction", reduction, _REDUCTIONS)
    kernel_layout = check_choice("kernel_layout", kernel_layout, KERNEL_LAYOUTS)
    chunk_size = check_chunk_size(chunk_size)
    implementation = native.check_implementation(implementation)
    features, kernel, bias, num_classes = _convert_head(features, kernel, bias, kernel_layout)
    cdtype = v.compute_dtype(features.dtype)
    alpha, weights, offsets = class_params(alpha, class_weights, logit_offsets, num_classes, cdtype)
    xla = native.in_xla_context()
    batch_static = features.shape[0]
    lab, checks = convert_labels(labels, batch_static, num_classes, xla=xla)
    chunk = chunk_size or default_chunk_size(batch_static, num_classes)
    use_native = native.use_native(implementation, Spec(cdtype, num_classes), alpha)
    elem = Elementwise(gamma, alpha, weights, use_native, cdtype)
    head = Head(features, kernel, bias, offsets, kernel_layout, cdtype)
    count = tf.cast(head.batch, cdtype) * float(total_labels or num_classes)
    scale = tf.math.divide_no_nan(tf.ones([], cdtype), count) if reduction == "mean" else tf.ones([], cdtype)
    return types.SimpleNamespace(features=features, kernel=kernel, bias=bias, head=head, lab=lab, elem=elem,
                                 num_classes=num_classes, chunk=chunk, scale=scale, xla=xla, checks=checks)


@tf.autograph.experimental.do_not_convert
def linear_focal_loss_parts(features, kernel, bias, labels, *, total_labels, want_grads=True, gamma=2.0, alpha=None,
                            class_weights=None, logit_offsets=None, reduction="mean", kernel_layout="hc",
                            chunk_size=None, implementation="auto"):
    """The forward pass of :func:`linear_focal_loss` without its custom gradient, for one label shard
    of a head of ``total_labels`` labels (``"mean"`` divides by ``B * total_labels``).

    Returns ``(loss, (dfeatures, dkernel, dbias or None))`` (the gradients are None unless
    ``want_grads``); a label-sharded head places these on the shard's device itself."""
    p = _prepare(features, kernel, bias, labels, gamma, alpha, class_weights, logit_offsets, reduction,
                 kernel_layout, chunk_size, implementation, total_labels)
    with tf.control_dependencies(p.checks):
        total, grads = loss_loop(p.head, p.lab, p.elem, p.num_classes, p.chunk, p.scale, want_grads=want_grads)
    loss = tf.cast(total * tf.cast(p.scale, tf.float64), p.head.cdtype)
    if not want_grads:
        return loss, (None, None, None)
    gx, gk, gb = grads
    gx = tf.cast(gx, p.features.dtype) if gx.dtype != p.features.dtype else gx
    return loss, (gx, gk, gb if p.bias is not None else None)


def _convert_head(features, kernel, bias, layout):
    features = convert_float("features", features, 2)
    kernel = convert_float("kernel", kernel, 2)
    bias = convert_float("bias", bias, 1, allow_none=True)
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
    forward = grad_mode == "forward" and could_record()

    def inner(*args):
        if forward:
            total, (gx, gk, gb) = loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=True)
            grads = cast_grads(gx, gk, gb)

            def backward(upstream):
                with tf.name_scope("linear_focal_loss_grad"):
                    if xla:
                        return tuple(scaled(upstream, g) for g in grads)
                    return tf.cond(tf.equal(upstream, 1.0), lambda: tuple(tf.identity(g) for g in grads),
                                   lambda: tuple(scaled(upstream, g) for g in grads))

            return result(total), backward

        total, _ = loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=False)

        def backward_recompute(upstream):
            with tf.name_scope("linear_focal_loss_grad"):
                _, (gx, gk, gb) = loss_loop(head, lab, elem, num_classes, chunk, scale, want_grads=True,
                                             upstream=upstream)
                return cast_grads(gx, gk, gb)

        return result(total), backward_recompute

    inner = tf.custom_gradient(inner)
    return inner(features, kernel, bias) if has_bias else inner(features, kernel)


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
    with tf.name_scope(name or "linear_top_k"):
        best, ids = top_k_logits(features, kernel, bias, k, kernel_layout=kernel_layout, chunk_size=chunk_size)
        return tf.cast(tf.sigmoid(best), tf.float32), ids


@tf.autograph.experimental.do_not_convert
def top_k_logits(features, kernel, bias, k, *, kernel_layout="hc", chunk_size=None):
    """:func:`linear_top_k` before the sigmoid: ``(logits [B, k], ids [B, k])``, best first,
    ties to the lower id. A label-sharded head merges its shards' candidates on these logits (the
    sigmoid can round distinct logits to one probability, which would change the tie rule)."""
    kernel_layout = check_choice("kernel_layout", kernel_layout, KERNEL_LAYOUTS)
    chunk_size = check_chunk_size(chunk_size)
    features, kernel, bias, num_classes = _convert_head(features, kernel, bias, kernel_layout)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_classes:
        raise v.invalid("k", f"a Python int in [1, {num_classes}] (the number of labels)", k)
    k = int(k)
    cdtype = v.compute_dtype(features.dtype)
    head = Head(features, kernel, bias, None, kernel_layout, cdtype)
    chunk = chunk_size or default_chunk_size(features.shape[0], num_classes)
    chunk, n_full, tail = plan(num_classes, chunk)
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
    return best, ids
