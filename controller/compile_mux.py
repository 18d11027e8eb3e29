"""Compile the Mux data path from the services and the inventory (pure).

br-phy: VIP traffic from the uplink -> br-int; everything else NORMAL (BGP, ARP, and the
        GRE packets OVS emits through this bridge after encapsulation).
br-int: a VIP endpoint's packet first looks up its connection's entry (table 1, learned),
        then table 4 forwards it. A new connection goes to the endpoint's select group
        (table 2; OpenFlow 1.5, selection_method=hash over the 5-tuple: rendezvous hashing),
        where each backend taking new connections has buckets in proportion to its weight
        (hashing.py). A bucket sets tun_dst = the DIP's host and tun_id = the DIP, and
        table 3 outputs to the GRE port, learning the connection's untrusted entry unless
        the packet is a SYN (half-open connections hold no state). A known
        connection's packet goes out with the tunnel fields its entry loaded, so it keeps its
        DIP whatever happens to the backend set; its first non-SYN packet makes the entry
        trusted (longer idle timeout). Any other packet to a VIP is dropped by a per-VIP flow
        whose counters say how many. IP fragments go through the Mux agent, which has them
        placed by their datagram's first fragment (see FROM_AGENT_REG below). Every packet
        leaves through table 5 (egress).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from ananta.bridges import (
    INT_FRAG_OFPORT,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.controller.flows import (
    ETH_TYPE_IP,
    IP_FRAG_FIRST,
    IP_FRAG_LATER,
    IP_FRAG_YES,
    IP_PROTO,
    PORT_NORMAL,
    Bucket,
    Flow,
    FlowKind,
    Group,
    GroupAction,
    Learn,
    LearnLoad,
    Meter,
    MeterAction,
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
from ananta.controller.snat import SnatBlock

PRIO_ENDPOINT = 300
PRIO_HALF_OPEN = 310
PRIO_RELEARN = 315
PRIO_RELEARN_TRUSTED = 320
PRIO_VIP = 200
PRIO_NEW_SYN = 250
PRIO_TRUSTED = 110
PRIO_UNTRUSTED = 100
PRIO_DEFAULT = 0

T_CLASSIFY, T_CONNECTIONS, T_SELECT, T_PIN, T_FORWARD, T_EGRESS = 0, 1, 2, 3, 4, 5
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
# Connection entries (table 1). A TCP SYN is always hashed (table 4 sends it to the select
# group whatever entry it found), and learns nothing unless it found an entry: half-open
# connections hold no state, so a SYN flood, spoofed or not, costs the Mux no flow_mod (each
# one makes OVS revalidate every datapath flow, which is what slowed the other VIPs under a
# flood). A SYN that found an entry (an older connection's, on the same 5-tuple) overwrites
# it in place as untrusted, at that entry's priority, so the new connection's packets never
# follow the old one's backend. A connection's first packet that is not a SYN (the
# handshake's ACK; a UDP flow's first datagram), finding no entry, is hashed and learns an
# untrusted entry that lives UNTRUSTED_IDLE_S without traffic; its next one learns a
# trusted entry (higher priority: OVS's learn() keeps an existing flow's timeouts, so the
# untrusted one cannot be promoted in place) with the longer idle timeout. An entry that
# saw a FIN or RST expires FIN_IDLE_S after its last packet.
UNTRUSTED_IDLE_S = 10
TRUSTED_IDLE_S = 300
FIN_IDLE_S = 5
TRUST_REG = "reg3"  # set by a connection entry: 0 none, 1 untrusted, 2 trusted
UNTRUSTED, TRUSTED = 1, 2
TCP_SYN, TCP_ACK = 0x002, 0x010
_CONNECTION_FIELDS = (("ipv4_src", 32), ("ipv4_dst", 32))
_TUNNEL_LOADS = (LearnLoad("tunnel_id", "tunnel_id", 64),
                 LearnLoad("tun_ipv4_dst", "tun_ipv4_dst", 32))


def endpoint_key(vip: Vip, ep: Endpoint) -> str:
    return f"{vip.address}:{ep.protocol}:{ep.port}"


def group_id(vip: Vip, ep: Endpoint) -> int:
    return stable_id(endpoint_key(vip, ep))


MAX_METER_ID = 200_000  # OVS's userspace datapath has 262,144 meters


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


def vip_meter(vip: Vip, meter_id: int) -> Meter:
    """The VIP's rate limit, with a burst of 1/10 s of traffic (at least 10 packets)."""
    assert vip.rate_limit_pps is not None
    return Meter(meter_id, vip.rate_limit_pps, max(10, vip.rate_limit_pps // 10))


def bucket_id(dip: str) -> int:
    """The id of a DIP's first bucket (its only one when weights are equal)."""
    return stable_id(f"dip:{dip}")


def hash_fields(protocol: str) -> tuple[str, ...]:
    return ("ipv4_src", "ipv4_dst", "ip_proto", f"{protocol}_src", f"{protocol}_dst")


@functools.lru_cache(maxsize=1 << 16)
def to_dip(bucket_id: int, dip: str, host: str) -> Bucket:
    """A bucket sending a new connection to `dip` on `host` (cached: a group is rebuilt, with
    up to 512 of them, on every config write)."""
    return Bucket(bucket_id=bucket_id, weight=1, actions=(
        SetField("tun_ipv4_dst", host),
        SetField("tunnel_id", ip_int(dip)),
        Resubmit(T_PIN),  # learn() cannot sit in a bucket itself
    ))


def endpoint_group(vip: Vip, ep: Endpoint, inv: Inventory,
                   down: frozenset[str] = frozenset()) -> Group:
    """The endpoint's select group over the backends that take new connections and are not
    reported down by their host agent: each backend gets buckets in proportion to its weight
    (all of weight 1, see hashing.py), each bucket sending to that backend."""
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    weights = {be.address: be.weight for be in ep.backends
               if be.takes_new_connections and backend_key(be.address, be.port) not in down}
    ids = unit_bucket_ids(bucket_counts(weights), stable_id)
    buckets = tuple(to_dip(bid, dip, host_of[dip]) for dip, dip_ids in ids.items()
                    for bid in dip_ids)
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


def remember_connection(protocol: str, trust: int, dip: str,
                        priority: int | None = None) -> Learn:
    """A learn() of this packet's connection entry in table 1: its 5-tuple -> the tunnel
    fields it is being sent with (its DIP), and the trust level. The entry's cookie carries
    the DIP, so the Manager can delete a removed backend's entries. `priority` (default: the
    trust's) lets a SYN overwrite an older connection's trusted entry in place."""
    untrusted = trust == UNTRUSTED
    return Learn(
        table=T_CONNECTIONS,
        priority=priority or (PRIO_UNTRUSTED if untrusted else PRIO_TRUSTED),
        cookie=learned_cookie(FlowKind.CONNECTION, ip_int(dip)),
        match_values=(("eth_type", ETH_TYPE_IP, 16), ("ip_proto", IP_PROTO[protocol], 8)),
        match_fields=(*_CONNECTION_FIELDS, (f"{protocol}_src", 16), (f"{protocol}_dst", 16)),
        loads=_TUNNEL_LOADS, load_values=((TRUST_REG, trust, 32),),
        idle_timeout=UNTRUSTED_IDLE_S if untrusted else TRUSTED_IDLE_S,
        fin_idle_timeout=FIN_IDLE_S)


@functools.lru_cache(maxsize=1 << 14)
def connection_flows(protocol: str, dip: str) -> frozenset[Flow]:
    """Tables 3 and 4 for one protocol and DIP: pin a new connection (untrusted); forward a
    known one, confirming it (trusted) on its first packet that is not a SYN."""
    ip = {"eth_type": ETH_TYPE_IP, "ip_proto": IP_PROTO[protocol], "tunnel_id": ip_int(dip)}
    out = Resubmit(T_EGRESS)
    confirm = match(**ip, **{TRUST_REG: UNTRUSTED},
                    **({"tcp_flags": (0, TCP_SYN)} if protocol == "tcp" else {}))
    flows = {
        Flow(T_PIN, PRIO_ENDPOINT, match(**ip),
             (remember_connection(protocol, UNTRUSTED, dip), out), FlowKind.CONNECTION,
             f"pin-{protocol}:{dip}"),
        Flow(T_FORWARD, PRIO_TRUSTED, confirm,
             (remember_connection(protocol, TRUSTED, dip), out), FlowKind.CONNECTION,
             f"confirm-{protocol}:{dip}"),
    }
    if protocol == "tcp":  # a SYN that found an older connection's entry replaces it
        syn = {"tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)}
        flows |= {
            Flow(T_PIN, PRIO_RELEARN_TRUSTED, match(**ip, **syn, **{TRUST_REG: TRUSTED}),
                 (remember_connection(protocol, UNTRUSTED, dip, PRIO_TRUSTED), out),
                 FlowKind.CONNECTION, f"replace-trusted-{protocol}:{dip}"),
            Flow(T_PIN, PRIO_RELEARN, match(**ip, **syn, **{TRUST_REG: UNTRUSTED}),
                 (remember_connection(protocol, UNTRUSTED, dip), out),
                 FlowKind.CONNECTION, f"replace-{protocol}:{dip}"),
        }
    return frozenset(flows)


def connection_dips(program: SwitchProgram) -> frozenset[str]:
    """The DIPs whose connection entries a Mux program keeps (the others' may be deleted)."""
    return frozenset(f.owner.split(":", 1)[1] for f in program.flows
                     if f.kind == FlowKind.CONNECTION and f.owner.startswith("pin-"))


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
    return frozenset(flows)


def compile_mux_int(services: Services, inv: Inventory,
                    down: frozenset[str] = frozenset(),
                    snat: Mapping[str, tuple[SnatBlock, ...]] | None = None) -> SwitchProgram:
    flows = {
        Flow(T_CLASSIFY, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_CONNECTIONS, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "no-entry"),

        Flow(T_SELECT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_PIN, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_PIN, PRIO_HALF_OPEN,
             match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO["tcp"],
                   tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK)),
             (Resubmit(T_EGRESS),), FlowKind.DEFAULT, "syn-learns-nothing"),
        Flow(T_FORWARD, PRIO_VIP, match(**{TRUST_REG: 0}), (Resubmit(T_SELECT),),
             FlowKind.DEFAULT, "new-connection"),
        Flow(T_FORWARD, PRIO_NEW_SYN,
             match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO["tcp"],
                   tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK)),
             (Resubmit(T_SELECT),), FlowKind.DEFAULT, "syn-is-new"),
        Flow(T_FORWARD, PRIO_DEFAULT, match(), (Resubmit(T_EGRESS),), FlowKind.DEFAULT,
             "known-connection"),
    }
    groups = set()
    meters = set()
    metered = meter_ids(services.vips)
    # every backend that is not inactive keeps its connections (a draining one too)
    dips = {be.address for vip in services.vips for ep in vip.endpoints for be in ep.backends
            if be.state != "inactive"}
    for dip in dips:
        flows |= connection_flows("tcp", dip) | connection_flows("udp", dip)
    for vip in services.vips:
        flows.add(Flow(T_CLASSIFY, PRIO_VIP, match(eth_type=ETH_TYPE_IP, ipv4_dst=vip.address),
                       (), FlowKind.VIP_NO_ENDPOINT, vip.address))
        limit: tuple[MeterAction, ...] = ()
        if vip.address in metered:
            meters.add(vip_meter(vip, metered[vip.address]))
            limit = (MeterAction(metered[vip.address]),)
        for ep in vip.endpoints:
            group = endpoint_group(vip, ep, inv, down)
            groups.add(group)
            port_field = f"{ep.protocol}_dst"
            flows.add(Flow(
                T_CLASSIFY, PRIO_ENDPOINT,
                match(in_port=INT_PATCH_OFPORT, eth_type=ETH_TYPE_IP,
                      ip_proto=IP_PROTO[ep.protocol], ipv4_dst=vip.address,
                      **{port_field: ep.port}),
                (*limit, Resubmit(T_CONNECTIONS), Resubmit(T_FORWARD)), FlowKind.VIP_ENDPOINT,
                endpoint_key(vip, ep)))
            flows.add(Flow(
                T_SELECT, PRIO_ENDPOINT,
                match(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO[ep.protocol],
                      ipv4_dst=vip.address, **{port_field: ep.port}),
                (GroupAction(group.group_id),), FlowKind.VIP_ENDPOINT,
                f"select:{endpoint_key(vip, ep)}"))
    host_of = {vm.address: h.underlay_address for h in inv.hosts for vm in h.vms}
    for dip, blocks in sorted((snat or {}).items()):
        if dip in host_of:
            flows |= snat_return_flows(blocks, host_of[dip])
    flows |= fragment_flows({dip: host_of[dip] for dip in dips | set(snat or {})
                             if dip in host_of})
    meters.add(Meter(FRAGMENT_METER_ID, FRAGMENT_PPS, FRAGMENT_BURST))
    program = SwitchProgram(frozenset(flows), frozenset(groups), frozenset(meters))
    check_flows("mux", "int", program.flows)
    return program


def route_mac(dip: str) -> str:
    """The MAC that carries a DIP between br-int and the Mux agent: 02:a8 + its address."""
    return ROUTE_MAC[:6] + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(dip).packed)


def fragment_flows(host_of: Mapping[str, str]) -> set[Flow]:
    """Fragments through the Mux agent and back (see FROM_AGENT_REG above), for the DIPs in
    `host_of` (DIP -> its host's underlay address)."""
    flows = {
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
    }
    for dip, host in host_of.items():
        flows |= dip_fragment_flows(dip, host)
    return flows


@functools.lru_cache(maxsize=1 << 14)
def dip_fragment_flows(dip: str, host: str) -> frozenset[Flow]:
    """A DIP's first fragments echoed to the agent; its later ones tunnelled to it."""
    return frozenset({
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
