"""--profile traces: step markers, the loss found by its documented name, ``fusedfocal profile``."""

from __future__ import annotations

import json
import shutil

import pytest
from clitools import FAST, cli, cli_subprocess

pytestmark = pytest.mark.slow

pytest.importorskip("xprof", reason="the profiler plugin is not installed (pip install '.[profile]': "
                                    "tensorboard-plugin-profile / xprof); scripts/dev.sh installs it")

from fusedfocal import profiling  # noqa: E402

STEPS = 3
ONE_EPOCH = [a if a != "2" else "1" for a in FAST] + ["--loss", "focal", "--profile", str(STEPS)]


@pytest.fixture(scope="module", params=["on", "off"])
def profiled(request, tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"prof_jit_{request.param}")
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run,
               "--jit-compile", request.param, *ONE_EPOCH) == 0
    session, files = profiling.find_traces(run)
    assert files, f"no trace under {run}"
    conv = profiling._Converter(files)
    conv.tool_names()  # writes the HLO modules of XLA runs beside the trace
    return {"jit": request.param, "run": run, "session": session, "files": files,
            "events": conv.events(), "hlo": conv.hlo_modules(session), "overview": conv.tool("overview_page")}


def _custom_call_ran(p):
    return any(i.get("target") == "fusedfocal_focal_loss" for m in p["hlo"].values() for i in m.values())


def test_trace_path_is_the_documented_one(profiled):
    # With the tensorboard package (the [profile] extra), Keras' TensorBoard callback writes here.
    assert profiled["session"].parent == profiled["run"] / "logs" / "train" / "plugins" / "profile"


def test_step_markers_present_and_recognised(profiled):
    steps = [e for e in profiled["events"] if e["name"].startswith(profiling.STEP_NAME + " ")
             and "step_num" in e["args"]]
    assert len(steps) == STEPS
    assert len({e["args"]["step_num"] for e in steps}) == STEPS
    assert all(e["dur"] > 0 for e in steps)
    # The profiler's own overview page now measures the step time (0.0 without markers).
    assert profiling._overview_step_ms(json.loads(profiled["overview"])) > 0


def test_loss_found_by_documented_name(profiled):
    names = {e["name"] for e in profiled["events"]}
    if profiled["jit"] == "off" or _custom_call_ran(profiled):
        # The native op (graph mode) or its XLA custom call: the documented trace-viewer search term.
        assert any(n.startswith(profiling.NATIVE_OP) for n in names), sorted(names)[:50]
    else:
        # Pure-TF path under XLA: anonymous fusions, found through their op_name metadata.
        s = profiling.summarize(profiled["run"])
        assert s["xla"] and s["loss"]["events"]
        hlo_ops = {e["args"]["hlo_op"] for e in profiled["events"] if "hlo_op" in e["args"]}
        for ev in s["loss"]["events"]:
            assert ev["name"] in hlo_ops  # a real XLA kernel of this trace, searchable by that name
        assert profiling.NATIVE_OP not in names  # this path never runs the native op


def test_profile_command_reports_step_time_and_loss_share(profiled, tmp_path, capsys):
    out = tmp_path / "summary.json"
    assert cli("profile", profiled["run"], "--output", out) == 0
    printed = capsys.readouterr().out
    assert "Step time:" in printed and "of the step" in printed
    s = json.loads(out.read_text())
    assert s["steps"]["count"] == STEPS and s["steps"]["mean_ms"] > 0
    assert s["steps"]["marker"].startswith(profiling.STEP_NAME)
    assert 0 < s["loss"]["share"] < 1
    assert s["loss"]["forward_ms"] > 0 and s["loss"]["total_ms"] < s["steps"]["mean_ms"]
    assert s["xla"] is (profiled["jit"] == "on")
    assert 0 <= s["input"]["share"] < 1 and s["top_ops"]
    # The profiler's overview agrees with the step markers (it is rounded to 0.1 ms).
    assert abs(s["steps"]["profiler_overview_ms"] - s["steps"]["mean_ms"]) < 0.1 + 0.05 * s["steps"]["mean_ms"]


def test_profile_reads_the_layout_without_tensorboard(profiled, tmp_path):
    # Without the tensorboard package fusedfocal's ScalarLogger traces into RUN/logs/plugins/profile/<ts>/.
    run = tmp_path / "run"
    shutil.copytree(profiled["session"], run / "logs" / "plugins" / "profile" / profiled["session"].name)
    s = profiling.summarize(run)
    assert s["steps"]["count"] == STEPS and 0 < s["loss"]["share"] < 1


def test_profile_without_trace_is_a_usage_error(tmp_path, capsys):
    assert cli("profile", tmp_path) == 2
    assert "expected a profiler trace" in capsys.readouterr().err


def test_step_markers_under_mirrored_strategy(tiny_data, tmp_path):
    run = tmp_path / "mirrored"
    r = cli_subprocess("train", "--data", tiny_data["train"], "--out", run, "--strategy", "mirrored",
                       *ONE_EPOCH, env={"FUSEDFOCAL_LOGICAL_CPUS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli_subprocess("profile", run)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((run / "profile_summary.json").read_text())
    assert s["steps"]["count"] == STEPS and s["steps"]["mean_ms"] > 0 and 0 < s["loss"]["share"] < 1
