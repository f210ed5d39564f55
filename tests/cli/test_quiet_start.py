"""The command starts quietly (issue 29): no TensorFlow C++ start-up lines
before its output unless the user sets ``TF_CPP_MIN_LOG_LEVEL``, which is then
left as it is; ``fusedfocal --version`` says what was built.

The logic lives in ``fusedfocal/_version.py`` (the first module ``import
fusedfocal`` runs). The hermetic tests drive it in a child interpreter with a
stand-in ``tensorflow`` that writes TensorFlow 2.21's pre-initialisation lines
to file descriptor 2 (fast); the slow ones run the real command.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fusedfocal
from fusedfocal import _version

SRC = Path(fusedfocal.__file__).resolve().parent
# TensorFlow's C++ log lines (absl's prefix) and the start-up notices by their words
TF_LINES = re.compile(r"(?m)^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]|absl::InitializeLog|oneDNN|cuInit"
                      r"|cudart|cuda_|cpu_feature_guard")

# Verbatim from TensorFlow 2.21 on a CPU-only machine (two copies of absl, hence twice).
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
CUDART = ("I0000 00:00:1796536944.157208    9528 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
          "GPU will not be used.")
ONEDNN = ("I0000 00:00:1796537157.983821   11550 port.cc:153] oneDNN custom operations are on. You may see slightly "
          "different numerical results due to floating-point round-off errors from different computation orders.")
FATAL = "F0000 00:00:1796537157.983821   11550 some.cc:1] Check failed: a fatal line is always shown"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    env.update(extra)
    return env


@pytest.mark.parametrize("argv0, orig, expected", [
    ("/venv/bin/fusedfocal", ["/venv/bin/python", "/venv/bin/fusedfocal", "--version"], True),
    ("-m", ["python", "-m", "fusedfocal", "info"], True),
    ("-m", ["python", "-X", "importtime", "-W", "ignore", "-u", "-m", "fusedfocal"], True),
    ("-m", ["python", "-mfusedfocal"], True),
    ("-m", ["python", "-m", "fusedfocal.cli"], False),
    ("-m", ["python", "-m", "pytest", "fusedfocal"], False),
    ("-c", ["python", "-c", "import fusedfocal", "-m", "fusedfocal"], False),
    ("train.py", ["python", "train.py", "-m", "fusedfocal"], False),
    ("/venv/bin/pytest", ["/venv/bin/python", "/venv/bin/pytest", "fusedfocal"], False),
    ("", ["python"], False),
])
def test_started_as_command(argv0, orig, expected):
    assert _version.started_as_command(argv0, orig) is expected


def test_drop_start_noise_keeps_everything_else():
    keep = ["Traceback (most recent call last):", "  warnings.warn(msg)", "UserWarning: I0000 in a message",
            FATAL, "fusedfocal: a line of ours"]
    text = "\n".join([ABSL_NOTICE, CUDART, keep[0], ONEDNN, *keep[1:], ABSL_NOTICE, CUDART]) + "\n"
    assert _version.drop_start_noise(text) == "\n".join(keep) + "\n"


def test_the_package_runs_the_hook_before_it_imports_anything():
    """fusedfocal/__init__.py must import _version first: later, TensorFlow is loaded."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    first = next(n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.ImportFrom) and first.module == "fusedfocal._version", ast.dump(first)


@pytest.fixture(scope="module")
def fake_tf(tmp_path_factory):
    """A stand-in ``tensorflow`` that logs what TensorFlow 2.21 logs before its
    log level applies, straight to file descriptor 2 as C++ does."""
    d = tmp_path_factory.mktemp("fake_tf")
    (d / "tensorflow").mkdir()
    lines = "\n".join([ABSL_NOTICE, ONEDNN, CUDART, "a line that is not TensorFlow's", FATAL, ABSL_NOTICE, CUDART])
    (d / "tensorflow" / "__init__.py").write_text(textwrap.dedent(f"""
        import os, sys
        os.write(2, {lines + chr(10)!r}.encode())
        print("a Python warning on sys.stderr", file=sys.stderr)
        os.write(2, ("level seen by TensorFlow: " + os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset") + "\\n").encode())
        if os.environ.get("FAKE_TF_FAILS"):
            raise ImportError("the stand-in TensorFlow failed to import")
    """))
    return d


CHILD = textwrap.dedent("""
    import importlib.util, os, sys
    sys.argv[0] = {argv0!r}
    spec = importlib.util.spec_from_file_location("fusedfocal_version", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print("LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset"))
    print("TF", "tensorflow" in sys.modules)
""")


def _child(fake_tf, argv0="/venv/bin/fusedfocal", **env):
    code = CHILD.format(argv0=argv0, path=str(SRC / "_version.py"))
    return subprocess.run([sys.executable, "-c", code], env=_env(PYTHONPATH=str(fake_tf), **env),
                          capture_output=True, text=True, timeout=60)


def test_command_raises_the_level_and_drops_the_start_lines(fake_tf):
    proc = _child(fake_tf)
    assert proc.returncode == 0, proc.stderr
    assert "LEVEL 3" in proc.stdout and "TF True" in proc.stdout
    err = proc.stderr.splitlines()
    assert err == ["a line that is not TensorFlow's", FATAL, "a Python warning on sys.stderr",
                   "level seen by TensorFlow: 3"], proc.stderr


def test_a_level_set_by_the_user_is_kept_and_nothing_is_dropped(fake_tf):
    for level in ("0", "1"):
        proc = _child(fake_tf, TF_CPP_MIN_LOG_LEVEL=level)
        assert proc.returncode == 0, proc.stderr
        assert f"LEVEL {level}" in proc.stdout
        assert "TF False" in proc.stdout  # the hook did not import TensorFlow: nothing to filter
    # and when the package then imports TensorFlow, every line reaches the terminal
    code = CHILD.format(argv0="/venv/bin/fusedfocal", path=str(SRC / "_version.py")) + "import tensorflow\n"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(PYTHONPATH=str(fake_tf), TF_CPP_MIN_LOG_LEVEL="0"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(CUDART) == 2 and ONEDNN in proc.stderr and ABSL_NOTICE in proc.stderr
    assert "level seen by TensorFlow: 0" in proc.stderr


def test_not_the_command_changes_nothing(fake_tf):
    proc = _child(fake_tf, argv0="/venv/bin/my_training_script.py")
    assert proc.returncode == 0, proc.stderr
    assert "LEVEL unset" in proc.stdout and "TF False" in proc.stdout and proc.stderr == ""


def test_a_failing_import_still_shows_its_error(fake_tf):
    proc = _child(fake_tf, FAKE_TF_FAILS="1")
    assert proc.returncode == 1
    assert "ImportError: the stand-in TensorFlow failed to import" in proc.stderr  # the traceback reaches stderr
    assert "a line that is not TensorFlow's" in proc.stderr and CUDART not in proc.stderr


def _command():
    script = Path(sys.executable).with_name("fusedfocal")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fusedfocal"]


@pytest.mark.slow
def test_version_prints_the_version_quietly(tmp_path):
    from fusedfocal.cli.parser import version_text

    proc = subprocess.run([*_command(), "--version"], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == version_text()
    assert proc.stdout.startswith(f"fusedfocal {fusedfocal.__version__} (")
    assert not TF_LINES.search(proc.stderr), proc.stderr


@pytest.mark.slow
def test_compare_help_is_quiet(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fusedfocal", "compare", "--help"], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fusedfocal compare")
    assert not TF_LINES.search(proc.stderr), proc.stderr
