"""The fused sigmoid focal loss: one pass forward, one multiply backward.

Everything is computed from ``t = exp(-|x|)`` and ``log1p(t)``, in float32
(float64 for float64 logits), without clipping. The analytic gradient is
formed in the forward pass from the same intermediates and saved, so the
backward pass is ``upstream * grad``; when no gradient is requested, graph
pruning (``tf.function``) and dead-code elimination (XLA) drop it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _keras_compat as kc
from fusedfocal.ops import _validation as v
from fusedfocal.ops import native

__all__ = ["sigmoid_focal_loss", "focal_loss_and_grad"]

_MAX_INT_POWER = 16
_ROW = 256  # XLA path: element-wise math runs on [N / _ROW, _ROW] views


def focal_loss_and_grad(x, y, alpha_t, gamma: float):
    r"""Element-wise focal loss and its derivative with respect to ``x``.

    Args:
      x: logits in the compute dtype (float32 or float64).
      y: targets in [0, 1], same dtype, broadcast to ``x``'s shape.
      alpha_t: ``None`` or the per-element weight ``alpha*y + (1-alpha)*(1-y)``.
      gamma: static Python float >= 0.

    Returns:
      ``(loss, dloss_dx)`` in the compute dtype.

    The gradient of ``FL = alpha_t q^gamma BCE`` (:func:`fusedfocal.sigmoid_focal_loss`), derived
    with ``s = sigmoid(x)``, ``q = 1 - p_t = y + s(1-2y)`` and ``dq/dx = (1-2y) s(1-s)``:

    .. math::

        \frac{\partial FL}{\partial x} = \alpha_t\, q^{\gamma}
            \Big[(s - y) + \gamma (1-2y) \frac{s(1-s)}{q}\,\mathrm{BCE}\Big]

    where ``s(1-s)/q`` is computed in the stable form below; for ``gamma = 0`` it reduces to
    ``alpha_t (s - y)``, the BCE gradient.

    With ``t = exp(-|x|)`` and ``u`` the target mass on the side that
    ``sign(x)`` does not predict (``u = 1 - y`` for ``x >= 0``, ``u = y`` for
    ``x < 0``), every quantity is a sum of non-negative terms, so no
    cancellation occurs:

    * ``ce = u*|x| + log1p(t)``                   (binary cross-entropy)
    * ``q = 1 - p_t = (u + (1-u)*t) / (1+t)``     (the modulating base)
    * ``s - y = sign(x) * (u - t/(1+t))``
    * ``s(1-s)/q = t / ((1+t) * (u + (1-u)*t))`` (finite as ``q -> 0``)
    """
    one = tf.ones([], x.dtype)
    ax = tf.abs(x)
    t = tf.exp(-ax)
    nonneg = x >= 0
    u = tf.where(nonneg, one - y, y)
    w = one + t
    inv_1pt = tf.math.reciprocal(w)
    if native.in_xla_context():
        # log1p(t) as log(w) plus the rounding error of w = fl(1 + t), exact
        # (Sterbenz) for t in [0, 1]: log(w + e) = log(w) + e/w + O(e^2). As
        # accurate as log1p and cheaper under XLA CPU, whose log1p costs about
        # 1.7x its log (benchmarks/NOTES.md). XLA only: Grappler's arithmetic
        # optimizer folds t - ((1 + t) - 1) to 0 in tf.function graphs.
        log1p_t = tf.math.log(w) + (t - (w - one)) * inv_1pt
    else:
        log1p_t = tf.math.log1p(t)
    ce = u * ax + log1p_t
    sig_neg = t * inv_1pt  # sigmoid(-|x|)
    g = u - sig_neg  # sign(x) * (sigmoid(x) - y)
    if gamma == 0.0:
        loss = ce
    else:
        d = u + (one - u) * t
        n, frac = int(gamma), gamma - int(gamma)
        if n > _MAX_INT_POWER:  # long products lose more than exp/log does
            n, frac = 0, gamma
        mod = v.integer_power(d * inv_1pt, n) if n else None
        if frac:
            # log(d) is exactly -|x| when u == 0; using it keeps full
            # relative precision of q**frac far into the tail.
            log_d = tf.where(u > 0, tf.math.log(d), -ax)
            mod_frac = tf.exp(frac * (log_d - log1p_t))
            mod = mod_frac if mod is None else mod * mod_frac
        # d == 0 only when t underflowed with u == 0; there mod == 0, so the
        # 0 that divide_no_nan returns is exact in the product below.
        r = tf.math.divide_no_nan(sig_neg, d)
        g = mod * (g + gamma * (2.0 * u - one) * r * ce)
        loss = mod * ce
    grad = tf.where(nonneg, g, -g)
    if alpha_t is not None:
        loss = alpha_t * loss
        grad = alpha_t * grad
    return loss, grad


def _alpha_t(alpha, y):
    """``alpha*y + (1-alpha)*(1-y)``, or ``None`` without class weighting."""
    if alpha is None:
        return None
    # A Python float straight to y's dtype: tf.cast would round it to float32 first.
    a = tf.constant(alpha, y.dtype) if isinstance(alpha, float) else tf.cast(alpha, y.dtype)
    return (1.0 - a) + (2.0 * a - 1.0) * y


@tf.autograph.experimental.do_not_convert  # plain Python control flow on static values
def sigmoid_focal_loss(logits, labels, *, gamma: float = 2.0, alpha=None, label_smoothing: float = 0.0,
                       apply_class_balancing: bool | None = None, from_logits: bool = True,
                       epsilon: float = kc.KERAS_EPSILON, reduction: str = "none", sample_weight=None,
                       check_labels: bool = False, name: str | None = None, implementation: str = "auto"):
    r"""Sigmoid focal loss computed from logits, with an analytic gradient.

    .. math::

        p = \sigma(x),\quad p_t = y p + (1-y)(1-p),\quad
        \alpha_t = \alpha y + (1-\alpha)(1-y)

        FL(x, y) = \alpha_t\,(1-p_t)^{\gamma}\,\mathrm{BCE}(x, y)

    ``BCE = softplus(x) - x y`` is the binary cross-entropy, which for hard labels is ``-log p_t``; soft
    labels use the same formula (as optax and torchvision do). ``(1-p_t)^\gamma`` is evaluated as
    ``exp(gamma * log(1-p_t))`` (repeated multiplication for integer gamma) from ``t = exp(-|x|)``, never
    from a clipped probability. The gradient is analytic (derived in ``fusedfocal.ops.focal.focal_loss_and_grad``)
    and finite as ``1-p_t -> 0``; for ``gamma = 0`` it is ``alpha_t (\sigma(x) - y)``, the BCE gradient.
    Labels are treated as constants (no gradient flows to ``labels`` or ``alpha``).

    Args:
      logits: float16, bfloat16, float32 or float64 tensor, shape ``[..., C]`` (rank >= 1). Math runs in
        float32 (float64 for float64 inputs).
      labels: targets in ``[0, 1]`` (hard or soft), of dtype bool, int or float, broadcastable to
        ``logits``' shape. Values outside ``[0, 1]`` are not checked by default and give a finite but
        meaningless loss; pass ``check_labels=True`` for a run-time assertion.
      gamma: focusing parameter, a Python float >= 0. ``0`` is BCE.
      alpha: ``None`` (no class weighting), a float in ``[0, 1]`` (weight of positives; negatives get
        ``1 - alpha``), a length-``C`` vector (per class) or a tensor broadcastable to ``logits``.
      label_smoothing: float in ``[0, 1]``; targets become ``y * (1 - label_smoothing) + label_smoothing
        / 2`` (Keras' binary smoothing; ``1`` makes every target 1/2).
      apply_class_balancing: ``None`` (default) applies ``alpha`` as given (``None``: no weighting).
        ``True`` or ``False`` give Keras' ``BinaryFocalCrossentropy`` meaning: ``True`` applies
        ``alpha``, or Keras' default 0.25 when ``alpha`` is None; ``False`` ignores ``alpha``.
      from_logits: ``True`` (default): ``logits`` are logits. ``False``: ``logits`` holds probabilities in
        ``[0, 1]``, read as Keras 3 reads them: clipped into ``[epsilon, 1 - epsilon]`` and converted to
        the logit ``log(c) - log(1 - c)``, whose cross-entropy is Keras' clipped one; the math then runs
        on that logit. The gradient flows to the probabilities (0 where the clip is active, as in Keras).
      epsilon: the probability clip for ``from_logits=False`` (``keras.backend.epsilon()``'s default, 1e-7).
      reduction: ``"none"`` (default) returns the per-element loss; ``"sum"`` and ``"mean"`` return a
        scalar and keep only the gradient (one logits-sized tensor, in the logits' dtype) for the backward
        pass, so no ``[..., C]`` float32 loss tensor is materialised. ``"mean"`` of an empty batch is 0.
      sample_weight: ``None`` or a float tensor broadcastable to ``logits`` (``[B, 1]`` per example,
        ``[B, C]`` per label, 0 masks) that multiplies each element's loss and gradient before the
        reduction, inside the kernel: ``"sum"`` is ``sum(w * FL)``, ``"mean"`` is ``sum(w * FL) / N`` with
        ``N`` the number of elements (Keras' ``sum_over_batch_size``). No gradient flows to the weights.
      check_labels: add a run-time assertion that labels are in ``[0, 1]``.
      name: optional name scope.
      implementation: ``"auto"`` (default), ``"xla"`` or ``"native"``; see ``fusedfocal.ops.native``
        (``$FUSEDFOCAL_IMPLEMENTATION`` overrides ``"auto"``). The native op is used only when built;
        inside an XLA-compiled function it runs as one XLA custom call on CPU.

    Returns:
      The loss, shaped like ``logits`` for ``reduction="none"``, else a scalar; float32, or float64 for
      float64 logits.

    Raises:
      ValueError: ``gamma < 0``, ``alpha`` outside ``[0, 1]`` or of the wrong length, ``label_smoothing``
        outside ``[0, 1]``, a non-bool ``apply_class_balancing`` or ``from_logits``, ``epsilon`` outside
        ``(0, 0.5)``, a bad ``reduction``, rank-0 inputs, or labels that do not broadcast to ``logits``.
      TypeError: non-floating logits or an unsupported labels dtype.

    References:
      Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

    >>> import fusedfocal, numpy as np
    >>> loss = fusedfocal.sigmoid_focal_loss(
    ...     np.array([[-30.0, 2.0]], np.float32), np.array([[1, 0]]), gamma=2.0)
    >>> np.round(loss.numpy(), 4)
    array([[30.    ,  1.6501]], dtype=float32)
    """
    gamma, label_smoothing, reduction, alpha, from_logits, epsilon, implementation = _check_arguments(
        gamma, label_smoothing, reduction, alpha, apply_class_balancing, from_logits, epsilon, implementation)
    with tf.name_scope(name or "sigmoid_focal_loss"):
        logits, labels, weights, deps, label_smoothing = _convert_inputs(
            logits, labels, alpha, label_smoothing, sample_weight, from_logits, epsilon, check_labels)
        with tf.control_dependencies(deps):
            if native.use_native(implementation, logits, alpha):
                return native.native_focal_loss(logits, labels, alpha, gamma, label_smoothing, reduction, weights)
            return _fused(logits, labels, alpha, gamma, label_smoothing, reduction, weights)


def _check_arguments(gamma, label_smoothing, reduction, alpha, apply_class_balancing, from_logits, epsilon,
                     implementation):
    """The Python arguments of :func:`sigmoid_focal_loss` checked, in the order that decides which error a
    call with several bad arguments gets; ``alpha`` resolved with ``apply_class_balancing``."""
    gamma = v.check_nonnegative_float("gamma", gamma)
    label_smoothing = v.check_unit_interval("label_smoothing", label_smoothing)
    reduction = v.check_reduction(reduction)
    alpha = v.check_class_vector("alpha", alpha)
    alpha = kc.class_balancing_alpha(alpha, kc.check_bool("apply_class_balancing", apply_class_balancing,
                                                          optional=True))
    from_logits = kc.check_bool("from_logits", from_logits)
    epsilon = kc.check_epsilon(epsilon)
    implementation = native.check_implementation(implementation)
    return gamma, label_smoothing, reduction, alpha, from_logits, epsilon, implementation


def _convert_inputs(logits, labels, alpha, label_smoothing, sample_weight, from_logits, epsilon, check_labels):
    """The tensors of :func:`sigmoid_focal_loss`: logits (from probabilities with ``from_logits=False``),
    labels and weights in the compute dtype, checked against the logits' shape, the label assertion
    (``check_labels``) and the label smoothing the kernels get: ``(logits, labels, weights, deps,
    label_smoothing)``."""
    logits = v.convert_logits(logits)
    if not from_logits:  # probabilities: Keras' clipped logit, in the compute dtype
        logits = kc.sigmoid_logits(tf.cast(logits, v.compute_dtype(logits.dtype)), epsilon)
    v.check_class_length("alpha", alpha, logits.shape[-1])
    if isinstance(alpha, np.ndarray) or isinstance(alpha, (tf.Tensor, tf.Variable)):
        v.check_broadcast("alpha", tf.TensorShape(alpha.shape), logits.shape)
    labels = v.convert_labels(labels, logits)
    _check_result_shape(labels.shape, logits.shape)
    weights = _convert_weights(sample_weight, labels.dtype, logits.shape)
    deps = v.assert_labels_in_unit_interval(labels) if check_labels else []
    if label_smoothing == 1.0:  # every target 1/2; the kernels take [0, 1)
        labels, label_smoothing = labels * 0.0 + 0.5, 0.0  # (NaN stays NaN, as in Keras)
    return logits, labels, weights, deps, label_smoothing


def _convert_weights(sample_weight, dtype, logits_shape):
    """``sample_weight`` as a tensor of the compute dtype that broadcasts to logits."""
    if sample_weight is None:
        return None
    try:
        w = tf.convert_to_tensor(sample_weight)
    except (TypeError, ValueError) as e:
        raise v.invalid("sample_weight", "a float tensor broadcastable to logits",
                        f"{type(sample_weight).__name__} ({e})") from None
    if w.dtype.is_complex or not (w.dtype.is_floating or w.dtype.is_integer):
        raise v.invalid("sample_weight", "a real (float or int) tensor", f"dtype {w.dtype.name}")
    w = tf.cast(w, dtype)
    _check_result_shape(w.shape, logits_shape, name="sample_weight")
    return w


def _check_result_shape(labels_shape, logits_shape, name="labels"):
    """Labels (weights) must broadcast *to* the logits' shape (the result is shaped like logits)."""
    try:
        out = tf.broadcast_static_shape(labels_shape, logits_shape)
    except ValueError:
        out = None
    grows_rank = out is not None and out.rank is not None and logits_shape.rank is not None and out.rank > logits_shape.rank
    if out is None or grows_rank or not out.is_compatible_with(logits_shape):
        raise v.invalid(
            name, f"a shape that broadcasts to logits.shape={tuple(logits_shape)}",
            f"shape {tuple(labels_shape)}", describe=True,
        )


def _optimization_barrier():
    try:
        from tensorflow.compiler.tf2xla.python import xla as _tfxla
    except ImportError:  # pragma: no cover - private module moved
        return None
    return _tfxla.optimization_barrier


def _fused(logits, labels, alpha, gamma, label_smoothing, reduction, weights=None):
    cdtype = labels.dtype
    alpha_tensor = None if alpha is None or isinstance(alpha, float) else tf.cast(alpha, cdtype)
    alpha_arg = alpha if isinstance(alpha, float) else alpha_tensor

    @tf.custom_gradient
    def forward(x_in):
        x = tf.cast(x_in, cdtype)
        same_shape = labels.shape.is_fully_defined() and labels.shape == x.shape
        y = labels if same_shape else tf.broadcast_to(labels, tf.shape(x))
        w = None
        if weights is not None:
            w_same = weights.shape.is_fully_defined() and weights.shape == x.shape
            w = weights if w_same else tf.broadcast_to(weights, tf.shape(x))
        xla = native.in_xla_context()
        # XLA CPU vectorises the innermost dimension: a narrow last axis (19
        # labels) leaves most SIMD lanes idle. Element-wise math does not care
        # about the shape, so flatten (a free bitcast) when nothing broadcasts
        # along the class axis.
        flat = xla and same_shape and alpha_tensor is None and x.shape.num_elements() % _ROW == 0
        if flat:
            # Rows of _ROW: wide enough for full vectors, and an outer axis
            # that XLA CPU can split across threads (1-D loops are not split).
            x, y = tf.reshape(x, [-1, _ROW]), tf.reshape(y, [-1, _ROW])
            if w is not None:
                w = tf.reshape(w, [-1, _ROW])
        if label_smoothing:
            y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
        alpha_t = _alpha_t(alpha_arg, y)
        barrier = _optimization_barrier() if xla else None
        if barrier is None:
            loss, grad = focal_loss_and_grad(x, y, alpha_t, gamma)
        else:
            # Under XLA the loss and the gradient share exp, log and the
            # reciprocal, which XLA CPU will not duplicate into two fusions:
            # it writes each out as a full-size tensor (8 fusions, 5
            # logits-sized buffers). Computing the loss from an
            # optimization-barrier alias of x stops CSE from merging the two,
            # so each output is one loop fusion straight from (x, y): 2
            # buffers, fewer bytes moved, same rounding. Outside XLA the
            # shared graph is cheaper, so it is kept there.
            _, grad = focal_loss_and_grad(x, y, alpha_t, gamma)
            (x_alias,) = barrier(x)
            loss, _ = focal_loss_and_grad(x_alias, y, alpha_t, gamma)
        if w is not None:
            loss, grad = loss * w, grad * w
        if reduction == "mean":
            scale = tf.math.divide_no_nan(tf.ones([], cdtype), tf.cast(tf.size(x), cdtype))
            grad = grad * scale
        if flat:
            grad = tf.reshape(grad, tf.shape(x_in))
            if reduction == "none":
                loss = tf.reshape(loss, tf.shape(x_in))
        out = v.reduce(loss, reduction)

        def backward(upstream):
            with tf.name_scope("sigmoid_focal_loss_grad"):  # findable in a profile
                return v.upstream_times(upstream, grad, x_in.dtype)  # grad is in cdtype

        return out, backward

    return forward(logits)
