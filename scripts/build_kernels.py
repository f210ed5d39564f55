#!/usr/bin/env python
"""Developer command over the package's one native build (build_support/native_build.py).

``pip install -e .`` already builds the op; this rebuilds it in place, e.g.
after editing kernels/, without reinstalling:

    python scripts/build_kernels.py              # build, exit 1 on failure
    python scripts/build_kernels.py --check      # build, then load and verify
    python scripts/build_kernels.py --check-only # verify the installed/in-tree build
    python scripts/build_kernels.py --xla off    # a library without the XLA lowering
    python scripts/build_kernels.py --output /tmp/x.so  # build elsewhere (tests)

Output: src/fusedfocal/ops/_fused_focal_ops.so and _build_info.json beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build_support"))

import native_build  # noqa: E402
from native_build import BuildError, log  # noqa: E402

TARGET = ROOT / "src" / "fusedfocal" / "ops" / native_build.LIBRARY_NAME


def check(path: Path) -> None:
    """Load the library and compare it with the XLA path on a small input."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import tensorflow as tf

    try:
        ops = tf.load_op_library(str(path))
    except (tf.errors.NotFoundError, OSError) as e:
        raise BuildError(f"cannot load {path}: {e}") from e
    import fusedfocal

    rng = np.random.default_rng(0)
    x = tf.constant((rng.standard_normal((257, 19)) * 5).astype(np.float32))
    y = (rng.random((257, 19)) < 0.3).astype(np.float32)
    for gamma in (0.0, 2.0, 3.7):
        loss, grad = ops.fused_focal_loss_grad(x, y, np.float32(0.25), [], gamma=gamma)
        with tf.GradientTape() as tape:
            tape.watch(x)
            ref_l = fusedfocal.sigmoid_focal_loss(x, y, gamma=gamma, alpha=0.25,
                                                  implementation="xla")
        ref_g = tape.gradient(ref_l, x)
        for what, a, b in (("loss", loss, ref_l), ("grad", grad, ref_g)):
            a, b = a.numpy(), b.numpy()
            tol = 2e-6 * np.abs(b) + 1e-6 * np.abs(b).max()
            if not np.all(np.abs(a - b) <= tol):
                raise BuildError(f"--check: {what} differs from the XLA path at gamma={gamma}: "
                                 f"max abs diff {np.abs(a - b).max():.3g}")
    if _has_xla_kernel():
        # The XLA lowering: the same op inside jit_compile=True.
        xla_fn = tf.function(jit_compile=True)(
            lambda x: ops.fused_focal_loss_grad(x, y, np.float32(0.25), [], gamma=2.0))
        loss, grad = xla_fn(x)
        ref, ref_g = ops.fused_focal_loss_grad(x, y, np.float32(0.25), [], gamma=2.0)
        if not (np.allclose(loss, ref, rtol=1e-6, atol=0) and np.allclose(grad, ref_g, rtol=1e-6, atol=0)):
            raise BuildError("--check: the XLA custom call differs from the TF kernel")
        hlo = xla_fn.experimental_get_compiler_ir(x)(stage="optimized_hlo")
        if "fusedfocal_focal_loss" not in hlo:
            raise BuildError("--check: the optimized HLO has no fusedfocal_focal_loss custom call")
        log("check passed: the XLA custom call runs and matches the TF kernel")
    log(f"check passed: {_show(path)} loads and matches the XLA path")


def _has_xla_kernel() -> bool:
    from tensorflow.python.framework import kernels

    found = kernels.get_registered_kernels_for_op("FusedFocalLossGrad")
    return any(k.device_type == "XLA_CPU_JIT" for k in found.kernel)


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _up_to_date(target: Path) -> bool:
    """The library and its build info exist, and are newer than every kernel and build source."""
    info = target.parent / native_build.INFO_NAME
    if not (target.exists() and info.exists()):
        return False
    sources = [p for d in ("kernels", "build_support") for p in (ROOT / d).rglob("*") if p.is_file()]
    built = min(target.stat().st_mtime, info.stat().st_mtime)
    return all(p.stat().st_mtime <= built for p in sources)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="after building, load and verify")
    p.add_argument("--check-only", action="store_true", help="verify an existing build")
    p.add_argument("--cuda", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--xla", choices=("on", "off"), default="on",
                   help="build the XLA lowering (custom call) of the op (default on)")
    p.add_argument("--output", default=None,
                   help="write the library here instead of src/fusedfocal/ops/ (tests)")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--build-dir", default=str(ROOT / "build" / "kernels"))
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when the library is newer than every source")
    args = p.parse_args(argv)
    target = Path(args.output).resolve() if args.output else TARGET
    try:
        if args.check_only:
            pass
        elif not args.force and not args.output and args.xla == "on" and _up_to_date(target):
            log(f"{_show(target)} is up to date (use --force to rebuild)")
        else:
            native_build.build(target, cuda=args.cuda, xla=args.xla, jobs=args.jobs,
                               build_dir=Path(args.build_dir), verbose=args.verbose)
        if args.check or args.check_only:
            if not target.exists():
                raise BuildError(f"{target} does not exist; run `pip install -e .` or "
                                 "scripts/build_kernels.py")
            check(target)
    except BuildError as e:
        log(f"FAILED: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
