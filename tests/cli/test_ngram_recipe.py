"""The Reuters n-gram recipe of ``scripts/reuters_ngram.sh`` (issue 14), on the tiny synthetic corpus:
one hidden layer over TF-IDF unigrams (no bigrams), Adam 0.01, early-stopping patience, and the five
losses of the script (``la``, logit-adjusted BCE, in place of ``cb``) all build, train and evaluate."""

from __future__ import annotations

import json
import math

import pytest
from clitools import FAST, cli

# The script's flags, scaled down: hidden 16 instead of 256; --vocab-size/--max-length from FAST.
_drop = {i for i, a in enumerate(FAST) if a in ("--filters", "--embed-dim", "--epochs")}
RECIPE = [a for i, a in enumerate(FAST) if i not in _drop and i - 1 not in _drop] + [
    "--model", "ngram", "--ngram-hidden", "16", "--ngram-bigrams", "0", "--learning-rate", "0.01",
    "--epochs", "3", "--patience", "4", "--losses", "bce,focal,asl,db,la"]


@pytest.mark.slow
def test_reuters_ngram_recipe_trains_all_five_losses(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    assert cli("compare", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out,
               *RECIPE) == 0
    from fusedfocal.cli.stages.load import load_run

    runs = sorted((out / "runs").iterdir())
    assert [p.name.split("-")[0] for p in runs] == sorted(["bce", "focal", "asl", "db", "la"])
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        assert m["settings"]["model"] == "ngram"
        model = load_run(run)[0]
        bag = model.get_layer("ngram_bag")  # the hidden-layer head: bag -> relu -> logits
        assert bag.units == 16 and bag.num_bigrams == 0 and model.get_layer("logits").units == 6
        losses = m["history"]["loss"]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]  # it trains
        assert 0.0 <= m["metrics"]["global"]["macro"]["f1"] <= 1.0
