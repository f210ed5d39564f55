"""PEP 517 build backend: setuptools, plus TensorFlow as a build requirement
only when the target environment has none.

The native op is compiled by ``setup.py``'s ``build_ext`` against the
TensorFlow the package will run with (``native_build.tf_config``). Under
pip's default build isolation the backend still runs on the target
interpreter, so an installed TensorFlow is found by path, without importing
it (as deepmd-kit's backend does), and nothing is downloaded; only a target
without TensorFlow gets the pinned one installed into the build environment.
"""

from setuptools import build_meta as _orig
from setuptools.build_meta import (  # noqa: F401 - re-exported hooks
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

import native_build


def get_requires_for_build_wheel(config_settings=None):
    return _orig.get_requires_for_build_wheel(config_settings) + native_build.build_requirements()


def get_requires_for_build_editable(config_settings=None):
    return _orig.get_requires_for_build_editable(config_settings) + native_build.build_requirements()
