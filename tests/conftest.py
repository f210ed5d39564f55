"""Shared fixtures: execution modes and dtypes (helpers live in ``_testing``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _testing import DTYPES, MODES  # noqa: E402


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return tf.as_dtype(request.param)
