"""The documentation builds in strict mode: the API reference and the Markdown pages.

Runs the documented command, ``sphinx-build -W --keep-going -n -b html docs OUT``, in a
subprocess (about 15-20 s on 2 cores, most of it autodoc importing TensorFlow) and asserts
that it printed no warning: no broken cross-reference (nitpicky), no malformed
docstring, no public name without a docstring (``docs/_ext/apiref.py``), no link to a
missing page or file.

``OWNER_FIXES`` lists, one by one, the warnings that come from docstrings in files being
changed by others at the time this test was written, with the fix each needs. They are
tolerated only while they occur, each exactly: a new warning fails, and so does a listed
one that no longer occurs (delete its line; when the list is empty the build exits 0).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the docs extra (pip install -e '.[docs]')")
pytest.importorskip("myst_parser", reason="the docs extra (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_public_docstrings  # noqa: E402 - its OWNER_FIXES

# (where, what): two parts of one warning (where: None for any); each must still occur. Fix it
# in the file, then delete its line.
OWNER_FIXES = [
    # A public name without a docstring: tests/test_public_docstrings.py lists the same ones.
    *[(None, f"public name without a docstring: {name}") for name in test_public_docstrings.OWNER_FIXES],
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_docs_build_strict(tmp_path):
    warnings_file = tmp_path / "warnings.txt"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-w", str(warnings_file), "docs", str(tmp_path / "html")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    seconds = time.perf_counter() - start
    warnings = [w for w in warnings_file.read_text().splitlines() if re.search(r"(WARNING|ERROR|CRITICAL):", w)]

    def known(w, where, what):
        return (where is None or where in w) and what in w

    expected = [w for w in warnings if any(known(w, f, msg) for f, msg in OWNER_FIXES)]
    unexpected = [w for w in warnings if w not in expected]
    assert not unexpected, f"sphinx-build warned ({seconds:.0f} s):\n" + "\n".join(unexpected) + "\n" + proc.stderr[-3000:]
    fixed = [(f, msg) for f, msg in OWNER_FIXES if not any(known(w, f, msg) for w in warnings)]
    assert not fixed, f"fixed, so delete from OWNER_FIXES: {fixed}"
    assert proc.returncode == (1 if expected else 0), proc.stderr[-3000:]
    assert (tmp_path / "html" / "api" / "fusedfocal.keras.html").is_file()
    page = (tmp_path / "html" / "api" / "fusedfocal.data.html").read_text()
    assert 'id="fusedfocal.data.TextPipeline.dataset"' in page  # members are documented
    assert seconds < 120, f"the docs build took {seconds:.0f} s: CI's budget is about 60"


def _slug(heading):
    """GitHub's anchor for a Markdown heading (what MyST's heading anchors copy)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_readme_links_resolve():
    # The README is not a Sphinx page, so the strict build does not check its links: every
    # relative link must name a file that exists, and an anchor a heading in it.
    readme = ROOT / "README.md"
    text = re.sub(r"```.*?```", "", readme.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 20
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else readme
        assert target.exists(), f"README links to a missing file: {link}"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"README links to a missing heading: {link}"
