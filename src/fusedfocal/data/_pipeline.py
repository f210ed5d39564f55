"""The tf.data pipeline: texts and label lists in; token ids and multi-hot labels out.

Modelled on Model Garden's ``pretrain_text_dataloader.py``: a dataclass config,
the tokenizer and the label table built once in ``__init__``, stages
``_decode`` (texts + label strings -> ragged ids + multi-hot, vectorized over
a batch), ``_tokenize`` and ``_pack``, and one :meth:`TextPipeline.dataset`
ending in ``prefetch(AUTOTUNE)``.

Element structure::

    ({"token_ids": int32 [B, T]}, labels float32 [B, C])

or, with ``PipelineConfig(label_format="ids")``, labels as the sorted,
deduplicated class ids of each document, a ``tf.RaggedTensor`` int32
``[B, None]`` (no ``[B, C]`` tensor anywhere in the pipeline; for large label
spaces and :class:`fusedfocal.keras.FocalHead`). The cached route carries ids
padded with -1 to the most labels of any document, and makes them ragged
again after batching. ``label_format="padded_ids"`` keeps that padding: int32
``[B, L]`` with -1 after each row's ids, ``L`` the most labels of any document
of the dataset, a static shape for ``jit_compile`` (ragged ids change shape
with every batch, so XLA compiles again for each new total).

``T`` is the longest document of the batch (at most ``max_length``), or
exactly ``max_length`` with ``fixed_shape=True``. Padding id is 0 (``[PAD]``);
documents are ``[CLS] pieces... [SEP]`` (ids 2 and 3) unless
``add_special_tokens=False``. With ``include_text=True`` the features dict
also holds ``"text"``: tf.string ``[B]``.

Two routes, same elements (checked by the tests):

* ``cache=False``, no buckets: shuffle the raw documents, ``batch``, then
  tokenize each batch in one vectorized ``map`` (``_decode``: ``_tokenize`` +
  ``_pack``), parallel, AUTOTUNE.
* ``cache=True`` or buckets: tokenize ``tokenize_batch_size`` documents per
  call (``_decode_chunk``), ``unbatch`` into per-document ids padded to
  ``max_length`` with their lengths, ``cache``, shuffle, ``batch`` (or
  ``bucket_by_sequence_length``), then ``_trim`` to the longest document.
  The first epoch is slower than the uncached route, later ones skip
  tokenization entirely.

Measured on 2 shared CPU cores (Reuters train, max_length 128): tokenizing
per batch after ``.batch`` runs about 2-3x faster than per document; per-
element tf.data stages (``unbatch`` + ragged elements + ``padded_batch``)
cost more than they save, which is why the uncached route avoids them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from fusedfocal.data._config import PipelineConfig
from fusedfocal.data._labels import LabelVocab, warn_unknown_labels
from fusedfocal.data._readers import ReadStats, read_records
from fusedfocal.data._tokenizers import tokenizer_spec, wordpiece_spec, wrap_start_end
from fusedfocal.data._wordpiece import SPECIAL_TOKENS, build_wordpiece_vocab, load_vocab, save_vocab

__all__ = ["TextPipeline"]

AUTOTUNE = tf.data.AUTOTUNE
WORDPIECE_FILE = "wordpiece_vocab.txt"
LABELS_FILE = "label_vocab.json"


class TextPipeline:
    """Builds ``tf.data`` datasets of WordPiece ids and multi-hot labels.

    Args:
      config: A :class:`PipelineConfig`.
      wordpiece_vocab: WordPiece tokens in id order, starting with
        ``SPECIAL_TOKENS`` (see :func:`build_wordpiece_vocab`, :func:`load_vocab`);
        ``None`` with ``tokenizer``.
      label_vocab: The :class:`LabelVocab` of the training data.
      tokenizer: Instead of ``wordpiece_vocab``: a KerasHub tokenizer (a preset's,
        ``keras_hub.tokenizers.Tokenizer.from_preset(...)``) or any tensorflow-text
        tokenizer; documents become ``start ids... end`` padded with its padding id
        (``config.lower_case`` is the tokenizer's business then). See
        :func:`fusedfocal.data.tokenizer_spec`.
      special_ids: With ``tokenizer``: ``{"start_id", "end_id", "pad_id"}`` where the
        tokenizer has no ``start_token_id``/``end_token_id``/``pad_token_id`` (tensorflow-text).

    Attributes:
      unknown_label_counts: ``collections.Counter`` of label names of the last
        dataset built that are not in ``label_vocab`` (they are ignored and
        reported by a warning).
      read_stats: The :class:`ReadStats` of the last :meth:`dataset_from_files`.
      num_examples: Documents in the last dataset built (this shard).
    """

    def __init__(self, config: PipelineConfig, wordpiece_vocab: Sequence[str] | None, label_vocab: LabelVocab,
                 *, tokenizer=None, special_ids: dict | None = None):
        if not isinstance(config, PipelineConfig):
            raise TypeError(f"Expected `config` to be a PipelineConfig. Received: {type(config).__name__}")
        if tokenizer is not None:
            if wordpiece_vocab is not None:
                raise ValueError("Expected either `wordpiece_vocab` or `tokenizer`. Received both")
            spec = tokenizer_spec(tokenizer, **(special_ids or {}))
            tokens = spec.vocabulary
        else:
            tokens = list(wordpiece_vocab if wordpiece_vocab is not None else [])
            if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
                raise ValueError(
                    f"Invalid value for argument `wordpiece_vocab`. Expected it to start with {list(SPECIAL_TOKENS)}. "
                    f"Received: {tokens[: len(SPECIAL_TOKENS)]}")
            spec = wordpiece_spec(tokens, config.lower_case)
        if len(label_vocab) == 0:
            raise ValueError("Invalid value for argument `label_vocab`. Expected at least one label. Received: 0")
        self.config = config
        self.wordpiece_vocab = tokens  # the tokenizer's vocabulary with `tokenizer`
        self.tokenizer_spec = spec
        self.label_vocab = label_vocab
        self.unknown_label_counts: collections.Counter = collections.Counter()
        self.read_stats: ReadStats | None = None
        self.num_examples: int | None = None
        self._max_labels = 1  # label ids per document in the cached route (set by dataset())
        # Built once, shared by every dataset (Model Garden style).
        self._tokenize_fn, self._pad_id = spec.tokenize, spec.pad_id
        self._label_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(label_vocab.labels, tf.string), tf.range(len(label_vocab), dtype=tf.int32)),
            default_value=-1)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_training_data(cls, config: PipelineConfig, texts: Sequence[str],
                           label_lists: Sequence[Sequence[str]], **wordpiece_kwargs) -> "TextPipeline":
        """Learns both vocabularies from training data.

        Args:
          config: Pipeline config (``vocab_size``, ``vocab_sample_size``, ``lower_case``).
          texts: Training texts.
          label_lists: Training label lists.
          **wordpiece_kwargs: Extra arguments of :func:`build_wordpiece_vocab`.

        Returns:
          A pipeline.
        """
        kwargs = {"max_sample": config.vocab_sample_size, "lower_case": config.lower_case,
                  "seed": config.seed or 0}
        kwargs.update(wordpiece_kwargs)
        wordpiece = build_wordpiece_vocab(texts, config.vocab_size, **kwargs)
        return cls(config, wordpiece, LabelVocab.build(label_lists))

    def save_vocabularies(self, directory: str | os.PathLike) -> Path:
        """Writes ``wordpiece_vocab.txt`` and ``label_vocab.json`` into ``directory`` (a pipeline
        built with a ``tokenizer`` writes ``label_vocab.json`` only: save the tokenizer with its
        preset, e.g. ``tokenizer.save_to_preset(dir)``)."""
        directory = Path(directory)
        if self.tokenizer_spec.tokenizer is None:
            save_vocab(self.wordpiece_vocab, directory / WORDPIECE_FILE)
        self.label_vocab.save(directory / LABELS_FILE)
        return directory

    @classmethod
    def from_directory(cls, config: PipelineConfig, directory: str | os.PathLike, *, tokenizer=None,
                       special_ids: dict | None = None) -> "TextPipeline":
        """Loads the vocabularies written by :meth:`save_vocabularies` (with ``tokenizer``: the
        label vocabulary only, and that tokenizer)."""
        directory = Path(directory)
        labels = LabelVocab.load(directory / LABELS_FILE)
        if tokenizer is not None:
            return cls(config, None, labels, tokenizer=tokenizer, special_ids=special_ids)
        return cls(config, load_vocab(directory / WORDPIECE_FILE), labels)

    @property
    def num_labels(self) -> int:
        """Number of classes ``C``."""
        return len(self.label_vocab)

    # ----------------------------------------------------------------- stages
    def _tokenize(self, texts: tf.Tensor, fn=None) -> tf.RaggedTensor:
        """tf.string ``[B]`` -> ragged int32 ``[B, (T)]``, truncated, with [CLS]/[SEP] (the tokenizer's
        start and end ids)."""
        ids = (fn or self._tokenize_fn)(texts)
        cfg = self.config
        if cfg.add_special_tokens:
            spec = self.tokenizer_spec
            ids = wrap_start_end(ids[:, : cfg.max_length - 2], spec.start_id, spec.end_id)
        else:
            ids = ids[:, : cfg.max_length]
        return ids

    def _encode_labels(self, labels: tf.RaggedTensor) -> tf.Tensor:
        """Ragged tf.string ``[B, (L)]`` -> multi-hot float32 ``[B, C]``; unknown names are dropped."""
        ids = tf.ragged.map_flat_values(self._label_table.lookup, labels)
        flat = ids.flat_values
        known = flat >= 0
        index = tf.stack([tf.boolean_mask(ids.value_rowids(), known),
                          tf.cast(tf.boolean_mask(flat, known), tf.int64)], axis=1)
        shape = tf.stack([ids.nrows(), tf.constant(self.num_labels, tf.int64)])
        multi_hot = tf.scatter_nd(index, tf.ones_like(index[:, 0], tf.float32), shape)
        return tf.minimum(multi_hot, 1.0)

    def _encode_label_ids(self, labels: tf.RaggedTensor) -> tf.RaggedTensor:
        """Ragged tf.string ``[B, (L)]`` -> ragged int32 ``[B, (L')]`` of sorted, unique class ids;
        unknown names are dropped (the ids of exactly the ones :meth:`_encode_labels` sets)."""
        ids = tf.ragged.map_flat_values(self._label_table.lookup, labels)
        flat = ids.flat_values
        known = flat >= 0
        num = tf.constant(self.num_labels, tf.int64)
        # One sort of (row, id) keys orders ids within rows; equal neighbours are duplicates.
        key = tf.sort(tf.boolean_mask(ids.value_rowids(), known) * num
                      + tf.cast(tf.boolean_mask(flat, known), tf.int64))
        first = tf.ones([tf.minimum(tf.size(key), 1)], tf.bool)
        key = tf.boolean_mask(key, tf.concat([first, key[1:] != key[:-1]], 0))
        return tf.RaggedTensor.from_value_rowids(tf.cast(key % num, tf.int32), key // num,
                                                 nrows=ids.nrows(), validate=False)

    def _labels(self, labels: tf.RaggedTensor):
        """The labels in ``config.label_format``: multi-hot ``[B, C]`` or ragged ids ``[B, None]``."""
        if self.config.label_format == "ids":
            return self._encode_label_ids(labels)
        if self.config.label_format == "padded_ids":  # a static width: no XLA recompilation per batch
            return self._encode_label_ids(labels).to_tensor(default_value=-1, shape=[None, self._max_labels])
        return self._encode_labels(labels)

    def _pack(self, ids: tf.RaggedTensor) -> tf.Tensor:
        """Ragged ids -> dense int32 ``[B, T]`` padded with ``PAD_ID`` (the tokenizer's padding id)."""
        if self.config.fixed_shape:
            return ids.to_tensor(default_value=self._pad_id, shape=[None, self.config.max_length])
        return ids.to_tensor(default_value=self._pad_id)

    def _decode(self, texts: tf.Tensor, labels: tf.RaggedTensor):
        """One batch of raw documents -> ``(features, multi_hot)`` (the uncached route)."""
        token_ids = self._pack(self._tokenize(texts))
        multi_hot = self._labels(labels)
        if self.config.label_format == "multi_hot":
            multi_hot.set_shape([texts.shape[0], self.num_labels])
        if self.config.fixed_shape:  # a static batch size survives drop_remainder
            token_ids.set_shape([texts.shape[0], self.config.max_length])
        features = {"token_ids": token_ids}
        if self.config.include_text:
            features["text"] = texts
        return features, multi_hot

    def _decode_chunk(self, texts: tf.Tensor, labels: tf.RaggedTensor):
        """A chunk of raw documents -> ids padded to ``max_length`` plus lengths (the cached route)."""
        ids = self._tokenize(texts)
        features = {"token_ids": ids.to_tensor(default_value=self._pad_id, shape=[None, self.config.max_length]),
                    "length": tf.cast(ids.row_lengths(), tf.int32)}
        if self.config.include_text:
            features["text"] = texts
        labels = self._labels(labels)
        if self.config.label_format == "ids":  # fixed width per document, so that unbatch/batch work
            labels = labels.to_tensor(default_value=-1, shape=[None, self._max_labels])
        return features, labels

    def _trim(self, features, labels):
        """Drops the ``length`` feature; cuts ids to the batch's longest document unless ``fixed_shape``."""
        features = dict(features)
        lengths = features.pop("length")
        if not self.config.fixed_shape:
            features["token_ids"] = features["token_ids"][:, : tf.reduce_max(lengths)]
        if self.config.label_format == "ids":  # ids are sorted, so the -1 padding is a suffix
            labels = tf.RaggedTensor.from_tensor(labels, padding=-1)
        return features, labels

    # ---------------------------------------------------------------- public
    def token_lengths(self, texts, batch_size: int = 1024) -> np.ndarray:
        """WordPiece tokens per text before truncation, special tokens included: int64 ``[N]``.

        A text longer than ``config.max_length`` loses its tail in :meth:`tokenize` and in the
        datasets; this counts how many tokens each text has, so callers can report the share cut.
        """
        extra = 2 if self.config.add_special_tokens else 0
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = tf.convert_to_tensor(list(texts[i:i + batch_size]), tf.string)
            ids = self.tokenizer_spec.tokenize_for(chunk)(chunk)
            while isinstance(ids, tf.RaggedTensor) and ids.ragged_rank > 1:
                ids = ids.merge_dims(1, 2)
            out.append(ids.row_lengths().numpy().astype(np.int64) + extra)
        return np.concatenate(out) if out else np.zeros([0], np.int64)

    def tokenize(self, texts) -> tf.Tensor:
        """Tokenizes texts for prediction, exactly as the datasets do.

        Args:
          texts: A list of strings, or a tf.string tensor ``[N]`` (a scalar is
            treated as ``[1]``).

        Returns:
          int32 ``[N, T]`` token ids, padded with 0 (``T = max_length`` with
          ``fixed_shape``, else the longest document).
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            texts = texts[tf.newaxis]
        return self._pack(self._tokenize(texts, self.tokenizer_spec.tokenize_for(texts)))

    def dataset(
        self,
        texts: Sequence[str],
        label_lists: Sequence[Sequence[str]],
        *,
        training: bool,
        input_context: tf.distribute.InputContext | None = None,
        order: Sequence[int] | None = None,
    ) -> tf.data.Dataset:
        """Builds the dataset of one epoch (call ``.repeat()`` for more).

        Args:
          texts: Documents.
          label_lists: One list of label names per document. Names not in the
            label vocabulary are ignored, counted in
            :attr:`unknown_label_counts` and reported by a warning.
          training: Shuffle (seeded by ``config.seed``) and, with
            ``fixed_shape``, drop the last partial batch. The order is
            reproducible with a ``seed`` and ``deterministic=True``; with
            ``deterministic=False`` parallel stages may reorder documents.
            Evaluation datasets keep the input order (``deterministic`` is
            forced on), so predictions line up with ``texts``.
          input_context: From ``strategy.distribute_datasets_from_function``:
            keep shard ``input_pipeline_id`` of ``num_input_pipelines`` and use
            ``get_per_replica_batch_size(config.batch_size)``.
          order: A permutation of the documents to use instead of the seeded
            shuffle (training only): the documents are read in this order and
            not shuffled again. The command line passes one permutation per
            epoch, a function of the seed and the epoch, so that a resumed run
            reads epoch ``k`` in the same order as an uninterrupted one.

        Returns:
          A ``tf.data.Dataset`` of ``({"token_ids": int32 [B, T]}, float32 [B, C])``,
          or of ``({"token_ids": int32 [B, T]}, tf.RaggedTensor int32 [B, None])``
          with ``config.label_format="ids"``.
        """
        cfg = self.config
        texts, label_lists = _checked_documents(texts, label_lists, order)
        self._tokenize_fn = self.tokenizer_spec.tokenize_for(texts)  # traced into this dataset's map
        self.unknown_label_counts = self.label_vocab.unknown(label_lists)
        index = self.label_vocab.index
        self._max_labels = max([len({n for n in labels if n in index}) for labels in label_lists] + [1])
        warn_unknown_labels(self.unknown_label_counts, "training data" if training else "evaluation data")

        batch_size = cfg.batch_size
        ds = self._source(texts, label_lists)
        num = len(texts)
        if input_context is not None:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            batch_size = input_context.get_per_replica_batch_size(cfg.batch_size)
            num = len(range(input_context.input_pipeline_id, num, input_context.num_input_pipelines))
        self.num_examples = num
        drop = cfg.drop_remainder if cfg.drop_remainder is not None else (cfg.fixed_shape and training)
        if drop and not training and num % batch_size:
            warnings.warn(f"drop_remainder=True drops the last {num % batch_size} evaluation document(s).",
                          UserWarning, stacklevel=2)
        bucketing = cfg.bucket_boundaries is not None and not cfg.fixed_shape
        shuffled = training and order is None
        if not (cfg.cache or bucketing):
            ds = self._batches_uncached(ds, batch_size, drop, num, shuffled=shuffled)
        else:
            ds = self._batches_cached(ds, batch_size, drop, num, shuffled=shuffled, bucketing=bucketing)
        options = tf.data.Options()
        options.deterministic = bool(cfg.deterministic or not training)
        ds = ds.with_options(options)
        return ds.prefetch(AUTOTUNE)

    def _shuffle(self, ds: tf.data.Dataset, num: int) -> tf.data.Dataset:
        cfg = self.config
        return ds.shuffle(buffer_size=max(1, min(cfg.shuffle_buffer, num)), seed=cfg.seed,
                          reshuffle_each_iteration=True)

    def _batches_uncached(self, ds, batch_size, drop, num, *, shuffled):
        """Uncached: shuffle raw documents, batch, then _decode (tokenize + _pack) each batch."""
        if shuffled:
            ds = self._shuffle(ds, num)
        ds = ds.batch(batch_size, drop_remainder=drop)
        return ds.map(self._decode, num_parallel_calls=AUTOTUNE)

    def _batches_cached(self, ds, batch_size, drop, num, *, shuffled, bucketing):
        """Cached / bucketed: tokenize chunks once, cache per-document ids, shuffle, batch, _trim."""
        cfg = self.config
        ds = ds.batch(cfg.tokenize_batch_size)
        ds = ds.map(self._decode_chunk, num_parallel_calls=AUTOTUNE).unbatch()
        if cfg.cache:
            ds = ds.cache()
        if shuffled:
            ds = self._shuffle(ds, num)
        if bucketing:
            bounds = list(cfg.bucket_boundaries)
            ds = ds.bucket_by_sequence_length(
                lambda feats, _: feats["length"], bounds, [batch_size] * (len(bounds) + 1),
                drop_remainder=drop)
        else:
            ds = ds.batch(batch_size, drop_remainder=drop)
            # unbatch hides the cardinality; restore it so Keras knows the epoch length.
            batches = num // batch_size if drop else -(-num // batch_size)
            ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
        return ds.map(self._trim, num_parallel_calls=AUTOTUNE)

    def dataset_from_files(self, paths, *, training: bool,
                           input_context: tf.distribute.InputContext | None = None, **read_kwargs) -> tf.data.Dataset:
        """Reads files with :func:`read_records`, then calls :meth:`dataset`.

        Args:
          paths: Files or glob patterns (JSONL, CSV, TSV, TFRecord, optionally .gz).
          training: See :meth:`dataset`.
          input_context: See :meth:`dataset`.
          **read_kwargs: Arguments of :func:`read_records`; ``text_field``,
            ``labels_field`` and ``label_separator`` default to the config's.

        Returns:
          The dataset; the read statistics are in :attr:`read_stats`.
        """
        kwargs = {"text_field": self.config.text_field, "labels_field": self.config.labels_field,
                  "label_separator": self.config.label_separator}
        kwargs.update(read_kwargs)
        texts, label_lists, self.read_stats = read_records(paths, **kwargs)
        return self.dataset(texts, label_lists, training=training, input_context=input_context)

    # --------------------------------------------------------------- helpers
    @staticmethod
    def _source(texts: list[str], label_lists: list[list[str]]) -> tf.data.Dataset:
        flat = [name for labels in label_lists for name in labels]
        labels = tf.RaggedTensor.from_row_lengths(
            tf.constant(flat, tf.string, shape=[len(flat)]),
            tf.constant([len(x) for x in label_lists], tf.int64, shape=[len(label_lists)]))
        return tf.data.Dataset.from_tensor_slices((tf.constant(texts, tf.string, shape=[len(texts)]), labels))



def _checked_documents(texts, label_lists, order):
    """``texts`` and ``label_lists`` as lists, checked, and read in ``order`` when one is given."""
    texts = list(texts)
    label_lists = [list(x) for x in label_lists]
    if len(texts) != len(label_lists):
        raise ValueError(
            f"Expected one label list per text. Received: {len(texts)} texts, {len(label_lists)} label lists")
    if not all(isinstance(t, str) for t in texts):
        bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise TypeError(f"Expected every text to be a str. Received: {type(texts[bad]).__name__} at index {bad}")
    if order is not None:
        if sorted(order) != list(range(len(texts))):
            raise ValueError(f"Expected `order` to be a permutation of range({len(texts)}). "
                             f"Received: {len(order)} indices")
        texts = [texts[i] for i in order]
        label_lists = [label_lists[i] for i in order]
    return texts, label_lists
