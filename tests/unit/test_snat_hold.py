"""The leader's hold of a VM's packets while its host waits for a SNAT block."""

from __future__ import annotations

import pytest

from ananta.controller.snat_hold import (
    HOLD_LIMIT_S,
    MAX_HELD_PER_DIP,
    REFUSED_HOLD_S,
    Decision,
    HeldPacket,
    HoldState,
    due,
    ipv4_source,
    on_committed,
    on_packet,
    on_refused,
)

pytestmark = pytest.mark.unit

DIP, HOST, DPID = "10.2.0.12", "hv2", 0x201


def frame(src: str) -> bytes:
    ip = bytes([0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0]) + bytes(map(int, src.split(".")))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + bytes([198, 51, 100, 2]) + b"\0" * 20


def held(state: HoldState, n: int, now: float = 0.0) -> tuple[HoldState, list[Decision]]:
    decisions = []
    for i in range(n):
        state, d = on_packet(state, DIP, HOST, DPID, HeldPacket(10, bytes([i])), now)
        decisions.append(d)
    return state, decisions


def test_the_first_packet_asks_and_the_rest_wait_behind_it() -> None:
    state, decisions = held(HoldState(), 3)
    assert decisions == [Decision.REQUEST, Decision.HELD, Decision.HELD]
    assert len(state.waits[DIP].packets) == 3


def test_packets_go_back_in_order_once_the_host_holds_the_block() -> None:
    state, _ = held(HoldState(), 3)
    state = on_committed(state, DIP, generation=7)
    # committed, but the host has not confirmed generation 7 yet
    state, release, dropped = due(state, {HOST: 6}, now=0.1)
    assert (release, dropped) == ([], 0)
    state, release, dropped = due(state, {HOST: 7}, now=0.2)
    assert [p.data for _, p in release] == [b"\0", b"\1", b"\2"]
    assert {dpid for dpid, _ in release} == {DPID} and dropped == 0
    assert DIP not in state.waits
    # the next packet that finds no port asks again
    assert on_packet(state, DIP, HOST, DPID, HeldPacket(10, b"x"), 0.3)[1] == Decision.REQUEST


def test_the_queue_is_bounded() -> None:
    _, decisions = held(HoldState(), MAX_HELD_PER_DIP + 5)
    assert decisions.count(Decision.DROPPED) == 5


def test_a_refused_request_drops_its_packets_and_turns_the_dip_away_for_a_while() -> None:
    state, _ = held(HoldState(), 4)
    state, dropped = on_refused(state, DIP, now=1.0)
    assert dropped == 4 and DIP not in state.waits
    assert on_packet(state, DIP, HOST, DPID, HeldPacket(10, b"x"), 1.5)[1] == Decision.DROPPED
    state, _, _ = due(state, {}, now=1.0 + REFUSED_HOLD_S + 0.1)
    assert on_packet(state, DIP, HOST, DPID, HeldPacket(10, b"x"),
                     1.0 + REFUSED_HOLD_S + 0.1)[1] == Decision.REQUEST


def test_nothing_is_held_past_the_limit() -> None:
    state, _ = held(HoldState(), 2, now=0.0)
    state, release, dropped = due(state, {HOST: 100}, now=HOLD_LIMIT_S + 0.1)  # never committed
    assert release == [] and dropped == 2 and not state.waits


def test_other_dips_are_independent() -> None:
    state, _ = held(HoldState(), 1)
    state, d = on_packet(state, "10.2.0.11", HOST, DPID, HeldPacket(11, b"y"), 0.0)
    assert d == Decision.REQUEST
    state, _ = on_refused(state, DIP, 0.0)
    assert "10.2.0.11" in state.waits


def test_ipv4_source() -> None:
    assert ipv4_source(frame("10.2.0.12")) == "10.2.0.12"
    assert ipv4_source(b"\0" * 12 + b"\x86\xdd" + b"\0" * 40) is None  # IPv6
    assert ipv4_source(b"\0" * 20) is None
