#!/usr/bin/env bash
# Reuters-21578 (ApteMod) with the n-gram model: five losses (bce, focal, asl, db and logit-adjusted BCE
# "la"; cb is left out, it was the weakest here), three seeds (mean ± sd), best epoch by
# validation macro-F1, Huang et al.'s protocol (1,000 training documents held out for validation and the
# global threshold, metrics on the 3,019 test documents) and label groups (35/8).
# The data is research-only: it is read from the shared folder, never copied into the repository.
# Usage: scripts/reuters_ngram.sh [OUT_DIR] [extra fusedfocal flags...]   (e.g. --seeds 0 for one seed)
set -euo pipefail
REUTERS="${FUSEDFOCAL_REUTERS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/reuters21578}"
OUT="${1:-runs/reuters_ngram}"
shift || true
PY="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
time "$PY" -m fusedfocal compare \
  --data "$REUTERS/train.jsonl.gz" --eval "$REUTERS/test.jsonl.gz" --val-size 1000 \
  --model ngram --ngram-hidden 256 --ngram-bigrams 0 --max-length 512 --vocab-size 30000 \
  --losses bce,focal,asl,db,la \
  --epochs 12 --patience 4 --batch-size 64 --learning-rate 0.01 --groups huang --seeds 0,1,2 \
  --verbose 0 --out "$OUT" "$@"
