"""``fusedfocal.data``: multi-label text in, WordPiece ids and multi-hot labels out.

Files (JSON Lines, CSV, TSV, TFRecord; optionally gzip) or Python lists go in;
``tf.data`` batches of ``({"token_ids": int32 [B, T]}, float32 [B, C])`` come
out, for ``model.fit``, a custom loop or ``strategy.distribute_datasets_from_function``.

Example::

    from fusedfocal import data

    (train_x, train_y), (test_x, test_y) = data.synthetic_splits(seed=0)
    config = data.PipelineConfig(max_length=128, batch_size=32, vocab_size=2000)
    pipe = data.TextPipeline.from_training_data(config, train_x, train_y)
    train_ds = pipe.dataset(train_x, train_y, training=True)
    test_ds = pipe.dataset(test_x, test_y, training=False)

Special tokens have fixed ids: 0 ``[PAD]`` (padding), 1 ``[UNK]``, 2 ``[CLS]``,
3 ``[SEP]``, 4 ``[MASK]``.
"""

from fusedfocal.data._config import PipelineConfig
from fusedfocal.data._labels import LabelVocab
from fusedfocal.data._paths import REUTERS_ENV, reuters_dir
from fusedfocal.data._pipeline import TextPipeline
from fusedfocal.data._readers import Example, ReadStats, infer_format, read_records, resolve_paths, write_tfrecord
from fusedfocal.data._tokenizers import FOLD_SPLIT_RANGES, TokenizerSpec, fast_wordpiece, tokenizer_spec
from fusedfocal.data._synthetic import synthetic_corpus, synthetic_splits, write_jsonl
from fusedfocal.data._xmc import synthetic_xmc_corpus, synthetic_xmc_splits, xmc_label_names, xmc_label_vocab
from fusedfocal.data._wordpiece import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID,
                                        build_wordpiece_vocab, load_vocab, save_vocab)

__all__ = [
    "CLS_ID", "Example", "FOLD_SPLIT_RANGES", "LabelVocab", "MASK_ID", "PAD_ID", "PipelineConfig", "REUTERS_ENV", "ReadStats",
    "SEP_ID", "SPECIAL_TOKENS", "TextPipeline", "TokenizerSpec", "UNK_ID", "build_wordpiece_vocab", "fast_wordpiece", "infer_format",
    "load_vocab", "read_records", "resolve_paths", "reuters_dir", "save_vocab", "synthetic_corpus",
    "synthetic_splits", "synthetic_xmc_corpus", "synthetic_xmc_splits", "tokenizer_spec", "write_jsonl", "write_tfrecord",
    "xmc_label_names", "xmc_label_vocab",
]
