"""What Keras' focal losses mean by ``from_logits``, ``apply_class_balancing``,
``axis`` and ``label_smoothing``: the argument checks and the conversion of
probabilities to logits.

``from_logits=False`` is accepted by converting the probabilities to logits
the way Keras reads them, then running the exact math on logits:

* sigmoid (``BinaryFocalCrossentropy``): ``c = clip(p, eps, 1 - eps)``, and
  Keras 3's cross-entropy ``-(y log c + (1-y) log(1-c))`` is the one of the
  logit ``log c - log(1 - c)``. tf_keras adds ``eps`` inside both logs
  (``log(c + eps)``, ``log(1 - c + eps)``); its logit is
  ``log(c + eps) - log(1 - c + eps)``, whose cross-entropy is tf_keras'
  plus ``log(1 + 2 eps)`` (2e-7 for ``eps = 1e-7``).
* softmax (``CategoricalFocalCrossentropy``, both Kerases): Keras divides
  by the sum over ``axis`` and clips each probability into
  ``[eps, 1 - eps]``; the logits are the log of that.

Keras computes the focal factor from the unclipped probability; the logits
carry the clipped one, so the two differ only where Keras clips (a
probability within ``eps`` of 0 or 1), by terms of order ``eps``.

Every check raises Keras' wording: "Invalid value for argument `axis`.
Expected ... Received: axis=...".
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v

#: Keras' default ``alpha`` (``BinaryFocalCrossentropy`` with
#: ``apply_class_balancing=True``, ``CategoricalFocalCrossentropy``)
KERAS_ALPHA = 0.25
#: ``keras.backend.epsilon()``'s default (the probability clip)
KERAS_EPSILON = 1e-7

__all__ = ["KERAS_ALPHA", "KERAS_EPSILON", "check_bool", "check_axis", "check_epsilon", "class_balancing_alpha",
           "sigmoid_logits", "softmax_logits", "canonical_axis", "class_axis_last"]


def check_bool(name: str, value, *, optional: bool = False):
    """``True`` or ``False`` (or ``None`` with ``optional``), as a Python bool."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    expected = "True, False or None" if optional else "True or False"
    raise v.invalid(name, expected, value)


def check_axis(value, *, optional: bool = False, name: str = "axis"):
    """A Python integer (not a bool), or ``None`` with ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        expected = "an integer axis (e.g. -1) or None" if optional else "an integer axis (e.g. -1)"
        raise v.invalid(name, expected, value)
    return int(value)


def check_epsilon(value) -> float:
    """The probability clip: a float in (0, 0.5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 0.5:
        raise v.invalid("epsilon", "a float in (0, 0.5) (Keras: keras.backend.epsilon(), 1e-7)", value)
    return float(value)


def class_balancing_alpha(alpha, apply_class_balancing):
    """The ``alpha`` that weights the loss.

    ``apply_class_balancing=None`` (fusedfocal's meaning): ``alpha`` as given
    (``None``: no weighting). ``True`` (Keras'): ``alpha``, or Keras' 0.25
    when ``None``. ``False`` (Keras'): no weighting, whatever ``alpha``.
    """
    if apply_class_balancing is None:
        return alpha
    if not apply_class_balancing:
        return None
    return KERAS_ALPHA if alpha is None else alpha


def sigmoid_logits(probs: tf.Tensor, epsilon: float = KERAS_EPSILON, *, legacy: bool = False) -> tf.Tensor:
    """Logits whose sigmoid cross-entropy is Keras' for the probabilities ``probs``.

    ``probs`` in the compute dtype. Keras 3: ``log c - log(1 - c)`` with
    ``c = clip(p, eps, 1 - eps)``; ``legacy`` (tf_keras):
    ``log(c + eps) - log(1 - c + eps)``. The gradient is TensorFlow's of
    these formulas (0 where the clip is active, as in Keras).
    """
    c = tf.clip_by_value(probs, epsilon, 1.0 - epsilon)
    if legacy:
        return tf.math.log(c + epsilon) - tf.math.log((1.0 - c) + epsilon)
    return tf.math.log(c) - tf.math.log(1.0 - c)


def softmax_logits(probs: tf.Tensor, epsilon: float = KERAS_EPSILON, axis: int = -1) -> tf.Tensor:
    """``log(clip(p / sum(p, axis), eps, 1 - eps))``: the log-probabilities
    Keras' ``CategoricalFocalCrossentropy`` uses (the same in tf_keras)."""
    p = probs / tf.reduce_sum(probs, axis=axis, keepdims=True)
    return tf.math.log(tf.clip_by_value(p, epsilon, 1.0 - epsilon))


def canonical_axis(axis: int, rank, *, what: str = "logits") -> int:
    """``axis`` as a non-negative index into a tensor of static ``rank``."""
    if rank is None:
        if axis == -1:
            return -1
        raise v.invalid("axis", f"-1 when {what} has an unknown rank", axis)
    if not -rank <= axis < rank:
        raise v.invalid("axis", f"an integer in [{-rank}, {rank - 1}] for {what} of rank {rank}", axis)
    return axis % rank


def class_axis_last(x: tf.Tensor, axis: int) -> tf.Tensor:
    """``x`` with its axis ``axis`` (canonical, non-negative or -1) moved last."""
    rank = x.shape.rank
    if axis == -1 or axis == rank - 1:
        return x
    perm = [d for d in range(rank) if d != axis] + [axis]
    return tf.transpose(x, perm)
