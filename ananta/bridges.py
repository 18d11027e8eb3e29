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
