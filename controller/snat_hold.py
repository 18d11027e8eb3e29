"""Holding a VM's first packets while its host waits for a SNAT block (pure).

Ananta's host agent holds a connection's first packet while it asks the Manager for ports.
Here a VM's packet that finds no free SNAT port on its host's br-int goes to the Manager's
leader (a metered packet-in). The leader holds it, commits one more block for its DIP (the
replicated `request_snat_block` a host agent also sends), and once the host confirms it
holds that generation's flows, sends it back through br-int's pipeline (packet-out to table
0), where conntrack now finds a port: the connection waits for an allocation instead of a
TCP retransmission (1 s, then 3 s).

At most one request per DIP is in flight; its queue is bounded (MAX_HELD_PER_DIP); a refused
request (the DIP or its tenant at its cap, no room in the VIP's ports) drops what it held and
turns the DIP's packets away for REFUSED_HOLD_S; nothing is held longer than HOLD_LIMIT_S.
Dropped packets are what happened before: the VM retransmits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

MAX_HELD_PER_DIP = 64
HOLD_LIMIT_S = 2.0
REFUSED_HOLD_S = 1.0


@dataclass(frozen=True)
class HeldPacket:
    in_port: int
    data: bytes


@dataclass(frozen=True)
class DipWait:
    host: str
    dpid: int  # the host's br-int, where the packets go back
    since: float
    packets: tuple[HeldPacket, ...]
    generation: int | None = None  # committed at; None while the request is in flight


@dataclass(frozen=True)
class HoldState:
    waits: Mapping[str, DipWait] = field(default_factory=dict)
    refused_until: Mapping[str, float] = field(default_factory=dict)


class Decision(Enum):
    REQUEST = "request"  # held; ask for a block now
    HELD = "held"  # held behind a request already made
    DROPPED = "dropped"


def ipv4_source(frame: bytes) -> str | None:
    """The IPv4 source address of an Ethernet frame (no VLAN tag), or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    return str(ipaddress.IPv4Address(frame[26:30]))


def on_packet(state: HoldState, dip: str, host: str, dpid: int, packet: HeldPacket,
              now: float) -> tuple[HoldState, Decision]:
    if state.refused_until.get(dip, 0.0) > now:
        return state, Decision.DROPPED
    wait = state.waits.get(dip)
    if wait is None:
        wait = DipWait(host, dpid, now, (packet,))
        return replace(state, waits={**state.waits, dip: wait}), Decision.REQUEST
    if len(wait.packets) >= MAX_HELD_PER_DIP:
        return state, Decision.DROPPED
    wait = replace(wait, packets=(*wait.packets, packet))
    return replace(state, waits={**state.waits, dip: wait}), Decision.HELD


def on_committed(state: HoldState, dip: str, generation: int) -> HoldState:
    wait = state.waits.get(dip)
    if wait is None:
        return state
    return replace(state, waits={**state.waits, dip: replace(wait, generation=generation)})


def on_refused(state: HoldState, dip: str, now: float) -> tuple[HoldState, int]:
    """The request was refused (or failed): (new state, packets dropped)."""
    wait = state.waits.get(dip)
    waits = {d: w for d, w in state.waits.items() if d != dip}
    refused = {**state.refused_until, dip: now + REFUSED_HOLD_S}
    return HoldState(waits, refused), len(wait.packets) if wait else 0


def due(state: HoldState, confirmed: Mapping[str, int], now: float,
        ) -> tuple[HoldState, list[tuple[int, HeldPacket]], int]:
    """(new state, packets to send back as (dpid, packet), packets dropped): a DIP's packets go
    back once its host confirmed the generation its block was committed at; any held longer
    than HOLD_LIMIT_S are dropped. `confirmed`: host -> generation its br-int confirmed."""
    release: list[tuple[int, HeldPacket]] = []
    dropped = 0
    waits = {}
    for dip, wait in state.waits.items():
        if wait.generation is not None and confirmed.get(wait.host, -1) >= wait.generation:
            release += [(wait.dpid, p) for p in wait.packets]
        elif now - wait.since > HOLD_LIMIT_S:
            dropped += len(wait.packets)
        else:
            waits[dip] = wait
    refused = {d: t for d, t in state.refused_until.items() if t > now}
    return HoldState(waits, refused), release, dropped
