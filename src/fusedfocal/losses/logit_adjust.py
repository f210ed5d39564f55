"""Logit adjustment by the label prior (Menon et al., ICLR 2021), sigmoid case."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v

__all__ = ["logit_adjusted_bce", "prior_logit_bias", "prior_bias_initializer", "priors_from_counts", "la_params"]


def priors_from_counts(class_counts, num_docs):
    """Label priors ``p_c = n_c / N``, with ``n_c`` clipped into
    ``[0.5, N - 0.5]`` so that no prior is exactly 0 or 1."""
    counts, num_docs = c.check_counts(class_counts, num_docs, required_docs=True)
    return c.safe_priors(counts, num_docs)


def prior_logit_bias(class_counts, num_docs):
    """Per-label log-odds of the prior, ``log(p_c / (1 - p_c))``, float64 [C].

    Safe for counts 0 and N (see :func:`priors_from_counts`): a label seen in
    no document gets ``log(0.5 / (N - 0.5))``, one seen in all gets the
    opposite. Use it as the initial output bias of a sigmoid classifier
    (Lin et al.'s prior initialisation, per label), e.g. with
    :func:`prior_bias_initializer`.
    """
    p = priors_from_counts(class_counts, num_docs)
    return np.log(p) - np.log1p(-p)


def _check_priors(priors):
    pr = v.check_class_vector("priors", priors, lo=0.0, hi=1.0)
    if pr is None:
        raise v.invalid("priors", "a float or vector of label priors in (0, 1)", None)
    if not isinstance(pr, (tf.Tensor, tf.Variable)):
        arr = np.asarray(pr)
        if np.any((arr <= 0) | (arr >= 1)):
            raise v.invalid("priors", "every prior in the open interval (0, 1)", pr if isinstance(pr, float) else "array with an entry 0 or 1")
    return pr


def prior_bias_initializer(priors):
    """A Keras 3 initializer for ``Dense(C, bias_initializer=...)`` that sets
    the bias to ``log(p_c / (1 - p_c))``.

    Args:
      priors: label priors in ``(0, 1)`` (float or length-``C`` vector),
        e.g. from :func:`priors_from_counts`.
    """
    from fusedfocal.losses._initializers import PriorBias

    pr = np.atleast_1d(np.asarray(_check_priors(priors), np.float64))
    return PriorBias(np.log(pr) - np.log1p(-pr))


def la_params(priors=None, tau=1.0):
    return dict(priors=_check_priors(priors), tau=v.check_nonnegative_float("tau", tau))


def logit_adjusted_bce(logits, labels, *, priors, tau=1.0, reduction="none", name=None):
    r"""Logit-adjusted binary cross-entropy (Menon et al., ICLR 2021), sigmoid case.

    .. math::

        \ell(x, y) = \mathrm{BCE}\big(x_c + \tau \log\tfrac{\pi_c}{1-\pi_c},\; y\big)

    Menon et al. add ``tau * log(pi_y)`` to softmax logits so that the
    training loss is Fisher-consistent for the balanced error. For
    multi-label (one independent binary problem per label) the analogue
    adds the prior log-odds ``tau * log(pi_c / (1 - pi_c))``: the model's raw
    logit then estimates the *balanced* log-odds, and at inference the raw
    logits (without the shift) are thresholded. Rare labels get a negative
    shift during training, so their raw logits are pushed up.
    ``tau = 0`` is BCE. Gradient: analytic, ``sigmoid(x + shift) - y``.

    Args:
      logits: float tensor ``[..., C]``.
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      priors: label priors ``pi_c`` in ``(0, 1)``, a float or a length-``C``
        vector (see :func:`priors_from_counts`).
      tau: temperature >= 0 (Menon et al.: 1).
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      float32 (float64 for float64 logits) loss shaped like ``logits`` for
      ``reduction="none"``, else a scalar.
    """
    p = la_params(priors, tau)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "logit_adjusted_bce"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("priors", p["priors"], logits)
        pr = p["priors"]
        if isinstance(pr, (tf.Tensor, tf.Variable)):
            pr64 = tf.cast(pr, tf.float64)
            shift = p["tau"] * (tf.math.log(pr64) - tf.math.log1p(-pr64))
        else:
            pr64 = np.asarray(pr, np.float64)
            shift = p["tau"] * (np.log(pr64) - np.log1p(-pr64))

        def compute(x):
            z = x + c.as_tensor(shift, x.dtype)
            y = tf.broadcast_to(labels, tf.shape(x))
            loss = y * tf.nn.softplus(-z) + (1.0 - y) * tf.nn.softplus(z)
            grad = (1.0 - y) * tf.sigmoid(z) - y * tf.sigmoid(-z)
            return loss, grad

        return c.fused(logits, compute, reduction)
