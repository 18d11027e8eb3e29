"""A Raft snapshot (pysyncobj's log compaction to its dump file) is written by a forked child
while the Raft thread keeps ticking, and a replica restarted from it has every object back.
One real replica on loopback, the Manager's own Cluster class, 5,000 VIPs: written in the
Raft thread, such a snapshot stalled it ~0.25 s (bench/manager_scale.py: 0.54 s at 10k),
longer than the shortest election timeout."""

from __future__ import annotations

import ipaddress
import os
import time
import uuid

from ananta.controller.replication import Cluster, RaftSettings
from ananta.controller.state import Envelope, apply_command
from tests.unit.fixtures import default_inventory, demo_services

VIPS = 5000


def test_a_snapshot_is_written_aside_and_restores_every_object(tmp_path: object) -> None:
    settings = RaftSettings("127.0.0.1:17601", (), "snapshot-test-password-0123", str(tmp_path))
    cluster = Cluster(settings)
    try:
        deadline = time.monotonic() + 10
        while not cluster.is_leader:
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.05)
        inventory = default_inventory().model_copy(update={"vip_pool": ["100.64.0.0/16"]})
        body = demo_services().vips[0].model_dump(mode="json")
        pool = ipaddress.IPv4Network("100.64.0.0/16")
        commands = [{"op": "set_inventory", "inventory": inventory.model_dump(mode="json")}] + [
            {"op": "create_vip", "vip": {**body, "name": f"v{i}", "tenant": "default",
                                         "address": str(pool[i + 1])}} for i in range(VIPS)]
        with cluster.replicated.lock:  # as if applied from the log (quicker than 5k commits)
            for command in commands:
                assert apply_command(cluster.state, Envelope.model_validate(
                    {"op_id": uuid.uuid4().hex, "proposed_at": 0.0, "command": command}))["ok"]
        # one committed entry after them, for the snapshot to cover
        cluster.propose({"op": "put_tenant", "tenant": {"name": "t", "token_sha256": "0" * 64}})
        before = cluster.state.__getstate__()
        ticks: list[float] = []
        cluster.syncobj.addOnTickCallback(lambda: ticks.append(time.monotonic()))
        time.sleep(0.3)
        cluster.syncobj.forceLogCompaction()
        deadline = time.monotonic() + 20
        while cluster.syncobj.getStatus()["log_len"] > 2:  # the child wrote it, it is taken
            assert time.monotonic() < deadline, "the snapshot was not written"
            time.sleep(0.01)
        time.sleep(0.3)
        assert os.path.exists(os.path.join(str(tmp_path), "raft.dump"))
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert gaps and max(gaps) < 0.15, f"the Raft thread stalled {max(gaps):.3f} s"
    finally:
        cluster.destroy()
    time.sleep(0.3)
    restored = Cluster(settings)
    try:
        deadline = time.monotonic() + 20
        while restored.state.generation < before["generation"]:
            assert time.monotonic() < deadline, "not restored"
            time.sleep(0.05)
        assert restored.state.__getstate__() == before
    finally:
        restored.destroy()
