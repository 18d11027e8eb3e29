"""A single-node ManagerService for API tests: commands applied at once, no Raft."""

from __future__ import annotations

import threading
import time
from typing import Any

from ananta.controller.api import sha256
from ananta.controller.ledger import ProgrammingLedger
from ananta.controller.mux_watch import MuxWatch
from ananta.controller.replication import NotCommitted
from ananta.controller.state import ClusterState, Envelope, Operation, apply_command

ADMIN_TOKEN = "admin-token-0123456789abcdef"


class LocalService:
    def __init__(self) -> None:
        self.admin_token_sha256 = sha256(ADMIN_TOKEN)
        self._state = ClusterState()
        self.lock = threading.Lock()
        self.ledger = ProgrammingLedger()
        self.quorum = True
        self.mux_watch = MuxWatch()

    @property
    def state(self) -> ClusterState:
        return self._state

    def status(self) -> dict[str, Any]:
        return {"self": "local:1", "state": "leader", "leader": "local:1", "term": 1,
                "commit_index": self._state.generation, "last_applied": self._state.generation,
                "has_quorum": self.quorum, "members": ["local:1"],
                "generation": self._state.generation}

    def propose(self, command: dict[str, Any], op_id: str) -> dict[str, Any]:
        if not self.quorum:
            raise NotCommitted("not committed: this replica has no quorum (or no leader)")
        envelope = Envelope.model_validate({"op_id": op_id,
                                            "proposed_at": time.time(), "command": command})
        with self.lock:
            return apply_command(self._state, envelope)

    def programmed_at(self, op: Operation) -> float | None:
        return self.ledger.programmed_at(op.generation, op.affected_nodes)

    def programmed_generations(self) -> dict[tuple[str, str], int]:
        return self.ledger.latest()

    def snat_hold_totals(self) -> dict[str, int]:
        return {"held": 0, "released": 0, "dropped": 0}

    def relay_to_leader(self, path: str, token: str) -> tuple[int, Any] | None:
        return None
