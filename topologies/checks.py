"""End-to-end checks on a running lab (imperative shell), shared by `ananta demo` and tests.

`serve_check` sends HTTP requests from an outside client to a VIP and gathers the evidence:
which backend answered each request, how many packets each Mux's endpoint flow carried, and
how many packets with the VIP as source left each Mux and each hypervisor (captured on their
uplinks). Direct Server Return means: zero from every Mux, all replies from hypervisors.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ananta.controller.flows import FlowKind, kind_cookie
from ananta.topologies.lab import load_plan, ns_run, ovs_cmd_env
from ananta.topologies.spec import LabPlan

_N_PACKETS = re.compile(r"n_packets=(\d+)")


@dataclass
class ServeReport:
    vip: str
    sent: int
    served_by: dict[str, int]
    failures: list[str]
    latency_ms: dict[str, float | None]
    mux_endpoint_packets: dict[str, int] = field(default_factory=dict)
    vip_packets_leaving: dict[str, int] = field(default_factory=dict)

    @property
    def muxes_carrying(self) -> list[str]:
        return [m for m, n in self.mux_endpoint_packets.items() if n > 0]

    def dsr_ok(self, plan: LabPlan) -> bool:
        muxes = {m.name for m in plan.by_role("mux")}
        from_muxes = sum(n for node, n in self.vip_packets_leaving.items() if node in muxes)
        from_hosts = sum(n for node, n in self.vip_packets_leaving.items() if node not in muxes)
        return from_muxes == 0 and from_hosts > 0


def kind_packets(plan: LabPlan, mux: str, kind: FlowKind = FlowKind.VIP_ENDPOINT) -> int:
    """Packets through a Mux's br-int flows of one kind (our cookie's kind bits)."""
    out = ns_run(plan, mux, ["ovs-ofctl", "--no-names", "-O", "OpenFlow15", "dump-flows", "br-int",
                             f"cookie={kind_cookie(kind):#018x}/0xffff000000000000"],
                 env=ovs_cmd_env(mux))
    return sum(int(m.group(1)) for m in _N_PACKETS.finditer(out))


class UplinkCapture:
    """tcpdump on a node's uplink counting packets whose IP source is `address`."""

    def __init__(self, plan: LabPlan, node: str, address: str):
        self.node = node
        ns = plan.nodes[node].namespace
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", "uplink", "-nn", "-q", "-l",
             "--immediate-mode", "-Q", "out", f"ip src {address}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # tcpdump says "listening on" once it captures
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break

    def stop(self) -> int:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return len([line for line in out.splitlines() if line.strip()])


def serve_check(vip: str, count: int = 100, port: int = 80, client: str = "client1") -> ServeReport:
    plan, _ = load_plan()
    muxes = [m.name for m in plan.by_role("mux")]
    edge = muxes + [h.name for h in plan.by_role("hypervisor")]
    before = {m: kind_packets(plan, m) for m in muxes}
    captures = [UplinkCapture(plan, node, vip) for node in edge]
    try:
        out = ns_run(plan, client, [sys.executable, "-m", "ananta.topologies.httpprobe",
                                    "--host", vip, "--port", str(port), "--count", str(count)],
                     timeout=30 + count)
    finally:
        time.sleep(0.3)
        leaving = {c.node: c.stop() for c in captures}
    result = json.loads(out)
    after = {m: kind_packets(plan, m) for m in muxes}
    return ServeReport(
        vip=vip, sent=result["sent"], served_by=result["served_by"],
        failures=result["failures"], latency_ms=result["latency_ms"],
        mux_endpoint_packets={m: after[m] - before[m] for m in muxes},
        vip_packets_leaving=leaving)
