"""Fixtures for the runtime and host networking tests: throwaway network namespaces, images.

Every bridge, tap and guest address these tests make lives in a namespace created here and
deleted afterwards (also when a test fails); the root namespace is only ever read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import IMAGE_FILES, can_netns, delete_netns, find_images, make_netns


def pytest_configure(config: pytest.Config) -> None:
    """Register the `vm` marker (slow tests that boot real microVMs)."""
    config.addinivalue_line("markers", "vm: boots real microVMs; runs only with VIPER_E2E=1")


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace for one test, deleted afterwards with everything in it."""
    ok, why = can_netns()
    if not ok:
        pytest.skip(why)
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def images() -> Path:
    """The guest image directory, or skip the test with the reason."""
    found = find_images()
    if found is None:
        pytest.skip(
            "no guest image: build it with `viper images build` (or build/images/build.py) "
            "or point VIPER_IMAGES at a directory holding " + ", ".join(IMAGE_FILES)
        )
    return found


@pytest.fixture
def e2e() -> None:
    """Skip unless VIPER_E2E=1 (slow tests that boot real microVMs)."""
    if os.environ.get("VIPER_E2E") != "1":
        pytest.skip("set VIPER_E2E=1 to boot real microVMs")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
