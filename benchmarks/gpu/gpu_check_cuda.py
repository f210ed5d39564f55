#!/usr/bin/env python
"""GPU check of the standalone CUDA kernel (kernels/focal_cuda.cu), no TensorFlow.

For one H100 machine with nvcc, PyTorch and JAX (CuPy optional), in under 5 minutes:

    python benchmarks/gpu/gpu_check_cuda.py # results to $OUT or benchmarks/results/
    python benchmarks/gpu/gpu_check_cuda.py --quick # one small shape, no torch.compile

1. builds kernels/focal_cuda.cu for sm_90 as a shared library (nvcc -shared)
   and calls its C entry point through ctypes on PyTorch-allocated memory;
2. checks loss and gradient against the float64 reference (tests/reference.py)
   for float32/bfloat16/float16, gamma in {0, 0.5, 2, 3.7}, alpha in
   {None, 0.25, [C]}, label smoothing {0, 0.1}, reduction none and sum;
3. times forward+backward (loss summed, gradient w.r.t. logits) at
   [65536,19], [8192,1000], [32768,4096] in float32, bfloat16, float16 for:
   ours (one kernel), torchvision.ops.sigmoid_focal_loss eager and under
   torch.compile, the same fused math in JAX under jax.jit, the clipped recipe
   in JAX under jax.jit, and a device-to-device copy (bandwidth floor);
4. writes gpu_check_cuda.md and gpu_check_cuda.json to $OUT (if set) or
   benchmarks/results/.

Floor = bytes(logits read + labels read (float32) + grad written) / copy
bandwidth, copy bandwidth = 2 * bytes / t(copy of a float32 tensor of the
same element count). Exit status 1 if the accuracy check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
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
import reference as R  # noqa: E402

SHAPES = [(65536, 19), (8192, 1000), (32768, 4096)]
DTYPES = ["float32", "bfloat16", "float16"]
DTYPE_CODE = {"float32": 0, "float16": 1, "bfloat16": 2}
ALPHA, GAMMA = 0.25, 2.0
T0 = time.perf_counter()


class Args(ctypes.Structure):
    """Mirror of FusedFocalCudaArgs (kernels/focal_cuda.h)."""

    _fields_ = [
        ("dtype", ctypes.c_int32), ("n", ctypes.c_int64), ("classes", ctypes.c_int64),
        ("logits", ctypes.c_void_p), ("labels", ctypes.c_void_p), ("weights", ctypes.c_void_p),
        ("alpha_mode", ctypes.c_int32), ("alpha", ctypes.c_void_p), ("gamma", ctypes.c_float),
        ("label_smoothing", ctypes.c_float), ("reduction", ctypes.c_int32),
        ("loss", ctypes.c_void_p), ("grad", ctypes.c_void_p),
    ]


def log(msg):
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def build(workdir: Path) -> ctypes.CDLL:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    lib = workdir / "libfocal_cuda.so"
    cmd = [nvcc, "-O3", "-std=c++17", "-arch=sm_90", "-Xcompiler", "-fPIC", "-shared",
           f"-I{ROOT / 'kernels'}", str(ROOT / "kernels" / "focal_cuda.cu"), "-o", str(lib)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"built {lib.name} in {time.perf_counter() - t:.1f} s: {' '.join(cmd)}")
    so = ctypes.CDLL(str(lib))
    so.fusedfocal_cuda_workspace_bytes.restype = ctypes.c_size_t
    so.fusedfocal_cuda_workspace_bytes.argtypes = [ctypes.c_int64]
    so.fusedfocal_cuda_forward_backward.restype = ctypes.c_int
    so.fusedfocal_cuda_forward_backward.argtypes = [
        ctypes.POINTER(Args), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    so.fusedfocal_cuda_error_string.restype = ctypes.c_char_p
    return so


class Ours:
    """Calls the kernel on torch tensors; keeps buffers for repeated calls."""

    def __init__(self, so, torch, x, y, alpha=None, gamma=GAMMA, ls=0.0, reduction=1):
        self.so, self.torch = so, torch
        n = x.numel()
        self.loss = torch.empty(n if reduction == 0 else 1, device=x.device, dtype=torch.float32)
        self.grad = torch.empty_like(x)
        ws = so.fusedfocal_cuda_workspace_bytes(n)
        self.ws = torch.empty(max(ws, 4), device=x.device, dtype=torch.uint8)
        if alpha is None:
            mode, self.alpha = 0, None
        else:
            a = torch.as_tensor(np.atleast_1d(np.asarray(alpha, np.float32)), device=x.device)
            mode, self.alpha = (1 if a.numel() == 1 else 2), a
        self.x, self.y = x, y
        self.args = Args(DTYPE_CODE[str(x.dtype).replace("torch.", "")], n, x.shape[-1],
                         x.data_ptr(), y.data_ptr(), None, mode,
                         self.alpha.data_ptr() if self.alpha is not None else None,
                         gamma, ls, reduction, self.loss.data_ptr(), self.grad.data_ptr())
        self.ws_bytes = self.ws.numel()

    def __call__(self):
        stream = self.torch.cuda.current_stream().cuda_stream
        rc = self.so.fusedfocal_cuda_forward_backward(
            ctypes.byref(self.args), ctypes.c_void_p(self.ws.data_ptr()), self.ws_bytes,
            ctypes.c_void_p(stream))
        if rc:
            raise RuntimeError(self.so.fusedfocal_cuda_error_string(rc).decode())
        return self.loss, self.grad


def check_accuracy(so, torch) -> list:
    failures = []
    rng = np.random.default_rng(0)
    C = 19
    x32 = (rng.standard_normal((1027, C)) * 6).astype(np.float32)
    x32[0, :6] = [100, -100, 1e4, -1e4, 65504, -65504]
    hard = (rng.random(x32.shape) < 0.3).astype(np.float32)
    soft = rng.random(x32.shape).astype(np.float32)
    for dtype in DTYPES:
        tdt = getattr(torch, dtype)
        xt = torch.as_tensor(x32, device="cuda").to(tdt)
        x64 = xt.double().cpu().numpy()
        eps = {"float32": 2e-6, "bfloat16": 2**-7, "float16": 2**-10}[dtype]
        for gamma in (0.0, 0.5, 2.0, 3.7):
            for alpha in (None, 0.25, np.linspace(0.1, 0.9, C)):
                for ls, y in ((0.0, hard), (0.1, soft)):
                    yt = torch.as_tensor(y, device="cuda")
                    kw = dict(gamma=gamma, alpha=alpha, label_smoothing=ls)
                    rl = R.sigmoid_focal(x64, y, **kw)
                    rg = R.sigmoid_focal_grad(x64, y, **kw)
                    for red in (0, 1):
                        loss, grad = Ours(so, torch, xt, yt, alpha, gamma, ls, red)()
                        torch.cuda.synchronize()
                        gl = grad.double().cpu().numpy()
                        ll = loss.double().cpu().numpy()
                        atol = 1e-6 * np.abs(rg).max() + (6e-8 if dtype == "float16" else 0)
                        ok_g = np.all(np.abs(gl - rg) <= eps * np.abs(rg) + atol)
                        if red == 0:
                            ok_l = np.all(np.abs(ll.reshape(rl.shape) - rl)
                                          <= 2e-6 * np.abs(rl) + 1e-6 * np.abs(rl).max())
                        else:
                            ok_l = abs(ll[0] - rl.sum()) <= 1e-5 * abs(rl.sum())
                        ok_f = np.all(np.isfinite(gl)) and np.all(np.isfinite(ll))
                        if not (ok_g and ok_l and ok_f):
                            failures.append(dict(dtype=dtype, gamma=gamma, alpha=str(alpha)[:20],
                                                 ls=ls, reduction=red, loss_ok=bool(ok_l),
                                                 grad_ok=bool(ok_g), finite=bool(ok_f)))
    log(f"accuracy: {len(failures)} failing configurations")
    return failures


def time_fn(fn, sync, warmup=3, runs=20, min_sample_s=2e-3):
    """Median (p20, p80) ms per call; each sample runs enough calls to last
    min_sample_s between two synchronisations (launch latency amortised)."""
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    inner = max(1, min(1000, int(min_sample_s / max(time.perf_counter() - t, 1e-7))))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        times.append((time.perf_counter() - t) / inner)
    q = np.percentile(np.array(times) * 1e3, [50, 20, 80])
    return dict(median_ms=float(q[0]), p20_ms=float(q[1]), p80_ms=float(q[2]), calls=inner)


def torch_providers(torch, compile_ok):
    try:
        from torchvision.ops import sigmoid_focal_loss as tv_focal
        tv_name = "torchvision"
    except Exception:  # noqa: BLE001 - the same formula, inline (torchvision/ops/focal_loss.py)
        import torch.nn.functional as F

        def tv_focal(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
            p = torch.sigmoid(inputs)
            ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
            p_t = p * targets + (1 - p) * (1 - targets)
            loss = ce * ((1 - p_t) ** gamma)
            if alpha >= 0:
                loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
            return loss.sum() if reduction == "sum" else loss
        tv_name = "torchvision-formula(inline)"

    def fwd_bwd(f):
        def step(x, y):
            x.grad = None
            loss = f(x, y, alpha=ALPHA, gamma=GAMMA, reduction="sum")
            loss.backward()
            return loss, x.grad
        return step

    out = {f"{tv_name}/eager": fwd_bwd(tv_focal)}
    if compile_ok:
        out[f"{tv_name}/torch.compile"] = fwd_bwd(torch.compile(tv_focal, dynamic=False))
    return out


def jax_providers():
    import jax
    import jax.numpy as jnp

    def fused_sum_and_grad(x, y):  # focal.py's formulation, float32 math
        xf = x.astype(jnp.float32)
        ax = jnp.abs(xf)
        t = jnp.exp(-ax)
        u = jnp.where(xf >= 0, 1 - y, y)
        l1p = jnp.log1p(t)
        ce = u * ax + l1p
        inv = 1 / (1 + t)
        sn = t * inv
        d = u + (1 - u) * t
        q = d * inv
        mod = q * q
        r = jnp.where(d > 0, sn / jnp.where(d > 0, d, 1), 0)
        g = mod * (u - sn + GAMMA * (2 * u - 1) * r * ce)
        a_t = (1 - ALPHA) + (2 * ALPHA - 1) * y
        loss = jnp.sum(a_t * mod * ce)
        grad = (a_t * jnp.where(xf >= 0, g, -g)).astype(x.dtype)
        return loss, grad

    def clipped_sum(x, y):
        p = jnp.clip(jax.nn.sigmoid(x.astype(jnp.float32)), 1e-7, 1 - 1e-7)
        p_t = y * p + (1 - y) * (1 - p)
        a_t = y * ALPHA + (1 - y) * (1 - ALPHA)
        return jnp.sum(-a_t * (1 - p_t) ** 2 * jnp.log(p_t))

    return {"jax-fused/jit": jax.jit(fused_sum_and_grad),
            "jax-clipped/jit": jax.jit(jax.value_and_grad(clipped_sum))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=270.0,
                    help="skip torch.compile / remaining timings past this wall time")
    args = ap.parse_args(argv)
    import torch

    assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
    dev = torch.cuda.get_device_name(0)
    log(f"device {dev}; torch {torch.__version__}")
    workdir = Path(tempfile.mkdtemp(prefix="fusedfocal_cuda_"))
    so = build(workdir)
    failures = check_accuracy(so, torch)

    try:
        import jax
        jax_ok = any(d.platform == "gpu" for d in jax.devices())
        jprov = jax_providers() if jax_ok else {}
    except Exception as e:  # noqa: BLE001
        log(f"JAX unavailable: {e!r}")
        jax, jprov = None, {}
    shapes = SHAPES[:1] if args.quick else SHAPES
    rows = []
    compiled_once = False
    for shape in shapes:
        n = int(np.prod(shape))
        for dtype in DTYPES:
            left = args.budget_s - (time.perf_counter() - T0)
            if left < 15:
                log(f"budget spent: skipping {shape} {dtype}")
                continue
            tdt = getattr(torch, dtype)
            gen = torch.Generator(device="cuda").manual_seed(0)
            x = (torch.randn(shape, device="cuda", generator=gen) * 3).to(tdt)
            y = (torch.rand(shape, device="cuda", generator=gen) < 0.1).float()
            res = {}
            ours = Ours(so, torch, x, y, ALPHA)
            res["ours/cuda"] = time_fn(ours, torch.cuda.synchronize, runs=args.runs)
            src = torch.empty(n, device="cuda", dtype=torch.float32)
            dst = torch.empty_like(src)
            res["copy(float32)"] = time_fn(lambda: dst.copy_(src), torch.cuda.synchronize,
                                           runs=args.runs)
            del src, dst
            compile_ok = (not args.quick) and left > (120 if not compiled_once else 45)
            xt = x.detach().clone().requires_grad_(True)
            yt = y.to(tdt)
            for name, step in torch_providers(torch, compile_ok).items():
                try:
                    res[name] = time_fn(lambda: step(xt, yt), torch.cuda.synchronize,
                                        runs=args.runs)
                    compiled_once |= "compile" in name
                except Exception as e:  # noqa: BLE001
                    log(f"{name} failed: {e!r}")
            del xt, yt
            torch.cuda.empty_cache()
            if jprov:
                import jax.numpy as jnp

                jx = jnp.asarray(x.float().cpu().numpy()).astype(getattr(jnp, dtype))
                jy = jnp.asarray(y.cpu().numpy())
                for name, f in jprov.items():
                    last = []

                    def call(f=f, last=last):
                        last[:] = [f(jx, jy)]

                    res[name] = time_fn(call, lambda last=last: jax.block_until_ready(last[0]),
                                        runs=args.runs)
                del jx, jy
            del x, y, ours
            torch.cuda.empty_cache()
            bw = 2 * 4 * n / (res["copy(float32)"]["median_ms"] / 1e3)
            ebytes = 4 if dtype == "float32" else 2
            floor_ms = n * (ebytes + 4 + ebytes) / bw * 1e3
            for name, r in res.items():
                row = dict(shape=list(shape), dtype=dtype, provider=name, **r,
                           floor_ms=floor_ms, x_floor=r["median_ms"] / floor_ms,
                           copy_GBps=bw / 1e9)
                if name != "ours/cuda":
                    row["ours_speedup"] = r["median_ms"] / res["ours/cuda"]["median_ms"]
                rows.append(row)
            log(f"{shape} {dtype}: ours {res['ours/cuda']['median_ms']:.3f} ms, "
                f"floor {floor_ms:.3f} ms")

    meta = dict(date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([Path(sys.executable).name, *sys.argv]), device=dev,
                torch=torch.__version__, jax=getattr(jax, "__version__", None),
                host=platform.node(), accuracy_failures=failures,
                floor="n*(bytes(logits)+4+bytes(grad)) / (2*4*n/t_copy_float32)",
                fwd_bwd="loss summed + gradient w.r.t. logits; warm-up 3, median of runs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# CUDA kernel check ({meta['date']}, {dev})", "",
             f"`{meta['command']}`; accuracy failures: {len(failures)}", "",
             "| shape | dtype | provider | median ms | p20 | p80 | x floor | ours speed-up |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} | {r['provider']} | "
                     f"{r['median_ms']:.3f} | {r['p20_ms']:.3f} | {r['p80_ms']:.3f} | "
                     f"{r['x_floor']:.2f} | {r.get('ours_speedup', float('nan')):.2f} |")
    (out / "gpu_check_cuda.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_check_cuda.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print("\n".join(lines))
    log(f"wrote {out}/gpu_check_cuda.{{md,json}}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
