#!/usr/bin/env python
"""Build the native fused focal loss op against the installed TensorFlow.

    python scripts/build_kernels.py              # build, exit 1 on failure
    python scripts/build_kernels.py --optional   # build, never fail (pip/Quickstart)
    python scripts/build_kernels.py --check      # build, then load and verify
    python scripts/build_kernels.py --check-only # verify an existing build

Output: src/fusedfocal/ops/_fused_focal_ops.so (CPU kernels for float16,
bfloat16 and float32; AVX-512 / AVX2 / SSE2 chosen at run time), with the
XLA lowering of the op (a typed XLA FFI custom call) and its host handler,
so the same one-pass kernel runs inside jit_compile=True. ``--xla off``
leaves both out (the library then works only outside XLA).

CUDA: the TensorFlow GPU kernel is compiled in only with ``--cuda on`` or,
under ``--cuda auto`` (default), when nvcc is on PATH, TensorFlow is a CUDA
build and TensorFlow sees a GPU. Otherwise, if nvcc exists, the standalone
CUDA kernel (kernels/focal_cuda.cu) is only compile-checked for sm_90, and
so are its XLA FFI handler (kernels/focal_ffi_cuda.cc, nvcc) and the XLA GPU
registration (kernels/fused_focal_xla.cc with FUSEDFOCAL_XLA_CUDA=1, g++).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
TARGET = ROOT / "src" / "fusedfocal" / "ops" / "_fused_focal_ops.so"

# (name, vector width in floats, -march): one copy of focal_cpu.cc each.
ISAS = [("sse2", 8, "x86-64"), ("avx2", 8, "x86-64-v3"), ("avx512", 16, "x86-64-v4")]
WARN_FLAGS = ["-Wall", "-Wno-psabi", "-Wno-deprecated-declarations", "-Wno-sign-compare",
              "-Wno-unused-function"]


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[build_kernels] {msg}", flush=True)


def run(cmd, verbose: bool) -> None:
    if verbose:
        log(" ".join(map(str, cmd)))
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{proc.stderr[-4000:]}")


def tf_flags():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except Exception as e:  # noqa: BLE001 - any import failure is a build failure
        raise BuildError(f"cannot import tensorflow ({e!r}); install it first") from e
    return tf, list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def cuda_plan(tf, mode: str):
    """Returns (build_gpu_kernel, nvcc path or None, reason)."""
    nvcc = shutil.which("nvcc")
    if mode == "off":
        return False, nvcc, "--cuda off"
    built = tf.test.is_built_with_cuda()
    gpus = tf.config.list_physical_devices("GPU") if built else []
    if mode == "on":
        if not nvcc:
            raise BuildError("--cuda on, but nvcc is not on PATH")
        if not built:
            raise BuildError("--cuda on, but this TensorFlow is not a CUDA build")
        return True, nvcc, "--cuda on"
    if nvcc and built and gpus:
        return True, nvcc, "nvcc found, CUDA build of TensorFlow, GPU visible"
    why = ("no nvcc" if not nvcc else "TensorFlow is not a CUDA build" if not built
           else "TensorFlow sees no GPU")
    return False, nvcc, why


def cuda_home(nvcc: str) -> Path:
    """$CUDA_HOME, else the toolkit nvcc belongs to (nvcc may be a wrapper script)."""
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                 str(Path(nvcc).resolve().parents[1]), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_runtime.h").exists():
            return Path(cand)
    raise BuildError(f"cannot find the CUDA toolkit of {nvcc}; set CUDA_HOME")


def build(args) -> Path:
    t0 = time.perf_counter()
    tf, cflags, lflags = tf_flags()
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        raise BuildError(f"C++ compiler {cxx!r} not found (set CXX)")
    out = Path(args.build_dir)
    out.mkdir(parents=True, exist_ok=True)
    gpu, nvcc, why = cuda_plan(tf, args.cuda)
    common = ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", f"-I{KERNELS}"] + WARN_FLAGS
    jobs = []  # (object, command)
    for name, width, march in ISAS:
        obj = out / f"focal_cpu_{name}.o"
        jobs.append((obj, [cxx, *common, f"-march={march}", f"-DFF_VEC_WIDTH={width}",
                           f"-DFF_EXPORT_NAME=fusedfocal_cpu_{name}", "-c",
                           KERNELS / "focal_cpu.cc", "-o", obj]))
    gpu_defs = ["-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU"] if gpu else []
    cuda_inc = []
    if gpu:  # the CUDA headers TensorFlow was built with, shipped in its include dir
        tf_inc = Path(tf.sysconfig.get_include())
        cuda_inc = [f"-I{tf_inc / 'third_party' / 'gpus' / 'cuda' / 'include'}"]
    tf_inc = Path(tf.sysconfig.get_include())
    # The XLA lowering includes tf2xla headers, which need two more of
    # TensorFlow's bundled third-party include folders.
    xla_inc = [f"-I{tf_inc / 'external' / 'highwayhash'}",
               f"-I{tf_inc / 'external' / 'farmhash_archive' / 'src'}"]
    xla_on = args.xla == "on"
    sources = ["fused_focal_ops.cc", "fused_focal_kernel.cc"]
    if xla_on:
        sources.append("fused_focal_xla.cc")
    xla_defs = ["-DFUSEDFOCAL_XLA_CUDA=1"] if gpu else []
    for src in sources:
        obj = out / src.replace(".cc", ".o")
        jobs.append((obj, [cxx, "-std=c++17", "-O2", "-fPIC", f"-I{KERNELS}", *WARN_FLAGS,
                           *cflags, *xla_inc, *gpu_defs, *xla_defs, *cuda_inc, "-c",
                           KERNELS / src, "-o", obj]))
    # FFI handlers: only the stable header-only API (xla/ffi/api), as system
    # headers so their warnings stay out of the log; registered with
    # TensorFlow's XLA at load time (FUSEDFOCAL_TF_REGISTER).
    ffi_flags = [cxx, "-std=c++17", "-O2", "-fPIC", "-DNDEBUG", f"-I{KERNELS}",
                 f"-isystem{tf_inc}", *WARN_FLAGS, "-DFUSEDFOCAL_TF_REGISTER=1"]
    if xla_on:
        obj = out / "focal_ffi_cpu.o"
        jobs.append((obj, [*ffi_flags, "-c", KERNELS / "focal_ffi_cpu.cc", "-o", obj]))
    checks = []  # compile-only objects, never linked
    cuda_obj = out / "focal_cuda.o"
    cuda_ffi_obj = out / "focal_ffi_cuda.o"
    if nvcc:
        arch = ["-arch=sm_90"] if not gpu else ["-gencode=arch=compute_80,code=sm_80",
                                                 "-gencode=arch=compute_90,code=sm_90"]
        jobs.append((cuda_obj, [nvcc, "-O3", "-std=c++17", *arch, "-Xcompiler", "-fPIC",
                                f"-I{KERNELS}", "-c", KERNELS / "focal_cuda.cu", "-o", cuda_obj]))
        if xla_on:
            # The CUDA FFI handler is host code; nvcc hands it to the host
            # compiler with the CUDA toolkit's include path.
            jobs.append((cuda_ffi_obj, [nvcc, "-O2", "-std=c++17", "-Xcompiler", "-fPIC",
                                        "-DNDEBUG", f"-I{KERNELS}", f"-isystem={tf_inc}",
                                        "-DFUSEDFOCAL_TF_REGISTER=1", "-c",
                                        KERNELS / "focal_ffi_cuda.cc", "-o", cuda_ffi_obj]))
            if not gpu:  # the XLA GPU registration, compile-checked only
                chk = out / "fused_focal_xla_gpu_check.o"
                checks.append(chk)
                jobs.append((chk, [cxx, "-std=c++17", "-O0", "-fPIC", f"-I{KERNELS}", *WARN_FLAGS,
                                   *cflags, *xla_inc, "-DFUSEDFOCAL_XLA_CUDA=1", "-fsyntax-only",
                                   KERNELS / "fused_focal_xla.cc"]))
    log(f"compiling {len(jobs)} objects with -j{args.jobs} into {out}")
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run, cmd, args.verbose) for _, cmd in jobs]
        for f in futures:
            f.result()
    objs = [obj for obj, _ in jobs if obj not in (cuda_obj, cuda_ffi_obj, *checks)]
    link = [cxx, "-shared", "-o", out / TARGET.name, *objs]
    if gpu:
        link += [cuda_obj, *([cuda_ffi_obj] if xla_on else []),
                 f"-L{cuda_home(nvcc) / 'lib64'}", "-lcudart"]
    link += [*lflags]
    if xla_on:
        # XlaOpKernel, the XLA builder and XLA_FFI_GetApi live in libtensorflow_cc.
        link += [f"-L{Path(tf.__file__).parent}", "-l:libtensorflow_cc.so.2"]
    link += ["-Wl,-O1"]
    run(link, args.verbose)
    target = Path(args.output).resolve() if args.output else TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".so.tmp")
    shutil.copy2(out / TARGET.name, tmp)
    os.replace(tmp, target)
    dt = time.perf_counter() - t0
    log(f"XLA: custom call {'compiled in' if xla_on else 'left out (--xla off)'}")
    if gpu:
        log(f"CUDA: GPU kernel compiled in ({why})")
    elif nvcc:
        log(f"CUDA: GPU kernel not built ({why}); kernels/focal_cuda.cu compile-checked "
            f"for sm_90 with {nvcc}" + (", its XLA FFI handler with nvcc and the XLA GPU "
                                        "registration with g++" if xla_on else ""))
    else:
        log(f"CUDA: skipped ({why})")
    log(f"built {_show(target)} in {dt:.1f} s")
    return target


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


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


def _up_to_date() -> bool:
    """The library exists and is newer than every kernel source and this script."""
    if not TARGET.exists():
        return False
    sources = [p for p in (ROOT / "kernels").rglob("*") if p.is_file()] + [Path(__file__)]
    built = TARGET.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in sources)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optional", action="store_true",
                   help="on failure print the reason and exit 0 (the pure-TF path is used)")
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
    try:
        if args.check_only:
            path = Path(args.output).resolve() if args.output else TARGET
        elif not args.force and not args.output and args.xla == "on" and _up_to_date():
            log(f"{TARGET.relative_to(ROOT)} is up to date (use --force to rebuild)")
            path = TARGET
        else:
            path = build(args)
        if args.check or args.check_only:
            if not path.exists():
                raise BuildError(f"{path} does not exist; run scripts/build_kernels.py")
            check(path)
    except BuildError as e:
        if args.optional:
            log(f"native op NOT built: {e}")
            log("continuing: fusedfocal will use its pure-TensorFlow (XLA) path")
            return 0
        log(f"FAILED: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
