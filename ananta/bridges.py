"""Conventions shared by the Manager's flow compilers and the node agents' OVSDB bootstrap.

Every Mux and hypervisor has two userspace (netdev) bridges:
  br-phy: the uplink port and the node's underlay address on its LOCAL port (OVS routes and
          resolves tunnel next hops through it);
  br-int: the load-balancing pipeline, the GRE port (remote_ip=flow, key=flow), the VM ports.
They are joined by a patch-port pair. OpenFlow port numbers are pinned with ofport_request so
the Manager can compile flows without asking the switch.
"""

from __future__ import annotations

BR_INT = "br-int"
BR_PHY = "br-phy"

# br-phy ports
PHY_UPLINK_OFPORT = 1
PHY_PATCH_OFPORT = 2
PATCH_PHY_TO_INT = "patch-int"  # lives on br-phy, peer is PATCH_INT_TO_PHY

# br-int ports
INT_GRE_OFPORT = 1
INT_PATCH_OFPORT = 2
PATCH_INT_TO_PHY = "patch-phy"  # lives on br-int
GRE_PORT = "gre0"
# A Mux's fragment port: an internal port the Mux agent reads and writes (mux/fragments.py)
INT_FRAG_OFPORT = 3
FRAG_PORT = "frag0"
FIRST_VM_OFPORT = 10

# The virtual gateway MAC that br-int answers ARP with for every VM subnet gateway.
GATEWAY_MAC = "02:00:00:00:00:01"

OPENFLOW_PORT = 6653

# A Mux tracks each VIP's connections in a conntrack zone of its own (1..MUX_CT_ZONES, a hash
# of the VIP's address: controller/compile_mux.vip_zone), so a flood on one VIP fills only
# that zone's share (the per-zone limit). The Mux agent gives every one of these zones the
# timeout policy below. On a Mux conntrack sees only the client's side of a connection (the
# replies leave the hypervisor straight to the client, DSR), and OVS's userspace conntrack
# keeps such a one-way TCP connection in its opening states for good: `tcp_syn_sent` is the
# idle timeout of an entry that has seen nothing but a SYN (untrusted), `tcp_syn_recv` that
# of one that has seen more from the client (trusted, what OVS calls "opening"); an RST
# moves it to `tcp_close`. For UDP, `udp_first` is an entry that saw one datagram, and
# `udp_single` one that saw more in the one direction.
MUX_CT_ZONES = 4096
UNTRUSTED_IDLE_S = 10
TRUSTED_IDLE_S = 300
CLOSED_IDLE_S = 5
MUX_CT_TIMEOUTS = {
    "tcp_syn_sent": UNTRUSTED_IDLE_S,
    "tcp_syn_recv": TRUSTED_IDLE_S,
    "tcp_established": TRUSTED_IDLE_S,
    "tcp_fin_wait": CLOSED_IDLE_S,
    "tcp_time_wait": CLOSED_IDLE_S,
    "tcp_close": CLOSED_IDLE_S,
    "udp_first": UNTRUSTED_IDLE_S,
    "udp_single": TRUSTED_IDLE_S,
    "udp_multiple": TRUSTED_IDLE_S,
}
