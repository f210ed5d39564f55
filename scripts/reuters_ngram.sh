#!/usr/bin/env bash
# Reuters-21578 (ApteMod): the five default losses (bce, focal, asl, db and logit-adjusted BCE "la"),
# three seeds (mean ± sd), Huang et al.'s label groups (35/8). Everything else is the command line's
# defaults, which choose from this data the n-gram model (its documents are long), its max length (512),
# vocabulary, epochs and the model's optimizer, rate and batch size (printed at the start, stored in
# config.json): Huang et al.'s protocol (1,000 training documents held out for validation and the
# global threshold, metrics on the 3,019 test documents), best epoch by validation macro-F1.
# The data is research-only: it is read from the shared folder, never copied into the repository.
# Usage: scripts/reuters_ngram.sh [OUT_DIR] [extra fusedfocal flags...]   (e.g. --seeds 0 for one seed)
set -euo pipefail
REUTERS="${FUSEDFOCAL_REUTERS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/reuters21578}"
OUT="${1:-runs/reuters_ngram}"
shift || true
PY="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
time "$PY" -m fusedfocal compare \
  --data "$REUTERS/train.jsonl.gz" --eval "$REUTERS/test.jsonl.gz" \
  --losses bce,focal,asl,db,la --groups huang --seeds 0,1,2 \
  --verbose 0 --out "$OUT" "$@"
