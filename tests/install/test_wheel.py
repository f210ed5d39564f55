"""The install carries the native op: a wheel built from the sdist of a clean
copy of the repository (the session fixture ``native_wheel``, conftest.py:
the path ``pip install fusedfocal-X.tar.gz`` takes), installed with
``--no-deps`` into a throwaway ``--target`` beside this environment, finds
its op, lowers to the XLA custom call, and says so in ``fusedfocal info``. A
build without a compiler still installs and says it has no native op.

Slow (one full native build, about 1.5-2 min on 2 cores, shared with
test_release.py), but it runs in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import tensorflow as tf
from wheeltools import env as _env
from wheeltools import install as _install
from wheeltools import probe as _probe
from wheeltools import run_in as _run_in

# one worker under pytest-xdist (--dist loadgroup): the session fixtures build the native wheel once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("install")]


def _wheel(src: Path, dist: Path, env) -> tuple[Path, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(dist), str(src)],
                          env=env, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    wheels = list(dist.glob("fusedfocal-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], log, took


def test_sdist_carries_what_the_build_needs(sdist):
    """The sdist the wheel is built from: sources, build code, no built files."""
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        pkg_info = t.extractfile(next(m for m in t.getmembers() if m.name.count("/") == 1
                                      and m.name.endswith("/PKG-INFO"))).read().decode()
    for need in ("pyproject.toml", "setup.py", "README.md", "build_support/backend.py",
                 "build_support/native_build.py", "build_support/manylinux_compat.cc",
                 "kernels/fused_focal_ops.cc", "kernels/focal_math.h", "src/fusedfocal/__init__.py"):
        assert need in names, f"{need} missing from {sdist.name}"
    assert not [n for n in names if n.endswith((".so", ".o")) or n.endswith("_build_info.json")], names
    assert re.search(r"(?m)^Requires-Dist: tensorflow<2\.22,>=2\.21$", pkg_info), pkg_info


def test_wheel_carries_the_native_op(native_wheel, tmp_path):
    wheel, log, took = native_wheel
    print(f"\n[install] wheel {wheel.name}, {wheel.stat().st_size / 1e6:.2f} MB, built in {took:.0f} s")
    # platform-tagged, not py3-none-any
    assert re.fullmatch(r"fusedfocal-[\w.]+-cp3\d+-cp3\d+-linux_\w+\.whl", wheel.name), wheel.name
    # built against this environment's TensorFlow: pip installed none into the build environment
    assert "[fusedfocal build] built" in log
    assert f"against TensorFlow {tf.__version__} ({sys.executable})" in log
    assert not re.search(r"(?im)^\s*(collecting|downloading) tensorflow\b", log), "a second TensorFlow"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "fusedfocal/ops/_fused_focal_ops.so" in names
        info = json.loads(z.read("fusedfocal/ops/_build_info.json"))
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert info["native"] is True and info["tensorflow"] == tf.__version__
    assert info["cxx11_abi"] == int(tf.sysconfig.CXX11_ABI_FLAG) and info["xla_cpu"] is True
    assert info["isas"] == ["sse2", "avx2", "avx512"] and isinstance(info["cuda"], bool)
    assert re.search(r"(?m)^Requires-Dist: tensorflow<2\.22,>=2\.21$", meta), meta

    target = tmp_path / "site"
    _install(wheel, target)
    probe = _probe(target, tmp_path)
    assert probe["file"].startswith(str(target)), probe["file"]
    assert probe["loaded"] and probe["problem"] is None, probe
    assert probe["xla_cpu"].startswith("native custom call")
    assert probe["custom_call"], "the optimized HLO has no fusedfocal_focal_loss custom call"
    assert probe["warnings"] == []
    assert abs(probe["jit"] - probe["pure_tf"]) <= 1e-5 * abs(probe["pure_tf"]), probe
    info_out = _run_in(target, ["-m", "fusedfocal", "info"], tmp_path)
    assert info_out.returncode == 0, info_out.stderr[-2000:]
    assert f"loaded from {target}" in info_out.stdout
    assert f"TensorFlow {tf.__version__}" in info_out.stdout and "XLA custom call yes" in info_out.stdout
    req = _run_in(target, ["-m", "fusedfocal", "info", "--require-native"], tmp_path)
    assert req.returncode == 0, req.stdout + req.stderr


def test_build_without_a_compiler_still_installs(clean_copy, tmp_path):
    wheel, log, _ = _wheel(clean_copy, tmp_path / "dist", _env(CXX="false"))
    warnings = [ln for ln in log.splitlines() if "WARNING: the native focal loss op was NOT built" in ln]
    assert len(warnings) == 1, log[-4000:]
    assert "C++ compiler 'false' not found or not working" in warnings[0]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = json.loads(z.read("fusedfocal/ops/_build_info.json"))
    assert "fusedfocal/ops/_fused_focal_ops.so" not in names
    assert info["native"] is False and "compiler" in info["reason"]

    target = tmp_path / "site"
    _install(wheel, target)
    out = _run_in(target, ["-m", "fusedfocal", "info"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no native op" in out.stdout and "compiler 'false' not found" in out.stdout, out.stdout
    assert "XLA, CPU:          pure TensorFlow" in out.stdout
    req = _run_in(target, ["-m", "fusedfocal", "info", "--require-native"], tmp_path)
    assert req.returncode == 1 and "--require-native" in req.stderr
    probe = _probe(target, tmp_path)
    assert not probe["loaded"] and not probe["custom_call"]
    assert len(probe["warnings"]) == 1 and "fusedfocal info" in probe["warnings"][0], probe["warnings"]


def test_build_refuses_a_tensorflow_outside_the_pin(clean_copy, tmp_path):
    """The pip build asks a child interpreter for TensorFlow's version; a
    stand-in interpreter that reports 2.20.0 must make the build fail with
    the pin in the message (FUSEDFOCAL_TF_PYTHON chooses the interpreter)."""
    fake = tmp_path / "python"
    query = json.dumps({"version": "2.20.0", "include": "/nonexistent", "lib": "/nonexistent",
                        "compile_flags": [], "link_flags": [], "cxx11_abi": 1, "monolithic": 0,
                        "cuda_build": False, "gpus": [], "cuda_version": None, "python": str(fake)})
    fake.write_text(f"#!/bin/sh\necho 'FUSEDFOCAL_TF_CONFIG {query}'\n")
    fake.chmod(0o755)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(clean_copy)], env=_env(FUSEDFOCAL_TF_PYTHON=str(fake)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "TensorFlow 2.20.0 is outside the supported range `tensorflow>=2.21,<2.22`" in out, out[-3000:]
