"""Configuration of the text pipeline (one dataclass, Model Garden style)."""

from __future__ import annotations

import dataclasses

__all__ = ["LABEL_FORMATS", "PipelineConfig"]

LABEL_FORMATS = ("multi_hot", "ids", "padded_ids")


@dataclasses.dataclass
class PipelineConfig:
    """Everything :class:`~fusedfocal.data.TextPipeline` needs besides the vocabularies.

    Attributes:
      max_length: Maximum number of token ids per document, ``[CLS]`` and
        ``[SEP]`` included. Longer documents are truncated.
      batch_size: Global batch size. Under a ``tf.distribute.InputContext`` each
        input pipeline uses ``input_context.get_per_replica_batch_size(batch_size)``.
      vocab_size: Target WordPiece vocabulary size (an upper bound; the learner
        may return a few percent fewer tokens).
      shuffle_buffer: Shuffle buffer size (training only).
      seed: Shuffle seed. ``None`` gives a fresh order on every run.
      deterministic: Value of ``tf.data.Options.deterministic``. ``True`` keeps
        the element order reproducible (with a seed); ``False`` lets parallel
        stages emit out of order, which can be faster.
      bucket_boundaries: If set, batch by sequence length with
        ``tf.data.Dataset.bucket_by_sequence_length`` (lengths ``< b[0]``,
        ``[b[0], b[1])``, ...). Ignored when ``fixed_shape`` is true.
      fixed_shape: Pad every batch to ``[batch_size, max_length]`` and drop the
        last partial batch of a *training* dataset (static shapes for XLA/TPU).
        Evaluation datasets keep their last partial batch unless
        ``drop_remainder`` is true, so no document is lost silently.
      drop_remainder: Override for dropping the last partial batch. ``None``:
        ``fixed_shape and training``.
      cache: Cache the tokenized documents after the first epoch, so later
        epochs skip tokenization.
      text_field: JSON key / CSV column / tf.train.Example feature with the text.
      labels_field: JSON key / CSV column / feature with the labels.
      label_separator: Separator of labels inside one CSV/TSV cell.
      lower_case: Lower-case, NFD-normalize and strip accents before WordPiece
        (must match how the WordPiece vocabulary was built).
      add_special_tokens: Wrap every document as ``[CLS] ... [SEP]``.
      include_text: Also put the raw text (``tf.string [B]``) in the features
        dict under ``"text"``.
      tokenize_batch_size: Number of documents tokenized per vectorized call
        when documents are tokenized before batching (cache or bucketing).
      label_format: ``"multi_hot"`` (default): labels are float32 ``[B, C]``;
        ``"ids"``: labels are the sorted, deduplicated class ids of each
        document as a ``tf.RaggedTensor`` int32 ``[B, None]``, never
        ``[B, C]`` (for large label spaces and the fused head);
        ``"padded_ids"``: the same ids as int32 ``[B, L]`` padded with -1,
        ``L`` the most labels of any document (a static shape for XLA).
      vocab_sample_size: Maximum number of training texts the WordPiece learner
        sees (a seeded random sample); the learner is pure Python and slow.
    """

    max_length: int = 128
    batch_size: int = 32
    vocab_size: int = 8000
    shuffle_buffer: int = 10000
    seed: int | None = 0
    deterministic: bool = False
    bucket_boundaries: tuple[int, ...] | None = None
    fixed_shape: bool = False
    drop_remainder: bool | None = None
    cache: bool = True
    text_field: str = "text"
    labels_field: str = "labels"
    label_separator: str = "|"
    lower_case: bool = True
    add_special_tokens: bool = True
    include_text: bool = False
    tokenize_batch_size: int = 256
    vocab_sample_size: int = 20000
    label_format: str = "multi_hot"

    def __post_init__(self):
        for name in ("max_length", "batch_size", "vocab_size", "shuffle_buffer",
                     "tokenize_batch_size", "vocab_sample_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a positive int. "
                    f"Received: {name}={value!r}"
                )
        if self.add_special_tokens and self.max_length < 3:
            raise ValueError(
                "Invalid value for argument `max_length`. Expected >= 3 when "
                f"add_special_tokens=True ([CLS] + token + [SEP]). Received: max_length={self.max_length}"
            )
        if self.bucket_boundaries is not None:
            bounds = tuple(int(b) for b in self.bucket_boundaries)
            if not bounds or any(b < 1 for b in bounds) or list(bounds) != sorted(set(bounds)):
                raise ValueError(
                    "Invalid value for argument `bucket_boundaries`. Expected a non-empty, "
                    f"strictly increasing tuple of positive ints. Received: bucket_boundaries={self.bucket_boundaries!r}"
                )
            self.bucket_boundaries = bounds
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(
                f"Invalid value for argument `label_format`. Expected one of {set(LABEL_FORMATS)}. "
                f"Received: label_format={self.label_format!r}")
        if not self.label_separator:
            raise ValueError("Invalid value for argument `label_separator`. Expected a non-empty string. Received: ''")
