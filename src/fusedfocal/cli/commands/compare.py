"""``fusedfocal compare``: the same model, data, seed and budget under several losses."""

from __future__ import annotations

import re
import time
from pathlib import Path


from fusedfocal.cli.stages import metrics as ev
from fusedfocal.cli.stages import load
from fusedfocal.cli.store import report, rundir, trust
from fusedfocal.cli.resolve import settings
from fusedfocal.cli.errors import CLIError, RunEnded, log
from fusedfocal.cli.stages.lossargs import build_loss, check_loss_name, loss_label, parse_loss_params, parse_value
from fusedfocal.cli.stages.prepare import prepare
from fusedfocal.cli.stages.runtime import make_strategy
from fusedfocal.cli.commands.train import check_head_early, diverged_info, ended, train_run

DEFAULT_LOSSES = "bce,focal,asl,db,la"
MODE_TEXT = {"global": "one global threshold tuned for micro-F1 on the validation split",
             "per_class": "per-label thresholds tuned on the validation split",
             "0.5": "threshold 0.5"}


def parse_loss_specs(specs):
    """``['bce,focal:gamma=2,alpha=0.25']`` -> ``[('bce', {}), ('focal', {'gamma': 2, 'alpha': 0.25})]``.

    A comma-separated item with ``=`` and no ``:`` is one more parameter of the loss before it.
    """
    out = []
    for spec in specs or [DEFAULT_LOSSES]:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if ":" in item:
                name, _, first = item.partition(":")
                out.append((name.strip(), {}))
                item = first
            elif "=" not in item:
                out.append((item, {}))
                continue
            if not out:
                raise CLIError("--losses", f"expected a loss name before the parameter; received {item!r}")
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CLIError("--losses", f"expected NAME or NAME:KEY=VALUE,KEY=VALUE; received {item!r}")
            try:
                out[-1][1][key.strip().replace("-", "_")] = parse_value(value)
            except ValueError:
                raise CLIError("--losses", f"expected a number, 'none' or floats joined by '/'; received {item!r}")
    if not out:
        raise CLIError("--losses", "expected at least one loss; received none")
    return out


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


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


def cmd_compare(args):
    from fusedfocal.cli.stages import fused

    head = getattr(args, "head", None)
    specs = parse_loss_specs(args.losses or ([fused.DEFAULT_LOSSES] if head == "fused" else None))
    shared = parse_loss_params(args)  # {param: (value, flag)}: each reported under its own flag
    for name, _ in specs:
        check_loss_name(name, "--losses")
        if head == "fused":  # before minutes of data preparation
            fused.check_loss(name, "--losses")
    if head in ("dense", "fused"):
        fused.resolve_select(getattr(args, "select", None), head)
    make_strategy(args.strategy)
    out = Path(args.out)
    rundir.precheck(out, rundir.COMPARE_FILES, resume=args.resume, overwrite=args.overwrite,
                    finished=rundir.COMPARISON_JSON)
    check_head_early(args, out)  # --head-optimizer / --head-dtype: before minutes of data preparation
    t_start = time.time()
    seeds = list(args.seeds or [args.seed])
    preps = {}
    for seed in seeds:  # each seed has its own validation split; the vocabulary and settings are chosen once
        first = preps[seeds[0]] if preps else None
        args_s = _with_seed(args, seed)
        preps[seed] = prepare(args_s, wordpiece=first.pipeline.wordpiece_vocab if first else None,
                              warn_truncation=first is None)
        if first is None:  # the settings chosen from the data hold for every seed
            from fusedfocal.cli.stages.encoder import SETTINGS as encoder_settings

            for name in settings.RESOLVED + settings.HEAD_SETTINGS + encoder_settings:  # --encoder's too
                setattr(args, name, getattr(args_s, name))
    prep = preps[seeds[0]]
    if args.resume and not set(prep.settings) - set(settings.HEAD_SETTINGS):
        # the stored settings (a comparison older than the head flags chose only those now)
        prep.settings = {**settings.restored(out), **prep.settings}
    for p in preps.values():  # every seed's runs store the settings chosen once
        p.settings = prep.settings
    fused.resolve_select(getattr(args, "select", None), prep.head)
    if prep.head == "fused":  # a fused update (given, or chosen for bfloat16) needs one replica
        fused.check_head_flags(args, "fused", replicas=make_strategy(args.strategy).num_replicas_in_sync)
    if prep.head == "fused" and not args.losses:  # --head auto chose it: its default losses
        specs = parse_loss_specs([fused.DEFAULT_LOSSES])
    runs = []
    for name, params in specs:
        tagged = {**shared, **{k: (v, "--losses") for k, v in params.items()}}
        if prep.head == "fused":  # validate all first
            fused.head_kwargs(name, tagged, prep.fit_counts, prep.fit_docs, flag="--losses")
        else:
            build_loss(name, tagged, prep.fit_counts, prep.fit_docs, flag="--losses")
        runs.append((name, tagged))
    labels_text = (f"{prep.pipeline.num_labels} labels ({prep.head} head); {prep.fit_docs} training documents, "
                   f"{len(prep.val[0])} held out for "
                   + ("epoch selection" if prep.head == "fused" else "thresholds") + f", {len(prep.test[0])} {prep.eval_split} documents")
    with rundir.RunLock(out):
        rundir.guard(out, rundir.COMPARE_FILES, resume=args.resume, overwrite=args.overwrite,
                     finished=rundir.COMPARISON_JSON)
        if not (args.resume and (out / rundir.CONFIG_FILE).exists()):
            rundir.write_compare_config(out, args, prep.settings)
        per_loss = []
        k, total = 0, len(runs) * len(seeds)
        for name, tagged in runs:
            label = loss_label(name, tagged)
            per_seed = []
            for seed in seeds:
                k += 1
                run_dir = out / rundir.RUNS_DIR / (_slug(label) + (f"-seed{seed}" if args.seeds else ""))
                title = (f"[{k}/{total}] {args.model} + {label}" + (f", seed {seed}" if args.seeds else "")
                         + f": at most {args.epochs} epoch(s) on {labels_text}")
                args_s, prep_s = _with_seed(args, seed), preps[seed]
                with rundir.RunLock(run_dir):
                    info = diverged_info(run_dir) if args.resume else None
                    if info is not None and not (run_dir / rundir.METRICS_FILE).exists():
                        log(f"{title}: diverged already in {run_dir} (no finite epoch), kept as diverged")
                        per_seed.append({"name": label, "loss": name, "diverged": info, "metrics": None})
                    elif args.resume and rundir.is_finished(run_dir):
                        log(f"{title}: finished already in {run_dir}, kept")
                        per_seed.append(load.finished_result(run_dir, prep_s))
                    else:
                        resume = args.resume and (run_dir / rundir.CONFIG_FILE).exists()
                        try:
                            per_seed.append(train_run(args_s, prep_s, name, tagged, run_dir, resume=resume,
                                                      title=title + (" [resumed]" if resume else "")))
                        except RunEnded as e:
                            raise ended(e, run_dir, f"fusedfocal compare --resume --out {out}")
                if per_seed[-1].get("diverged"):
                    d = per_seed[-1]["diverged"]
                    log(f"{title}: diverged in epoch {d['epoch']}, batch {d['batch']} ({d.get('value')} "
                        f"{d.get('what', 'training loss')}); "
                        + (f"kept epoch {d['kept_epoch']}" if d.get("kept_epoch") else "no finite epoch")
                        + "; going on with the next loss")
                per_seed[-1]["run_dir"] = str(run_dir)
            per_loss.append(per_seed)
        results, diverged = [], []
        for per_seed in per_loss:
            ok = [r for r in per_seed if r.get("metrics") is not None]
            if ok:
                results.append(report.aggregate(ok))
                marks = [diverged_mark(r["diverged"]) for r in per_seed if r.get("diverged")]
                if marks:  # the table marks it: diverged, with its last finite epoch
                    results[-1]["name"] += f" [{'; '.join(marks)}]"
                    results[-1]["diverged"] = [r.get("diverged") for r in per_seed]
            else:
                diverged.append({"name": per_seed[0]["name"], "loss": per_seed[0]["loss"],
                                 "diverged": [r["diverged"] for r in per_seed],
                                 "run_dirs": [r["run_dir"] for r in per_seed]})
        wall = time.time() - t_start
        write_comparison(args, prep, results, out, wall, labels_text, diverged)


def diverged_mark(info):
    """``diverged e3 b5, last finite e2`` (the kept epoch is in the table's epoch column)."""
    return f"diverged e{info['epoch']} b{info['batch']}, last finite e{info.get('last_finite_epoch', 0)}"


def _with_seed(args, seed):
    import argparse

    return argparse.Namespace(**{**vars(args), "seed": seed})


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


def write_comparison(args, prep, results, out, wall, labels_text, diverged=()):
    """``comparison.md``, ``comparison.json`` and the plots. ``diverged``: the losses that have no
    result (every seed diverged before an epoch finished); they are listed, not tabulated."""
    diverged_md = (["## Diverged", ""] + _diverged_lines(diverged) + [""]) if diverged else []
    if not results:  # every loss diverged: no table, no plots
        out.mkdir(parents=True, exist_ok=True)
        md = [f"# Loss comparison: {args.model} model, at most {args.epochs} epoch(s)", "",
              f"{labels_text}. Every loss diverged; there is nothing to compare.", ""] + diverged_md
        rundir.write_text(out / rundir.COMPARISON_MD, "\n".join(md))
        report.write_json(out / rundir.COMPARISON_JSON, {
            "title": md[0][2:], "data": prep.description, "eval_split": prep.eval_split, "results": [],
            "diverged": list(diverged), "wall_seconds": round(wall, 1)})
        print("\n".join(md))
        return
    if prep.head == "fused":
        return write_fused_comparison(args, prep, results, out, wall, labels_text, diverged, diverged_md)
    mode = args.threshold_mode
    groups, rule = ev.resolve_groups(args.groups, prep.pipeline.label_vocab.counts)
    index = ev.label_groups(prep.pipeline.label_vocab.counts, groups)  # label indices per group
    counts = {g: len(ix) for g, ix in index.items()}
    group_text = (f"{rule}: head >= {groups[0]} training docs ({counts['head']} labels), medium {groups[1] + 1}-"
                  f"{groups[0] - 1} ({counts['medium']}), tail <= {groups[1]} ({counts['tail']})")
    seeds = list(args.seeds or [args.seed])
    select = getattr(args, "select", None) or "macro_f1"
    seed_text = (f"seeds {','.join(map(str, seeds))} (mean±sd)" if args.seeds else f"seed {args.seed}")
    title = (f"Loss comparison: {args.model} model, at most {args.epochs} epoch(s) (kept: the best by validation "
             f"{select}, patience {getattr(args, 'patience', 3)}), {seed_text}, trained on {prep.description}")
    eval_text = (f"Metrics in % on the {prep.eval_split} split at {MODE_TEXT[mode]}"
                 + (" (no --eval given: the validation split is also the evaluation split, so these numbers "
                    "are optimistic)" if prep.eval_split == "validation" else ""))
    empty = [g for g, n in counts.items() if n == 0]
    note_empty = (f"Group(s) {', '.join(empty)} have no labels with these boundaries (--groups "
                  f"{groups[0]},{groups[1]}), shown as '-'." if empty else "")
    if args.seeds:
        note_empty += (" A best value is marked wherever a mean is within one standard deviation of the best "
                       "mean (a tie); per-label recall and the plots are the means / the first seed's.")
    table = report.render_table(results, mode)
    md_table = report.render_table(results, mode, markdown=True)
    f1_rows = []
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
        f1_rows.append(cells)
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

    legend = report.column_legend()
    warnings = trust.comparison_warnings(results, max_epochs=args.epochs)
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
    print("micro-F1 / macro-F1 at 0.5 | global tuned | per-label tuned thresholds:")
    for c in f1_rows:
        print(f"  {c[0]:<28} {c[1]:>5} / {c[2]:<5} | {c[3]:>5} / {c[4]:<5} | {c[5]:>5} / {c[6]:<5} "
              f"| epoch {c[9]}, val macro-F1 {c[10]}")
    print()
    if diverged:
        print("Diverged (not in the table):")
        print("\n".join(_diverged_lines(diverged)))
        print()
    print(f"Wrote {out}/comparison.md, comparison.json, {recall_png.name}, {pr_png.name} and one run folder "
          f"per loss under {out}/runs/ in {wall:.0f}s.")


def write_fused_comparison(args, prep, results, out, wall, labels_text, diverged, diverged_md):
    """``comparison.md`` and ``comparison.json`` of a fused-head comparison: P@k, nDCG@k, PSP@k and
    recall@5 by label group from each model's top 5 (no thresholds, so no F1 and no PR curves)."""
    from fusedfocal.cli.stages import fused

    groups, rule = ev.resolve_groups(args.groups, prep.pipeline.label_vocab.counts)
    counts = {g: len(ix) for g, ix in ev.label_groups(prep.pipeline.label_vocab.counts, groups).items()}
    group_text = (f"{rule}: head >= {groups[0]} training docs ({counts['head']} labels), medium {groups[1] + 1}-"
                  f"{groups[0] - 1} ({counts['medium']}), tail <= {groups[1]} ({counts['tail']})")
    seeds = list(args.seeds or [args.seed])
    select = fused.resolve_select(getattr(args, "select", None), "fused")
    seed_text = (f"seeds {','.join(map(str, seeds))} (mean±sd)" if args.seeds else f"seed {args.seed}")
    title = (f"Loss comparison: {args.model} model with the fused head, at most {args.epochs} epoch(s) (kept: the "
             f"best by validation {select}, patience {getattr(args, 'patience', 3)}), {seed_text}, trained on "
             f"{prep.description}")
    eval_text = (f"Metrics in % on the {prep.eval_split} split from each model's top 5 (PSP: propensities of the "
                 "training label counts)" + (" (no --eval given: the validation split is also the evaluation "
                                              "split)" if prep.eval_split == "validation" else ""))
    cols = report.XMC_COLUMNS
    table = report.render_table(results, None, columns=cols)
    md_table = report.render_table(results, None, markdown=True, columns=cols)
    legend = report.column_legend(cols)
    warnings = trust.comparison_warnings(results, max_epochs=args.epochs, fused=True)
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
