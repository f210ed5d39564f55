#!/usr/bin/env bash
# Real results: the loss comparison on Reuters-21578 (ApteMod), as in Huang et al. (EMNLP 2021):
# 1,000 training documents held out for validation (thresholds), metrics on the 3,019 test documents.
# The data is research-only: it is read from the shared folder, never copied into the repository.
# Usage: scripts/reuters_compare.sh [OUT_DIR] [extra fusedfocal flags...]
set -euo pipefail
REUTERS="${FUSEDFOCAL_REUTERS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/reuters21578}"
OUT="${1:-runs/reuters_compare}"
shift || true
PY="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
time "$PY" -m fusedfocal compare \
  --data "$REUTERS/train.jsonl.gz" --eval "$REUTERS/test.jsonl.gz" --val-size 1000 \
  --losses "bce,focal:gamma=2,alpha=none,focal:gamma=2,alpha=0.25,asl,cb,db" \
  --model cnn --max-length 128 --epochs 7 --batch-size 32 --learning-rate 3e-3 --seed 0 --groups huang \
  --verbose 2 --out "$OUT" "$@"
