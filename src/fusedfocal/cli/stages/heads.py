"""The two heads as one small interface: build, validation data, result, summary, prediction.

The stages ask the head instead of branching on ``prep.head``:

* :class:`DenseHead`: a ``Dense`` logits layer trained with any loss; thresholds tuned on the
  validation split (``thresholds.json``); F1 metrics; ``predict`` by threshold.
* :class:`FusedHead`: :class:`fusedfocal.keras.FocalHead` (Dense + focal loss in label chunks,
  never ``[B, C]``); top-k metrics (P@k, nDCG@k, PSP@k); no thresholds.

:data:`HEADS` maps ``"dense"``/``"fused"`` (what ``--head`` resolved to) to them.
"""

from __future__ import annotations

from fusedfocal.cli.stages import fused

__all__ = ["DenseHead", "FusedHead", "HEADS"]


class DenseHead:
    name = "dense"
    held_out_for = "thresholds"  # what the validation split is for (the titles say it)
    writes_thresholds = True

    def build(self, model_cfg, head_cfg, optim, prep, loss_name, loss_params, *, optimizer, jit_compile, fault=None,
              fault_callbacks=None):
        from fusedfocal.cli.stages import build

        return build.build_dense(model_cfg, prep, loss_name, loss_params, optimizer=optimizer,
                                 jit_compile=jit_compile, fault=fault, fault_callbacks=fault_callbacks)

    def check_loss(self, loss_name, params, prep, flag):
        from fusedfocal.cli.stages.lossargs import build_loss

        build_loss(loss_name, params, prep.fit_counts, prep.fit_docs, flag=flag)

    def val_dataset(self, prep):
        """Keras' own validation pass: none. The dense head's validation scores, val_loss included,
        come from the selector's one pass over the validation split (select.validation_scores);
        Keras' pass would be a second one (and a traced test step per run)."""
        return None

    def validation_fn(self, prep, predict_scores):
        """``model -> {val_macro_f1, val_micro_f1, val_loss}``: the selector's scores of an epoch,
        from one prediction of the validation split (thresholded at its tuned global threshold)."""
        from fusedfocal.cli.stages import select as sel

        val_y, _ = prep.pipeline.label_vocab.encode(prep.val[1])
        return lambda m: sel.validation_scores(m, prep.pipeline, prep.val[0], val_y, predict_scores)

    def la_scores_at(self, prep, corr, predict_scores):
        """``model -> (t -> scores)`` for ``la``'s correction candidates: one prediction an epoch, each
        candidate ``t`` shifting its logits by ``(tau - t) * logodds``."""
        import numpy as np

        from fusedfocal.cli.stages import select as sel

        pipe = prep.pipeline
        val_y, _ = pipe.label_vocab.encode(prep.val[1])

        def scores_at(model):
            _, logits = predict_scores(model, pipe, prep.val[0], return_logits=True)

            def at(t):
                import tensorflow as tf

                z = (logits + (corr.tau - t) * corr.logodds).astype(np.float32)
                scores = tf.math.sigmoid(z).numpy()  # as models.predict_scores
                return sel.validation_scores(model, pipe, prep.val[0], val_y, lambda *a, **k: (scores, z))
            return at

        return scores_at

    def result(self, prep, model, loss_name, loss_params, records, *, groups, settings, selection, train_seconds):
        """``(result, thresholds, (test_scores, test_y))``: thresholds on validation only; metrics on
        the evaluation split."""
        from fusedfocal.cli.stages import results

        thresholds, val_scores, val_y = results.tune_on_validation(model, prep)
        result, test_scores, test_y = results.run_result(
            prep, model, loss_name, loss_params, thresholds, val_scores, val_y, records, groups=groups,
            settings=settings, selection=selection, train_seconds=train_seconds)
        return result, thresholds, (test_scores, test_y)

    def summary_lines(self, result):
        from fusedfocal.cli.store import report

        return report.summary_lines(result)


class FusedHead(DenseHead):
    name = "fused"
    held_out_for = "epoch selection"
    writes_thresholds = False

    def build(self, model_cfg, head_cfg, optim, prep, loss_name, loss_params, *, optimizer, jit_compile, fault=None,
              fault_callbacks=None):
        """The encoder + :class:`~fusedfocal.keras.FocalHead`; its loss is the head's (no fault loss to wrap)."""
        return fused.build_model(model_cfg, head_cfg, optim, prep, loss_name, loss_params, optimizer, jit_compile)

    def check_loss(self, loss_name, params, prep, flag):
        fused.head_kwargs(loss_name, params, prep.fit_counts, prep.fit_docs, flag=flag)

    def validation_fn(self, prep, predict_scores):
        """``model -> {val_p@1, val_p@5, val_ndcg@5}``: top-k on validation (never ``[N, C]`` scores)."""
        val_ids, _ = fused.label_ids(prep.pipeline.label_vocab, prep.val[1])
        return lambda m: fused.validation_scores(m, prep.pipeline, prep.val[0], val_ids)

    def la_scores_at(self, prep, corr, predict_scores):
        """None: ``la``'s candidates shift the head's bias and rank again (posthoc's default)."""
        return None

    def val_dataset(self, prep):
        """The fused head's selector scores top-k only, so Keras gives its val_loss."""
        return prep.pipeline.dataset(*prep.val, training=False)

    def result(self, prep, model, loss_name, loss_params, records, *, groups, settings, selection, train_seconds):
        """Top-k metrics, no thresholds (so no thresholds.json) and no ``[N, C]`` scores."""
        result = fused.run_result(prep, model, loss_name, loss_params, records, groups=groups, settings=settings,
                                  selection=selection, train_seconds=train_seconds)
        return result, None, None

    def summary_lines(self, result):
        from fusedfocal.cli.store import report

        return report.xmc_summary_lines(result)


HEADS = {"dense": DenseHead(), "fused": FusedHead()}
