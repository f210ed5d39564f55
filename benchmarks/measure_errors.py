"""Worst relative error vs the float64 reference, per loss, f32 and f16 (eager).

    .venv/bin/python benchmarks/measure_errors.py
"""
import sys
from pathlib import Path
_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(_TESTS), str(_TESTS / "losses")]
import numpy as np, tensorflow as tf
import reference as ref
from _helpers import X, Y, SOFT, COUNTS, NUM_DOCS, rounded, loss_and_grad, max_rel_err
from fusedfocal import losses as L
rng = np.random.default_rng(5)
XX = np.concatenate([X, rng.normal(0, 6, (64, 5))])
YY = (rng.random(XX.shape) < 0.3).astype(float); YY[2] = 0
SS = rng.random(XX.shape)
ids = rng.integers(0, 5, XX.shape[0]); OH = np.eye(5)[ids]
PR = L.priors_from_counts(COUNTS, NUM_DOCS)
cases = {
 "bce": (lambda x: L.binary_crossentropy(x, SS), lambda x: ref.weighted_bce(x, SS)),
 "wbce": (lambda x: L.weighted_binary_crossentropy(x, YY, pos_weight=[.5,1,2,3,4]), lambda x: ref.weighted_bce(x, YY, np.array([.5,1,2,3,4]))),
 "asl": (lambda x: L.asymmetric_loss(x, YY), lambda x: ref.asymmetric(x, YY)),
 "cb": (lambda x: L.class_balanced_focal_loss(x, YY, class_counts=COUNTS), lambda x: ref.class_balanced_focal(x, YY, COUNTS)),
 "db": (lambda x: L.distribution_balanced_loss(x, YY, class_counts=COUNTS, num_docs=NUM_DOCS), lambda x: ref.distribution_balanced(x, YY, COUNTS, NUM_DOCS)),
 "la": (lambda x: L.logit_adjusted_bce(x, YY, priors=PR), lambda x: ref.logit_adjusted(x, YY, PR)),
 "poly": (lambda x: L.poly1_focal_loss(x, SS), lambda x: ref.poly1_focal(x, SS)),
 "dice": (lambda x: L.dice_loss(x, YY), lambda x: ref.tversky(x, YY, .5, .5)),
 "tversky": (lambda x: L.tversky_loss(x, YY), lambda x: ref.tversky(x, YY)),
 "hinge": (lambda x: L.squared_hinge_loss(x, SS), lambda x: ref.squared_hinge(x, SS)),
 "logcosh": (lambda x: L.log_cosh_loss(x, SS), lambda x: ref.log_cosh(x, SS)),
 "cat_focal(g=0.5)": (lambda x: L.categorical_focal_loss(x, OH, gamma=0.5), lambda x: ref.categorical_focal(x, OH, 0.5)),
 "sparse_cat_focal": (lambda x: L.sparse_categorical_focal_loss(x, ids), lambda x: ref.categorical_focal(x, OH, 2.0)),
}
print(f"{'loss':18s} {'f32 value':>10s} {'f32 grad':>10s} {'f16 value':>10s} {'f16 grad':>10s}")
for name, (fn, rf) in cases.items():
    row = []
    for dt in (tf.float32, tf.float16):
        xt, x64 = rounded(XX, dt)
        l, g = loss_and_grad(fn, xt, "eager")
        rl = np.real(rf(x64)); rg = ref.complex_step_sum_grad(rf, x64)
        floor = 1e-30 if dt == tf.float32 else 6.1e-5  # f16 grads: normal range only
        row += [max_rel_err(l.numpy(), rl, 1e-30), max_rel_err(tf.cast(g, tf.float64).numpy(), rg, floor)]
    print(f"{name:18s} " + " ".join(f"{e:10.2e}" for e in row))
