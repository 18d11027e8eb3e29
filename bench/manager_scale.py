"""Manager scale: 10k VIPs x 10 backends in the replicated state.

Builds the state by applying real command envelopes (the same `apply_command` every replica
runs), then measures pysyncobj's own snapshot (log compaction to its full dump file) and a
restart restoring from it, and the process's resident memory. One Raft replica on loopback.

    .venv/bin/python bench/manager_scale.py [--vips 10000] [--backends 10]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.controller.replication import Cluster, RaftSettings  # noqa: E402
from ananta.controller.state import Envelope, apply_command  # noqa: E402
from bench.common import metric, write_result  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def inventory(hosts: int, vms_per_host: int) -> dict[str, object]:
    return {
        "vip_pool": ["100.64.0.0/16"],
        "muxes": [{"name": f"mux{i}", "underlay_address": f"198.18.0.{i}",
                   "datapath_ids": {"int": f"{0xA1000 + i:016x}", "phy": f"{0xA2000 + i:016x}"}}
                  for i in range(1, 9)],
        "hosts": [{"name": f"hv{h}", "underlay_address": f"198.18.{1 + h // 250}.{1 + h % 250}",
                   "datapath_ids": {"int": f"{0xB1000 + h:016x}", "phy": f"{0xB2000 + h:016x}"},
                   "vms": [{"name": f"vm{h}-{v}", "address": f"10.{h // 256}.{h % 256}.{10 + v}",
                            "mac": f"02:00:00:{h // 256:02x}:{h % 256:02x}:{v:02x}",
                            "ofport": 10 + v, "gateway": f"10.{h // 256}.{h % 256}.1"}
                           for v in range(vms_per_host)]} for h in range(hosts)],
    }


def envelope(command: dict[str, object]) -> Envelope:
    return Envelope.model_validate({"op_id": uuid.uuid4().hex, "proposed_at": time.time(),
                                    "command": command})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vips", type=int, default=10000)
    ap.add_argument("--backends", type=int, default=10)
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="ananta-scale-")
    settings = RaftSettings("127.0.0.1:17501", (), "bench-raft-password-0123", data_dir)
    base_rss = rss_mb()
    cluster = Cluster(settings)
    while not cluster.is_leader:
        time.sleep(0.05)
    inv = inventory(hosts=100, vms_per_host=10)
    dips = [vm["address"] for h in inv["hosts"] for vm in h["vms"]]  # type: ignore[index, union-attr]
    state = cluster.state
    t0 = time.monotonic()
    with cluster.replicated.lock:
        assert apply_command(state, envelope({"op": "set_inventory", "inventory": inv}))["ok"]
        pool = ipaddress.IPv4Network("100.64.0.0/16")
        for i in range(args.vips):
            backends = [{"address": dips[(i * 7 + k * 101) % len(dips)], "port": 8080,
                         "weight": 100} for k in range(args.backends)]
            vip = {"name": f"v{i}", "tenant": "default", "address": str(pool[i + 1]),
                   "endpoints": [{"protocol": "tcp", "port": 80, "backends": backends}]}
            result = apply_command(state, envelope({"op": "create_vip", "vip": vip}))
            assert result["ok"], result
    build = time.monotonic() - t0
    state_rss = rss_mb() - base_rss
    generation = state.generation
    # one command through Raft, so that there is an applied log entry to snapshot after
    cluster.propose({"op": "put_tenant", "tenant": {"name": "bench", "token_sha256": "0" * 64}})
    generation += 1
    dump = os.path.join(data_dir, "raft.dump")
    t0 = time.monotonic()
    cluster.syncobj.forceLogCompaction()
    while not os.path.exists(dump) or os.path.getmtime(dump) < time.time() - 60:
        time.sleep(0.01)
    while cluster.syncobj.getStatus()["log_len"] > 2:  # compaction finished
        time.sleep(0.01)
    snapshot = time.monotonic() - t0
    size_mb = os.path.getsize(dump) / 1e6
    cluster.destroy()
    time.sleep(0.5)
    t0 = time.monotonic()
    restored = Cluster(settings)
    while restored.state.generation < generation:
        time.sleep(0.01)
    restore = time.monotonic() - t0
    assert len(restored.state.vips) == args.vips
    restored.destroy()
    total_rss = rss_mb()
    label = f"{args.vips} VIPs x {args.backends} backends"
    write_result("manager_scale", [
        metric("state_build_seconds", build, "s", reference=f"apply_command for {label}"),
        metric("snapshot_seconds", snapshot, "s", goal="snapshot + restore < 2 s",
               met=snapshot + restore < 2.0),
        metric("restore_seconds", restore, "s", goal="snapshot + restore < 2 s",
               met=snapshot + restore < 2.0),
        metric("snapshot_size", size_mb, "MB"),
        metric("state_resident_memory", state_rss, "MB", goal="< 1024 MB",
               met=state_rss < 1024, reference="Ananta: 100k VIPs per instance"),
        metric("process_resident_memory", total_rss, "MB", goal="< 1024 MB",
               met=total_rss < 1024),
    ], scale=label)


if __name__ == "__main__":
    main()
