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


def sizes(full: bool, all_sizes, smoke_sizes):
    """Pick the parameter list for the current mode."""
    return all_sizes if full else smoke_sizes


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
