"""The compiled Mux and Host Agent pipelines, run in the flow-table interpreter."""

from __future__ import annotations

import ipaddress
from collections import Counter

import yaml

from ananta.bridges import (
    GATEWAY_MAC,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.config import parse_yaml_text
from ananta.controller.compile_host import (
    SNAT_WAIT_METER_BASE,
    T_SNAT_OUT,
    compile_host_int,
    compile_host_phy,
)
from ananta.controller.compile_mux import (
    FRAGMENT_METER_ID,
    TCP_SYN,
    chosen_dip,
    compile_mux_int,
    compile_mux_phy,
    endpoint_table,
    vip_zone,
)
from ananta.controller.desired import desired_programs
from ananta.controller.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    PORT_CONTROLLER,
    MeterAction,
    Output,
    ip_int,
)
from ananta.controller.model import Services
from tests.flowsim import NORMAL, Switch
from tests.unit.fixtures import default_inventory, demo_services, demo_services_text

VIP = "203.0.113.10"
CLIENT = "198.51.100.2"
ROUTER_MAC = "0a:00:00:00:00:fe"


def tcp(src: str, dst: str, sport: int, dport: int, **extra: object) -> dict[str, object]:
    return {"eth_type": ETH_TYPE_IP, "ip_proto": 6, "ipv4_src": src, "ipv4_dst": dst,
            "tcp_src": sport, "tcp_dst": dport, "eth_src": ROUTER_MAC,
            "eth_dst": "0a:00:00:00:00:01", **extra}


def mux_pair(services: Services) -> tuple[Switch, Switch]:
    inv = default_inventory()
    return Switch(compile_mux_phy(services)), Switch(compile_mux_int(services, inv))


def through_mux(services: Services, pkt: dict[str, object]) -> list[tuple[object, dict]]:
    phy, int_ = mux_pair(services)
    out = phy.receive(pkt, PHY_UPLINK_OFPORT)
    assert [port for port, _ in out] == [PHY_PATCH_OFPORT]
    return int_.receive(out[0][1], INT_PATCH_OFPORT)


def test_mux_spreads_new_connections_over_every_backend_by_gre_key() -> None:
    inv = default_inventory()
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    chosen: Counter[str] = Counter()
    for sport in range(20000, 22000):
        out = through_mux(demo_services(), tcp(CLIENT, VIP, sport, 80))
        assert len(out) == 1
        port, pkt = out[0]
        assert port == INT_GRE_OFPORT
        dip = next(d for d in host_of if ip_int(d) == pkt["tunnel_id"])
        assert pkt["tun_ipv4_dst"] == host_of[dip]
        assert pkt["ipv4_dst"] == VIP  # the Mux never rewrites the inner packet
        chosen[dip] += 1
    assert set(chosen) == {"10.1.0.11", "10.1.0.12", "10.2.0.11", "10.2.0.12"}
    assert min(chosen.values()) > 400  # 2000 flows, 4 equal weights


def test_mux_same_five_tuple_same_dip() -> None:
    a = through_mux(demo_services(), tcp(CLIENT, VIP, 40000, 80))
    b = through_mux(demo_services(), tcp(CLIENT, VIP, 40000, 80))
    assert a[0][1]["tunnel_id"] == b[0][1]["tunnel_id"]


def test_draining_and_zero_weight_backends_take_no_new_connections() -> None:
    data = yaml.safe_load(demo_services_text())
    backends = data["vips"][0]["endpoints"][0]["backends"]
    backends[0]["state"] = "draining"
    backends[1]["weight"] = 0
    services = parse_yaml_text(Services, yaml.safe_dump(data), "t")
    seen = {through_mux(services, tcp(CLIENT, VIP, p, 80))[0][1]["tunnel_id"]
            for p in range(1000, 1400)}
    assert seen == {ip_int("10.2.0.11"), ip_int("10.2.0.12")}
    # ... but the draining DIP's host keeps delivering its established connections.
    host = compile_host_int(services, default_inventory().hosts[0])
    assert any(f.owner.endswith(">10.1.0.11") for f in host.flows)


def test_mux_drops_vip_port_without_endpoint_and_passes_other_traffic() -> None:
    assert through_mux(demo_services(), tcp(CLIENT, VIP, 1234, 80))  # sanity
    phy, int_ = mux_pair(demo_services())
    out = phy.receive(tcp(CLIENT, VIP, 1234, 81), PHY_UPLINK_OFPORT)
    assert int_.receive(out[0][1], INT_PATCH_OFPORT) == []
    bgp = tcp("198.18.7.1", "198.18.7.2", 40000, 179)
    assert [p for p, _ in phy.receive(bgp, PHY_UPLINK_OFPORT)] == [NORMAL]


def host_switches(index: int = 0) -> tuple[Switch, Switch]:
    host = default_inventory().hosts[index]
    return Switch(compile_host_int(demo_services(), host)), Switch(compile_host_phy())


def test_host_decapsulates_dnats_and_returns_replies_directly() -> None:
    host = default_inventory().hosts[0]
    vm = host.vms[0]
    int_, phy = host_switches()
    inbound = tcp(CLIENT, VIP, 33333, 80, tunnel_id=ip_int(vm.address))
    out = int_.receive(inbound, INT_GRE_OFPORT)
    assert len(out) == 1
    port, pkt = out[0]
    assert port == vm.ofport
    assert (pkt["ipv4_dst"], pkt["tcp_dst"], pkt["eth_dst"], pkt["eth_src"]) == (
        vm.address, 8080, vm.mac, GATEWAY_MAC)
    assert (pkt["ipv4_src"], pkt["tcp_src"]) == (CLIENT, 33333)

    reply = tcp(vm.address, CLIENT, 8080, 33333, eth_src=vm.mac, eth_dst=GATEWAY_MAC)
    out = int_.receive(reply, vm.ofport)
    assert [p for p, _ in out] == [INT_PATCH_OFPORT]
    back = out[0][1]
    assert (back["ipv4_src"], back["tcp_src"], back["ipv4_dst"]) == (VIP, 80, CLIENT)

    # br-phy: no router MAC learned yet -> dropped; after ARP from the uplink -> to the router
    assert phy.receive(back, PHY_PATCH_OFPORT) == []
    arp = {"eth_type": ETH_TYPE_ARP, "eth_src": ROUTER_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff"}
    assert [p for p, _ in phy.receive(arp, PHY_UPLINK_OFPORT)] == [NORMAL]
    out = phy.receive(back, PHY_PATCH_OFPORT)
    assert [(p, pk["eth_dst"]) for p, pk in out] == [(PHY_UPLINK_OFPORT, ROUTER_MAC)]


def test_host_refuses_what_it_does_not_own() -> None:
    int_, _ = host_switches(0)
    other_host_dip = default_inventory().hosts[1].vms[0].address
    assert int_.receive(tcp(CLIENT, VIP, 1, 80, tunnel_id=ip_int(other_host_dip)),
                        INT_GRE_OFPORT) == []
    vm = default_inventory().hosts[0].vms[0]
    # a reply that conntrack never saw (not a DNATed connection) is not sent out
    assert int_.receive(tcp(vm.address, CLIENT, 8080, 4444), vm.ofport) == []
    # traffic from the VM on other ports is dropped
    assert int_.receive(tcp(vm.address, CLIENT, 22, 4444), vm.ofport) == []


def test_host_answers_the_vms_arp_for_its_gateway() -> None:
    vm = default_inventory().hosts[0].vms[1]
    int_, _ = host_switches(0)
    request = {"eth_type": ETH_TYPE_ARP, "arp_op": 1, "eth_src": vm.mac,
               "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_sha": vm.mac, "arp_spa": vm.address,
               "arp_tha": "00:00:00:00:00:00", "arp_tpa": vm.gateway}
    out = int_.receive(request, vm.ofport)
    assert len(out) == 1
    port, reply = out[0]
    assert port == vm.ofport
    assert reply["arp_op"] == 2
    assert (reply["arp_sha"], reply["arp_spa"]) == (GATEWAY_MAC, vm.gateway)
    assert (reply["arp_tha"], reply["arp_tpa"]) == (vm.mac, vm.address)
    assert (reply["eth_src"], reply["eth_dst"]) == (GATEWAY_MAC, vm.mac)


def test_every_switch_of_the_inventory_gets_a_program() -> None:
    inv = default_inventory()
    programs = desired_programs(demo_services(), inv)
    assert len(programs) == 2 * (len(inv.muxes) + len(inv.hosts))
    empty = desired_programs(Services(), inv)
    assert all(not p.groups for p in empty.values())


def test_two_vips_on_one_dip_share_the_reply_flow() -> None:
    data = yaml.safe_load(demo_services_text())
    second = dict(data["vips"][0], name="web2", address="203.0.113.11")
    data["vips"].append(second)
    services = parse_yaml_text(Services, yaml.safe_dump(data), "t")
    host = default_inventory().hosts[0]
    program = compile_host_int(services, host)  # would raise on a table/priority/match clash
    int_ = Switch(program)
    vm = host.vms[0]
    for vip, sport in (("203.0.113.10", 5000), ("203.0.113.11", 5001)):
        out = int_.receive(tcp(CLIENT, vip, sport, 80, tunnel_id=ip_int(vm.address)),
                           INT_GRE_OFPORT)
        assert out[0][1]["ipv4_dst"] == vm.address
        back = int_.receive(tcp(vm.address, CLIENT, 8080, sport), vm.ofport)
        assert back[0][1]["ipv4_src"] == vip


def test_host_agent_probes_its_vms_and_vms_cannot_reach_the_host() -> None:
    from ananta.controller.flows import PORT_LOCAL

    host = default_inventory().hosts[0]
    vm = host.vms[0]
    int_, _ = host_switches(0)
    probe = tcp(vm.gateway, vm.address, 41000, 8080, eth_src=GATEWAY_MAC, eth_dst=vm.mac)
    assert [p for p, _ in int_.receive(probe, PORT_LOCAL)] == [vm.ofport]
    answer = tcp(vm.address, vm.gateway, 8080, 41000, eth_src=vm.mac, eth_dst=GATEWAY_MAC)
    assert [p for p, _ in int_.receive(answer, vm.ofport)] == [PORT_LOCAL]
    # a connection the VM opens towards the hypervisor's address goes nowhere
    opened = tcp(vm.address, vm.gateway, 5555, 22, eth_src=vm.mac, eth_dst=GATEWAY_MAC)
    assert int_.receive(opened, vm.ofport) == []
    # ARP between the host and the VM
    who_has = {"eth_type": ETH_TYPE_ARP, "arp_op": 1, "arp_tpa": vm.address}
    assert [p for p, _ in int_.receive(who_has, PORT_LOCAL)] == [vm.ofport]
    is_at = {"eth_type": ETH_TYPE_ARP, "arp_op": 2, "arp_tpa": vm.gateway}
    assert [p for p, _ in int_.receive(is_at, vm.ofport)] == [PORT_LOCAL]


def test_a_connection_keeps_its_dip_when_the_backend_set_changes() -> None:
    inv = default_inventory()
    phy, int_ = mux_pair(demo_services())
    first: dict[int, int] = {}
    for sport in range(30000, 30200):
        out = phy.receive(tcp(CLIENT, VIP, sport, 80), PHY_UPLINK_OFPORT)
        first[sport] = int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"]
    zone = vip_zone(VIP)
    assert set(int_.conntrack.entries) == {zone}  # the VIP's zone
    assert len(int_.conntrack.entries[zone]) == 200  # one entry per connection
    # drain the DIP that took the first connection: new connections avoid it, live ones stay
    drained = next(be for be in demo_services().vips[0].endpoints[0].backends
                   if ip_int(be.address) == first[30000])
    data = yaml.safe_load(demo_services_text())
    for be in data["vips"][0]["endpoints"][0]["backends"]:
        if be["address"] == drained.address:
            be["state"] = "draining"
    int_.program = compile_mux_int(parse_yaml_text(Services, yaml.safe_dump(data), "t"), inv)
    for sport, dip in first.items():  # established: same DIP as before, for every one
        out = phy.receive(tcp(CLIENT, VIP, sport, 80), PHY_UPLINK_OFPORT)
        assert int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"] == dip
    for sport in range(40000, 40100):  # new: never the drained DIP
        out = phy.receive(tcp(CLIENT, VIP, sport, 80), PHY_UPLINK_OFPORT)
        assert int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"] != first[30000]


def test_a_connection_is_tracked_in_its_vips_zone_marked_with_its_dip() -> None:
    """The SYN commits the connection with its DIP as the mark; every later packet follows
    the mark. Each VIP has a zone of its own, so a SYN flood on one fills only its zone
    (whose limit, and the trust timeouts, are OVS's: tested in the ovs tier)."""
    services = demo_services()
    other = services.vips[0].model_copy(update={"name": "other", "address": "203.0.113.77"})
    services = Services(vips=[services.vips[0], other])
    phy, int_ = mux_pair(services)
    zones = {v.address: vip_zone(v.address) for v in services.vips}
    assert zones[VIP] != zones[other.address]

    def send(sport: int, flags: int, vip: str = VIP) -> int:
        out = phy.receive(tcp(CLIENT, vip, sport, 80, tcp_flags=flags), PHY_UPLINK_OFPORT)
        (port, pkt), = int_.receive(out[0][1], INT_PATCH_OFPORT)
        assert port == INT_GRE_OFPORT
        return int(pkt["tunnel_id"])

    dip = send(50000, TCP_SYN)
    key = (CLIENT, VIP, 6, 50000, 80)
    assert int_.conntrack.marks[(zones[VIP], key)] == dip
    assert send(50000, TCP_SYN) == dip  # a retransmitted SYN: hashed the same way
    for flags in (0x010, 0x018, 0x018, 0x011):
        assert send(50000, flags) == dip
    assert send(60000, TCP_SYN, other.address)
    for sport in range(51000, 51050):  # a flood on VIP
        send(sport, TCP_SYN)
    assert len(int_.conntrack.entries[zones[VIP]]) == 51
    assert len(int_.conntrack.entries[zones[other.address]]) == 1


def test_a_connection_whose_dip_left_is_hashed_to_a_live_one_and_marked_again() -> None:
    inv = default_inventory()
    phy, int_ = mux_pair(demo_services())

    def send(sport: int, flags: int) -> int:
        out = phy.receive(tcp(CLIENT, VIP, sport, 80, tcp_flags=flags), PHY_UPLINK_OFPORT)
        return int(int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"])

    old = send(53000, TCP_SYN)
    data = yaml.safe_load(demo_services_text())
    ep = data["vips"][0]["endpoints"][0]
    ep["backends"] = [be for be in ep["backends"] if ip_int(be["address"]) != old]
    int_.program = compile_mux_int(parse_yaml_text(Services, yaml.safe_dump(data), "t"), inv)
    new = send(53000, 0x010)
    assert new != old
    assert [send(53000, 0x018) for _ in range(3)] == [new] * 3


def test_a_new_connection_on_an_old_ones_5_tuple_never_follows_its_stale_entry() -> None:
    """An older connection's entries outlive it on a Mux that did not see its FIN. When the
    backend set has changed since, a new connection on the same 5-tuple hashes elsewhere:
    its SYN overwrites the stale entry, so its ACK and data go where the SYN went."""
    full = demo_services()
    fewer = full.model_copy(deep=True)
    added = fewer.vips[0].endpoints[0].backends.pop()
    inv = default_inventory()
    phy = Switch(compile_mux_phy(full))
    int_ = Switch(compile_mux_int(fewer, inv))

    def send(sport: int, flags: int) -> str:
        out = phy.receive(tcp(CLIENT, VIP, sport, 80, tcp_flags=flags), PHY_UPLINK_OFPORT)
        (port, pkt), = int_.receive(out[0][1], INT_PATCH_OFPORT)
        return str(ipaddress.IPv4Address(int(pkt["tunnel_id"])))

    table = endpoint_table(full.vips[0], full.vips[0].endpoints[0])
    sport = next(p for p in range(20000, 21000)
                 if chosen_dip(table, CLIENT, VIP, "tcp", p, 80) == added.address)
    old = [send(sport, flags) for flags in (TCP_SYN, 0x010, 0x018)]  # a trusted connection
    assert len(set(old)) == 1 and old[0] != added.address
    int_.program = compile_mux_int(full, inv)  # the backend added; the old entries stay
    assert [send(sport, flags) for flags in (TCP_SYN, 0x010, 0x018, 0x018)] == (
        [added.address] * 4)


def test_a_rate_limited_vip_has_a_meter_on_every_mux_in_front_of_its_endpoints() -> None:
    services = demo_services()
    limited = services.vips[0].model_copy(update={"rate_limit_pps": 2000})
    programs = desired_programs(Services(vips=[limited]), default_inventory())
    meters = [m for p in programs.values() for m in p.meters  # (no SNAT blocks: Muxes' only)
              if m.meter_id != FRAGMENT_METER_ID]
    assert len(meters) == 2 and {(m.rate_pps, m.burst) for m in meters} == {(2000, 200)}
    assert len({m.meter_id for m in meters}) == 1  # the same id on every Mux
    phy, int_ = Switch(compile_mux_phy(Services(vips=[limited]))), Switch(
        compile_mux_int(Services(vips=[limited]), default_inventory()))
    out = phy.receive(tcp(CLIENT, VIP, 41000, 80), PHY_UPLINK_OFPORT)
    assert int_.receive(out[0][1], INT_PATCH_OFPORT)[0][0] == INT_GRE_OFPORT
    assert int_.metered == {meters[0].meter_id: 1}
    unlimited = desired_programs(services, default_inventory())
    assert not any(m.meter_id != FRAGMENT_METER_ID for p in unlimited.values() for m in p.meters)


def test_a_new_connection_reusing_a_5_tuple_does_not_follow_a_stale_entry() -> None:
    """A SYN is always hashed again: after its backend left, a reused 5-tuple goes to a
    backend that is still there (not to the old entry's)."""
    inv = default_inventory()
    phy, int_ = mux_pair(demo_services())
    out = phy.receive(tcp(CLIENT, VIP, 52000, 80, tcp_flags=TCP_SYN), PHY_UPLINK_OFPORT)
    old = int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"]
    out = phy.receive(tcp(CLIENT, VIP, 52000, 80, tcp_flags=0x010), PHY_UPLINK_OFPORT)
    int_.receive(out[0][1], INT_PATCH_OFPORT)
    data = yaml.safe_load(demo_services_text())
    ep = data["vips"][0]["endpoints"][0]
    ep["backends"] = [be for be in ep["backends"] if ip_int(be["address"]) != old]
    int_.program = compile_mux_int(parse_yaml_text(Services, yaml.safe_dump(data), "t"), inv)
    out = phy.receive(tcp(CLIENT, VIP, 52000, 80, tcp_flags=TCP_SYN), PHY_UPLINK_OFPORT)
    assert int_.receive(out[0][1], INT_PATCH_OFPORT)[0][1]["tunnel_id"] != old


def test_a_vm_packet_that_finds_no_snat_port_goes_to_the_manager_through_its_own_meter(
        ) -> None:
    from ananta.controller.snat import SnatBlock

    host = default_inventory().hosts[0]
    snat = {vm.address: (SnatBlock(VIP, 4096 + 256 * i, 256, vm.address),)
            for i, vm in enumerate(host.vms)}
    program = compile_host_int(demo_services(), host, snat)
    waits = sorted((f for f in program.flows if f.table == T_SNAT_OUT
                    and Output(PORT_CONTROLLER) in f.actions), key=lambda f: f.match)
    assert [dict(f.match)["in_port"] for f in waits] == sorted(vm.ofport for vm in host.vms)
    meter_ids = {m.meter_id for m in program.meters}
    for f, vm in zip(waits, sorted(host.vms, key=lambda v: v.ofport), strict=True):
        assert f.actions == (MeterAction(SNAT_WAIT_METER_BASE + vm.ofport),
                             Output(PORT_CONTROLLER))
        assert SNAT_WAIT_METER_BASE + vm.ofport in meter_ids  # one meter per VM
    (default,) = [f for f in program.flows if f.table == T_SNAT_OUT and f.priority == 0]
    assert default.actions == ()  # anything else (not from a VM with blocks) is dropped


def test_a_vips_zone_depends_on_its_address_alone_and_is_one_of_the_muxs() -> None:
    from ananta.bridges import MUX_CT_ZONES

    addresses = [f"203.0.{i // 250}.{i % 250}" for i in range(3000)]
    zones = [vip_zone(a) for a in addresses]
    assert all(1 <= z <= MUX_CT_ZONES for z in zones)
    assert len(set(zones)) > 2000  # spread (3000 into 4096: ~2100 distinct expected)
    assert vip_zone("203.0.113.10") == vip_zone("203.0.113.10")
