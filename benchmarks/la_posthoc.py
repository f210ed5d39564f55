"""Issue 28: why logit-adjusted BCE (``la``) loses P@1 when documents carry many labels.

Claim tested: with the output bias started at ``prior log-odds - offsets`` (the CLI's fused head),
training ``la`` is training BCE with the bias shifted by the offsets. The logit the loss sees,
``z = x + tau * log(p / (1 - p))``, follows the same trajectory as BCE's logit (Adam's update does
not depend on where a parameter starts, and ``dz/dbias = 1``). So ``la`` differs from BCE only at
inference, where it ranks by the raw ``x = z - tau * logodds``: a post-hoc prior correction of
strength ``tau``, which Menon et al. (ICLR 2021, section 4) tune on held-out data.

For each ``--mean-labels`` (labels a document of the synthetic XMC corpus) and seed, this trains
the fused head (``FocalHeadModel``, the fasttext-like encoder of ``xmc_quality.py``) with ``bce``
and with ``la`` (tau 1) from the same start, then ranks the test documents by
``z - t * logodds`` for ``t`` in ``--taus`` (for BCE ``z`` is its logit; for ``la``, ``x + logodds``)
and reports P@1/P@5/PSP@1/PSP@5. If the claim holds, the two losses give the same row at every ``t``
(up to float rounding over the run), and ``la``'s default inference is the ``t = 1`` row.

Usage::

    python benchmarks/la_posthoc.py --mean-labels 1.2,5,20 --labels 1000 --seeds 0,1,2 --out FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    import keras
    import tensorflow as tf

    import xmc_quality as xq
    from fusedfocal import metrics_xmc
    from fusedfocal.losses import priors_from_counts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mean-labels", default="1.2,20")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--seeds", default="0")
    p.add_argument("--taus", default="0,0.25,0.5,0.75,1")
    p.add_argument("--out")
    args = p.parse_args(argv)
    taus = [float(t) for t in args.taus.split(",")]
    for m in [float(v) for v in args.mean_labels.split(",")]:
        args.mean_labels = m
        t0 = time.time()
        data = xq.load_data(args)
        lo = np.log(priors_from_counts(np.maximum(data["counts"], 1), len(data["x"])))
        lo = lo - np.log1p(-np.exp(lo))  # log-odds of the priors la uses
        per_doc = float(np.mean([len(y) for y in data["yt"]]))
        print(f"mean_labels {m}: {per_doc:.1f} labels a test document, data {time.time() - t0:.0f}s", flush=True)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for loss in ("bce", "la"):
                keras.backend.clear_session()
                model, _ = xq.build_pair(args, data, loss, seed)
                model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=True)
                model.fit(xq.dataset(data, args, seed), epochs=args.epochs, verbose=0)
                head = model.head
                bias = head.bias.numpy()
                z_shift = lo if loss == "la" else 0.0  # the logit the loss saw: x + offsets for la
                for t in taus:
                    head.bias.assign((bias + z_shift - t * lo).astype(np.float32))
                    top = xq.top5(model, "fused", data["xt"])
                    r = metrics_xmc.xmc_metrics(top, data["yt"], ks=(1, 5), label_counts=data["counts"],
                                                num_docs=len(data["x"]))
                    row = dict(mean_labels=m, labels_per_test_doc=round(per_doc, 2), seed=seed, loss=loss,
                               infer_tau=t, **{k: round(float(r[k]), 4) for k in ("p@1", "p@5", "psp@1", "psp@5")})
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(row) + "\n")
                head.bias.assign(bias)


if __name__ == "__main__":
    main()
