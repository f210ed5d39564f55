"""compare with two losses: table, JSON, Markdown and PNGs; loss-spec parsing."""

from __future__ import annotations

import json

import pytest
from clitools import FAST, cli

from fusedfocal.cli import CLIError
from fusedfocal.cli.commands.compare import parse_loss_specs


def test_parse_loss_specs():
    assert parse_loss_specs(["bce,focal:gamma=2,alpha=0.25,asl", "db"]) == [
        ("bce", {}), ("focal", {"gamma": 2, "alpha": 0.25}), ("asl", {}), ("db", {})]
    assert parse_loss_specs(["focal:alpha=none"]) == [("focal", {"alpha": None})]
    with pytest.raises(CLIError, match="--losses"):
        parse_loss_specs(["gamma=2"])


@pytest.mark.slow
def test_compare_two_losses(tiny_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli("compare", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out,
               "--losses", "bce,focal:gamma=2,alpha=0.25", "--groups", "60,20", *FAST) == 0
    printed = capsys.readouterr().out
    assert "Loss comparison: cnn model" in printed and "train.jsonl" in printed  # title says what was trained on
    assert "micro F1" in printed and "macro F1" in printed  # columns explained
    assert "*" in printed and "comparison.md" in printed
    for name in ("comparison.md", "comparison.json", "recall_vs_frequency.png", "pr_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 200, name
    assert (out / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    c = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in c["results"]] == ["bce", "focal(gamma=2,alpha=0.25)"]
    assert c["results"][1]["loss_params"] == {"gamma": 2, "alpha": 0.25}
    # Same data, seed and budget for every loss.
    assert len({json.dumps(r["documents"]) for r in c["results"]}) == 1
    assert all(len(r["history"]["loss"]) == 2 for r in c["results"])
    # The trust notes follow the runs: the budget note exactly when every run kept its last epoch.
    all_last = all(r["selection"]["best_epoch"] == r["selection"]["epochs_trained"]
                   and not r["selection"]["stopped_early"] for r in c["results"])
    assert any(w.startswith("Budget too short") for w in c["warnings"]) == all_last
    md = (out / "comparison.md").read_text()
    assert ("Can this comparison be trusted?" in md) == bool(c["warnings"])
    assert ("WARNING: Budget too short" in printed) == all_last
    assert "**" in md and "| label | train docs | eval docs |" in md
    for r in c["results"]:
        assert (tmp_path / r["run_dir"].split(str(tmp_path) + "/", 1)[-1] / "model.keras").exists()
    # Group boundaries that leave a group empty print '-' (never NaN).
    empty = [g for g in ("head", "medium", "tail") if c["groups"][g] == 0]
    if empty:
        assert "NaN" not in md and "nan" not in printed and " - " in printed


@pytest.mark.slow
def test_compare_unknown_loss_is_a_clear_error(tiny_data, tmp_path, capsys):
    assert cli("compare", "--data", tiny_data["train"], "--out", tmp_path / "c", "--losses", "bce,nope", *FAST) == 2
    err = capsys.readouterr().err
    assert "argument --losses:" in err and "'nope'" in err
