"""The host agent's SNAT decisions: read usage from conntrack, ask, give back."""

from __future__ import annotations

from ananta.controller.snat import SnatBlock
from ananta.hostagent.snat_usage import (
    RELEASE_AFTER_S,
    Release,
    Request,
    decide,
    snat_ports_in_use,
)

DIP, VIP = "10.1.0.11", "203.0.113.10"
DUMP = """\
tcp,orig=(src=10.1.0.11,dst=198.51.100.2,sport=40000,dport=9000),reply=(src=198.51.100.2,dst=203.0.113.10,sport=9000,dport=1030),zone=10,protoinfo=(state=TIME_WAIT)
tcp,orig=(src=198.51.100.2,dst=203.0.113.10,sport=5555,dport=80),reply=(src=10.1.0.11,dst=198.51.100.2,sport=8080,dport=5555),zone=10,protoinfo=(state=ESTABLISHED)
udp,orig=(src=10.1.0.11,dst=198.51.100.9,sport=5353,dport=53),reply=(src=198.51.100.9,dst=203.0.113.10,sport=53,dport=1290),zone=10
tcp,orig=(src=10.1.0.11,dst=10.1.0.1,sport=1,dport=2),reply=(src=10.1.0.1,dst=10.1.0.11,sport=2,dport=1),zone=1
"""


def test_snat_connections_are_read_from_conntrack() -> None:
    """Only outbound connections NATed to another address count (not inbound DNAT ones)."""
    assert snat_ports_in_use(DUMP, {DIP}) == {DIP: [1030, 1290]}
    assert snat_ports_in_use(DUMP, {"10.1.0.12"}) == {}


def block(start: int) -> SnatBlock:
    return SnatBlock(VIP, start, 256, DIP)


def test_a_dip_asks_at_three_quarters_and_once_at_a_time() -> None:
    blocks = {DIP: (block(1024),)}
    idle: dict[tuple[str, int], float] = {}
    assert decide(blocks, {DIP: list(range(1024, 1024 + 191))}, idle, set(), 0.0) == []
    busy = {DIP: list(range(1024, 1024 + 192))}
    assert decide(blocks, busy, idle, set(), 0.0) == [Request(DIP)]
    assert decide(blocks, busy, idle, {DIP}, 0.0) == []  # a request is in flight


def test_an_idle_extra_block_is_given_back_never_the_first() -> None:
    blocks = {DIP: (block(1024), block(1280))}
    idle: dict[tuple[str, int], float] = {}
    assert decide(blocks, {DIP: [1030]}, idle, set(), 0.0) == []
    assert decide(blocks, {DIP: [1030]}, idle, set(), RELEASE_AFTER_S - 1) == []
    assert decide(blocks, {DIP: [1030]}, idle, set(), RELEASE_AFTER_S) == [Release(DIP, 1280)]
    # a block in use is not idle; nor is anything given back while the DIP is busy
    idle.clear()
    assert decide(blocks, {DIP: [1300]}, idle, set(), 0.0) == []
    assert decide(blocks, {DIP: [1300]}, idle, set(), 2 * RELEASE_AFTER_S) == []
    assert decide({DIP: (block(1024),)}, {}, idle, set(), 10 * RELEASE_AFTER_S) == []
