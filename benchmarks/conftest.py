"""Benchmark plumbing shared by every ``bench_*.py``.

``pytest --benchmark`` runs the full suite (all sizes, many rounds) and writes
JSON under ``benchmarks/results/``. Without the flag (plain ``pytest``, CI)
each benchmark runs once at its smallest size: a smoke test that keeps the
code from rotting, with no timing claims.
"""

from __future__ import annotations

import datetime as _dt
import platform

import pytest


@pytest.fixture(scope="session")
def full_benchmark(pytestconfig) -> bool:
    """True under ``pytest --benchmark``; False for the smoke run."""
    return bool(pytestconfig.getoption("--benchmark"))


@pytest.fixture
def run_benchmark(benchmark, full_benchmark):
    """``run_benchmark(fn, *args, rounds=..., warmup_rounds=..., **extra_info)``.

    Full mode: ``benchmark.pedantic`` with warm-up rounds (so XLA compile time
    is excluded) and the extra info recorded. Smoke mode: one call, one round.
    Returns the function's result.
    """

    def _run(fn, *args, rounds: int = 20, iterations: int = 1, warmup_rounds: int = 2, **extra):
        benchmark.extra_info.update(extra)
        benchmark.extra_info.setdefault("machine", platform.machine())
        benchmark.extra_info.setdefault("date", _dt.date.today().isoformat())
        if not full_benchmark:
            rounds, iterations, warmup_rounds = 1, 1, 0
        return benchmark.pedantic(
            fn, args=args, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds
        )

    return _run


# --------------------------------------------------------------------------
# Added for bench_focal.py (issue 6): copy bandwidth, peak memory, versions.

import json as _json
import os as _os
import subprocess as _subprocess
import sys as _sys
import time as _time

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def copy_bandwidth():
    """``copy_bandwidth() -> bytes/s``: NumPy copy of a 256 MiB float32 array
    (bytes read + bytes written over the median of 7 copies), measured once
    per session, so every row's floor uses the same number."""
    cache = {}

    def _bw():
        if "bw" not in cache:
            import numpy as np

            src = np.ones(64 * 1024 * 1024, np.float32)
            dst = np.empty_like(src)
            np.copyto(dst, src)
            times = []
            for _ in range(7):
                t0 = _time.perf_counter()
                np.copyto(dst, src)
                times.append(_time.perf_counter() - t0)
            cache["bw"] = 2 * src.nbytes / sorted(times)[len(times) // 2]
        return cache["bw"]

    return _bw


@pytest.fixture(scope="session")
def peak_memory():
    """``peak_memory(provider, mode, pass_, shape, dtype) -> float | None``:
    peak RSS increase of one warm call, in logits-sized tensors, measured in a
    fresh subprocess by ``benchmarks/_peak_mem.py`` (TF's allocator stats are
    zero on CPU). ``None`` when the subprocess fails."""

    def _peak(provider, mode, pass_, shape, dtype):
        cmd = [_sys.executable, _os.path.join(_ROOT, "benchmarks", "_peak_mem.py"), provider, mode, pass_,
               "x".join(map(str, shape)), dtype]
        try:
            out = _subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
            return _json.loads(out.strip().splitlines()[-1])["peak_x"]
        except (OSError, ValueError, KeyError, IndexError, _subprocess.SubprocessError):
            return None

    return _peak


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record library versions and the device in the results JSON."""
    try:
        import tensorflow as tf

        machine_info["tensorflow"] = tf.__version__
        machine_info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        pass
    for mod in ("keras", "tf_keras", "numpy", "fusedfocal"):
        try:
            machine_info[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            pass
    machine_info["bench_device"] = _os.environ.get("FUSEDFOCAL_BENCH_DEVICE", "CPU:0")
    machine_info["nproc"] = _os.cpu_count()
    machine_info["date"] = _dt.date.today().isoformat()


# --------------------------------------------------------------------------
# Interleaved rounds (issue 10): ratios that survive a noisy, shared machine.


class Interleaved:
    """Times named zero-argument steps round-robin: one call of each a round,
    the order rotated every round, so a load spike hits every step alike.
    Each step must block until its work is done. ``stats()`` gives each
    step's median, p20 and p80 (ms) over the rounds, the first one dropped."""

    def __init__(self, steps: dict):
        self.steps = dict(steps)
        self.order = list(self.steps)
        self.samples = {k: [] for k in self.steps}
        self._turn = 0

    def round(self):
        k0 = self._turn % len(self.order)
        self._turn += 1
        for key in self.order[k0:] + self.order[:k0]:
            t0 = _time.perf_counter()
            self.steps[key]()
            self.samples[key].append(_time.perf_counter() - t0)

    def stats(self) -> dict:
        import numpy as np

        out = {}
        for key, ts in self.samples.items():
            ts = np.array(ts[1:] if len(ts) > 1 else ts) * 1e3
            out[key] = dict(median_ms=float(np.median(ts)), p20_ms=float(np.percentile(ts, 20)),
                            p80_ms=float(np.percentile(ts, 80)), rounds=int(ts.size))
        return out


@pytest.fixture
def interleaved():
    """``interleaved(steps)`` -> :class:`Interleaved`."""
    return Interleaved
