"""Tiers by folder: tests/unit -> `unit`, tests/cluster -> `cluster`, tests/ovs -> `ovs`,
tests/e2e -> `e2e` (the marker is added from the folder name)."""

from __future__ import annotations

import os

import pytest

TIERS = ("unit", "cluster", "ovs", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = os.path.relpath(str(item.fspath), os.path.dirname(__file__)).split(os.sep)
        if parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
