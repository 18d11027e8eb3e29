"""Compile the Mux data path from the services and the inventory (pure).

br-phy: VIP traffic from the uplink -> br-int; everything else NORMAL (BGP, ARP, and the
        GRE packets OVS emits through this bridge after encapsulation).
br-int: a VIP endpoint's packet goes through conntrack, in its VIP's zone, and comes back to
        table 1 with its connection's mark: the DIP it was sent to. A known connection goes
        to its DIP whatever has happened to the backend set since. A new one (no mark, or
        the mark of a DIP that is gone) and every TCP SYN go to the endpoint's select group
        (table 2; OpenFlow 1.5, selection_method=dp_hash), where the datapath's own hash of
        the packet names a slot of the endpoint's table (slot_table.py): bucket i is the
        table's bin i, and a bin split between DIPs continues in table 4. The slot's DIP
        becomes tun_dst = the DIP's host and tun_id = the DIP, and table 3 commits the
        connection with that DIP as its mark, then sends it
        out of the GRE port (table 5, egress). Trust is conntrack's: an entry that saw only
        a SYN (or one UDP datagram) lives UNTRUSTED_IDLE_S without traffic, one that saw
        more TRUSTED_IDLE_S (the zone's timeout policy, set by the Mux agent). Any other
        packet to a VIP is dropped by a per-VIP flow whose counters say how many. IP
        fragments go through the Mux agent, which has them placed by their datagram's first
        fragment (see FROM_AGENT_REG below).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Hashable, Mapping

from ananta.bridges import (
    INT_FRAG_OFPORT,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    MUX_CT_ZONES,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.controller.flows import (
    CT_TRK,
    ETH_TYPE_IP,
    IP_FRAG_FIRST,
    IP_FRAG_LATER,
    IP_FRAG_YES,
    IP_PROTO,
    PORT_NORMAL,
    Bucket,
    Ct,
    Flow,
    FlowKind,
    Group,
    GroupAction,
    Meter,
    MeterAction,
    Move,
    Output,
    Resubmit,
    SetField,
    SwitchProgram,
    ip_int,
    match,
    stable_id,
)
from ananta.controller.hashing import datapath_hash, packet_values
from ananta.controller.model import (
    Endpoint,
    Inventory,
    Services,
    Vip,
    new_connection_weights,
)
from ananta.controller.model import endpoint_key as model_endpoint_key
from ananta.controller.pipeline import check_flows
from ananta.controller.slot_table import (
    BINS,
    SlotTable,
    block_matches,
    next_table,
    slot_counts,
)
from ananta.controller.snat import SnatBlock

PRIO_ENDPOINT = 300
PRIO_VIP = 200
PRIO_SYN = 250
PRIO_FIRST_FRAGMENT = 250
PRIO_KNOWN = 200
PRIO_NEW = 100
PRIO_DEFAULT = 0

PRIO_SPLIT_RUN = 300
PRIO_SPLIT_BIN = 200
SPLIT_REG = "reg5"  # a split bin's dp_hash bits, for table 4 to match
FULL_BIN = 0xFF  # the low 8 bits of dp_hash: the bin

T_CLASSIFY, T_CONNECTIONS, T_SELECT, T_PIN, T_SPLIT, T_EGRESS = 0, 1, 2, 3, 4, 5
PRIO_FRAGMENT = 400
# Fragments. A later fragment has no ports, so neither the connection table nor the hash can
# place it; OVS's conntrack reassembles, but gives later fragments no ports either. So every
# fragment to a VIP goes to the Mux agent (mux/fragments.py) through the fragment port. The
# agent sends a datagram's first fragment back in, where it takes the pipeline as its
# 5-tuple (reg4 = 1 marks it); table 5 sends it out and echoes it to the agent with its
# DIP in its eth_dst (02:a8 + the DIP's address; eth_src 02:a8:0:0:0:0). The agent then
# sends that datagram's later fragments (held until then) back in with that eth_dst, and
# the DIP's flow tunnels them the same way: every fragment reaches the DIP an unfragmented packet
# of the 5-tuple would, entries and draining included.
FROM_AGENT_REG = "reg4"
STEERED_MAC = "02:a7:00:00:00:00"  # eth_dst of a fragment sent to the agent
ROUTE_MAC = "02:a8:00:00:00:00"  # prefix (16 bits) of the MACs carrying a DIP
FRAGMENT_METER_ID = 200_001  # above every VIP meter id (MAX_METER_ID)
FRAGMENT_PPS, FRAGMENT_BURST = 10_000, 1_000
TCP_SYN, TCP_ACK = 0x002, 0x010
TRACKED = (CT_TRK, CT_TRK)


def endpoint_key(address: str, protocol: str, port: int) -> str:
    """An endpoint's name on the Mux: its flows' owner, and its group id's key."""
    return f"{address}:{protocol}:{port}"


MAX_METER_ID = 200_000  # OVS's userspace datapath has 262,144 meters
# Cached VIP parts: room for every VIP of a large Manager (beyond it, compiling rebuilds the
# parts that fell out, at the old cost) and for the versions a burst of writes leaves behind.
VIP_PARTS = 1 << 15


def meter_ids(vips: list[Vip]) -> dict[str, int]:
    """A meter id for each rate-limited VIP address: stable (a hash of the address), distinct
    (a rare collision is resolved in address order), within OVS's meter table."""
    taken: set[int] = set()
    out = {}
    for address in sorted(v.address for v in vips if v.rate_limit_pps is not None):
        mid, salt = stable_id(f"meter:{address}", MAX_METER_ID), 0
        while mid in taken:
            salt += 1
            mid = stable_id(f"meter:{address}~{salt}", MAX_METER_ID)
        taken.add(mid)
        out[address] = mid
    return out


def vip_zone(address: str) -> int:
    """The VIP's conntrack zone on every Mux, in 1..MUX_CT_ZONES: a hash of its address alone,
    so it never changes while the VIP lives (a VIP whose zone moved would lose its
    connections' entries). Two VIPs may share a zone, and with it the per-zone connection
    limit (about N^2/8192 pairs among N VIPs); their entries never mix, as the VIP address is
    part of every connection's key."""
    return stable_id(f"zone:{address}", MUX_CT_ZONES + 1)


def vip_meter(vip: Vip, meter_id: int) -> Meter:
    """The VIP's rate limit, with a burst of 1/10 s of traffic (at least 10 packets)."""
    assert vip.rate_limit_pps is not None
    return Meter(meter_id, vip.rate_limit_pps, max(10, vip.rate_limit_pps // 10))


@functools.lru_cache(maxsize=1 << 16)
def to_dip(bucket_id: int, dip: str, host: str) -> Bucket:
    """A bucket sending a new connection to `dip` on `host` (cached: groups of 256 buckets
    are built from them)."""
    return Bucket(bucket_id=bucket_id, weight=1, actions=_to_dip_actions(dip, host))


def endpoint_table(vip: Vip, ep: Endpoint, down: frozenset[str] = frozenset(),
                   tables: Mapping[str, SlotTable] | None = None) -> SlotTable | None:
    """The endpoint's slot table over the backends that take new connections and are not
    reported down: the Manager's replicated one as it is (state.py keeps it in step with
    every weight and health change), or, without one (tests, a config file compiled on its
    own), the table built afresh. None when no backend takes new connections."""
    kept = (tables or {}).get(model_endpoint_key(vip.address, ep.protocol, ep.port))
    if kept is not None:
        return kept
    return next_table(None, slot_counts(new_connection_weights(ep, down)))


@functools.lru_cache(maxsize=1 << 16)
def _to_dip_actions(dip: str, host: str) -> tuple[SetField, SetField, Resubmit]:
    # OVS drops a ct(commit) written in a bucket itself: table 3 commits
    return (SetField("tun_ipv4_dst", host), SetField("tunnel_id", ip_int(dip)), Resubmit(T_PIN))


@functools.lru_cache(maxsize=1 << 14)
def endpoint_selection(vip_address: str, protocol: str, port: int, gid: int,
                       table: SlotTable | None, hosts: tuple[tuple[str, str], ...]
                       ) -> tuple[Group, frozenset[Flow]]:
    """The endpoint's dp_hash group and split-bin flows for its slot table (`hosts`: each
    DIP's host). Bucket i is bin i: a bin held whole sends to its DIP; a split bin's bucket
    copies the dp_hash bits its runs need into SPLIT_REG (OVS lets no OpenFlow flow match
    dp_hash itself) and resubmits to table 4, where the bin's largest run takes the bin (low
    priority) and the other runs their sub-slots (masked matches). Cached: unchanged
    endpoints cost nothing on a config write."""
    if table is None:
        return Group(gid, ()), frozenset()
    host_of = dict(hosts)
    endpoint = {"eth_type": ETH_TYPE_IP, "ip_proto": IP_PROTO[protocol],
                "ipv4_dst": vip_address, f"{protocol}_dst": port}
    owner = f"split:{vip_address}:{protocol}:{port}"
    buckets, flows = [], set()
    for i, runs in enumerate(table.bins):
        if len(runs) == 1:
            buckets.append(to_dip(i + 1, runs[0][0], host_of[runs[0][0]]))
            continue
        largest = max(range(len(runs)), key=lambda k: (runs[k][1], -k))
        masks = [FULL_BIN]
        start = 0
        for k, (dip, n) in enumerate(runs):
            acts = _to_dip_actions(dip, host_of[dip])
            if k == largest:
                flows.add(Flow(T_SPLIT, PRIO_SPLIT_BIN,
                               match(**endpoint, **{SPLIT_REG: (i, FULL_BIN)}),
                               acts, FlowKind.SPLIT_BIN, owner))
            else:
                for value, mask in block_matches(i, start, n):
                    masks.append(mask)
                    flows.add(Flow(T_SPLIT, PRIO_SPLIT_RUN,
                                   match(**endpoint, **{SPLIT_REG: (value, mask)}), acts,
                                   FlowKind.SPLIT_BIN, owner))
            start += n
        # copy only the bits matched: the datapath keeps a flow per value of the bits moved
        buckets.append(split_bucket(i + 1, max(masks).bit_length()))
    return Group(gid, tuple(buckets)), frozenset(flows)


@functools.lru_cache(maxsize=BINS * 8)
def split_bucket(bucket_id: int, n_bits: int) -> Bucket:
    return Bucket(bucket_id=bucket_id, weight=1,
                  actions=(Move("dp_hash", SPLIT_REG, n_bits), Resubmit(T_SPLIT)))


def chosen_dip(table: SlotTable | None, src: str, dst: str, protocol: str, sport: int,
               dport: int) -> str | None:
    """The DIP a Mux sends a new connection to (the oracle): the slot the datapath's hash of
    the packet names. None: the endpoint has no backend taking new connections."""
    if table is None:
        return None
    return table.dip_at(packet_dp_hash(src, dst, protocol, sport, dport))


def packet_dp_hash(src: str, dst: str, protocol: str, sport: int, dport: int) -> int:
    """The hash the datapath gives the packet (what `ofproto/trace` needs as dp_hash=...
    to follow the packet through the dp_hash group as the datapath would)."""
    return int(datapath_hash(packet_values(src, dst, protocol, sport, dport), protocol))


def compile_mux_phy(services: Services) -> SwitchProgram:
    parts: dict[Hashable, frozenset[Flow]] = {"base": _phy_base()}
    parts.update((("vip", vip.address), vip_steer(vip.address)) for vip in services.vips)
    return SwitchProgram.of_parts(parts)


@functools.lru_cache(maxsize=1)
def _phy_base() -> frozenset[Flow]:
    flows = frozenset({Flow(0, PRIO_DEFAULT, match(), (Output(PORT_NORMAL),), FlowKind.DEFAULT,
                            "normal")})
    check_flows("mux", "phy", flows)
    return flows


@functools.lru_cache(maxsize=VIP_PARTS)
def vip_steer(address: str) -> frozenset[Flow]:
    flows = frozenset({Flow(0, PRIO_VIP,
                            match(in_port=PHY_UPLINK_OFPORT, eth_type=ETH_TYPE_IP,
                                  ipv4_dst=address),
                            (Output(PHY_PATCH_OFPORT),), FlowKind.VIP_STEER, address)})
    check_flows("mux", "phy", flows)
    return flows


@functools.lru_cache(maxsize=1 << 14)
def connection_flows(dip: str, host: str) -> frozenset[Flow]:
    """Tables 1 and 3 for one DIP: a tracked packet whose connection carries the DIP's mark
    goes to it; a new connection the group sent to it is committed with that mark (in the
    zone conntrack saw it in: its VIP's), then sent."""
    mark = ip_int(dip)
    flows = frozenset({
        Flow(T_CONNECTIONS, PRIO_KNOWN, match(ct_state=TRACKED, ct_mark=mark),
             (SetField("tun_ipv4_dst", host), SetField("tunnel_id", mark), Resubmit(T_EGRESS)),
             FlowKind.CONNECTION, f"known:{dip}"),
        Flow(T_PIN, PRIO_ENDPOINT,
             match(eth_type=ETH_TYPE_IP, tunnel_id=mark, ct_state=TRACKED),
             (Ct(commit=True, zone_field="ct_zone", mark=mark), Resubmit(T_EGRESS)),
             FlowKind.CONNECTION, f"pin:{dip}"),
    })
    check_flows("mux", "int", flows)
    return flows


@functools.lru_cache(maxsize=1 << 14)
def snat_return_flows(blocks: tuple[SnatBlock, ...], host: str) -> frozenset[Flow]:
    """Return traffic to a DIP's SNAT block (VIP:port in the block) goes to the DIP's host:
    one masked flow per block and protocol, no per-connection state."""
    flows = set()
    for b in blocks:
        for protocol, proto in IP_PROTO.items():
            flows.add(Flow(
                T_CLASSIFY, PRIO_ENDPOINT,
                match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP, ip_proto=proto,
                      ipv4_dst=b.vip, **{f"{protocol}_dst": (b.start, b.mask)}),
                (SetField("tun_ipv4_dst", host), SetField("tunnel_id", ip_int(b.dip)),
                 Resubmit(T_EGRESS)),
                FlowKind.SNAT_RETURN, f"snat:{b.dip}"))
    part = frozenset(flows)
    check_flows("mux", "int", part)
    return part


def compile_mux_int(services: Services, inv: Inventory,
                    down: frozenset[str] = frozenset(),
                    snat: Mapping[str, tuple[SnatBlock, ...]] | None = None,
                    tables: Mapping[str, SlotTable] | None = None) -> SwitchProgram:
    """Built from cached parts (the base, each DIP's, each VIP's, each SNAT block's), each
    checked against the pipeline when it is built: a config write rebuilds only the parts
    whose inputs changed, so compiling is a lookup per VIP, not a Flow (and its digest) per
    endpoint. The parts' inputs are values (addresses, tables, hosts), never the models."""
    metered = meter_ids(services.vips)
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    # every backend that is not inactive keeps its connections (a draining one too)
    dips = {be.address for vip in services.vips for ep in vip.endpoints for be in ep.backends
            if be.state != "inactive" and be.address in host_of}
    parts: dict[Hashable, frozenset[Flow]] = {"base": _base_flows(),
                                              "fragments": _fragment_base()}
    for dip in dips | set(snat or {}):
        if dip in host_of:
            parts["fragments", dip] = dip_fragment_flows(dip, host_of[dip])
    for dip in dips:
        parts["connections", dip] = connection_flows(dip, host_of[dip])
    groups: set[Group] = set()
    meters = {Meter(FRAGMENT_METER_ID, FRAGMENT_PPS, FRAGMENT_BURST)}
    for vip in services.vips:
        mid = metered.get(vip.address)
        if mid is not None:
            meters.add(vip_meter(vip, mid))
        endpoints = []
        for ep in vip.endpoints:
            table = endpoint_table(vip, ep, down, tables)
            hosts = tuple((d, host_of[d]) for d in table.dips()) if table is not None else ()
            endpoints.append((ep.protocol, ep.port, table, hosts))
        parts["vip", vip.address], vip_groups = vip_part(vip.address, mid, tuple(endpoints))
        groups |= vip_groups
    for dip, blocks in sorted((snat or {}).items()):
        if dip in host_of:
            parts["snat", dip] = snat_return_flows(blocks, host_of[dip])
    return SwitchProgram.of_parts(parts, frozenset(groups), frozenset(meters))


@functools.lru_cache(maxsize=1)
def _base_flows() -> frozenset[Flow]:
    flows = frozenset({
        Flow(T_CLASSIFY, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_CONNECTIONS, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        # a new connection, or one whose DIP is gone (no flow for its mark), is hashed
        Flow(T_CONNECTIONS, PRIO_NEW, match(ct_state=TRACKED), (Resubmit(T_SELECT),),
             FlowKind.DEFAULT, "new-connection"),
        # a SYN is always hashed, and its commit replaces the mark an older connection on the
        # same 5-tuple left (its FIN unseen by this Mux), so the new one never follows it
        Flow(T_CONNECTIONS, PRIO_SYN,
             match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO["tcp"], ct_state=TRACKED,
                   tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK)),
             (Resubmit(T_SELECT),), FlowKind.DEFAULT, "syn-is-new"),
        Flow(T_SELECT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_SPLIT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_PIN, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        # a first fragment from the agent to an endpoint is placed by the hash (conntrack
        # would hold it for the rest of its datagram), and commits nothing; one to a SNAT
        # block matches the block's flow (above this one) like any return packet
        Flow(T_CLASSIFY, PRIO_FIRST_FRAGMENT, match(**{FROM_AGENT_REG: 1}),
             (Resubmit(T_SELECT),), FlowKind.FRAGMENT, "first-to-hash"),
        Flow(T_PIN, PRIO_FRAGMENT, match(**{FROM_AGENT_REG: 1}), (Resubmit(T_EGRESS),),
             FlowKind.DEFAULT, "fragment-commits-nothing"),
    })
    check_flows("mux", "int", flows)
    return flows


EndpointInputs = tuple[str, int, SlotTable | None, tuple[tuple[str, str], ...]]


@functools.lru_cache(maxsize=VIP_PARTS)
def vip_part(address: str, meter_id: int | None, endpoints: tuple[EndpointInputs, ...],
             ) -> tuple[frozenset[Flow], frozenset[Group]]:
    """A VIP's flows and groups on br-int. `endpoints`: each endpoint's protocol, port, slot
    table and its DIPs' hosts. Cached: an unchanged VIP costs a lookup on a config write."""
    limit: tuple[MeterAction, ...] = (MeterAction(meter_id),) if meter_id is not None else ()
    flows = {Flow(T_CLASSIFY, PRIO_VIP, match(eth_type=ETH_TYPE_IP, ipv4_dst=address),
                  (), FlowKind.VIP_NO_ENDPOINT, address)}
    groups = set()
    for protocol, port, table, hosts in endpoints:
        key = endpoint_key(address, protocol, port)
        group, split = endpoint_selection(address, protocol, port, stable_id(key), table, hosts)
        groups.add(group)
        flows |= split
        port_field = f"{protocol}_dst"
        flows.add(Flow(
            T_CLASSIFY, PRIO_ENDPOINT,
            match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO[protocol],
                  ipv4_dst=address, **{port_field: port, FROM_AGENT_REG: 0}),
            (*limit, Ct(zone=vip_zone(address), table=T_CONNECTIONS)),
            FlowKind.VIP_ENDPOINT, key))
        flows.add(Flow(
            T_SELECT, PRIO_ENDPOINT,
            match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO[protocol], ipv4_dst=address,
                  **{port_field: port}),
            (GroupAction(group.group_id),), FlowKind.VIP_ENDPOINT, f"select:{key}"))
    part = frozenset(flows)
    check_flows("mux", "int", part)
    return part, frozenset(groups)


def route_mac(dip: str) -> str:
    """The MAC that carries a DIP between br-int and the Mux agent: 02:a8 + its address."""
    return ROUTE_MAC[:6] + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(dip).packed)


@functools.lru_cache(maxsize=1)
def _fragment_base() -> frozenset[Flow]:
    """Fragments through the Mux agent and back (see FROM_AGENT_REG above); with each DIP's
    dip_fragment_flows."""
    flows = frozenset({
        Flow(T_CLASSIFY, PRIO_FRAGMENT,
             match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP, ip_frag=IP_FRAG_YES,
                   **{FROM_AGENT_REG: 0}),
             (MeterAction(FRAGMENT_METER_ID), SetField("eth_dst", STEERED_MAC),
              Output(INT_FRAG_OFPORT)), FlowKind.FRAGMENT, "to-agent"),
        Flow(T_CLASSIFY, PRIO_FRAGMENT,
             match(in_port=INT_FRAG_OFPORT, eth_type=ETH_TYPE_IP, ip_frag=IP_FRAG_FIRST),
             # as if from the patch port; which also lets the echo out of the port it came in
             (SetField(FROM_AGENT_REG, 1), SetField("in_port", INT_PATCH_OFPORT),
              Resubmit(T_CLASSIFY)),
             FlowKind.FRAGMENT, "first"),
        Flow(T_EGRESS, PRIO_DEFAULT, match(), (Output(INT_GRE_OFPORT),), FlowKind.DEFAULT,
             "out"),
    })
    check_flows("mux", "int", flows)
    return flows


@functools.lru_cache(maxsize=1 << 14)
def dip_fragment_flows(dip: str, host: str) -> frozenset[Flow]:
    """A DIP's first fragments echoed to the agent; its later ones tunnelled to it."""
    flows = frozenset({
        Flow(T_EGRESS, PRIO_FRAGMENT, match(tunnel_id=ip_int(dip), **{FROM_AGENT_REG: 1}),
             (Output(INT_GRE_OFPORT), SetField("eth_dst", route_mac(dip)),
              SetField("eth_src", ROUTE_MAC), Output(INT_FRAG_OFPORT)),
             FlowKind.FRAGMENT, f"echo:{dip}"),
        Flow(T_CLASSIFY, PRIO_FRAGMENT,
             match(in_port=INT_FRAG_OFPORT, eth_type=ETH_TYPE_IP, ip_frag=IP_FRAG_LATER,
                   eth_dst=route_mac(dip)),
             (SetField("tun_ipv4_dst", host), SetField("tunnel_id", ip_int(dip)),
              Output(INT_GRE_OFPORT)), FlowKind.FRAGMENT, f"later:{dip}"),
    })
    check_flows("mux", "int", flows)
    return flows
