"""Loading a finished run folder: its model, pipeline, thresholds and config (``evaluate``,
``predict``, a resumed comparison's finished runs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fusedfocal.cli import spec as specs
from fusedfocal.cli.errors import CLIError
from fusedfocal.cli.store.rundir import (CONFIG_FILE, LABEL_VOCAB_FILE, METRICS_FILE, MODEL_FILE, THRESHOLDS_FILE,
                                        WORDPIECE_FILE)

__all__ = ["load_run", "finished_result"]


def load_run(run_dir):
    """``(model, pipeline, thresholds, config)`` of a finished run; CLI errors if it is incomplete.
    A fused-head run (``config["head"] == "fused"``) has no thresholds: ``thresholds`` is ``None``."""
    run_dir = Path(run_dir)
    fused, hub = False, False
    if (run_dir / CONFIG_FILE).exists():
        try:
            cfg = json.loads((run_dir / CONFIG_FILE).read_text())
            fused, hub = cfg.get("head") == "fused", bool(specs.load(cfg).model.encoder)
        except ValueError:
            fused = False
    needed = ((CONFIG_FILE, MODEL_FILE, LABEL_VOCAB_FILE) + (() if hub else (WORDPIECE_FILE,))
              + (() if fused else (THRESHOLDS_FILE,)))
    missing = [f for f in needed if not (run_dir / f).exists()]
    if missing:
        raise CLIError("RUN_DIR", f"expected a finished run folder (written by fusedfocal train); received "
                                  f"{str(run_dir)!r}, which lacks {', '.join(missing)}")
    import keras

    from fusedfocal import data
    from fusedfocal import keras as _fk  # noqa: F401  (registers FocalHead, FocalHeadModel)
    from fusedfocal.cli.stages import models  # noqa: F401  (registers the custom layers)

    cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    pcfg = data.PipelineConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg["pipeline"].items()})
    # --encoder: the tokenizer from RUN_DIR/encoder/ (and KerasHub's classes, which model.keras names)
    pipeline = data.TextPipeline.from_directory(pcfg, run_dir, tokenizer=_encoder_tokenizer(run_dir, cfg) if hub else None)
    model = keras.saving.load_model(run_dir / MODEL_FILE, compile=False)
    if fused:
        if model.head.num_labels != len(pipeline.label_vocab):
            raise CLIError("RUN_DIR", f"the label vocabulary does not match the model: expected "
                                      f"{model.head.num_labels} labels (the fused head's); received "
                                      f"{len(pipeline.label_vocab)} in label_vocab.json")
        # model.keras rebuilds the head it was trained with (weight dtype, head optimizer and its
        # slots); it must be the head config.json records (absent: a run older than those flags)
        stored = dataclasses.asdict(specs.load(cfg).head)
        opt = model.head.head_optimizer
        found = {"head_dtype": model.head.weight_dtype, "head_optimizer": "shared" if opt is None else opt.update.optimizer}
        for name, default in (("head_dtype", "float32"), ("head_optimizer", "shared")):
            if (stored.get(name) or default) != found[name]:
                raise CLIError("RUN_DIR", f"the fused head of {MODEL_FILE} does not match {CONFIG_FILE}: expected "
                                          f"{name.replace('_', '-')} {stored.get(name) or default}; received "
                                          f"{found[name]} in {run_dir / MODEL_FILE}")
        return model, pipeline, None, cfg
    thresholds = json.loads((run_dir / THRESHOLDS_FILE).read_text())
    out_dim = model.output_shape[-1]
    if out_dim != len(pipeline.label_vocab) or len(thresholds["per_class_vector"]) != out_dim:
        raise CLIError("RUN_DIR", f"the label vocabulary does not match the model: expected {out_dim} labels "
                                  f"(model outputs); received {len(pipeline.label_vocab)} in label_vocab.json and "
                                  f"{len(thresholds['per_class_vector'])} thresholds")
    return model, pipeline, thresholds, cfg


def _encoder_tokenizer(run_dir, cfg):
    """The tokenizer of an ``--encoder`` run, from ``RUN_DIR/encoder/`` (without a network)."""
    from fusedfocal import hub

    try:
        return hub.load_tokenizer(Path(run_dir) / "encoder")
    except (ImportError, ValueError) as e:
        raise CLIError("RUN_DIR", f"expected a run folder whose --encoder {specs.load(cfg).model.encoder} can be read from "
                                  f"{Path(run_dir) / 'encoder'} (pip install fusedfocal[hub] for KerasHub); received: {e}")


def finished_result(run_dir, prep):
    """The result of a finished run of an interrupted comparison: its metrics.json, with the
    evaluation scores recomputed from its model.keras (for the precision-recall curves)."""
    import keras

    from fusedfocal.cli.stages import models  # registers the custom layers

    result = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    if result.get("head") == "fused":  # no [N, C] scores, no precision-recall curves
        return result
    model = keras.saving.load_model(Path(run_dir) / MODEL_FILE, compile=False)
    scores = models.predict_scores(model, prep.pipeline, prep.test[0])
    result["_scores"] = (scores, prep.pipeline.label_vocab.encode(prep.test[1])[0])
    return result
