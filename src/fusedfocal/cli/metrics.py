"""Metrics, label groups and decision thresholds (NumPy only).

Conventions (the same as scikit-learn's ``precision_recall_fscore_support``
with ``zero_division=0`` on multi-label indicator arrays):

* micro: true/false positives and false negatives summed over every
  (document, label) pair, then precision, recall, F1 (false positives on a
  label without positive documents in the split count too).
* macro: the unweighted mean over labels of the per-label precision, recall
  and F1, over the labels that have at least one positive document in the
  evaluated split (a label absent from the split has no recall to measure;
  on Reuters-21578 ApteMod every label has test documents, so this equals
  scikit-learn's macro average there).
* groups: labels split by the number of *training* documents: head ``n >= HI``,
  medium ``LO < n < HI``, tail ``n <= LO``. By default (:func:`resolve_groups`)
  the boundaries are the terciles of the labels by training documents, so each
  group holds about a third of the labels on any data set; ``--groups huang``
  gives Huang et al.'s (2021) Reuters boundaries ``(35, 8)``. A group without
  labels has ``None`` metrics, printed as ``-``.

Thresholds are tuned on the validation split held out from the training data,
never on test: one global threshold maximising micro-F1 and one per label
maximising that label's F1 (ties: the one closest to the global threshold); a label with fewer
than ``MIN_POSITIVES`` (5) positive validation documents falls back to the global threshold.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRID", "prf", "metrics_at", "tune_thresholds", "label_groups", "tercile_groups", "resolve_groups",
           "pr_curve", "all_metrics"]

HUANG = (35, 8)

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
GROUPS = ("head", "medium", "tail")


def _f1(p, r):
    return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)


def _counts(scores, labels, thresholds):
    pred = scores >= np.asarray(thresholds, np.float64)
    y = labels > 0.5
    tp = np.sum(pred & y, axis=0).astype(np.float64)
    fp = np.sum(pred & ~y, axis=0).astype(np.float64)
    fn = np.sum(~pred & y, axis=0).astype(np.float64)
    return tp, fp, fn


def prf(tp, fp, fn):
    """Precision, recall and F1 from counts (0 where undefined)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    return p, r, _f1(p, r)


def _summary(tp, fp, fn, idx):
    """Micro and macro P/R/F1 over the label indices ``idx``; None if no label has positives."""
    idx = np.asarray(idx, int)
    present = idx[(tp[idx] + fn[idx]) > 0]
    if present.size == 0:
        return None
    mp, mr, mf = prf(tp[idx].sum(), fp[idx].sum(), fn[idx].sum())  # false positives of every label count
    p, r, f = prf(tp[present], fp[present], fn[present])
    return {
        "labels": int(idx.size), "labels_with_positives": int(present.size),
        "micro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
        "macro": {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean())},
    }


def label_groups(train_counts, boundaries=(35, 8)):
    """Label indices per group: head ``>= hi``, medium ``lo < n < hi``, tail ``<= lo``."""
    hi, lo = boundaries
    c = np.asarray(train_counts)
    return {"head": np.flatnonzero(c >= hi), "medium": np.flatnonzero((c > lo) & (c < hi)),
            "tail": np.flatnonzero(c <= lo)}


def tercile_groups(train_counts):
    """``(HI, LO)``: the third of the labels with the most training documents is head (``n >= HI``),
    the rarest third tail (``n <= LO``); labels tied with a boundary join that outer group."""
    c = np.sort(np.asarray(train_counts, np.int64))
    if c.size == 0:
        return (1, 0)
    k = max(1, c.size // 3)
    lo, hi = int(c[k - 1]), int(c[c.size - k])
    return (max(hi, lo + 1), lo)


def resolve_groups(spec, train_counts):
    """``(boundaries, rule)``: ``spec`` ``None`` or ``"auto"`` -> :func:`tercile_groups`; ``"huang"`` ->
    ``(35, 8)``; a pair -> itself. ``rule`` says in words where the boundaries came from."""
    if spec is None or spec == "auto":
        b = tercile_groups(train_counts)
        return b, f"terciles of the {len(train_counts)} labels by training documents (--groups auto)"
    if spec == "huang" or tuple(spec) == HUANG:
        return HUANG, "Huang et al. (2021)'s Reuters boundaries (--groups huang)"
    b = tuple(int(x) for x in spec)
    return b, f"set by --groups {b[0]},{b[1]}"


def metrics_at(scores, labels, thresholds, *, train_counts, label_names, boundaries=(35, 8)):
    """All metrics at one threshold (scalar) or per-label thresholds (``[C]``)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.float64)
    tp, fp, fn = _counts(scores, labels, thresholds)
    out = _summary(tp, fp, fn, np.arange(scores.shape[1])) or {
        "labels": scores.shape[1], "labels_with_positives": 0, "micro": None, "macro": None}
    out["groups"] = {}
    for name, idx in label_groups(train_counts, boundaries).items():
        g = _summary(tp, fp, fn, idx)
        out["groups"][name] = g if g is not None else {"labels": int(idx.size), "labels_with_positives": 0,
                                                       "micro": None, "macro": None}
    p, r, f = prf(tp, fp, fn)
    th = np.broadcast_to(np.asarray(thresholds, np.float64), (scores.shape[1],))
    out["per_class"] = [
        {"label": label_names[j], "train_docs": int(train_counts[j]), "eval_docs": int(tp[j] + fn[j]),
         "threshold": float(th[j]), "precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j])}
        for j in range(scores.shape[1])]
    return out


MIN_POSITIVES = 5


def tune_thresholds(scores, labels, grid=GRID, *, min_positives=MIN_POSITIVES):
    """Global (micro-F1) and per-label (label F1) thresholds on validation scores.

    A label with fewer than ``min_positives`` positive validation documents
    keeps the global threshold: tuned on one or two positives, a per-label
    threshold lands below a stray low score and floods the test split with
    false positives (measured on the synthetic corpus: micro-F1 91 -> 51).

    Returns:
      ``(global_threshold, per_class [C], fallback_mask [C])``: ``fallback_mask``
      marks the labels that got the global threshold.
    """
    scores = np.asarray(scores, np.float64)
    y = np.asarray(labels) > 0.5
    n_pos = y.sum(axis=0)
    best_micro, best_t = -1.0, 0.5
    per_f1 = np.full((len(grid), scores.shape[1]), -1.0)
    for i, t in enumerate(grid):
        pred = scores >= t
        tp = np.sum(pred & y, axis=0)
        fp = np.sum(pred & ~y, axis=0)
        fn = n_pos - tp
        _, _, f_micro = prf(tp.sum(), fp.sum(), fn.sum())
        if f_micro > best_micro + 1e-12:
            best_micro, best_t = float(f_micro), float(t)
        per_f1[i] = prf(tp, fp, fn)[2]
    # Ties (common with few validation positives): the best threshold closest to the global one.
    per = np.empty(scores.shape[1])
    for j in range(scores.shape[1]):
        best = grid[per_f1[:, j] >= per_f1[:, j].max() - 1e-12]
        per[j] = best[np.argmin(np.abs(best - best_t))]
    fallback = n_pos < max(1, min_positives)
    per[fallback] = best_t
    return best_t, per, fallback


def all_metrics(scores, labels, thresholds, *, train_counts, label_names, boundaries=(35, 8)):
    """Metrics at 0.5, at the tuned global threshold and at the per-label thresholds."""
    kw = dict(train_counts=train_counts, label_names=label_names, boundaries=boundaries)
    return {"at_0.5": metrics_at(scores, labels, 0.5, **kw),
            "global": metrics_at(scores, labels, thresholds["global"], **kw),
            "per_class": metrics_at(scores, labels, np.asarray(thresholds["per_class_vector"]), **kw)}


def pr_curve(scores, labels):
    """Precision and recall at every distinct score of one label (descending)."""
    scores = np.asarray(scores, np.float64)
    y = np.asarray(labels) > 0.5
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    keep = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]
    precision = tp[keep] / np.maximum(tp[keep] + fp[keep], 1)
    recall = tp[keep] / max(int(y.sum()), 1)
    return np.r_[1.0, precision], np.r_[0.0, recall]
