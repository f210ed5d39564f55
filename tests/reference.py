"""Float64 NumPy references for every loss, written independently of the ops.

Values use the textbook probability-space formulas in float64 (with
``logaddexp`` for the logs); gradients come from the complex-step derivative
``Im f(x + i h) / h`` of the same formulas, exact to float64 rounding and
sharing no code with the analytic gradients under test. The benchmarks import
this module too.
"""

from __future__ import annotations

import numpy as np

_H = 1e-30  # complex-step size: no subtractive cancellation, so it can be tiny


def log1p(w):
    """``log(1 + w)`` accurate for tiny complex ``w`` (NumPy's complex log1p
    rounds ``1 + w`` first and loses the real part)."""
    w = np.asarray(w)
    small = np.abs(w) < 1e-4
    ws = np.where(small, w, 0)
    series = ws - ws**2 / 2 + ws**3 / 3 - ws**4 / 4
    return np.where(small, series, np.log(1 + np.where(small, 0, w)))


def softplus(z):
    """``log(1 + e^z)`` for real or complex ``z``, analytic on each branch."""
    z = np.asarray(z)
    pos = z.real > 0
    safe_pos = np.where(pos, z, 0)
    safe_neg = np.where(pos, 0, z)
    return np.where(pos, safe_pos + log1p(np.exp(-safe_pos)), log1p(np.exp(safe_neg)))


def complex_step_grad(fn, x):
    """Element-wise derivative of an element-wise ``fn`` at real ``x``."""
    x = np.asarray(x, np.float64)
    return np.imag(fn(x + 1j * _H)) / _H


def alpha_t(y, alpha):
    if alpha is None:
        return np.ones_like(y)
    a = np.asarray(alpha, np.float64)
    return a * y + (1.0 - a) * (1.0 - y)


def class_balancing_alpha(alpha, apply_class_balancing):
    """Keras' ``apply_class_balancing``: None keeps ``alpha``; True applies it
    (Keras' 0.25 when None); False drops it."""
    if apply_class_balancing is None:
        return alpha
    return (0.25 if alpha is None else alpha) if apply_class_balancing else None


def sigmoid_focal(x, y, gamma=2.0, alpha=None, label_smoothing=0.0, apply_class_balancing=None):
    """Focal loss FL = alpha_t (1-p_t)^gamma BCE(x, y), element-wise."""
    alpha = class_balancing_alpha(alpha, apply_class_balancing)
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    log_p = -softplus(-x)
    log_1mp = -softplus(x)
    bce = -(y * log_p + (1.0 - y) * log_1mp)
    q = y * np.exp(log_1mp) + (1.0 - y) * np.exp(log_p)  # 1 - p_t
    mod = np.ones_like(q) if gamma == 0 else q**gamma
    return alpha_t(y, alpha) * mod * bce


def sigmoid_focal_grad(x, y, **kw):
    return complex_step_grad(lambda z: sigmoid_focal(z, y, **kw), x)


def bce(x, y):
    return sigmoid_focal(x, y, gamma=0.0)


# --------------------------------------------------------------------------
# The imbalance loss family (fusedfocal.losses). Probability-space formulas
# in float64; each accepts complex ``x`` so that ``complex_step_grad`` (or
# ``complex_step_sum_grad`` for losses that mix elements) gives its gradient.
# Piecewise losses (ASL margin, hinge) pick their branch on ``x.real``:
# the complex step is exact away from the kink.
# --------------------------------------------------------------------------


def complex_step_sum_grad(fn, x):
    """Gradient of ``sum(fn(x))`` for any ``fn`` analytic in each element
    (one complex step per element; for small test arrays)."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    flat = g.reshape(-1)
    for i in range(x.size):
        z = x.astype(np.complex128).reshape(-1)
        z[i] += 1j * _H
        flat[i] = np.imag(np.sum(fn(z.reshape(x.shape)))) / _H
    return g


def _sigmoid(x):
    return np.exp(-softplus(-x))


def weighted_bce(x, y, pos_weight=1.0):
    """-w y log p - (1-y) log(1-p)."""
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    return -(np.asarray(pos_weight, np.float64) * y * -softplus(-x) + (1.0 - y) * -softplus(x))


def asymmetric(x, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05):
    """ASL: y (1-p)^g+ (-log p) + (1-y) p_m^g- (-log(1-p_m)), p_m = max(p-m, 0)."""
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    p = _sigmoid(x)
    one_m_p = np.exp(-softplus(x))
    l_pos = (one_m_p**gamma_pos if gamma_pos else 1.0) * softplus(-x)
    active = (p.real - clip) > 0
    p_m = np.where(active, p - clip, 0.0)
    safe = np.where(active, p_m, 0.5)
    l_neg_active = (safe**gamma_neg if gamma_neg else 1.0) * -log1p(-safe)
    l_neg = np.where(active, l_neg_active, 0.0)
    return y * l_pos + (1.0 - y) * l_neg


def cb_weights(counts, beta):
    """(1-beta)/(1-beta^n) normalised to sum C; n = 0 treated as n = 1."""
    n = np.maximum(np.asarray(counts, np.float64), 1.0)
    w = np.ones_like(n) if beta == 0 else (1.0 - beta) / (1.0 - beta**n)
    return w * n.size / w.sum()


def class_balanced_focal(x, y, class_counts, beta=0.9999, gamma=2.0, alpha=None):
    return cb_weights(class_counts, beta) * sigmoid_focal(x, y, gamma=gamma, alpha=alpha)


def distribution_balanced(x, y, class_counts, num_docs, gamma=2.0, alpha=0.5, map_alpha=0.1, map_beta=10.0,
                          map_mu=0.9, neg_scale=2.0, init_bias=0.05):
    """Wu et al. / Huang et al. ResampleLoss('rebalance') with focal and logit reg., in NumPy."""
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    counts = np.asarray(class_counts, np.float64)
    freq_inv = 1.0 / np.maximum(counts, 1.0)
    n = np.clip(counts, 0.5, max(num_docs - 0.5, 0.5))
    prior = n / num_docs
    repeat = np.sum(y * freq_inv, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        r = np.where(repeat > 0, freq_inv / np.where(repeat > 0, repeat, 1.0), np.inf)
    w = map_alpha + 1.0 / (1.0 + np.exp(-map_beta * (r - map_mu)))
    z = x + (-np.log(num_docs / n - 1.0) * init_bias)
    z = z * (1 - y) * neg_scale + z * y
    w = w / neg_scale * (1 - y) + w * y
    bce_z = -(y * -softplus(-z) + (1 - y) * -softplus(z))
    q = y * np.exp(-softplus(z)) + (1 - y) * np.exp(-softplus(-z))
    return w * alpha_t(y, alpha) * q**gamma * bce_z


def logit_adjusted(x, y, priors, tau=1.0):
    pr = np.asarray(priors, np.float64)
    return weighted_bce(np.asarray(x) + tau * np.log(pr / (1.0 - pr)), y)


def poly1_focal(x, y, epsilon=1.0, gamma=2.0, alpha=None):
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    q = y * (1.0 - _sigmoid(x)) + (1.0 - y) * _sigmoid(x)
    return sigmoid_focal(x, y, gamma=gamma, alpha=alpha) + epsilon * q ** (gamma + 1.0)


def tversky(x, y, alpha=0.3, beta=0.7, smooth=1.0, per_class=True, weights=None):
    """1 - (TP+s)/(TP + a FP + b FN + s) on sigmoid probabilities."""
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    w = np.ones(x.shape) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), x.shape)
    p = _sigmoid(x)
    axis = tuple(range(x.ndim - 1)) if per_class else None
    tp = np.sum(w * p * y, axis=axis)
    fp = np.sum(w * p * (1 - y), axis=axis)
    fn = np.sum(w * (1 - p) * y, axis=axis)
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def squared_hinge(x, y):
    x = np.asarray(x)
    t = 2.0 * np.broadcast_to(np.asarray(y, np.float64), x.shape) - 1.0
    m = 1.0 - t * x
    return np.where(m.real > 0, m, 0.0) ** 2


def log_cosh(x, y):
    x = np.asarray(x)
    return np.log(np.cosh(_sigmoid(x) - np.asarray(y, np.float64)))


def categorical_focal(x, y, gamma=2.0, alpha=None, label_smoothing=0.0, axis=-1):
    """-sum_j a_j y_j (1-p_j)^g log p_j over ``axis``, p = softmax; targets
    smoothed as Keras does, ``y (1 - ls) + ls / C``."""
    x = np.asarray(x)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    y = y * (1.0 - label_smoothing) + label_smoothing / y.shape[-1]
    m = np.max(x.real, axis=-1, keepdims=True)
    e = np.exp(x - m)
    p = e / np.sum(e, axis=-1, keepdims=True)
    logp = x - m - np.log(np.sum(e, axis=-1, keepdims=True))
    a = 1.0 if alpha is None else np.asarray(alpha, np.float64)
    mod = (1.0 - p) ** gamma if gamma else 1.0
    return -np.sum(a * y * mod * logp, axis=-1)


# --------------------------------------------------------------------------
# Keras' probabilities (from_logits=False): clipped into [eps, 1 - eps] and
# read as logits. ``bounds`` is the dtype the clip bounds are rounded to
# (float32 for every non-float64 input: the conversion runs in float32).


def _clip(p, eps, bounds):
    lo, hi = float(bounds(eps)), float(bounds(1.0 - eps))
    return np.where(p.real < lo, lo, np.where(p.real > hi, hi, p))


def keras_sigmoid_logits(p, eps=1e-7, legacy=False, bounds=np.float64):
    """Keras 3: ``log c - log(1-c)``; tf_keras: ``log(c+eps) - log(1-c+eps)``."""
    c = _clip(np.asarray(p), eps, bounds)
    if legacy:
        return np.log(c + eps) - np.log(1.0 - c + eps)
    return np.log(c) - np.log(1.0 - c)


def keras_softmax_logits(p, eps=1e-7, axis=-1, bounds=np.float64):
    """``log(clip(p / sum(p, axis)))`` (Keras' CategoricalFocalCrossentropy)."""
    p = np.asarray(p)
    return np.log(_clip(p / np.sum(p, axis=axis, keepdims=True), eps, bounds))


# --------------------------------------------------------------------------
# The fused linear head (fusedfocal.linear_focal_loss): dense float64 logits
# through the element-wise reference above, then the chain rule by matmul.


def multi_hot(ids, num_classes):
    """Dense float64 ``[B, C]`` from lists of ids (duplicates count once,
    ids < 0 are padding)."""
    y = np.zeros((len(ids), num_classes))
    for r, row in enumerate(ids):
        for i in row:
            if i >= 0:
                y[r, i] = 1.0
    return y


def linear_focal(x, kernel, bias, y, *, gamma=2.0, alpha=None, class_weights=None, logit_offsets=None,
                 reduction="mean", kernel_layout="hc"):
    """Loss and gradients ``(loss, d features, d kernel, d bias)`` in float64
    of ``sum/mean(w_c * FL(x @ W + b + o, y))``; the kernel gradient is in the
    kernel's layout."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    w_hc = w if kernel_layout == "hc" else w.T
    z = x @ w_hc
    if bias is not None:
        z = z + np.asarray(bias, np.float64)
    if logit_offsets is not None:
        z = z + np.asarray(logit_offsets, np.float64)
    cw = np.ones(z.shape[-1]) if class_weights is None else np.asarray(class_weights, np.float64)
    per = sigmoid_focal(z, y, gamma=gamma, alpha=alpha) * cw
    dz = sigmoid_focal_grad(z, y, gamma=gamma, alpha=alpha) * cw
    scale = 1.0 / z.size if reduction == "mean" else 1.0
    loss = per.sum() * scale
    dz = dz * scale
    gk = x.T @ dz
    return loss, dz @ w_hc.T, (gk if kernel_layout == "hc" else gk.T), dz.sum(0)
