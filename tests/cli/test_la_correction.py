"""Issue 28: ``la`` is BCE plus a post-hoc prior correction, whose strength the CLI picks on
validation (``fusedfocal.cli.stages.posthoc``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import FAST, cli


def _fit(loss, bias0, seed=0, steps=6):
    import keras

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (rng.random((64, 5)) < [0.6, 0.3, 0.1, 0.05, 0.02]).astype(np.float32)
    keras.utils.set_random_seed(seed)
    dense = keras.layers.Dense(5, name="logits")
    model = keras.Sequential([keras.Input((8,)), dense])
    dense.bias.assign(bias0.astype(np.float32))
    model.compile(keras.optimizers.Adam(0.05), loss=loss)
    model.fit(x, y, batch_size=16, epochs=steps // 4, shuffle=False, verbose=0)
    return dense.kernel.numpy(), dense.bias.numpy()


def test_la_trains_exactly_as_bce_from_the_shifted_bias():
    """The claim the correction rests on: started at ``logodds - tau * logodds``, la's weights
    follow BCE's with the bias shifted by ``tau * logodds`` (so la differs only at inference)."""
    import fusedfocal

    priors = np.array([0.6, 0.3, 0.1, 0.05, 0.02])
    lo = np.log(priors / (1 - priors))
    k_bce, b_bce = _fit(fusedfocal.BCELoss(), lo, steps=8)
    k_la, b_la = _fit(fusedfocal.LogitAdjustedBCELoss(priors=priors, tau=1.0), lo - lo, steps=8)
    np.testing.assert_allclose(k_la, k_bce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_la + lo, b_bce, rtol=1e-5, atol=1e-5)
    assert not np.allclose(b_bce, lo)  # it trained


class _Model:
    """A stand-in with an output bias; the validation score peaks where the correction is 0.5."""

    def __init__(self, lo):
        import tensorflow as tf

        self.head = type("H", (), {})()
        self.head.bias = tf.Variable(np.zeros(len(lo), np.float32))
        self.lo = lo

    def score(self, _model=None):
        t = 1.0 - float(self.head.bias.numpy()[0] / self.lo[0])  # bias = (1 - t) * lo
        return {"val_p@1": -abs(t - 0.5), "val_loss": 7.0}


def test_the_best_correction_is_recorded_and_folded():
    from fusedfocal.cli.stages import posthoc

    lo = np.log(np.array([0.02, 0.3]) / (1 - np.array([0.02, 0.3])))
    corr = posthoc.LaCorrection(lo, 1.0, "fused")
    m = _Model(lo)
    out = corr.score_fn(m.score, "p@1")(m)
    assert out["val_la_tau"] == 0.5 and abs(out["val_p@1"]) < 1e-6 and out["val_loss"] == 7.0
    np.testing.assert_array_equal(m.head.bias.numpy(), 0.0)  # restored after the search
    info = corr.fold(m, [{"epoch": 1, "val_la_tau": 0.5}], 1, log=lambda s: None)
    assert info["tau"] == 0.5 and info["trained_tau"] == 1.0
    np.testing.assert_allclose(m.head.bias.numpy(), 0.5 * lo, rtol=1e-6)
    flat = corr.score_fn(lambda _m: {"val_p@1": 1.0}, "p@1")(m)  # every t ties: the trained tau stays
    assert flat["val_la_tau"] == 1.0


@pytest.mark.slow
def test_la_runs_choose_fold_and_keep_the_correction(tiny_data, tmp_path, capsys):
    run = tmp_path / "la"
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, "--loss", "la",
               *FAST) == 0
    captured = capsys.readouterr()
    assert "la: prior correction t=" in captured.out + captured.err
    m = json.loads((run / "metrics.json").read_text())
    from fusedfocal.cli.stages.posthoc import TAUS

    assert m["la_correction"]["tau"] in TAUS and m["la_correction"]["trained_tau"] == 1.0
    assert all(e["val_la_tau"] in TAUS for e in m["epochs"])
    best = m["selection"]["best_epoch"]
    assert m["la_correction"]["tau"] == m["epochs"][best - 1]["val_la_tau"]
    # The correction is in the saved model: evaluate on the same data gives the run's metrics.
    out = tmp_path / "eval.json"
    assert cli("evaluate", run, "--data", tiny_data["test"], "--output", out) == 0
    e = json.loads(out.read_text())
    assert e["metrics"]["global"]["micro"] == pytest.approx(m["metrics"]["global"]["micro"], rel=1e-6)
    # A given tau is the user's: kept, nothing chosen.
    fixed = tmp_path / "la_fixed"
    assert cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", fixed, "--loss", "la",
               "--loss-param", "tau=1", *FAST) == 0
    mf = json.loads((fixed / "metrics.json").read_text())
    assert "la_correction" not in mf and all("val_la_tau" not in e for e in mf["epochs"])
