"""Helpers of the install tests: a clean copy of the repository, an
environment without this session's settings, installing a wheel with
``--no-deps`` into a throwaway ``--target`` beside this environment (its
TensorFlow is the one the child interpreters import), and a probe that runs
the op eagerly and under ``jit_compile=True`` there.

A ``--target`` folder, not a new virtual environment: a venv of its own would
need its own TensorFlow (about 600 MB and a minute to install), while the
question these tests ask is what the *wheel* carries and whether it runs
against the TensorFlow it was built for. ``PYTHONPATH`` puts the folder ahead
of this environment's editable install, and the probe checks that the
package really was imported from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build_support"))

import release  # noqa: E402  (build_support/release.py: what scripts/release.sh runs)


def clean_copy(dest: Path) -> Path:
    """The tracked and untracked-not-ignored files: what a fresh clone has."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to make a clean copy of the repository")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    assert not list(dest.rglob("*.so")), "the clean copy must carry no built library"
    return dest


def env(**extra):
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("FUSEDFOCAL_") and k not in ("PYTHONPATH", "CXX")}
    out.update(TF_CPP_MIN_LOG_LEVEL="3", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return out


def install(wheel: Path, target: Path):
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                    str(target), str(wheel)], env=env(), check=True, capture_output=True, text=True)


def run_in(target: Path, args, cwd: Path, **extra_env):
    """A child interpreter that imports fusedfocal from ``target`` first."""
    return subprocess.run([sys.executable, *args], env=env(PYTHONPATH=str(target), **extra_env), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


PROBE = r"""
import json, warnings
import numpy as np, tensorflow as tf
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as rec:
    import fusedfocal
    from fusedfocal.ops import native
    x = tf.constant(np.linspace(-6, 6, 64, dtype=np.float32).reshape(8, 8))
    y = tf.constant((np.arange(64).reshape(8, 8) % 3 == 0).astype(np.float32))
    f = tf.function(jit_compile=True)(lambda x: tf.reduce_sum(fusedfocal.sigmoid_focal_loss(x, y)))
    hlo = f.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    eager = float(tf.reduce_sum(fusedfocal.sigmoid_focal_loss(x, y, implementation="xla")))
    jit = float(f(x))
st = native.status()
print("PROBE " + json.dumps({"file": fusedfocal.__file__, "loaded": st["loaded"], "problem": st["problem"],
      "xla_cpu": st["xla_cpu"], "custom_call": "fusedfocal_focal_loss" in hlo, "build": st["build"],
      "jit": jit, "pure_tf": eager,
      "warnings": [str(w.message) for w in rec if w.category is RuntimeWarning]}))
"""


def probe(target: Path, cwd: Path) -> dict:
    proc = run_in(target, ["-c", PROBE], cwd)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[0][6:])
