"""kernels/tools/check_math.cc as a test: the CPU polynomials' error bounds.

Compiles the framework-free C++ check with g++ for each instruction set the
CPU has (the three copies ``scripts/build_kernels.py`` builds), runs it over
every 97th float32 of each range, and asserts its exit status (it exits 1
when a bound is exceeded) and the bounds it prints.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "kernels" / "tools" / "check_math.cc"
# (name, -march, vector width in floats), as in scripts/build_kernels.py
ISAS = [("sse2", "x86-64", 8), ("avx2", "x86-64-v3", 8), ("avx512", "x86-64-v4", 16)]
_CPU_FLAGS = {"avx2": ("avx2", "fma"), "avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl")}


def _cpu_has(isa):
    if isa == "sse2":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(f in flags for f in _CPU_FLAGS[isa])


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: cannot compile kernels/tools/check_math.cc")
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the -march flags are x86-64 ones")
@pytest.mark.parametrize("isa,march,width", ISAS, ids=[i[0] for i in ISAS])
def test_check_math_bounds(isa, march, width, tmp_path):
    if not _cpu_has(isa):
        pytest.skip(f"this CPU has no {isa}")
    exe = tmp_path / "check_math"
    subprocess.run(["g++", "-O2", "-std=c++17", f"-march={march}", f"-DFF_VEC_WIDTH={width}",
                    f"-I{ROOT / 'kernels'}", str(SOURCE), "-o", str(exe)], check=True, timeout=300)
    run = subprocess.run([str(exe), "97"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    ulps = dict(re.findall(r"^(\w+)\s+\[.*max error ([\d.]+) ulp", run.stdout, re.M))
    assert set(ulps) == {"exp", "log1p", "log"}, run.stdout
    assert all(float(u) <= 2.0 for u in ulps.values()), run.stdout
    m = re.search(r"loss max relative difference ([\d.e+-]+), grad max .* ([\d.e+-]+)$", run.stdout, re.M)
    assert m and float(m.group(1)) <= 1e-5 and float(m.group(2)) <= 1e-3, run.stdout
