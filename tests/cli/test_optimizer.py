"""``--optimizer`` and ``--weight-decay`` (issue 14): SGD with momentum for the linear n-gram model
(the L2-SVM-like recipe of ``scripts/reuters_svm.sh``), stored in the run and reported."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from clitools import FAST, cli

from fusedfocal.cli import spec as specs
from fusedfocal.cli.stages.build import make_optimizer


def _optimizer(optim):
    return make_optimizer(optim)


def _args(**kw):
    return specs.OptimConfig(**{"optimizer": "adam", "learning_rate": 0.1, "weight_decay": 0.0, **kw})


def test_optimizer_choice_and_decoupled_weight_decay():
    import keras

    adam = _optimizer(_args())
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay is None
    sgd = _optimizer(_args(optimizer="sgd", weight_decay=0.5))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)
    # Decoupled: a step with a zero gradient still multiplies the weight by 1 - lr * wd.
    w = keras.Variable(np.full((3,), 2.0, np.float32))
    sgd.apply_gradients([(keras.ops.zeros((3,)), w)])
    np.testing.assert_allclose(np.asarray(w), 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)
    # Old run folders have no "optimizer" in config.json: Adam, as before (the migrated spec's None).
    old = specs.load({"args": {"learning_rate": 0.1}}).optim
    assert old.optimizer is None and isinstance(_optimizer(old), keras.optimizers.Adam)


def test_bad_optimizer_and_weight_decay_are_refused(capsys):
    assert cli("train", "--optimizer", "lbfgs") == 2
    assert "argument --optimizer: invalid choice: 'lbfgs'" in capsys.readouterr().err
    assert cli("train", "--weight-decay", "-1") == 2
    err = capsys.readouterr().err
    assert "argument --weight-decay:" in err and "-1" in err


@pytest.mark.slow
def test_linear_ngram_hinge_with_sgd_trains_and_is_recorded(tiny_data, tmp_path):
    out = tmp_path / "svm"
    flags = [a for a in FAST]
    flags[flags.index("--epochs") + 1] = "3"
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", out, *flags,
               "--model", "ngram", "--ngram-hidden", "0", "--ngram-bigrams", "0", "--loss", "hinge",
               "--optimizer", "sgd", "--learning-rate", "0.8", "--weight-decay", "0.001", "--patience", "0") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["optimizer"] == "sgd" and m["settings"]["weight_decay"] == 0.001
    stored = specs.load(json.loads((out / "config.json").read_text())).flat()  # what --resume restores
    assert stored["optimizer"] == "sgd" and stored["weight_decay"] == 0.001
    losses = m["history"]["loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert m["metrics"]["global"]["micro"]["f1"] > 0.3  # the tiny corpus is learnable by a linear model
