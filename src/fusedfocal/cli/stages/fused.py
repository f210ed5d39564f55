"""The fused-head path of ``train``, ``compare``, ``evaluate`` and ``predict`` (issue 19).

Above ``--fused-head-above`` labels (default 4096; ``--head fused`` forces it, ``--head dense`` never)
the model is the usual encoder without its Dense logits layer, followed by
:class:`fusedfocal.keras.FocalHead` inside :class:`fusedfocal.keras.FocalHeadModel`. Nothing of
``[N, C]`` is formed at any stage:

* **data**: the pipeline emits label ids padded with -1 (``label_format="padded_ids"``: a static
  ``[B, L]``; ragged ids recompile XLA every batch), never multi-hot;
* **loss**: :func:`fusedfocal.ops.linear_focal_loss` through the head, summed over the labels of
  a document and averaged over documents (the dense path's mean over ``B x C`` times ``C``; see
  :func:`build_model` for why): ``bce`` (gamma 0),
  ``focal`` (``--gamma``, ``--alpha``), ``la`` (gamma 0 with per-label logit offsets
  ``tau * log(p / (1 - p))``, as :func:`fusedfocal.losses.logit_adjusted_bce`), ``cb`` (per-label
  :func:`fusedfocal.losses.class_balanced_weights`, ``--beta``, ``--gamma``, ``--alpha``);
* **evaluation**: the head's top-:data:`K` (chunked :func:`fusedfocal.ops.linear_top_k`) on the
  validation and evaluation splits, and from it P@k, nDCG@k, PSP@k (:mod:`fusedfocal.metrics_xmc`,
  propensities from the label vocabulary's training counts) and recall@5 per label group
  (``--groups``, as :func:`fusedfocal.cli.metrics.resolve_groups` resolves them). No thresholds:
  a fused run has no ``thresholds.json``, and ``predict`` prints the top-k;
* **selection**: the best epoch by validation P@1 (``--select p@1``, the default on this path), or
  nDCG@5, the validation loss or the last epoch.
* **head optimizer and storage** (issue 26): ``--head-optimizer shared`` (the default: compile's
  ``--optimizer`` trains the head with the encoder) or ``sgd``/``adam``, a fused update inside the
  head's loss (``FocalHeadModel(head_optimizer=...)``: no kernel-sized gradient; SGD with the
  command line's momentum 0.9, Adam with the run's ``--adam-epsilon``, both with ``--weight-decay``
  and ``--seed`` for the stochastic rounding) at ``--head-learning-rate``; ``--head-dtype float32``
  (default) or ``bfloat16`` weights. :func:`check_head_flags` refuses them on the dense head and a
  fused update under a strategy with several replicas; :mod:`fusedfocal.cli.resolve.settings` chooses the
  defaults (:func:`~fusedfocal.cli.resolve.settings.resolve_head`).

Why 4096: up to EUR-Lex's size (about 4K labels) the dense path's per-label thresholds and macro-F1
are meaningful and cheap (issue 13 measured the loss at 1-3% of a step at 4,096 labels); beyond
it most labels have fewer validation positives than a per-label threshold needs (5), and the dense
evaluation (99 threshold passes over ``[N, C]`` float64 scores, multi-hot labels ``[B, C]`` in
every batch) grows with ``C`` while the fused path stays ``O(N·k + nnz)``.
"""

from __future__ import annotations

import collections

import numpy as np

from fusedfocal.cli.errors import CLIError

__all__ = ["HEADS", "FUSED_ABOVE", "LOSSES", "DEFAULT_LOSSES", "K", "KS", "HEAD_OPTIMIZERS", "HEAD_DTYPES",
           "SGD_MOMENTUM", "resolve_head", "check_loss",
           "head_optimizer_config", "resolve_select", "head_kwargs", "build_model", "predict_top_k", "label_ids",
           "top_k_metrics", "validation_scores", "run_result", "label_shard_devices", "layout_lines"]

HEADS = ("auto", "dense", "fused")
FUSED_ABOVE = 4096
LOSSES = ("bce", "focal", "la", "cb")
DEFAULT_LOSSES = "bce,focal,la"
K = 5
KS = (1, 3, 5)
_PARAMS = {"bce": (), "focal": ("gamma", "alpha"), "la": ("tau",), "cb": ("beta", "gamma", "alpha")}
_DENSE_SELECT = ("macro_f1", "micro_f1")
HEAD_OPTIMIZERS = ("shared", "sgd", "adam")  # shared: compile's --optimizer trains the head (head_optimizer=None)
HEAD_DTYPES = ("float32", "bfloat16")
SGD_MOMENTUM = 0.9  # the command line's SGD (train._optimizer)


def resolve_head(head, num_labels, above=FUSED_ABOVE):
    """``"dense"`` or ``"fused"``: ``head`` itself, or for ``"auto"`` (and ``None``) fused when
    there are more than ``above`` labels."""
    head = head or "auto"
    if head == "auto":
        return "fused" if num_labels > (FUSED_ABOVE if above is None else above) else "dense"
    return head


def check_loss(name, flag):
    """A loss name the fused head trains (``flag``: ``--loss`` or ``--losses``)."""
    if name not in LOSSES:
        raise CLIError(flag, f"expected one of {', '.join(LOSSES)} with the fused head (--head fused, or --head "
                             f"auto above --fused-head-above labels); received {name!r}")


def label_shard_devices(shards):
    """One device per label shard: the workers' when this process is the chief of worker processes
    holding them (connected by :func:`fusedfocal.cli.stages.runtime.label_shard_workers`: shard ``s``
    on worker ``s``), else the GPUs, else ``shards`` logical CPU devices (made here when TensorFlow
    has not started yet; else the CPUs there are, in turn)."""
    import tensorflow as tf

    from fusedfocal import distributed

    workers = distributed.connected()
    if workers:
        if shards != len(workers):  # the resolver refuses it (--label-shards vs TF_CONFIG) before this
            raise CLIError("--label-shards", f"expected the {len(workers)} workers of TF_CONFIG; received {shards}")
        return distributed.worker_devices(shards)
    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * shards)
        except RuntimeError:  # TensorFlow has started: the logical devices are fixed
            pass
    from fusedfocal._head_shards import resolve_devices

    return resolve_devices(None, shards)


def shard_kwargs(shards, num_labels):
    """``FocalHead``'s ``label_shards`` and ``devices`` for ``--label-shards`` (none without it)."""
    if shards is None:
        return {}
    if shards > num_labels:
        raise CLIError("--label-shards", f"expected at most the {num_labels} labels (each shard holds one or more); "
                                         f"received {shards}")
    return {"label_shards": shards, "devices": label_shard_devices(shards)}


def log_layout(head, batch_size, encoder):
    """Logs :func:`layout_lines` for a label-sharded head (nothing for one kernel)."""
    if head.label_shards is None:
        return
    from fusedfocal.cli.errors import log

    for line in layout_lines(head, batch_size, encoder):
        log(line)


def layout_lines(head, batch_size, encoder):
    """How a label-sharded head (and its data-parallel encoder) is laid out, and what crosses
    devices (or the network, to worker processes) per step."""
    import tensorflow as tf

    from fusedfocal import distributed

    hidden = int(head.shards[0].kernel.shape[1])
    per = 2 * batch_size * hidden * 4
    workers = distributed.connected()

    def where(device):
        task = device.split("/task:")[1].split("/")[0] if "/job:worker/" in device else None
        if task is None or not task.isdigit() or int(task) >= len(workers):
            return device
        return f"worker {task} ({workers[int(task)]}), {device}"

    where_all = f"{len(workers)} worker processes" if workers else "their devices"
    lines = [f"Label shards: {len(head.shards)} (the fused head's kernel, bias and slots split by label)"
             + f" on {where_all}; the encoder data-parallel over the same {len(head.shards)}"]
    lines += [f"  shard {sh.index}: labels [{sh.start}, {sh.start + sh.size}) on {where(sh.device)}"
              for sh in head.shards]
    lines.append(f"  per step and shard{' (over the network)' if workers else ''}: the [{batch_size}, {hidden}] "
                 f"features in and their gradient out ({per / 2**20:.2f} MiB), the batch's label ids, a scalar loss; "
                 f"top-k: [{batch_size}, {head.top_k}] candidates. Independent of the {head.num_labels} labels")
    weights = sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in encoder.trainable_weights)
    lines.append(f"  per step and encoder replica: 1/{len(head.shards)} of the batch's inputs in, its features "
                 f"out and their gradient in, and the encoder's weights read in and their gradients out (at most "
                 f"{weights / 2**20:.2f} MiB each way; an embedding moves only the rows it looks up)")
    return lines


def head_optimizer_config(head, optim):
    """The ``FocalHeadModel(head_optimizer=...)`` of ``--head-optimizer`` (``head``: a
    :class:`~fusedfocal.cli.spec.HeadConfig`, ``optim``: the run's
    :class:`~fusedfocal.cli.spec.OptimConfig`): ``None`` for shared (and for a run folder older than
    the flag), else the :class:`fusedfocal.ops.head_update.HeadUpdate` fields and ``learning_rate``:
    SGD with the command line's momentum, Adam with the run's epsilon, ``--weight-decay`` (Keras'
    decoupled decay, as the shared optimizer applies it), ``--seed`` for the stochastic rounding of
    bfloat16 weights, and with ``--head-dtype bfloat16`` bfloat16 slots too."""
    name = head.head_optimizer or "shared"
    if name == "shared":
        return None
    rate = head.head_learning_rate or optim.learning_rate
    cfg = {"optimizer": name, "learning_rate": float(rate), "weight_decay": float(optim.weight_decay or 0.0),
           "seed": int(optim.seed)}
    if name == "sgd":
        cfg["momentum"] = SGD_MOMENTUM
    else:
        cfg["epsilon"] = float(optim.adam_epsilon or 1e-7)
    if (head.head_dtype or "float32") == "bfloat16":
        cfg["moment_dtype"] = "bfloat16"  # the slots stored as the kernel is: a float32 slot would double it
    return cfg


def resolve_select(select, head):
    """``--select`` on this head: default macro_f1 (dense) or p@1 (fused); an F1 or P@k monitor on
    the other head is an error."""
    if head == "fused":
        if select in _DENSE_SELECT:
            raise CLIError("--select", f"expected p@1, ndcg@5, val_loss or last with the fused head (it has no "
                                       f"thresholds, so no F1); received {select}")
        return select or "p@1"
    if select in ("p@1", "ndcg@5"):
        raise CLIError("--select", f"expected macro_f1, micro_f1, val_loss or last with the dense head (p@1 and "
                                   f"ndcg@5 are the fused head's, --head fused); received {select}")
    return select or "macro_f1"


def head_kwargs(name, params, class_counts, num_docs, flag="--loss"):
    """The :class:`~fusedfocal.keras.FocalHead` loss arguments of loss ``name`` (checked by
    :func:`check_loss`) with ``params`` (``{param: (value, flag)}``); counts as the dense path's
    :func:`fusedfocal.cli.stages.lossargs.build_loss` takes them (a label without fit documents counts 1)."""
    from fusedfocal import _registry, losses

    check_loss(name, flag)
    values = {k: v for k, (v, _) in params.items()}
    extra = [k for k in values if k not in _PARAMS[name]]
    if extra:
        raise CLIError(params[extra[0]][1], (
            f"expected parameters that loss {name!r} takes with the fused head "
            f"({', '.join(_PARAMS[name]) or 'none'}); received {', '.join(f'{k}={values[k]}' for k in extra)}"))
    num_labels = len(class_counts)
    for k, v in values.items():
        if isinstance(v, list):
            if len(v) != num_labels:
                raise CLIError(params[k][1], (f"expected one value per label for {k} ({num_labels} labels) or a "
                                              f"single value; received {len(v)} values"))
            values[k] = np.asarray(v, np.float64)
    counts = np.maximum(np.asarray(class_counts, np.int64), 1)
    try:
        if name == "bce":
            return {"gamma": 0.0}
        if name == "focal":
            p = _registry.focal_params(gamma=values.get("gamma", 2.0), alpha=values.get("alpha"))
            return {"gamma": p["gamma"], "alpha": p["alpha"]}
        if name == "la":
            p = losses.logit_adjust.la_params(losses.priors_from_counts(counts, int(num_docs)),
                                              values.get("tau", 1.0))
            pr = np.asarray(p["priors"], np.float64)
            return {"gamma": 0.0, "logit_offsets": p["tau"] * (np.log(pr) - np.log1p(-pr))}
        p = losses.balanced.cb_params(counts, beta=values.get("beta", 0.9999), gamma=values.get("gamma", 2.0),
                                      alpha=values.get("alpha"))
        return {"gamma": p["gamma"], "alpha": p["alpha"],
                "class_weights": losses.class_balanced_weights(counts, p["beta"])}
    except ValueError as e:
        flags = [f for k, (_, f) in params.items() if f"`{k}`" in str(e)]
        raise CLIError(flags[0] if flags else flag, f"invalid parameter of loss {name!r}: {e}")


def build_model(model_cfg, head_cfg, optim, prep, loss_name, loss_params, optimizer, jit_compile):
    """The compiled :class:`~fusedfocal.keras.FocalHeadModel` (call inside the strategy's scope):
    the ``--model`` encoder without logits, the head's bias at the fit split's prior log-odds minus
    the loss's logit offsets (``la``), so that the logit the loss sees starts calibrated. (With the
    bias at the prior log-odds, ``la`` would start at twice them: measured at 16,699 labels, 3
    epochs, test P@1 39.7 against 82.7 with this rule.)"""
    import keras
    import tensorflow as tf

    from fusedfocal import keras as fk
    from fusedfocal.cli.stages import models

    pipe = prep.pipeline
    kw = head_kwargs(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
    # The loss of a document is its sum over labels, averaged over documents: the head's mean over
    # B x C times C, through class_weights (exact: the weights multiply every term). The plain mean
    # over B x C puts each weight's gradient near Adam's epsilon at tens of thousands of labels
    # (16,699 labels, 3 epochs: test P@1 50.0 with the mean, 81.0 with this).
    kw["class_weights"] = pipe.num_labels * kw.get("class_weights", np.ones(pipe.num_labels))  # the op takes a [C] vector
    if model_cfg.model == "ngram" and not (model_cfg.ngram_hidden or 0):
        raise CLIError("--ngram-hidden", "expected > 0 with the fused head (the linear n-gram model's features are "
                                         "the whole n-gram vocabulary); received 0")
    encoder = models.build_model(**models.encoder_kwargs(model_cfg, prep), features_only=True)
    # --head-dtype: the kernel and bias's storage (float32 math per chunk either way);
    # --head-optimizer: None (compile's optimizer trains the head) or the fused update's config.
    weight_dtype = head_cfg.head_dtype or "float32"
    shards = head_cfg.label_shards
    head = fk.FocalHead(pipe.num_labels, top_k=min(K, pipe.num_labels), dtype="float32", name="focal_head",
                        kernel_initializer=keras.initializers.GlorotUniform(seed=model_cfg.seed),
                        weight_dtype=weight_dtype, **shard_kwargs(shards, pipe.num_labels), **kw)
    model = fk.FocalHeadModel(encoder, head, head_optimizer=head_optimizer_config(head_cfg, optim),
                              encoder_devices=None if shards is None else "shards",
                              name=f"fusedfocal_{model_cfg.model}_fused")
    dummy = {"token_ids": tf.zeros([1, model_cfg.max_length], tf.int32)}
    if weight_dtype != "float32":
        # Keras builds an unbuilt model by tracing its call() symbolically, where a bfloat16 head's
        # raw variable read fails (a UserWarning, then the eager build): build the head eagerly first.
        head(encoder(dummy))
    model(dummy)  # builds every weight (checkpoints load into them)
    if model_cfg.prior_bias:  # the logit the loss sees starts at the prior log-odds: for la, bias + offsets
        bias = models.prior_logits(prep.fit_counts / max(prep.fit_docs, 1))
        bias = (bias - kw.get("logit_offsets", 0.0)).astype(np.float32)
        head.set_bias(bias)
    log_layout(head, optim.batch_size, encoder)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def predict_top_k(model, pipeline, texts, k=K, batch_size=256):
    """``(ids int64 [N, k], scores float32 [N, k])``: the head's top-k, best first, computed eagerly
    batch by batch as :func:`fusedfocal.cli.stages.models.predict_scores` does (locally on this worker)."""
    ids, scores = [], []
    head = model.head
    saved, head.top_k = head.top_k, int(k)
    try:
        for i in range(0, len(texts), batch_size):
            out = model({"token_ids": pipeline.tokenize(texts[i:i + batch_size])}, training=False)
            ids.append(np.asarray(out["ids"], np.int64))
            scores.append(np.asarray(out["scores"], np.float32))
    finally:
        head.top_k = saved
    if not ids:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(ids), np.concatenate(scores)


def label_ids(label_vocab, label_lists):
    """``(ids, unknown)``: each document's label ids (int64 arrays; names outside the vocabulary are
    left out and counted in the Counter ``unknown``), never a multi-hot ``[N, C]``."""
    index, unknown, out = label_vocab.index, collections.Counter(), []
    for names in label_lists:
        row = []
        for n in names:
            j = index.get(n)
            if j is None:
                unknown[n] += 1
            else:
                row.append(j)
        out.append(np.unique(np.asarray(row, np.int64)))
    return out, unknown


def top_k_metrics(top_ids, true_ids, *, train_counts, train_docs, boundaries):
    """P@k, nDCG@k, PSP@k (k in :data:`KS`) and ``recall@5`` pooled over the (document, true label)
    pairs of all labels and of each label group; fractions in [0, 1] as every metric of the CLI."""
    from fusedfocal import metrics_xmc
    from fusedfocal.cli import metrics as ev

    k = max(KS)
    out = metrics_xmc.xmc_metrics(top_ids, true_ids, ks=KS, label_counts=train_counts, num_docs=max(train_docs, 3))
    values, splits = metrics_xmc.as_ragged_ids(true_ids)
    n = splits.size - 1
    width = int(max(values.max(initial=0), np.asarray(top_ids).max(initial=0))) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(splits))
    found = np.isin(rows * width + values, (np.arange(n, dtype=np.int64)[:, None] * width
                                            + np.asarray(top_ids, np.int64)[:, :k]).ravel())
    group_of = np.full(len(train_counts), -1)
    groups = ev.label_groups(train_counts, boundaries)
    for g, (name, idx) in enumerate(groups.items()):
        group_of[idx] = g
    recall = {"all": float(found.mean()) if found.size else None}
    for g, name in enumerate(groups):
        sel = group_of[values] == g
        recall[name] = float(found[sel].mean()) if sel.any() else None
    out[f"recall@{k}"] = recall
    out[f"pairs@{k}"] = {"all": int(found.size), **{name: int((group_of[values] == g).sum())
                                                     for g, name in enumerate(groups)}}
    return out


def validation_scores(model, pipeline, texts, true_ids):
    """The epoch record's validation scores on the fused path: ``val_p@1``, ``val_p@5``, ``val_ndcg@5``."""
    from fusedfocal import metrics_xmc

    ids, _ = predict_top_k(model, pipeline, texts)
    m = metrics_xmc.xmc_metrics(ids, true_ids, ks=(1, 5))
    return {"val_p@1": m["p@1"], "val_p@5": m["p@5"], "val_ndcg@5": m["ndcg@5"]}


def run_result(prep, model, loss_name, loss_params, records, *, groups, settings, selection, train_seconds):
    """The ``metrics.json`` of a fused run: the top-k metrics on the evaluation split (and on
    validation), with the same bookkeeping as :func:`fusedfocal.cli.stages.results.run_result`
    (``groups``: ``--groups``; ``settings``: the run's settings record)."""
    from fusedfocal.cli import metrics as ev
    from fusedfocal.cli.stages.results import history_keys, result_head

    pipe, labels = prep.pipeline, prep.pipeline.label_vocab
    groups, group_rule = ev.resolve_groups(groups, labels.counts)
    kw = dict(train_counts=labels.counts, train_docs=labels.num_docs, boundaries=groups)
    val_true, _ = label_ids(labels, prep.val[1])
    val_top, _ = predict_top_k(model, pipe, prep.val[0])
    val_metrics = top_k_metrics(val_top, val_true, **kw)
    if prep.eval_split == "validation":
        metrics, unknown = val_metrics, labels.unknown(prep.test[1])
    else:
        test_true, unknown = label_ids(labels, prep.test[1])
        metrics = top_k_metrics(predict_top_k(model, pipe, prep.test[0])[0], test_true, **kw)
    return {
        **result_head(prep, loss_name, loss_params, groups, group_rule, unknown), "head": "fused",
        "metrics": metrics, "validation_metrics": val_metrics,
        "propensities": {"a": 0.55, "b": 1.5, "counts": "label_vocab.json (every training document)",
                         "num_docs": labels.num_docs},
        "history": {k: [None if r[k] is None else float(r[k]) for r in records if k in r]
                    for k in history_keys(records)},
        "epochs": list(records), "selection": selection, "train_seconds": round(train_seconds, 2),
        "settings": settings,
    }
