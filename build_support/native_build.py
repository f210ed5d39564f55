"""The one build of the native fused focal loss op, used by every install path.

``pip install .``, ``pip install -e .`` and ``pip wheel .`` reach it through
``setup.py``'s ``build_ext`` (see :func:`build_for_install`); the developer
script ``scripts/build_kernels.py`` is a thin command line over it. Nothing
here imports TensorFlow into the build process: TensorFlow's version, flags
and devices are read by a child interpreter (:func:`tf_config`), the one the
package will run with, so an isolated build environment never needs a
second TensorFlow when one is installed.

What it builds: ``_fused_focal_ops.so`` with the CPU kernels for float16,
bfloat16 and float32 (one copy per instruction set, SSE2 / AVX2 / AVX-512,
chosen at run time), the XLA lowering of the op (a typed XLA FFI custom
call) and its host handler; and beside it ``_build_info.json``, which
records what it was built against (checked when the library loads).

CUDA: the TensorFlow GPU kernel and the XLA GPU handler are compiled in with
``cuda="on"`` (``FUSEDFOCAL_CUDA=on`` for pip) or, under ``"auto"``, when nvcc
is on PATH, TensorFlow is a CUDA build and TensorFlow sees a GPU. Otherwise,
if nvcc exists, the CUDA kernel, its XLA FFI handler and the XLA GPU
registration are only compile-checked for sm_90.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib.machinery import FileFinder
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
# Hidden local stand-ins for three libstdc++/glibc symbols that newer GCC
# headers reach for, so the library stays within manylinux_2_27 (TensorFlow's
# own wheel tag); see the file and docs/release.md.
MANYLINUX_COMPAT = ROOT / "build_support" / "manylinux_compat.cc"
LIBRARY_NAME = "_fused_focal_ops.so"
INFO_NAME = "_build_info.json"
INFO_SCHEMA = 1

# (name, vector width in floats, -march): one copy of focal_cpu.cc each.
ISAS = [("sse2", 8, "x86-64"), ("avx2", 8, "x86-64-v3"), ("avx512", 16, "x86-64-v4")]
WARN_FLAGS = ["-Wall", "-Wno-psabi", "-Wno-deprecated-declarations", "-Wno-sign-compare",
              "-Wno-unused-function"]

# Environment variables of the pip build (documented in kernels/README.md).
ENV_CUDA = "FUSEDFOCAL_CUDA"            # auto | on | off
ENV_XLA = "FUSEDFOCAL_XLA"              # on | off
ENV_REQUIRE = "FUSEDFOCAL_REQUIRE_NATIVE"  # 1: a failed native build fails the install (CI)
ENV_JOBS = "FUSEDFOCAL_BUILD_JOBS"      # parallel compiler jobs (default: CPU count, at most 4)
ENV_TF_PYTHON = "FUSEDFOCAL_TF_PYTHON"  # the interpreter whose TensorFlow to build against


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[fusedfocal build] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- TF pin

def tf_requirement() -> str:
    """The TensorFlow requirement of the package, read from pyproject.toml
    (one place for the pin), e.g. ``tensorflow>=2.21,<2.22``."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"(tensorflow\s*[<>=!~][^"]*)"', text)
    if not m:
        raise BuildError("pyproject.toml lists no tensorflow requirement")
    return m.group(1).replace(" ", "")


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def check_pin(version: str, requirement: str | None = None) -> None:
    """Refuses a TensorFlow outside the package's pin (>= and < clauses)."""
    requirement = requirement or tf_requirement()
    have = _version_tuple(version)
    for op, bound in re.findall(r"(>=|<=|==|<|>)\s*([\d.]+)", requirement):
        want = _version_tuple(bound)
        n = len(want)
        ok = {">=": have[:n] >= want, "<": have[:n] < want, "<=": have[:n] <= want,
              ">": have[:n] > want, "==": have[:n] == want}[op]
        if not ok:
            raise BuildError(
                f"TensorFlow {version} is outside the supported range `{requirement}`: the op is "
                f"compiled against TensorFlow's C++ ABI, which changes between minor versions. "
                f"Install a TensorFlow in that range (pip install '{requirement}') and build again.")


def find_tensorflow(purelib: str | None = None) -> str | None:
    """The installed TensorFlow package folder of the target environment,
    found without importing it (pip's default build isolation keeps the
    target interpreter and its purelib), or None."""
    import sysconfig

    for folder in filter(None, [purelib, sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]):
        spec = FileFinder(folder).find_spec("tensorflow")
        if spec and spec.submodule_search_locations:
            return spec.submodule_search_locations[0]
    return None


def build_requirements() -> list:
    """Extra build requirements: TensorFlow only when the target environment
    has none (then pip installs the pinned one into the build environment)."""
    if os.environ.get(ENV_TF_PYTHON) or find_tensorflow():
        return []
    return [tf_requirement()]


_TF_QUERY = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
from tensorflow.python.platform import build_info
built_cuda = tf.test.is_built_with_cuda()
gpus = [d.name for d in tf.config.list_physical_devices("GPU")] if built_cuda else []
print("FUSEDFOCAL_TF_CONFIG " + json.dumps({
    "version": tf.__version__, "include": tf.sysconfig.get_include(), "lib": tf.sysconfig.get_lib(),
    "compile_flags": tf.sysconfig.get_compile_flags(), "link_flags": tf.sysconfig.get_link_flags(),
    "cxx11_abi": int(getattr(tf.sysconfig, "CXX11_ABI_FLAG", 1)),
    "monolithic": int(getattr(tf.sysconfig, "MONOLITHIC_BUILD", 0)),
    "cuda_build": bool(built_cuda), "gpus": gpus,
    "cuda_version": build_info.build_info.get("cuda_version"),
    "python": sys.executable}))
"""


def tf_config(python: str | None = None) -> dict:
    """TensorFlow's version, flags and devices, read by a child interpreter.

    Under pip's build isolation the child first runs without the isolated
    ``PYTHONPATH``, so it sees the target environment's TensorFlow; if that
    has none, it runs as the build environment (where pip installed the
    pinned TensorFlow, see :func:`build_requirements`)."""
    python = python or os.environ.get(ENV_TF_PYTHON) or sys.executable
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    attempts = [base] if "PYTHONPATH" not in os.environ else [base, dict(os.environ)]
    errors = []
    for env in attempts:
        proc = subprocess.run([python, "-c", _TF_QUERY], env=env, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("FUSEDFOCAL_TF_CONFIG "):
                return json.loads(line.split(" ", 1)[1])
        errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    raise BuildError(f"cannot import tensorflow with {python}: {errors[-1][0]}; install "
                     f"'{tf_requirement()}' first")


# ---------------------------------------------------------------- build

def _run(cmd, verbose: bool) -> None:
    if verbose:
        log(" ".join(map(str, cmd)))
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    except OSError as e:
        raise BuildError(f"cannot run {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{proc.stderr[-4000:]}")


def cuda_plan(tf: dict, mode: str):
    """Returns (build_gpu_kernel, nvcc path or None, reason)."""
    nvcc = shutil.which("nvcc")
    if mode == "off":
        return False, nvcc, "CUDA off"
    if mode == "on":
        if not nvcc:
            raise BuildError("CUDA on, but nvcc is not on PATH")
        if not tf["cuda_build"]:
            raise BuildError("CUDA on, but this TensorFlow is not a CUDA build")
        return True, nvcc, "CUDA on"
    if mode != "auto":
        raise BuildError(f"CUDA mode must be auto, on or off; got {mode!r}")
    if nvcc and tf["cuda_build"] and tf["gpus"]:
        return True, nvcc, "nvcc found, CUDA build of TensorFlow, GPU visible"
    why = ("no nvcc" if not nvcc else "TensorFlow is not a CUDA build" if not tf["cuda_build"]
           else "TensorFlow sees no GPU")
    return False, nvcc, why


def cuda_home(nvcc: str) -> Path:
    """$CUDA_HOME, else the toolkit nvcc belongs to (nvcc may be a wrapper script)."""
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                 str(Path(nvcc).resolve().parents[1]), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_runtime.h").exists():
            return Path(cand)
    raise BuildError(f"cannot find the CUDA toolkit of {nvcc}; set CUDA_HOME")


def _compiler_works(cxx: str) -> bool:
    if not shutil.which(cxx):
        return False
    try:
        return subprocess.run([cxx, "--version"], capture_output=True).returncode == 0
    except OSError:
        return False


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else cxx
    except OSError:
        return cxx


def build(output: Path, *, cuda: str = "auto", xla: str = "on", jobs: int = 2,
          build_dir: Path | None = None, verbose: bool = False, tf: dict | None = None) -> dict:
    """Compiles the library into ``output`` and writes its build info beside it.

    Returns the build info. Raises :class:`BuildError` with the reason on failure.
    """
    t0 = time.perf_counter()
    if xla not in ("on", "off"):
        raise BuildError(f"XLA mode must be on or off; got {xla!r}")
    tf = tf or tf_config()
    check_pin(tf["version"])
    cxx = os.environ.get("CXX", "g++")
    if not _compiler_works(cxx):
        raise BuildError(f"C++ compiler {cxx!r} not found or not working (set CXX, or install g++)")
    if not KERNELS.is_dir():
        raise BuildError(f"kernel sources not found at {KERNELS}")
    out = Path(build_dir or ROOT / "build" / "kernels")
    out.mkdir(parents=True, exist_ok=True)
    cflags, lflags = list(tf["compile_flags"]), list(tf["link_flags"])
    gpu, nvcc, why = cuda_plan(tf, cuda)
    tf_inc = Path(tf["include"])
    common = ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", f"-I{KERNELS}"] + WARN_FLAGS
    jobs_list = []  # (object, command)
    for name, width, march in ISAS:
        obj = out / f"focal_cpu_{name}.o"
        jobs_list.append((obj, [cxx, *common, f"-march={march}", f"-DFF_VEC_WIDTH={width}",
                                f"-DFF_EXPORT_NAME=fusedfocal_cpu_{name}", "-c",
                                KERNELS / "focal_cpu.cc", "-o", obj]))
    gpu_defs = ["-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU"] if gpu else []
    # the CUDA headers TensorFlow was built with, shipped in its include dir
    cuda_inc = [f"-I{tf_inc / 'third_party' / 'gpus' / 'cuda' / 'include'}"] if gpu else []
    # The XLA lowering includes tf2xla headers, which need two more of
    # TensorFlow's bundled third-party include folders.
    xla_inc = [f"-I{tf_inc / 'external' / 'highwayhash'}",
               f"-I{tf_inc / 'external' / 'farmhash_archive' / 'src'}"]
    xla_on = xla == "on"
    sources = ["fused_focal_ops.cc", "fused_focal_kernel.cc"] + (["fused_focal_xla.cc"] if xla_on else [])
    xla_defs = ["-DFUSEDFOCAL_XLA_CUDA=1"] if gpu else []
    for src in sources:
        obj = out / src.replace(".cc", ".o")
        jobs_list.append((obj, [cxx, "-std=c++17", "-O2", "-fPIC", f"-I{KERNELS}", *WARN_FLAGS,
                                *cflags, *xla_inc, *gpu_defs, *xla_defs, *cuda_inc, "-c",
                                KERNELS / src, "-o", obj]))
    # FFI handlers: only the stable header-only API (xla/ffi/api), as system
    # headers so their warnings stay out of the log; registered with
    # TensorFlow's XLA at load time (FUSEDFOCAL_TF_REGISTER).
    ffi_flags = [cxx, "-std=c++17", "-O2", "-fPIC", "-DNDEBUG", f"-I{KERNELS}",
                 f"-isystem{tf_inc}", *WARN_FLAGS, "-DFUSEDFOCAL_TF_REGISTER=1"]
    compat = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and MANYLINUX_COMPAT.is_file()
    if compat:
        obj = out / "manylinux_compat.o"
        jobs_list.append((obj, [cxx, "-std=c++17", "-O2", "-fPIC", *WARN_FLAGS, "-c", MANYLINUX_COMPAT, "-o", obj]))
    if xla_on:
        obj = out / "focal_ffi_cpu.o"
        jobs_list.append((obj, [*ffi_flags, "-c", KERNELS / "focal_ffi_cpu.cc", "-o", obj]))
    checks = []  # compile-only objects, never linked
    cuda_obj = out / "focal_cuda.o"
    cuda_ffi_obj = out / "focal_ffi_cuda.o"
    if nvcc:
        arch = ["-arch=sm_90"] if not gpu else ["-gencode=arch=compute_80,code=sm_80",
                                                 "-gencode=arch=compute_90,code=sm_90"]
        jobs_list.append((cuda_obj, [nvcc, "-O3", "-std=c++17", *arch, "-Xcompiler", "-fPIC",
                                     f"-I{KERNELS}", "-c", KERNELS / "focal_cuda.cu", "-o", cuda_obj]))
        if xla_on:
            # The CUDA FFI handler is host code; nvcc hands it to the host
            # compiler with the CUDA toolkit's include path.
            jobs_list.append((cuda_ffi_obj, [nvcc, "-O2", "-std=c++17", "-Xcompiler", "-fPIC",
                                             "-DNDEBUG", f"-I{KERNELS}", f"-isystem={tf_inc}",
                                             "-DFUSEDFOCAL_TF_REGISTER=1", "-c",
                                             KERNELS / "focal_ffi_cuda.cc", "-o", cuda_ffi_obj]))
            if not gpu:  # the XLA GPU registration, compile-checked only
                chk = out / "fused_focal_xla_gpu_check.o"
                checks.append(chk)
                jobs_list.append((chk, [cxx, "-std=c++17", "-O0", "-fPIC", f"-I{KERNELS}", *WARN_FLAGS,
                                        *cflags, *xla_inc, "-DFUSEDFOCAL_XLA_CUDA=1", "-fsyntax-only",
                                        KERNELS / "fused_focal_xla.cc"]))
    log(f"compiling {len(jobs_list)} objects with -j{jobs} against TensorFlow {tf['version']} "
        f"({tf['python']}) into {out}")
    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for f in [pool.submit(_run, cmd, verbose) for _, cmd in jobs_list]:
            f.result()
    objs = [obj for obj, _ in jobs_list if obj not in (cuda_obj, cuda_ffi_obj, *checks)]
    link = [cxx, "-shared", "-o", out / LIBRARY_NAME, *objs]
    if gpu:
        link += [cuda_obj, *([cuda_ffi_obj] if xla_on else []),
                 f"-L{cuda_home(nvcc) / 'lib64'}", "-lcudart"]
    link += lflags
    if xla_on:
        # XlaOpKernel, the XLA builder and XLA_FFI_GetApi live in libtensorflow_cc.
        link += [f"-L{tf['lib']}", "-l:libtensorflow_cc.so.2"]
    link += ["-Wl,-O1"]
    _run(link, verbose)
    info = {
        "schema": INFO_SCHEMA,
        "native": True,
        "tensorflow": tf["version"],
        "tensorflow_requirement": tf_requirement(),
        "cxx11_abi": tf["cxx11_abi"],
        "isas": [name for name, _, _ in ISAS],
        "xla_cpu": xla_on,
        "cuda": gpu,
        "cuda_note": why,
        "cuda_compile_checked": bool(nvcc) and not gpu,
        "manylinux_compat": compat,
        "compiler": _compiler_version(cxx),
        "platform": f"{platform.system().lower()}_{platform.machine()}",
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    shutil.copy2(out / LIBRARY_NAME, tmp)
    os.replace(tmp, output)
    write_info(output.parent, info)
    log(f"XLA: custom call {'compiled in' if xla_on else 'left out (XLA off)'}")
    if gpu:
        log(f"CUDA: GPU kernel compiled in ({why})")
    elif nvcc:
        log(f"CUDA: GPU kernel not built ({why}); kernels/focal_cuda.cu compile-checked for sm_90 with "
            f"{nvcc}" + (", its XLA FFI handler with nvcc and the XLA GPU registration with g++"
                         if xla_on else ""))
    else:
        log(f"CUDA: skipped ({why})")
    log(f"built {output} in {info['build_seconds']:.1f} s")
    return info


def write_info(folder: Path, info: dict) -> Path:
    path = Path(folder) / INFO_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def build_for_install(output: Path, *, build_dir: Path | None = None) -> dict:
    """The pip build (``setup.py``'s ``build_ext``).

    A failure to compile (no compiler, no TensorFlow headers, ...) still
    installs the pure-Python package: it prints one warning and records
    ``"native": false`` with the reason, which ``fusedfocal info`` and the
    loader report. With ``FUSEDFOCAL_REQUIRE_NATIVE=1`` (CI) it fails the
    install instead. A TensorFlow outside the pin always fails the install.
    """
    output = Path(output)
    cuda = os.environ.get(ENV_CUDA, "auto").strip().lower() or "auto"
    xla = os.environ.get(ENV_XLA, "on").strip().lower() or "on"
    jobs = int(os.environ.get(ENV_JOBS) or min(4, os.cpu_count() or 1))
    require = os.environ.get(ENV_REQUIRE, "").strip().lower() in ("1", "true", "yes", "on")
    for stale in (output, output.parent / INFO_NAME):
        if stale.exists():
            stale.unlink()
    tf = None
    try:
        tf = tf_config()
        check_pin(tf["version"])
    except BuildError as e:
        if tf is not None or require:  # a TensorFlow outside the pin, or CI: refuse
            raise SystemExit(f"fusedfocal: {e}") from None
        return _no_native(output, str(e))
    try:
        return build(output, cuda=cuda, xla=xla, jobs=jobs, build_dir=build_dir, tf=tf)
    except BuildError as e:
        if require:
            raise SystemExit(f"fusedfocal: the native op failed to build ({ENV_REQUIRE}=1): {e}") from None
        return _no_native(output, str(e), tf)


def _no_native(output: Path, reason: str, tf: dict | None = None) -> dict:
    short = reason.strip().splitlines()[0]
    log("WARNING: the native focal loss op was NOT built: " + short)
    log("WARNING: fusedfocal installs without it and uses its pure-TensorFlow path, which under "
        "jit_compile=True is slower than the clipped recipe; `fusedfocal info` shows this. Fix the "
        "cause, then reinstall (pip install --no-binary fusedfocal fusedfocal, or pip install . "
        "from the source tree).")
    if output.exists():
        output.unlink()
    info = {"schema": INFO_SCHEMA, "native": False, "reason": short,
            "tensorflow": tf["version"] if tf else None, "tensorflow_requirement": tf_requirement(),
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_info(output.parent, info)
    return info
