"""The label-sharded head (issue 27): memory per process, bytes per step, step time.

One run = a tiny Dense encoder on fixed random features and a FocalHead trained by the fused
update (SGD, float32 or bfloat16 kernel), for --steps steps of a [B, H] batch with 5 random
positive ids per row (padded with -1). Three layouts:

* ``--workers 0``: one process, one kernel (``--label-shards`` optional: shards on logical CPUs);
* ``--workers S``: this process is the chief and starts S worker processes
  (``python -m fusedfocal.distributed`` with TF_CONFIG on loopback), one label shard each.

It prints one JSON line: each process's peak RSS (VmHWM from /proc; the workers' read before they
are stopped), the mean step time over the steps after the first (the first traces), the losses,
and with workers the bytes through the loopback interface per step (/proc/net/dev "lo", received;
everything on loopback counts, so it is an upper bound of the step's own traffic) and through the
workers' own TCP sockets (``ss -tinp``: bytes sent plus received, the step's traffic).

    python benchmarks/sharded_head.py --labels 131072 --workers 2 --steps 6 --data-parallel-encoder
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":")[1].split()[0])
    return 0


def _socket_bytes(pids):
    """Bytes sent plus received over the TCP sockets of ``pids`` (``ss -tinp``): the traffic of the
    workers, whatever else uses loopback."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout.splitlines()
    total, mine = 0, False
    for line in out:
        if line.startswith(("ESTAB", "CLOSE", "FIN", "TIME", "LAST", "SYN")):
            mine = any(f"pid={p}," in line for p in pids)
        elif mine:
            for key in ("bytes_sent:", "bytes_received:"):
                if key in line:
                    total += int(line.split(key)[1].split()[0])
    return total


def _start_workers(n):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _testing import free_ports  # the tests' helper

    workers = [f"localhost:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, "-m", "fusedfocal.distributed"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": {"type": "chief", "index": 0}})
    return procs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=131072)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--label-shards", type=int, default=None)
    p.add_argument("--weight-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--learning-rate", type=float, default=0.5)
    p.add_argument("--data-parallel-encoder", action="store_true",
                   help="encode each batch's row blocks on the shards' devices (FocalHeadModel's "
                        "encoder_devices='shards'); without it the encoder runs on this process")
    p.add_argument("--reduction", default="mean", choices=["mean", "sum"],
                   help="sum: the loss summed over B x C (a visible fall at 10M labels; use a small rate)")
    args = p.parse_args()
    procs = _start_workers(args.workers) if args.workers else []
    try:
        out = run(args, procs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    print(json.dumps(out), flush=True)


def run(args, procs):
    import numpy as np
    import tensorflow as tf

    if args.label_shards and not args.workers:
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * args.label_shards)
    import keras

    import fusedfocal.keras as k3
    from fusedfocal import _head_replicas, distributed

    devices, shards = None, args.label_shards
    if args.workers:
        devices, shards = distributed.connect(timeout=300), args.workers
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, args.hidden)).astype("float32"))
    y = tf.constant(rng.integers(0, args.labels, size=(args.batch, 5)).astype("int32"))
    encoder = keras.Sequential([keras.Input((args.hidden,)), keras.layers.Dense(args.hidden, activation="tanh")])
    t0 = time.perf_counter()
    head = k3.FocalHead(args.labels, label_shards=shards, devices=devices, weight_dtype=args.weight_dtype,
                        reduction=args.reduction,
                        head_optimizer={"optimizer": "sgd", "learning_rate": args.learning_rate})
    head.build((None, args.hidden))
    build_s = time.perf_counter() - t0
    opt = keras.optimizers.SGD(0.01)
    replicas = [sh.device for sh in head.shards] if args.data_parallel_encoder and shards else None

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = head.loss_and_update(_head_replicas.features(encoder, x, replicas, True), y)
        grads = tape.gradient(loss, encoder.trainable_variables)
        opt.apply(grads, encoder.trainable_variables)
        return loss

    losses, times, lo, sock = [], [], [], []
    pids = [proc.pid for proc in procs]
    for _ in range(args.steps):
        s0 = _socket_bytes(pids) if pids else 0
        b0, t = _lo_bytes(), time.perf_counter()
        losses.append(float(step(x, y)))
        times.append(time.perf_counter() - t)
        lo.append(_lo_bytes() - b0)
        sock.append((_socket_bytes(pids) - s0) if pids else 0)
        progress = {"step": len(losses), "loss": losses[-1], "s": round(times[-1], 2),
                    "peak_rss_gib": [round(_peak_rss(pid) / 2**30, 3) for pid in ["self", *pids]]}
        print("progress " + json.dumps(progress), file=sys.stderr, flush=True)
    out = {"labels": args.labels, "hidden": args.hidden, "batch": args.batch, "steps": args.steps,
           "workers": args.workers, "label_shards": shards, "weight_dtype": args.weight_dtype,
           "encoder_replicas": len(replicas) if replicas else 1,
           "build_s": round(build_s, 2), "step_s": round(float(np.mean(times[1:] or times)), 3),
           "first_step_s": round(times[0], 2), "loss": [float(f"{v:.7g}") for v in losses],
           "peak_rss_gib": {"chief" if args.workers else "process": round(_peak_rss() / 2**30, 3)}}
    if args.workers:
        out["worker_bytes_per_step"] = int(np.median(sock[1:] or sock))
        out["lo_bytes_per_step"] = int(np.median(lo[1:] or lo))
        out["features_bytes"] = args.batch * args.hidden * 4
        for i, proc in enumerate(procs):
            out["peak_rss_gib"][f"worker{i}"] = round(_peak_rss(proc.pid) / 2**30, 3)
    return out


if __name__ == "__main__":
    main()
