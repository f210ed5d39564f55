"""``--model ngram``: a bag of WordPiece unigrams and bigrams, TF-IDF weighted, with a linear head.

The classic strong baseline for topic labels (TF-IDF + a linear classifier), built inside the
graph from the same ``token_ids [B, T]`` the other models read, so the run folder, ``evaluate``
and ``predict`` work unchanged:

1. **Features.** Unigrams are the WordPiece ids (``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
   ``[MASK]`` are skipped). Bigrams are the pairs of neighbouring ids from
   ``tensorflow_text.sliding_window`` (``[CLS] w`` and ``w [SEP]`` included, pairs with padding
   excluded), looked up in a bigram vocabulary: the ``max_bigrams`` bigrams in most training
   documents (at least ``min_df``), kept as a sorted non-trainable int32 weight and found with
   ``searchsorted``. Unknown bigrams are dropped.
2. **Weights.** Per document and feature, from the counts of ``tf.unique_with_counts``:
   ``tfidf``: ``(1 + log tf) * idf`` with scikit-learn's smooth
   ``idf = log((1 + N) / (1 + df)) + 1`` from the training documents; ``logcount``:
   ``log(1 + tf)``. Each document's vector is L2-normalised.
3. **Head.** ``hidden=0``: linear logits ``x W + b`` (``W`` starts at 0, so the model starts at
   the priors); ``hidden=H``: ``relu(x W1)``, dropout, ``Dense(C)``. The logits' bias starts at
   the prior log-odds with :func:`fusedfocal.losses.prior_bias_initializer`.

``x W`` is a weighted sum of the rows of ``W`` picked by the document's features (an embedding
bag), so a step costs the document's features times ``C``, not the feature count times ``C``.
``tf.unique`` has no XLA kernel: the CLI trains this model without ``jit_compile``.

On Reuters-21578 (``scripts/reuters_ngram.sh``, README "Results on Reuters-21578") the recipe
that works is the hidden-layer head over unigrams only (``--ngram-hidden 256 --ngram-bigrams 0``)
with a WordPiece vocabulary large enough that most words are one token (``--vocab-size 30000``;
the learner keeps about 11,100), ``--max-length 512``, batch 64, Adam 0.01 (epsilon 9e-6), at
most 12 epochs, and the logit-adjusted BCE loss (``la``) for macro-F1: since issue 20 these are the
command line's defaults for long documents (:mod:`fusedfocal.cli.resolve.settings`). For micro-F1 the
recipe is the linear head (``hidden=0``) with the squared hinge loss (``hinge``) and SGD
(``scripts/reuters_svm.sh``; 30 on the mean over 90 labels, 0.33 on the command line's summed
loss): that is the TF-IDF + L2-SVM baseline, and it reaches its micro-F1.
Under Adam the same linear model stays about 6 points lower on test (and 4 on validation): Adam's
per-weight step sizes give a rare n-gram the same step as a frequent one, so the model memorises
the training documents through their rare features instead of finding SGD's (and the SVM's)
small-norm solution.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fusedfocal.losses import _initializers  # noqa: F401  (registers PriorBias for load_model)

__all__ = ["NgramBag", "ngram_statistics", "build_ngram_model", "NUM_SPECIAL"]

NUM_SPECIAL = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]
WEIGHTINGS = ("tfidf", "logcount")


def _bigram_keys(ids, vocab_size):
    """``a * V + b`` of neighbouring ids and whether neither is padding (int64, numpy)."""
    ids = np.asarray(ids, np.int64)
    a, b = ids[:, :-1], ids[:, 1:]
    return a * vocab_size + b, (a > 0) & (b > 0)


def ngram_statistics(ids, vocab_size, *, max_bigrams=50000, min_df=2):
    """Bigram vocabulary and inverse document frequencies from training token ids.

    Args:
      ids: int ``[N, T]`` token ids of the training documents (0 is padding).
      vocab_size: WordPiece vocabulary size ``V`` (``V * V`` must fit in int32).
      max_bigrams: Largest bigram vocabulary (the bigrams in most documents; ties by key).
      min_df: Fewest training documents a kept bigram occurs in.

    Returns:
      ``(bigram_keys int32 [K] sorted, idf float32 [V + K])``.
    """
    ids = np.asarray(ids, np.int64)
    n = ids.shape[0]
    if vocab_size * vocab_size >= 2 ** 31:
        raise ValueError(f"Invalid value for argument `vocab_size`. Expected vocab_size**2 < 2**31 for int32 "
                         f"bigram keys. Received: {vocab_size}")
    rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)
    uni = np.unique(rows[ids >= NUM_SPECIAL] * vocab_size + ids[ids >= NUM_SPECIAL])
    uni_df = np.bincount(uni % vocab_size, minlength=vocab_size)
    keys, valid = _bigram_keys(ids, vocab_size)
    vv = vocab_size * vocab_size
    pairs = np.unique(rows[:, :-1][valid] * vv + keys[valid])
    bkeys, bdf = np.unique(pairs % vv, return_counts=True)
    keep = bdf >= min_df
    bkeys, bdf = bkeys[keep], bdf[keep]
    if len(bkeys) > max_bigrams:
        top = np.lexsort((bkeys, -bdf))[:max_bigrams]
        bkeys, bdf = bkeys[top], bdf[top]
    order = np.argsort(bkeys)
    bkeys, bdf = bkeys[order], bdf[order]
    df = np.concatenate([uni_df, bdf]).astype(np.float64)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    return bkeys.astype(np.int32), idf.astype(np.float32)


@keras.saving.register_keras_serializable(package="fusedfocal")
class NgramBag(keras.layers.Layer):
    """``token_ids int32 [B, T]`` -> ``[B, units]``: the L2-normalised unigram + bigram vector of
    each document times a ``[V + K, units]`` kernel (see the module docstring).

    Args:
      vocab_size: WordPiece vocabulary size ``V``.
      num_bigrams: Size ``K`` of the bigram vocabulary (set with :meth:`set_statistics`).
      units: Output width (the number of labels for a linear model).
      weighting: ``"tfidf"`` or ``"logcount"``.
      use_bias: Add a bias (``bias_initializer``).
      kernel_initializer: Of the ``[V + K, units]`` kernel (default zeros).
    """

    def __init__(self, vocab_size, num_bigrams, units, weighting="tfidf", use_bias=False,
                 kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Invalid value for argument `weighting`. Expected one of {list(WEIGHTINGS)}. "
                             f"Received: weighting={weighting!r}")
        self.vocab_size, self.num_bigrams, self.units = int(vocab_size), int(num_bigrams), int(units)
        self.weighting, self.use_bias = weighting, bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @property
    def num_features(self):
        return self.vocab_size + self.num_bigrams

    def build(self, input_shape):
        self.bigram_keys = self.add_weight(shape=(max(self.num_bigrams, 1),), dtype="int32", trainable=False,
                                           initializer=keras.initializers.Constant(2 ** 31 - 1), name="bigram_keys")
        self.idf = self.add_weight(shape=(self.num_features,), trainable=False, initializer="ones", name="idf")
        self.kernel = self.add_weight(shape=(self.num_features, self.units), initializer=self.kernel_initializer,
                                      name="kernel")
        self.bias = (self.add_weight(shape=(self.units,), initializer=self.bias_initializer, name="bias")
                     if self.use_bias else None)
        self.built = True

    def set_statistics(self, bigram_keys, idf):
        """Loads what :func:`ngram_statistics` learnt from the training data."""
        if len(bigram_keys) != self.num_bigrams or len(idf) != self.num_features:
            raise ValueError(f"Expected {self.num_bigrams} bigram keys and {self.num_features} idf values. "
                             f"Received: {len(bigram_keys)} and {len(idf)}")
        if self.num_bigrams:
            self.bigram_keys.assign(np.asarray(bigram_keys, np.int32))
        self.idf.assign(np.asarray(idf, np.float32))

    def call(self, ids):
        import tensorflow_text as tf_text

        ids = tf.cast(ids, tf.int32)
        batch = tf.shape(ids)[0]
        v = self.vocab_size
        uni_ok = ids >= NUM_SPECIAL
        if self.num_bigrams:
            pairs = tf_text.sliding_window(ids, 2, axis=-1)  # [B, T-1, 2]
            a, b = pairs[..., 0], pairs[..., 1]
            key = a * v + b
            keys = tf.convert_to_tensor(self.bigram_keys)
            pos = tf.minimum(tf.searchsorted(keys, tf.reshape(key, [-1]), side="left"), tf.size(keys) - 1)
            pos = tf.reshape(pos, tf.shape(key))
            found = (a > 0) & (b > 0) & (tf.gather(keys, pos) == key)
            feats = tf.concat([ids, v + tf.cast(pos, tf.int32)], axis=1)
            ok = tf.concat([uni_ok, found], axis=1)
        else:  # unigrams only: no bigram keys to look up
            feats, ok = ids, uni_ok
        rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(feats))
        nf = tf.constant(self.num_features, tf.int64)
        flat = tf.boolean_mask(tf.cast(rows, tf.int64) * nf + tf.cast(feats, tf.int64), ok)
        uniq, _, counts = tf.unique_with_counts(flat, out_idx=tf.int64)
        urow = tf.cast(uniq // nf, tf.int32)
        ufeat = tf.cast(uniq % nf, tf.int32)
        tf_ = tf.cast(counts, tf.float32)
        if self.weighting == "tfidf":
            w = (1.0 + tf.math.log(tf_)) * tf.gather(tf.convert_to_tensor(self.idf), ufeat)
        else:
            w = tf.math.log1p(tf_)
        norm = tf.math.sqrt(tf.math.unsorted_segment_sum(w * w, urow, batch))
        w = w / tf.gather(tf.maximum(norm, 1e-12), urow)
        kernel = tf.cast(tf.convert_to_tensor(self.kernel), self.compute_dtype)
        rows_w = tf.gather(kernel, ufeat) * tf.cast(w, self.compute_dtype)[:, None]
        out = tf.math.unsorted_segment_sum(rows_w, urow, batch)
        if self.bias is not None:
            out = out + tf.cast(tf.convert_to_tensor(self.bias), self.compute_dtype)
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "num_bigrams": self.num_bigrams,
                "units": self.units, "weighting": self.weighting, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


def build_ngram_model(*, vocab_size, num_labels, fit_ids, priors=None, prior_bias=True, hidden=0,
                      weighting="tfidf", max_bigrams=50000, min_df=2, dropout=0.0, seed=0,
                      features_only=False):
    """The ``ngram`` model over ``{"token_ids": int32 [B, T]}``; statistics from ``fit_ids [N, T]``.
    ``features_only``: the hidden layer's output (after dropout), no logits (needs ``hidden > 0``)."""
    if features_only and not hidden:
        raise ValueError("Invalid value for argument `hidden`. Expected > 0 with features_only=True. Received: 0")
    from fusedfocal.cli.stages.priors import prior_initializer

    keys, idf = ngram_statistics(fit_ids, vocab_size, max_bigrams=max_bigrams, min_df=min_df)
    bias_init = "zeros"
    if prior_bias and priors is not None:
        bias_init = prior_initializer(priors)  # the CLI's one prior rule (cli/priors.py)
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    if hidden:
        bag = NgramBag(vocab_size, len(keys), hidden, weighting, use_bias=True,
                       kernel_initializer=keras.initializers.GlorotUniform(seed=seed), dtype="float32",
                       name="ngram_bag")
        h = keras.layers.Activation("relu", name="relu")(bag(ids))
        if dropout:
            h = keras.layers.Dropout(dropout, seed=seed, name="dropout")(h)
        if features_only:
            bag.set_statistics(keys, idf)
            return keras.Model({"token_ids": ids}, h, name="fusedfocal_ngram_encoder")
        logits = keras.layers.Dense(num_labels, dtype="float32", bias_initializer=bias_init, name="logits")(h)
    else:
        bag = NgramBag(vocab_size, len(keys), num_labels, weighting, use_bias=True, bias_initializer=bias_init,
                       dtype="float32", name="logits")
        logits = bag(ids)
    bag.set_statistics(keys, idf)
    return keras.Model({"token_ids": ids}, logits, name="fusedfocal_ngram")
