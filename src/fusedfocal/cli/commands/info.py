"""``fusedfocal info``: what runs where, and the versions, in one screen.

The first thing a bug report should contain. ``--json`` prints the same as
one JSON object; ``--require-native`` exits 1 when the native op is not
loaded (set-up scripts and CI use it).
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

PACKAGES = ("tensorflow", "keras", "tf-keras", "tensorflow-text", "numpy", "ml-dtypes")


def add_parser(sub):
    p = sub.add_parser("info", help="print the native op's status, what runs where, and the versions",
                       description="Print whether the native fused focal op is installed and loads, what "
                                   "it was built against, which path runs in eager/graph mode and inside "
                                   "XLA on CPU and GPU, and the versions of Python, TensorFlow, Keras and "
                                   "the other dependencies. Paste it into bug reports.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("--require-native", action="store_true",
                   help="exit 1 unless the native op loads (with its XLA kernel)")
    return p


def collect() -> dict:
    import tensorflow as tf

    from fusedfocal import __version__
    from fusedfocal.ops import native

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "fusedfocal": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()} ({platform.platform()})",
        "cpu_isa": _cpu_isa(),
        "tensorflow_cuda_build": bool(tf.test.is_built_with_cuda()),
        "versions": versions,
        "native": native.status(),
    }


def _cpu_isa() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    have = set(flags.split(":", 1)[1].split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= have:
        return "AVX-512 (the op's avx512 copy runs)"
    if {"avx2", "fma"} <= have:
        return "AVX2 (the op's avx2 copy runs)"
    return "SSE2 (the op's sse2 copy runs)"


def format_text(d: dict) -> str:
    n = d["native"]
    b = n["build"] or {}
    lines = [f"fusedfocal {d['fusedfocal']}  (Python {d['python']}, {d['platform']})", ""]
    if n["loaded"]:
        lines.append(f"native op:      loaded from {n['library']}")
    else:
        lines.append("native op:      NOT LOADED, no native op: " + str(n["problem"]))
    if b:
        if b.get("native", True):
            lines.append(f"  built for:    TensorFlow {b.get('tensorflow')} ({b.get('tensorflow_requirement')}), "
                         f"_GLIBCXX_USE_CXX11_ABI={b.get('cxx11_abi')}, {b.get('platform')}, "
                         f"Python {b.get('python')}")
            lines.append(f"  built with:   {b.get('compiler')} on {b.get('built_at')}; CPU ISAs "
                         f"{', '.join(b.get('isas', []))}; XLA custom call {'yes' if b.get('xla_cpu') else 'no'}; "
                         f"CUDA {'yes' if b.get('cuda') else 'no'} ({b.get('cuda_note')})")
        else:
            lines.append(f"  install:      built without it on {b.get('built_at')}: {b.get('reason')}")
    elif n["loaded"]:
        lines.append("  built for:    unknown (no _build_info.json: a library built by hand)")
    lines.append(f"  this CPU:     {d['cpu_isa']}")
    lines += ["", "what runs (implementation='auto', float32):",
              f"  eager/graph, CPU:  {n['eager_graph_cpu']}",
              f"  eager/graph, GPU:  {n['eager_graph_gpu']}",
              f"  XLA, CPU:          {n['xla_cpu']}",
              f"  XLA, GPU:          {n['xla_gpu']}",
              f"  GPUs visible:      {', '.join(n['gpus']) or 'none'}"
              f" (TensorFlow CUDA build: {'yes' if d['tensorflow_cuda_build'] else 'no'})"]
    if n["implementation_env"]:
        lines.append(f"  FUSEDFOCAL_IMPLEMENTATION={n['implementation_env']}")
    lines += ["", "versions:"]
    lines += [f"  {k:16s}{v or 'not installed'}" for k, v in d["versions"].items()]
    return "\n".join(lines)


def cmd_info(args) -> int:
    d = collect()
    print(json.dumps(d, indent=1) if args.json else format_text(d))
    if args.require_native:
        n = d["native"]
        if not n["loaded"] or not n["xla_cpu"].startswith("native"):
            print("fusedfocal info: --require-native: the native op (with its XLA kernel) is not loaded",
                  file=sys.stderr)
            return 1
    return 0
