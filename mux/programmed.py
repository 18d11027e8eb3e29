"""What this Mux's OVS says about its service, read from br-phy's flow dump, and what the BGP
speaker should announce because of it (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ananta.controller.flows import COOKIE_TAG, FlowKind, parse_lease_cookie

_COOKIE = re.compile(r"\bcookie=(0x[0-9a-f]+)")
_DURATION = re.compile(r"\bduration=([0-9.]+)s")
_PACKETS = re.compile(r"\bn_packets=(\d+)")
_NW_DST = re.compile(r"\bnw_dst=(\d+\.\d+\.\d+\.\d+)\b")
_STEER = (COOKIE_TAG << 8) | int(FlowKind.VIP_STEER)


@dataclass(frozen=True)
class Lease:
    generation: int
    draining: bool
    age: float  # seconds since the leader last renewed it


@dataclass(frozen=True)
class PhyView:
    vips: frozenset[str]  # the VIPs br-phy steers into the load-balancing pipeline
    lease: Lease | None
    steer_packets: int  # packets the steering flows have taken (routers still sending?)


def read_phy_dump(text: str) -> PhyView:
    vips, lease, packets = set(), None, 0
    for line in text.splitlines():
        m = _COOKIE.search(line)
        if not m:
            continue
        cookie = int(m.group(1), 16)
        parsed = parse_lease_cookie(cookie)
        if parsed is not None:
            d = _DURATION.search(line)
            lease = Lease(parsed[0], parsed[1], float(d.group(1)) if d else float("inf"))
        elif cookie >> 48 == _STEER and (ip := _NW_DST.search(line)):
            vips.add(ip.group(1))
            if n := _PACKETS.search(line):
                packets += int(n.group(1))
    return PhyView(frozenset(vips), lease, packets)


# Extra copies of our AS on a draining Mux's routes. One is enough for every router above the
# Mux's leaf to prefer the other Muxes (their paths are shorter), and few enough that the leaf
# itself keeps its direct route (its way around, via a spine, is longer still): with more,
# the leaf turned to the spines while they still sent it the VIP's traffic, a micro-loop that
# cost a few requests (ICMP time exceeded) in about half of the drains.
DRAIN_PREPEND = 1


def routes_wanted(view: PhyView | None, failed_polls: int, failures_before_withdraw: int,
                  lease_timeout: float, quiet: bool = False, headless: bool = False,
                  ) -> tuple[frozenset[str], int] | None:
    """The VIPs to announce and the AS-path prepend to announce them with, or None to leave
    the announcements as they are (one failed read of OVS is not an outage). Nothing is
    announced while OVS cannot be read, or while the leader's lease is missing or older than
    `lease_timeout` (this Mux is not in step with the config) - unless `headless`: no
    Manager holds the OpenFlow master role on this Mux (the whole Manager cluster is down or
    electing), when the Mux serves on with the flows it has, as every other Mux does; only a
    live leader fences a Mux out. A draining Mux
    first announces with a longer AS path, so routers move to the other Muxes while this
    one still has a route (withdrawing at once makes its leaf drop packets until BGP
    converges), and withdraws once `quiet` (routers stopped sending)."""
    if view is None:
        return None if failed_polls < failures_before_withdraw else (frozenset(), 0)
    lease = view.lease
    if lease is None or (lease.age > lease_timeout and not headless):
        return frozenset(), 0
    if lease.draining:
        return (frozenset(), 0) if quiet else (view.vips, DRAIN_PREPEND)
    return view.vips, 0
