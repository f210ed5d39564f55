"""The CLI's ``--label-shards S --strategy multiworker`` (issue 27): every process runs the same
command with its own ``TF_CONFIG``; the workers (task type ``worker``) serve one label shard each and
neither read data nor write, the chief drives each step and places shard ``s`` and the encoder's
row block ``s`` on worker ``s`` (the encoder data-parallel over the workers). On
loopback: two workers and a chief train as the in-process ``--label-shards 2`` run; a worker killed
by SIGKILL after the first checkpoint stops the chief in bounded time with a message naming it
(exit status 75), and once the worker is restarted ``--resume`` finishes the run as if nothing had
happened; ``S`` other than the number of workers is refused naming ``--label-shards``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _testing import free_ports
from clitools import cli, cli_subprocess

from fusedfocal.data import synthetic_xmc_splits, write_jsonl

pytestmark = pytest.mark.xdist_group("label_shard_workers")

# As tests/cli/test_label_shards_cli.py's run (its FAST flags), with --deterministic.
FLAGS = ["--head", "fused", "--loss", "focal", "--head-optimizer", "adam", "--deterministic", "--patience", "0",
         "--model", "fasttext", "--embed-dim", "32", "--epochs", "2", "--batch-size", "32", "--max-length", "40",
         "--vocab-size", "500", "--val-size", "80", "--learning-rate", "0.03", "--dropout", "0", "--verbose", "0"]
SHARDS = ["--label-shards", "2"]

# The chief of (b): the command line, with worker 1 killed by SIGKILL at the fault point after the
# first epoch's checkpoint (the CLI's own fault hook kills the chief itself; this one kills a worker).
_KILLING_CHIEF = """
import os, signal, sys, time
from fusedfocal.cli.store import checkpoints
real = checkpoints.fault
def fault(point):
    if point == "checkpoint-1":
        os.kill(int(os.environ["KILL_WORKER_PID"]), signal.SIGKILL)
        open(os.environ["KILLED_AT_FILE"], "w").write(repr(time.time()))
    real(point)
checkpoints.fault = fault
from fusedfocal.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def xmc_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xmc_workers")
    train, test = synthetic_xmc_splits(seed=0, num_train=640, num_test=160, num_labels=200, mean_filler=5)
    return {"train": write_jsonl(d / "train.jsonl", *train), "test": write_jsonl(d / "test.jsonl", *test)}


def _tf_config(workers, task, index):
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": task, "index": index}})


class _Cluster:
    """Two worker processes on loopback, each the same command as the chief's with its TF_CONFIG."""

    def __init__(self, data, folder):
        self.workers = [f"localhost:{p}" for p in free_ports(2)]
        self.folder, self.procs, self.logs = folder, [None, None], [None, None]
        self.argv = ["train", "--data", data["train"], "--eval", data["test"], "--strategy", "multiworker", *SHARDS,
                     *FLAGS]

    def start(self, i):
        self.logs[i] = self.folder / f"worker-{i}-{time.monotonic_ns()}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": _tf_config(self.workers, "worker", i)}
        with open(self.logs[i], "w") as log:  # a worker needs no run folder: --out is never read
            self.procs[i] = subprocess.Popen([sys.executable, "-m", "fusedfocal", *self.argv, "--out",
                                              self.folder / "never-written"], env=env, stdout=log, stderr=log)

    def chief(self, out, *extra, timeout=240):
        return cli_subprocess(*self.argv, "--out", out, *extra, timeout=timeout,
                              env={"TF_CONFIG": _tf_config(self.workers, "chief", 0)})

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def cluster(xmc_data, tmp_path_factory):
    c = _Cluster(xmc_data, tmp_path_factory.mktemp("cluster"))
    try:
        c.start(0)
        c.start(1)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The chief's run on the two workers, to the end: ``(run folder, chief's stderr)``."""
    out = tmp_path_factory.mktemp("chief") / "run"
    r = cluster.chief(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_a_chief_and_two_workers_train_as_the_in_process_run(xmc_data, cluster, uninterrupted, tmp_path):
    """The run on two worker processes against ``--label-shards 2`` in one process (shards and
    encoder blocks on two logical CPUs), float for float: the same loss history (rtol 1e-5) and the
    same P@1. Both draw the same initial kernel (a remote shard's rows are drawn by the same XLA
    function on the chief and sent) and split each batch the same way."""
    run, err = uninterrupted
    ref = tmp_path / "in-process"
    assert cli("train", "--data", xmc_data["train"], "--eval", xmc_data["test"], "--out", ref, *SHARDS,
               *FLAGS) == 0
    a, b = _metrics(run), _metrics(ref)
    assert a["settings"]["label_shard_workers"] == cluster.workers and "label_shard_workers" not in b["settings"]
    assert (a["settings"]["strategy"], a["settings"]["replicas"], a["settings"]["label_shards"]) == ("multiworker", 1, 2)
    assert len(a["history"]["loss"]) == 2
    assert a["history"]["loss"] == pytest.approx(b["history"]["loss"], rel=1e-5)
    assert a["history"]["val_loss"] == pytest.approx(b["history"]["val_loss"], rel=1e-5)
    assert a["metrics"]["p@1"] == b["metrics"]["p@1"] and a["metrics"]["p@1"] > 0.3
    # The settings block and the layout say where the shards are and what moves per step.
    w0, w1 = cluster.workers
    assert f"one on each worker process of TF_CONFIG (worker 0 {w0}, worker 1 {w1})" in err, err
    assert "the encoder data-parallel over the same 2 workers" in err and "over the network" in err
    assert "per step and encoder replica: 1/2 of the batch's inputs" in err
    assert a["settings"]["encoder_replicas"] == 2 == b["settings"]["encoder_replicas"]
    assert f"shard 0: labels [0, 99) on worker 0 ({w0})" in err and f"shard 1: labels [99, 197) on worker 1 ({w1})" in err
    # The workers serve on after the chief's run; they wrote nothing.
    assert all(p.poll() is None for p in cluster.procs)
    assert not (cluster.folder / "never-written").exists() and not (run / "workers").exists()
    assert all("serves label shard" in path.read_text() for path in cluster.logs)
    # The shards the chief saved from the workers are the ones that scored: evaluate reads them back here.
    out = tmp_path / "eval.json"
    assert cli("evaluate", run, "--data", xmc_data["test"], "--output", out) == 0
    assert json.loads(out.read_text())["metrics"]["p@1"] == a["metrics"]["p@1"]


@pytest.mark.slow
def test_b_a_killed_worker_is_named_and_the_run_resumes(cluster, uninterrupted, tmp_path):
    """Worker 1 killed by SIGKILL right after the chief's first checkpoint: the chief stops within
    60 s naming the worker (index and address) and how to resume, exit status 75. Worker 1
    restarted on its address, the same command with ``--resume`` reloads the checkpoint's shards
    onto the workers and ends as the uninterrupted run (loss history rtol 1e-5, P@1 equal)."""
    out, killed_at = tmp_path / "run", tmp_path / "killed_at"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": _tf_config(cluster.workers, "chief", 0),
           "KILL_WORKER_PID": str(cluster.procs[1].pid), "KILLED_AT_FILE": str(killed_at)}
    r = subprocess.run([sys.executable, "-c", _KILLING_CHIEF, *map(str, cluster.argv), "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=240)
    ended = time.time()
    assert killed_at.exists(), r.stderr[-3000:]
    assert r.returncode == 75, r.stderr[-3000:]
    assert ended - float(killed_at.read_text()) < 60
    message = [line for line in r.stderr.splitlines() if line.startswith("fusedfocal train: ")]
    assert message and f"worker 1 ({cluster.workers[1]}) stopped" in message[-1], r.stderr[-3000:]
    assert "Restart the workers" in message[-1] and "--resume" in message[-1]
    assert cluster.procs[1].wait(timeout=10) == -signal.SIGKILL
    assert (out / "backup" / "epoch-0001").is_dir() and not (out / "metrics.json").exists()

    cluster.start(1)
    r = cluster.chief(out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resuming" in r.stderr and "after epoch 1 of 2" in r.stderr
    a, b = _metrics(out), _metrics(uninterrupted[0])
    assert len(a["history"]["loss"]) == len(a["epochs"]) == 2
    assert a["history"]["loss"] == pytest.approx(b["history"]["loss"], rel=1e-5)
    assert a["metrics"]["p@1"] == b["metrics"]["p@1"]
    assert not (out / "backup").exists()


def _no_server(*_, **__):
    raise AssertionError("a refused command must not serve")


@pytest.mark.parametrize("task,shards,tf_config,flag,text", [
    ("chief", "3", None, "--label-shards", "expected the number of workers in TF_CONFIG (2: one label shard on each)"
                                           " with --strategy multiworker; received 3"),
    ("worker", "1", None, "--label-shards", "expected the number of workers in TF_CONFIG (2"),
    ("chief", "2", "", "--strategy", "received no TF_CONFIG environment variable"),
    ("ps", "2", None, "--strategy", "task type chief (index 0: trains, holds no shard) or worker"),
    ("chief", "2", '{"cluster": {"chief": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}', "--strategy",
     "a cluster with the workers' host:port"),
])
def test_c_bad_cluster_names_the_flag(xmc_data, tmp_path, capsys, monkeypatch, task, shards, tf_config, flag, text):
    """Refused before anything runs, in the chief and in a worker alike: no server, no
    MultiWorkerMirroredStrategy (it would start a server of its own in this process)."""
    from fusedfocal import distributed
    from fusedfocal.cli.stages import runtime

    monkeypatch.setattr(distributed, "serve", _no_server)
    monkeypatch.setattr(distributed, "connect", _no_server)
    config = _tf_config(["localhost:1", "localhost:2"], task, 0) if tf_config is None else tf_config
    if config:
        monkeypatch.setenv("TF_CONFIG", config)
    else:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    code = cli("train", "--data", xmc_data["train"], "--out", tmp_path / "r", "--strategy", "multiworker",
               "--label-shards", shards, *FLAGS)
    err = capsys.readouterr().err
    assert code == 2 and f"argument {flag}:" in err and text in err, err
    assert "multiworker" not in runtime._STRATEGIES and not (tmp_path / "r").exists()
