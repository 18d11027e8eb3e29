"""How full each SNAT block of this host's DIPs is, and what the agent asks the Manager for
(pure).

The agent reads the userspace conntrack table (`ovs-appctl dpctl/dump-conntrack`): an entry
whose original source is a DIP and whose reply goes to another address (the VIP) is a SNAT
connection, holding the reply's destination port. When a DIP uses REQUEST_AT of its ports it
asks for one more block (one request at a time per DIP: Ananta's fairness, a DIP that asks
in a loop gets no more than one that asks once); an extra block that held no connection for
RELEASE_AFTER_S is given back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ananta.controller.snat import SnatBlock, port_ranges

REQUEST_AT = 0.75
RELEASE_AFTER_S = 60.0

_ENTRY = re.compile(r"orig=\(src=([\d.]+),dst=[\d.]+,sport=\d+,dport=\d+\),"
                    r"reply=\(src=[\d.]+,dst=([\d.]+),sport=\d+,dport=(\d+)\)")


def snat_ports_in_use(dump: str, dips: set[str]) -> dict[str, list[int]]:
    """DIP -> the SNAT ports its connections hold, from a conntrack dump."""
    out: dict[str, list[int]] = {}
    for m in _ENTRY.finditer(dump):
        src, reply_dst, port = m.group(1), m.group(2), int(m.group(3))
        if src in dips and reply_dst != src:
            out.setdefault(src, []).append(port)
    return out


@dataclass(frozen=True)
class Request:
    dip: str


@dataclass(frozen=True)
class Release:
    dip: str
    start: int


def decide(blocks: Mapping[str, tuple[SnatBlock, ...]], in_use: Mapping[str, list[int]],
           idle_since: dict[tuple[str, int], float], pending: set[str],
           now: float) -> list[Request | Release]:
    """What to ask for now. `idle_since` ((dip, block start) -> when it was last seen empty)
    is updated in place; `pending`: DIPs with a request in flight."""
    actions: list[Request | Release] = []
    for dip, dip_blocks in sorted(blocks.items()):
        ports = in_use.get(dip, [])
        capacity = sum(b.size for b in dip_blocks)
        # any one range filling counts: new connections are shared between ranges by source
        # port, so a full range fails its share even while the others have room
        fullest = max((sum(1 for p in ports if lo <= p <= hi) / (hi - lo + 1)
                       for lo, hi in port_ranges(dip_blocks)), default=0.0)
        if fullest >= REQUEST_AT and dip not in pending:
            actions.append(Request(dip))
            continue
        for b in dip_blocks:
            key = (dip, b.start)
            if any(b.start <= p <= b.end for p in ports):
                idle_since.pop(key, None)
                continue
            since = idle_since.setdefault(key, now)
            rest = capacity - b.size
            if (len(dip_blocks) > 1 and b is not dip_blocks[0] and now - since >= RELEASE_AFTER_S
                    and len(ports) < REQUEST_AT * rest / 2):
                actions.append(Release(dip, b.start))
                break  # one at a time
    live = {(d, b.start) for d, bs in blocks.items() for b in bs}
    for key in list(idle_since):
        if key not in live:
            del idle_since[key]
    return actions
