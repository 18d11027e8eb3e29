"""Each role's OVS table pipeline, declared as data (pure).

Flow compilers check every flow against this declaration, so a flow in the wrong table or
matching a field its table does not own is a bug caught at compile time (and by unit tests).
docs/architecture.md describes the same tables in prose.
"""

from __future__ import annotations

from dataclasses import dataclass

from ananta.controller.flows import Flow


@dataclass(frozen=True)
class Table:
    table_id: int
    name: str
    matches: frozenset[str]
    purpose: str


def _t(table_id: int, name: str, matches: str, purpose: str) -> Table:
    return Table(table_id, name, frozenset(matches.split()), purpose)


MUX_PHY = (
    _t(0, "steer", "in_port eth_type ipv4_dst",
       "VIP packets from the uplink go to br-int; all else (BGP, ARP, tunnel egress) NORMAL"),
)
MUX_INT = (
    _t(0, "classify", "in_port eth_type ip_proto ipv4_dst tcp_dst udp_dst ip_frag eth_dst reg4",
       "a VIP endpoint's packets go through conntrack in their VIP's zone, then to table 1; "
       "a VIP port with no endpoint is dropped and counted; IP fragments go to the Mux "
       "agent's fragment port, which sends a datagram's first fragment back to be placed "
       "(reg4 = 1) and its later ones with the first's DIP in their eth_dst (02:a8 + DIP)"),
    _t(1, "connections", "ct_state ct_mark eth_type ip_proto tcp_flags",
       "after conntrack (the VIP's zone): a connection marked with a DIP that is still a "
       "backend goes to it (tunnel fields, then 5); a new one, one whose DIP is gone, and "
       "every TCP SYN go to 2"),
    _t(2, "select", "eth_type ip_proto ipv4_dst tcp_dst udp_dst",
       "a new connection: the endpoint's select group (selection_method=dp_hash, 256 "
       "buckets, one per bin of its slot table); a whole bin's bucket sets tun_dst = the "
       "DIP's host, tun_id = the DIP and resubmits to 3; a split bin's resubmits to 4"),
    _t(3, "pin", "eth_type tunnel_id ct_state reg4",
       "commit the connection in its zone with the DIP as its mark, then to 5; a first "
       "fragment from the Mux agent (untracked) commits nothing"),
    _t(4, "split", "eth_type ip_proto ipv4_dst tcp_dst udp_dst reg5",
       "a split bin of an endpoint's slot table: its bucket copied dp_hash's low bits to "
       "reg5 (OVS refuses OpenFlow matches on dp_hash); the bin's DIPs' runs of sub-slots "
       "(bits 8-15, masked matches) set the tunnel fields like a bucket, then 3"),
    _t(5, "egress", "reg4 tunnel_id",
       "out of the GRE port; a first fragment from the Mux agent (reg4 = 1) is also echoed "
       "to the agent with its DIP in its eth_dst"),
)
HOST_PHY = (
    _t(0, "ingress", "in_port eth_type",
       "ARP from the uplink teaches table 1 the router's MAC; DSR replies from br-int go to "
       "table 1; the rest (GRE to the LOCAL port, ARP) is NORMAL"),
    _t(1, "to_router", "", "learned: set the router's MAC, out of the uplink"),
)
HOST_INT = (
    _t(0, "classify",
       "in_port tunnel_id eth_type ip_proto ipv4_dst ipv4_src tcp_dst tcp_src udp_dst udp_src "
       "arp_op arp_spa arp_tpa ip_frag",
       "from GRE with key = DIP: conntrack DNAT VIP:port -> DIP:port, deliver to the VM; from a "
       "VM: ARP responder for its gateway, replies through conntrack (reverse NAT) to table 1; "
       "between the host (LOCAL, the VM gateway addresses) and its VMs: health probes"),
    _t(1, "reply", "ct_state eth_type",
       "established replies (now VIP:port -> client) leave by the patch port to br-phy (DSR)"),
    _t(2, "probe_reply", "ct_state eth_type",
       "a VM's packets to its gateway address reach the host (LOCAL) only as replies to the "
       "host agent's health probes"),
    _t(3, "snat", "in_port ct_state eth_type ip_proto tcp_src udp_src",
       "a VM's outbound connection: a new one is committed with source VIP:port of its SNAT "
       "block; new and established ones leave through br-phy (like DSR replies)"),
    _t(4, "snat_return", "ct_state eth_type ipv4_dst",
       "return traffic of a SNAT connection, NATed back to DIP:port, to the VM"),
    _t(5, "snat_out", "in_port eth_type ipv4_src",
       "a new SNAT connection leaves only if conntrack found it a port (source is the VIP); "
       "otherwise it goes, through the VM's meter, to the Manager's leader, which holds it "
       "until one more block is programmed (never out as DIP:port)"),
    _t(6, "fragment_in", "ct_state eth_type ipv4_dst tunnel_id ip_proto",
       "a fragment from GRE, after conntrack reassembled its datagram: a known connection's "
       "(NATed) is delivered; a new one is committed and DNATed when its VIP and protocol "
       "have one backend port on the DIP; else dropped"),
    _t(7, "fragment_out", "ct_state eth_type in_port",
       "a VM's fragment, after conntrack: a reply leaves like DSR; the VM's own connections "
       "go to its SNAT table (3)"),
)

PIPELINES = {
    ("mux", "phy"): MUX_PHY,
    ("mux", "int"): MUX_INT,
    ("host", "phy"): HOST_PHY,
    ("host", "int"): HOST_INT,
}


def check_flows(role: str, bridge: str, flows: frozenset[Flow]) -> None:
    """Raise ValueError when a flow does not fit the declared pipeline of (role, bridge)."""
    tables = {t.table_id: t for t in PIPELINES[(role, bridge)]}
    for flow in flows:
        table = tables.get(flow.table)
        if table is None:
            raise ValueError(f"{role} br-{bridge}: no table {flow.table} for {flow}")
        extra = {name for name, _ in flow.match} - table.matches
        if extra:
            raise ValueError(f"{role} br-{bridge} table {table.name}: may not match {extra}")
