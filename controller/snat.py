"""SNAT port blocks (pure): which VIP ports each DIP's outbound connections leave from.

A DIP's outbound connections (to addresses outside the load balancer) leave its hypervisor
as VIP:port, the port taken by conntrack from the DIP's own blocks, so return traffic, which
routers send to a Mux like any traffic to the VIP, can be sent by the Mux to the right host
with one masked flow per block, and no state is shared between hosts.

Blocks are power-of-two aligned ranges of BLOCK_SIZE ports above 1023 on one VIP, never
overlapping a port that VIP serves. Every DIP gets a first block when it becomes a backend
(on the first of its VIPs, by tenant and name, with one free), and loses its blocks when it is
no longer a backend of their VIP. The allocation is part of the replicated state: every
replica computes the same blocks from the same log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SNAT_PORT_MIN = 1024
BLOCK_SIZE = 256
MAX_BLOCKS_PER_DIP = 8


@dataclass(frozen=True, order=True)
class SnatBlock:
    vip: str  # the VIP address the DIP's connections leave from
    start: int  # first port; a multiple of size
    size: int
    dip: str

    @property
    def end(self) -> int:
        return self.start + self.size - 1

    @property
    def mask(self) -> int:
        return 0xFFFF & ~(self.size - 1)


def first_free_block(used: Iterable[int], reserved_ports: Iterable[int],
                     size: int = BLOCK_SIZE) -> int | None:
    """The lowest aligned block start not in `used` and holding no `reserved_ports` (the
    VIP's own endpoint ports); None when the VIP's port space is exhausted."""
    taken = set(used)
    reserved = sorted(set(reserved_ports))
    start = -(-SNAT_PORT_MIN // size) * size
    while start + size <= 65536:
        if start not in taken and not any(start <= p < start + size for p in reserved):
            return start
        start += size
    return None


def blocks_by_dip(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[SnatBlock, ...]]:
    """DIP -> blocks, from the API's list (GET /api/v1/snat: dip, vip, start, end)."""
    out: dict[str, tuple[SnatBlock, ...]] = {}
    for r in rows:
        block = SnatBlock(r["vip"], r["start"], r["end"] - r["start"] + 1, r["dip"])
        out[r["dip"]] = (*out.get(r["dip"], ()), block)
    return out


def blocks_covering(blocks: Iterable[SnatBlock], vip: str, port: int) -> list[SnatBlock]:
    return [b for b in blocks if b.vip == vip and b.start <= port <= b.end]
