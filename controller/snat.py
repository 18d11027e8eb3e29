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
MAX_BLOCKS_PER_DIP = 16  # 4,096 ports: one DIP cannot take a whole VIP's port space
GROWTH = MAX_BLOCKS_PER_DIP  # a first block starts this many free blocks when it can: all of
# a DIP's blocks then make one port range (several ranges share new connections by source
# port, and one that fills while the others do not starves its share until ports free up)
RANGE_BINS = 16  # several port ranges share new connections in this many source-port bins
MAX_BLOCKS_PER_TENANT = 2048  # every DIP of one tenant, all its VIPs


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
                     size: int = BLOCK_SIZE, after: int | None = None) -> int | None:
    """The lowest aligned block start not in `used` and holding no `reserved_ports` (the
    VIP's own endpoint ports). An extra block prefers the one right after `after` (so a
    DIP's blocks make one range); a first block (`after` None) prefers the start of GROWTH
    free blocks in a row, leaving its DIP room to grow in one range. None when the VIP's
    port space is exhausted."""
    taken = set(used)
    reserved = sorted(set(reserved_ports))

    def free(start: int) -> bool:
        return (start >= SNAT_PORT_MIN and start + size <= 65536 and start not in taken
                and not any(start <= p < start + size for p in reserved))

    if after is not None and free(after + size):
        return after + size
    base = -(-SNAT_PORT_MIN // size) * size
    if after is None:
        run = GROWTH * size
        for start in range(-(-base // run) * run, 65536 - run + 1, run):
            if all(free(start + i * size) for i in range(GROWTH)):
                return start
    start = base
    while start + size <= 65536:
        if free(start):
            return start
        start += size
    return None


def range_bins(ranges: list[tuple[int, int]]) -> list[int]:
    """For each of RANGE_BINS source-port bins, the index of the port range its new
    connections take: bins in proportion to the ranges' sizes (largest remainder, at least
    one each), so the ranges fill at the same pace."""
    sizes = [hi - lo + 1 for lo, hi in ranges]
    total = sum(sizes)
    quotas = [RANGE_BINS * s / total for s in sizes]
    counts = [max(1, int(q)) for q in quotas]
    order = sorted(range(len(ranges)), key=lambda i: (-(quotas[i] - int(quotas[i])), i))
    i = 0
    while sum(counts) < RANGE_BINS:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > RANGE_BINS:  # (more ranges than bins cannot happen: 16 blocks max)
        counts[counts.index(max(counts))] -= 1
    return [i for i, c in enumerate(counts) for _ in range(c)]


def port_ranges(blocks: Iterable[SnatBlock]) -> list[tuple[int, int]]:
    """The DIP's blocks as maximal ranges of consecutive ports (first, last)."""
    out: list[tuple[int, int]] = []
    for b in sorted(blocks, key=lambda b: b.start):
        if out and out[-1][1] + 1 == b.start:
            out[-1] = (out[-1][0], b.end)
        else:
            out.append((b.start, b.end))
    return out


def blocks_by_dip(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[SnatBlock, ...]]:
    """DIP -> blocks, from the API's list (GET /api/v1/snat: dip, vip, start, end)."""
    out: dict[str, tuple[SnatBlock, ...]] = {}
    for r in rows:
        block = SnatBlock(r["vip"], r["start"], r["end"] - r["start"] + 1, r["dip"])
        out[r["dip"]] = (*out.get(r["dip"], ()), block)
    return out


def blocks_covering(blocks: Iterable[SnatBlock], vip: str, port: int) -> list[SnatBlock]:
    return [b for b in blocks if b.vip == vip and b.start <= port <= b.end]
