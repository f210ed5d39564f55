#!/usr/bin/env python
"""The XLA custom call of the fused focal loss, run through JAX's FFI.

TensorFlow's XLA lowering (kernels/fused_focal_xla.cc) emits a typed-FFI
custom call "fusedfocal_focal_loss"; its handlers are kernels/focal_ffi_cpu.cc
(host) and kernels/focal_ffi_cuda.cc (CUDA, launching kernels/focal_cuda.cu).
JAX binds the same handler symbols with ``jax.ffi``, so this script runs
exactly the code that TensorFlow's XLA would run, on a machine that has JAX
but no TensorFlow (the lent GPU machine):

    python benchmarks/gpu/check_cuda_ffi.py                    # CUDA; results to $OUT
    python benchmarks/gpu/check_cuda_ffi.py --platform cpu     # host handler (any machine)
    python benchmarks/gpu/check_cuda_ffi.py --quick

1. builds the handler (+ the CUDA kernel) into a shared library against
   JAX's FFI headers (``jax.ffi.include_dir()``): nvcc for CUDA, g++ for cpu;
2. checks the custom call inside ``jax.jit`` against the float64 reference
   (tests/reference.py) for float32/bfloat16/float16, gamma {0, 0.5, 2, 3.7},
   alpha {None, 0.25, [C]}, label smoothing {0, 0.1}, weights {none, [B,C]},
   reduction none/sum/mean (loss and gradient);
3. times forward+backward (summed loss + gradient w.r.t. logits) at
   [65536,19], [8192,1000], [32768,1024], [32768,4096] in each dtype for the
   custom call, XLA's own fusion of the same formula (``jax.jit``), the
   clipped recipe (``jax.jit``), torchvision's focal loss (eager and
   torch.compile, CUDA only, when PyTorch is installed) and a device copy of
   the logits (the bandwidth floor);
4. writes check_cuda_ffi-<platform>.{md,json} to $OUT (or benchmarks/results/).

Exit status 1 when an accuracy check fails. Helpers (reference formula,
timing, torch providers) come from gpu_check_cuda.py (beside this file), the ctypes
check of the bare CUDA kernel.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check_cuda
import reference as R  # noqa: E402

TARGET = "fusedfocal_focal_loss"
SHAPES = [(65536, 19), (8192, 1000), (32768, 1024), (32768, 4096)]
DTYPES = ["float32", "bfloat16", "float16"]
ALPHA, GAMMA = 0.25, 2.0
T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def build(platform: str, workdir: Path) -> ctypes.CDLL:
    import jax

    inc = jax.ffi.include_dir()
    lib = workdir / f"libfusedfocal_ffi_{platform}.so"
    k = ROOT / "kernels"
    if platform == "cuda":
        nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
        cmd = [nvcc, "-O3", "-std=c++17", "-arch=sm_90", "-Xcompiler", "-fPIC", "-shared",
               f"-I{k}", f"-I{inc}", str(k / "focal_cuda.cu"), str(k / "focal_ffi_cuda.cc"),
               "-o", str(lib)]
    else:  # the host handler and the three instruction-set copies of the CPU library
        cxx = os.environ.get("CXX", "g++")
        objs = []
        for name, width, march in (("sse2", 8, "x86-64"), ("avx2", 8, "x86-64-v3"),
                                   ("avx512", 16, "x86-64-v4")):
            obj = workdir / f"focal_cpu_{name}.o"
            subprocess.run([cxx, "-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", "-Wno-psabi", f"-I{k}",
                            f"-march={march}", f"-DFF_VEC_WIDTH={width}",
                            f"-DFF_EXPORT_NAME=fusedfocal_cpu_{name}", "-c",
                            str(k / "focal_cpu.cc"), "-o", str(obj)], check=True)
            objs.append(str(obj))
        cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-DNDEBUG", f"-I{k}",
               f"-isystem{inc}", str(k / "focal_ffi_cpu.cc"), *objs, "-o", str(lib)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"built {lib.name} in {time.perf_counter() - t:.1f} s")
    so = ctypes.cdll.LoadLibrary(str(lib))
    symbol = getattr(so, f"fusedfocal_focal_loss_{'cuda' if platform == 'cuda' else 'host'}")
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(symbol), platform=platform.upper()
                                if platform == "cuda" else "cpu")
    return so


def focal_call(x, y, alpha=None, weights=None, *, gamma=GAMMA, label_smoothing=0.0,
               reduction=1):
    """The custom call exactly as fused_focal_xla.cc emits it: rank-1 operands,
    (loss, grad) results, the four attributes."""
    import jax
    import jax.numpy as jnp

    n = x.size
    classes = x.shape[-1]
    a = jnp.zeros((0,), jnp.float32) if alpha is None else jnp.reshape(jnp.asarray(alpha, jnp.float32), (-1,))
    w = jnp.zeros((0,), jnp.float32) if weights is None else jnp.reshape(weights, (n,))
    loss_shape = (n,) if reduction == 0 else ()
    loss, grad = jax.ffi.ffi_call(
        TARGET, (jax.ShapeDtypeStruct(loss_shape, jnp.float32), jax.ShapeDtypeStruct((n,), x.dtype)))(
        jnp.reshape(x, (n,)), jnp.reshape(y.astype(jnp.float32), (n,)), a, w,
        gamma=np.float32(gamma), label_smoothing=np.float32(label_smoothing),
        reduction=np.int32(reduction), classes=np.int64(classes))
    if reduction == 0:
        loss = jnp.reshape(loss, x.shape)
    return loss, jnp.reshape(grad, x.shape)


def check_accuracy(device) -> list:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    rows, C = 67, 19
    x = rng.normal(0, 6, (rows, C)).astype(np.float32)
    x[0] = np.linspace(-100, 100, C)
    failures, checked = [], 0
    for dtype in DTYPES:
        xd = jax.device_put(jnp.asarray(x).astype(dtype), device)
        x64 = np.asarray(xd.astype(jnp.float32), np.float64)
        for soft in (False, True):
            y = (rng.random((rows, C)) if soft else (rng.random((rows, C)) < 0.3)).astype(np.float32)
            yd = jax.device_put(jnp.asarray(y), device)
            for gamma in (0.0, 0.5, 2.0, 3.7):
                for alpha in (None, 0.25, np.linspace(0.1, 0.9, C)):
                    for ls in (0.0, 0.1):
                        for weighted in (False, True):
                            w = rng.random((rows, C)).astype(np.float32) if weighted else None
                            for red in (0, 1, 2):
                                f = jax.jit(lambda x, y, w, red=red, gamma=gamma, alpha=alpha, ls=ls:
                                            focal_call(x, y, alpha, w, gamma=gamma,
                                                       label_smoothing=ls, reduction=red))
                                loss, grad = f(xd, yd, None if w is None else jax.device_put(w, device))
                                kw = dict(gamma=gamma, alpha=alpha, label_smoothing=ls)
                                want = R.sigmoid_focal(x64, y, **kw)
                                want_g = R.sigmoid_focal_grad(x64, y, **kw)
                                if w is not None:
                                    want, want_g = want * w, want_g * w
                                if red == 1:
                                    want = want.sum()
                                elif red == 2:
                                    want, want_g = want.sum() / want.size, want_g / want.size
                                gl = np.asarray(loss, np.float64)
                                gg = np.asarray(grad.astype(jnp.float32), np.float64)
                                eps = {"float32": 2e-6, "bfloat16": 2**-7, "float16": 2**-10}[dtype]
                                ok_l = np.allclose(gl, want, rtol=5e-6, atol=1e-6 * np.abs(want).max())
                                ok_g = np.allclose(gg, want_g, rtol=eps,
                                                   atol=2e-6 * np.abs(want_g).max() + 6e-8)
                                checked += 1
                                if not (ok_l and ok_g):
                                    failures.append(dict(dtype=dtype, soft=soft, gamma=gamma,
                                                         alpha=None if alpha is None else str(alpha)[:12],
                                                         ls=ls, weighted=weighted, reduction=red,
                                                         loss_ok=bool(ok_l), grad_ok=bool(ok_g)))
    log(f"accuracy: {checked} configurations, {len(failures)} failing")
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true", help="one shape, float32, fewer runs")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="skip the remaining timings past this wall time")
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp

    import gpu_check_cuda as G  # time_fn, jax_providers, torch_providers

    device = jax.devices("gpu" if args.platform == "cuda" else "cpu")[0]
    log(f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}")
    work = Path(tempfile.mkdtemp(prefix="fusedfocal_ffi_"))
    build(args.platform, work)
    failures = check_accuracy(device)

    torch = None
    if args.platform == "cuda":
        try:
            import torch as _torch

            torch = _torch if _torch.cuda.is_available() else None
        except ImportError:
            torch = None
    shapes = SHAPES[1:2] if args.quick else SHAPES
    dtypes = DTYPES[:1] if args.quick else DTYPES
    jp = G.jax_providers()
    ours = jax.jit(lambda x, y: focal_call(x, y, ALPHA))
    copy = jax.jit(lambda x: x * 1)  # one read + one write of the logits
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            if time.perf_counter() - T0 > args.budget_s:
                log(f"budget reached: skipping {shape} {dtype}")
                continue
            rng = np.random.default_rng(1)
            x = jax.device_put(jnp.asarray(rng.normal(0, 4, shape).astype(np.float32)).astype(dtype), device)
            y = jax.device_put(jnp.asarray((rng.random(shape) < 0.1).astype(np.float32)), device)
            sync = lambda: jax.block_until_ready(x)  # noqa: E731
            provs = {"fusedfocal custom call/jit": lambda: jax.block_until_ready(ours(x, y)),
                     "xla fusion of our formula/jit": lambda: jax.block_until_ready(jp["jax-fused/jit"](x, y)),
                     "clipped recipe/jit": lambda: jax.block_until_ready(jp["jax-clipped/jit"](x, y)),
                     "device copy (floor)": lambda: jax.block_until_ready(copy(x))}
            timings = {name: G.time_fn(fn, sync, runs=args.runs) for name, fn in provs.items()}
            if torch is not None:
                tdt = getattr(torch, dtype)
                tx = torch.from_numpy(np.asarray(x.astype(jnp.float32))).cuda().to(tdt).requires_grad_(True)
                ty = torch.from_numpy(np.asarray(y)).cuda().to(tdt)
                for name, step in G.torch_providers(torch, compile_ok=not args.quick).items():
                    try:
                        timings[name] = G.time_fn(lambda: step(tx, ty), torch.cuda.synchronize,
                                                  runs=args.runs)
                    except Exception as e:  # noqa: BLE001 - report, keep going
                        log(f"{name}: {e!r}")
            itemsize = jnp.dtype(dtype).itemsize
            n = int(np.prod(shape))
            copy_ms = timings["device copy (floor)"]["median_ms"]
            bw = 2 * n * itemsize / (copy_ms / 1e3)
            floor_ms = n * (2 * itemsize + 4) / bw * 1e3  # logits + grad (dtype) + labels (f32)
            for name, t in timings.items():
                rows.append(dict(shape=list(shape), dtype=dtype, provider=name, floor_ms=floor_ms,
                                 x_floor=t["median_ms"] / floor_ms, **t))
            log(f"{shape} {dtype}: ours {timings['fusedfocal custom call/jit']['median_ms']:.3f} ms, "
                f"xla fusion {timings['xla fusion of our formula/jit']['median_ms']:.3f} ms, "
                f"floor {floor_ms:.3f} ms")

    meta = dict(date=dt.datetime.now().isoformat(timespec="seconds"), device=device.device_kind,
                platform=args.platform, jax=jax.__version__, host=_platform.node(),
                accuracy_failures=failures)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"check_cuda_ffi-{args.platform}"
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# fusedfocal_focal_loss custom call through jax.ffi ({args.platform})", "",
             f"{meta['date']}, {meta['device']}, jax {meta['jax']}. Accuracy: "
             f"{'all configurations pass' if not failures else f'{len(failures)} failing'}.", "",
             "| shape | dtype | provider | median ms | p20 | p80 | x floor |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['provider']} | {r['median_ms']:.3f} "
                     f"| {r['p20_ms']:.3f} | {r['p80_ms']:.3f} | {r['x_floor']:.2f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log(f"wrote {stem}.md/.json")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
