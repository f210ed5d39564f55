"""The tokenizer stage of :class:`~fusedfocal.data.TextPipeline`: the learnt WordPiece, or a
tokenizer given by the caller (a KerasHub preset's, or any tensorflow-text tokenizer).

A :class:`TokenizerSpec` is what the pipeline needs from a tokenizer: a vectorized
``tokenize`` (tf.string ``[B]`` -> ragged int32 ``[B, (T)]``, usable inside ``tf.data``), the
ids of its start, end and padding tokens, and its vocabulary. :func:`tokenizer_spec` builds one
from

* a KerasHub tokenizer (``keras_hub.tokenizers.Tokenizer``, e.g. ``BertTokenizer.from_preset``):
  its own ``tokenize`` and its ``start_token_id``, ``end_token_id``, ``pad_token_id``
  (BERT: ``[CLS]`` 101, ``[SEP]`` 102, ``[PAD]`` 0 in the uncased vocabulary; RoBERTa: ``<s>``
  0, ``</s>`` 2, ``<pad>`` 1);
* any object with a tensorflow-text style ``tokenize`` (``tensorflow_text.FastBertTokenizer``,
  ``BertTokenizer``, ``SentencepieceTokenizer``, ...): the ids are given by the caller, a
  ``[B, words, pieces]`` result is merged to ``[B, pieces]``.

A KerasHub WordPiece tokenizer (BERT, DistilBERT, ...: ``keras_hub.tokenizers.WordPieceTokenizer``)
runs through ``tensorflow_text.FastBertTokenizer`` over its own vocabulary (:func:`fast_wordpiece`):
KerasHub splits words with Unicode regular expressions, about 4x slower on Reuters (7,500 against
30,000 documents/s on 2 CPU cores), for the same ids: control and format characters become spaces
(KerasHub splits on them; BERT's cleaning would drop them), accents are stripped and case folded
before the split as KerasHub does (case folding after its split), and a batch holding a character
whose NFKC case folding changes how it splits (:data:`FOLD_SPLIT_RANGES`: "…" is three full stops
after folding; fullwidth "＄"; enclosed "⑴") or a NUL goes through KerasHub's own ``tokenize``. A
data set without any of them (Reuters has none) is tokenized by the fast path alone
(:meth:`TokenizerSpec.tokenize_for`): even untaken, the branch to KerasHub's tokenizer doubled the
epoch time. The tests compare both on every such character and on Reuters.

The pipeline wraps each document as ``start ids... end`` and pads with the padding id, as
KerasHub's classifier preprocessors pack a single segment, so a backbone sees what it was
pre-trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from fusedfocal.data._wordpiece import CLS_ID, PAD_ID, SEP_ID

__all__ = ["TokenizerSpec", "tokenizer_spec", "wordpiece_spec", "wrap_start_end", "fast_wordpiece",
           "FOLD_SPLIT_RANGES"]

#: Code points whose NFKC case folding changes how a BERT basic tokenizer splits them (into several
#: punctuation marks, a space, a CJK ideograph...): where folding before the split (the fast path)
#: and after it (KerasHub) differ. From Python's ``unicodedata`` over every code point (the test
#: recomputes it); a batch holding one is tokenized by KerasHub itself.
FOLD_SPLIT_RANGES = (
    (0xA8, 0xA8), (0xAF, 0xAF), (0xB4, 0xB4), (0xB8, 0xB8), (0x13F, 0x140), (0x2D8, 0x2DD), (0x37A,
    0x37A), (0x384, 0x385), (0x1FBD, 0x1FBD), (0x1FBF, 0x1FC1), (0x1FCD, 0x1FCF), (0x1FDD, 0x1FDF),
    (0x1FED, 0x1FEF), (0x1FFD, 0x1FFE), (0x2017, 0x2017), (0x2025, 0x2026), (0x2033, 0x2034), (0x2036,
    0x2037), (0x203C, 0x203C), (0x203E, 0x203E), (0x2047, 0x2049), (0x2057, 0x2057), (0x207A, 0x207A),
    (0x207C, 0x207C), (0x208A, 0x208A), (0x208C, 0x208C), (0x2100, 0x2101), (0x2105, 0x2106), (0x2474,
    0x24B5), (0x2A74, 0x2A76), (0x2E9F, 0x2E9F), (0x2EF3, 0x2EF3), (0x2F00, 0x2FD5), (0x3038, 0x303A),
    (0x309B, 0x309C), (0x3192, 0x319F), (0x3200, 0x321E), (0x3220, 0x3247), (0x3280, 0x32B0), (0x32C0,
    0x32CB), (0x32FF, 0x32FF), (0x3358, 0x3370), (0x337B, 0x337F), (0x33C2, 0x33C2), (0x33C7, 0x33C7),
    (0x33D8, 0x33D8), (0x33E0, 0x33FE), (0xFB29, 0xFB29), (0xFC5E, 0xFC63), (0xFDFA, 0xFDFB), (0xFE19,
    0xFE19), (0xFE30, 0xFE30), (0xFE49, 0xFE4C), (0xFE62, 0xFE62), (0xFE64, 0xFE66), (0xFE69, 0xFE69),
    (0xFE70, 0xFE70), (0xFE72, 0xFE72), (0xFE74, 0xFE74), (0xFE76, 0xFE76), (0xFE78, 0xFE78), (0xFE7A,
    0xFE7A), (0xFE7C, 0xFE7C), (0xFE7E, 0xFE7E), (0xFF04, 0xFF04), (0xFF0B, 0xFF0B), (0xFF1C, 0xFF1E),
    (0xFF3E, 0xFF3E), (0xFF40, 0xFF40), (0xFF5C, 0xFF5C), (0xFF5E, 0xFF5E), (0xFFE3, 0xFFE3), (0x1F100,
    0x1F10A), (0x1F110, 0x1F12A), (0x1F210, 0x1F212), (0x1F214, 0x1F23B), (0x1F240, 0x1F248), (0x1F250,
    0x1F251)
)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """What :class:`~fusedfocal.data.TextPipeline` needs from a tokenizer.

    Attributes:
      tokenize: tf.string ``[B]`` -> ragged int ``[B, (T)]`` (or ``[B, (W), (P)]``, merged).
      start_id: Id put before each document (``[CLS]``, ``<s>``).
      end_id: Id put after each document (``[SEP]``, ``</s>``).
      pad_id: Id batches are padded with.
      vocabulary: The tokens in id order (``len`` is the vocabulary size).
      tokenizer: The tokenizer object (``None`` for the learnt WordPiece).
      fast_tokenize: Where there is one (:func:`fast_wordpiece`): the fast path alone, exact for
        texts without a character of :data:`FOLD_SPLIT_RANGES` or a NUL (:meth:`tokenize_for`).
    """

    tokenize: Callable
    start_id: int
    end_id: int
    pad_id: int
    vocabulary: list
    tokenizer: object = None
    fast_tokenize: Callable | None = None
    exact_pattern: str | None = None

    def tokenize_for(self, texts):
        """The tokenize function for these texts (a list or a tf.string tensor, checked once):
        ``fast_tokenize`` where none of them needs KerasHub's own path, else ``tokenize``. In the
        graph of a batch, even an untaken branch to KerasHub's tokenizer doubled the epoch time."""
        if self.fast_tokenize is None:
            return self.tokenize
        texts = tf.convert_to_tensor(texts, tf.string)
        if bool(tf.reduce_any(tf.strings.regex_full_match(tf.reshape(texts, [-1]), self.exact_pattern))):
            return self.tokenize
        return self.fast_tokenize


def wordpiece_spec(tokens, lower_case=True) -> TokenizerSpec:
    """The learnt WordPiece vocabulary's spec: ``tensorflow_text.FastBertTokenizer`` over ``tokens``
    (starting with ``SPECIAL_TOKENS``), ``[CLS]`` 2, ``[SEP]`` 3, ``[PAD]`` 0."""
    import tensorflow_text as tf_text

    tok = tf_text.FastBertTokenizer(vocab=list(tokens), token_out_type=tf.int32, unknown_token="[UNK]",
                                    lower_case_nfd_strip_accents=lower_case)
    return TokenizerSpec(tok.tokenize, CLS_ID, SEP_ID, PAD_ID, list(tokens))


def _flat_ids(tokenize):
    def flat(texts):
        ids = tokenize(texts)
        while isinstance(ids, tf.RaggedTensor) and ids.ragged_rank > 1:
            ids = ids.merge_dims(1, 2)
        if not isinstance(ids, tf.RaggedTensor):  # a dense [B, T] result (fixed-length tokenizers)
            ids = tf.RaggedTensor.from_tensor(ids)
        return tf.cast(ids, tf.int32)

    # Eagerly in a graph of its own: KerasHub's tokenizers return Python lists when called eagerly.
    # Inside tf.data's map (a graph already) it is inlined: a nested function call per batch cost
    # about 2 ms (measured: 2.1x the WordPiece path's epoch time with it).
    graph = tf.function(flat, input_signature=[tf.TensorSpec([None], tf.string)])
    return lambda texts: graph(texts) if tf.executing_eagerly() else flat(texts)


def _is_keras_hub_wordpiece(tokenizer):
    return any(c.__name__ == "WordPieceTokenizer" and c.__module__.startswith("keras_hub")
               for c in type(tokenizer).__mro__)


def fast_wordpiece(tokenizer, *, parts=False):
    """``tokenize`` of a KerasHub WordPiece tokenizer through ``tensorflow_text.FastBertTokenizer``
    (same ids, see the module docstring), or ``None`` where its settings have no fast equivalent
    (``split=False``, ``split_on_cjk=False``, special tokens in strings, a fixed sequence length).
    ``parts=True``: ``(tokenize, fast_path, exact_pattern)``, the fast path alone and the regular
    expression of the texts it would get wrong."""
    import tensorflow_text as tf_text

    if not _is_keras_hub_wordpiece(tokenizer) or not (tokenizer.split and tokenizer.split_on_cjk) or (
            tokenizer.special_tokens_in_strings or tokenizer.sequence_length is not None):
        return None
    try:
        fast = tf_text.FastBertTokenizer(vocab=list(tokenizer.get_vocabulary()), token_out_type=tf.int32,
                                         suffix_indicator=tokenizer.suffix_indicator,
                                         unknown_token=tokenizer.oov_token, lower_case_nfd_strip_accents=False)
    except (RuntimeError, ValueError):  # a vocabulary tf-text refuses (duplicates): KerasHub's own path
        return None
    lowercase, strip = bool(tokenizer.lowercase), bool(tokenizer.strip_accents)
    risky = "[\\x00" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in FOLD_SPLIT_RANGES) + "]" if lowercase else "\\x00"

    def fast_path(texts):
        texts = tf.strings.regex_replace(texts, r"[\p{Cc}\p{Cf}]", " ")
        if strip:
            texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
        if lowercase:
            texts = tf_text.case_fold_utf8(texts)
        ids = fast.tokenize(texts)
        return ids.merge_dims(1, 2) if ids.ragged_rank > 1 else ids

    def tokenize(texts):
        exact = tf.reduce_any(tf.strings.regex_full_match(texts, f"(?s).*{risky}.*"))
        return tf.cond(exact, lambda: tf.cast(tokenizer.tokenize(texts), tf.int32), lambda: fast_path(texts))

    return (tokenize, fast_path, f"(?s).*{risky}.*") if parts else tokenize


def tokenizer_spec(tokenizer, *, start_id=None, end_id=None, pad_id=None, fast=True) -> TokenizerSpec:
    """The spec of a caller's tokenizer (see the module docstring).

    Args:
      tokenizer: A KerasHub tokenizer, or any object with ``tokenize(tf.string [B])`` returning
        ragged ids.
      start_id: Id put before each document. Default: the tokenizer's ``start_token_id``.
      end_id: Id put after each document. Default: the tokenizer's ``end_token_id``.
      pad_id: Padding id. Default: the tokenizer's ``pad_token_id``.
      fast: A KerasHub WordPiece tokenizer runs through :func:`fast_wordpiece` (same ids);
        ``False``: its own ``tokenize``.

    Returns:
      A :class:`TokenizerSpec`.

    Raises:
      TypeError: ``tokenizer`` has no ``tokenize``.
      ValueError: a special id neither given nor found on the tokenizer.
    """
    if not callable(getattr(tokenizer, "tokenize", None)):
        raise TypeError("Invalid value for argument `tokenizer`. Expected a KerasHub or tensorflow-text tokenizer "
                        f"(an object with a `tokenize` method). Received: {type(tokenizer).__name__}")
    ids = {}
    for name, given in (("start", start_id), ("end", end_id), ("pad", pad_id)):
        value = given if given is not None else getattr(tokenizer, f"{name}_token_id", None)
        if value is None:
            raise ValueError(
                f"Invalid value for argument `{name}_id`. Expected an int, or a tokenizer with a "
                f"`{name}_token_id` attribute (KerasHub tokenizers have one). Received: None "
                f"for a {type(tokenizer).__name__}")
        ids[name] = int(value)
    vocabulary = []
    if callable(getattr(tokenizer, "get_vocabulary", None)):
        vocabulary = list(tokenizer.get_vocabulary())
    elif callable(getattr(tokenizer, "vocab_size", None)):  # tensorflow-text SentencepieceTokenizer
        vocabulary = [str(i) for i in range(int(tokenizer.vocab_size()))]
    found = fast_wordpiece(tokenizer, parts=True) if fast else None
    if found is None:
        return TokenizerSpec(_flat_ids(tokenizer.tokenize), ids["start"], ids["end"], ids["pad"], vocabulary, tokenizer)
    tokenize, fast_path, pattern = found
    return TokenizerSpec(_flat_ids(tokenize), ids["start"], ids["end"], ids["pad"], vocabulary, tokenizer,
                         _flat_ids(fast_path), pattern)


def wrap_start_end(ids: tf.RaggedTensor, start_id=CLS_ID, end_id=SEP_ID) -> tf.RaggedTensor:
    """``start ids end`` per row (``[CLS] ids [SEP]`` by default), built on the flat values.

    Same result as a ragged ``tf.concat`` of three columns, at about 1.6x the
    throughput of the whole tokenize stage (the ragged concat cost more than
    the WordPiece tokenizer itself: 58k -> 35k Reuters documents/s).
    """
    flat = ids.flat_values
    lengths = ids.row_lengths()
    new_lengths = lengths + 2
    starts = tf.cumsum(new_lengths, exclusive=True)
    values = tf.fill([tf.reduce_sum(new_lengths)], tf.constant(end_id, flat.dtype))  # the last slot of each row
    token_pos = tf.range(tf.size(flat, out_type=tf.int64)) + 2 * ids.value_rowids() + 1
    values = tf.tensor_scatter_nd_update(values, token_pos[:, None], flat)
    values = tf.tensor_scatter_nd_update(values, starts[:, None],
                                         tf.fill(tf.shape(starts), tf.constant(start_id, flat.dtype)))
    return tf.RaggedTensor.from_row_lengths(values, new_lengths, validate=False)
