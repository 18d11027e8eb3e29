"""Compile the Mux data path from the services and the inventory (pure).

br-phy: VIP traffic from the uplink -> br-int; everything else NORMAL (BGP, ARP, and the
        GRE packets OVS emits through this bridge after encapsulation).
br-int: each VIP endpoint -> a select group (OpenFlow 1.5, selection_method=hash over the
        5-tuple), one bucket per backend taking new connections, bucket_id = a stable id of
        the DIP and weight = its weight; the bucket sets tun_dst = the DIP's host and
        tun_id = the DIP and outputs to the GRE port. Any other packet to a VIP is dropped by
        a per-VIP flow whose counters say how many.
"""

from __future__ import annotations

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
    Output,
    SetField,
    SwitchProgram,
    ip_int,
    match,
    stable_id,
)
from ananta.controller.model import Endpoint, Inventory, Services, Vip, backend_key
from ananta.controller.pipeline import check_flows

PRIO_ENDPOINT = 300
PRIO_VIP = 200
PRIO_DEFAULT = 0


def endpoint_key(vip: Vip, ep: Endpoint) -> str:
    return f"{vip.address}:{ep.protocol}:{ep.port}"


def group_id(vip: Vip, ep: Endpoint) -> int:
    return stable_id(endpoint_key(vip, ep))


def bucket_id(dip: str) -> int:
    return stable_id(f"dip:{dip}")


def hash_fields(protocol: str) -> tuple[str, ...]:
    return ("ipv4_src", "ipv4_dst", "ip_proto", f"{protocol}_src", f"{protocol}_dst")


def endpoint_group(vip: Vip, ep: Endpoint, inv: Inventory,
                   down: frozenset[str] = frozenset()) -> Group:
    """The endpoint's select group: one bucket per backend that takes new connections and is
    not reported down by its host agent."""
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    buckets = tuple(
        Bucket(
            bucket_id=bucket_id(be.address),
            weight=be.weight,
            actions=(
                SetField("tun_ipv4_dst", host_of[be.address]),
                SetField("tunnel_id", ip_int(be.address)),
                Output(INT_GRE_OFPORT),
            ),
        )
        for be in ep.backends
        if be.takes_new_connections and backend_key(be.address, be.port) not in down
    )
    return Group(group_id(vip, ep), tuple(sorted(buckets, key=lambda b: b.bucket_id)),
                 hash_fields(ep.protocol))


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


def compile_mux_int(services: Services, inv: Inventory,
                    down: frozenset[str] = frozenset()) -> SwitchProgram:
    flows = {Flow(0, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop")}
    groups = set()
    for vip in services.vips:
        flows.add(Flow(0, PRIO_VIP, match(eth_type=ETH_TYPE_IP, ipv4_dst=vip.address), (),
                       FlowKind.VIP_NO_ENDPOINT, vip.address))
        for ep in vip.endpoints:
            group = endpoint_group(vip, ep, inv, down)
            groups.add(group)
            port_field = f"{ep.protocol}_dst"
            flows.add(Flow(
                0, PRIO_ENDPOINT,
                match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP,
                      ip_proto=IP_PROTO[ep.protocol], ipv4_dst=vip.address,
                      **{port_field: ep.port}),
                (GroupAction(group.group_id),), FlowKind.VIP_ENDPOINT, endpoint_key(vip, ep)))
    program = SwitchProgram(frozenset(flows), frozenset(groups))
    check_flows("mux", "int", program.flows)
    return program
