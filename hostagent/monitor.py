"""The host agent's health monitor (imperative shell): probe local backends, report changes.

Every 2 s it asks the Manager which backends of its VMs to probe, and how (GET
/api/v1/hosts/NAME/checks); it probes each at its interval (TCP connect or HTTP GET, from
the gateway address on br-int), runs each result through the pure state machine
(hostagent/probe.py), and reports every settled opinion that differs from the cluster's
(POST /api/v1/hosts/NAME/health): at once on a change, and again on the next poll if a
report was lost or the agent restarted.

A failed probe is evidence against the VM only if the host's own probe path (the br-int
flow from LOCAL to that VM) stood all the while it ran: when this host's OVS restarts, the
probes fail because the host is mending, not because its VMs are down, and reporting them
down would move every new connection off them and back a second later.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ananta.hostagent.manager_api import ManagerApi
from ananta.hostagent.probe import ProbeState, step

LOG = logging.getLogger("ananta.hostagent.health")
POLL_INTERVAL = 2.0
PATH_CHECK_INTERVAL = 0.25


@dataclass
class Target:
    address: str
    port: int
    check: dict[str, Any]
    cluster_down: bool
    state: ProbeState = field(default_factory=ProbeState)
    due: float = 0.0
    running: Future[bool] | None = None
    started: float = 0.0


def probe(address: str, port: int, check: dict[str, Any]) -> bool:
    timeout = min(check["timeout_ms"], check["interval_ms"]) / 1000
    try:
        if check["type"] == "http":
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
            try:
                conn.request("GET", check["path"], headers={"Connection": "close",
                                                            "User-Agent": "ananta-hostagent"})
                return conn.getresponse().status == check["expect_status"]
            finally:
                conn.close()
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


class HealthMonitor:
    def __init__(self, host: str, api: ManagerApi,
                 probe_paths: Callable[[], frozenset[str] | None] = lambda: None):
        self.host, self.call = host, api.call
        self.probe_paths = probe_paths  # VM addresses with a probe path now; None: no OVS
        self.paths: frozenset[str] | None = None
        self.paths_read_at = float("-inf")
        self.path_lost: dict[str, float] = {}  # address -> when its path was last missing
        self.targets: dict[str, Target] = {}
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
        self.next_poll = 0.0

    def start(self) -> None:
        threading.Thread(target=self.run, name="health-monitor", daemon=True).start()

    def poll_targets(self, now: float) -> None:
        wanted = self.call("GET", f"/api/v1/hosts/{self.host}/checks")
        keys = set()
        for t in wanted:
            key = f"{t['address']}:{t['port']}"
            keys.add(key)
            old = self.targets.get(key)
            if old is None:
                self.targets[key] = Target(t["address"], t["port"], t["check"], t["down"],
                                           due=now)
            else:
                old.check, old.cluster_down = t["check"], t["down"]
        for key in set(self.targets) - keys:
            del self.targets[key]

    def report(self) -> None:
        """Report every settled opinion the cluster does not share."""
        results = [{"address": t.address, "port": t.port, "up": bool(t.state.settled)}
                   for t in self.targets.values()
                   if t.state.settled is not None and t.state.settled == t.cluster_down]
        if not results:
            return
        self.call("POST", f"/api/v1/hosts/{self.host}/health", {"results": results})
        for t in self.targets.values():
            if t.state.settled is not None:
                t.cluster_down = not t.state.settled
        LOG.info("reported %s", ", ".join(
            f"{r['address']}:{r['port']} {'up' if r['up'] else 'DOWN'}" for r in results))

    def path_stood(self, t: Target, now: float) -> bool:
        """Whether the host's own probe path to `t` stood while its failed probe ran. OVS is
        asked only after a failed probe, and at most every PATH_CHECK_INTERVAL."""
        if now - self.paths_read_at >= PATH_CHECK_INTERVAL:
            self.paths, self.paths_read_at = self.probe_paths(), now
        if self.paths is None or t.address not in self.paths:
            self.path_lost[t.address] = now
            return False
        return self.path_lost.get(t.address, float("-inf")) < t.started - PATH_CHECK_INTERVAL

    def tick(self, now: float) -> None:
        if now >= self.next_poll:
            self.next_poll = now + POLL_INTERVAL
            self.poll_targets(now)
        changed = False
        for t in self.targets.values():
            if t.running is not None and t.running.done():
                ok = t.running.result()
                t.running = None
                if not ok and not self.path_stood(t, now):
                    continue  # the host's own path was down: no evidence about the VM
                before = t.state.settled
                t.state = step(t.state, ok, t.check["rise"], t.check["fall"])
                changed |= t.state.settled != before
            if t.running is None and now >= t.due:
                t.due = now + t.check["interval_ms"] / 1000
                t.started = now
                t.running = self.pool.submit(probe, t.address, t.port, t.check)
        if changed or any(t.state.settled is not None and t.state.settled == t.cluster_down
                          for t in self.targets.values()):
            self.report()

    def run(self) -> None:
        while True:
            try:
                self.tick(time.monotonic())
            except Exception as exc:  # keep monitoring; the Manager may be electing
                LOG.warning("health monitor: %s", exc)
                time.sleep(0.5)
            time.sleep(0.02)
