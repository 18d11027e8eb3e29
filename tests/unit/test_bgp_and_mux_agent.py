"""ExaBGP commands and config; what the Mux agent reads from its flow dump."""

from __future__ import annotations

import pytest

from ananta.bgp.commands import BgpPeer, announce, exabgp_config, route_changes, withdraw
from ananta.config import InvalidConfig, parse
from ananta.controller.flows import lease_cookie, parse_lease_cookie
from ananta.mux.config import MuxConfig
from ananta.mux.programmed import DRAIN_PREPEND, Lease, PhyView, read_phy_dump, routes_wanted
from ananta.topologies import configs
from ananta.topologies.spec import LabSpec, build_plan


def test_route_changes_withdraw_first_then_announce() -> None:
    assert route_changes({"203.0.113.1": 0, "203.0.113.2": 0},
                         {"203.0.113.2": 0, "203.0.113.3": 0}) == [
        withdraw("203.0.113.1"), announce("203.0.113.3")]
    assert route_changes({"203.0.113.2": 0}, {"203.0.113.2": 0}) == []
    assert announce("203.0.113.10") == "announce route 203.0.113.10/32 next-hop self"
    # draining: the same routes again, with a longer AS path
    assert route_changes({"203.0.113.2": 0}, {"203.0.113.2": 1}, 65100) == [
        "announce route 203.0.113.2/32 next-hop self as-path [ 65100 65100 ]"]


def test_exabgp_config_has_neighbor_process_and_hold_time() -> None:
    text = exabgp_config("198.18.7.2", "198.18.7.2", 65100, [BgpPeer("198.18.7.1", 65011)], 3,
                         ["/venv/bin/python", "-m", "ananta.mux.announcer", "--config",
                          "/run/x/mux.yaml"], md5_password="s3cret")
    assert "neighbor 198.18.7.1 {" in text
    assert "hold-time 3;" in text and "peer-as 65011;" in text
    assert "md5-password 's3cret';" in text
    assert "run /venv/bin/python -m ananta.mux.announcer --config /run/x/mux.yaml;" in text


DUMP = (
    " cookie=0xa702123412345678, duration=1.2s, table=0, n_packets=3, n_bytes=200, "
    "priority=200,ip,in_port=1,nw_dst=203.0.113.10 actions=output:2\n"
    " cookie=0xa702aaaa12345678, duration=1.2s, table=0, n_packets=4, n_bytes=0, "
    "priority=200,ip,in_port=1,nw_dst=203.0.113.11 actions=output:2\n"
    " cookie=0xa701bbbb00000001, duration=9.1s, table=0, n_packets=90, n_bytes=0, "
    "priority=0 actions=NORMAL\n"
)


def lease_line(generation: int, draining: bool, age: float) -> str:
    return (f" cookie={lease_cookie(generation, draining):#x}, duration={age}s, table=0, "
            "n_packets=0, n_bytes=0, hard_timeout=60, priority=1,dl_type=0x88b5 actions=drop\n")


def test_steering_flows_and_the_lease_read_from_a_flow_dump() -> None:
    view = read_phy_dump(DUMP + lease_line(42, False, 0.3))
    assert view.vips == {"203.0.113.10", "203.0.113.11"}
    assert view.steer_packets == 7
    assert view.lease == Lease(42, False, 0.3)
    assert read_phy_dump(DUMP).lease is None
    assert read_phy_dump(lease_line(7, True, 1.5)).lease == Lease(7, True, 1.5)


def test_routes_follow_ovs_the_lease_and_draining() -> None:
    def wanted(view: PhyView | None, failures: int = 0,
               quiet: bool = False) -> tuple[frozenset[str], int] | None:
        return routes_wanted(view, failures, 3, lease_timeout=5.0, quiet=quiet)

    vips = frozenset({"203.0.113.10", "203.0.113.11"})
    nothing = (frozenset(), 0)
    assert wanted(read_phy_dump(DUMP + lease_line(1, False, 0.4))) == (vips, 0)
    assert wanted(read_phy_dump(DUMP)) == nothing  # no leader has ever leased it
    assert wanted(read_phy_dump(DUMP + lease_line(1, False, 5.5))) == nothing  # stale lease
    draining = read_phy_dump(DUMP + lease_line(1, True, 0.1))
    assert wanted(draining) == (vips, DRAIN_PREPEND)  # routers move away first ...
    assert wanted(draining, quiet=True) == nothing  # ... then it withdraws
    assert wanted(None, failures=1) is None  # one failed read of OVS: keep announcing
    assert wanted(None, failures=3) == nothing  # OVS down: withdraw
    assert parse_lease_cookie(lease_cookie(2**32 + 5, True)) == (5, True)
    assert parse_lease_cookie(0xA702123412345678) is None


def test_a_mux_with_no_manager_as_master_serves_on_with_its_flows() -> None:
    """The whole Manager cluster down (or electing): every lease goes stale at once, and
    withdrawing would take every VIP off the network. Only a live leader fences a Mux out."""
    vips = frozenset({"203.0.113.10", "203.0.113.11"})
    stale = read_phy_dump(DUMP + lease_line(1, False, 30.0))
    assert routes_wanted(stale, 0, 3, 5.0, headless=True) == (vips, 0)
    assert routes_wanted(stale, 0, 3, 5.0, headless=False) == (frozenset(), 0)
    stale_draining = read_phy_dump(DUMP + lease_line(1, True, 30.0))
    assert routes_wanted(stale_draining, 0, 3, 5.0, headless=True) == (vips, DRAIN_PREPEND)
    # a fresh OVS has no lease and no flows: nothing to serve, headless or not
    assert routes_wanted(read_phy_dump(DUMP), 0, 3, 5.0, headless=True) == (frozenset(), 0)
    assert routes_wanted(None, 3, 3, 5.0, headless=True) == (frozenset(), 0)


def test_the_mux_reads_its_gateways_mac_from_the_kernel_and_ovs_tunnel_neighbors() -> None:
    from ananta.node import kernel_neighbor_mac, ovs_has_tunnel_neighbor

    gw, mac = "198.18.7.1", "d6:21:a6:ef:22:d7"
    kernel = f'[{{"dst":"{gw}","lladdr":"{mac}","state":["REACHABLE"]}}]'
    assert kernel_neighbor_mac(kernel, gw) == mac
    failed = f'[{{"dst":"{gw}","state":["FAILED"]}}]'
    for unknown in ("", "[]", failed, "not json", '["x"]'):
        assert kernel_neighbor_mac(unknown, gw) is None
    header = "IP    MAC    Bridge\n=====\n"
    assert not ovs_has_tunnel_neighbor(header, gw, mac)
    assert ovs_has_tunnel_neighbor(header + f"{gw}      {mac}   br-phy\n", gw, mac)
    assert not ovs_has_tunnel_neighbor(header + f"{gw}   d6:21:a6:ef:22:00   br-phy\n", gw, mac)


def test_bridge_specs_say_what_ovsdb_must_hold() -> None:
    from ananta.bridges import BR_INT, BR_PHY, GATEWAY_MAC, INT_GRE_OFPORT
    from ananta.node import NodeConfig, VmPort, bridge_specs, vswitchd_options

    node = NodeConfig.model_validate({
        "name": "hv1", "datapath_ids": {"int": "00a0000000020101", "phy": "00a0000000020102"},
        "uplink": {"interface": "uplink", "address": "198.18.9.2/30", "gateway": "198.18.9.1"},
        "managers": ["198.19.0.11:6653", "198.19.0.12:6653"]})
    vm = VmPort(name="vm1", interface="vm1", ofport=10)
    phy, int_ = bridge_specs(node, [vm], int_hwaddr=GATEWAY_MAC,
                             int_flow_tables={1: {"name": "connections"}})
    assert (phy.name, int_.name) == (BR_PHY, BR_INT)
    for b in (phy, int_):
        assert b.columns["datapath_type"] == "netdev" and b.columns["fail_mode"] == "secure"
        assert "OpenFlow15" in b.columns["protocols"]
        assert b.controllers == ("tcp:198.19.0.11:6653", "tcp:198.19.0.12:6653")
    assert phy.columns["other_config"]["datapath-id"] == "00a0000000020102"
    assert phy.local == {"mtu_request": 1600} and "hwaddr" not in phy.columns["other_config"]
    assert int_.columns["other_config"]["hwaddr"] == GATEWAY_MAC
    ports = {p.name: p.columns for p in int_.ports}
    assert ports["vm1"] == {"ofport_request": 10}
    assert ports["gre0"]["ofport_request"] == INT_GRE_OFPORT
    assert ports["gre0"]["options"] == {"remote_ip": "flow", "key": "flow"}
    assert int_.flow_tables == {1: {"name": "connections"}} and phy.flow_tables == {}
    assert {p.name: p.columns for p in phy.ports}["uplink"] == {"ofport_request": 1, "type": ""}
    assert vswitchd_options(node) == {}


def test_an_af_xdp_uplink_and_its_pmd_threads() -> None:
    """An uplink read through AF_XDP is an afxdp interface in the XDP mode asked for, and the
    PMD threads polling it go on the CPUs given, sleeping when idle; a mask that is not hex,
    or a driver OVS does not have, is refused by name."""
    from ananta.node import NodeConfig, bridge_specs, vswitchd_options

    data = {"name": "mux1", "datapath_ids": {"int": "00a0000000020101", "phy": "00a0000000020102"},
            "uplink": {"interface": "uplink", "address": "198.18.7.2/30", "gateway": "198.18.7.1",
                       "driver": "af_xdp", "xdp_mode": "generic"},
            "managers": ["198.19.0.11:6653"], "pmd": {"cpu_mask": "0x2"}}
    node = parse(NodeConfig, data, "mux1")
    phy, _ = bridge_specs(node)
    assert {p.name: p.columns for p in phy.ports}["uplink"] == {
        "ofport_request": 1, "type": "afxdp", "options": {"xdp-mode": "generic"}}
    assert vswitchd_options(node) == {"pmd-cpu-mask": "0x2", "pmd-maxsleep": "100"}
    for path, bad in ((("pmd", "cpu_mask"), "2"), (("uplink", "driver"), "dpdk")):
        wrong = {**data, path[0]: {**data[path[0]], path[1]: bad}}  # type: ignore[dict-item]
        with pytest.raises(InvalidConfig, match=".".join(path)):
            parse(NodeConfig, wrong, "mux1")



def mux_config(**limits: int) -> MuxConfig:
    """The lab's mux1 config with other connection limits."""
    plan = build_plan(LabSpec())
    data = configs.mux_config(plan, plan.nodes["mux1"], "/run/x")
    return parse(MuxConfig, {**data, **limits}, "mux1")


def test_the_mux_gives_every_vip_zone_its_own_connection_limit() -> None:
    from ananta.bridges import MUX_CT_ZONES
    from ananta.mux.conntrack import runtime_commands, zone_limits

    config = mux_config(connection_limit=1000, connection_limit_per_vip=100)
    maxconns, limits, seq = runtime_commands(config)
    assert maxconns[-2:] == ["dpctl/ct-set-maxconns", "1000"]
    assert limits[1] == "dpctl/ct-set-limits" and len(limits) == 2 + MUX_CT_ZONES
    assert limits[2] == "zone=1,limit=100" and limits[-1] == f"zone={MUX_CT_ZONES},limit=100"
    assert seq[-1] == "dpctl/ct-disable-tcp-seq-chk"
    assert zone_limits("default limit=0\nzone=1,limit=100,count=3\nzone=4096,limit=100,count=0"
                       ) == {1: 100, 4096: 100}


def test_a_per_vip_connection_limit_above_the_total_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="connection_limit_per_vip"):
        mux_config(connection_limit=1000, connection_limit_per_vip=2000)
