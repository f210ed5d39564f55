"""Label shards in worker processes (issue 27): TensorFlow's distributed runtime from ``TF_CONFIG``.

The label-sharded ``FocalHead`` (``label_shards=S``) places shard ``s`` with ``tf.device``; across
processes the devices are remote: ``S`` worker processes each run a ``tf.distribute.Server`` (the
gRPC server of TensorFlow's distributed runtime, started from ``TF_CONFIG``) and hold nothing but
their shard's variables; the chief (the process running the encoder, the input pipeline and
``fit``) connects to them with ``tf.config.experimental_connect_to_cluster`` and builds the head with
``devices=worker_devices()``. The variables of shard ``s`` are then created in worker ``s``'s memory,
and the step's per-shard ops run there: only the ``[B, H]`` features, their gradient, the shard's
label ids, scalars and ``[B, k]`` top-k candidates travel (``docs/xmc_sharding.md``).

On a cluster each machine gets its own ``TF_CONFIG``, e.g. for worker 1 of 2::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 1}}' python -m fusedfocal.distributed

and the chief the same cluster with ``"task": {"type": "chief", "index": 0}``. Across machines, list
the chief's address in the cluster too (``"chief": ["host2:2222"]``): the workers send it the tensors
its steps read. The chief joins the cluster as TensorFlow's local job (``CHIEF_JOB``, ``"localhost"``): tensors,
variables and datasets it created before :func:`connect` keep working, lookup tables do not
(measured; connect before building an input pipeline with tables, as the command line does), and
:func:`connect` connects once. The command line does all of this with ``--label-shards S
--strategy multiworker`` (``docs/xmc_sharding.md``).

Faults: a worker that dies makes the chief's next (or current) step fail in TensorFlow with an
``UnavailableError``; :class:`Watchdog` probes every worker's port from a thread as well, so that a
step blocked on a dead worker is also caught: :func:`guard` turns either into a
:class:`WorkerLostError` that names the worker, and the watchdog ends a process still blocked
``grace`` seconds later (exit status 75) after printing the same message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time

import tensorflow as tf

__all__ = ["WorkerLostError", "Watchdog", "cluster_from_env", "connect", "connected", "guard", "serve",
           "worker_devices"]

EXIT_WORKER_LOST = 75  # EX_TEMPFAIL: the run can be resumed from its last checkpoint
RESUME_HINT = "Restart the worker and resume from the last checkpoint (--resume)."
_CONNECTED: list = []  # the workers this process connected to (connect)
# The chief's job: TensorFlow's own local job name, so that what the chief created before it
# connected keeps its device names: its tensors, variables and datasets stay usable (measured; under
# another job name they fail with "unknown device"). Lookup tables are dropped either way.
CHIEF_JOB = "localhost"


class WorkerLostError(RuntimeError):
    """A worker process holding a label shard stopped (its address and index in the message)."""


def cluster_from_env(tf_config=None):
    """``(workers, task_type, task_index)`` from ``TF_CONFIG`` (a JSON string or dict; default: the
    environment variable). Raises ValueError naming ``TF_CONFIG`` when it lacks workers."""
    raw = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    try:
        config = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (TypeError, ValueError):
        config = None
    workers = (config or {}).get("cluster", {}).get("worker")
    if not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ValueError("Invalid value for argument `TF_CONFIG`. Expected JSON with a cluster of workers "
                         '({"cluster": {"worker": ["host:port", ...]}, "task": {...}}). '
                         f"Received: TF_CONFIG={raw!r}")
    task = config.get("task", {})
    return list(workers), task.get("type", "chief"), int(task.get("index", 0))


def _cluster_spec(tf_config, workers):
    """The cluster of the workers, with the chief's address where ``TF_CONFIG`` lists one
    (``"chief": ["host:port"]``) as job ``CHIEF_JOB``: the workers send the chief the tensors
    its steps read from them, so across machines they must know where it listens. Without it the
    chief picks a port on ``localhost`` (enough on one machine)."""
    raw = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    try:
        chief = (json.loads(raw) if isinstance(raw, str) else dict(raw or {})).get("cluster", {}).get("chief")
    except (TypeError, ValueError, AttributeError):
        chief = None
    jobs = {"worker": list(workers)}
    if isinstance(chief, list) and len(chief) == 1 and isinstance(chief[0], str) and ":" in chief[0]:
        jobs[CHIEF_JOB] = list(chief)
    return tf.train.ClusterSpec(jobs)


def serve(tf_config=None):
    """Runs this process as worker ``task.index`` of ``TF_CONFIG`` until it is stopped (a signal;
    Ctrl-C ends it with ``KeyboardInterrupt``)."""
    workers, task_type, index = cluster_from_env(tf_config)
    if task_type != "worker":
        raise ValueError(f"Invalid value for argument `TF_CONFIG`. Expected task type 'worker' for a worker "
                         f"process. Received: TF_CONFIG task type={task_type!r}")
    from fusedfocal.ops import native

    native.load()  # the chief's steps may use the fused op's kernels: register them here too
    server = tf.distribute.Server(_cluster_spec(tf_config, workers), job_name="worker", task_index=index,
                                  protocol="grpc", start=True)
    print(f"fusedfocal worker {index} serving at {workers[index]}", flush=True)
    while True:  # not server.join(): a Python wait, so that Ctrl-C reaches this process
        time.sleep(3600)


def _reachable(address, timeout):
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def connect(tf_config=None, *, timeout=60.0):
    """Connects this (chief) process to the workers of ``TF_CONFIG``, waiting up to ``timeout``
    seconds for each to listen; returns :func:`worker_devices`. A worker that never answers raises
    :class:`WorkerLostError` naming it. Connected once: a second call with the same workers only
    returns their devices (connecting again would drop the variables already placed on them)."""
    workers, _, _ = cluster_from_env(tf_config)
    if _CONNECTED == workers:
        return worker_devices(len(workers))
    deadline = time.monotonic() + timeout
    for i, address in enumerate(workers):
        while not _reachable(address, 1.0):
            if time.monotonic() > deadline:
                raise WorkerLostError(f"worker {i} ({address}) is not listening after {timeout:.0f} s: start it "
                                      "with `python -m fusedfocal.distributed` and its TF_CONFIG")
            time.sleep(0.2)
    tf.config.experimental_connect_to_cluster(_cluster_spec(tf_config, workers), job_name=CHIEF_JOB)
    _CONNECTED[:] = workers
    return worker_devices(len(workers))


def connected():
    """The addresses of the workers this process is connected to (:func:`connect`); ``[]`` if none."""
    return list(_CONNECTED)


def worker_devices(num_workers=None):
    """``["/job:worker/replica:0/task:{i}/device:CPU:0", ...]``: one device per worker (its first GPU
    where it has one), the ``devices`` of a ``FocalHead`` with one label shard per worker."""
    found = [d.name for d in tf.config.list_logical_devices() if "/job:worker/" in d.name]
    out = []
    for i in range(num_workers if num_workers is not None else 1 + max(
            [int(n.split("/task:")[1].split("/")[0]) for n in found] or [-1])):
        mine = [n for n in found if f"/task:{i}/" in n]
        gpu = [n for n in mine if "/device:GPU:" in n]
        out.append((gpu or [n for n in mine if n.endswith("/device:CPU:0")] or
                    [f"/job:worker/replica:0/task:{i}/device:CPU:0"])[0])
    return out


class Watchdog:
    """Probes every worker's port every ``interval`` seconds from a daemon thread. When one stops
    answering, ``lost`` holds its ``(index, address)``; a process still running ``grace`` seconds
    later (a step blocked on the dead worker) prints the message and exits with status 75.
    ``hint``: what to do next, ending the message; ``program``: the printed message's prefix."""

    def __init__(self, workers, *, interval=1.0, grace=30.0, exit=True, hint=RESUME_HINT, program="fusedfocal"):
        self.workers, self.interval, self.grace, self.exit = list(workers), interval, grace, exit
        self.hint, self.program = hint, program
        self.lost = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fusedfocal-watchdog", daemon=True)

    def start(self):
        """Starts the probing thread; returns self."""
        self._thread.start()
        return self

    def stop(self):
        """Stops the probing thread (the run ended)."""
        self._stop.set()

    def message(self):
        """The message naming the lost worker (None while all answer)."""
        if self.lost is None:
            return None
        i, address = self.lost
        return f"worker {i} ({address}) stopped: the label shard it held is gone. {self.hint}"

    def _run(self):
        while not self._stop.wait(self.interval):
            for i, address in enumerate(self.workers):
                if not _reachable(address, max(0.5, self.interval)):
                    self.lost = (i, address)
                    break
            if self.lost is not None:
                break
        if self.lost is None or not self.exit:
            return
        if not self._stop.wait(self.grace):
            print(f"{self.program}: {self.message()} (the step did not return within {self.grace:.0f} s; exiting)",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_WORKER_LOST)


@contextlib.contextmanager
def guard(watchdog):
    """Turns TensorFlow's errors from a lost worker into a :class:`WorkerLostError` naming it."""
    try:
        yield watchdog
    except (tf.errors.UnavailableError, tf.errors.InternalError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.UnknownError) as e:
        for _ in range(int(4 / max(0.05, watchdog.interval)) + 1):  # let the probe see it
            if watchdog.lost is not None:
                break
            time.sleep(min(watchdog.interval, 0.25))
        named = watchdog.message()
        if named is None:
            hits = [(i, a) for i, a in enumerate(watchdog.workers) if a in str(e) or f"task:{i}" in str(e)]
            named = (f"worker {hits[0][0]} ({hits[0][1]}) failed" if hits else "a worker failed") + \
                f": {str(e).splitlines()[0][:300]}"
        raise WorkerLostError(named) from e
    finally:
        watchdog.stop()


if __name__ == "__main__":  # python -m fusedfocal.distributed: a worker from TF_CONFIG
    serve()
