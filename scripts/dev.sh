#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11 and the package index:
#   bash scripts/dev.sh demo [fusedfocal compare flags]   set up, then run the main job
#   bash scripts/dev.sh test [pytest args]                set up, then run the tests
# Set-up: creates .venv at the repository root if missing, installs the
# dependencies with the dev, plots, profile, docs and hub extras, then the package itself
# (editable, no build isolation), whose install compiles the native op against
# the venv's TensorFlow (build_support/native_build.py). Skipped when nothing
# it depends on changed since the last install. A failed native build only
# warns (the package falls back to pure TensorFlow), except in CI (CI=true),
# where it fails the set-up, and so does a native op that does not load.
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
extras="dev,plots,profile,docs,hub"  # profile: tensorboard + xprof, so the profiler tests run in CI; docs: the strict docs build; hub: keras-hub for --encoder
stamp=.venv/.fusedfocal-install-stamp
want="$(cat pyproject.toml setup.py build_support/*.py build_support/*.cc kernels/*.* | sha256sum | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f src/fusedfocal/ops/_build_info.json ]; then
  echo "[dev.sh] installing the dependencies of fusedfocal[$extras] into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel
  # The dependencies first (read from pyproject.toml), so that the package's
  # own build finds the venv's TensorFlow and compiles against it.
  .venv/bin/python - "$extras" >.venv/.fusedfocal-requirements.txt <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1].split(","):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
  .venv/bin/python -m pip install --quiet -r .venv/.fusedfocal-requirements.txt
  echo "[dev.sh] installing fusedfocal (editable; builds the native op, about 1.5 min)"
  require=0
  if [ "${CI:-}" = "true" ]; then require=1; fi
  FUSEDFOCAL_REQUIRE_NATIVE=$require .venv/bin/python -m pip install --quiet --no-deps \
    --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# What runs where, in one screen. In CI a native op that does not load fails
# the run, so the native-vs-XLA parity tests always run there.
if [ "${CI:-}" = "true" ]; then
  .venv/bin/fusedfocal info --require-native
else
  .venv/bin/fusedfocal info || true
fi
case "$cmd" in
  demo)
    # Label groups come from the data (terciles of the labels by training
    # frequency, the CLI default). Each demo writes a fresh run folder (run
    # folders are never replaced without --overwrite, so a fixed one would
    # refuse the second demo). Later arguments override both.
    exec .venv/bin/fusedfocal compare --out "runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
    ;;
  test)
    # The tests run on two pytest-xdist workers by default (CI has 2 cores; the install tests share
    # their session fixtures on one worker: --dist loadgroup); FUSEDFOCAL_TEST_WORKERS sets the
    # count, 0 runs in one process. The benchmarks' smoke runs (and --benchmark) run in one process
    # after them: pytest-benchmark times nothing under xdist, and the smoke runs read its stats.
    # pytest's exit code 5 (no tests collected) fails the run.
    workers="${FUSEDFOCAL_TEST_WORKERS:-2}"
    run_pytest() {
      local rc=0
      .venv/bin/python -m pytest -q "$@" || rc=$?
      if [ "$rc" -eq 5 ]; then
        echo "[dev.sh] pytest collected no tests: failing" >&2
        return 1
      fi
      return "$rc"
    }
    parallel=(-n "$workers" --dist loadgroup)
    if [ "$workers" = "0" ]; then parallel=(-p no:xdist); fi
    set +e
    if [ "$#" -eq 0 ]; then
      run_pytest "${parallel[@]}" tests; rc=$?
      run_pytest -p no:xdist benchmarks; rc_bench=$?
      [ "$rc" -ne 0 ] || rc=$rc_bench
    else
      case " $* " in *benchmark*) parallel=(-p no:xdist) ;; esac
      run_pytest "${parallel[@]}" "$@"; rc=$?
    fi
    set -e
    exit "$rc"
    ;;
esac
