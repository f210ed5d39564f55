"""A release the index accepts: the wheel of the install tests (built from the
sdist, conftest.py) repaired as ``scripts/release.sh`` repairs it
(``build_support/release.py``), to the manylinux tag of the installed
TensorFlow's own wheel with TensorFlow's libraries excluded; installed into a
``--target`` beside this environment (see wheeltools.py for why not a new
venv), it loads its op and runs it as the XLA custom call.

Slow only through the shared native build; this file adds the repair, one
install and two child interpreters (about 30 s on 2 cores).
"""

from __future__ import annotations

import re
import sys
import zipfile

import pytest
import tensorflow as tf
import wheeltools
from wheeltools import release

# one worker under pytest-xdist (--dist loadgroup): the session fixtures build the native wheel once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("install")]


@pytest.fixture(scope="module")
def plat():
    return release.tensorflow_platform_tag()


@pytest.fixture(scope="module")
def repaired(native_wheel, tmp_path_factory, plat):
    return release.repair(native_wheel[0], tmp_path_factory.mktemp("repaired"), plat)


def test_the_tag_is_tensorflows_own(plat):
    """TensorFlow 2.21's wheels say manylinux_2_27_x86_64: we promise what it does."""
    assert re.fullmatch(r"manylinux_\d+_\d+_\w+", plat), plat
    from importlib import metadata

    assert re.search(rf"(?m)^Tag: \S+-{plat}$", metadata.distribution("tensorflow").read_text("WHEEL"))


def test_repaired_wheel_has_the_manylinux_tag(repaired, native_wheel, plat):
    assert "-linux_" in native_wheel[0].name  # what pip builds, and the index refuses
    assert re.fullmatch(rf"fusedfocal-[\w.]+-cp3\d+-cp3\d+-{plat}\.whl", repaired.name), repaired.name
    with zipfile.ZipFile(repaired) as z:
        names = set(z.namelist())
        wheel_meta = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert re.search(rf"(?m)^Tag: cp3\d+-cp3\d+-{plat}$", wheel_meta), wheel_meta
    assert "fusedfocal/ops/_fused_focal_ops.so" in names
    # nothing grafted: TensorFlow's libraries stay TensorFlow's
    assert not [n for n in names if ".libs/" in n or "libtensorflow" in n], sorted(names)

    report = release.audit(repaired)
    # the symbol versions the library imports fit the tag (manylinux_compat.cc keeps GCC 12's out)
    assert release.glibc_of(report["sym_tag"]) <= release.glibc_of(plat), report["sym_tag"]
    assert set(report["external_libs"]) == set(release.TF_LIBRARIES), report["external_libs"]
    assert not report["unsupported_isa"]
    release.check_audit(report, plat)
    assert "GLIBC_2.32" not in report["versioned_symbols"].get("libc.so.6", [])
    assert not [v for v in report["versioned_symbols"].get("libstdc++.so.6", [])
                if v.startswith("GLIBCXX_3.4.") and int(v.rsplit(".", 1)[1]) > 24]


def test_repaired_wheel_runs_the_xla_custom_call(repaired, tmp_path):
    target = tmp_path / "site"
    wheeltools.install(repaired, target)
    probe = wheeltools.probe(target, tmp_path)
    assert probe["file"].startswith(str(target)), probe["file"]
    assert probe["loaded"] and probe["problem"] is None, probe
    assert probe["build"]["tensorflow"] == tf.__version__
    assert probe["custom_call"], "the optimized HLO has no fusedfocal_focal_loss custom call"
    assert abs(probe["jit"] - probe["pure_tf"]) <= 1e-5 * abs(probe["pure_tf"]), probe
    assert probe["warnings"] == []

    version = wheeltools.run_in(target, ["-m", "fusedfocal", "--version"], tmp_path)
    assert version.returncode == 0, version.stderr[-2000:]
    from fusedfocal import __version__

    assert version.stdout.strip() == f"fusedfocal {__version__} (native op built against TensorFlow {tf.__version__})"


def test_release_refuses_a_wheel_beyond_the_tag(native_wheel, tmp_path):
    """auditwheel is the judge: asked for a tag older than the symbols allow
    (manylinux2014 = glibc 2.17; the library uses CXXABI_1.3.11 of GCC 7),
    the repair fails instead of mislabelling the wheel."""
    with pytest.raises(release.ReleaseError, match="too-recent versioned symbols"):
        release.repair(native_wheel[0], tmp_path / "out", "manylinux_2_17_x86_64")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))
