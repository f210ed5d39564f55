"""What the loader does with the install's build info, and the fallback warning.

A library built for another TensorFlow is simulated by a build info that
names another version (or C++ ABI): the loader must refuse it with one clear
warning naming both versions and the rebuild command, never load it (no
``undefined symbol`` traceback), and run the pure-TF path.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal
from fusedfocal.ops import native

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build_support"))
import native_build  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_loader(monkeypatch):
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.delenv(native.WARNING_ENV_VAR, raising=False)
    native.reset()
    yield
    native.reset()


def _fake_install(tmp_path, **info):
    lib = tmp_path / native.LIBRARY_NAME
    # Not a loadable library: if the loader tried to load it, the test would
    # see "failed to load" instead of the version message.
    lib.write_bytes(b"\x7fELF built for another TensorFlow")
    base = {"schema": 1, "native": True, "tensorflow": tf.__version__,
            "cxx11_abi": int(tf.sysconfig.CXX11_ABI_FLAG), "xla_cpu": True, "cuda": False}
    (tmp_path / native.INFO_NAME).write_text(json.dumps({**base, **info}))
    return str(lib)


def _loss(x, y, **kw):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(fusedfocal.sigmoid_focal_loss(x, y, gamma=2.0, **kw))
    return loss.numpy(), tape.gradient(loss, x).numpy()


def _data():
    rng = np.random.default_rng(0)
    return (tf.constant(rng.normal(size=(8, 5)).astype(np.float32) * 4),
            tf.constant((rng.random((8, 5)) < 0.3).astype(np.float32)))


@pytest.mark.parametrize("info, expect", [
    ({"tensorflow": "2.20.1"}, ["2.20.1", tf.__version__, "minor versions"]),
    ({"cxx11_abi": 1 - int(tf.sysconfig.CXX11_ABI_FLAG)}, ["_GLIBCXX_USE_CXX11_ABI", tf.__version__]),
], ids=["tf-version", "cxx11-abi"])
def test_mismatched_build_warns_once_and_runs_pure_tf(monkeypatch, tmp_path, info, expect):
    monkeypatch.setattr(native, "library_path", _fake_install(tmp_path, **info))
    x, y = _data()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = _loss(x, y)
        _loss(x, y)
        _loss(x, y, implementation="native")
    msgs = [str(w.message) for w in rec if w.category is RuntimeWarning]
    assert len(msgs) == 1, msgs
    for word in expect + ["is not loaded", "pip install --no-binary fusedfocal"]:
        assert word in msgs[0], (word, msgs[0])
    ref = _loss(x, y, implementation="xla")
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    st = native.status()
    assert not st["loaded"] and "2.20.1" in st["problem"] if "tensorflow" in info else not st["loaded"]
    assert st["xla_cpu"].startswith("pure TensorFlow")


def test_same_minor_other_patch_is_accepted(tmp_path):
    major, minor = tf.__version__.split(".")[:2]
    assert native._mismatch({"tensorflow": f"{major}.{minor}.99", "cxx11_abi": native._tf_abi()}) is None
    assert native._mismatch({"tensorflow": f"{major}.{int(minor) + 1}.0"}) is not None


def test_install_without_native_op_is_reported(monkeypatch, tmp_path):
    (tmp_path / native.INFO_NAME).write_text(json.dumps(
        {"schema": 1, "native": False, "reason": "C++ compiler 'false' not found or not working (set CXX, or install g++)"}))
    monkeypatch.setattr(native, "library_path", str(tmp_path / native.LIBRARY_NAME))
    x, y = _data()
    with pytest.warns(RuntimeWarning, match="install built no native op.*compiler 'false'") as rec:
        _loss(x, y)
        _loss(x, y)
    assert len([w for w in rec if w.category is RuntimeWarning]) == 1
    st = native.status()
    assert st["loaded"] is False and "compiler 'false'" in st["problem"]
    assert all(st[k].startswith("pure TensorFlow") for k in ("eager_graph_cpu", "xla_cpu", "xla_gpu"))


@pytest.mark.parametrize("how", ["warning-env", "implementation-env", "keyword"])
def test_fallback_warning_can_be_silenced(monkeypatch, tmp_path, how):
    monkeypatch.setattr(native, "library_path", str(tmp_path / native.LIBRARY_NAME))
    kw = {}
    if how == "warning-env":
        monkeypatch.setenv(native.WARNING_ENV_VAR, "0")
    elif how == "implementation-env":
        monkeypatch.setenv(native.ENV_VAR, "xla")
    else:
        kw = {"implementation": "xla"}
    x, y = _data()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _loss(x, y, **kw)
    assert not [w for w in rec if w.category is RuntimeWarning]


def test_status_of_this_install():
    st = fusedfocal.native.status()
    assert set(st) >= {"library", "loaded", "problem", "build", "eager_graph_cpu", "eager_graph_gpu",
                       "xla_cpu", "xla_gpu", "tensorflow", "gpus"}
    if st["loaded"]:
        assert st["problem"] is None and st["eager_graph_cpu"] == "native op"
    else:
        assert st["problem"] and st["eager_graph_cpu"].startswith("pure TensorFlow")


@pytest.mark.parametrize("version, ok", [("2.21.0", True), ("2.21.7", True), ("2.20.2", False),
                                         ("2.22.0", False), ("3.0.0", False)])
def test_build_refuses_tensorflow_outside_the_pin(version, ok):
    assert native_build.tf_requirement() == "tensorflow>=2.21,<2.22"
    if ok:
        native_build.check_pin(version)
    else:
        with pytest.raises(native_build.BuildError, match=rf"TensorFlow {version} is outside .*"
                                                         r"tensorflow>=2.21,<2.22"):
            native_build.check_pin(version)


def test_tensorflow_is_a_build_requirement_only_when_missing(monkeypatch, tmp_path):
    monkeypatch.delenv(native_build.ENV_TF_PYTHON, raising=False)
    assert native_build.find_tensorflow() is not None  # this environment has TensorFlow
    assert native_build.build_requirements() == []
    monkeypatch.setattr(native_build, "find_tensorflow", lambda purelib=None: None)
    assert native_build.build_requirements() == ["tensorflow>=2.21,<2.22"]
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("")
    monkeypatch.undo()
    assert native_build.find_tensorflow(str(tmp_path)) == str(tmp_path / "tensorflow")
