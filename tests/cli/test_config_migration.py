"""``config.json`` is the resolved spec serialised (version 2, issue 25); a run folder written before
the spec (version 1: the flags as one flat ``"args"`` dict) still resumes, evaluates and predicts."""

from __future__ import annotations

import json

import pytest
from clitools import FAST, cli, final_files

from fusedfocal.cli import spec as specs
from fusedfocal.cli.store import rundir, safe
from fusedfocal.cli.store.rundir import InjectedFault

FLAGS = [*FAST, "--loss", "bce", "--deterministic", "--seed", "4"]


def _train(tiny_data, out, *extra):
    return cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, *FLAGS, *extra)


def _as_version_1(run):
    """Rewrites ``run``'s config.json as a run before the spec wrote it: the flags in ``"args"``
    (the head as --head resolved, as then), no ``"spec"``."""
    cfg = json.loads((run / "config.json").read_text())
    flat = specs.Spec.from_json(cfg.pop("spec")).flat()
    for name in ("out", "resume", "overwrite", "losses", "threshold_mode", "seeds"):  # never stored by train
        flat.pop(name)
    cfg.update({"fusedfocal_cli": 1, "args": flat})
    cfg.pop("command")
    (run / "config.json").write_text(json.dumps(cfg))
    return flat


def test_spec_round_trip_and_version_1_migration():
    spec = specs.Spec.from_flat("compare", {"data": ["a.jsonl"], "seed": 3, "groups": [35, 8], "losses": ["bce"],
                                            "learning_rate": 0.01, "head": "fused", "label_shards": 2},
                                sources={"seed": "flag"})
    again = specs.Spec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and again.sources == {"seed": "flag"}
    assert spec.data.data == ("a.jsonl",) and spec.evaluation.groups == (35, 8)  # lists back as tuples
    assert (spec.data.seed, spec.model.seed, spec.optim.seed, spec.runtime.seed) == (3, 3, 3, 3)
    assert spec.with_seed(5).optim.seed == 5 and spec.with_seed(5).data.seed == 5
    old = {"fusedfocal_cli": 1, "args": {"model": "cnn", "learning_rate": 0.01, "groups": [35, 8], "head": None},
           "head": "dense", "settings": {"model": {"value": "cnn", "source": "data", "why": "short"}}}
    migrated = specs.load(old)
    assert migrated.model.model == "cnn" and migrated.optim.learning_rate == 0.01
    assert migrated.head.head == "dense" and migrated.evaluation.groups == (35, 8)  # the resolved head
    assert migrated.sources["model"] == "stored" and migrated.settings["model"].source == "data"
    assert migrated.model.filters == 96 and migrated.data.text_field == "text"  # absent: the parser's defaults


@pytest.mark.slow
def test_a_version_1_run_folder_resumes_evaluates_and_predicts(tiny_data, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert _train(tiny_data, reference) == 0
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["fusedfocal_cli"] == 2 and cfg["spec"]["optim"]["epochs"] == 2
    assert cfg["spec"]["sources"]["loss"] == "flag" and cfg["spec"]["sources"]["ngram_weighting"] == "default"

    run = tmp_path / "run"  # killed after its first epoch's checkpoint, then made a version-1 folder
    safe._FAULT_HITS.clear()
    monkeypatch.setenv(rundir.FAULT_ENV, "checkpoint-1")
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    with pytest.raises(InjectedFault):
        _train(tiny_data, run)
    monkeypatch.delenv(rundir.FAULT_ENV)
    stored = _as_version_1(run)
    assert stored["epochs"] == 2 and stored["loss"] == "bce"
    assert cli("train", "--out", run, "--resume") == 0
    assert "Resuming" in capsys.readouterr().err
    assert final_files(run) == final_files(reference)  # the migrated spec trained the same run

    _as_version_1(reference)
    out = tmp_path / "eval.json"
    assert cli("evaluate", reference, "--data", tiny_data["test"], "--output", out) == 0
    assert json.loads(out.read_text())["metrics"]["global"]["micro"]["f1"] is not None
    capsys.readouterr()
    assert cli("predict", reference, "a text about nothing in particular", "--top-k", "2", "--json") == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[0])["labels"]) == 2
