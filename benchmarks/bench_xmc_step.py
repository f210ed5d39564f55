"""One XMC head training step (forward, backward, Adam update): the fused
``linear_focal_loss`` against Dense + ``fusedfocal.SigmoidFocalLoss`` and
Dense + Keras 3 ``BinaryFocalCrossentropy`` (issue 19).

The step and its providers live in ``benchmarks/_xmc_step.py``. Here:

* timing: the three providers' steps in interleaved rounds in one process
  (``Interleaved``, order rotated every round), graph and XLA, medians;
* memory: peak RSS above the resting model (weights + Adam slots), one fresh
  subprocess per (provider, mode, configuration), see ``_xmc_step.py``.

Plain ``pytest`` (CI): one tiny configuration, one round, and the fused
step's loss equals the unfused one. ``pytest benchmarks/bench_xmc_step.py
--benchmark``: C in {4096, 131072} x H in {256, 768} x B in {256, 1024}.
The large label counts (670,091 and 3,000,000), which need one process and
most of the machine each, run with ``python benchmarks/xmc_grid.py`` (same
worker, one configuration per subprocess); ``python scripts/xmc_table.py``
writes the README table from both.
"""

from __future__ import annotations

import json
import os
import subprocess
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


def peak_memory(provider, mode, cfg, **kw):
    """The worker's JSON for one fresh subprocess (None if it failed)."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_xmc_step.py"),
           provider, mode, str(cfg["C"]), str(cfg["H"]), str(cfg["B"]), "--steps", "2"]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")  # plain allocator: see _xmc_step.py
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


@pytest.mark.parametrize("mode", ["xla", "graph"])
@pytest.mark.parametrize("cfg", _configs(True), ids=lambda c: f"C{c['C']}-H{c['H']}-B{c['B']}")
def test_xmc_step(mode, cfg, benchmark, run_benchmark, full_benchmark, interleaved):
    import tensorflow as tf

    if not full_benchmark:
        if cfg != FULL[0]:
            pytest.skip("full grid only under --benchmark")
        cfg = SMOKE[0]
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 1, (cfg["B"], cfg["H"])).astype(np.float32))
    ids = tf.constant(xs.make_ids(cfg["B"], cfg["C"]))
    steps = {p: xs.build(p, mode, cfg["C"], cfg["H"], cfg["B"])[0] for p in PROVIDERS}
    first = {p: float(s(x, ids)) for p, s in steps.items()}  # trace + compile
    # Same weights, same Adam state: the first losses agree to float32 rounding.
    np.testing.assert_allclose(first["fused"], first["fusedfocal"], rtol=1e-5)
    rounds = interleaved({p: (lambda s=s: float(s(x, ids))) for p, s in steps.items()})
    run_benchmark(rounds.round, rounds=ROUNDS, warmup_rounds=1, mode=mode, **cfg)
    stats = rounds.stats()
    base = stats["fusedfocal"]["median_ms"]
    for p in stats:
        stats[p]["vs_fusedfocal"] = stats[p]["median_ms"] / base
    benchmark.extra_info["interleaved"] = stats
    if full_benchmark:
        benchmark.extra_info["memory"] = {p: peak_memory(p, mode, cfg) for p in PROVIDERS}
    for p, s in steps.items():
        assert np.isfinite(float(s(x, ids))), p
