"""The Reuters recipe scripts (``scripts/reuters_*.sh``) cannot rot: the ``fusedfocal compare`` line of
each one parses with today's flags, and the settings the README and docs/results.md quote are the ones it runs.
(Running them needs the research-only Reuters data and minutes; ``test_ngram_recipe.py`` and
``test_optimizer.py`` train their recipes on the tiny synthetic corpus.)"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fusedfocal.cli.parser import build_parser

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _compare_argv(script):
    """The arguments after ``-m fusedfocal compare`` in ``script``, shell line continuations joined,
    with ``$REUTERS``/``$OUT`` filled in and ``"$@"`` dropped."""
    text = (SCRIPTS / script).read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "-m fusedfocal compare" in ln)
    argv = shlex.split(line.split("-m fusedfocal compare", 1)[1].replace('"$@"', ""))
    return [a.replace("$REUTERS", "/data/reuters").replace("$OUT", "/tmp/out") for a in argv]


CHOSEN = ("model", "max_length", "vocab_size", "epochs", "patience", "batch_size", "optimizer", "learning_rate",
          "ngram_hidden", "ngram_bigrams")


@pytest.mark.parametrize("script, expected", [
    ("reuters_svm.sh", {"model": "ngram", "ngram_hidden": 0, "losses": ["hinge"], "seeds": [0, 1, 2],
                        "groups": "huang"}),
    ("reuters_ngram.sh", {"losses": ["bce,focal,asl,db,la"], "seeds": [0, 1, 2], "groups": "huang"}),
    ("reuters_compare.sh", {"model": "cnn", "max_length": 128, "epochs": 7, "learning_rate": 3e-3}),
])
def test_recipe_script_parses_with_the_quoted_settings(script, expected):
    args = build_parser()[0].parse_args(["compare", *_compare_argv(script)])
    assert args.data == ["/data/reuters/train.jsonl.gz"] and args.eval == ["/data/reuters/test.jsonl.gz"]
    assert {k: getattr(args, k) for k in expected} == expected
    if script != "reuters_compare.sh":  # the tuned recipes give only their choices: the rest is chosen from the data
        assert args.val_size is None  # the default: 1000 held out, Huang et al.'s protocol
        assert {k: getattr(args, k) for k in CHOSEN if k not in expected} == {
            k: None for k in CHOSEN if k not in expected}
