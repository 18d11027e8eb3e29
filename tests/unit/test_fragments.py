"""IP fragments: the Mux agent's steering (pure) and the flows on both sides of it."""

from __future__ import annotations

import struct

import pytest

from ananta.bridges import INT_FRAG_OFPORT, INT_GRE_OFPORT, INT_PATCH_OFPORT
from ananta.config import parse_yaml_text
from ananta.controller.compile_host import T_FRAGMENT_IN, compile_host_int
from ananta.controller.compile_mux import STEERED_MAC, compile_mux_int
from ananta.controller.flows import ETH_TYPE_IP, FRAG_ANY, FRAG_LATER, Ct, FlowKind, ip_int
from ananta.controller.model import Services
from ananta.controller.snat import SnatBlock
from ananta.mux.fragments import FragmentSteering
from tests.flowsim import Switch
from tests.unit.fixtures import default_inventory, demo_services, demo_services_text

pytestmark = pytest.mark.unit

VIP, CLIENT = "203.0.113.10", "198.51.100.2"


def frame(eth_dst: bytes, ident: int, offset: int, more: bool, src: str = CLIENT,
          payload: bytes = b"x" * 64) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident,
                     (0x2000 if more else 0) | offset // 8, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, VIP.split("."))))
    return eth_dst + bytes.fromhex("0a0000000001") + b"\x08\x00" + ip + payload


def echo_of(first: bytes, dip: bytes) -> bytes:
    return b"\x02\xa8" + dip + b"\x02\xa8" + bytes(4) + first[12:]


STEERED = bytes.fromhex(STEERED_MAC.replace(":", ""))
DIP = bytes([10, 1, 0, 11])


def test_a_first_fragment_goes_straight_back_and_later_ones_wait_for_its_echo() -> None:
    s = FragmentSteering()
    first, later = frame(STEERED, 7, 0, True), frame(STEERED, 7, 1480, False)
    assert s.on_frame(later, 0.0) == []  # its first has not been placed yet: held
    assert s.on_frame(first, 0.1) == [first]
    out = s.on_frame(echo_of(first, DIP), 0.2)
    assert len(out) == 1 and out[0][:12] == b"\x02\xa8" + DIP + b"\x02\xa8" + bytes(4)
    assert out[0][12:] == later[12:]  # the IP packet itself is untouched
    again = frame(STEERED, 7, 2960, False)  # after the echo: sent at once
    assert s.on_frame(again, 0.3)[0][:12] == out[0][:12]
    assert (s.counts.first, s.counts.later, s.counts.held, s.counts.dropped) == (1, 2, 1, 0)


def test_datagrams_are_told_apart_by_source_and_ip_id() -> None:
    s = FragmentSteering()
    s.on_frame(frame(STEERED, 7, 1480, False), 0.0)
    s.on_frame(frame(STEERED, 8, 1480, False), 0.0)
    s.on_frame(frame(STEERED, 7, 1480, False, src="198.51.100.3"), 0.0)
    out = s.on_frame(echo_of(frame(STEERED, 8, 0, True), DIP), 0.1)
    assert len(out) == 1 and s.counts.held == 3


def test_fragments_whose_first_never_comes_back_are_dropped_after_the_hold() -> None:
    s = FragmentSteering(hold_s=2.0)
    s.on_frame(frame(STEERED, 9, 1480, True), 0.0)
    s.on_frame(frame(STEERED, 9, 2960, False), 1.0)
    assert s.expire(2.5) == 0  # refreshed by the second fragment
    assert s.expire(3.0) == 2 and not s.datagrams and s.counts.dropped == 2


def test_bounds_hold_no_more_than_configured() -> None:
    s = FragmentSteering(max_datagrams=2, max_held=1)
    for ident in range(3):
        s.on_frame(frame(STEERED, ident, 1480, True), 0.0)
    s.on_frame(frame(STEERED, 0, 2960, False), 0.0)
    assert len(s.datagrams) == 2 and s.counts.dropped == 2


def test_frames_that_are_not_steered_fragments_are_ignored() -> None:
    s = FragmentSteering()
    whole = frame(STEERED, 1, 0, False)  # not a fragment
    stray = frame(bytes(6), 1, 1480, False)  # not from the steering flow
    assert s.on_frame(whole, 0) == [] and s.on_frame(stray, 0) == []
    assert s.on_frame(b"\x00" * 20, 0) == [] and s.counts.ignored == 3


def udp(sport: int, **extra: object) -> dict[str, object]:
    return {"eth_type": ETH_TYPE_IP, "ip_proto": 17, "ipv4_src": CLIENT, "ipv4_dst": VIP,
            "udp_src": sport, "udp_dst": 53, "eth_src": "0a:00:00:00:00:fe",
            "eth_dst": "0a:00:00:00:00:01", **extra}


def udp_services() -> Services:
    text = demo_services_text().replace("protocol: tcp", "protocol: udp").replace(
        "port: 80", "port: 53")
    return parse_yaml_text(Services, text, "udp")


def test_every_fragment_of_a_datagram_leaves_the_mux_for_the_dip_of_its_5_tuple() -> None:
    """Through the compiled br-int: to the agent, back as a first fragment (placed as its
    5-tuple, echoed with its tunnel fields), then a later fragment with those fields."""
    for sport in range(40000, 40040):
        mux = Switch(compile_mux_int(udp_services(), default_inventory()))
        whole = mux.receive(udp(sport), INT_PATCH_OFPORT)
        assert [p for p, _ in whole] == [INT_GRE_OFPORT]
        mux = Switch(compile_mux_int(udp_services(), default_inventory()))
        first = udp(sport, ip_frag=FRAG_ANY)
        later = {k: v for k, v in udp(sport).items() if not k.startswith("udp_")}
        later["ip_frag"] = FRAG_ANY | FRAG_LATER
        for pkt in (first, later):  # both go to the agent, whatever their ports
            (port, steered), = mux.receive(pkt, INT_PATCH_OFPORT)
            assert port == INT_FRAG_OFPORT and steered["eth_dst"] == STEERED_MAC
        (gre, out), (agent, echo) = mux.receive(dict(first, eth_dst=STEERED_MAC),
                                                 INT_FRAG_OFPORT)
        assert (gre, agent) == (INT_GRE_OFPORT, INT_FRAG_OFPORT)
        assert mux.conntrack.entries == {}  # (OVS's conntrack would hold it for the rest)
        assert (out["tunnel_id"], out["tun_ipv4_dst"]) == (
            whole[0][1]["tunnel_id"], whole[0][1]["tun_ipv4_dst"])
        routed = dict(later, eth_dst=echo["eth_dst"], eth_src=echo["eth_src"])
        (port, sent), = mux.receive(routed, INT_FRAG_OFPORT)
        assert port == INT_GRE_OFPORT
        assert (sent["tunnel_id"], sent["tun_ipv4_dst"]) == (out["tunnel_id"],
                                                             out["tun_ipv4_dst"])


def test_a_first_fragment_of_snat_return_traffic_goes_to_the_blocks_dip() -> None:
    """Return traffic to a SNAT block, fragmented: its first fragment, back from the agent,
    takes the block's flow (not the hash, not conntrack) and is echoed with the DIP."""
    dip, host = "10.1.0.11", "198.18.9.2"
    snat = {dip: (SnatBlock(VIP, 4096, 256, dip),)}
    mux = Switch(compile_mux_int(udp_services(), default_inventory(), snat=snat))
    first = udp(53, ip_frag=FRAG_ANY, udp_dst=4100, eth_dst=STEERED_MAC)
    (gre, out), (agent, echo) = mux.receive(first, INT_FRAG_OFPORT)
    assert (gre, agent) == (INT_GRE_OFPORT, INT_FRAG_OFPORT)
    assert (out["tunnel_id"], out["tun_ipv4_dst"]) == (ip_int(dip), host)
    assert echo["eth_dst"] == "02:a8:0a:01:00:0b" and mux.conntrack.entries == {}


def test_a_later_fragment_from_the_agent_without_a_route_goes_nowhere() -> None:
    mux = Switch(compile_mux_int(udp_services(), default_inventory()))
    later = {k: v for k, v in udp(40000).items() if not k.startswith("udp_")}
    assert mux.receive(dict(later, ip_frag=FRAG_ANY | FRAG_LATER), INT_FRAG_OFPORT) == []


def test_host_commits_a_new_fragmented_connection_only_when_its_backend_port_is_unique() -> None:
    inv = default_inventory()
    host = inv.hosts[0]
    dip = host.vms[0].address

    def commits(services: Services) -> list[Ct]:
        program = compile_host_int(services, host)
        return [a for f in program.flows if f.table == T_FRAGMENT_IN
                and f.kind == FlowKind.FRAGMENT and ("tunnel_id", ip_int(dip)) in f.match
                for a in f.actions if isinstance(a, Ct) and a.commit]

    one = commits(demo_services())
    assert len(one) == 1 and one[0].nat is not None and one[0].nat.dst_port == 8080
    text = demo_services_text() + f"""      - protocol: tcp
        port: 81
        backends:
          - {{address: {dip}, port: 9090, weight: 100}}
"""
    assert commits(parse_yaml_text(Services, text, "two-ports")) == []
