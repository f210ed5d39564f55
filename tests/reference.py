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


def sigmoid_focal(x, y, gamma=2.0, alpha=None, label_smoothing=0.0):
    """Focal loss FL = alpha_t (1-p_t)^gamma BCE(x, y), element-wise."""
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
