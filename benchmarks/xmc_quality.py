"""Issue 19's quality target: fused vs unfused training give the same P@k (within seed noise).

For each seed and loss (bce, focal gamma 2, la tau 1) the same encoder (fasttext-like embedding
bag, ``fusedfocal.cli.stages.models.build_model("fasttext", features_only=True)``) is trained twice on
the synthetic XMC corpus (``fusedfocal.data.synthetic_xmc_splits``, all ``--labels`` labels):

* **fused**: ``fusedfocal.keras.FocalHeadModel`` + ``FocalHead`` (the loss is
  ``linear_focal_loss``, chunk by chunk; top-k by the head's chunked ``linear_top_k``);
* **unfused**: the encoder + ``Dense(C)`` logits, and the dense loss class
  (``fusedfocal.BCELoss`` / ``SigmoidFocalLoss`` / ``LogitAdjustedBCELoss``), multi-hot labels
  built in the step from the same padded ids; top-k by ``tf.math.top_k`` on the logits.

Both use the same scale (a document's loss is its sum over labels, averaged over documents: the
fused head's ``class_weights = C`` on its mean over B x C, and ``C x`` the dense class's mean, as
``fusedfocal train`` does), the same initial weights (the unfused model gets the fused model's
encoder weights and the transposed head kernel and bias), the same bias start (prior log-odds,
minus the logit offsets for la), the same batches (one seeded shuffle) and the same optimizer
(Adam). Evaluation is batched (never ``[N, C]``): P@1/3/5 and PSP@1/3/5 from
``fusedfocal.metrics_xmc`` (propensities from the training label counts).

The corpus is fixed (data seed 0); the seed varies the initial weights and the batch order.

Issue 26 adds heads trained by the fused update (``--heads``), from the same start (the fused
model's encoder weights and kernel, rounded to bfloat16):

* **adam_bf16**: ``FocalHead(weight_dtype="bfloat16")`` in ``FocalHeadModel(...,
  head_optimizer={"optimizer": "adam", "learning_rate": lr, "moment_dtype": "bfloat16"})``:
  Adam's moments in bfloat16, stochastic rounding, the encoder on compile's Adam;
* **adam_bf16_nearest**: the same with round-to-nearest (the ablation: expected to stall);
* **adam_f32**: the fused update in float32 (what the fusion alone changes: nothing but order).

Usage::

    python benchmarks/xmc_quality.py --out results.jsonl [--labels 131072 --train 20000 ...]
    python benchmarks/xmc_quality.py --report results.jsonl --md out.md --header "..."
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time

import numpy as np

LOSSES = ("bce", "focal", "la")
HEADS = ("fused", "unfused")
UPDATE_HEADS = {"adam_f32": ("float32", "float32", "stochastic"), "adam_bf16": ("bfloat16", "bfloat16", "stochastic"),
                "adam_bf16_nearest": ("bfloat16", "bfloat16", "nearest")}
KS = (1, 3, 5)


def load_data(args):
    from fusedfocal.data import synthetic_xmc_splits

    (tr_x, tr_y), (te_x, te_y) = synthetic_xmc_splits(seed=0, num_train=args.train, num_test=args.test,
                                                      num_labels=args.labels, label_ids=True,
                                                      mean_labels=getattr(args, "mean_labels", 5.0))
    vocab = {}
    for t in tr_x:
        for w in t.split():
            if w not in vocab:
                vocab[w] = len(vocab) + 1  # 0 is padding

    def tok(texts):
        out = np.zeros((len(texts), args.max_length), np.int32)
        for i, t in enumerate(texts):
            ids = [vocab.get(w, 0) for w in t.split()][: args.max_length]
            out[i, : len(ids)] = ids
        return out

    def pad_ids(labels, width):
        out = np.full((len(labels), width), -1, np.int32)
        for i, l in enumerate(labels):
            l = np.asarray(l, np.int64)[:width]
            out[i, : len(l)] = l
        return out

    width = max(len(l) for l in tr_y)
    counts = np.zeros(args.labels, np.int64)
    for l in tr_y:
        counts[np.asarray(l, np.int64)] += 1
    return dict(x=tok(tr_x), y=pad_ids(tr_y, width), xt=tok(te_x), yt=[np.asarray(l, np.int64) for l in te_y],
                counts=counts, vocab_size=len(vocab) + 1, width=width)


def loss_setup(name, counts, num_docs):
    """(head kwargs, dense loss instance, initial bias) of loss ``name``; one rule for both heads."""
    import fusedfocal
    from fusedfocal.cli.stages import fused, models
    from fusedfocal.losses import priors_from_counts

    params = {"focal": {"gamma": (2.0, "--gamma")}, "la": {"tau": (1.0, "--tau")}}.get(name, {})
    kw = fused.head_kwargs(name, params, counts, num_docs)  # counts < 1 count 1, as the CLI
    if name == "bce":
        dense = fusedfocal.BCELoss()
    elif name == "focal":
        dense = fusedfocal.SigmoidFocalLoss(gamma=2.0, alpha=None)
    else:
        pri = priors_from_counts(np.maximum(counts, 1), int(num_docs))
        dense = fusedfocal.LogitAdjustedBCELoss(priors=pri, tau=1.0)
    bias = models.prior_logits(counts / max(num_docs, 1)) - kw.get("logit_offsets", 0.0)
    return kw, dense, bias.astype(np.float32)


def build_pair(args, data, loss_name, seed):
    import keras
    import tensorflow as tf

    from fusedfocal import keras as fk
    from fusedfocal.cli.stages import models

    C = args.labels
    kw, dense_loss, bias = loss_setup(loss_name, data["counts"], len(data["x"]))
    kw["class_weights"] = C * kw.get("class_weights", np.ones(C))  # sum over labels, mean over documents

    def encoder():
        keras.utils.set_random_seed(seed)
        return models.build_model("fasttext", vocab_size=data["vocab_size"], num_labels=C,
                                  max_length=args.max_length, embed_dim=args.embed_dim, dropout=0.0, seed=seed,
                                  features_only=True)

    enc_f = encoder()
    head = fk.FocalHead(C, top_k=5, dtype="float32", name="focal_head",
                        kernel_initializer=keras.initializers.GlorotUniform(seed=seed), **kw)
    fused_model = fk.FocalHeadModel(enc_f, head, name="fused")
    fused_model({"token_ids": tf.zeros([1, args.max_length], tf.int32)})
    head.bias.assign(bias)

    class DenseModel(keras.Model):
        """Encoder + Dense(C); ``y`` are padded ids [B, L], made multi-hot in the step."""

        def __init__(self, enc, loss_obj, **kwargs):
            super().__init__(**kwargs)
            self.enc, self.loss_obj = enc, loss_obj
            self.logits = keras.layers.Dense(C, dtype="float32", name="logits")

        def call(self, inputs, training=None):
            return self.logits(self.enc(inputs, training=training))

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            y = tf.cast(y, tf.int32)
            b = tf.shape(y)[0]
            ids = tf.where(y < 0, C, y)  # padding -> a dump column, sliced off
            rows = tf.broadcast_to(tf.range(b)[:, None], tf.shape(ids))
            idx = tf.stack([tf.reshape(rows, [-1]), tf.reshape(ids, [-1])], 1)
            hot = tf.scatter_nd(idx, tf.ones([tf.size(ids)], tf.float32), [b, C + 1])
            hot = tf.minimum(hot[:, :C], 1.0)
            return float(C) * self.loss_obj(hot, y_pred)  # the class's mean over B x C, times C

    enc_d = encoder()
    dense_model = DenseModel(enc_d, dense_loss, name="unfused")
    dense_model({"token_ids": tf.zeros([1, args.max_length], tf.int32)})
    for a, b in zip(enc_f.weights, enc_d.weights):  # identical start
        b.assign(a)
    dense_model.logits.kernel.assign(tf.transpose(head.kernel))
    dense_model.logits.bias.assign(head.bias)
    return fused_model, dense_model


def build_update_head(args, data, loss_name, seed, fused_model, variant):
    """A FocalHeadModel whose head the fused update trains (issue 26), from ``fused_model``'s start."""
    import keras
    import tensorflow as tf

    from fusedfocal import keras as fk
    from fusedfocal.cli.stages import models

    C = args.labels
    weight_dtype, moment_dtype, rounding = UPDATE_HEADS[variant]
    kw, _, _ = loss_setup(loss_name, data["counts"], len(data["x"]))
    kw["class_weights"] = C * kw.get("class_weights", np.ones(C))
    keras.utils.set_random_seed(seed)
    enc = models.build_model("fasttext", vocab_size=data["vocab_size"], num_labels=C, max_length=args.max_length,
                             embed_dim=args.embed_dim, dropout=0.0, seed=seed, features_only=True)
    head = fk.FocalHead(C, top_k=5, dtype="float32", name="focal_head", weight_dtype=weight_dtype, **kw)
    opt = {"optimizer": "adam", "learning_rate": args.lr, "moment_dtype": moment_dtype, "rounding": rounding,
           "seed": seed}
    model = fk.FocalHeadModel(enc, head, head_optimizer=opt, name=variant)
    model({"token_ids": tf.zeros([1, args.max_length], tf.int32)})
    for a, b in zip(fused_model.encoder.weights, enc.weights):
        b.assign(a)
    head.set_kernel(fused_model.head.kernel)
    head.bias.assign(fused_model.head.bias)
    return model


def dataset(data, args, seed):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(({"token_ids": data["x"]}, data["y"]))
    ds = ds.shuffle(len(data["x"]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(args.batch_size, drop_remainder=True).prefetch(2)  # static shapes: one XLA compile


def top5(model, head, xt, batch=512):
    import tensorflow as tf

    if head != "unfused":
        fn = tf.function(lambda x: model({"token_ids": x}, training=False)["ids"])
    else:
        fn = tf.function(lambda x: tf.math.top_k(model({"token_ids": x}, training=False), 5)[1])
    out = [fn(tf.constant(xt[i:i + batch])).numpy() for i in range(0, len(xt), batch)]
    return np.concatenate(out).astype(np.int64)


def run(args):
    import keras
    import tensorflow as tf

    from fusedfocal import metrics_xmc

    t0 = time.time()
    data = load_data(args)
    print(f"data: {len(data['x'])} train / {len(data['xt'])} test docs, {args.labels} labels "
          f"({int((data['counts'] > 0).sum())} occur in training), vocab {data['vocab_size']}, "
          f"max labels/doc {data['width']}, {time.time() - t0:.1f}s", flush=True)
    losses = args.losses.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for loss_name in losses:
            keras.backend.clear_session()
            gc.collect()
            fused_model, dense_model = build_pair(args, data, loss_name, seed)
            models_ = {"fused": fused_model, "unfused": dense_model}
            for variant in args.heads.split(","):
                if variant in UPDATE_HEADS:
                    models_[variant] = build_update_head(args, data, loss_name, seed, fused_model, variant)
            for head, model in [(h, models_[h]) for h in args.heads.split(",")]:
                model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=args.jit)
                t = time.time()
                hist = model.fit(dataset(data, args, seed), epochs=args.epochs, verbose=0)
                train_s = time.time() - t
                t = time.time()
                top = top5(model, head, data["xt"])
                m = metrics_xmc.xmc_metrics(top, data["yt"], ks=KS, label_counts=data["counts"],
                                            num_docs=len(data["x"]))
                row = dict(seed=seed, loss=loss_name, head=head, labels=args.labels, train=len(data["x"]),
                           test=len(data["xt"]), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           embed_dim=args.embed_dim, jit_compile=args.jit,
                           loss_by_epoch=[float(v) for v in hist.history["loss"]],
                           train_s=round(train_s, 1), eval_s=round(time.time() - t, 1),
                           **{k: m[k] for k in m if k.startswith(("p@", "psp@"))})
                if head == "fused":
                    fused_top = top
                elif head == "unfused":  # how far the two trajectories drifted apart: the same ranked top-5 per document
                    row["top5_same_rows"] = float(np.mean(np.all(top == fused_top, axis=1)))
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
            del fused_model, dense_model, models_
    print(f"total wall {time.time() - t0:.0f}s", flush=True)


def report(path, md, header):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    cols = [f"p@{k}" for k in KS] + [f"psp@{k}" for k in KS]
    seeds = sorted({r["seed"] for r in rows})
    lines = [header, "",
             f"Seeds {', '.join(map(str, seeds))} (n per cell shown); metrics in %, mean ± sd over seeds "
             "(sample sd, ddof=1).", "",
             "| loss | head | n | " + " | ".join(c.upper() for c in cols) + " | train s |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in cols) + " | ---: |"]

    def ms(v):
        v = 100 * np.asarray(v, np.float64)
        return (v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan"))

    diffs = []
    for loss in LOSSES:
        heads = (*HEADS, *UPDATE_HEADS)
        by = {h: sorted([r for r in rows if r["loss"] == loss and r["head"] == h], key=lambda r: r["seed"])
              for h in heads}
        for h in heads:
            if not by[h]:
                continue
            cells = ["%.2f ± %.2f" % ms([r[c] for r in by[h]]) for c in cols]
            lines.append(f"| {loss} | {h} | {len(by[h])} | " + " | ".join(cells)
                         + f" | {np.mean([r['train_s'] for r in by[h]]):.0f} |")
        paired = [(f, u) for f in by["fused"] for u in by["unfused"] if f["seed"] == u["seed"]]
        if paired:
            diffs.append((loss, paired))
    lines += ["", "Fused minus unfused, paired by seed (mean ± sd of the per-seed differences, in points), "
                  "against the seed sd (the larger of the two heads' sd); |mean diff| / seed sd:", "",
              "| loss | metric | fused − unfused | seed sd | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for loss, paired in diffs:
        for c in cols:
            d = 100 * np.array([f[c] - u[c] for f, u in paired])
            sd = max(ms([f[c] for f, _ in paired])[1], ms([u[c] for _, u in paired])[1])
            dsd = d.std(ddof=1) if len(d) > 1 else float("nan")
            lines.append(f"| {loss} | {c.upper()} | {d.mean():+.3f} ± {dsd:.3f} | {sd:.2f} | "
                         f"{abs(d.mean()) / sd if sd > 0 else float('nan'):.2f} |")
    same = [r for r in rows if "top5_same_rows" in r]
    if same:
        lines += ["", "Identical ranked top-5 (fused vs unfused, same seed), share of test documents: "
                  + ", ".join(f"{r['loss']} seed {r['seed']}: {100 * r['top5_same_rows']:.2f}%" for r in same)]
    text = "\n".join(lines) + "\n"
    if md:
        with open(md, "w") as f:
            f.write(text)
    print(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labels", type=int, default=131072)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--mean-labels", type=float, default=5.0, help="labels a document (the corpus' mean_labels)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--losses", default="bce,focal,la")
    p.add_argument("--no-jit", dest="jit", action="store_false")
    p.add_argument("--heads", default="fused,unfused",
                   help="comma list of fused, unfused and the fused-update heads " + ", ".join(UPDATE_HEADS))
    p.add_argument("--out", help="append JSON lines here")
    p.add_argument("--report", help="make the markdown table from these JSON lines")
    p.add_argument("--md")
    p.add_argument("--header", default="# Fused vs unfused quality on the synthetic XMC corpus")
    args = p.parse_args(argv)
    if args.report:
        report(args.report, args.md, args.header)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
