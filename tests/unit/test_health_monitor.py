"""The host agent's health monitor: a failed probe counts only while the host's own probe
path stood (hostagent/monitor.py), so an OVS restart on the host reports no VM down."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ananta.hostagent import monitor

CHECK = {"type": "tcp", "interval_ms": 100, "timeout_ms": 50, "rise": 2, "fall": 2,
         "path": "/", "expect_status": 200}


class FakeApi:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        if method == "GET":
            return [{"address": "10.1.0.11", "port": 8080, "check": CHECK, "down": False}]
        self.reports.append(body)
        return {}


def run_monitor(paths: frozenset[str] | None, seconds: float) -> FakeApi:
    api = FakeApi()
    m = monitor.HealthMonitor("hv1", api, lambda: paths)  # type: ignore[arg-type]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m.tick(time.monotonic())
        time.sleep(0.01)
    return api


@pytest.fixture(autouse=True)
def failing_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "probe", lambda *_: False)


def test_failed_probes_over_a_standing_path_report_the_vm_down() -> None:
    api = run_monitor(frozenset({"10.1.0.11"}), 0.8)
    assert api.reports[:1] == [{"results": [{"address": "10.1.0.11", "port": 8080,
                                             "up": False}]}]


@pytest.mark.parametrize("paths", [None, frozenset({"10.1.0.12"})],
                         ids=["ovs-not-answering", "no-flow-to-this-vm"])
def test_failed_probes_without_a_path_report_nothing(paths: frozenset[str] | None) -> None:
    assert run_monitor(paths, 0.8).reports == []
