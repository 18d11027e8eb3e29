"""What the Mux and the Host Agent have in common: their OVS bridges and uplink (pure).

`bootstrap_commands` returns the argv lists that make a node's bridges, ports, controller
targets and underlay address exist, idempotently (ovs-vsctl --may-exist, ip ... replace);
the agents run them with `ananta.shell.run_all`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, Field

from ananta.bridges import (
    BR_INT,
    BR_PHY,
    GATEWAY_MAC,
    GRE_PORT,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    PATCH_INT_TO_PHY,
    PATCH_PHY_TO_INT,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.config import StrictModel
from ananta.controller.model import BridgeIds, IPv4, Name


def _interface(value: str) -> str:
    if not (1 <= len(value) <= 15) or any(c in value for c in "/ \t:"):
        raise ValueError(f"not a Linux interface name: {value!r}")
    return value


def _prefix(value: str) -> str:
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"not an IPv4 address/prefix: {value!r}") from None
    if iface.network.prefixlen == 32:
        raise ValueError(f"needs a prefix length shorter than /32: {value!r}")
    return str(iface)


def _target(value: str) -> str:
    host, _, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        if not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"not ADDRESS:PORT: {value!r}") from None
    return value


Interface = Annotated[str, AfterValidator(_interface)]
Prefix = Annotated[str, AfterValidator(_prefix)]
ControllerTarget = Annotated[str, AfterValidator(_target)]


class Uplink(StrictModel):
    interface: Interface
    address: Prefix
    gateway: IPv4
    mtu: Annotated[int, Field(ge=1280, le=9216)] = 1600


class VmPort(StrictModel):
    name: Name
    interface: Interface
    ofport: Annotated[int, Field(ge=10, le=60000)]


class NodeConfig(StrictModel):
    """Fields every data-plane node's config has."""

    name: Name
    ovs_rundir: str = "/var/run/openvswitch"
    datapath_ids: BridgeIds
    uplink: Uplink
    managers: Annotated[list[ControllerTarget], Field(min_length=1)]

    @property
    def underlay_address(self) -> str:
        return str(ipaddress.IPv4Interface(self.uplink.address).ip)


def ovs_bootstrap_args(node: NodeConfig, vms: Sequence[VmPort] = ()) -> list[str]:
    """One ovs-vsctl transaction making br-phy and br-int with their ports and controllers."""
    up = node.uplink.interface
    controllers = [f"tcp:{t}" for t in node.managers]
    args: list[str] = []

    def cmd(*words: str) -> None:
        args.extend(["--", *words])

    for bridge, dpid in ((BR_PHY, node.datapath_ids.phy), (BR_INT, node.datapath_ids.int)):
        cmd("--may-exist", "add-br", bridge)
        cmd("set", "bridge", bridge, "datapath_type=netdev", "fail_mode=secure",
            f"other_config:datapath-id={dpid}", "other_config:disable-in-band=true",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow15")
        cmd("set-controller", bridge, *controllers)
    cmd("set", "interface", BR_PHY, f"mtu_request={node.uplink.mtu}")
    cmd("--may-exist", "add-port", BR_PHY, up)
    cmd("set", "interface", up, f"ofport_request={PHY_UPLINK_OFPORT}")
    cmd("--may-exist", "add-port", BR_PHY, PATCH_PHY_TO_INT)
    cmd("set", "interface", PATCH_PHY_TO_INT, "type=patch", f"options:peer={PATCH_INT_TO_PHY}",
        f"ofport_request={PHY_PATCH_OFPORT}")
    cmd("--may-exist", "add-port", BR_INT, PATCH_INT_TO_PHY)
    cmd("set", "interface", PATCH_INT_TO_PHY, "type=patch", f"options:peer={PATCH_PHY_TO_INT}",
        f"ofport_request={INT_PATCH_OFPORT}")
    cmd("--may-exist", "add-port", BR_INT, GRE_PORT)
    cmd("set", "interface", GRE_PORT, "type=gre", "options:remote_ip=flow", "options:key=flow",
        f"ofport_request={INT_GRE_OFPORT}")
    for vm in vms:
        cmd("--may-exist", "add-port", BR_INT, vm.interface)
        cmd("set", "interface", vm.interface, f"ofport_request={vm.ofport}")
    return ["ovs-vsctl", "--timeout=10", *args]


def probe_port_commands(addresses: Sequence[str]) -> list[list[str]]:
    """br-int's LOCAL port as the VMs' gateway, for the host agent's health probes: the
    gateway MAC (the ARP responder's), the gateway addresses, checksums done in software."""
    if not addresses:
        return []
    cmds = [
        ["ovs-vsctl", "--timeout=10", "set", "bridge", BR_INT,
         f"other_config:hwaddr={GATEWAY_MAC}"],
        ["ip", "link", "set", BR_INT, "up"],
        ["ethtool", "-K", BR_INT, "tx", "off"],
    ]
    cmds += [["ip", "addr", "replace", a, "dev", BR_INT] for a in addresses]
    return cmds


def host_network_commands(node: NodeConfig, vms: Sequence[VmPort] = ()) -> list[list[str]]:
    """Underlay address on br-phy's LOCAL port, default route, and the uplink sysctls."""
    up = node.uplink
    cmds = [
        ["sysctl", "-qw", f"net.ipv4.conf.{up.interface}.arp_ignore=1"],
        ["sysctl", "-qw", f"net.ipv6.conf.{up.interface}.disable_ipv6=1"],
        ["ip", "link", "set", up.interface, "up"],
        ["ip", "link", "set", BR_PHY, "up"],
        ["ip", "addr", "replace", up.address, "dev", BR_PHY],
        ["ip", "route", "replace", "default", "via", up.gateway, "dev", BR_PHY],
    ]
    cmds += [["ip", "link", "set", vm.interface, "up"] for vm in vms]
    return cmds


def kernel_neighbor_mac(kernel_neigh_json: str, address: str) -> str | None:
    """`address`'s MAC in `ip -j neigh show to ADDRESS` output, if the kernel has a usable
    entry."""
    try:
        entries = json.loads(kernel_neigh_json or "[]")
    except ValueError:
        return None
    usable = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}
    return next((str(e["lladdr"]) for e in entries if isinstance(e, dict)
                 and e.get("dst") == address and e.get("lladdr")
                 and usable & set(e.get("state", []))), None)


def ovs_has_tunnel_neighbor(ovs_neigh_show: str, address: str, mac: str) -> bool:
    """Whether `ovs-appctl tnl/neigh/show` lists `address` at `mac` on br-phy."""
    return any(line.split()[:3] == [address, mac, BR_PHY] for line in ovs_neigh_show.splitlines())
