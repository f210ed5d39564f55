"""Session fixtures of the install tests, so the native op is compiled once
for all of them: a clean copy of the repository, its sdist (made by the
release code, ``build_support/release.py``), and one wheel built *from that
sdist* by ``pip wheel`` (pip's build isolation, the path a user's
``pip install fusedfocal-X.tar.gz`` takes), with ``FUSEDFOCAL_REQUIRE_NATIVE=1``.
test_wheel.py installs that wheel as built; test_release.py repairs it to a
manylinux tag, as ``scripts/release.sh`` does, and installs that.
"""

from __future__ import annotations

import pytest
import wheeltools


@pytest.fixture(scope="session")
def clean_copy(tmp_path_factory):
    return wheeltools.clean_copy(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="session")
def sdist(clean_copy, tmp_path_factory):
    return wheeltools.release.build_sdist(clean_copy, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="session")
def native_wheel(sdist, tmp_path_factory):
    """(wheel, pip's log, seconds): the one native build of the install tests."""
    wheel, log, took = wheeltools.release.build_wheel(sdist, tmp_path_factory.mktemp("wheel"),
                                                      env=wheeltools.env(FUSEDFOCAL_REQUIRE_NATIVE="1"))
    print(f"\n[install] wheel {wheel.name} built from {sdist.name} in {took:.0f} s")
    return wheel, log, took
