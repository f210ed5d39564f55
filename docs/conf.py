"""Sphinx configuration: the API reference from the docstrings, the Markdown guides as pages.

Build (from the repository root, with the ``docs`` extra installed)::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

``-n`` (nitpicky) makes every unresolved cross-reference a warning and ``-W`` makes
warnings errors. Only external names (TensorFlow, Keras, NumPy, the standard library)
are exempted below, by explicit patterns: intersphinx would need the network. Our own
names are never exempted; ``docs/_ext/apiref.py`` also fails the build for a public
name without a docstring. ``tests/test_docs_build.py`` runs this build in CI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # autodoc imports TensorFlow: keep its start-up quiet

import fusedfocal  # noqa: E402

project = "fusedfocal"
author = "the fusedfocal authors"
copyright = "the fusedfocal authors"  # noqa: A001 - Sphinx's name
release = fusedfocal.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "apiref",
    "repofiles",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "img/README.md"]
templates_path: list[str] = []

# Markdown (MyST): the guides stay plain GitHub Markdown; headings get GitHub-style
# anchors so that links such as cli.md#settings-chosen-from-the-data resolve.
myst_heading_anchors = 4
myst_enable_extensions = ["dollarmath"]

# autodoc + napoleon: the docstrings are Google style.
autodoc_typehints = "none"  # signatures as written; types are in the Args sections
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # an override of Keras' call/get_config without a docstring is left out
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False  # "Attributes:" become attribute entries, so :attr: references resolve

# Nitpicky: external names only, listed explicitly (no network, so no intersphinx).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(tf|tensorflow|tf_keras|keras|np|numpy|tensorflow_text)(\..*)?"),
    # the standard library
    (r"py:.*", r"(collections|os|pathlib|typing|dataclasses|json|io)\..*"),
]

html_theme = "alabaster"
html_title = f"fusedfocal {release}"
html_static_path: list[str] = []
