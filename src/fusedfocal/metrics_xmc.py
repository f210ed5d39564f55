"""Ranking metrics of extreme multi-label classification, from the top-k alone.

P@k, nDCG@k and propensity-scored PSP@k (Jain, Prabhu and Varma, KDD 2016),
computed from the predicted top-k label ids ``[N, k]`` and the true label ids
of each document (ragged), never from ``[N, C]`` scores: the cost is
``O(N·k + nnz)``, whatever the number of labels. NumPy only, float64.

Definitions (the Extreme Classification Repository's, as in its MATLAB
``helper_functions`` and in pyxclib's ``xclib.evaluation.xc_metrics``), for
a document with true labels ``y`` and ranked predictions ``r_1..r_k``, and
``hit_j = [r_j ∈ y]``:

* ``P@k = (1/k) Σ_{j≤k} hit_j``.
* ``nDCG@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{j≤k} hit_j / log2(j + 1)`` and
  ``IDCG@k = Σ_{j≤min(k, |y|)} 1 / log2(j + 1)``.
* ``PSP@k``: the propensity-weighted precision ``Σ_{j≤k} hit_j / p_{r_j}``
  summed over documents, **divided by the same sum for the best achievable
  ranking** (each document's ``min(k, |y|)`` true labels of largest
  ``1/p``). This is the repository's normalised PSP (a ratio of sums, so
  ``PSP@k <= 1``, 1 for a perfect ranking); ``normalize=False`` gives the
  unnormalised mean ``(1/N) Σ (1/k) Σ_j hit_j / p_{r_j}`` of Jain et al.'s
  paper instead.
* Every metric is averaged over all ``N`` documents; a document without true
  labels scores 0 (as in the repository), so drop such documents first to
  average over labelled ones only.

Propensities (Jain et al. 2016, eq. 2): ``p_l = 1 / (1 + C·(N_l + B)^-A)``
with ``C = (ln N - 1)·(B + 1)^A``, ``N_l`` the training documents of label
``l`` and ``N`` the training documents; ``A = 0.55``, ``B = 1.5`` by default
(the values for Wikipedia-LSHTC and most data sets; Amazon uses 0.6, 2.6).

Example::

    >>> import numpy as np
    >>> top = np.array([[3, 1, 0], [2, 0, 1]])
    >>> true = [[1, 3], [0]]
    >>> precision_at_k(top, true, 3).tolist()
    [0.5, 0.75, 0.5]
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_ragged_ids", "inverse_propensities", "ndcg_at_k", "precision_at_k", "propensities",
           "psp_at_k", "xmc_metrics"]


def _invalid(name, expected, received):
    return ValueError(f"Invalid value for argument `{name}`. Expected {expected}. Received: {received}")


def as_ragged_ids(true_ids):
    """``(values int64 [nnz], row_splits int64 [N + 1])`` of the true label ids.

    Args:
      true_ids: A ``tf.RaggedTensor`` ``[N, None]``; a list of id sequences;
        an int array ``[N, L]`` padded with -1 (negative ids are padding);
        or a ``(values, row_splits)`` pair.

    Returns:
      The flat ids and the row splits, ids deduplicated and sorted per row.
    """
    if hasattr(true_ids, "row_splits") and hasattr(true_ids, "flat_values"):  # tf.RaggedTensor, no TF import
        values = np.asarray(true_ids.flat_values).astype(np.int64).ravel()
        splits = np.asarray(true_ids.row_splits).astype(np.int64)
    elif isinstance(true_ids, tuple) and len(true_ids) == 2:
        values = np.asarray(true_ids[0], np.int64).ravel()
        splits = np.asarray(true_ids[1], np.int64)
    elif isinstance(true_ids, np.ndarray) or hasattr(true_ids, "numpy"):
        dense = np.asarray(true_ids)
        if dense.ndim != 2 or not np.issubdtype(dense.dtype, np.integer):
            raise _invalid("true_ids", "an int array [N, L] padded with -1",
                           f"dtype={dense.dtype}, shape={dense.shape}")
        keep = dense >= 0
        values = dense[keep].astype(np.int64)
        splits = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    else:
        rows = [np.asarray(r, np.int64).ravel() for r in true_ids]
        values = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        splits = np.concatenate([[0], np.cumsum([r.size for r in rows])]).astype(np.int64)
    if splits.ndim != 1 or splits.size < 1 or splits[0] != 0 or splits[-1] != values.size or (np.diff(splits) < 0).any():
        raise _invalid("true_ids", "row splits that start at 0, never decrease and end at the number of ids",
                       f"{splits.size} splits ending at {splits[-1] if splits.size else None} for {values.size} ids")
    if (values < 0).any():
        raise _invalid("true_ids", "non-negative label ids", f"min id {values.min()}")
    rows = np.repeat(np.arange(splits.size - 1, dtype=np.int64), np.diff(splits))
    key = np.unique(rows * (int(values.max(initial=0)) + 1) + values)
    width = int(values.max(initial=0)) + 1
    rows, values = key // width, key % width
    return values, np.searchsorted(rows, np.arange(splits.size), side="left").astype(np.int64)


def _top(top_ids, k, num_rows=None):
    top = np.asarray(top_ids)
    if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
        raise _invalid("top_ids", "an int array [N, k] of ranked label ids", f"dtype={top.dtype}, shape={top.shape}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise _invalid("k", "a positive int", f"k={k!r}")
    if top.shape[1] < k:
        raise _invalid("k", f"k <= top_ids.shape[1] = {top.shape[1]}", f"k={k}")
    if num_rows is not None and top.shape[0] != num_rows:
        raise _invalid("true_ids", f"one row per row of top_ids ({top.shape[0]})", f"{num_rows} rows")
    return top[:, :k].astype(np.int64)


def _hits(top, values, splits):
    """bool ``[N, k]``: ``top[i, j]`` is a true label of document ``i`` (negative ids never are)."""
    n = top.shape[0]
    width = int(max(values.max(initial=0), top.max(initial=0))) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(splits))
    true_key = rows * width + values
    top_key = np.arange(n, dtype=np.int64)[:, None] * width + top
    return np.isin(top_key, true_key) & (top >= 0)


def _first_hits(top, hits):
    """A prediction repeated in a row counts once (its first occurrence)."""
    if top.shape[1] < 2:
        return hits
    order = np.argsort(top, axis=1, kind="stable")
    s = np.take_along_axis(top, order, axis=1)
    dup_sorted = np.concatenate([np.zeros((top.shape[0], 1), bool), s[:, 1:] == s[:, :-1]], axis=1)
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return hits & ~dup


def _prepare(top_ids, true_ids, k):
    values, splits = as_ragged_ids(true_ids)
    top = _top(top_ids, k, splits.size - 1)
    return top, values, splits, _first_hits(top, _hits(top, values, splits))


def precision_at_k(top_ids, true_ids, k: int = 5) -> np.ndarray:
    """P@1..P@k, float64 ``[k]``, from the ranked top-k.

    Args:
      top_ids: int ``[N, >= k]``, predicted label ids, best first.
      true_ids: The true ids of each document (see :func:`as_ragged_ids`).
      k: Largest cut-off.

    Returns:
      ``[P@1, ..., P@k]``, each averaged over the ``N`` documents.
    """
    _, _, _, hits = _prepare(top_ids, true_ids, k)
    return _mean(np.cumsum(hits, axis=1) / np.arange(1, k + 1))


def _mean(per_doc):
    return per_doc.mean(axis=0) if per_doc.shape[0] else np.zeros(per_doc.shape[1])


def ndcg_at_k(top_ids, true_ids, k: int = 5) -> np.ndarray:
    """nDCG@1..nDCG@k, float64 ``[k]`` (binary gains, ``log2(j + 1)`` discounts)."""
    _, _, splits, hits = _prepare(top_ids, true_ids, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = np.cumsum(hits * discount, axis=1)
    ideal = np.cumsum(discount)  # IDCG@j for a document with >= j labels
    n_true = np.diff(splits)
    idcg = ideal[np.clip(np.minimum(n_true[:, None], np.arange(1, k + 1)) - 1, 0, None)]
    return _mean(np.where(n_true[:, None] > 0, dcg / idcg, 0.0))


def propensities(label_counts, num_docs: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """Jain et al.'s (2016) label propensities ``p_l``, float64 ``[C]`` in ``(0, 1)``.

    ``p_l = 1 / (1 + C·exp(-A·ln(N_l + B)))``, ``C = (ln N - 1)·(B + 1)^A``.

    Args:
      label_counts: ``N_l``, training documents per label ``[C]``.
      num_docs: ``N``, training documents (> e, so that ``C > 0``).
      a: ``A`` (0.55 by default).
      b: ``B`` (1.5 by default).
    """
    counts = np.asarray(label_counts, np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise _invalid("label_counts", "a 1-D array of non-negative counts", f"shape={counts.shape}")
    if not num_docs > np.e:
        raise _invalid("num_docs", "more than e training documents (C = ln N - 1 > 0)", f"num_docs={num_docs!r}")
    c = (np.log(num_docs) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(counts + b)))


def inverse_propensities(label_counts, num_docs: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """``1 / p_l`` (pyxclib's ``compute_inv_propesity``), float64 ``[C]``."""
    return 1.0 / propensities(label_counts, num_docs, a, b)


def psp_at_k(top_ids, true_ids, inv_propensity, k: int = 5, *, normalize: bool = True) -> np.ndarray:
    """PSP@1..PSP@k, float64 ``[k]`` (see the module docstring for the normalisation).

    Args:
      top_ids: int ``[N, >= k]``, predicted label ids, best first.
      true_ids: The true ids of each document.
      inv_propensity: ``1 / p_l`` for every label ``[C]`` (:func:`inverse_propensities`).
      k: Largest cut-off.
      normalize: Divide by the PSP of the best achievable ranking (the XMC
        repository's convention, default); False: the unnormalised mean.
    """
    top, values, splits, hits = _prepare(top_ids, true_ids, k)
    w = np.asarray(inv_propensity, np.float64)
    if w.ndim != 1:
        raise _invalid("inv_propensity", "a 1-D array [C]", f"shape={w.shape}")
    biggest = int(max(values.max(initial=-1), top.max(initial=-1)))
    if biggest >= w.size:
        raise _invalid("inv_propensity", f"one weight per label, more than the largest id {biggest}",
                       f"{w.size} weights")
    gain = np.where(hits, w[np.clip(top, 0, None)], 0.0)
    psp = np.cumsum(gain, axis=1) / np.arange(1, k + 1)
    if not normalize:
        return _mean(psp)
    # The best ranking puts each document's true labels by decreasing 1/p first.
    n = splits.size - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(splits))
    order = np.lexsort((-w[values], rows))
    rank = np.arange(values.size) - splits[rows]
    best = np.zeros((n, k))
    keep = rank < k
    best[rows[keep], rank[keep]] = w[values[order]][keep]
    ideal = np.cumsum(best, axis=1) / np.arange(1, k + 1)
    total = ideal.sum(axis=0)
    return np.divide(psp.sum(axis=0), total, out=np.zeros(k), where=total > 0)


def xmc_metrics(top_ids, true_ids, *, ks=(1, 3, 5), label_counts=None, num_docs=None,
                a: float = 0.55, b: float = 1.5) -> dict:
    """P@k, nDCG@k and (with training counts) PSP@k at the cut-offs ``ks``.

    Args:
      top_ids: int ``[N, >= max(ks)]``, predicted label ids, best first.
      true_ids: The true ids of each document.
      ks: Cut-offs.
      label_counts: Training documents per label ``[C]``; with ``num_docs``
        adds ``psp@k`` (normalised).
      num_docs: Training documents.
      a, b: Propensity parameters.

    Returns:
      ``{"p@1": ..., "ndcg@1": ..., "psp@1": ..., ...}`` (Python floats).
    """
    k = max(ks)
    top, values, splits, hits = _prepare(top_ids, true_ids, k)
    ragged = (values, splits)
    out = {}
    p, n = precision_at_k(top, ragged, k), ndcg_at_k(top, ragged, k)
    psp = None
    if label_counts is not None:
        if num_docs is None:
            raise _invalid("num_docs", "the number of training documents next to `label_counts`", "None")
        psp = psp_at_k(top, ragged, inverse_propensities(label_counts, num_docs, a, b), k)
    for j in ks:
        out[f"p@{j}"] = float(p[j - 1])
        out[f"ndcg@{j}"] = float(n[j - 1])
        if psp is not None:
            out[f"psp@{j}"] = float(psp[j - 1])
    return out
