"""The usage block of docs/xmc.md ("The Keras head, the data and the metrics") runs, at 512 labels."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import keras

DOC = Path(__file__).resolve().parents[1] / "docs" / "xmc.md"


def _block():
    text = DOC.read_text()
    section = text[text.index("## The Keras head, the data and the metrics"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_usage_block_runs_and_reports_xmc_metrics():
    code = _block()
    assert len(code.strip().splitlines()) < 15
    small = (code.replace("synthetic_xmc_splits(num_labels=131072)",
                          "synthetic_xmc_splits(num_labels=512, num_train=400, num_test=100)")
             .replace("epochs=3", "epochs=1, verbose=0").replace("training=False))", "training=False), verbose=0)"))
    assert small.count("512") == 1 and "verbose=0" in small
    keras.utils.set_random_seed(0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(small, str(DOC), "exec"), {})  # noqa: S102 - our own documentation
    printed = out.getvalue()
    for key in ("'p@1'", "'ndcg@5'", "'psp@5'"):
        assert key in printed, printed


def test_readme_shows_the_same_block():
    readme = (DOC.parents[1] / "README.md").read_text()
    assert "```python\n" + _block() + "```" in readme
