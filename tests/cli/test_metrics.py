"""Metrics, label groups, threshold tuning and tables (NumPy only, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from fusedfocal.cli import metrics as ev
from fusedfocal.cli.store import report


def test_micro_macro_match_hand_counts():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], np.float32)
    s = np.array([[.9, .2, .1], [.4, .8, .7], [.6, .3, .2], [.1, .1, .1]])
    m = ev.metrics_at(s, y, 0.5, train_counts=[50, 10, 2], label_names=["a", "b", "c"])
    # tp: a 1 (doc0), b 1 (doc1); fp: a 1 (doc2), c 1 (doc1); fn: a 1 (doc1), b 1 (doc2)
    assert m["micro"] == pytest.approx({"precision": 2 / 4, "recall": 2 / 4, "f1": 0.5})
    # macro over labels with positives (a, b): a P=.5 R=.5, b P=1 R=.5
    assert m["macro"]["precision"] == pytest.approx(0.75)
    assert m["macro"]["recall"] == pytest.approx(0.5)
    assert m["macro"]["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["labels_with_positives"] == 2
    assert m["groups"]["head"]["labels"] == 1 and m["groups"]["medium"]["labels"] == 1
    assert m["groups"]["tail"]["macro"] is None  # label c has no positives -> '-'
    assert [p["eval_docs"] for p in m["per_class"]] == [2, 2, 0]


def test_groups_follow_huang_boundaries():
    g = ev.label_groups([100, 35, 34, 9, 8, 1], (35, 8))
    assert g["head"].tolist() == [0, 1] and g["medium"].tolist() == [2, 3] and g["tail"].tolist() == [4, 5]


def test_tune_thresholds_global_per_class_and_fallback():
    rng = np.random.default_rng(0)
    y = np.zeros((200, 3), np.float32)
    y[:60, 0] = 1
    y[:20, 1] = 1
    s = rng.uniform(0, 0.3, (200, 3))
    s[:60, 0] = rng.uniform(0.6, 0.9, 60)  # label 0 separable above 0.6
    s[:20, 1] = rng.uniform(0.2, 0.35, 20)  # label 1 positives low: best threshold low
    g, per, fallback = ev.tune_thresholds(s, y)
    assert fallback.tolist() == [False, False, True]  # label 2 has no validation positives
    assert per[2] == g
    assert 0.3 <= per[0] <= 0.6
    assert per[1] < 0.36
    m = ev.metrics_at(s, y, per, train_counts=[60, 20, 0], label_names=list("abc"))
    assert m["per_class"][0]["f1"] == 1.0


def test_labels_with_few_validation_positives_keep_the_global_threshold():
    y = np.zeros((100, 2), np.float32)
    y[:40, 0] = 1
    y[:2, 1] = 1  # two positives: too few to tune on
    s = np.full((100, 2), 0.1)
    s[:40, 0] = 0.8
    s[:2, 1] = 0.05  # the two positives score below every negative
    g, per, fallback = ev.tune_thresholds(s, y, min_positives=5)
    assert fallback.tolist() == [False, True] and per[1] == g
    _, per_unguarded, _ = ev.tune_thresholds(s, y, min_positives=1)
    assert per_unguarded[1] <= 0.05  # what the guard prevents: a threshold under every score


def test_pr_curve_endpoints():
    p, r = ev.pr_curve(np.array([.9, .8, .3, .1]), np.array([1, 0, 1, 0]))
    assert r[-1] == 1.0 and p[1] == 1.0 and p[-1] == 0.5


def test_table_marks_best_and_shows_dash():
    def res(name, f1):
        block = {"micro": {"precision": f1, "recall": f1, "f1": f1}, "macro": {"precision": f1, "recall": f1, "f1": f1},
                 "groups": {"head": {"macro": {"recall": f1, "f1": f1}}, "medium": {"macro": None},
                            "tail": {"macro": None}}}
        return {"name": name, "metrics": {"global": block}}

    table = report.render_table([res("bce", 0.5), res("focal", 0.6)], "global")
    lines = table.splitlines()
    assert "60.0*" in lines[3] and "*" not in lines[2]
    assert " - " in lines[2] + " " and "nan" not in table.lower()
    md = report.render_table([res("bce", 0.5), res("focal", 0.6)], "global", markdown=True)
    assert "**60.0**" in md
