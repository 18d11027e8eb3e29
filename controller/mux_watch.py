"""What the leader learns from the Muxes over OpenFlow, for the API: the counters of their
per-VIP flows, and whether a draining Mux still receives VIP traffic. Not replicated: a new
leader learns it again within a second. `now` is passed in (monotonic seconds)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ananta.controller.flows import FlowKind

DRAIN_QUIET = 2.0  # seconds without a packet on a draining Mux's VIP flows: drained

Counters = dict[tuple[int, str], tuple[int, int]]  # (flow kind, owner) -> (packets, bytes)


class MuxWatch:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (mux, bridge, flow kind asked for) -> counters: each request replaces its own
        self.counters: dict[tuple[str, str, int], Counters] = {}
        self.drain_since: dict[str, float] = {}  # mux -> when its lease first said draining
        self.steer_seen: dict[str, tuple[int, float, float]] = {}  # packets, changed, read at

    def record_lease(self, mux: str, draining: bool, now: float) -> None:
        with self.lock:
            if draining:
                self.drain_since.setdefault(mux, now)
            else:
                self.drain_since.pop(mux, None)

    def record_counters(self, mux: str, bridge: str, counters: Counters, now: float,
                        kind: int = -1) -> None:
        """The counters of the flows of `kind` on the Mux's bridge (-1: of the one request
        made of that bridge): they replace that request's last answer only (a bridge whose
        counters are asked kind by kind keeps every kind's)."""
        with self.lock:
            self.counters[(mux, bridge, kind)] = counters
            if bridge == "phy":
                packets = sum(p for (flow_kind, _), (p, _) in counters.items()
                              if flow_kind == FlowKind.VIP_STEER)
                last = self.steer_seen.get(mux)
                changed = now if last is None or last[0] != packets else last[1]
                self.steer_seen[mux] = (packets, changed, now)

    def drained(self, mux: str) -> bool | None:
        """Has a draining Mux stopped receiving VIP traffic (no packet for DRAIN_QUIET s,
        counted after its BGP withdrawal)? None when this replica does not know (not the
        leader, or the Mux is not draining)."""
        with self.lock:
            since, seen = self.drain_since.get(mux), self.steer_seen.get(mux)
        if since is None or seen is None:
            return None
        _, changed, read_at = seen
        quiet_from = max(since, changed)
        return read_at - quiet_from >= DRAIN_QUIET

    def all_counters(self) -> dict[tuple[str, str, int], Counters]:
        with self.lock:
            return dict(self.counters)


METER_DROPS = 0xFF  # not a flow kind: packets a VIP's meter dropped (owner: the VIP)
FRAGMENT_METER_OWNER = "fragments"  # the owner of the Mux's fragment meter's drops
FRAGMENT_METRIC = ("ananta_mux_fragments_packets",
                   "IP fragments to VIPs through the Mux agent, by step: steered to the agent, "
                   "first (placed by its 5-tuple), echoed (its DIP back to the agent), later "
                   "(tunnelled to the first's DIP), meter_dropped (over the fragment meter)",
                   "step")
FRAGMENT_STEPS = {"to-agent": "steered", "first": "first", "echo": "echoed", "later": "later"}

# (metric, help, label) for each kind of counted flow; "select:" owners count new connections
METRICS: dict[int, tuple[str, str, str]] = {
    FlowKind.VIP_STEER: ("ananta_vip", "to the VIP, arriving at the Mux", "vip"),
    FlowKind.VIP_ENDPOINT: ("ananta_endpoint", "to the endpoint (VIP:protocol:port)", "endpoint"),
    FlowKind.VIP_NO_ENDPOINT: ("ananta_vip_dropped", "to a VIP port with no endpoint, dropped",
                               "vip"),
    METER_DROPS: ("ananta_vip_rate_limited", "to the VIP dropped by its rate limit", "vip"),
}


def counter_samples(counters: Mapping[tuple[Any, ...], Counters],
                    ) -> dict[tuple[str, str, str], list[tuple[dict[str, str], int]]]:
    """Prometheus counter samples by (name, help, label kind): [(labels, value)]."""
    out: dict[tuple[str, str, str], list[tuple[dict[str, str], int]]] = {}
    fragments: dict[tuple[str, str], int] = {}  # (mux, step) -> packets
    for (mux, *_), by_flow in sorted(counters.items()):
        for (kind, owner), (packets, nbytes) in sorted(by_flow.items()):
            if kind == FlowKind.FRAGMENT or (kind, owner) == (METER_DROPS, FRAGMENT_METER_OWNER):
                step = ("meter_dropped" if kind == METER_DROPS
                        else FRAGMENT_STEPS.get(owner.split(":")[0]))
                if step is not None:
                    fragments[(mux, step)] = fragments.get((mux, step), 0) + packets
                continue
            if kind not in METRICS:
                continue
            base, what, label = METRICS[kind]
            if owner.startswith("select:"):
                out.setdefault((f"{base}_new_connections", f"New connections {what}", label),
                               []).append(({label: owner[7:], "mux": mux}, packets))
                continue
            labels = {label: owner, "mux": mux}
            out.setdefault((f"{base}_packets", f"Packets {what}", label), []).append(
                (labels, packets))
            if kind not in (FlowKind.VIP_NO_ENDPOINT, METER_DROPS):
                out.setdefault((f"{base}_bytes", f"Bytes {what}", label), []).append(
                    (labels, nbytes))
    for (mux, step), packets in sorted(fragments.items()):
        out.setdefault(FRAGMENT_METRIC, []).append(({"step": step, "mux": mux}, packets))
    return out
