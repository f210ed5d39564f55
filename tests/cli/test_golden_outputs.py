"""Golden outputs of the CLI (issue 25): with ``--deterministic`` the commands' result files must
stay identical, float for float, while the CLI is refactored into typed stage configs.

Two runs, each in a fresh ``python -m fusedfocal`` process (nothing left over from other tests in
this session: Keras' global policy, op determinism, seeds) and each a few seconds of training:

* ``compare --losses bce,focal`` on the built-in synthetic corpus (fastText, 2 epochs)
  -> ``comparison.json``, checked against ``golden/compare_bce_focal.json``;
* ``train --head fused --loss focal`` on a tiny synthetic XMC corpus (200 labels, 2 epochs)
  -> ``metrics.json``, checked against ``golden/train_fused_focal.json``.

The comparison is exact (same keys in the same order, same types, floats equal, not approximately
equal) after taking out only what varies from run to run (``VOLATILE`` below) and replacing the
temporary folders in path strings with ``<DATA>`` / ``<OUT>``. A failure lists keys added, keys
removed and values changed by their path, e.g. ``added: settings.head_foo = 'x'``.

A deliberate change of the output (a new settings key, a fixed metric) needs new golden files:

    FUSEDFOCAL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_golden_outputs.py -q

rewrites them (the test is then skipped, as it checked nothing); review ``git diff tests/cli/golden``
and commit it with the change. The floats come from this machine's TensorFlow build on x86-64 CPU:
op determinism holds from run to run and from 1 to 2 cores (checked), but another TensorFlow or
another instruction set (oneDNN kernels) may round differently and needs new golden files too.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from clitools import cli_subprocess

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("FUSEDFOCAL_UPDATE_GOLDEN") == "1"

# Small and quick, but every stage runs: WordPiece vocabulary, validation split, thresholds, selection
# between 2 epochs, groups, per-label metrics.
COMPARE = ["compare", "--losses", "bce,focal", "--deterministic", "--seed", "0", "--model", "fasttext",
           "--embed-dim", "16", "--epochs", "2", "--vocab-size", "300", "--max-length", "32", "--verbose", "0"]
FUSED = ["train", "--head", "fused", "--loss", "focal", "--deterministic", "--seed", "0", "--model", "fasttext",
         "--embed-dim", "32", "--epochs", "2", "--batch-size", "32", "--max-length", "40", "--vocab-size", "500",
         "--val-size", "80", "--learning-rate", "0.03", "--dropout", "0", "--verbose", "0"]

# Wall-clock fields: the only values that differed between repeated runs (3 compare runs, 3 fused runs,
# one of each pinned to one core). Paths: '*' is every element of a list. Each must be present, so an
# entry that no longer exists fails here instead of silently excluding nothing.
VOLATILE = {
    "compare_bce_focal": [
        "wall_seconds",  # the whole comparison's wall time
        "results.*.train_seconds",  # each loss's training wall time
        "results.*.epochs.*.seconds",  # each epoch's wall time
    ],
    "train_fused_focal": [
        "train_seconds",  # training wall time
        "epochs.*.seconds",  # each epoch's wall time
    ],
}
# Not volatile, only located in a temporary folder: 'results.*.run_dir' (compare) and 'data' (train)
# are kept with the folder replaced by <OUT> / <DATA>, so the file names are still checked.


def _drop(obj, path, where=""):
    """Removes ``path`` (dotted, ``*`` for every list element) from ``obj``; returns how many were removed."""
    head, _, rest = path.partition(".")
    if head == "*":
        assert isinstance(obj, list), f"volatile path: {where or '(top)'} is not a list"
        return sum(_drop(item, rest, f"{where}[{i}]") for i, item in enumerate(obj))
    at = _join(where, head)
    assert isinstance(obj, dict) and head in obj, f"volatile field {at} missing: update VOLATILE"
    if not rest:
        del obj[head]
        return 1
    return _drop(obj[head], rest, at)


def _join(where, key):
    return f"{where}.{key}" if where else key


def _replace_dirs(obj, dirs):
    if isinstance(obj, dict):
        return {k: _replace_dirs(v, dirs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_dirs(v, dirs) for v in obj]
    if isinstance(obj, str):
        for folder, mark in dirs.items():
            obj = obj.replace(folder, mark)
    return obj


def stable_part(result, name, dirs):
    """The result file without its volatile fields, temporary folders replaced by placeholders."""
    for path in VOLATILE[name]:
        assert _drop(result, path) > 0, f"volatile field {path} matched nothing: update VOLATILE"
    return _replace_dirs(result, dirs)


def _same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def differences(golden, actual, where=""):
    """Every difference between two JSON values, one line each, named by path."""
    name = where or "(top)"
    if isinstance(golden, dict) and isinstance(actual, dict):
        out = [f"added: {_join(where, k)} = {actual[k]!r} (new key: regenerate the golden file deliberately "
               f"if intended)" for k in actual if k not in golden]
        out += [f"removed: {_join(where, k)} (was {golden[k]!r})" for k in golden if k not in actual]
        if not out and list(golden) != list(actual):
            out.append(f"key order changed at {name}: golden {list(golden)}, now {list(actual)}")
        for k in golden:
            if k in actual:
                out += differences(golden[k], actual[k], _join(where, k))
        return out
    if isinstance(golden, list) and isinstance(actual, list):
        out = [] if len(golden) == len(actual) else [f"length changed: {name}: golden {len(golden)}, now {len(actual)}"]
        for i, (g, a) in enumerate(zip(golden, actual)):
            out += differences(g, a, f"{where}[{i}]")
        return out
    return [] if _same(golden, actual) else [f"changed: {name}: golden {golden!r}, now {actual!r}"]


def check_golden(name, result, dirs):
    stable = stable_part(result, name, dirs)
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(stable, indent=1) + "\n")
        pytest.skip(f"FUSEDFOCAL_UPDATE_GOLDEN=1: wrote {path}; nothing checked")
    assert path.exists(), f"no golden file {path}: run with FUSEDFOCAL_UPDATE_GOLDEN=1 to write it"
    diffs = differences(json.loads(path.read_text()), stable)
    shown = "\n  ".join(diffs[:40]) + (f"\n  ... and {len(diffs) - 40} more" if len(diffs) > 40 else "")
    assert not diffs, (f"{name}: {len(diffs)} difference(s) from {path.name} (FUSEDFOCAL_UPDATE_GOLDEN=1 "
                       f"rewrites it if the change is intended):\n  {shown}")


def _run(*argv):
    proc = cli_subprocess(*argv, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_compare_matches_golden(tmp_path):
    out = tmp_path / "compare"
    _run(*COMPARE, "--out", out)
    result = json.loads((out / "comparison.json").read_text())
    check_golden("compare_bce_focal", result, {str(out): "<OUT>"})


def test_fused_train_matches_golden(tmp_path):
    from fusedfocal.data import synthetic_xmc_splits, write_jsonl

    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    train, test = synthetic_xmc_splits(seed=0, num_train=640, num_test=160, num_labels=200, mean_filler=5)
    write_jsonl(data / "train.jsonl", *train)
    write_jsonl(data / "test.jsonl", *test)
    _run(*FUSED, "--data", data / "train.jsonl", "--eval", data / "test.jsonl", "--out", out)
    result = json.loads((out / "metrics.json").read_text())
    check_golden("train_fused_focal", result, {str(data): "<DATA>", str(out): "<OUT>"})


def test_differences_name_the_added_key():
    """The failure message of a settings key added with its default value (as a new flag would add)."""
    golden = {"settings": {"model": "cnn", "chosen": {"model": "flag"}}, "metrics": {"f1": 0.5}, "epochs": [1.0]}
    actual = {"settings": {"model": "cnn", "head_foo": "x", "chosen": {"model": "flag", "head_foo": "default"}},
              "metrics": {"f1": 0.5000000000000001}, "epochs": [1]}
    assert differences(golden, actual) == [
        "added: settings.head_foo = 'x' (new key: regenerate the golden file deliberately if intended)",
        "added: settings.chosen.head_foo = 'default' (new key: regenerate the golden file deliberately if intended)",
        "changed: metrics.f1: golden 0.5, now 0.5000000000000001",  # exact, not approximate
        "changed: epochs[0]: golden 1.0, now 1",  # a float that became an int
    ]
    assert differences({"a": 1, "b": 2}, {"b": 2, "a": 1}) == ["key order changed at (top): golden ['a', 'b'], "
                                                               "now ['b', 'a']"]
    assert differences({"a": [1, 2]}, {"a": [1]}) == ["length changed: a: golden 2, now 1"]
    assert differences({"a": float("nan")}, {"a": float("nan")}) == []
    with pytest.raises(AssertionError, match="volatile field wall_seconds"):
        stable_part({"results": []}, "compare_bce_focal", {})
