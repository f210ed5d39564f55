"""The evaluate stage of a training run: thresholds tuned on the validation split, metrics on the
evaluation split, and the run's result (``metrics.json``).

Which counts: the label groups (``--groups``) are by the label vocabulary's counts, every training
document, validation included (``label_vocab.json``); the loss's class counts and the output-bias
priors are by the fit split, the training documents minus validation (``Prepared.fit_counts``).
"""

from __future__ import annotations

from fusedfocal.cli import metrics as ev
from fusedfocal.cli.stages.lossargs import loss_label

__all__ = ["tune_on_validation", "run_result", "result_head", "history_keys"]


def tune_on_validation(model, prep):
    """``(thresholds, val_scores, val_y)``: the global and per-label thresholds (``thresholds.json``)."""
    from fusedfocal.cli.stages import models

    pipe, labels = prep.pipeline, prep.pipeline.label_vocab
    val_scores = models.predict_scores(model, pipe, prep.val[0])
    val_y, _ = labels.encode(prep.val[1])
    g, per, fallback = ev.tune_thresholds(val_scores, val_y)
    thresholds = {
        "global": g, "per_class": {name: float(t) for name, t in zip(labels.labels, per)},
        "per_class_vector": per.tolist(),
        "fallback_to_global": [name for name, f in zip(labels.labels, fallback) if f],
        "tuned_on": f"validation split held out from the training data ({len(prep.val[0])} documents)",
        "objective": "global: micro-F1; per_class: the label's F1 (labels without validation positives "
                     "use the global threshold)"}
    return thresholds, val_scores, val_y


def run_result(prep, model, loss_name, loss_params, thresholds, val_scores, val_y, records, *, groups, settings,
               selection, train_seconds):
    """``(result, test_scores, test_y)``: the run's ``metrics.json`` and the evaluation scores
    (``groups``: ``--groups``; ``settings``: the run's settings record, stored as is)."""
    from fusedfocal.cli.stages import models

    g = thresholds["global"]
    pipe, labels = prep.pipeline, prep.pipeline.label_vocab
    test_scores = (val_scores if prep.eval_split == "validation"
                   else models.predict_scores(model, pipe, prep.test[0]))
    test_y, unknown = labels.encode(prep.test[1])
    groups, group_rule = ev.resolve_groups(groups, labels.counts)
    kw = dict(train_counts=labels.counts, label_names=labels.labels, boundaries=groups)
    metrics = ev.all_metrics(test_scores, test_y, thresholds, **kw)
    epochs_log = list(records)  # every epoch exactly once, resumed runs included
    result = {
        **result_head(prep, loss_name, loss_params, groups, group_rule, unknown),
        "thresholds": {"global": g, "per_class_fallbacks": len(thresholds["fallback_to_global"])},
        "metrics": metrics,
        "validation_metrics": {"global": ev.metrics_at(val_scores, val_y, g, **kw)["micro"]},
        "history": {k: [None if r[k] is None else float(r[k]) for r in epochs_log if k in r]
                    for k in history_keys(epochs_log)},
        "epochs": epochs_log, "selection": selection, "train_seconds": round(train_seconds, 2),
        "settings": settings,
    }
    return result, test_scores, test_y


def result_head(prep, loss_name, loss_params, groups, group_rule, unknown):
    """The first fields of every run's ``metrics.json``, dense or fused head: the loss, the data, the
    documents, the labels and their groups, and the evaluation labels the run does not know."""
    labels = prep.pipeline.label_vocab
    return {
        "name": loss_label(loss_name, loss_params), "loss": loss_name,
        "loss_params": {k: v for k, (v, _) in loss_params.items()},
        "data": prep.description, "eval_split": prep.eval_split,
        "documents": {"fit": len(prep.fit[0]), "validation": len(prep.val[0]), "eval": len(prep.test[0])},
        "labels": len(labels), "groups": {"boundaries": list(groups), "rule": group_rule, **{
            k: int(len(v)) for k, v in ev.label_groups(labels.counts, groups).items()}},
        "unknown_eval_labels": dict(unknown),
    }


def history_keys(records):
    keys = []
    for r in records:
        keys += [k for k in r if k not in ("epoch", "seconds") and k not in keys]
    return keys
