"""Re-balanced losses driven by class frequencies, and the count helpers.

* :func:`class_balanced_focal_loss` (Cui et al., CVPR 2019): per-class weights
  from the effective number of samples.
* :func:`distribution_balanced_loss` (Wu et al., ECCV 2020; Huang et al.,
  EMNLP 2021): re-balanced weights, negative-tolerant regularization, focal.
* :func:`class_counts_from_dataset`, :func:`class_counts_from_labels`,
  :func:`class_balanced_weights`.

Both losses reuse the sigmoid focal kernel (analytic custom gradient).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fusedfocal.losses import _common as c
from fusedfocal.ops import _validation as v
from fusedfocal.ops.focal import focal_loss_and_grad, sigmoid_focal_loss

__all__ = [
    "class_balanced_focal_loss",
    "distribution_balanced_loss",
    "class_balanced_weights",
    "class_counts_from_dataset",
    "class_counts_from_labels",
    "cb_params",
    "db_params",
]


# ----------------------------------------------------------------- counts


def class_counts_from_labels(labels):
    """Per-class positive counts and number of rows of a multi-hot array.

    Args:
      labels: array-like ``[N, C]`` (or ``[..., C]``) of 0/1 (or soft)
        targets.

    Returns:
      ``(class_counts, num_docs)``: a float64 ``[C]`` array and an int.
    """
    arr = np.asarray(labels, np.float64)
    if arr.ndim < 1:
        raise v.invalid("labels", "an array shaped [N, C]", "a scalar")
    if arr.ndim == 1:
        arr = arr[None, :]
    arr = arr.reshape(-1, arr.shape[-1])
    return arr.sum(axis=0), int(arr.shape[0])


def class_counts_from_dataset(dataset, num_classes=None):
    """Per-class counts from a ``tf.data.Dataset`` of ``(x, multi_hot)``.

    Elements may be unbatched (``multi_hot: [C]``) or batched (``[B, C]``).
    One pass over the dataset, with a ``Dataset.reduce`` (no Python loop
    per element).

    Returns:
      ``(class_counts, num_docs)``: a float64 ``[C]`` array and an int.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise v.invalid("dataset", "a dataset of (x, multi_hot) elements", spec)
    label_spec = spec[1]
    c_dim = label_spec.shape[-1] if label_spec.shape.rank else None
    if c_dim is None:
        c_dim = num_classes
    if c_dim is None:
        raise v.invalid("num_classes", "the number of classes (the labels' last dimension is unknown)", None)

    def step(state, element):
        y = tf.cast(element[1], tf.float64)
        y = tf.reshape(y, [-1, c_dim])
        return state[0] + tf.reduce_sum(y, 0), state[1] + tf.cast(tf.shape(y)[0], tf.int64)

    init = (tf.zeros([c_dim], tf.float64), tf.constant(0, tf.int64))
    counts, n = dataset.reduce(init, step)
    return counts.numpy(), int(n.numpy())


def class_balanced_weights(class_counts, beta=0.9999):
    r"""Class-balanced weights ``w_c ∝ (1 - beta) / (1 - beta^{n_c})``.

    ``1 / E_{n}`` with the effective number ``E_n = (1 - beta^n)/(1 - beta)``,
    normalised so that ``sum_c w_c = C`` (Cui et al., Eq. 3 and Sec. 4). A
    class with zero samples is given ``E = 1`` (the effective number of a
    single sample, the smallest for any observed class), i.e. the largest
    finite weight, never Inf/NaN. ``beta = 0`` gives all ones (unweighted);
    ``beta -> 1`` approaches inverse class frequency.
    """
    counts, _ = c.check_counts(class_counts)
    beta = v.check_unit_interval("beta", beta, closed_right=False)
    n = np.maximum(counts, 1.0)
    # (1 - beta^n) / (1 - beta) via expm1/log1p: exact also for beta near 1
    if beta == 0.0:
        eff = np.ones_like(n)
    else:
        eff = -np.expm1(n * np.log(beta)) / -np.expm1(np.log(beta))
    w = 1.0 / eff
    return w * (w.size / w.sum())


# ------------------------------------------------------- class-balanced


def cb_params(class_counts=None, beta=0.9999, gamma=2.0, alpha=None):
    counts, _ = c.check_counts(class_counts)
    return dict(
        class_counts=counts,
        beta=v.check_unit_interval("beta", beta, closed_right=False),
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha),
    )


def class_balanced_focal_loss(
    logits, labels, *, class_counts, beta=0.9999, gamma=2.0, alpha=None, reduction="none",
    sample_weight=None, name=None
):
    r"""Class-balanced sigmoid focal loss (Cui et al., CVPR 2019), from logits.

    .. math::

        CB(x, y)_{\cdot c} = w_c\, \alpha_t\, (1-p_t)^{\gamma}\, \mathrm{BCE}(x, y),
        \qquad w_c = \frac{C}{\sum_k 1/E_{n_k}}\cdot\frac{1}{E_{n_c}},\;
        E_n = \frac{1-\beta^{n}}{1-\beta}

    Multi-label adaptation: the weight of class ``c`` multiplies both the
    positive and the negative term of column ``c`` (the ``by_class`` mode of
    the Wu et al. / Huang et al. code). Weights as in
    :func:`class_balanced_weights` (sum ``C``; a zero-count class gets the
    largest finite weight). ``beta = 0`` equals the unweighted sigmoid
    focal loss. Gradient: the sigmoid focal analytic gradient times ``w_c``.

    Args:
      logits: float tensor ``[..., C]``.
      labels: targets in ``[0, 1]``, broadcastable to ``logits``.
      class_counts: length-``C`` training counts ``n_c >= 0`` (see
        :func:`class_counts_from_dataset`).
      beta: in ``[0, 1)``. Cui et al. searched {0.9, 0.99, 0.999, 0.9999}
        and found 0.9999 best on the long-tailed CIFAR sets (the default);
        Huang et al. used 0.9 (unnormalised, loss weight 10) on Reuters.
      gamma: focal exponent (Cui et al.: tuned in {0.5, 1, 2}; default 2).
      alpha: None, float or per-class vector in ``[0, 1]`` (focal alpha).
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      sample_weight: optional weights broadcastable to ``logits``,
        multiplied with ``w_c`` before the reduction.

    It is :func:`fusedfocal.sigmoid_focal_loss` with the per-element weight
    ``w_c`` (times ``sample_weight``), so it runs on the same fused kernel.

    Returns:
      float32 (float64 for float64 logits) loss shaped like ``logits`` for
      ``reduction="none"``, else a scalar.
    """
    p = cb_params(class_counts, beta, gamma, alpha)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "class_balanced_focal_loss"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("class_counts", p["class_counts"], logits)
        c.check_per_class("alpha", p["alpha"], logits)
        weights = tf.constant(np.asarray(class_balanced_weights(p["class_counts"], p["beta"]), np.float64),
                              v.compute_dtype(logits.dtype))
        if sample_weight is not None:
            weights = weights * tf.cast(sample_weight, weights.dtype)
        return sigmoid_focal_loss(logits, labels, gamma=p["gamma"], alpha=p["alpha"],
                                  reduction=reduction, sample_weight=weights)


# ------------------------------------------------- distribution-balanced


def db_params(
    class_counts=None, num_docs=None, gamma=2.0, alpha=0.5, map_alpha=0.1, map_beta=10.0, map_mu=0.9,
    neg_scale=2.0, init_bias=0.05,
):
    counts, num_docs = c.check_counts(class_counts, num_docs, required_docs=True)
    return dict(
        class_counts=counts,
        num_docs=num_docs,
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha),
        map_alpha=v.check_nonnegative_float("map_alpha", map_alpha),
        map_beta=v.check_nonnegative_float("map_beta", map_beta),
        map_mu=v.check_nonnegative_float("map_mu", map_mu),
        neg_scale=c.check_positive_float("neg_scale", neg_scale),
        init_bias=v.check_nonnegative_float("init_bias", init_bias),
    )


def distribution_balanced_loss(
    logits, labels, *, class_counts, num_docs, gamma=2.0, alpha=0.5, map_alpha=0.1, map_beta=10.0, map_mu=0.9,
    neg_scale=2.0, init_bias=0.05, reduction="none", name=None,
):
    r"""Distribution-balanced loss (Wu et al., ECCV 2020), from logits.

    Three parts, as in the code of Huang et al. (EMNLP 2021,
    ``Roche/BalancedLossNLP``, ``ResampleLoss(reweight_func='rebalance')``):

    1. **Re-balanced weighting.** ``P^C_i = 1/n_i`` (class-level sampling
       frequency) and, for a sample with positive set ``S``,
       ``P^I = sum_{j in S} 1/n_j`` (instance-level). ``r_i = P^C_i / P^I``
       is smoothed to ``r̂_i = map_alpha + sigmoid(map_beta (r_i - map_mu))``
       and weights every class (positive and negative) of the sample. ``P^I``
       is computed per batch from the multi-hot labels. A row with no
       positive label has ``P^I = 0``, ``r = inf``: its weight is the limit
       ``map_alpha + 1``.
    2. **Negative-tolerant regularization.** Logits are shifted by the class
       prior, ``z = x - nu_i`` with ``nu_i = init_bias * log(1/p_i - 1)``,
       ``p_i = n_i / N``; negatives are scaled:
       ``L_- = (1/lambda) softplus(lambda z)`` with ``lambda = neg_scale``;
       positives keep ``L_+ = softplus(-z)``.
    3. **Focal term.** ``alpha_t (1-p_t)^gamma`` with ``p_t`` from the
       regularised logit (``lambda z`` for negatives).

    .. math::

        DB = \hat r\,\alpha_t\,(1-p_t)^{\gamma}\,
             [\,y\,\mathrm{softplus}(-z) + (1-y)\tfrac{1}{\lambda}\mathrm{softplus}(\lambda z)\,]

    (soft labels follow the reference code: the logit becomes
    ``z (y + lambda (1-y))`` and the weight ``r̂ (y + (1-y)/lambda)``).
    Class counts 0 are treated as 1 in ``1/n_i``, and clipped into
    ``[0.5, N - 0.5]`` for the prior, so every class gives finite values.

    Gradient: the sigmoid focal analytic gradient at the regularised logit,
    times ``r̂ (y + (1-y)/lambda) (y + lambda (1-y))``; labels, counts and
    weights get none.

    Args:
      logits: float tensor ``[..., C]``.
      labels: multi-hot targets in ``[0, 1]``, shaped like ``logits``.
      class_counts: length-``C`` training counts ``n_i``.
      num_docs: number of training documents ``N``.
      gamma: focal exponent (Huang et al.: 2).
      alpha: focal alpha, float or per-class vector (Huang et al.: 0.5,
        which halves every term).
      map_alpha, map_beta, map_mu: the smoothing function's ``alpha``,
        ``beta`` and ``mu`` (Huang et al., Reuters and PubMed: 0.1, 10, 0.9;
        Wu et al. used mu 0.2 on COCO/VOC).
      neg_scale: ``lambda`` > 0 (Huang et al.: 2; Wu et al.: 5).
      init_bias: ``kappa`` >= 0 (Huang et al.: 0.05; Wu et al.: 0.1).
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      float32 (float64 for float64 logits) loss shaped like ``logits`` for
      ``reduction="none"``, else a scalar.

    References:
      Wu et al., "Distribution-Balanced Loss for Multi-Label Classification
      in Long-Tailed Datasets", ECCV 2020. Huang et al., "Balancing Methods
      for Multi-label Text Classification with Long-Tailed Class
      Distribution", EMNLP 2021.
    """
    p = db_params(class_counts, num_docs, gamma, alpha, map_alpha, map_beta, map_mu, neg_scale, init_bias)
    reduction = v.check_reduction(reduction)
    with tf.name_scope(name or "distribution_balanced_loss"):
        logits, labels = c.prepare(logits, labels)
        c.check_per_class("class_counts", p["class_counts"], logits)
        c.check_per_class("alpha", p["alpha"], logits)
        return c.fused(logits, _db_elementwise(labels, p), reduction)


def _db_elementwise(labels, p):
    """The per-element loss and gradient of :func:`distribution_balanced_loss` for ``c.fused``, from
    the checked parameters ``p`` of :func:`db_params` (priors and weights precomputed in float64)."""
    counts = p["class_counts"]
    freq_inv = 1.0 / np.maximum(counts, 1.0)
    prior = c.safe_priors(counts, p["num_docs"])
    nu = p["init_bias"] * np.log(1.0 / prior - 1.0)
    lam = p["neg_scale"]

    def compute(x):
        dt = x.dtype
        y = tf.broadcast_to(labels, tf.shape(x))
        fi = c.as_tensor(freq_inv, dt)
        inst = tf.reduce_sum(y * fi, axis=-1, keepdims=True)  # P^I
        r = tf.math.divide_no_nan(fi, inst)
        r_hat = p["map_alpha"] + tf.sigmoid(p["map_beta"] * (r - p["map_mu"]))
        r_hat = tf.where(inst > 0, r_hat, tf.constant(p["map_alpha"] + 1.0, dt))
        scale = y + lam * (1.0 - y)
        z = (x - c.as_tensor(nu, dt)) * scale
        w = r_hat * (y + (1.0 - y) / lam)
        if p["alpha"] is not None:
            a = c.as_tensor(p["alpha"], dt)
            w = w * ((1.0 - a) + (2.0 * a - 1.0) * y)
        loss, grad = focal_loss_and_grad(z, y, w, p["gamma"])
        return loss, grad * scale

    return compute
