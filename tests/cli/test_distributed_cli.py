"""--strategy mirrored on 2 logical CPUs and multiworker with 2 processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _testing import free_ports
from clitools import FAST, cli, cli_subprocess

pytestmark = pytest.mark.slow

ONE_EPOCH = [a if a != "2" else "1" for a in FAST] + ["--deterministic", "--seed", "5", "--dropout", "0",
                                                      "--loss", "focal", "--jit-compile", "off"]


@pytest.fixture(scope="module")
def single_device(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert cli("train", "--data", tiny_data["train"], "--out", out, *ONE_EPOCH) == 0
    return json.loads((out / "metrics.json").read_text())


def test_mirrored_two_logical_cpus_matches_single_device(tiny_data, tmp_path, single_device):
    out = tmp_path / "mirrored"
    r = cli_subprocess("train", "--data", tiny_data["train"], "--out", out, "--strategy", "mirrored", *ONE_EPOCH,
                       env={"FUSEDFOCAL_LOGICAL_CPUS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["replicas"] == 2 and single_device["settings"]["replicas"] == 1
    # Same initial weights and global batches (12 of 16, each split over 2 replicas): the same first-epoch
    # loss up to the all-reduce's rounding (measured: identical).
    np.testing.assert_allclose(m["history"]["loss"][0], single_device["history"]["loss"][0], rtol=1e-5)


def test_multiworker_two_processes_on_loopback(tiny_data, tmp_path, single_device):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "mw"
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        argv = [sys.executable, "-m", "fusedfocal", "train", "--data", str(tiny_data["train"]), "--out", str(out),
                "--strategy", "multiworker", *ONE_EPOCH]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["replicas"] == 2
    assert (out / "workers" / "worker-1").is_dir() and not (out / "workers" / "worker-1" / "model.keras").exists()
    # Each worker reads its own shard, so batches differ from the single-device run: a looser tolerance.
    np.testing.assert_allclose(m["history"]["loss"][0], single_device["history"]["loss"][0], rtol=0.05)


def test_mirrored_best_epoch_selection_matches_single_device(tiny_data, tmp_path):
    """Best-epoch selection under tf.distribute: every replica's predictions are scored on the whole
    validation split, so a mirrored run keeps the same epoch, with the same curve, as one device."""
    flags = [a for a in ONE_EPOCH]
    flags[flags.index("--epochs") + 1] = "3"
    flags += ["--patience", "0"]
    single, mirrored = tmp_path / "single", tmp_path / "mirrored"
    assert cli("train", "--data", tiny_data["train"], "--out", single, *flags) == 0
    r = cli_subprocess("train", "--data", tiny_data["train"], "--out", mirrored, "--strategy", "mirrored", *flags,
                       env={"FUSEDFOCAL_LOGICAL_CPUS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (single, mirrored))
    assert b["settings"]["replicas"] == 2
    curve_a, curve_b = a["history"]["val_macro_f1"], b["history"]["val_macro_f1"]
    assert len(curve_a) == len(curve_b) == 3
    np.testing.assert_allclose(curve_b, curve_a, atol=0.02)
    assert b["selection"]["best_epoch"] == a["selection"]["best_epoch"]
    assert b["selection"]["best_score"] == pytest.approx(max(curve_b))
