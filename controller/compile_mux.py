"""Compile the Mux data path from the services and the inventory (pure).

br-phy: VIP traffic from the uplink -> br-int; everything else NORMAL (BGP, ARP, and the
        GRE packets OVS emits through this bridge after encapsulation).
br-int: a VIP endpoint's packet first looks for its connection's entry (table 1, learned);
        a new connection goes to the endpoint's select group (table 2; OpenFlow 1.5,
        selection_method=hash over the 5-tuple: rendezvous hashing), where each backend taking
        new connections has buckets in proportion to its weight (hashing.py). A bucket
        sets tun_dst = the DIP's host and tun_id = the DIP, and table 3 learns the
        connection's entry (so later packets keep that DIP whatever happens to the backend
        set) and outputs to the GRE port. Any other packet to a VIP is dropped by a per-VIP
        flow whose counters say how many.
"""

from __future__ import annotations

import ipaddress

from ananta.bridges import INT_GRE_OFPORT, INT_PATCH_OFPORT, PHY_PATCH_OFPORT, PHY_UPLINK_OFPORT
from ananta.controller.flows import (
    ETH_TYPE_IP,
    IP_PROTO,
    PORT_NORMAL,
    Bucket,
    Flow,
    FlowKind,
    Group,
    GroupAction,
    Learn,
    LearnLoad,
    Output,
    Resubmit,
    SetField,
    SwitchProgram,
    ip_int,
    learned_cookie,
    match,
    stable_id,
)
from ananta.controller.hashing import (
    BucketSpec,
    best_bucket,
    bucket_counts,
    packet_values,
    selection_basis,
    unit_bucket_ids,
)
from ananta.controller.model import Endpoint, Inventory, Services, Vip, backend_key
from ananta.controller.pipeline import check_flows

PRIO_ENDPOINT = 300
PRIO_VIP = 200
PRIO_CONNECTION = 100
PRIO_DEFAULT = 0

T_CLASSIFY, T_CONNECTIONS, T_SELECT, T_PIN = 0, 1, 2, 3
CONNECTION_IDLE_S = 60  # an idle connection's entry expires (its next packet is hashed again)
CONNECTION_FIN_IDLE_S = 5  # ... sooner once it saw a FIN or RST
PORT_REG = "reg2"  # carries the GRE port number into the learned entry's output


def endpoint_key(vip: Vip, ep: Endpoint) -> str:
    return f"{vip.address}:{ep.protocol}:{ep.port}"


def group_id(vip: Vip, ep: Endpoint) -> int:
    return stable_id(endpoint_key(vip, ep))


def bucket_id(dip: str) -> int:
    """The id of a DIP's first bucket (its only one when weights are equal)."""
    return stable_id(f"dip:{dip}")


def hash_fields(protocol: str) -> tuple[str, ...]:
    return ("ipv4_src", "ipv4_dst", "ip_proto", f"{protocol}_src", f"{protocol}_dst")


def endpoint_group(vip: Vip, ep: Endpoint, inv: Inventory,
                   down: frozenset[str] = frozenset()) -> Group:
    """The endpoint's select group over the backends that take new connections and are not
    reported down by their host agent: each backend gets buckets in proportion to its weight
    (all of weight 1, see hashing.py), each bucket sending to that backend."""
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    weights = {be.address: be.weight for be in ep.backends
               if be.takes_new_connections and backend_key(be.address, be.port) not in down}
    ids = unit_bucket_ids(bucket_counts(weights), stable_id)
    buckets = tuple(
        Bucket(bucket_id=bid, weight=1, actions=(
            SetField("tun_ipv4_dst", host_of[dip]),
            SetField("tunnel_id", ip_int(dip)),
            Resubmit(T_PIN),  # learn() cannot sit in a bucket itself
        ))
        for dip, dip_ids in ids.items() for bid in dip_ids)
    return Group(group_id(vip, ep), tuple(sorted(buckets, key=lambda b: b.bucket_id)),
                 hash_fields(ep.protocol))


def chosen_dip(group: Group, src: str, dst: str, protocol: str, sport: int,
               dport: int) -> str | None:
    """The DIP a Mux sends a new connection to: OVS's choice, computed (the oracle)."""
    basis = selection_basis(packet_values(src, dst, protocol, sport, dport), group.hash_fields)
    bid = best_bucket(tuple(BucketSpec(b.bucket_id, b.weight) for b in group.buckets), basis)
    for b in group.buckets:
        if b.bucket_id == bid:
            tunnel = next(a for a in b.actions
                          if isinstance(a, SetField) and a.field == "tunnel_id")
            return str(ipaddress.IPv4Address(tunnel.value))
    return None


def compile_mux_phy(services: Services) -> SwitchProgram:
    flows = {
        Flow(0, PRIO_DEFAULT, match(), (Output(PORT_NORMAL),), FlowKind.DEFAULT, "normal"),
    }
    for vip in services.vips:
        flows.add(Flow(0, PRIO_VIP,
                       match(in_port=PHY_UPLINK_OFPORT, eth_type=ETH_TYPE_IP, ipv4_dst=vip.address),
                       (Output(PHY_PATCH_OFPORT),), FlowKind.VIP_STEER, vip.address))
    program = SwitchProgram(frozenset(flows))
    check_flows("mux", "phy", program.flows)
    return program


def pin_connection(protocol: str) -> Flow:
    """Table 3: remember this connection's DIP (from the bucket's tunnel fields) in table 1."""
    learn = Learn(
        table=T_CONNECTIONS, priority=PRIO_CONNECTION,
        cookie=learned_cookie(FlowKind.CONNECTION),
        match_values=(("eth_type", ETH_TYPE_IP, 16), ("ip_proto", IP_PROTO[protocol], 8)),
        match_fields=(("ipv4_src", 32), ("ipv4_dst", 32),
                      (f"{protocol}_src", 16), (f"{protocol}_dst", 16)),
        loads=(LearnLoad("tunnel_id", "tunnel_id", 64),
               LearnLoad("tun_ipv4_dst", "tun_ipv4_dst", 32)),
        output_from=PORT_REG, idle_timeout=CONNECTION_IDLE_S,
        fin_idle_timeout=CONNECTION_FIN_IDLE_S)
    return Flow(T_PIN, PRIO_ENDPOINT,
                match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO[protocol]),
                (SetField(PORT_REG, INT_GRE_OFPORT), learn, Output(INT_GRE_OFPORT)),
                FlowKind.CONNECTION, f"pin-{protocol}")


def compile_mux_int(services: Services, inv: Inventory,
                    down: frozenset[str] = frozenset()) -> SwitchProgram:
    flows = {
        Flow(T_CLASSIFY, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_CONNECTIONS, PRIO_DEFAULT, match(), (Resubmit(T_SELECT),), FlowKind.DEFAULT,
             "new-connection"),
        Flow(T_SELECT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_PIN, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        pin_connection("tcp"),
        pin_connection("udp"),
    }
    groups = set()
    for vip in services.vips:
        flows.add(Flow(T_CLASSIFY, PRIO_VIP, match(eth_type=ETH_TYPE_IP, ipv4_dst=vip.address),
                       (), FlowKind.VIP_NO_ENDPOINT, vip.address))
        for ep in vip.endpoints:
            group = endpoint_group(vip, ep, inv, down)
            groups.add(group)
            port_field = f"{ep.protocol}_dst"
            flows.add(Flow(
                T_CLASSIFY, PRIO_ENDPOINT,
                match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP,
                      ip_proto=IP_PROTO[ep.protocol], ipv4_dst=vip.address,
                      **{port_field: ep.port}),
                (Resubmit(T_CONNECTIONS),), FlowKind.VIP_ENDPOINT, endpoint_key(vip, ep)))
            flows.add(Flow(
                T_SELECT, PRIO_ENDPOINT,
                match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO[ep.protocol],
                      ipv4_dst=vip.address, **{port_field: ep.port}),
                (GroupAction(group.group_id),), FlowKind.VIP_ENDPOINT,
                f"select:{endpoint_key(vip, ep)}"))
    program = SwitchProgram(frozenset(flows), frozenset(groups))
    check_flows("mux", "int", program.flows)
    return program
