"""Writes the synthetic XMC corpus (``fusedfocal.data.synthetic_xmc_splits``) as JSON Lines, for the
command line: ``python benchmarks/write_xmc_corpus.py OUT_DIR --labels 1000``
gives ``OUT_DIR/train.jsonl.gz`` and ``OUT_DIR/test.jsonl.gz`` (issue 28's corpus with 20 labels a document: mean_labels 25 less the duplicates)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None):
    from fusedfocal.data import synthetic_xmc_splits, write_jsonl

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--mean-labels", type=float, default=25.0)  # 19.9 labels a document after duplicates
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_xmc_splits(seed=a.seed, num_train=a.train, num_test=a.test, num_labels=a.labels,
                                       mean_labels=a.mean_labels)
    for name, (texts, labels) in (("train", train), ("test", test)):
        path = write_jsonl(out / f"{name}.jsonl.gz", texts, labels)
        per_doc = sum(len(ls) for ls in labels) / max(len(labels), 1)
        print(f"{path}: {len(texts)} documents, {per_doc:.1f} labels a document")


if __name__ == "__main__":
    main()
