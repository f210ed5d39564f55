"""A comparison's report: ``comparison.md``, ``comparison.json``, the plots and the printed table.

:class:`Facts` is what the report says of the comparison (the command builds it from the spec).
"""

from __future__ import annotations

from dataclasses import dataclass

from fusedfocal.cli import metrics as ev
from fusedfocal.cli.store import report, rundir, trust

__all__ = ["Facts", "MODE_TEXT", "write_comparison", "write_fused_comparison", "diverged_mark"]

MODE_TEXT = {"global": "one global threshold tuned for micro-F1 on the validation split",
             "per_class": "per-label thresholds tuned on the validation split",
             "0.5": "threshold 0.5"}


@dataclass(frozen=True)
class Facts:
    """What the report states: the model, the epoch budget, the selection rule (resolved on the head)
    and patience, the
    seeds (``seeded``: ``--seeds`` given, so means and sds), the threshold mode and label groups."""

    model: str
    epochs: int
    select: str | None
    patience: int | None
    seeds: tuple
    seeded: bool
    threshold_mode: str
    groups: object


def _pr_labels(result, groups, k=2):
    """``k`` head labels (most frequent) and ``k`` labels of the rarest non-empty group (those with
    the most evaluation documents, so their curves have more than one point)."""
    pcs = result["metrics"]["global"]["per_class"]
    with_pos = [j for j, p in enumerate(pcs) if p["eval_docs"] > 0]
    head = sorted(with_pos, key=lambda j: -pcs[j]["train_docs"])[:k]
    for g in ("tail", "medium", "head"):
        pool = [j for j in groups[g] if j in with_pos and j not in head]
        if pool:
            return head + sorted(pool, key=lambda j: (-pcs[j]["eval_docs"], pcs[j]["train_docs"]))[:k]
    return head


def diverged_mark(info):
    """``diverged e3 b5, last finite e2`` (the kept epoch is in the table's epoch column)."""
    return f"diverged e{info['epoch']} b{info['batch']}, last finite e{info.get('last_finite_epoch', 0)}"


def _diverged_lines(diverged):
    return [f"- {d['name']}: diverged before any epoch finished with a finite loss ("
            + "; ".join(f"epoch {i['epoch']}, batch {i['batch']}: {i.get('what', 'training loss')} {i.get('value')}"
                        for i in d["diverged"]) + "); no model, not in the table. Runs: "
            + ", ".join(f"`{p}`" for p in d["run_dirs"]) for d in diverged]


def _warning_md(warnings):
    return (["**Can this comparison be trusted?**", ""] + [f"- {w}" for w in warnings] + [""]) if warnings else []


def _print_table(title, labels_text, eval_text, group_text, table, warnings, legend):
    """The printed head of a comparison: what was compared, the table, the trust notes, the legend."""
    print()
    print(title)
    print(f"{labels_text}.")
    print(f"{eval_text}; '*' marks the best value per column.")
    print(f"Label groups by training documents: {group_text}".rstrip())
    print()
    print(table)
    print()
    for w in warnings:
        print(f"WARNING: {w}")
    if warnings:
        print()
    print("Columns:")
    print(legend)
    print()


def _heading(facts, prep, head_text):
    """``(groups, rule, index, counts, group_text, seeds, title)``: the label groups (boundaries, the
    rule, label indices and sizes per group, as text) and the comparison's title."""
    groups, rule = ev.resolve_groups(facts.groups, prep.pipeline.label_vocab.counts)
    index = ev.label_groups(prep.pipeline.label_vocab.counts, groups)  # label indices per group
    counts = {g: len(ix) for g, ix in index.items()}
    group_text = (f"{rule}: head >= {groups[0]} training docs ({counts['head']} labels), medium {groups[1] + 1}-"
                  f"{groups[0] - 1} ({counts['medium']}), tail <= {groups[1]} ({counts['tail']})")
    seeds = list(facts.seeds)
    seed_text = (f"seeds {','.join(map(str, seeds))} (mean±sd)" if facts.seeded else f"seed {seeds[0]}")
    title = (f"Loss comparison: {facts.model} model{head_text}, at most {facts.epochs} epoch(s) (kept: the best by "
             f"validation {facts.select}, patience {facts.patience}), {seed_text}, trained on {prep.description}")
    return groups, rule, index, counts, group_text, seeds, title


def write_comparison(facts, prep, results, out, wall, labels_text, diverged=()):
    """``comparison.md``, ``comparison.json`` and the plots. ``diverged``: the losses that have no
    result (every seed diverged before an epoch finished); they are listed, not tabulated."""
    diverged_md = (["## Diverged", ""] + _diverged_lines(diverged) + [""]) if diverged else []
    if not results:  # every loss diverged: no table, no plots
        return _write_all_diverged(facts, prep, out, wall, labels_text, diverged, diverged_md)
    if prep.head == "fused":
        return write_fused_comparison(facts, prep, results, out, wall, labels_text, diverged, diverged_md)
    mode = facts.threshold_mode
    groups, rule, index, counts, group_text, seeds, title = _heading(facts, prep, "")
    eval_text = (f"Metrics in % on the {prep.eval_split} split at {MODE_TEXT[mode]}"
                 + (" (no --eval given: the validation split is also the evaluation split, so these numbers "
                    "are optimistic)" if prep.eval_split == "validation" else ""))
    empty = [g for g, n in counts.items() if n == 0]
    note_empty = (f"Group(s) {', '.join(empty)} have no labels with these boundaries (--groups "
                  f"{groups[0]},{groups[1]}), shown as '-'." if empty else "")
    if facts.seeded:
        note_empty += (" A best value is marked wherever a mean is within one standard deviation of the best "
                       "mean (a tie); per-label recall and the plots are the means / the first seed's.")
    table = report.render_table(results, mode)
    md_table = report.render_table(results, mode, markdown=True)
    f1_rows = _f1_rows(results)
    recall_png, pr_png = _plots(results, prep, out, mode, groups, index)

    legend = report.column_legend()
    warnings = trust.comparison_warnings(results, max_epochs=facts.epochs)
    md = [f"# {title}", "", f"{labels_text}. {eval_text}. Best value per column in bold. "
          f"Label groups by training documents: {group_text}. {note_empty}", "", md_table, "",
          *_warning_md(warnings), "Columns:", "", "```", legend, "```", "",
          "## Micro-F1 / macro-F1 at each threshold choice", "",
          "| loss | miF1 @0.5 | maF1 @0.5 | miF1 global | maF1 global | miF1 per-label | maF1 per-label | "
          "global threshold | train s | chosen epoch | validation macro-F1 by epoch (first seed; * kept) |",
          "| --- |" + " ---: |" * 10]
    md += ["| " + " | ".join(c) + " |" for c in f1_rows]
    md += ["", "## Per-label recall", "", report.per_class_recall_table(results, mode), "",
           f"![per-label recall against frequency]({recall_png.name})", "",
           f"![precision-recall curves]({pr_png.name})", "",
           f"Wall time: {wall:.0f}s. Runs (model.keras, thresholds.json, metrics.json, logs/): "
           + ", ".join(f"`{r['run_dir']}`" for r in results), ""] + diverged_md
    rundir.write_text(out / rundir.COMPARISON_MD, "\n".join(md))
    payload = {"title": title, "data": prep.description, "eval_split": prep.eval_split, "threshold_mode": mode,
               "groups": {"boundaries": list(groups), "rule": rule, **counts}, "seeds": seeds,
               "wall_seconds": round(wall, 1),
               "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
               "diverged": list(diverged), "warnings": warnings}
    report.write_json(out / rundir.COMPARISON_JSON, payload)

    _print_table(title, labels_text, eval_text, f"{group_text}. {note_empty}", table, warnings, legend)
    _print_f1_rows(f1_rows, diverged)
    print(f"Wrote {out}/comparison.md, comparison.json, {recall_png.name}, {pr_png.name} and one run folder "
          f"per loss under {out}/runs/ in {wall:.0f}s.")


def _write_all_diverged(facts, prep, out, wall, labels_text, diverged, diverged_md):
    """Every loss diverged: no table and no plots, the list of what diverged."""
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Loss comparison: {facts.model} model, at most {facts.epochs} epoch(s)", "",
          f"{labels_text}. Every loss diverged; there is nothing to compare.", ""] + diverged_md
    rundir.write_text(out / rundir.COMPARISON_MD, "\n".join(md))
    report.write_json(out / rundir.COMPARISON_JSON, {
        "title": md[0][2:], "data": prep.description, "eval_split": prep.eval_split, "results": [],
        "diverged": list(diverged), "wall_seconds": round(wall, 1)})
    print("\n".join(md))


def _f1_rows(results):
    """Per loss: micro/macro-F1 at 0.5, global and per-label thresholds, the global threshold, the
    training seconds, the chosen epoch and the validation curve."""
    rows = []
    for r in results:
        cells = [r["name"]]
        for m in ("at_0.5", "global", "per_class"):
            mm = r["metrics"][m]
            cells += [report.fmt(mm["micro"]["f1"] if mm["micro"] else None),
                      report.fmt(mm["macro"]["f1"] if mm["macro"] else None)]
        cells.append(f"{r['thresholds']['global']:.2f}")
        cells.append(f"{r['train_seconds']:.0f}")
        cells.append(report.chosen_epochs(r))
        cells.append(report.curve(r))
        rows.append(cells)
    return rows


def _plots(results, prep, out, mode, groups, index):
    """The per-label recall and precision-recall plots, each written atomically; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    recall_png = out / rundir.RECALL_PNG
    with rundir.atomic_path(recall_png) as tmp:
        report.plot_recall_vs_frequency(results, mode, tmp, groups)
    curves = {}
    names = prep.pipeline.label_vocab.labels
    pcs = results[0]["metrics"]["global"]["per_class"]
    gmap = {j: g for g, ix in index.items() for j in ix}
    for j in _pr_labels(results[0], index):
        curves[names[j]] = {"train_docs": pcs[j]["train_docs"], "group": gmap[j], "losses": {
            r["name"]: ev.pr_curve(r["_scores"][0][:, j], r["_scores"][1][:, j]) for r in results}}
    pr_png = out / rundir.PR_PNG
    with rundir.atomic_path(pr_png) as tmp:
        report.plot_pr_curves(curves, tmp)
    return recall_png, pr_png


def _print_f1_rows(f1_rows, diverged):
    print("micro-F1 / macro-F1 at 0.5 | global tuned | per-label tuned thresholds:")
    for c in f1_rows:
        print(f"  {c[0]:<28} {c[1]:>5} / {c[2]:<5} | {c[3]:>5} / {c[4]:<5} | {c[5]:>5} / {c[6]:<5} "
              f"| epoch {c[9]}, val macro-F1 {c[10]}")
    print()
    if diverged:
        print("Diverged (not in the table):")
        print("\n".join(_diverged_lines(diverged)))
        print()


def write_fused_comparison(facts, prep, results, out, wall, labels_text, diverged, diverged_md):
    """``comparison.md`` and ``comparison.json`` of a fused-head comparison: P@k, nDCG@k, PSP@k and
    recall@5 by label group from each model's top 5 (no thresholds, so no F1 and no PR curves)."""
    groups, rule, _, counts, group_text, seeds, title = _heading(facts, prep, " with the fused head")
    eval_text = (f"Metrics in % on the {prep.eval_split} split from each model's top 5 (PSP: propensities of the "
                 "training label counts)" + (" (no --eval given: the validation split is also the evaluation "
                                              "split)" if prep.eval_split == "validation" else ""))
    cols = report.XMC_COLUMNS
    table = report.render_table(results, None, columns=cols)
    md_table = report.render_table(results, None, markdown=True, columns=cols)
    legend = report.column_legend(cols)
    warnings = trust.comparison_warnings(results, max_epochs=facts.epochs, fused=True)
    timing = [f"- {r['name']}: {r['train_seconds']:.0f}s training, kept epoch {report.chosen_epochs(r)}, "
              f"validation P@1 by epoch {report.curve(r, 'val_p@1')}" for r in results]
    md = [f"# {title}", "", f"{labels_text}. {eval_text}. Best value per column in bold. Label groups by "
          f"training documents: {group_text}.", "", md_table, "", *_warning_md(warnings), "Columns:", "", "```", legend, "```", "",
          *timing, "", f"Wall time: {wall:.0f}s. Runs (model.keras, metrics.json, logs/): "
          + ", ".join(f"`{r['run_dir']}`" for r in results), ""] + list(diverged_md)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_text(out / rundir.COMPARISON_MD, "\n".join(md))
    report.write_json(out / rundir.COMPARISON_JSON, {
        "title": title, "head": "fused", "data": prep.description, "eval_split": prep.eval_split,
        "groups": {"boundaries": list(groups), "rule": rule, **counts}, "seeds": seeds,
        "wall_seconds": round(wall, 1),
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "diverged": list(diverged), "warnings": warnings})
    _print_table(title, labels_text, eval_text, f"{group_text}.", table, warnings, legend)
    print("\n".join(timing))
    print()
    if diverged:
        print("Diverged (not in the table):")
        print("\n".join(_diverged_lines(diverged)))
        print()
    print(f"Wrote {out}/comparison.md, comparison.json and one run folder per loss under {out}/runs/ in {wall:.0f}s.")
