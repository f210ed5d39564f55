#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11 and the package index:
#   bash scripts/dev.sh demo [fusedfocal compare flags]   set up, then run the main job
#   bash scripts/dev.sh test [pytest args]                set up, then run the tests
# Set-up: creates .venv at the repository root if missing, installs the package
# with its dev, plot and profile extras (skipped when pyproject.toml and the
# extras are unchanged since the last install), and builds the optional native CPU op (a failed build
# falls back to the XLA path; it never fails the set-up, except in CI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmd="${1:-}"
case "$cmd" in
  demo|test) shift ;;
  *) echo "usage: bash scripts/dev.sh {demo|test} [args...]" >&2; exit 2 ;;
esac

python_bin="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  echo "[dev.sh] creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
stamp=.venv/.fusedfocal-install-stamp
extras="dev,plots,profile"  # profile: tensorboard + xprof, so the profiler tests run in CI
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[dev.sh] installing fusedfocal[$extras] into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  echo "$want" > "$stamp"
fi
# The native CPU op is optional for users (a failed build falls back to the
# XLA path). In CI (CI=true) a failed build fails the run, so the
# native-vs-XLA parity tests always run there.
if [ "${CI:-}" = "true" ]; then
  .venv/bin/python scripts/build_kernels.py --check
else
  .venv/bin/python scripts/build_kernels.py --optional || true
fi

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
case "$cmd" in
  demo)
    # Label groups come from the data (terciles of the labels by training
    # frequency, the CLI default). Each demo writes a fresh run folder (run
    # folders are never replaced without --overwrite, so a fixed one would
    # refuse the second demo). Later arguments override both.
    exec .venv/bin/fusedfocal compare --out "runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
    ;;
  test)
    set +e
    .venv/bin/python -m pytest -q "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "[dev.sh] pytest collected no tests: failing" >&2
      exit 1
    fi
    exit "$rc"
    ;;
esac
