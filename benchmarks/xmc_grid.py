"""The XMC step grid, one configuration per fresh subprocess (issue 19).

``python benchmarks/xmc_grid.py --out benchmarks/results/xmc-step-cpu-DATE.jsonl
[--C 670091 3000000] [--H 256] [--B 256 1024] [--modes xla graph]
[--providers fused fusedfocal keras3] [--steps 3] [--limit-gib 16]``

Appends one JSON line per run (``benchmarks/_xmc_step.py``'s output, or
``{"exceeded_gib": ...}`` when the watchdog ended a run past the limit, or
``{"failed": ...}``). Runs are sequential: each needs most of the machine.
Wrap it in ``flock /work/heavy.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_one(provider, mode, c, h, b, *, steps, limit_gib, extra=()):
    cmd = [sys.executable, os.path.join(HERE, "_xmc_step.py"), provider, mode, str(c), str(h), str(b),
           "--steps", str(steps), "--limit-gib", str(limit_gib), *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    row = json.loads(lines[-1]) if lines else {"failed": proc.stderr[-2000:]}
    row.update(provider=provider, mode=mode, C=c, H=h, B=b, returncode=proc.returncode,
               started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), extra=list(extra))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--C", type=int, nargs="+", default=[670091, 3000000])
    p.add_argument("--H", type=int, nargs="+", default=[256])
    p.add_argument("--B", type=int, nargs="+", default=[256])
    p.add_argument("--modes", nargs="+", default=["xla"])
    p.add_argument("--providers", nargs="+", default=["fused", "fusedfocal", "keras3"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--limit-gib", type=float, default=16.0)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="passed to _xmc_step.py")
    a = p.parse_args(argv)
    for c in a.C:
        for h in a.H:
            for b in a.B:
                for mode in a.modes:
                    for provider in a.providers:
                        row = run_one(provider, mode, c, h, b, steps=a.steps, limit_gib=a.limit_gib,
                                      extra=a.extra)
                        with open(a.out, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(json.dumps({k: row.get(k) for k in ("provider", "mode", "C", "H", "B",
                                                                    "step_s", "peak_above_resting_bytes",
                                                                    "exceeded_gib", "losses")}), flush=True)


if __name__ == "__main__":
    main()
