"""The load-balanced path against the same path without a load balancer, and the
load-balancer tier's CPU per GB served against HAProxy in TCP mode: one lab, one run.

The client is client1; the backend is vm3 (on hv2), behind a bench VIP 203.0.113.40 of one
backend (so both ends of every comparison are the same machines):

- lb: client1 -> VIP -> a Mux (hash, GRE) -> hv2's host agent (decap, conntrack DNAT) -> vm3;
  replies straight from hv2 (DSR).
- routed: client1 -> the same routers -> hv2's own address, through hv2's OVS (br-phy) to its
  kernel: no Mux, no tunnel, no NAT. (A VM has no routed address in this design: its only way
  in is the VIP, so the hypervisor that hosts it stands in for it.)
- haproxy: client1 -> HAProxy (Debian's, TCP mode) on hv2's address -> vm3 over br-int (the
  host agent's probe path): a proxy tier that carries both directions.

Measured: TCP throughput both ways (iperf3, median of rounds), request latency on new and on
kept-alive connections (HTTP, p50/p99), and CPU seconds per GB downloaded (iperf3 -R) of the
load-balancer tier: both Muxes' ovs-vswitchd for lb, the haproxy process for haproxy; the
hypervisor's ovs-vswitchd is reported beside each.

    .venv/bin/python bench/full_path.py [--seconds 5] [--rounds 3] [--download-mb 512]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.topologies import lab  # noqa: E402
from ananta.topologies.chaos import backend_address, pid_of  # noqa: E402
from bench.common import lab_plan, metric, percentile, write_result  # noqa: E402

VIP, IPERF_PORT, HTTP_PORT, HAPROXY_PORT = "203.0.113.40", 5201, 8080, 5202
CLIENT, BACKEND, HOST = "client1", "vm3", "hv2"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def popen_in(plan: lab.LabPlan, node: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", plan.nodes[node].namespace, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def servers(plan: lab.LabPlan) -> Iterator[dict[str, int]]:
    """iperf3 on vm3 and hv2, an HTTP server on hv2 (vm3 runs the lab's), HAProxy on hv2:
    started for the run, stopped by PID after it. Yields HAProxy's PID."""
    host_ip = str(plan.nodes[HOST].address_of("uplink"))
    cfg = os.path.join(lab.RUN_DIR, "bench-haproxy.cfg")
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write("global\n    maxconn 1000\n"
                 "defaults\n    mode tcp\n    timeout connect 5s\n"
                 "    timeout client 60s\n    timeout server 60s\n"
                 f"frontend bulk\n    bind {host_ip}:{HAPROXY_PORT}\n    default_backend vms\n"
                 f"backend vms\n    server {BACKEND} {backend_address(plan, BACKEND)}:"
                 f"{IPERF_PORT}\n")
    procs = [popen_in(plan, BACKEND, ["iperf3", "-s", "-p", str(IPERF_PORT)]),
             popen_in(plan, HOST, ["iperf3", "-s", "-p", str(IPERF_PORT)]),
             popen_in(plan, HOST, [sys.executable, "-m", "ananta.topologies.vmserver",
                                   "--name", HOST, "--port", str(HTTP_PORT)]),
             popen_in(plan, HOST, ["haproxy", "-db", "-f", cfg])]
    try:
        time.sleep(1)
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args!r}: exited with {p.returncode}")
        yield {"haproxy": procs[-1].pid}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        os.unlink(cfg)


@contextlib.contextmanager
def bench_vip(plan: lab.LabPlan) -> Iterator[None]:
    dip = backend_address(plan, BACKEND)
    vip = {"name": "bench-bulk", "tenant": "demo", "address": VIP, "endpoints": [
        {"protocol": "tcp", "port": port, "health_check": {"type": "none"},
         "backends": [{"address": dip, "port": backend_port}]}
        for port, backend_port in ((IPERF_PORT, IPERF_PORT), (80, HTTP_PORT))]}
    path = os.path.join(lab.RUN_DIR, "bench-bulk.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"vips": [vip]}, fh)  # (JSON is YAML)
    lab.api(plan, "apply", "-f", path, "--tenant", "demo")
    try:
        yield
    finally:
        lab.api(plan, "vip", "delete", "bench-bulk", "--tenant", "demo")
        os.unlink(path)


def iperf(plan: lab.LabPlan, target: str, port: int, *args: str) -> dict[str, float]:
    out = lab.ns_run(plan, CLIENT, ["iperf3", "-J", "-c", target, "-p", str(port), *args],
                     timeout=300)
    received = json.loads(out)["end"]["sum_received"]
    return {"mbps": received["bits_per_second"] / 1e6, "bytes": received["bytes"]}


def throughput(plan: lab.LabPlan, target: str, seconds: int, rounds: int,
               download: bool) -> list[float]:
    extra = ["-R"] if download else []
    return [iperf(plan, target, IPERF_PORT, "-t", str(seconds), *extra)["mbps"]
            for _ in range(rounds)]


def latencies(plan: lab.LabPlan, target: str, port: int, count: int,
              keepalive: bool) -> list[float]:
    argv = [sys.executable, "-m", "ananta.topologies.httpprobe", "--host", target,
            "--port", str(port), "--count", str(count), "--times"]
    result = json.loads(lab.ns_run(plan, CLIENT, argv + (["--keepalive"] if keepalive else []),
                                   timeout=300))
    if result["failures"]:
        raise RuntimeError(f"{target}:{port}: {result['failures'][:3]}")
    return list(result["times_ms"])


def cpu_per_gb(plan: lab.LabPlan, target: str, port: int, tier: list[int], megabytes: int,
               rounds: int) -> tuple[list[float], list[float]]:
    """CPU seconds per GB downloaded, of the tier's processes and of the host's OVS."""
    host_ovs = pid_of(HOST, "ovs-vswitchd")

    def tier_cpu() -> float:
        return sum(cpu_seconds(p) for p in tier)

    tier_runs, host_runs = [], []
    for _ in range(rounds):
        tier_before, host_before = tier_cpu(), cpu_seconds(host_ovs)
        gigabytes = iperf(plan, target, port, "-R", "-n", f"{megabytes}M")["bytes"] / 1e9
        tier_runs.append((tier_cpu() - tier_before) / gigabytes)
        host_runs.append((cpu_seconds(host_ovs) - host_before) / gigabytes)
    return tier_runs, host_runs


def compared(name: str, unit: str, value: list[float], baseline: list[float],
             goal: str | None, met: bool | None, reference: str) -> dict[str, Any]:
    return metric(name, statistics.median(value), unit, goal, met, reference,
                  baseline=round(statistics.median(baseline), 3), rounds=value,
                  baseline_rounds=baseline, baseline_label="routed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--download-mb", type=int, default=512)
    args = ap.parse_args()
    with lab_plan() as plan, bench_vip(plan), servers(plan) as pids:
        host_ip = str(plan.nodes[HOST].address_of("uplink"))
        muxes = [pid_of(m.name, "ovs-vswitchd") for m in plan.by_role("mux")]
        runs = {}
        for path, target in (("lb", VIP), ("routed", host_ip)):
            runs[f"{path}_up"] = throughput(plan, target, args.seconds, args.rounds, False)
            runs[f"{path}_down"] = throughput(plan, target, args.seconds, args.rounds, True)
            port = 80 if path == "lb" else HTTP_PORT
            runs[f"{path}_new"] = latencies(plan, target, port, args.requests, False)
            runs[f"{path}_kept"] = latencies(plan, target, port, args.requests, True)
        lb_cpu, lb_host = cpu_per_gb(plan, VIP, IPERF_PORT, muxes, args.download_mb,
                                     args.rounds)
        ha_cpu, ha_host = cpu_per_gb(plan, host_ip, HAPROXY_PORT, [pids["haproxy"]],
                                     args.download_mb, args.rounds)

    def ratio_met(value: list[float], baseline: list[float], floor: float) -> bool:
        return statistics.median(value) >= floor * statistics.median(baseline)

    metrics = [
        compared("full_path_upload", "Mbit/s", runs["lb_up"], runs["routed_up"], ">= 0.5x routed",
                 ratio_met(runs["lb_up"], runs["routed_up"], 0.5),
                 reference="Ananta: >100 Gbps for one VIP across Muxes; routed = the same "
                           "client and routers to the backend's hypervisor"),
        compared("full_path_download", "Mbit/s", runs["lb_down"], runs["routed_down"],
                 ">= 0.5x routed", ratio_met(runs["lb_down"], runs["routed_down"], 0.5),
                 reference="DSR: the reply bypasses the Mux"),
    ]
    for kind, label in (("new", "new connection"), ("kept", "kept-alive connection")):
        for q in (50, 99):
            lb, routed = runs[f"lb_{kind}"], runs[f"routed_{kind}"]
            metrics.append(metric(
                f"full_path_request_{kind}_p{q}", percentile(lb, q), "ms",
                baseline=percentile(routed, q), baseline_label="routed", requests=len(lb),
                reference=f"HTTP GET on a {label}; baseline: the same routed to the hypervisor"))
    lb_med, ha_med = statistics.median(lb_cpu), statistics.median(ha_cpu)
    metrics += [
        metric("lb_tier_cpu_s_per_gb", lb_med, "CPU-s/GB", "<= 0.25x HAProxy",
               lb_med <= 0.25 * ha_med, baseline=round(ha_med, 3), baseline_label="HAProxy",
               rounds=lb_cpu,
               baseline_rounds=ha_cpu,
               reference="HAProxy TCP mode here: 1.6-2.1 s/GB; a DSR-like OVS forwarder "
                         "~0.5 s/GB; both Muxes' ovs-vswitchd counted"),
        metric("haproxy_cpu_s_per_gb", ha_med, "CPU-s/GB", rounds=ha_cpu,
               reference="HAProxy TCP mode here: 1.6-2.1 s/GB"),
        metric("host_ovs_cpu_s_per_gb_lb", statistics.median(lb_host), "CPU-s/GB",
               rounds=lb_host, reference="the backend hypervisor's ovs-vswitchd, DSR path"),
        metric("host_ovs_cpu_s_per_gb_haproxy", statistics.median(ha_host), "CPU-s/GB",
               rounds=ha_host,
               reference="the same, when HAProxy on that hypervisor proxies to the VM"),
    ]
    write_result("full_path", metrics, distributions={
        "lb_new_ms": runs["lb_new"], "routed_new_ms": runs["routed_new"],
        "lb_kept_ms": runs["lb_kept"], "routed_kept_ms": runs["routed_kept"]})


if __name__ == "__main__":
    main()
