"""One Manager replica as the REST API sees it: Raft cluster + programming ledger (shell)."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from ananta.controller.ledger import ProgrammingLedger
from ananta.controller.mux_watch import MuxWatch
from ananta.controller.replication import Cluster
from ananta.controller.state import ClusterState, Operation


class ReplicaService:
    def __init__(self, cluster: Cluster, admin_token_sha256: str,
                 api_of_raft: dict[str, str], write_timeout: float = 3.0):
        self.cluster = cluster
        self.admin_token_sha256 = admin_token_sha256
        self.api_of_raft = api_of_raft  # raft address -> "host:port" of that replica's API
        self.write_timeout = write_timeout
        self.ledger = ProgrammingLedger()
        self.ledger_lock = threading.Lock()
        self.mux_watch = MuxWatch()  # what the leader's os-ken app learns from the Muxes
        # VM packets the leader held for a SNAT block: held, released (sent back), dropped
        self.snat_hold_counts = {"held": 0, "released": 0, "dropped": 0}
        self.counts_lock = threading.Lock()

    @property
    def state(self) -> ClusterState:
        return self.cluster.state

    def status(self) -> dict[str, Any]:
        return self.cluster.status()

    def propose(self, command: dict[str, Any], op_id: str) -> dict[str, Any]:
        return self.cluster.propose(command, timeout=self.write_timeout, op_id=op_id)

    def count_snat_hold(self, outcome: str, packets: int = 1) -> None:
        with self.counts_lock:
            self.snat_hold_counts[outcome] += packets

    def snat_hold_totals(self) -> dict[str, int]:
        with self.counts_lock:
            return dict(self.snat_hold_counts)

    def programmed_at(self, op: Operation) -> float | None:
        with self.ledger_lock:
            return self.ledger.programmed_at(op.generation, op.affected_nodes)

    def programmed_generations(self) -> dict[tuple[str, str], int]:
        with self.ledger_lock:
            return self.ledger.latest()

    def record_programmed(self, node: str, bridge: str, generation: int, when: float) -> None:
        with self.ledger_lock:
            self.ledger.record(node, bridge, generation, when)

    def relay_to_leader(self, path: str, token: str) -> tuple[int, Any] | None:
        leader = self.cluster.status()["leader"]
        api = self.api_of_raft.get(leader or "")
        if api is None:
            return None
        try:
            r = httpx.get(f"http://{api}{path}", headers={"Authorization": f"Bearer {token}"},
                          timeout=2.0)
        except httpx.HTTPError:
            return None
        return r.status_code, r.json()
