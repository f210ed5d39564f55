"""One XMC head training step (forward, backward, Adam update): the fused
``linear_focal_loss`` against Dense + ``fusedfocal.SigmoidFocalLoss`` and
Dense + Keras 3 ``BinaryFocalCrossentropy`` (issue 19).

The step and its providers live in ``benchmarks/_xmc_step.py``. Here:

* timing: the three providers' steps in interleaved rounds in one process
  (``Interleaved``, order rotated every round), graph and XLA, medians;
* memory: ``benchmarks/xmc_grid.py`` (one fresh process per cell).

Plain ``pytest`` (CI): one tiny configuration, one round, and the fused
step's loss equals the unfused one. ``pytest benchmarks/bench_xmc_step.py
--benchmark``: C in {4096, 131072} x H in {256, 768} x B in {256, 1024}.
The large label counts (670,091 and 3,000,000), which need one process and
most of the machine each, run with ``python benchmarks/xmc_grid.py`` (same
worker, one configuration per subprocess); ``python benchmarks/xmc_table.py``
writes the README table from both.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _xmc_step as xs  # noqa: E402

PROVIDERS = ("fused", "fusedfocal", "keras3")
SMOKE = [dict(C=512, H=32, B=16)]
FULL = [dict(C=c, H=h, B=b) for c in (4096, 131072) for h in (256, 768) for b in (256, 1024)]
ROUNDS = 5


def _configs(full):
    return FULL if full else SMOKE


def interleaved_steps(cfg, mode, rounds, interleaved_cls, run=None, providers=PROVIDERS):
    """Builds the providers' steps at ``cfg`` and times them in interleaved
    rounds; returns ``(stats, first_losses)``. ``fused_sgd_bf16`` and
    ``fused_adam_bf16`` are the fused-update heads (issue 26)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 1, (cfg["B"], cfg["H"])).astype(np.float32))
    ids = tf.constant(xs.make_ids(cfg["B"], cfg["C"]))
    steps = {p: xs.build(p, mode, cfg["C"], cfg["H"], cfg["B"])[0] for p in providers}
    first = {p: float(s(x, ids)) for p, s in steps.items()}  # trace + compile
    rounds_ = interleaved_cls({p: (lambda s=s: float(s(x, ids))) for p, s in steps.items()})
    if run is None:
        for _ in range(rounds + 1):
            rounds_.round()
    else:
        run(rounds_.round)
    stats = rounds_.stats()
    base = stats[providers[0] if "fusedfocal" not in stats else "fusedfocal"]["median_ms"]
    for p in stats:
        stats[p]["vs_fusedfocal" if "fusedfocal" in stats else f"vs_{providers[0]}"] = stats[p]["median_ms"] / base
    for p, s in steps.items():
        assert np.isfinite(float(s(x, ids))), p
    return stats, first


@pytest.mark.parametrize("mode", ["xla", "graph"])
@pytest.mark.parametrize("cfg", _configs(True), ids=lambda c: f"C{c['C']}-H{c['H']}-B{c['B']}")
def test_xmc_step(mode, cfg, benchmark, run_benchmark, full_benchmark, interleaved):
    """Interleaved rounds of the three providers' steps. Memory is not measured
    here (this process holds all three models, and oneDNN's pooled allocator
    keeps every working set): ``benchmarks/xmc_grid.py`` measures it, one
    fresh process per cell."""
    if not full_benchmark:
        if cfg != FULL[0]:
            pytest.skip("full grid only under --benchmark")
        cfg = SMOKE[0]
    run = lambda fn: run_benchmark(fn, rounds=ROUNDS, warmup_rounds=1, mode=mode, **cfg)  # noqa: E731
    stats, first = interleaved_steps(cfg, mode, ROUNDS, interleaved, run)
    # Same weights, same Adam state: the first losses agree to float32 rounding.
    np.testing.assert_allclose(first["fused"], first["fusedfocal"], rtol=1e-5)
    benchmark.extra_info["interleaved"] = stats


if __name__ == "__main__":
    # ``python benchmarks/bench_xmc_step.py C H B MODE [ROUNDS [PROVIDER ...]]``: one cell, one JSON
    # line; e.g. ``131072 768 1024 xla 5 fused fused_sgd_bf16 fused_adam_bf16`` (issue 26's timing).
    from conftest import Interleaved

    c, h, b, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else ROUNDS
    chosen = tuple(sys.argv[6:]) or PROVIDERS
    stats, first = interleaved_steps(dict(C=c, H=h, B=b), mode, n, Interleaved, providers=chosen)
    print(json.dumps(dict(C=c, H=h, B=b, mode=mode, rounds=n, interleaved=stats, first_losses=first)), flush=True)
