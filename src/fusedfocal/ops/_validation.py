"""Argument checks and dtype handling shared by every loss in the package.

All checks run in Python, outside traced code, and raise Keras-style errors:
``Invalid value for argument `gamma`. Expected ... Received: gamma=-1``.
Tensor-valued checks that can only run at execution time are opt-in
(``check_labels=True``) and use ``tf.debugging`` asserts.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

REDUCTIONS = ("none", "sum", "mean")

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_LABEL_DTYPES = _FLOAT_DTYPES + (tf.bool, tf.int8, tf.uint8, tf.int16, tf.int32, tf.int64)


def invalid(name: str, expected: str, received, *, describe: bool = False) -> ValueError:
    """The package's one error format, copied from Keras ``loss.py``.

    ``received`` is the user's value (shown with ``repr``) or, with
    ``describe=True``, a description of it such as "vector of length 2".
    """
    shown = received if describe else repr(received)
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={shown}"
    )


def check_nonnegative_float(name: str, value) -> float:
    """A Python (or NumPy) real number >= 0, returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a Python float >= 0. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise invalid(name, "a finite float >= 0", value)
    return value


def check_unit_interval(name: str, value, *, closed_right: bool = True) -> float:
    """A float in [0, 1] (or [0, 1) with ``closed_right=False``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a Python float. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise invalid(name, f"a float in {interval}", value)
    return value


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise invalid("reduction", f"one of {set(REDUCTIONS)}", reduction)
    return reduction


def check_class_vector(name: str, value, *, lo: float = 0.0, hi: float | None = 1.0):
    """Normalise a scalar / per-class parameter.

    Returns ``None``, a Python float, or a 1-D float64 NumPy array (kept in
    NumPy so that Keras ``get_config`` can serialise it as a list). Tensors
    are passed through unchanged; their range cannot be checked statically.
    """
    if value is None:
        return None
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if not (np.isfinite(v) and v >= lo and (hi is None or v <= hi)):
            raise invalid(name, _range_text(lo, hi), value)
        return v
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected None, a float or a "
            f"sequence of floats. Received: {name}={value!r}"
        ) from None
    if arr.ndim == 0:
        return check_class_vector(name, float(arr), lo=lo, hi=hi)
    bad = ~np.isfinite(arr) | (arr < lo)
    if hi is not None:
        bad |= arr > hi
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise invalid(
            name, f"every entry {_range_text(lo, hi)}",
            f"array with entry {float(arr.ravel()[i])!r} at flat index {i}",
            describe=True,
        )
    return arr


def _range_text(lo, hi) -> str:
    if hi is None:
        return f"a finite float >= {lo:g}"
    return f"a float in [{lo:g}, {hi:g}]"


def check_class_length(name: str, value, num_classes) -> None:
    """A per-class vector must match the last logits dimension when known."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and num_classes is not None:
        if value.shape[0] != num_classes:
            raise invalid(
                name,
                f"a scalar or a vector of length {num_classes} (the last "
                "dimension of `logits`)",
                f"vector of length {value.shape[0]}",
                describe=True,
            )


def convert_logits(logits, name: str = "logits") -> tf.Tensor:
    """Logits as a floating tensor of rank >= 1 (dtype kept)."""
    logits = tf.convert_to_tensor(logits)
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"Invalid dtype for argument `{name}`. Expected a floating dtype "
            f"(float16, bfloat16, float32 or float64). Received: {name}.dtype="
            f"{logits.dtype.name}"
        )
    if logits.shape.rank == 0:
        raise invalid(name, "a tensor of rank >= 1, shaped [..., C]", "a scalar (rank 0)", describe=True)
    return logits


def convert_labels(labels, logits: tf.Tensor, name: str = "labels") -> tf.Tensor:
    """Labels cast to the compute dtype of ``logits`` and checked to broadcast."""
    labels = tf.convert_to_tensor(labels)
    if labels.dtype not in _LABEL_DTYPES:
        raise TypeError(
            f"Invalid dtype for argument `{name}`. Expected bool, an integer or "
            f"a floating dtype. Received: {name}.dtype={labels.dtype.name}"
        )
    if labels.shape.rank == 0:
        raise invalid(name, "a tensor of rank >= 1, shaped like `logits`", "a scalar (rank 0)", describe=True)
    check_broadcast(name, labels.shape, logits.shape)
    return tf.cast(labels, compute_dtype(logits.dtype))


def check_broadcast(name: str, shape, logits_shape) -> None:
    try:
        tf.broadcast_static_shape(tf.TensorShape(shape), tf.TensorShape(logits_shape))
    except ValueError:
        raise invalid(
            name, f"a shape that broadcasts with logits.shape={tuple(logits_shape)}",
            f"shape {tuple(tf.TensorShape(shape))}", describe=True,
        ) from None


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """float64 stays float64; every other floating dtype computes in float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


def refuse_several_replicas(name: str, expected: str, shown: str) -> None:
    """A ValueError naming ``name`` when called under a ``tf.distribute`` strategy with more than
    one replica (``shown``: the value, described; the strategy and its replicas are appended)."""
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        raise invalid(name, expected, f"{shown} under {type(strategy).__name__} with "
                                      f"{strategy.num_replicas_in_sync} replicas", describe=True)


def in_xla_context() -> bool:
    """True while tracing inside an XLA-compiled function (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def assert_labels_in_unit_interval(labels: tf.Tensor, name: str = "labels"):
    """Opt-in run-time check: every label is a number in [0, 1].

    Three asserts, each with its own message, so that a NaN label is reported as
    NaN (not as "< 0") whichever assert runs first. XLA compiles run-time asserts
    away, so inside an XLA-compiled function (``jit_compile=True``, which Keras
    uses on GPU by default) this raises a ``ValueError`` at trace time instead
    of silently checking nothing.
    """
    if in_xla_context():
        raise ValueError(
            f"Invalid value for argument `check_labels`. Expected False inside an XLA-compiled function "
            f"(XLA drops run-time assertions, so the check on `{name}` would silently do nothing). "
            f"Received: check_labels=True under jit_compile=True. Check the labels outside the compiled "
            f"function, or compile without XLA (jit_compile=False).")
    nan = tf.math.is_nan(labels)
    zero, one = tf.zeros([], labels.dtype), tf.ones([], labels.dtype)
    return [
        tf.debugging.assert_equal(
            tf.reduce_any(nan), False,
            message=f"Invalid value for argument `{name}`: expected every entry in [0, 1]; found NaN."),
        tf.debugging.assert_greater_equal(
            tf.where(nan, zero, labels), zero,
            message=f"Invalid value for argument `{name}`: expected every entry in [0, 1]; found one < 0."),
        tf.debugging.assert_less_equal(
            tf.where(nan, one, labels), one,
            message=f"Invalid value for argument `{name}`: expected every entry in [0, 1]; found one > 1."),
    ]


def integer_power(base: tf.Tensor, n: int) -> tf.Tensor:
    """``base ** n`` for a small non-negative integer by repeated squaring."""
    result = None
    power = base
    while n:
        if n & 1:
            result = power if result is None else result * power
        n >>= 1
        if n:
            power = power * power
    return tf.ones_like(base) if result is None else result


def is_small_integer(gamma: float, limit: int = 8) -> bool:
    return float(gamma).is_integer() and 0 <= gamma <= limit


def reduce(values: tf.Tensor, reduction: str) -> tf.Tensor:
    """Apply a static reduction; ``mean`` of an empty tensor is 0, never NaN."""
    if reduction == "none":
        return values
    total = tf.reduce_sum(values)
    if reduction == "sum":
        return total
    count = tf.cast(tf.size(values), values.dtype)
    return tf.math.divide_no_nan(total, count)


def upstream_times(upstream: tf.Tensor, grad: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """The one cast rule of the package's custom gradients: ``upstream * grad``.

    The product is formed in ``grad``'s dtype (the compute dtype: float32, or
    float64 for float64 logits) and cast once to ``dtype`` (the logits'),
    with IEEE rounding: a gradient beyond the float16 range becomes +-Inf, as
    Keras' own losses give. Not saturating on purpose: under ``mixed_float16``
    the dynamic loss scaler finds an overflow by the Inf, lowers the scale and
    skips the step; +-65504 would hide the overflow and apply clipped
    gradients. Same dtype: no cast at all.
    """
    out = tf.cast(upstream, grad.dtype) * grad
    return out if out.dtype == dtype else tf.cast(out, dtype)
