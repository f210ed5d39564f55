"""The label-sharded head across processes (issue 27): two worker processes started from TF_CONFIG
on loopback hold one label shard each and encode half of each batch (``encoder_devices="shards"``);
their shards draw the same initial kernel as local shards; the chief's fit equals the unsharded run,
its checkpoint loads with S = 1 and S = 4 in one process, and a worker killed with SIGKILL makes the
chief stop within a bounded time with a message naming the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _testing import free_ports

import fusedfocal
from fusedfocal import distributed

SRC = str(Path(fusedfocal.__file__).parents[1])

_CHIEF = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import numpy as np
    import keras
    import tensorflow as tf
    from fusedfocal import distributed as d
    import fusedfocal.keras as k3

    workers = d.cluster_from_env()[0]
    devs = d.connect(timeout=120)
    C, H = 301, 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, H)).astype("float32")
    ids = [sorted(rng.choice(C, size=int(rng.integers(0, 5)), replace=False).tolist()) for _ in range(64)]
    y = tf.ragged.constant(ids, dtype=tf.int32, inner_shape=())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    K0 = rng.normal(size=(C, H)).astype("float32") * 0.1
    opt = {"optimizer": "adam", "learning_rate": 0.05}

    def build(shards, devices=None, encoder_devices=None):
        keras.utils.set_random_seed(0)
        enc = keras.Sequential([keras.Input((H,)), keras.layers.Dense(H, activation="tanh")])
        head = k3.FocalHead(C, label_shards=shards, devices=devices, top_k=3, chunk_size=64, alpha=0.25)
        model = k3.FocalHeadModel(enc, head, head_optimizer=opt, encoder_devices=encoder_devices)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.predict(x[:2], verbose=0)
        head.set_kernel(K0)
        return model

    out = {}
    try:
        k3.FocalHead(C, label_shards=3, devices=devs)
    except ValueError as e:
        out["mismatch"] = str(e)
    out["init_equal"] = {}  # a remote shard draws its initial rows as a local one does
    for dtype in ("float32", "bfloat16"):
        kernels = []
        for devices in (devs, None):
            head = k3.FocalHead(C, label_shards=2, devices=devices, weight_dtype=dtype,
                                kernel_initializer=keras.initializers.GlorotUniform(seed=3))
            k3.FocalHeadModel(keras.Sequential([keras.Input((H,))]), head, head_optimizer="sgd")
            head.build((None, H))
            kernels.append(np.asarray(head.float_weights()[0], np.float32))
        out["init_equal"][dtype] = bool(np.array_equal(kernels[0], kernels[1]))
    remote, plain = build(2, devs, encoder_devices="shards"), build(None)
    out["encoder_devices"] = remote.encoder_devices
    out["placed"] = [sh.kernel.value.device for sh in remote.head.shards]
    out["loss"] = [remote.fit(ds, epochs=1, verbose=0).history["loss"], plain.fit(ds, epochs=1, verbose=0).history["loss"]]
    k1, k0 = (m.head.float_weights()[0].numpy() for m in (remote, plain))
    out["kernel_rel"] = float(np.abs(k1 - k0).max() / np.abs(k0).max())
    out["encoder_rel"] = max(float(np.abs(a - b).max() / np.abs(b).max())
                             for a, b in zip(remote.encoder.get_weights(), plain.encoder.get_weights()))
    out["ids_equal"] = bool(np.array_equal(remote.predict(x, verbose=0)["ids"], plain.predict(x, verbose=0)["ids"]))
    path = os.path.join(sys.argv[2], "s2.weights.h5")
    remote.save_weights(path)
    out["reload_equal"] = {}
    for shards in (1, 4):
        m = build(shards)
        m.load_weights(path)
        out["reload_equal"][shards] = bool(np.array_equal(m.head.float_weights()[0].numpy(), k1))
    os.kill(int(sys.argv[1]), signal.SIGKILL)
    t0 = time.monotonic()
    watchdog = d.Watchdog(workers, interval=0.5, grace=40).start()
    try:
        with d.guard(watchdog):
            for _ in range(50):
                remote.fit(ds, epochs=1, verbose=0)
        out["lost"] = None
    except d.WorkerLostError as e:
        out["lost"] = str(e)
    out["stop_s"] = time.monotonic() - t0
    print("RESULT" + json.dumps(out), flush=True)
    """
)


def _env(workers, task, index):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": {"type": task, "index": index}})
    return env


@pytest.mark.slow
def test_two_worker_processes_train_as_one_and_a_killed_worker_is_named(tmp_path):
    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "fusedfocal.distributed"], env=_env(workers, "worker", i),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        script = tmp_path / "chief.py"
        script.write_text(_CHIEF)
        proc = subprocess.run([sys.executable, str(script), str(procs[1].pid), str(tmp_path)], capture_output=True,
                              text=True, timeout=400, env=_env(workers, "chief", 0))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    assert out["placed"] == [f"/job:worker/replica:0/task:{i}/device:CPU:0" for i in range(2)]
    assert "argument `devices`" in out["mismatch"] and "label_shards=3" in out["mismatch"]
    assert out["init_equal"] == {"float32": True, "bfloat16": True}
    assert out["encoder_devices"] == out["placed"]  # the encoder data-parallel over the workers
    assert out["loss"][0] == pytest.approx(out["loss"][1], rel=1e-5)
    assert out["kernel_rel"] < 1e-5 and out["encoder_rel"] < 1e-5 and out["ids_equal"]
    assert out["reload_equal"] == {"1": True, "4": True}
    assert out["lost"] is not None and f"worker 1 ({workers[1]})" in out["lost"], out["lost"]
    assert out["stop_s"] < 30, out["stop_s"]


def test_tf_config_errors_name_it():
    with pytest.raises(ValueError, match=r"argument `TF_CONFIG`.*Received: TF_CONFIG="):
        distributed.cluster_from_env('{"cluster": {}}')
    with pytest.raises(ValueError, match=r"argument `TF_CONFIG`"):
        distributed.cluster_from_env("not json")
    with pytest.raises(ValueError, match=r"task type 'worker'"):
        distributed.serve('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}')
    assert distributed.cluster_from_env('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
                                        '"index": 1}}') == (["a:1", "b:2"], "worker", 1)
