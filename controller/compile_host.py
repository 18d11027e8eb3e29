"""Compile a hypervisor's Host Agent data path (pure).

br-int, table 0 (classify):
  - from the GRE port with tun_id = DIP, to VIP:port: conntrack (zone = the VM's port) commits
    and DNATs to DIP:backend-port, then the frame is addressed to the VM and delivered. Backends
    that are draining keep this flow, so their established connections go on.
  - from a VM: its ARP for the gateway is answered with GATEWAY_MAC; its packets from a
    backend DIP:port go through conntrack in the same zone with `nat` (reverse NAT) to table 1.
br-int, table 1 (reply): established reply packets (now VIP:port -> client) go to br-phy.
br-phy, table 0: ARP from the uplink teaches table 1 the router's MAC (learn); DSR replies from
  br-int are sent to table 1 (router MAC, out of the uplink); everything else NORMAL (GRE
  to the LOCAL port, where OVS decapsulates it into br-int).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ananta.bridges import (
    GATEWAY_MAC,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.controller.flows import (
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    IP_FRAG_YES,
    IP_PROTO,
    PORT_CONTROLLER,
    PORT_IN_PORT,
    PORT_LOCAL,
    PORT_NORMAL,
    Ct,
    Flow,
    FlowKind,
    Learn,
    LearnLoad,
    Meter,
    MeterAction,
    Nat,
    Output,
    Resubmit,
    SetField,
    SwitchProgram,
    ip_int,
    learned_cookie,
    match,
)
from ananta.controller.model import HostNode, Services, Vm
from ananta.controller.pipeline import check_flows
from ananta.controller.snat import SnatBlock, port_ranges, range_bins

PRIO_SERVICE = 300
PRIO_PROBE = 250
PRIO_VM = 200
PRIO_SNAT = 150
T_CLASSIFY, T_REPLY, T_PROBE_REPLY, T_SNAT, T_SNAT_RETURN, T_SNAT_OUT = 0, 1, 2, 3, 4, 5
T_FRAGMENT_IN, T_FRAGMENT_OUT = 6, 7
PRIO_FRAGMENT = 350
PROBE_ZONE = 1  # conntrack zone of the host agent's probes (VM zones are their ofports, >= 10)
# A VM's packet that found no free SNAT port goes to the Manager's leader, which holds it until
# one more block is programmed here (controller/snat_hold.py), through a meter of the VM's own:
# a DIP that keeps opening connections at its cap cannot crowd out another DIP's requests.
SNAT_WAIT_METER_BASE = 1000  # + the VM's ofport (10..60000)
SNAT_WAIT_PPS, SNAT_WAIT_BURST = 500, 100


def snat_wait_meter(vm: Vm) -> Meter:
    return Meter(SNAT_WAIT_METER_BASE + vm.ofport, SNAT_WAIT_PPS, SNAT_WAIT_BURST)
PRIO_DEFAULT = 0
PRIO_LEARNED = 10

ARP_REQUEST, ARP_REPLY = 1, 2


def conntrack_zone(vm: Vm) -> int:
    return vm.ofport


# The per-VM pieces are cached: every config write recompiles every host, and building a
# Flow (its cookie is a digest of its content) was most of that.
@functools.lru_cache(maxsize=4096)
def arp_responder(vm: Vm) -> Flow:
    """Answer the VM's `who-has <gateway>` with GATEWAY_MAC, out of the port it came in.

    The reply is written from what the Manager knows of the VM (its MAC and address) rather
    than copied from the request, which also means only the VM's own address is answered.
    """
    return Flow(
        0, PRIO_VM,
        match(in_port=vm.ofport, eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST,
              arp_spa=vm.address, arp_tpa=vm.gateway),
        (
            SetField("eth_dst", vm.mac),
            SetField("eth_src", GATEWAY_MAC),
            SetField("arp_op", ARP_REPLY),
            SetField("arp_tha", vm.mac),
            SetField("arp_tpa", vm.address),
            SetField("arp_sha", GATEWAY_MAC),
            SetField("arp_spa", vm.gateway),
            Output(PORT_IN_PORT),
        ),
        FlowKind.ARP, vm.name,
    )


@functools.lru_cache(maxsize=4096)
def probe_flows(vm: Vm) -> frozenset[Flow]:
    """The host agent probes a VM from the gateway address on br-int's LOCAL port: ARP both
    ways, the probe through conntrack, and back only what conntrack says is a reply (a VM
    cannot open connections to the hypervisor)."""
    owner = f"probe:{vm.name}"
    return frozenset({
        Flow(0, PRIO_PROBE, match(in_port=PORT_LOCAL, eth_type=ETH_TYPE_ARP, arp_tpa=vm.address),
             (Output(vm.ofport),), FlowKind.PROBE, owner),
        Flow(0, PRIO_PROBE, match(in_port=PORT_LOCAL, eth_type=ETH_TYPE_IP, ipv4_dst=vm.address),
             (Ct(zone=PROBE_ZONE, commit=True), Output(vm.ofport)), FlowKind.PROBE, owner),
        Flow(0, PRIO_PROBE, match(in_port=vm.ofport, eth_type=ETH_TYPE_ARP, arp_op=ARP_REPLY,
                                  arp_tpa=vm.gateway),
             (Output(PORT_LOCAL),), FlowKind.PROBE, owner),
        Flow(0, PRIO_PROBE, match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ipv4_src=vm.address,
                                  ipv4_dst=vm.gateway),
             (Ct(zone=PROBE_ZONE, table=2),), FlowKind.PROBE, owner),
    })


@functools.lru_cache(maxsize=4096)
def snat_flows(vm: Vm, blocks: tuple[SnatBlock, ...]) -> frozenset[Flow]:
    """The VM's outbound TCP/UDP connections through conntrack: a new one is committed with its
    source NATed to VIP:a port of its blocks and leaves like DSR replies do; return traffic,
    which a Mux tunnels here with key = DIP, is NATed back and delivered. Blocks that make
    one range of ports are one NAT range; several ranges share new connections by the low
    bits of the VM's source port, in proportion to their sizes."""
    zone, owner, vip = conntrack_zone(vm), f"snat:{vm.address}", blocks[0].vip
    new = (CT_TRK | CT_NEW, CT_TRK | CT_NEW | CT_INV)
    flows = {
        Flow(T_SNAT, PRIO_VM - 1,
             match(in_port=vm.ofport, eth_type=ETH_TYPE_IP,
                   ct_state=(CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL | CT_INV)),
             (Output(INT_PATCH_OFPORT),), FlowKind.SNAT, owner),
        # no free port: to the Manager's leader, which holds it until the next block is here
        Flow(T_SNAT_OUT, PRIO_SNAT, match(in_port=vm.ofport, eth_type=ETH_TYPE_IP),
             (MeterAction(snat_wait_meter(vm).meter_id), Output(PORT_CONTROLLER)),
             FlowKind.SNAT, owner),
        # only what conntrack NATed leaves: a connection that found no free port (its SYN is
        # retransmitted once the agent got a block more) must not leak out as DIP:port
        Flow(T_SNAT_OUT, PRIO_VM, match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ipv4_src=vip),
             (Output(INT_PATCH_OFPORT),), FlowKind.SNAT, owner),
        Flow(T_SNAT_RETURN, PRIO_VM,
             match(eth_type=ETH_TYPE_IP, ipv4_dst=vm.address,
                   ct_state=(CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_EST | CT_RPL | CT_INV)),
             (SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", vm.mac), Output(vm.ofport)),
             FlowKind.SNAT, owner),
    }
    ranges = port_ranges(blocks)
    bins = range_bins(ranges) if len(ranges) > 1 else [0]
    bits = (len(bins) - 1).bit_length()
    for protocol, proto in IP_PROTO.items():
        flows.add(Flow(T_CLASSIFY, PRIO_SNAT,
                       match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ip_proto=proto,
                             ipv4_src=vm.address),
                       (Ct(zone=zone, table=T_SNAT, nat=Nat()),), FlowKind.SNAT, owner))
        for b in blocks:
            flows.add(Flow(T_CLASSIFY, PRIO_SERVICE,
                           match(in_port=INT_GRE_OFPORT, tunnel_id=ip_int(vm.address),
                                 eth_type=ETH_TYPE_IP, ip_proto=proto, ipv4_dst=b.vip,
                                 **{f"{protocol}_dst": (b.start, b.mask)}),
                           (Ct(zone=zone, table=T_SNAT_RETURN, nat=Nat()),), FlowKind.SNAT,
                           owner))
        for i, r in enumerate(bins):
            low, high = ranges[r]
            by_port = {f"{protocol}_src": (i, (1 << bits) - 1)} if bits else {}
            flows.add(Flow(T_SNAT, PRIO_VM,
                           match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ip_proto=proto,
                                 ct_state=new, **by_port),
                           (Ct(zone=zone, commit=True, table=T_SNAT_OUT,
                               nat=Nat(src_address=vip, src_ports=(low, high))),),
                           FlowKind.SNAT, owner))
    return frozenset(flows)


@functools.lru_cache(maxsize=1 << 16)
def backend_flows(vm: Vm, vip: str, protocol: str, port: int, backend_port: int,
                  ) -> frozenset[Flow]:
    """A backend on this host: from GRE, DNAT VIP:port -> DIP:backend port and deliver; and
    its replies (one flow per DIP:port, shared by every VIP that uses it) through reverse NAT
    to table 1."""
    zone, proto = conntrack_zone(vm), IP_PROTO[protocol]
    return frozenset({
        Flow(0, PRIO_SERVICE,
             match(in_port=INT_GRE_OFPORT, tunnel_id=ip_int(vm.address), eth_type=ETH_TYPE_IP,
                   ip_proto=proto, ipv4_dst=vip, **{f"{protocol}_dst": port}),
             (Ct(zone=zone, commit=True, nat=Nat(vm.address, backend_port)),
              SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", vm.mac), Output(vm.ofport)),
             FlowKind.DECAP_DNAT, f"{vip}:{protocol}:{port}>{vm.address}"),
        Flow(0, PRIO_VM,
             match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ip_proto=proto,
                   ipv4_src=vm.address, **{f"{protocol}_src": backend_port}),
             (Ct(zone=zone, table=1, nat=Nat()),),
             FlowKind.REPLY, f"{vm.address}:{protocol}:{backend_port}"),
    })


def fragment_flows(vm: Vm, inbound: Mapping[str, Mapping[int, set[int]]],
                   snat_vip: str | None) -> frozenset[Flow]:
    """IP fragments to and from a VM. A later fragment has no ports, so no flow that matches
    ports can NAT it; conntrack can, as it reassembles the datagram and copies what it did
    to every fragment. So every fragment takes one flow per VIP and DIP, no ports:
    conntrack looks the datagram up (an existing connection's NAT applies), then table 6
    delivers a known connection's fragments; a new one is committed and DNATed there when
    the VIP's protocol has one backend port on this DIP (with more, a new connection whose
    first datagram is fragmented cannot be told apart, and is dropped). From the VM, table 7
    sends replies out like DSR and hands the VM's own connections to its SNAT table.

    `inbound`: VIP -> protocol number -> the VM's backend ports for it."""
    return _fragment_flows(vm, tuple(sorted(
        (vip, tuple(sorted((proto, tuple(sorted(ports))) for proto, ports in by_proto.items())))
        for vip, by_proto in inbound.items())), snat_vip)


@functools.lru_cache(maxsize=1 << 14)
def _fragment_flows(vm: Vm, inbound: tuple[tuple[str, tuple[tuple[int, tuple[int, ...]], ...]],
                                            ...],
                    snat_vip: str | None) -> frozenset[Flow]:
    """fragment_flows, cached: built again for every VM on every config write before."""
    zone, owner = conntrack_zone(vm), f"fragment:{vm.address}"
    vips = {vip for vip, _ in inbound} | ({snat_vip} if snat_vip else set())
    flows = {
        Flow(T_CLASSIFY, PRIO_FRAGMENT,
             match(in_port=INT_GRE_OFPORT, tunnel_id=ip_int(vm.address), eth_type=ETH_TYPE_IP,
                   ipv4_dst=vip, ip_frag=IP_FRAG_YES),
             (Ct(zone=zone, table=T_FRAGMENT_IN, nat=Nat()),), FlowKind.FRAGMENT, owner)
        for vip in vips
    }
    deliver = (SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", vm.mac), Output(vm.ofport))
    flows.add(Flow(T_FRAGMENT_IN, PRIO_VM,
                   match(eth_type=ETH_TYPE_IP, ipv4_dst=vm.address,
                         ct_state=(CT_TRK | CT_EST, CT_TRK | CT_EST | CT_INV)),
                   deliver, FlowKind.FRAGMENT, owner))
    for vip, by_proto in inbound:
        for proto, ports in by_proto:
            if len(ports) != 1:
                continue
            flows.add(Flow(T_FRAGMENT_IN, PRIO_VM,
                           match(tunnel_id=ip_int(vm.address), eth_type=ETH_TYPE_IP,
                                 ip_proto=proto, ipv4_dst=vip,
                                 ct_state=(CT_TRK | CT_NEW, CT_TRK | CT_NEW | CT_INV)),
                           (Ct(zone=zone, commit=True, nat=Nat(vm.address, min(ports))),
                            *deliver), FlowKind.FRAGMENT, owner))
    flows.add(Flow(T_CLASSIFY, PRIO_FRAGMENT,
                   match(in_port=vm.ofport, eth_type=ETH_TYPE_IP, ipv4_src=vm.address,
                         ip_frag=IP_FRAG_YES),
                   (Ct(zone=zone, table=T_FRAGMENT_OUT, nat=Nat()),), FlowKind.FRAGMENT, owner))
    if snat_vip:
        flows.add(Flow(T_FRAGMENT_OUT, PRIO_SNAT, match(in_port=vm.ofport),
                       (Resubmit(T_SNAT),), FlowKind.FRAGMENT, owner))
    return frozenset(flows)


Inbound = tuple[tuple[str, str, int, int], ...]  # (VIP address, protocol, port, backend port)


def inbound_by_dip(services: Services) -> dict[str, Inbound]:
    """DIP -> the VIP endpoints it serves (VIP, protocol, port, backend port), for each
    backend that is not inactive: what every host's br-int is compiled from (made once per
    config write, rather than each host scanning every VIP)."""
    by_dip: dict[str, list[tuple[str, str, int, int]]] = {}
    for vip in services.vips:
        for ep in vip.endpoints:
            for be in ep.backends:
                if be.state != "inactive":
                    by_dip.setdefault(be.address, []).append(
                        (vip.address, ep.protocol, ep.port, be.port))
    return {dip: tuple(entries) for dip, entries in by_dip.items()}


def compile_host_int(services: Services, host: HostNode,
                     snat: Mapping[str, tuple[SnatBlock, ...]] | None = None,
                     by_dip: Mapping[str, Inbound] | None = None) -> SwitchProgram:
    """`snat`: each DIP's SNAT port blocks (snat.py); `by_dip`: inbound_by_dip(services),
    when the caller has it. A host whose VMs' inputs did not change gets the same program
    (cached): a config write costs the other hosts a lookup."""
    by_dip = inbound_by_dip(services) if by_dip is None else by_dip
    return _host_int(tuple((vm, by_dip.get(vm.address, ()), (snat or {}).get(vm.address, ()))
                           for vm in host.vms))


@functools.lru_cache(maxsize=1 << 12)
def _host_int(vms: tuple[tuple[Vm, Inbound, tuple[SnatBlock, ...]], ...]) -> SwitchProgram:
    """A host's br-int from each VM, the endpoints it serves and its SNAT blocks."""
    flows = {
        Flow(0, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(1, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(1, PRIO_VM,
             match(ct_state=(CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_EST | CT_RPL | CT_INV),
                   eth_type=ETH_TYPE_IP),
             (Output(INT_PATCH_OFPORT),), FlowKind.REPLY, "dsr"),
        Flow(2, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(2, PRIO_VM,
             match(ct_state=(CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_EST | CT_RPL | CT_INV),
                   eth_type=ETH_TYPE_IP),
             (Output(PORT_LOCAL),), FlowKind.PROBE, "probe-reply"),
        Flow(T_SNAT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_SNAT_RETURN, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_SNAT_OUT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "no-snat-port"),
        Flow(T_FRAGMENT_IN, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_FRAGMENT_OUT, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
        Flow(T_FRAGMENT_OUT, PRIO_VM,
             match(ct_state=(CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_EST | CT_RPL | CT_INV),
                   eth_type=ETH_TYPE_IP),
             (Output(INT_PATCH_OFPORT),), FlowKind.FRAGMENT, "dsr"),
    }
    meters = set()
    for vm, inbound, blocks in vms:
        if blocks:
            flows |= snat_flows(vm, blocks)
            meters.add(snat_wait_meter(vm))
        flows.add(arp_responder(vm))
        flows |= probe_flows(vm)
        ports: dict[str, dict[int, set[int]]] = {}  # VIP -> protocol number -> backend ports
        for vip, protocol, port, backend_port in inbound:
            ports.setdefault(vip, {}).setdefault(IP_PROTO[protocol], set()).add(backend_port)
            flows |= backend_flows(vm, vip, protocol, port, backend_port)
        flows |= fragment_flows(vm, ports, blocks[0].vip if blocks else None)
    program = SwitchProgram(frozenset(flows), meters=frozenset(meters))
    check_flows("host", "int", program.flows)
    return program


@functools.lru_cache(maxsize=1)
def compile_host_phy() -> SwitchProgram:
    learn_router_mac = Learn(
        table=1, priority=PRIO_LEARNED, cookie=learned_cookie(FlowKind.ROUTER_MAC),
        loads=(LearnLoad("eth_src", "eth_dst", 48),), output_from="in_port")
    flows = frozenset({
        Flow(0, PRIO_DEFAULT, match(), (Output(PORT_NORMAL),), FlowKind.DEFAULT, "normal"),
        Flow(0, PRIO_VM, match(in_port=PHY_UPLINK_OFPORT, eth_type=ETH_TYPE_ARP),
             (learn_router_mac, Output(PORT_NORMAL)), FlowKind.ROUTER_MAC, "learn"),
        Flow(0, PRIO_VM, match(in_port=PHY_PATCH_OFPORT), (Resubmit(1),),
             FlowKind.ROUTER_MAC, "dsr"),
        Flow(1, PRIO_DEFAULT, match(), (), FlowKind.DEFAULT, "drop"),
    })
    check_flows("host", "phy", flows)
    return SwitchProgram(flows)
