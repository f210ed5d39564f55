"""``fusedfocal evaluate`` and ``fusedfocal predict``: load a run folder and use its stored thresholds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fusedfocal.cli.stages import load
from fusedfocal.cli.store import rundir
from fusedfocal.cli.stages.encoder import check_run_encoder
from fusedfocal.cli.errors import CLIError


def cmd_evaluate(args):
    from fusedfocal.cli.stages import metrics as ev
    from fusedfocal.cli.store import report
    from fusedfocal.cli.stages.models import predict_scores
    from fusedfocal.cli.stages.prepare import read_labelled

    model, pipe, thresholds, cfg = load.load_run(args.run_dir)
    check_run_encoder(getattr(args, "encoder", None), cfg, args.run_dir)
    stored = cfg["args"]
    for key in ("text_field", "labels_field", "label_separator", "split_string_labels"):
        if getattr(args, key) is None:
            setattr(args, key, stored.get(key))
    texts, label_lists = read_labelled(args.data, args, "--data")
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
    groups, _ = ev.resolve_groups(args.groups or stored.get("groups"), labels.counts)
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
    from fusedfocal.cli.stages import metrics as ev

    labels = pipe.label_vocab
    true_ids, unknown = fused.label_ids(labels, label_lists)
    if unknown and not any(len(t) for t in true_ids):
        raise CLIError("--data", (
            f"the label vocabulary of this data does not match the run's: expected labels such as "
            f"{labels.labels[:5]} ({len(labels)} in {Path(args.run_dir) / rundir.LABEL_VOCAB_FILE}); received "
            f"{len(unknown)} label name(s), none of them known, e.g. {sorted(unknown)[:5]}"))
    groups, rule = ev.resolve_groups(args.groups or stored.get("groups"), labels.counts)
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


def _read_texts(path, field):
    p = Path(path)
    if p.is_dir():
        raise CLIError("--file", f"expected a file of texts; received {path!r}, which is a folder")
    if not p.exists():
        raise CLIError("--file", f"expected an existing file; received {path!r}")
    opener = __import__("gzip").open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            # Line numbers count every line, blank ones included (blank lines are skipped, not renumbered).
            lines = [(i, line.rstrip("\n")) for i, line in enumerate(f, 1) if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CLIError("--file", f"expected a readable UTF-8 text file (optionally .gz); received {path!r}, "
                                 f"which could not be read ({type(e).__name__}: {e})")
    texts = []
    for i, line in lines:
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CLIError("--file", f"{path}:{i}: expected a JSON object or plain text; received malformed JSON ({e.msg})")
            if field not in obj:
                raise CLIError("--file", f"{path}:{i}: expected a field {field!r}; received keys {sorted(obj)}")
            if not str(obj[field]).strip():
                raise CLIError("--file", f"{path}:{i}: expected a non-empty text in field {field!r}; received "
                                         f"{obj[field]!r}")
            texts.append(str(obj[field]))
        else:
            texts.append(line)
    return texts


def cmd_predict(args):
    from fusedfocal.cli.stages.models import predict_scores

    model, pipe, thresholds, cfg = load.load_run(args.run_dir)
    check_run_encoder(getattr(args, "encoder", None), cfg, args.run_dir)
    texts = list(args.texts)
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise CLIError("TEXT", f"expected a non-empty text; received {text!r} as text {i} of {len(texts)}")
    if args.file:
        texts += _read_texts(args.file, args.text_field or cfg["args"].get("text_field") or "text")
    if not texts:
        raise CLIError("TEXT", "expected at least one text (as arguments or with --file); received none")
    names = pipe.label_vocab.labels
    if thresholds is None:  # a fused-head run: its top-k, never a threshold
        _predict_fused(args, model, pipe, texts, names)
        return
    scores = predict_scores(model, pipe, texts)
    th = np.full(len(names), args.threshold) if args.threshold is not None else np.asarray(thresholds["per_class_vector"])
    for text, row in zip(texts, scores):
        if args.top_k:
            idx = np.argsort(-row, kind="stable")[: args.top_k]
        else:
            idx = [j for j in np.argsort(-row, kind="stable") if row[j] >= th[j]]
        picked = [(names[j], float(row[j])) for j in idx]
        if args.json:
            print(json.dumps({"text": text, "labels": [{"label": n, "score": round(s, 4)} for n, s in picked]}))
        else:
            short = text if len(text) <= 70 else text[:67] + "..."
            print(f"{short!r}")
            print("   " + (", ".join(f"{n} {s:.3f}" for n, s in picked) if picked else "(no label above its threshold)"))
    sys.stdout.flush()


def _predict_fused(args, model, pipe, texts, names):
    from fusedfocal.cli.stages import fused
    from fusedfocal.cli.errors import log

    k = min(args.top_k or fused.K, len(names))
    if args.threshold is not None:
        log(f"note: --threshold {args.threshold} is ignored: {args.run_dir} has the fused head, which ranks the "
            f"labels without thresholds; printing the top {k} (--top-k K for more or fewer).")
    ids, scores = fused.predict_top_k(model, pipe, texts, k)
    for text, row_ids, row_scores in zip(texts, ids, scores):
        picked = [(names[j], float(s)) for j, s in zip(row_ids, row_scores) if j >= 0]
        if args.json:
            print(json.dumps({"text": text, "labels": [{"label": n, "score": round(s, 4)} for n, s in picked]}))
        else:
            short = text if len(text) <= 70 else text[:67] + "..."
            print(f"{short!r}")
            print("   " + ", ".join(f"{n} {s:.3f}" for n, s in picked))
    sys.stdout.flush()
