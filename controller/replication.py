"""Raft replication of the Manager's state through pysyncobj (imperative shell).

`ReplicatedState` is a pysyncobj consumer whose one replicated method applies a command
envelope with the pure `apply_command`. pysyncobj forwards a command proposed on a follower
to the leader and calls back once it is committed and applied locally, so every replica can
take writes. Raft traffic is encrypted and authenticated with the cluster password.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON

from ananta.controller.state import ClusterState, Envelope, apply_command

LOG = logging.getLogger("ananta.manager.raft")

FAIL_REASONS = {v: k.lower() for k, v in vars(FAIL_REASON).items() if k.isupper()}


class NotCommitted(Exception):
    """The cluster could not commit the write (no quorum, no leader, timeout)."""


class ReplicatedState(SyncObjConsumer):
    def __init__(self) -> None:
        self.lock = threading.RLock()  # set before SyncObjConsumer: not replicated
        self.changed = threading.Condition(self.lock)
        super().__init__()
        self.state = ClusterState()  # set after: this is what Raft snapshots

    @replicated
    def execute(self, envelope: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            result = apply_command(self.state, Envelope.model_validate(envelope))
            self.changed.notify_all()
            return result


@dataclass(frozen=True)
class RaftSettings:
    self_address: str
    partners: tuple[str, ...]
    password: str
    data_dir: str


class Cluster:
    """One Manager replica's view of the Raft cluster."""

    def __init__(self, settings: RaftSettings):
        os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
        self.replicated = ReplicatedState()
        conf = SyncObjConf(
            password=settings.password,
            appendEntriesUseBatch=False,  # commit each write at once (~ms), not per batch
            raftMinTimeout=0.15, raftMaxTimeout=0.3, appendEntriesPeriod=0.03,
            connectionRetryTime=0.5, connectionTimeout=1.0,
            leaderFallbackTimeout=2.0,  # a leader cut off from the majority steps down
            commandsWaitLeader=True,
            journalFile=os.path.join(settings.data_dir, "raft.journal"),
            fullDumpFile=os.path.join(settings.data_dir, "raft.dump"),
            # A snapshot is written by a forked child from the state as it was at the fork:
            # written in the Raft thread, 10k VIPs' took it ~0.5 s, during which the leader
            # sent no heartbeat and the followers elected another (the shortest election
            # timeout is 0.15 s). The child only serializes (ClusterState.__getstate__:
            # JSON, zlib) and writes a file; it takes no lock another thread could hold.
            useFork=True,
            logCompactionMinEntries=20000, logCompactionMinTime=60,
        )
        self.syncobj = SyncObj(settings.self_address, list(settings.partners), conf,
                               consumers=[self.replicated])
        self.self_address = settings.self_address

    # --- reads (local replica) -------------------------------------------------------------

    @property
    def state(self) -> ClusterState:
        return self.replicated.state

    def status(self) -> dict[str, Any]:
        s = self.syncobj.getStatus()
        leader = s.get("leader")
        return {
            "self": self.self_address,
            "state": {0: "follower", 1: "candidate", 2: "leader"}.get(s["state"], "?"),
            "leader": str(leader) if leader is not None else None,
            "term": s["raft_term"],
            "commit_index": s["commit_idx"],
            "last_applied": s["last_applied"],
            "has_quorum": s["has_quorum"],
            "members": [self.self_address, *[str(n) for n in self.syncobj.otherNodes]],
            "generation": self.state.generation,
        }

    @property
    def is_leader(self) -> bool:
        return bool(self.syncobj._isLeader())

    @property
    def term(self) -> int:
        return int(self.syncobj.raftCurrentTerm)

    # --- writes ----------------------------------------------------------------------------

    def propose(self, command: dict[str, Any], timeout: float = 3.0,
                op_id: str | None = None) -> dict[str, Any]:
        """Commit one command through Raft and return its result, or raise NotCommitted."""
        envelope = {"op_id": op_id or uuid.uuid4().hex, "proposed_at": time.time(),
                    "command": command}
        Envelope.model_validate(envelope)  # refuse malformed commands before Raft sees them
        # Without a quorum (or a known leader) the command would wait in pysyncobj's queue and
        # could be applied long after the caller was told it failed: refuse it now instead.
        if not self.syncobj.hasQuorum or self.syncobj._getLeader() is None:
            raise NotCommitted("not committed: this replica has no quorum (or no leader)")
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def callback(result: Any, error: int) -> None:
            outcome["result"], outcome["error"] = result, error
            done.set()

        self.replicated.execute(envelope, callback=callback)
        if not done.wait(timeout):
            raise NotCommitted(f"not committed within {timeout:.1f} s (no quorum?)")
        if outcome["error"] != FAIL_REASON.SUCCESS:
            reason = FAIL_REASONS.get(outcome["error"], str(outcome["error"]))
            raise NotCommitted(f"not committed: {reason}")
        return dict(outcome["result"])

    def destroy(self) -> None:
        self.syncobj.destroy()
