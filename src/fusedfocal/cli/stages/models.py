"""Keras 3 text models over ``{"token_ids": int32 [B, T]}`` returning logits ``[B, C]``.

* ``cnn`` (default): embedding (96), 1-D convolutions of widths 1, 2 and 3
  (96 filters each), global max pooling, dropout, dense logits (Kim, 2014).
* ``fasttext``: embedding bag (masked mean of the token embeddings) and dense
  logits (Joulin et al., 2017); the fastest.
* ``transformer``: token + position embeddings, 1-2 pre-norm encoder blocks
  (``keras.layers.MultiHeadAttention`` with a padding mask), masked mean
  pooling, dense logits.
* ``ngram``: TF-IDF (or log-count) weighted WordPiece unigrams and bigrams
  built in the graph with tensorflow-text, a linear or one-hidden-layer head
  (:mod:`fusedfocal.cli.stages.ngram`); its statistics come from ``fit_ids``.

The logits layer always computes in float32 (mixed precision keeps the loss
exact). With ``prior_bias=True`` its bias starts at ``log(p / (1 - p))`` for
each label's training prior ``p``, so every label, rare ones included, starts
calibrated (sigmoid(bias) = prior) instead of at 0.5.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fusedfocal.cli.stages import ngram as _ngram  # noqa: F401  (registers NgramBag for load_model)
from fusedfocal.cli.stages import optim as _optim  # noqa: F401  (registers FusedAdam for load_model)
from fusedfocal.cli.stages.priors import PRIOR_EPS, prior_initializer

__all__ = ["MODELS", "build_model", "encoder_kwargs", "prior_logits", "predict_scores"]

MODELS = ("cnn", "fasttext", "transformer", "ngram")


def prior_logits(priors, eps=PRIOR_EPS):
    """The bias of :func:`fusedfocal.cli.stages.priors.prior_initializer` as a float32 vector."""
    return np.asarray(prior_initializer(priors, eps).bias, np.float32)


@keras.saving.register_keras_serializable(package="fusedfocal")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding (positions ``< max_length``)."""

    def __init__(self, vocab_size, max_length, dim, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.dim = int(vocab_size), int(max_length), int(dim)
        self.token = keras.layers.Embedding(self.vocab_size, self.dim, name="token")
        self.position = keras.layers.Embedding(self.max_length, self.dim, name="position")

    def build(self, input_shape):
        self.token.build(input_shape)
        self.position.build((None,))
        self.built = True

    def call(self, ids):
        positions = ops.arange(ops.shape(ids)[1])
        return self.token(ids) + ops.expand_dims(self.position(positions), 0)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_length": self.max_length,
                "dim": self.dim}


@keras.saving.register_keras_serializable(package="fusedfocal")
class MaskedMeanPool(keras.layers.Layer):
    """Mean of ``x [B, T, D]`` over the positions where ``ids != 0`` (padding is id 0)."""

    def call(self, x, ids):
        mask = ops.cast(ops.not_equal(ids, 0), x.dtype)[..., None]
        return ops.sum(x * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), ops.cast(1.0, x.dtype))


def encoder_kwargs(model_cfg, prep):
    """:func:`build_model`'s arguments of a :class:`~fusedfocal.cli.spec.ModelConfig` and the prepared
    data (the vocabulary and label count; the fit split's token ids for the n-gram model)."""
    pipe = prep.pipeline
    return dict(name=model_cfg.model, vocab_size=len(pipe.wordpiece_vocab), num_labels=pipe.num_labels,
                max_length=model_cfg.max_length, embed_dim=model_cfg.embed_dim, filters=model_cfg.filters,
                layers=model_cfg.layers, dropout=model_cfg.dropout, seed=model_cfg.seed,
                fit_ids=prep.fit_ids() if model_cfg.model == "ngram" else None,  # bigram vocabulary, idf
                ngram_hidden=model_cfg.ngram_hidden or 0,
                ngram_bigrams=50000 if model_cfg.ngram_bigrams is None else model_cfg.ngram_bigrams,
                ngram_weighting=model_cfg.ngram_weighting or "tfidf")


def build_model(name, *, vocab_size, num_labels, max_length, priors=None, prior_bias=True,
                embed_dim=None, filters=96, widths=(1, 2, 3), layers=1, heads=4, dropout=0.2, seed=0,
                fit_ids=None, ngram_hidden=0, ngram_bigrams=50000, ngram_weighting="tfidf", features_only=False):
    """Builds an uncompiled model.

    Args:
      name: One of :data:`MODELS`.
      vocab_size: WordPiece vocabulary size.
      num_labels: Number of labels ``C``.
      max_length: Maximum sequence length (transformer positions).
      priors: Training priors ``[C]`` for the bias initialisation.
      prior_bias: Start the logits' bias at ``log(p / (1 - p))``.
      embed_dim: Embedding width (default 96; fasttext 128).
      filters: Convolution filters per width (cnn).
      widths: Convolution widths (cnn).
      layers: Encoder blocks (transformer).
      heads: Attention heads (transformer).
      dropout: Dropout rate before the logits (and inside the encoder).
      seed: Seed of the dropout layers.
      fit_ids: ngram: token ids ``[N, T]`` of the training documents (bigram vocabulary, idf).
      ngram_hidden: ngram: hidden units (0: a linear model).
      ngram_bigrams: ngram: largest bigram vocabulary (0: unigrams only).
      ngram_weighting: ngram: ``"tfidf"`` or ``"logcount"``.
      features_only: Return the encoder alone, features ``[B, H]`` after the dropout, without the
        logits layer (no ``[H, C]`` kernel is created): the fused head's encoder
        (:mod:`fusedfocal.cli.stages.fused`). ngram needs ``ngram_hidden > 0`` then.
    """
    if name not in MODELS:
        raise ValueError(f"Invalid value for argument `model`. Expected one of {list(MODELS)}. Received: {name!r}")
    if name == "ngram":
        from fusedfocal.cli.stages import ngram

        if fit_ids is None:
            raise ValueError("Invalid value for argument `fit_ids`. Expected the training token ids [N, T] for "
                             "model 'ngram'. Received: None")
        return ngram.build_ngram_model(vocab_size=vocab_size, num_labels=num_labels, fit_ids=fit_ids,
                                       priors=priors, prior_bias=prior_bias, hidden=ngram_hidden,
                                       weighting=ngram_weighting, max_bigrams=ngram_bigrams,
                                       dropout=dropout if ngram_hidden else 0.0, seed=seed,
                                       features_only=features_only)
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    if name == "cnn":
        dim = embed_dim or 96
        x = keras.layers.Embedding(vocab_size, dim, name="embedding")(ids)
        pooled = [keras.layers.GlobalMaxPooling1D(name=f"pool{w}")(
            keras.layers.Conv1D(filters, w, padding="same", activation="relu", name=f"conv{w}")(x))
            for w in widths]
        h = keras.layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]
    elif name == "fasttext":
        dim = embed_dim or 128
        x = keras.layers.Embedding(vocab_size, dim, name="embedding")(ids)
        h = MaskedMeanPool(name="mean")(x, ids)
        h = keras.layers.Dense(dim, activation="relu", name="hidden")(h)
    else:
        dim = embed_dim or 96
        x = TokenAndPositionEmbedding(vocab_size, max_length, dim, name="embedding")(ids)
        mask = ops.expand_dims(ops.not_equal(ids, 0), 1)  # [B, 1, T]: attend to tokens only
        for i in range(layers):
            y = keras.layers.LayerNormalization(name=f"ln_att{i}")(x)
            y = keras.layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, seed=seed + i,
                                                name=f"attention{i}")(y, y, attention_mask=mask)
            x = keras.layers.Add(name=f"res_att{i}")([x, y])
            y = keras.layers.LayerNormalization(name=f"ln_ffn{i}")(x)
            y = keras.layers.Dense(2 * dim, activation="gelu", name=f"ffn_in{i}")(y)
            y = keras.layers.Dense(dim, name=f"ffn_out{i}")(y)
            x = keras.layers.Add(name=f"res_ffn{i}")([x, y])
        x = keras.layers.LayerNormalization(name="ln_final")(x)
        h = MaskedMeanPool(name="mean")(x, ids)
    if dropout:
        h = keras.layers.Dropout(dropout, seed=seed, name="dropout")(h)
    if features_only:
        return keras.Model({"token_ids": ids}, h, name=f"fusedfocal_{name}_encoder")
    dense = keras.layers.Dense(num_labels, dtype="float32", name="logits")
    logits = dense(h)
    model = keras.Model({"token_ids": ids}, logits, name=f"fusedfocal_{name}")
    if prior_bias and priors is not None:
        dense.bias.assign(prior_logits(priors))
    return model


def predict_scores(model, pipeline, texts, batch_size=256, return_logits=False):
    """Sigmoid scores ``[N, C]`` of every text (and the logits with ``return_logits``), computed
    locally on this worker.

    The model is called directly rather than through ``model.predict``, which under a multi-worker
    strategy would shard the documents across workers (each would see only its part). It is called
    eagerly: a ``tf.function`` per model would be traced again for every model of a comparison
    (TensorFlow counts the traces of one function's code across closures, and warns about
    retracing after five), and the eager call of a few batches costs about as much as tracing.
    """
    import tensorflow as tf

    out = []
    for i in range(0, len(texts), batch_size):
        ids = pipeline.tokenize(texts[i:i + batch_size])
        out.append(tf.cast(model({"token_ids": ids}, training=False), tf.float32).numpy())
    logits = np.concatenate(out, 0) if out else np.zeros((0, pipeline.num_labels), np.float32)
    scores = tf.math.sigmoid(logits).numpy()
    return (scores, logits) if return_logits else scores
