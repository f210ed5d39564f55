"""Whether a comparison can be trusted: the notes under ``compare``'s table.

Two ways a comparison of losses misleads without saying so (issue 20):

* **Budget too short.** Every run (every loss, every seed) kept its last epoch:
  none had stopped improving, so the table compares undertrained models and
  the ranking may be the ranking of convergence speed.
* **Seed noise.** With ``--seeds``, two losses whose mean scores differ by less
  than the larger of their standard deviations over seeds are within seed noise
  of each other: their order in the table is not a finding.

:func:`comparison_warnings` returns the notes as sentences; ``compare`` prints
them under the table and stores them in ``comparison.json`` (``"warnings"``).
"""

from __future__ import annotations

__all__ = ["comparison_warnings", "budget_warning", "seed_noise_warnings"]


def _selections(result):
    if result.get("per_seed"):
        return [p.get("selection") for p in result["per_seed"]]
    return [result.get("selection")]


def budget_warning(results, max_epochs):
    """The note when every run kept its last epoch (and none stopped early), else None."""
    sels = [s for r in results for s in _selections(r) if s]
    if not sels:
        return None
    if all(s.get("best_epoch") == s.get("epochs_trained") and not s.get("stopped_early") for s in sels):
        trained = sorted({int(s["epochs_trained"]) for s in sels if s.get("epochs_trained") is not None})
        shown = "/".join(map(str, trained)) or "?"
        return (f"Budget too short: every run ({len(sels)}) kept its last epoch ({shown} of at most "
                f"{max_epochs}), so none had stopped improving and the table may rank how fast the losses "
                f"converge, not where they end. Raise --epochs (early stopping ends the runs that stop "
                f"improving).")
    return None


def seed_noise_warnings(results, metrics):
    """One note per metric whose order between some losses is within seed noise.

    ``metrics``: ``[(name, getter)]``, ``getter(metrics_tree) -> float or None`` (a fraction in
    [0, 1]); means come from ``result["metrics"]``, standard deviations from
    ``result["metrics_sd"]`` (None for a single seed: no note).
    """
    notes = []
    for name, get in metrics:
        rows = []
        for r in results:
            sd_tree = r.get("metrics_sd")
            if not sd_tree:
                continue
            mean, sd = get(r["metrics"]), get(sd_tree)
            if mean is None or sd is None:
                continue
            rows.append((float(mean), float(sd), r["name"]))
        if len(rows) < 2:
            continue
        rows.sort(reverse=True)
        close = []
        for (m1, s1, n1), (m2, s2, n2) in zip(rows, rows[1:]):
            if m1 - m2 < max(s1, s2):
                close.append(f"{n1} {100 * m1:.1f} vs {n2} {100 * m2:.1f} (gap {100 * (m1 - m2):.1f}, "
                             f"sd up to {100 * max(s1, s2):.1f})")
        if close:
            notes.append(f"Seed noise in {name}: " + "; ".join(close) + ". These losses are within one "
                         "standard deviation over seeds of each other, so their order here is not a finding; "
                         "more seeds would tell them apart.")
    return notes


def _tree_get(*keys):
    def get(tree):
        for k in keys:
            if not isinstance(tree, dict) or tree.get(k) is None:
                return None
            tree = tree[k]
        return tree
    return get


DENSE_METRICS = [("macro-F1", _tree_get("global", "macro", "f1")), ("micro-F1", _tree_get("global", "micro", "f1"))]
FUSED_METRICS = [("P@1", _tree_get("p@1")), ("PSP@5", _tree_get("psp@5"))]


def comparison_warnings(results, *, max_epochs, fused=False):
    """The notes of a comparison (possibly none), as sentences."""
    notes = []
    budget = budget_warning(results, max_epochs)
    if budget:
        notes.append(budget)
    notes += seed_noise_warnings(results, FUSED_METRICS if fused else DENSE_METRICS)
    return notes
