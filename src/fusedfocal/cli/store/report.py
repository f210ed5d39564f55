"""Tables (console and Markdown), JSON and PNG plots of runs and comparisons."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fmt", "summary_lines", "write_json", "comparison_rows", "render_table", "plot_recall_vs_frequency",
           "plot_pr_curves", "aggregate", "chosen_epochs", "curve"]

GROUPS = ("head", "medium", "tail")


def fmt(value, pct=True, digits=1):
    """A metric as text; ``None``/NaN as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.{digits}f}" if pct else f"{value:.{digits}f}"


def write_json(path, payload):
    """Strict JSON, written atomically: :func:`fusedfocal.cli.store.rundir.write_json` (non-finite numbers
    as ``null``; a write error is a clear message, exit status 4)."""
    from fusedfocal.cli.store import rundir

    return rundir.write_json(path, payload)


def _get(m, *keys):
    for k in keys:
        if m is None:
            return None
        m = m[k]
    return m


# (header, explanation, getter over one metrics block)
COLUMNS = [
    ("miP", "micro precision", lambda m: _get(m, "micro", "precision")),
    ("miR", "micro recall", lambda m: _get(m, "micro", "recall")),
    ("miF1", "micro F1: all (document, label) decisions pooled; dominated by frequent labels",
     lambda m: _get(m, "micro", "f1")),
    ("maP", "macro precision", lambda m: _get(m, "macro", "precision")),
    ("maR", "macro recall", lambda m: _get(m, "macro", "recall")),
    ("maF1", "macro F1: mean of per-label F1; every label counts the same, rare ones included",
     lambda m: _get(m, "macro", "f1")),
] + [
    (f"{g[0].upper()}-{s}", f"{g} labels: macro {name}",
     (lambda g, k: lambda m: _get(m, "groups", g, "macro", k))(g, k))
    for g in GROUPS for s, name, k in (("R", "recall", "recall"), ("F1", "F1", "f1"))
]


# The fused head's table (cli/fused.py): top-k metrics, no thresholds; ``mode`` is None there.
XMC_COLUMNS = [
    *[(f"P@{k}", f"precision at {k}: the share of the top {k} labels that are true", (lambda k: lambda m: m[f"p@{k}"])(k))
      for k in (1, 3, 5)],
    *[(f"N@{k}", f"nDCG at {k}: the top {k} ranked, discounted by log2(rank + 1)", (lambda k: lambda m: m[f"ndcg@{k}"])(k))
      for k in (1, 3, 5)],
    *[(f"PSP@{k}", f"propensity-scored P@{k} (Jain et al. 2016, A=0.55, B=1.5): rare labels weigh more",
       (lambda k: lambda m: m.get(f"psp@{k}"))(k)) for k in (1, 3, 5)],
    ("R@5", "recall at 5: the share of (document, true label) pairs found in the top 5",
     lambda m: _get(m, "recall@5", "all")),
] + [(f"{g[0].upper()}-R@5", f"{g} labels: recall at 5", (lambda g: lambda m: _get(m, "recall@5", g))(g))
     for g in GROUPS]


def _block(metrics, mode):
    return metrics if mode is None else metrics[mode]


def comparison_rows(results, mode, columns=None):
    """Rows ``[name, values...]`` of the comparison table at threshold ``mode`` (``None``: the fused
    head's top-k metrics, with ``columns=XMC_COLUMNS``)."""
    columns = columns or COLUMNS
    return [[r["name"]] + [get(_block(r["metrics"], mode)) for _, _, get in columns] for r in results]


def render_table(results, mode, *, markdown=False, columns=None):
    """The comparison table; the best value of each column marked (``*`` or bold).

    Over several seeds (results of :func:`aggregate`) a cell is ``mean±sd`` and every row whose mean
    is within one standard deviation of the best mean (the larger of the two rows' sds) is marked:
    a tie, not a win. The last column is the chosen epoch (per seed)."""
    cols = columns or COLUMNS
    rows = comparison_rows(results, mode, cols)
    sds = [[get(_block(r["metrics_sd"], mode)) if r.get("metrics_sd") else None for _, _, get in cols]
           for r in results]
    best = []
    for c in range(1, len(cols) + 1):
        vals = [(r[c], i) for i, r in enumerate(rows) if r[c] is not None]
        best.append(max(vals) if vals else None)
    head = ["loss"] + [h for h, _, _ in cols] + ["epoch"]
    body = []
    for i, r in enumerate(rows):
        cells = [r[0]]
        for c, v in enumerate(r[1:]):
            sd = sds[i][c]
            s = fmt(v) + (f"±{fmt(sd)}" if sd is not None else "")
            if v is not None and len(rows) > 1 and best[c] is not None:
                bv, bi = best[c]
                margin = max(sd or 0.0, sds[bi][c] or 0.0)
                if round(100 * v, 1) == round(100 * bv, 1) or bv - v <= margin:
                    s = f"**{s}**" if markdown else s + "*"
            cells.append(s)
        cells.append(chosen_epochs(results[i]))
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(cols) + 1)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
              for cells in body]
    return "\n".join(lines)


def column_legend(columns=None):
    return "\n".join([f"  {h:6s} {d}" for h, d, _ in (columns or COLUMNS)]
                     + ["  epoch  the epoch whose weights were kept (best validation score; one per seed)"])


def per_class_recall_table(results, mode, *, markdown=True):
    """One row per label: training docs, eval docs, recall under each loss."""
    names = [r["name"] for r in results]
    base = results[0]["metrics"][mode]["per_class"]
    head = ["label", "train docs", "eval docs"] + [f"R {n}" for n in names]
    rows = []
    for j, pc in enumerate(base):
        vals = [r["metrics"][mode]["per_class"][j]["recall"] if pc["eval_docs"] else None for r in results]
        rows.append([pc["label"], str(pc["train_docs"]), str(pc["eval_docs"])] + [fmt(v) for v in vals])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    return "\n".join("\t".join(r) for r in [head] + rows)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_recall_vs_frequency(results, mode, path, boundaries=(35, 8)):
    """Per-label recall against training documents (log x), one series per loss."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = "os^vD<>pP*X"
    for i, r in enumerate(results):
        pcs = [p for p in r["metrics"][mode]["per_class"] if p["eval_docs"] > 0]
        x = np.array([max(p["train_docs"], 1) for p in pcs], float)
        y = np.array([p["recall"] for p in pcs])
        jitter = np.exp(0.04 * (i - (len(results) - 1) / 2))
        ax.scatter(x * jitter, y, s=18, alpha=0.75, marker=markers[i % len(markers)], label=r["name"])
    for b in boundaries:
        ax.axvline(b, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("training documents of the label (log scale)")
    ax.set_ylabel(f"recall on the evaluation split ({mode} threshold)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Per-label recall against label frequency (dashed: tail | medium | head)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pr_curves(curves, path):
    """``curves``: {label: {"train_docs": n, "group": g, "losses": {name: (precision, recall)}}}."""
    plt = _plt()
    n = max(len(curves), 1)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, (label, c) in zip(axes.flat, curves.items()):
        for name, (p, r) in c["losses"].items():
            ax.plot(r, p, lw=1.4, label=name, drawstyle="steps-post")
        ax.set_title(f"{label} ({c['group']}, {c['train_docs']} training docs)", fontsize=9)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle("Precision-recall curves on the evaluation split", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- seeds
def _tree(values, fn, equal):
    """``fn`` over the numbers at the same place of equally shaped dicts/lists (``equal(x)`` where all
    of them are ``x``, so counts stay integers); other leaves from the first."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _tree([v[k] if isinstance(v, dict) and k in v else None for v in values], fn, equal)
                for k in first}
    if isinstance(first, list):
        if all(isinstance(v, list) and len(v) == len(first) for v in values):
            return [_tree([v[i] for v in values], fn, equal) for i in range(len(first))]
        return first
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    if any(v is None or isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    if all(v == first for v in values):
        return equal(first)
    return fn(np.asarray(values, np.float64))


def aggregate(runs):
    """One loss over several seeds: ``metrics`` are the means, ``metrics_sd`` the standard deviations
    (``ddof=1``), ``seeds_results`` the per-seed summaries. A single run is returned as it is."""
    if len(runs) == 1:
        return {**runs[0], "metrics_sd": None}
    out = {k: v for k, v in runs[0].items() if k not in ("metrics", "thresholds", "train_seconds")}
    out["metrics"] = _tree([r["metrics"] for r in runs], lambda a: float(a.mean()), lambda x: x)
    out["metrics_sd"] = _tree([r["metrics"] for r in runs], lambda a: float(a.std(ddof=1)), lambda x: 0.0)
    out["train_seconds"] = float(np.sum([r["train_seconds"] for r in runs]))
    out["seeds"] = [r["settings"]["seed"] for r in runs]
    if runs[0].get("head") == "fused":  # top-k metrics, no thresholds
        out["per_seed"] = [{"seed": r["settings"]["seed"], "run_dir": r.get("run_dir"),
                            "selection": r.get("selection"), "p@1": r["metrics"].get("p@1"),
                            "psp@5": r["metrics"].get("psp@5")} for r in runs]
        return out
    out["thresholds"] = {"global": float(np.mean([r["thresholds"]["global"] for r in runs]))}
    out["per_seed"] = [{"seed": r["settings"]["seed"], "run_dir": r.get("run_dir"), "selection": r.get("selection"),
                        "micro_f1": _get(r["metrics"]["global"], "micro", "f1"),
                        "macro_f1": _get(r["metrics"]["global"], "macro", "f1")} for r in runs]
    return out


def chosen_epochs(result):
    """The chosen epoch(s) of a result as text: ``4`` or ``4/3/5`` over seeds."""
    sel = [p.get("selection") for p in result["per_seed"]] if result.get("per_seed") else [result.get("selection")]
    return "/".join(str(s["best_epoch"]) if s else "-" for s in sel)


def curve(result, key="val_macro_f1"):
    """The validation curve of the (first) run as text, the chosen epoch starred: ``41 46 48* 47``."""
    vals = result.get("history", {}).get(key, [])
    best = (result.get("selection") or {}).get("best_epoch")
    return " ".join(fmt(v, digits=0) + ("*" if i + 1 == best else "") for i, v in enumerate(vals)) or "-"


def summary_lines(result):
    lines = [f"Evaluated on the {result['eval_split']} split ({result['documents']['eval']} documents, "
             f"{result['labels']} labels); thresholds tuned on {result['documents']['validation']} "
             "held-out training documents."]
    lines.append(f"{'thresholds':<22}{'micro P':>8}{'micro R':>8}{'micro F1':>9}{'macro P':>8}{'macro R':>8}{'macro F1':>9}")
    names = {"at_0.5": "0.5", "global": f"global {result['thresholds']['global']:.2f}", "per_class": "per label"}
    for mode, label in names.items():
        m = result["metrics"][mode]
        lines.append(f"{label:<22}" + "".join(f"{fmt(m[a][b]) if m[a] else '-':>{w}}" for a in ("micro", "macro")
                                              for b, w in (("precision", 8), ("recall", 8), ("f1", 9))))
    g = result["metrics"]["global"]["groups"]
    lines.append("label groups (global threshold), macro recall / F1: " + "; ".join(
        f"{k} ({v['labels']}) {fmt(v['macro']['recall']) if v['macro'] else '-'} / "
        f"{fmt(v['macro']['f1']) if v['macro'] else '-'}" for k, v in g.items()))
    if result["unknown_eval_labels"]:
        lines.append(f"{sum(result['unknown_eval_labels'].values())} eval label occurrence(s) not in the label "
                     f"vocabulary were ignored: {sorted(result['unknown_eval_labels'])[:8]}")
    return lines


def xmc_summary_lines(result):
    """The summary of a fused-head run (or evaluation): P@k, nDCG@k, PSP@k and recall@5 by group."""
    m = result["metrics"]
    val = result["documents"].get("validation")
    lines = [f"Evaluated on the {result['eval_split']} split ({result['documents']['eval']} documents, "
             f"{result['labels']} labels) from the fused head's top 5 (no thresholds)"
             + (f"; best epoch chosen on {val} held-out training documents." if isinstance(val, int) else ".")]
    lines.append("  ".join(f"{k} {fmt(m.get(k))}" for k in ("p@1", "p@3", "p@5")) + "   "
                 + "  ".join(f"nDCG@{k} {fmt(m.get(f'ndcg@{k}'))}" for k in (1, 3, 5)) + "   "
                 + "  ".join(f"PSP@{k} {fmt(m.get(f'psp@{k}'))}" for k in (1, 3, 5)))
    r, n = m.get("recall@5", {}), m.get("pairs@5", {})
    lines.append("recall@5 (document, label pairs), by label group: " + "; ".join(
        f"{g} {fmt(r.get(g))} ({n.get(g, 0)} pairs)" for g in ("all",) + GROUPS))
    if result.get("unknown_eval_labels"):
        lines.append(f"{sum(result['unknown_eval_labels'].values())} eval label occurrence(s) not in the label "
                     f"vocabulary were ignored: {sorted(result['unknown_eval_labels'])[:8]}")
    return lines
