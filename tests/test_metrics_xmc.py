"""XMC ranking metrics from the top-k: hand-computed cases and a brute-force dense reference."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import tensorflow as tf

from fusedfocal import metrics_xmc as mx

TOP = np.array([[3, 1, 0], [2, 0, 1]])
TRUE = [[1, 3], [0]]
W = np.array([1.0, 2.0, 3.0, 4.0])  # 1/p of labels 0..3


def test_hand_computed_precision_ndcg_psp():
    np.testing.assert_allclose(mx.precision_at_k(TOP, TRUE, 3), [0.5, 0.75, 0.5])
    g = 1 / math.log2(3)
    np.testing.assert_allclose(mx.ndcg_at_k(TOP, TRUE, 3), [0.5, (1 + g) / 2, (1 + g) / 2])
    # Document 0 earns 4 then 2, at best 4 then 2; document 1 earns 1 at rank 2, at best 1 at rank 1.
    np.testing.assert_allclose(mx.psp_at_k(TOP, TRUE, W, 3), [4 / 5, 3.5 / 3.5, (2 + 1 / 3) / (2 + 1 / 3)])
    np.testing.assert_allclose(mx.psp_at_k(TOP, TRUE, W, 3, normalize=False), [2.0, 1.75, 7 / 6])


def test_propensities_hand_computed():
    # p = 1 / (1 + C (N_l + B)^-A), C = (ln N - 1)(B + 1)^A, N = 100, A = 0.55, B = 1.5.
    p = mx.propensities([0, 10, 1000], 100)
    np.testing.assert_allclose(p, [0.17317032497262708, 0.3910173106040255, 0.8822343306693887], rtol=1e-12)
    np.testing.assert_allclose(mx.inverse_propensities([0, 10, 1000], 100), 1 / p, rtol=1e-15)
    assert mx.propensities([5], 100, a=0.6, b=2.6)[0] != mx.propensities([5], 100)[0]


def _dense_reference(scores, truth, w, k):
    """Row by row over dense [N, C] scores and multi-hot truth, straight from the definitions."""
    n = scores.shape[0]
    p, nd, num, den = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    for i in range(n):
        ranked = np.argsort(-scores[i], kind="stable")[:k]
        pos = set(np.flatnonzero(truth[i]))
        best = sorted((w[j] for j in pos), reverse=True)
        for kk in range(1, k + 1):
            hits = [1.0 if r in pos else 0.0 for r in ranked[:kk]]
            p[kk - 1] += sum(hits) / kk
            if pos:
                dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
                idcg = sum(1 / math.log2(j + 2) for j in range(min(kk, len(pos))))
                nd[kk - 1] += dcg / idcg
            num[kk - 1] += sum(w[r] for r in ranked[:kk] if r in pos) / kk
            den[kk - 1] += sum(best[:kk]) / kk
    return p / n, nd / n, num / den


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_dense(seed):
    rng = np.random.default_rng(seed)
    n, c, k = 40, 30, 5
    truth = rng.random((n, c)) < rng.uniform(0.02, 0.3)
    truth[0] = False  # a document without labels scores 0 and still counts
    scores = rng.normal(size=(n, c)) + 1.5 * truth  # informative but imperfect
    w = mx.inverse_propensities(truth.sum(0), n)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = [np.flatnonzero(r) for r in truth]
    p, nd, psp = _dense_reference(scores, truth, w, k)
    np.testing.assert_allclose(mx.precision_at_k(top, ids, k), p, rtol=1e-12)
    np.testing.assert_allclose(mx.ndcg_at_k(top, ids, k), nd, rtol=1e-12)
    np.testing.assert_allclose(mx.psp_at_k(top, ids, w, k), psp, rtol=1e-12)
    out = mx.xmc_metrics(top, ids, label_counts=truth.sum(0), num_docs=n)
    assert set(out) == {f"{m}@{j}" for m in ("p", "ndcg", "psp") for j in (1, 3, 5)}
    assert out["p@3"] == pytest.approx(p[2], rel=1e-12) and out["psp@5"] == pytest.approx(psp[4], rel=1e-12)


def test_perfect_ranking_scores_one_and_wider_top_is_cut():
    truth = [[0, 4], [2], [1, 3, 5, 6, 7, 8]]
    w = np.linspace(1, 3, 9)
    top = np.array([[4, 0, 8, 7, 6, 5], [2, 0, 1, 3, 4, 5], [8, 7, 6, 5, 3, 0]])  # best 1/p first
    np.testing.assert_allclose(mx.psp_at_k(top, truth, w, 5), 1.0)
    np.testing.assert_allclose(mx.ndcg_at_k(top, truth, 5), 1.0)
    np.testing.assert_allclose(mx.precision_at_k(top, truth, 1), [1.0])


def test_true_id_formats_agree_and_duplicates_count_once():
    ragged = tf.ragged.constant([[3, 1, 1], [0]], dtype=tf.int32)
    padded = np.array([[1, 3, 3], [0, -1, -1]])
    pairs = (np.array([1, 3, 0]), np.array([0, 2, 3]))
    expected = mx.precision_at_k(TOP, TRUE, 3)
    for form in (ragged, padded, pairs, [np.array([3, 1]), [0]]):
        np.testing.assert_allclose(mx.precision_at_k(TOP, form, 3), expected)
    # A prediction repeated within a row earns once; padding (-1) in the top-k never earns.
    np.testing.assert_allclose(mx.precision_at_k(np.array([[1, 1, -1]]), [[1]], 3), [1.0, 0.5, 1 / 3])


def test_clear_errors():
    with pytest.raises(ValueError, match=r"`k`.*top_ids.shape\[1\] = 3.*k=5"):
        mx.precision_at_k(TOP, TRUE, 5)
    with pytest.raises(ValueError, match=r"`true_ids`.*one row per row of top_ids \(2\).*3 rows"):
        mx.ndcg_at_k(TOP, TRUE + [[1]], 3)
    with pytest.raises(ValueError, match=r"`top_ids`.*int array.*float"):
        mx.precision_at_k(TOP.astype(float), TRUE, 1)
    with pytest.raises(ValueError, match=r"`true_ids`.*non-negative"):
        mx.precision_at_k(TOP, [[1, -3], [0]], 1)
    with pytest.raises(ValueError, match=r"`inv_propensity`.*largest id 3.*3 weights"):
        mx.psp_at_k(TOP, TRUE, W[:3], 1)
    with pytest.raises(ValueError, match=r"`num_docs`.*num_docs=2"):
        mx.propensities([1, 2], 2)
    with pytest.raises(ValueError, match=r"`num_docs`.*None"):
        mx.xmc_metrics(TOP, TRUE, ks=(1,), label_counts=[1, 1, 1, 1])


def test_large_label_space_without_dense_scores():
    # 3M labels, 2,000 documents: only [N, k] and the ragged ids are touched.
    rng = np.random.default_rng(0)
    c, n = 3_000_000, 2000
    ids = [rng.choice(c, size=5, replace=False) for _ in range(n)]
    top = np.stack([np.r_[r[:2], rng.integers(0, c, size=3)] for r in ids])
    out = mx.xmc_metrics(top, ids, label_counts=np.ones(c), num_docs=n)
    assert out["p@1"] == 1.0 and out["p@5"] == pytest.approx(0.4, abs=1e-3)


def test_doctests():
    assert doctest.testmod(mx, raise_on_error=False).failed == 0
