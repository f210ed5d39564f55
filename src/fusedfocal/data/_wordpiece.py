"""WordPiece vocabulary: learn it from training texts, save and load it.

The vocabulary starts with fixed special tokens::

    0 [PAD]   padding; token_ids are padded with 0
    1 [UNK]   unknown word piece
    2 [CLS]   first token of every document (add_special_tokens=True)
    3 [SEP]   last token of every document
    4 [MASK]  reserved (masked-LM pre-training)

then single characters and word pieces (``##`` marks a suffix piece), as
produced by ``tensorflow_text.tools.wordpiece_vocab.bert_vocab_from_dataset``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "CLS_ID", "SEP_ID", "MASK_ID",
           "build_wordpiece_vocab", "save_vocab", "load_vocab"]

#: The reserved tokens, at ids 0-4 of every vocabulary: padding, unknown, start, end, mask.
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: The id of ``[PAD]``, what batches are padded with.
PAD_ID = 0
#: The id of ``[UNK]``, for a word that the vocabulary cannot spell.
UNK_ID = 1
#: The id of ``[CLS]``, which starts every token sequence.
CLS_ID = 2
#: The id of ``[SEP]``, which ends every token sequence.
SEP_ID = 3
#: The id of ``[MASK]`` (reserved).
MASK_ID = 4


def build_wordpiece_vocab(
    texts: Sequence[str],
    vocab_size: int = 8000,
    *,
    max_sample: int | None = 20000,
    seed: int = 0,
    lower_case: bool = True,
    learn_params: dict | None = None,
) -> list[str]:
    """Learns a WordPiece vocabulary with tensorflow-text's BERT vocab learner.

    The learner is pure Python: its time grows with the number of distinct
    words, so only a seeded random sample of ``max_sample`` texts is used
    (the learner takes about 20 s for Reuters train, 7,769 documents, at
    ``vocab_size=8000`` on 2 CPU cores; 1-3 s for the synthetic corpus). By
    default it runs 2 threshold-search iterations with ``lower_thresh=5``
    (the library's defaults, 4 and 10, are slower or coarser).

    Args:
      texts: Training texts.
      vocab_size: Upper bound on the vocabulary size, special tokens included
        (exceeded only if the characters alone need more).
      max_sample: Learn from at most this many texts (``None``: all).
      seed: Seed of the sample.
      lower_case: Lower-case + NFD + strip accents first; must match the
        tokenizer (``PipelineConfig.lower_case``).
      learn_params: Extra arguments of
        ``wordpiece_tokenizer_learner_lib.learn`` (e.g. ``num_iterations``).

    Returns:
      The tokens, ``SPECIAL_TOKENS`` first at ids 0-4.
    """
    import tensorflow as tf
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvd

    texts = list(texts)
    if not texts:
        raise ValueError("Expected at least one training text to learn a WordPiece vocabulary. Received: 0")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"Invalid value for argument `vocab_size`. Expected > {len(SPECIAL_TOKENS)}. Received: {vocab_size}")
    if max_sample is not None and len(texts) > max_sample:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=max_sample, replace=False))
        texts = [texts[i] for i in keep]
    params = {"lower_thresh": 5, "num_iterations": 2}
    params.update(learn_params or {})
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)).batch(512)
    vocab = bvd.bert_vocab_from_dataset(
        dataset, vocab_size=vocab_size, reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params={"lower_case": lower_case}, learn_params=params)
    return _cap(list(vocab), vocab_size)


def _cap(vocab: list[str], vocab_size: int) -> list[str]:
    """Cuts the rarest multi-character pieces until ``len(vocab) <= vocab_size``.

    The learner can overshoot ``vocab_size`` when its threshold search stops
    early. Special tokens and single characters (plain and ``##``) are always
    kept so every word stays tokenizable; they alone may exceed a tiny size.
    """
    if len(vocab) <= vocab_size:
        return vocab
    essential = set(SPECIAL_TOKENS) | {t for t in vocab if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    budget = max(vocab_size - len(essential), 0)
    out = []
    for token in vocab:  # the learner lists pieces by count, most frequent first
        if token in essential:
            out.append(token)
        elif budget > 0:
            out.append(token)
            budget -= 1
    return out


def save_vocab(tokens: Sequence[str], path: str | os.PathLike) -> Path:
    """Writes one token per line (UTF-8).

    Args:
      tokens: The vocabulary, id order.
      path: Output text file.

    Returns:
      The path written.
    """
    bad = [t for t in tokens if not t or "\n" in t or t != t.strip()]
    if bad:
        raise ValueError(f"Tokens must be non-empty, without surrounding white space or newlines. Received: {bad[:5]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def load_vocab(path: str | os.PathLike) -> list[str]:
    """Reads a vocabulary file written by :func:`save_vocab` (or a BERT ``vocab.txt``).

    Args:
      path: A text file, one token per line.

    Returns:
      The tokens in id order.

    Raises:
      ValueError: If the file does not start with the special tokens.
    """
    tokens = [line.rstrip("\r\n") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(
            f"{path}: expected the vocabulary to start with {list(SPECIAL_TOKENS)} at ids 0-4. "
            f"Received: {tokens[: len(SPECIAL_TOKENS)]}")
    return tokens
