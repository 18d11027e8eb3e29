"""The e2e tier shares one lab: brought up on first use (again if a test took it down), and
taken down after the last test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ananta.topologies import lab


@pytest.fixture(scope="session")
def lab_session() -> Iterator[None]:
    lab.down(say=lambda _: None)  # the tier owns the lab: start from nothing
    try:
        yield
    finally:
        lab.down(say=print)


@pytest.fixture
def running_lab(lab_session: None) -> None:
    if not lab.is_up():
        lab.up(None, None, timeout=120, say=print)
