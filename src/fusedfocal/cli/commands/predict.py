"""``fusedfocal predict``: a run folder's labels for texts, above its stored thresholds (or its top-k)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fusedfocal.cli import spec as specs
from fusedfocal.cli.errors import CLIError
from fusedfocal.cli.stages import load
from fusedfocal.cli.stages.encoder import check_run_encoder

__all__ = ["cmd_predict"]


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
    stored = specs.load(cfg)  # the run's spec (a version-1 config.json migrated)
    check_run_encoder(args.encoder, stored.model.encoder, args.run_dir)
    texts = list(args.texts)
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise CLIError("TEXT", f"expected a non-empty text; received {text!r} as text {i} of {len(texts)}")
    if args.file:
        texts += _read_texts(args.file, args.text_field or stored.data.text_field or "text")
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
