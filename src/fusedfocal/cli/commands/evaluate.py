"""``fusedfocal evaluate``: a run folder's model on labelled data, with its stored thresholds (never re-tuned)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fusedfocal.cli import spec as specs
from fusedfocal.cli.stages import load
from fusedfocal.cli.store import rundir
from fusedfocal.cli.stages.encoder import check_run_encoder
from fusedfocal.cli.errors import CLIError


def cmd_evaluate(args):
    from fusedfocal.cli import metrics as ev
    from fusedfocal.cli.store import report
    from fusedfocal.cli.stages.models import predict_scores
    from fusedfocal.cli.stages.prepare import read_labelled

    model, pipe, thresholds, cfg = load.load_run(args.run_dir)
    stored = specs.load(cfg)  # the run's spec (a version-1 config.json migrated)
    check_run_encoder(args.encoder, stored.model.encoder, args.run_dir)
    fields = dataclasses.replace(stored.data, **{k: getattr(args, k) for k in (
        "text_field", "labels_field", "label_separator", "split_string_labels") if getattr(args, k) is not None})
    texts, label_lists = read_labelled(args.data, fields, "--data")
    labels = pipe.label_vocab
    if thresholds is None:  # a fused-head run: top-k metrics, never [N, C]
        return _evaluate_fused(args, model, pipe, stored, texts, label_lists)
    y, unknown = labels.encode(label_lists)
    known = sum(1 for ls in label_lists for n in ls if n in labels)
    if unknown and known == 0:
        raise CLIError("--data", (
            f"the label vocabulary of this data does not match the run's: expected labels such as "
            f"{labels.labels[:5]} ({len(labels)} in {Path(args.run_dir) / rundir.LABEL_VOCAB_FILE}); received "
            f"{len(unknown)} label name(s), none of them known, e.g. {sorted(unknown)[:5]}"))
    groups, _ = ev.resolve_groups(args.groups or stored.evaluation.groups, labels.counts)
    scores = predict_scores(model, pipe, texts)
    metrics = ev.all_metrics(scores, y, thresholds, train_counts=labels.counts, label_names=labels.labels,
                             boundaries=groups)
    result = {"run": str(args.run_dir), "data": [str(p) for p in args.data], "eval_split": "given data",
              "documents": {"eval": len(texts), "validation": "-"}, "labels": len(labels),
              "unknown_eval_labels": dict(unknown),
              "unknown_eval_label_occurrences": int(sum(unknown.values())),
              "thresholds": {"global": thresholds["global"], "source": str(Path(args.run_dir) / rundir.THRESHOLDS_FILE)},
              "metrics": metrics}
    out = Path(args.output) if args.output else Path(args.run_dir) / rundir.EVALUATION_FILE
    report.write_json(out, result)
    lines = report.summary_lines({**result, "documents": {"eval": len(texts), "validation": "stored"}})
    lines[0] = (f"Evaluated {args.run_dir} on {' '.join(map(str, args.data))} ({len(texts)} documents, "
                f"{len(labels)} labels) with the run's stored thresholds.")
    if not unknown:
        lines.append("Every eval label is in the run's label vocabulary.")
    for line in lines:
        print(line)
    print(f"Wrote {out}")


def _evaluate_fused(args, model, pipe, stored, texts, label_lists):
    """``evaluate`` of a fused-head run: P@k, nDCG@k, PSP@k and recall@5 by label group from the
    head's top 5, with the propensities and label groups of the run's training counts."""
    from fusedfocal.cli.stages import fused
    from fusedfocal.cli.store import report
    from fusedfocal.cli import metrics as ev

    labels = pipe.label_vocab
    true_ids, unknown = fused.label_ids(labels, label_lists)
    if unknown and not any(len(t) for t in true_ids):
        raise CLIError("--data", (
            f"the label vocabulary of this data does not match the run's: expected labels such as "
            f"{labels.labels[:5]} ({len(labels)} in {Path(args.run_dir) / rundir.LABEL_VOCAB_FILE}); received "
            f"{len(unknown)} label name(s), none of them known, e.g. {sorted(unknown)[:5]}"))
    groups, rule = ev.resolve_groups(args.groups or stored.evaluation.groups, labels.counts)
    top_ids, _ = fused.predict_top_k(model, pipe, texts)
    metrics = fused.top_k_metrics(top_ids, true_ids, train_counts=labels.counts, train_docs=labels.num_docs,
                                  boundaries=groups)
    result = {"run": str(args.run_dir), "head": "fused", "data": [str(p) for p in args.data],
              "eval_split": "given data", "documents": {"eval": len(texts), "validation": "-"}, "labels": len(labels),
              "groups": {"boundaries": list(groups), "rule": rule},
              "unknown_eval_labels": dict(unknown), "unknown_eval_label_occurrences": int(sum(unknown.values())),
              "metrics": metrics}
    out = Path(args.output) if args.output else Path(args.run_dir) / rundir.EVALUATION_FILE
    report.write_json(out, result)
    lines = report.xmc_summary_lines(result)
    lines[0] = (f"Evaluated {args.run_dir} on {' '.join(map(str, args.data))} ({len(texts)} documents, "
                f"{len(labels)} labels) from the fused head's top 5 (no thresholds).")
    for line in lines:
        print(line)
    print(f"Wrote {out}")


