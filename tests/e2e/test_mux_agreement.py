"""Both Muxes of the lab send a given new connection to the same DIP, the one the oracle
names (so a connection that ECMP moves to the other Mux keeps its backend)."""

from __future__ import annotations

import ipaddress
import random
import re

from ananta.controller.compile_mux import chosen_dip, endpoint_table, packet_dp_hash
from ananta.controller.model import backend_key
from ananta.topologies import lab

VIP = "203.0.113.10"


def traced_dip(plan: lab.LabPlan, mux: str, src: str, sport: int) -> str:
    """The DIP `ofproto/trace` shows the Mux sending a new connection to, given the hash
    the datapath would give the packet (a trace computes none itself)."""
    dp_hash = packet_dp_hash(src, VIP, "tcp", sport, 80)
    out = lab.ns_run(plan, mux, ["ovs-appctl", "ofproto/trace", "br-phy",
                                 f"in_port=1,tcp,nw_src={src},nw_dst={VIP},tp_src={sport},"
                                 f"tp_dst=80,dp_hash={dp_hash:#x}"], env=lab.ovs_cmd_env(mux))
    m = re.search(r"set_field:(0x[0-9a-f]+)->tun_id", out)
    assert m, out
    return str(ipaddress.IPv4Address(int(m.group(1), 16)))


def test_both_muxes_pick_the_dip_the_oracle_names(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    services = lab.cluster_services(plan)
    vip = next(v for v in services.vips if v.address == VIP)
    down = lab.cluster_down(plan)
    table = endpoint_table(vip, vip.endpoints[0], down, lab.cluster_tables(plan, services))
    rnd = random.Random(4)
    seen = set()
    for _ in range(60):
        src, sport = f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", rnd.randrange(65536)
        want = chosen_dip(table, src, VIP, "tcp", sport, 80)
        assert traced_dip(plan, "mux1", src, sport) == want
        assert traced_dip(plan, "mux2", src, sport) == want
        seen.add(want)
    assert seen == {be.address for be in vip.endpoints[0].backends
                    if be.takes_new_connections and backend_key(be.address, be.port) not in down}
