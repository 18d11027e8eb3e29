"""Manager scale: 10k VIPs x 10 backends in the replicated state.

Builds the state by applying real command envelopes (the same `apply_command` every replica
runs), then measures pysyncobj's own snapshot (log compaction to its full dump file) and a
restart restoring from it, and the process's resident memory. One Raft replica on loopback.
Then what the leader does for each config write at that scale, for 8 Muxes and 100 hosts:
compile every switch's program, and plan each switch's change from the program it holds
(against compiling everything afresh, the baseline).

    .venv/bin/python bench/manager_scale.py [--vips 10000] [--backends 10]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import shutil
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.controller.desired import desired_programs  # noqa: E402
from ananta.controller.flows import SwitchProgram  # noqa: E402
from ananta.controller.reconcile import plan_change  # noqa: E402
from ananta.controller.replication import Cluster, RaftSettings  # noqa: E402
from ananta.controller.state import ClusterState, Envelope, apply_command  # noqa: E402
from bench.common import metric, percentile, write_result  # noqa: E402


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
    ap.add_argument("--writes", type=int, default=20, help="config writes timed on the leader")
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
    ticks: list[float] = []  # when the Raft thread ticked: a gap is a stall (no heartbeats)

    def tick() -> None:
        ticks.append(time.monotonic())

    cluster.syncobj.addOnTickCallback(tick)
    time.sleep(0.5)
    t0 = time.monotonic()
    cluster.syncobj.forceLogCompaction()
    while not os.path.exists(dump) or os.path.getmtime(dump) < time.time() - 60:
        time.sleep(0.01)
    while cluster.syncobj.getStatus()["log_len"] > 2:  # compaction finished
        time.sleep(0.01)
    snapshot = time.monotonic() - t0
    time.sleep(0.5)
    cluster.syncobj.removeOnTickCallback(tick)
    stall = max(b - a for a, b in zip(ticks, ticks[1:], strict=False))
    size_mb = os.path.getsize(dump) / 1e6
    cluster.destroy()
    time.sleep(0.5)
    t0 = time.monotonic()
    restored = Cluster(settings)
    while restored.state.generation < generation:
        time.sleep(0.01)
    restore = time.monotonic() - t0
    assert len(restored.state.vips) == args.vips
    write_ms, full_s, compiled_rss = leader_writes(restored.state, dips, writes=args.writes)
    restored.destroy()
    shutil.rmtree(data_dir, ignore_errors=True)
    total_rss = rss_mb()
    label = f"{args.vips} VIPs x {args.backends} backends"
    write_result("manager_scale", [
        metric("state_build_seconds", build, "s", reference=f"apply_command for {label}"),
        metric("snapshot_seconds", snapshot, "s", goal="snapshot + restore < 2 s",
               met=snapshot + restore < 2.0),
        metric("restore_seconds", restore, "s", goal="snapshot + restore < 2 s",
               met=snapshot + restore < 2.0),
        metric("snapshot_size", size_mb, "MB"),
        metric("raft_stall_during_snapshot", stall * 1000, "ms",
               goal="< 150 ms (the shortest election timeout)", met=stall < 0.15,
               reference="the longest gap between the Raft thread's ticks, 0.5 s before the "
                         "snapshot to 0.5 s after: no heartbeat leaves the leader meanwhile"),
        metric("state_resident_memory", state_rss, "MB", goal="< 1024 MB",
               met=state_rss < 1024, reference="Ananta: 100k VIPs per instance"),
        metric("process_resident_memory", total_rss, "MB", goal="< 1024 MB",
               met=total_rss < 1024, reference="with the compiled programs of every switch"),
        metric("leader_compile_all_seconds", full_s, "s",
               reference="every switch's program compiled from nothing (a new leader)"),
        metric("leader_write_p50", percentile(write_ms, 50), "ms", baseline=round(full_s * 1000),
               reference="one weight write: apply, compile every switch, plan each one's "
                         "change", samples=len(write_ms)),
        metric("leader_write_p99", percentile(write_ms, 99), "ms", baseline=round(full_s * 1000)),
        metric("compiled_programs_memory", compiled_rss, "MB",
               reference="resident memory the compiled programs add"),
    ], scale=label)


def leader_writes(state: ClusterState, dips: list[str], writes: int,
                  ) -> tuple[list[float], float, float]:
    """Each write's apply + compile + plans (ms), the first compile (s), and the memory the
    compiled programs take (MB)."""
    def compile_all() -> dict[int, SwitchProgram]:
        return desired_programs(state.services(), state.inventory, frozenset(state.down),
                                dict(state.snat), dict(state.slot_tables))

    before = rss_mb()
    t0 = time.monotonic()
    held = compile_all()
    full = time.monotonic() - t0
    gc.freeze()
    compiled_rss = rss_mb() - before
    times = []
    for i in range(writes):
        j = i * 37 % len(state.vips)  # VIP j's first backend is dips[j * 7] (main)
        t0 = time.monotonic()
        result = apply_command(state, envelope({
            "op": "update_backend", "tenant": "default", "vip": f"v{j}", "protocol": "tcp",
            "port": 80, "address": dips[j * 7 % len(dips)], "weight": 101 + i % 2}))
        assert result["ok"], result
        programs = compile_all()
        gc.freeze()  # as the Manager does after compiling (app.GC_FREEZE_INTERVAL)
        # once per distinct pair of programs, as the Manager does (the Muxes share theirs)
        changes = {(id(held.get(dpid)), id(p)): (held.get(dpid, SwitchProgram()), p)
                   for dpid, p in programs.items()}
        plans = {key: plan_change(old, new) for key, (old, new) in changes.items()}
        times.append((time.monotonic() - t0) * 1000)
        assert any(not p.empty for p in plans.values())  # the Muxes' br-int at least
        held = programs
    return times, full, compiled_rss


if __name__ == "__main__":
    main()
