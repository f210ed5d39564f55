"""A tiny KerasHub preset for the offline tests of ``--encoder`` and :mod:`fusedfocal.hub`: a 2-layer
BERT (hidden 32) with random weights and a WordPiece vocabulary learnt from the texts given, saved
as a local preset directory. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path


def tiny_preset(directory, texts, *, vocab_size=300, max_sequence_length=128, seed=0):
    """Writes the preset into ``directory`` and returns its path (a str)."""
    import keras
    import keras_hub

    from fusedfocal.data import build_wordpiece_vocab

    # Our learner's vocabulary starts with [PAD] [UNK] [CLS] [SEP] [MASK]: BERT's special tokens.
    vocab = build_wordpiece_vocab(texts, vocab_size, max_sample=2000, seed=0)
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=max_sequence_length)
    directory = Path(directory)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return str(directory)
